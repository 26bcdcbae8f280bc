//! The policy while the daemon runs, on a real kernel: per-agent profiles decided in the kernel by
//! session, reloads by command and by editing the file (a broken policy refused and audited, the old
//! one still enforcing), and `safeclaw-agent stop` as the audited way to unload.
use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use safeclaw_integration::{agent_bin, denied, read_entries, test_files_dir, Daemon, RunAs, SharedDaemon};

/// For the tests that neither stop the daemon nor edit its policy file.
static SHARED: SharedDaemon = SharedDaemon::new("safeclaw-it-runtime");

const PROFILES: &str = r#"
version: 1
default: allow
rules:
  - name: base-secret
    action: file.read
    effect: deny
    paths: [/tmp/safeclaw-it-profiles/files/base-secret]
agents:
  reviewer:
    rules:
      - name: reviewer-no-drafts
        action: file.read
        effect: deny
        paths: [/tmp/safeclaw-it-profiles/files/drafts/**]
"#;

#[test]
fn each_agent_is_decided_by_its_own_profile_in_the_kernel() {
    let daemon = SHARED.turn(PROFILES);
    let files = test_files_dir("safeclaw-it-profiles");
    std::fs::create_dir_all(files.join("drafts")).unwrap();
    std::fs::write(files.join("drafts/plan.txt"), "draft").unwrap();
    std::fs::write(files.join("base-secret"), "s3cret").unwrap();
    // The agents run as nobody: only the policy may stand between them and these files.
    std::fs::set_permissions(files.join("drafts"), std::fs::Permissions::from_mode(0o755)).unwrap();
    for path in [files.join("drafts/plan.txt"), files.join("base-secret")] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let drafts = files.join("drafts/plan.txt").display().to_string();
    let secret = files.join("base-secret").display().to_string();

    let reviewer = daemon.session("reviewer", RunAs::Nobody, &["cat", &drafts]);
    assert!(denied(&reviewer), "the reviewer profile denies drafts: {reviewer:?}");
    let builder = daemon.session("builder", RunAs::Nobody, &["cat", &drafts]);
    assert!(builder.status.success(), "an agent without a profile gets the base: {builder:?}");
    assert_eq!(String::from_utf8_lossy(&builder.stdout), "draft");
    for agent in ["reviewer", "builder"] {
        let read = daemon.session(agent, RunAs::Nobody, &["cat", &secret]);
        assert!(denied(&read), "{agent} inherits the base rules: {read:?}");
    }

    let entries = daemon.entries();
    let about = |path: &str, agent: &str| -> Vec<serde_json::Value> {
        entries
            .iter()
            .filter(|e| {
                e["action"] == "file.read" && e["requestDetails"]["path"] == path && e["agentId"] == agent
            })
            .cloned()
            .collect()
    };
    let reviewed = about(&drafts, "reviewer");
    assert_eq!(reviewed.len(), 1, "{reviewed:#?}");
    assert_eq!(reviewed[0]["effect"], "deny");
    assert_eq!(reviewed[0]["matchedRule"], "reviewer-no-drafts", "the rule of the agent's profile");
    let built = about(&drafts, "builder");
    assert_eq!(built.len(), 1, "{built:#?}");
    assert_eq!(built[0]["effect"], "allow");
    assert!(built[0]["matchedRule"].is_null(), "the base default decided");
    for agent in ["reviewer", "builder"] {
        let read = about(&secret, agent);
        assert_eq!(read.len(), 1, "{read:#?}");
        assert_eq!(read[0]["matchedRule"], "base-secret");
    }
}

fn deny_read_of(path: &str) -> String {
    format!(
        "version: 1\ndefault: allow\nrules:\n  - name: deny-{}\n    action: file.read\n    effect: deny\n    paths: [{path}]\n",
        path.rsplit('/').next().unwrap_or("file")
    )
}

/// Polls `check` for up to 20 s (the daemon looks at the policy file once a second).
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "{what} did not happen within 20 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn reloads_by_command_and_by_edit_and_refuses_a_broken_policy_keeping_the_old_one() {
    let name = "safeclaw-it-reload";
    let dir = std::env::temp_dir().join(name);
    let a = dir.join("files/a.txt").display().to_string();
    let b = dir.join("files/b.txt").display().to_string();
    let daemon = Daemon::start(name, &deny_read_of(&a));
    std::fs::create_dir_all(daemon.work().join("files")).unwrap();
    std::fs::write(&a, "a").unwrap();
    std::fs::write(&b, "b").unwrap();
    let policy = daemon.work().join("policy.yaml");
    let read = |path: &str| daemon.sh(&format!("exec cat {path}"));
    assert!(denied(&read(&a)));
    assert!(read(&b).status.success());

    // An edit of the file is picked up without being asked.
    std::fs::write(&policy, deny_read_of(&b)).unwrap();
    eventually("the edited policy enforcing", || denied(&read(&b)));
    assert!(read(&a).status.success(), "the old rule is gone");

    // A broken policy is refused with its file and line; the previous one keeps enforcing.
    std::fs::write(&policy, "version: 1\nrules:\n  - name: x\n    action: file.raed\n").unwrap();
    let refused = daemon.agent_command(&["policy", "reload"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("policy.yaml:4"), "names file and line: {message}");
    assert!(denied(&read(&b)), "the previous policy still enforces");

    // A good policy again, by command: the answer names the policy now enforcing.
    std::fs::write(&policy, deny_read_of(&a)).unwrap();
    let reloaded = daemon.agent_command(&["policy", "reload"]);
    assert!(reloaded.status.success(), "{reloaded:?}");
    assert!(String::from_utf8_lossy(&reloaded.stdout).contains("sha256:"), "{reloaded:?}");
    assert!(denied(&read(&a)));
    assert!(read(&b).status.success());

    let (status, entries) = daemon.stop();
    assert!(status.success());
    let count = |action: &str| entries.iter().filter(|e| e["action"] == action).count();
    assert!(count("policy.load") >= 3, "start, edit and command loads: {}", count("policy.load"));
    assert!(count("policy.reload_rejected") >= 1, "the broken policy's refusal is audited");
    let hashes: std::collections::BTreeSet<String> =
        entries.iter().filter_map(|e| e["policyHash"].as_str().map(str::to_owned)).collect();
    assert!(hashes.len() >= 2, "entries carry the hash of the policy that decided them: {hashes:?}");
}

#[test]
fn stop_is_refused_from_inside_the_cgroup_and_otherwise_unloads_audited() {
    let name = "safeclaw-it-stopcmd";
    let daemon = Daemon::start(name, "version: 1\ndefault: allow\nrules: []\n");
    let pin_dir = daemon.pin_dir.clone();
    let inside =
        daemon.sh(&format!("exec {} stop --socket {}", agent_bin().display(), daemon.socket().display()));
    assert!(!inside.status.success(), "an agent may not stop the daemon: {inside:?}");
    assert!(
        String::from_utf8_lossy(&inside.stderr).contains("inside the agent cgroup"),
        "{}",
        String::from_utf8_lossy(&inside.stderr)
    );
    assert!(safeclaw_integration::pinned_links(&pin_dir).iter().any(|l| l == "file_open"), "still enforcing");

    let stopped = daemon.agent_command(&["stop"]);
    assert!(stopped.status.success(), "{stopped:?}");
    let audit_log = daemon.audit_log.clone();
    let (status, entries) = daemon.wait();
    assert!(status.success(), "{status}");
    assert!(!pin_dir.exists(), "pins left in {}", pin_dir.display());
    let stop = entries.iter().rev().find(|e| e["action"] == "daemon.stop").expect("a daemon.stop entry");
    let reason = stop["details"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("safeclaw-agent stop") && reason.contains("pid"), "{reason}");
    assert_eq!(read_entries(&audit_log).len(), entries.len());
}

const ARGUMENTS: &str = r#"
version: 1
default: allow
rules:
  - name: echo-push
    action: process.exec
    effect: audit
    binary: ["**/echo"]
    args: ["push*"]
    reason: pushes are reviewed
"#;

#[test]
fn exec_entries_carry_argv_and_argument_rules_mark_them_for_audit() {
    let daemon = SHARED.turn(ARGUMENTS);
    let many: Vec<String> = (0..40).map(|i| format!("a{i}")).collect();
    let run = daemon.sh(&format!(
        "/bin/echo push origin main >/dev/null && /bin/echo status >/dev/null && /bin/echo {} >/dev/null",
        many.join(" ")
    ));
    assert!(run.status.success(), "{run:?}");
    let entries = daemon.entries();
    let execs: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| {
            e["action"] == "process.exec"
                && e["requestDetails"]["path"].as_str().is_some_and(|p| p.ends_with("/echo"))
        })
        .collect();
    assert_eq!(execs.len(), 3, "{execs:#?}");
    let argv = |entry: &serde_json::Value| -> Vec<String> {
        entry["requestDetails"]["argv"]
            .as_array()
            .unwrap_or_else(|| panic!("no argv: {entry}"))
            .iter()
            .map(|a| a.as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(argv(execs[0]), ["/bin/echo", "push", "origin", "main"]);
    assert_eq!(execs[0]["effect"], "audit", "the argument rule marks it");
    assert_eq!(execs[0]["matchedRule"], "echo-push");
    assert_eq!(argv(execs[1]), ["/bin/echo", "status"]);
    assert_eq!(execs[1]["effect"], "allow");
    assert!(execs[1]["matchedRule"].is_null());
    let long = argv(execs[2]);
    assert_eq!(long.len(), 32, "MAX_ARGS arguments are kept: {long:?}");
    assert_eq!(long[1], "a0");
    assert_eq!(execs[2]["flags"], serde_json::json!(["argv_incomplete"]), "{}", execs[2]);
}

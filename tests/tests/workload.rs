//! policies/default.yaml on a real coding workload: an agent session creates a git repository,
//! compiles and runs a C program, runs a script that reads its config and commits, all without a
//! single denial; a second session's secret reads and cloud-metadata connect are denied and audited.
use std::process::Output;

use safeclaw_integration::{agent_bin, Daemon};

const NAME: &str = "safeclaw-it-workload";

fn default_policy() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/default.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `script` as root (`~` of the policy is root's home here) in session `session` of agent `coder`.
fn session(daemon: &Daemon, session: &str, script: &str) -> Output {
    std::process::Command::new(agent_bin())
        .args(["exec", "--agent", "coder", "--session", session, "--as-root", "--cgroup", NAME, "--socket"])
        .arg(daemon.socket())
        .args(["--", "sh", "-c", script])
        .env("HOME", home())
        .output()
        .unwrap()
}

fn home() -> String {
    safeclaw_agent::policy::launching_user_home().display().to_string()
}

const WORKLOAD: &str = r#"set -eu
mkdir -p "$HOME/projects/demo"
cd "$HOME/projects/demo"
git init -q .
printf '.env\n' > .gitignore
git config user.email agent@example.com
git config user.name agent
printf '#include <stdio.h>\nint main(void) { puts("built and ran"); return 0; }\n' > main.c
cc -O1 -o hello main.c
./hello
printf '{"name": "demo-config"}\n' > config.json
printf 'import json\nwith open("config.json") as f:\n    print(json.load(f)["name"])\n' > read_config.py
python3 read_config.py
git add -A
git commit -qm "first commit"
echo "commits: $(git rev-list --count HEAD)"
git status --short | wc -l
"#;

#[test]
fn a_coding_workload_runs_without_denials_and_secrets_and_metadata_are_denied() {
    let daemon = Daemon::start(NAME, &default_policy());
    let home = home();
    std::fs::create_dir_all(format!("{home}/.ssh")).unwrap();
    std::fs::write(format!("{home}/.ssh/id_ed25519"), "PRIVATE KEY").unwrap();
    std::fs::create_dir_all(format!("{home}/projects/demo")).unwrap();
    std::fs::write(format!("{home}/projects/demo/.env"), "API_KEY=x").unwrap();

    let work = session(&daemon, "sess_workload", WORKLOAD);
    let stdout = String::from_utf8_lossy(&work.stdout);
    assert!(work.status.success(), "the workload failed: {work:?}");
    assert!(stdout.contains("built and ran\n"), "{stdout}");
    assert!(stdout.contains("demo-config\n"), "{stdout}");
    assert!(stdout.contains("commits: 1\n"), "{stdout}");

    let secrets = session(
        &daemon,
        "sess_secrets",
        "cat ~/.ssh/id_ed25519; echo ssh=$?; cat ~/projects/demo/.env; echo env=$?; \
         python3 -c 'import socket; socket.create_connection((\"169.254.169.254\", 80), timeout=5)'; echo metadata=$?",
    );
    let out = String::from_utf8_lossy(&secrets.stdout);
    let err = String::from_utf8_lossy(&secrets.stderr);
    assert!(out.contains("ssh=1") && out.contains("env=1") && out.contains("metadata=1"), "{out}\n{err}");
    assert!(err.contains("id_ed25519: Operation not permitted"), "{err}");
    assert!(err.contains(".env: Operation not permitted"), "{err}");
    assert!(err.contains("PermissionError"), "{err}");

    let (status, entries) = daemon.stop();
    assert!(status.success());
    let of = |session: &str| -> Vec<&serde_json::Value> {
        entries.iter().filter(|e| e["sessionId"] == session && e["action"] != "session.start").collect()
    };
    let workload = of("sess_workload");
    assert!(workload.len() > 100, "the workload's actions are audited: {}", workload.len());
    let denials: Vec<_> = workload.iter().filter(|e| e["effect"] == "deny").collect();
    assert!(denials.is_empty(), "false denials under default.yaml: {denials:#?}");
    let denied_rules: Vec<&str> = of("sess_secrets")
        .iter()
        .filter(|e| e["effect"] == "deny")
        .filter_map(|e| e["matchedRule"].as_str())
        .collect();
    for rule in ["credential-directories", "env-files", "cloud-metadata"] {
        assert!(denied_rules.contains(&rule), "{rule} not among the denials: {denied_rules:?}");
    }
}

//! The conformance vectors made from a log the daemon wrote in the VM: real agent sessions (reads and
//! execs, allowed and denied, and a policy reload between them) under the real daemon; then the same
//! generator as the committed `tests/vectors/` (`audit::vectors::generate`) continues and tampers with
//! copies of that log in a scratch directory, and our verifier (library and the release binary's
//! `audit verify`) and the Python sample of docs/audit-format.md must each give every case's verdict and
//! name its entry.
use std::path::Path;

use safeclaw_agent::audit::{conformance, vectors};
use safeclaw_integration::{agent_bin, denied, entries_for, give_to_nobody, Daemon, RunAs};

const NAME: &str = "safeclaw-it-vectors";

/// Allows everything but reading `secret` and running `forbidden.sh` of the test's files.
fn policy(secret: &str) -> String {
    let files = std::env::temp_dir().join(NAME).join("files");
    format!(
        "version: 1\ndefault: allow\nrules:\n  - name: secret-read\n    action: file.read\n    effect: deny\n    \
         paths: [{}/{secret}]\n  - name: forbidden-binary\n    action: process.exec\n    effect: deny\n    \
         binary: [{}/forbidden.sh]\n",
        files.display(),
        files.display()
    )
}

#[test]
fn vectors_from_a_vm_written_log_get_their_verdicts_from_our_verifier_and_the_spec_sample() {
    let daemon = Daemon::start(NAME, &policy("secret.txt"));
    let files = daemon.files_dir();
    for (name, text, mode) in [
        ("notes.txt", "notes", 0o644),
        ("secret.txt", "s3cret", 0o644),
        ("plans.txt", "plans", 0o644),
        ("forbidden.sh", "#!/bin/sh\necho ran\n", 0o755),
    ] {
        std::fs::write(files.join(name), text).unwrap();
        give_to_nobody(&files.join(name), mode);
    }
    let path = |name: &str| files.join(name).display().to_string();
    let session = |argv: &[&str]| daemon.session("vectors-agent", RunAs::Nobody, argv);

    let read = session(&["cat", &path("notes.txt")]);
    assert!(read.status.success() && read.stdout == b"notes", "{read:?}");
    assert!(denied(&session(&["cat", &path("secret.txt")])));
    let exec = session(&["sh", "-c", &format!("{} || exit 3", path("forbidden.sh"))]);
    assert_eq!(exec.status.code(), Some(3), "the forbidden binary does not run: {exec:?}");
    assert!(!String::from_utf8_lossy(&exec.stdout).contains("ran"), "{exec:?}");
    let allowed = session(&["sh", "-c", "exec /bin/true"]);
    assert!(allowed.status.success(), "{allowed:?}");

    // A reload: now plans.txt is the secret.
    std::fs::write(daemon.work().join("policy.yaml"), policy("plans.txt")).unwrap();
    let reloaded = daemon.agent_command(&["policy", "reload"]);
    assert!(reloaded.status.success(), "{reloaded:?}");
    assert!(denied(&session(&["cat", &path("plans.txt")])));
    let read = session(&["cat", &path("secret.txt")]);
    assert!(read.status.success() && read.stdout == b"s3cret", "{read:?}");

    let base = daemon.work().to_owned();
    let (status, entries) = daemon.stop();
    assert!(status.success(), "{status}");
    let denial_of = |action: &str, name: &str| {
        let found = entries_for(&entries, action, &path(name));
        assert!(found.iter().any(|e| e["effect"] == "deny"), "{action} {name} denied: {found:#?}");
    };
    denial_of("file.read", "secret.txt");
    denial_of("file.read", "plans.txt");
    denial_of("process.exec", "forbidden.sh");
    assert!(entries_for(&entries, "file.read", &path("notes.txt")).iter().all(|e| e["effect"] == "allow"));
    assert!(entries.iter().filter(|e| e["action"] == "policy.load").count() >= 2, "start and reload");
    let log_id = entries[0]["details"]["logId"].as_str().expect("entry 0 names the log").to_owned();

    // The vectors, each log a continuation of a copy of the daemon's (but the attacker's own log).
    let out = std::env::temp_dir().join("safeclaw-it-vectors-out");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    vectors::generate(&out, Some(&base));
    let cases = conformance::cases(&out);
    let committed = conformance::cases(&Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors"));
    let kinds = |cases: &[conformance::Case]| -> Vec<(String, bool)> {
        cases.iter().map(|c| (c.name(), c.expected.is_some())).collect()
    };
    assert_eq!(kinds(&cases), kinds(&committed), "the same cases and verdicts as tests/vectors");
    for case in cases.iter().filter(|c| c.name() != "regenerated-log") {
        let active = std::fs::read_to_string(case.dir.join("log/audit.jsonl")).unwrap();
        assert!(
            active.contains(&format!("\"logId\":\"{log_id}\"")),
            "{}: the log continues the daemon's log {log_id}",
            case.name()
        );
    }
    let wrong = conformance::disagreements(&cases, &agent_bin());
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    std::fs::remove_dir_all(&out).unwrap();
}

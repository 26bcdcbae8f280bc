//! Escape suite, paths that lie: a file reached by a path that does not lead to it from the root —
//! unlinked and reopened through `/proc/self/fd`, on a detached `open_tree` clone, or after a
//! `chroot` — is decided on what the object is and flagged `path_unreachable`, from inside a real
//! agent session.
use std::path::Path;

use safeclaw_integration::{
    entries_for, give_to_nobody, probe_outcome, test_files_dir, RunAs, SharedDaemon, Turn,
};

const PROBE: &str = env!("CARGO_BIN_EXE_escape-probe");

static DAEMON: SharedDaemon = SharedDaemon::new("safeclaw-esc-paths");

/// Deny by default, but every attempt is allowed by a rule — except reading `secret` — so the
/// default decides nothing a path can name.
fn policy(secret: &str) -> String {
    format!(
        "version: 1\ndefault: deny\nrules:\n  - name: secret\n    action: file.read\n    effect: deny\n    paths: [{secret}]\n  - name: everything\n    action: \"*\"\n    effect: allow\n"
    )
}

/// The shared daemon on `policy`, with `files/secret.txt` owned by the agent's user in a directory it owns.
fn start(name: &str) -> (Turn, String) {
    let secret = format!("/tmp/{name}/files/secret.txt");
    let daemon = DAEMON.turn(&policy(&secret));
    let dir = test_files_dir(name);
    give_to_nobody(&dir, 0o755);
    std::fs::write(&secret, "s3cret").unwrap();
    give_to_nobody(secret.as_ref(), 0o600);
    (daemon, secret)
}

/// The one `file.read` entry whose path is `path`, checked to be a flagged denial.
fn flagged_denial(entries: &[serde_json::Value], path: &str) -> serde_json::Value {
    let found = entries_for(entries, "file.read", path);
    assert_eq!(found.len(), 1, "exactly one file.read entry for {path}: {found:#?}");
    let entry = found[0].clone();
    assert_eq!(entry["effect"], "deny", "{entry:#}");
    assert_eq!(entry["flags"], serde_json::json!(["path_unreachable"]), "{entry:#}");
    entry
}

#[test]
fn an_unlinked_secret_reopened_through_proc_self_fd_is_decided_by_its_last_name() {
    let name = "safeclaw-path-unlinked";
    let (daemon, secret) = start(name);
    let out = daemon.session("escape", RunAs::Nobody, &[PROBE, "unlink-reopen", &secret]);
    assert_eq!(probe_outcome(&out), "EPERM");
    let entries = daemon.entries();
    let entry = flagged_denial(&entries, &format!("{secret} (deleted)"));
    assert_eq!(entry["matchedRule"], "secret", "the rule of its last name decides: {entry:#}");
}

#[test]
fn an_unlinked_file_no_rule_denies_is_denied_by_a_deny_default() {
    let name = "safeclaw-path-unlinked-other";
    let (daemon, _) = start(name);
    let other = format!("/tmp/{name}/files/other.txt");
    std::fs::write(&other, "x").unwrap();
    give_to_nobody(other.as_ref(), 0o600);
    let out = daemon.session("escape", RunAs::Nobody, &[PROBE, "unlink-reopen", &other]);
    assert_eq!(probe_outcome(&out), "EPERM");
    let entries = daemon.entries();
    let entry = flagged_denial(&entries, &format!("{other} (deleted)"));
    assert!(entry.get("matchedRule").is_none(), "the default decides: {entry:#}");
}

#[test]
fn a_file_on_a_detached_open_tree_clone_is_denied() {
    let name = "safeclaw-path-open-tree";
    let (daemon, secret) = start(name);
    let dir = Path::new(&secret).parent().unwrap().to_str().unwrap().to_owned();
    let out = daemon.session("escape", RunAs::Root, &[PROBE, "open-tree-reopen", &dir, "secret.txt"]);
    assert_eq!(probe_outcome(&out), "EPERM");
    let entries = daemon.entries();
    // d_path names the file from the clone's own root.
    let entry = flagged_denial(&entries, "/secret.txt");
    assert!(entry.get("matchedRule").is_none(), "{entry:#}");
}

#[test]
fn chroot_is_refused() {
    let name = "safeclaw-path-chroot";
    let (daemon, secret) = start(name);
    let dir = Path::new(&secret).parent().unwrap().to_str().unwrap().to_owned();
    let out = daemon.session("escape", RunAs::Root, &[PROBE, "chroot", &dir]);
    assert_eq!(probe_outcome(&out), "EPERM");
    let entries = daemon.entries();
    let guards: Vec<_> = entries.iter().filter(|e| e["action"] == "guard.mount").collect();
    assert_eq!(guards.len(), 1, "{guards:#?}");
    assert_eq!(guards[0]["effect"], "deny");
    assert_eq!(guards[0]["requestDetails"]["detail"], 5, "mount_op::CHROOT: {:#}", guards[0]);
}

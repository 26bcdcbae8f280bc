//! Escape suite, paths that lie: a file reached by a path that does not lead to it from the root —
//! unlinked and reopened through `/proc/self/fd`, on a detached `open_tree` clone, or after a
//! `chroot` — is decided on what the object is and flagged `path_unreachable`, from inside a real
//! agent session; a path too long to resolve is denied.
use std::path::Path;

use safeclaw_integration::{
    entries_for, give_to_nobody, probe_outcome, test_files_dir, the_denial, RunAs, Turn,
};

use crate::{DAEMON, PROBE};

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

/// A path longer than the 512 bytes the kernel resolves first (and than the 256 bytes of a counted
/// repeat) is still resolved in full and decided by its rules: a secret at its end stays denied, a
/// file beside it allowed, and both are recorded under their whole path.
#[test]
fn a_long_path_is_resolved_and_decided_in_full() {
    let name = "safeclaw-path-long";
    let mut dir = test_files_dir(name);
    for level in 0..11 {
        dir.push(format!("{level:02}-{}", "x".repeat(57)));
        std::fs::create_dir(&dir).unwrap();
    }
    let secret = dir.join("secret.txt").to_str().unwrap().to_owned();
    let other = dir.join("other.txt").to_str().unwrap().to_owned();
    assert!(secret.len() > 700, "{secret}");
    let daemon = DAEMON.turn(&policy(&secret));
    std::fs::write(&secret, "s3cret").unwrap();
    give_to_nobody(secret.as_ref(), 0o600);
    std::fs::write(&other, "x").unwrap();
    give_to_nobody(other.as_ref(), 0o600);
    let out = daemon.session("escape", RunAs::Nobody, &[PROBE, "open", &secret]);
    assert_eq!(probe_outcome(&out), "EPERM");
    let out = daemon.session("escape", RunAs::Nobody, &[PROBE, "open", &other]);
    assert_eq!(probe_outcome(&out), "ok");
    let entries = daemon.entries();
    let denied = the_denial(&entries, "file.read", &secret);
    assert_eq!(denied["matchedRule"], "secret", "{denied:#}");
    let allowed = entries_for(&entries, "file.read", &other);
    assert_eq!(allowed.len(), 1, "{allowed:#?}");
    assert_eq!(allowed[0]["effect"], "allow", "{:#}", allowed[0]);
    assert_eq!(allowed[0]["matchedRule"], "everything", "{:#}", allowed[0]);
}

/// A file whose whole path is longer than PATH_MAX (reached by changing directory level by level)
/// has a path no rule can be matched against: it is denied and flagged, whatever the rules allow.
#[test]
fn a_path_longer_than_path_max_is_denied_as_unresolved() {
    let name = "safeclaw-path-too-long";
    let (daemon, _) = start(name);
    let component = "d".repeat(200);
    let top = Path::new("/tmp").join(name).join("files");
    nested_dirs(&top, &component, 25, "deep.txt");
    let out = daemon.session(
        "escape",
        RunAs::Nobody,
        &[PROBE, "open-deep", top.to_str().unwrap(), &component, "25", "deep.txt"],
    );
    assert_eq!(probe_outcome(&out), "EPERM");
    let entries = daemon.entries();
    let unresolved: Vec<_> = entries
        .iter()
        .filter(|e| e["action"] == "file.read" && e["flags"] == serde_json::json!(["path_unresolved"]))
        .collect();
    assert_eq!(unresolved.len(), 1, "{unresolved:#?}");
    assert_eq!(unresolved[0]["effect"], "deny", "{:#}", unresolved[0]);
}

/// `depth` directories named `component`, each in the last, below `top`, and the file `name` (mode
/// 0644) in the deepest; made by descriptors, since their path is longer than any path argument.
fn nested_dirs(top: &Path, component: &str, depth: usize, name: &str) {
    use std::ffi::CString;
    let component = CString::new(component).unwrap();
    let top = CString::new(top.to_str().unwrap()).unwrap();
    // SAFETY: plain syscalls on valid C strings and descriptors this function owns.
    unsafe {
        let mut dir = libc::open(top.as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY);
        assert!(dir >= 0, "open {top:?}: {}", std::io::Error::last_os_error());
        for _ in 0..depth {
            assert_eq!(
                libc::mkdirat(dir, component.as_ptr(), 0o755),
                0,
                "{}",
                std::io::Error::last_os_error()
            );
            let next = libc::openat(dir, component.as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY);
            assert!(next >= 0, "{}", std::io::Error::last_os_error());
            libc::close(dir);
            dir = next;
        }
        let name = CString::new(name).unwrap();
        let file = libc::openat(dir, name.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644);
        assert!(file >= 0, "{}", std::io::Error::last_os_error());
        libc::close(file);
        libc::close(dir);
    }
}

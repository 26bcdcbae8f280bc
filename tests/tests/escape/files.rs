//! Escape suite, file reads: from inside a real agent session (`safeclaw-agent exec --user nobody`),
//! each way of reaching a denied file by another name fails with EPERM and leaves a deny entry for the
//! file's real path. The file belongs to the agent's user, so only SafeClaw stands in the way.
use std::path::PathBuf;

use safeclaw_integration::{give_to_nobody, probe_outcome, test_files_dir, the_denial, RunAs, Turn};

use crate::{DAEMON, PROBE};

/// The shared daemon with a policy that denies every open of one secret file, and that file.
struct Secret {
    daemon: Turn,
    /// The secret's absolute path.
    path: String,
    /// Its directory.
    dir: PathBuf,
}

impl Secret {
    /// `name`: the test's own directory under /tmp.
    fn start(name: &str) -> Secret {
        let dir = test_files_dir(name);
        let path = dir.join("secret.txt").display().to_string();
        let policy = format!(
            "version: 1\ndefault: allow\nrules:\n  - name: secret\n    action: file.*\n    effect: deny\n    paths: [{path}]\n"
        );
        let daemon = DAEMON.turn(&policy);
        std::fs::write(&path, "s3cret").unwrap();
        give_to_nobody(path.as_ref(), 0o600);
        Secret { daemon, path, dir }
    }

    fn run(&self, argv: &[&str]) -> std::process::Output {
        self.daemon.session("escape", RunAs::Nobody, argv)
    }

    /// Checks the one denial of the secret during this test, read as `action`.
    fn assert_denied_read(self, action: &str) -> serde_json::Value {
        let entries = self.daemon.entries();
        let entry = the_denial(&entries, action, &self.path).clone();
        assert_eq!(entry["matchedRule"], "secret");
        entry
    }
}

#[test]
fn symlink_to_the_secret() {
    let secret = Secret::start("safeclaw-esc-symlink");
    let link = secret.dir.parent().unwrap().join("innocent");
    std::os::unix::fs::symlink(&secret.path, &link).unwrap();
    let out = secret.run(&[PROBE, "open", link.to_str().unwrap()]);
    assert_eq!(probe_outcome(&out), "EPERM");
    secret.assert_denied_read("file.read");
}

#[test]
fn hard_link_to_the_secret_is_refused() {
    let secret = Secret::start("safeclaw-esc-hardlink");
    // /tmp is on the same mount and writable by anyone; the secret is nobody's own file, so
    // protected_hardlinks lets nobody link it: only SafeClaw can refuse.
    let link = PathBuf::from("/tmp/safeclaw-esc-hardlink-copy");
    let _ = std::fs::remove_file(&link);
    let out = secret.run(&[PROBE, "link", &secret.path, link.to_str().unwrap()]);
    assert_eq!(probe_outcome(&out), "EPERM");
    assert!(!link.exists(), "the link was created");
    let entry = secret.assert_denied_read("file.write");
    assert_eq!(entry["requestDetails"]["mode"], "rw", "a link is decided as read and write: {entry:#}");
    assert_eq!(entry["flags"], serde_json::json!(["hard_link"]), "{entry:#}");
}

#[test]
fn renaming_the_secret_away_is_refused() {
    let secret = Secret::start("safeclaw-esc-rename-away");
    // The agent may write the secret's directory: only SafeClaw can refuse.
    give_to_nobody(&secret.dir, 0o755);
    let renamed = PathBuf::from("/tmp/safeclaw-esc-rename-away-copy");
    let _ = std::fs::remove_file(&renamed);
    let out = secret.run(&[PROBE, "rename", &secret.path, renamed.to_str().unwrap()]);
    assert_eq!(probe_outcome(&out), "EPERM");
    assert!(std::path::Path::new(&secret.path).exists() && !renamed.exists());
    let entry = secret.assert_denied_read("file.write");
    assert_eq!(entry["requestDetails"]["mode"], "rw", "{entry:#}");
    assert_eq!(entry["flags"], serde_json::json!(["rename"]), "{entry:#}");
}

#[test]
fn renaming_a_file_over_the_secret_is_refused() {
    let secret = Secret::start("safeclaw-esc-rename-over");
    give_to_nobody(&secret.dir, 0o755);
    let decoy = secret.dir.join("decoy");
    std::fs::write(&decoy, "replaced").unwrap();
    give_to_nobody(&decoy, 0o600);
    let out = secret.run(&[PROBE, "rename", decoy.to_str().unwrap(), &secret.path]);
    assert_eq!(probe_outcome(&out), "EPERM");
    assert_eq!(std::fs::read_to_string(&secret.path).unwrap(), "s3cret");
    let entry = secret.assert_denied_read("file.write");
    assert_eq!(entry["requestDetails"]["mode"], "w", "{entry:#}");
    assert_eq!(entry["flags"], serde_json::json!(["rename"]), "{entry:#}");
}

#[test]
fn relative_path_after_chdir() {
    let secret = Secret::start("safeclaw-esc-relative");
    let script = format!("cd {}/.. && exec {PROBE} open ./files/../files/secret.txt", secret.dir.display());
    let out = secret.run(&["/bin/sh", "-c", &script]);
    assert_eq!(probe_outcome(&out), "EPERM");
    secret.assert_denied_read("file.read");
}

#[test]
fn reopening_an_o_path_descriptor_through_proc_self_fd() {
    let secret = Secret::start("safeclaw-esc-opath");
    let out = secret.run(&[PROBE, "opath-reopen", &secret.path]);
    assert_eq!(probe_outcome(&out), "EPERM");
    secret.assert_denied_read("file.read");
}

#[test]
fn through_proc_self_root() {
    let secret = Secret::start("safeclaw-esc-procroot");
    let via_root = format!("/proc/self/root{}", secret.path);
    let out = secret.run(&[PROBE, "open", &via_root]);
    assert_eq!(probe_outcome(&out), "EPERM");
    secret.assert_denied_read("file.read");
}

#[test]
fn openat2_beneath_a_directory_descriptor() {
    let secret = Secret::start("safeclaw-esc-openat2");
    let out = secret.run(&[PROBE, "openat2", secret.dir.to_str().unwrap(), "secret.txt"]);
    assert_eq!(probe_outcome(&out), "EPERM");
    secret.assert_denied_read("file.read");
}

#[test]
fn io_uring_openat_on_a_worker_thread() {
    let secret = Secret::start("safeclaw-esc-iouring");
    let out = secret.run(&[PROBE, "io-uring-open", &secret.path]);
    assert_eq!(probe_outcome(&out), "EPERM");
    secret.assert_denied_read("file.read");
}

#[test]
fn shell_command_string() {
    let secret = Secret::start("safeclaw-esc-sh");
    let out = secret.run(&["/bin/sh", "-c", &format!("cat {} ; echo status=$?", secret.path)]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "status=1");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"), "{out:?}");
    let entry = secret.assert_denied_read("file.read");
    assert_eq!(entry["requestDetails"]["comm"], "cat");
}

#[test]
fn python_command_string() {
    let secret = Secret::start("safeclaw-esc-python");
    let code = format!(
        "import errno\ntry:\n    open({:?}).read()\n    print('ok')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])",
        secret.path
    );
    let out = secret.run(&["/usr/bin/python3", "-c", &code]);
    assert_eq!(probe_outcome(&out), "EPERM");
    secret.assert_denied_read("file.read");
}

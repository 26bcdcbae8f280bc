//! Escape suite, changing a file without opening it for write: from inside a real agent session
//! (`safeclaw-agent exec --user nobody`), each change to a write-protected path fails with EPERM and
//! leaves one deny entry under its own action, decided by the write rules. The files and their
//! directory belong to the agent's user, so only SafeClaw stands in the way.
use std::path::PathBuf;

use safeclaw_integration::{
    entries_for, give_to_nobody, probe_outcome, test_files_dir, the_denial, RunAs, SharedDaemon, Turn, NOBODY,
};

const PROBE: &str = env!("CARGO_BIN_EXE_escape-probe");

static DAEMON: SharedDaemon = SharedDaemon::new("safeclaw-esc-changes");

/// The shared daemon with a policy that allows everything but writing one file and one autostart directory, both
/// of which the agent may read, and may change by file permissions.
struct Protected {
    daemon: Turn,
    /// The write-protected file (it holds `original`).
    file: String,
    /// The write-protected directory.
    autostart: PathBuf,
    /// Their directory, the agent's own.
    dir: PathBuf,
}

impl Protected {
    fn start(name: &str) -> Protected {
        let dir = test_files_dir(name);
        let file = dir.join("startup.rc").display().to_string();
        let autostart = dir.join("autostart");
        let policy = format!(
            "version: 1\ndefault: allow\nrules:\n  - name: protected\n    action: file.write\n    effect: deny\n    paths: [{file}, {}/**]\n",
            autostart.display()
        );
        let daemon = DAEMON.turn(&policy);
        give_to_nobody(&dir, 0o755);
        std::fs::write(&file, "original").unwrap();
        give_to_nobody(file.as_ref(), 0o644);
        std::fs::create_dir_all(autostart.join("empty")).unwrap();
        give_to_nobody(&autostart, 0o755);
        give_to_nobody(&autostart.join("empty"), 0o755);
        Protected { daemon, file, autostart, dir }
    }

    fn probe(&self, args: &[&str]) -> String {
        let mut argv = vec![PROBE];
        argv.extend_from_slice(args);
        probe_outcome(&self.daemon.session("escape", RunAs::Nobody, &argv))
    }

    /// The test's one denial of `path` as `action`, by the `protected` rule.
    fn denial(self, action: &str, path: &str) -> serde_json::Value {
        let entries = self.daemon.entries();
        let entry = the_denial(&entries, action, path).clone();
        assert_eq!(entry["matchedRule"], "protected", "{entry:#}");
        entry
    }

    fn unchanged(&self) {
        assert_eq!(std::fs::read_to_string(&self.file).unwrap(), "original");
    }
}

#[test]
fn open_read_only_with_o_trunc_is_decided_as_a_write() {
    let p = Protected::start("safeclaw-chg-otrunc");
    assert_eq!(p.probe(&["open-trunc", &p.file]), "EPERM");
    p.unchanged();
    let file = p.file.clone();
    let entry = p.denial("file.write", &file);
    assert_eq!(entry["requestDetails"]["mode"], "rw", "it reads and empties the file: {entry:#}");
}

#[test]
fn truncate_by_path_is_refused() {
    let p = Protected::start("safeclaw-chg-truncate");
    assert_eq!(p.probe(&["truncate", &p.file]), "EPERM");
    p.unchanged();
    let file = p.file.clone();
    p.denial("file.truncate", &file);
}

#[test]
fn unlink_is_refused() {
    let p = Protected::start("safeclaw-chg-unlink");
    assert_eq!(p.probe(&["unlink", &p.file]), "EPERM");
    p.unchanged();
    let file = p.file.clone();
    p.denial("file.delete", &file);
}

#[test]
fn symlink_into_a_protected_directory_is_refused() {
    let p = Protected::start("safeclaw-chg-symlink");
    let link = p.autostart.join("agent.desktop");
    assert_eq!(p.probe(&["symlink", "/tmp/agent-written", link.to_str().unwrap()]), "EPERM");
    assert!(link.symlink_metadata().is_err(), "the link was created");
    p.denial("file.symlink", link.to_str().unwrap());
}

#[test]
fn mkdir_in_a_protected_directory_is_refused() {
    let p = Protected::start("safeclaw-chg-mkdir");
    let sub = p.autostart.join("sub");
    assert_eq!(p.probe(&["mkdir", sub.to_str().unwrap()]), "EPERM");
    assert!(!sub.exists());
    p.denial("file.mkdir", sub.to_str().unwrap());
}

#[test]
fn rmdir_of_a_protected_directory_is_refused() {
    let p = Protected::start("safeclaw-chg-rmdir");
    let empty = p.autostart.join("empty");
    assert_eq!(p.probe(&["rmdir", empty.to_str().unwrap()]), "EPERM");
    assert!(empty.is_dir());
    p.denial("file.delete", empty.to_str().unwrap());
}

#[test]
fn chmod_is_refused_and_records_the_mode() {
    use std::os::unix::fs::PermissionsExt as _;
    let p = Protected::start("safeclaw-chg-chmod");
    assert_eq!(p.probe(&["chmod", &p.file, "777"]), "EPERM");
    assert_eq!(std::fs::metadata(&p.file).unwrap().permissions().mode() & 0o777, 0o644);
    let file = p.file.clone();
    let entry = p.denial("file.chmod", &file);
    assert_eq!(entry["requestDetails"]["newMode"], 0o777, "{entry:#}");
}

#[test]
fn chown_is_refused_and_records_the_ids() {
    let p = Protected::start("safeclaw-chg-chown");
    // The owner may "change" its file to its own uid: only SafeClaw can refuse.
    assert_eq!(p.probe(&["chown", &p.file, &NOBODY.to_string(), "-1"]), "EPERM");
    let file = p.file.clone();
    let entry = p.denial("file.chown", &file);
    assert_eq!(entry["requestDetails"]["newUid"], NOBODY, "{entry:#}");
    assert!(entry["requestDetails"].get("newGid").is_none(), "gid -1 is unchanged: {entry:#}");
}

#[test]
fn allowed_changes_happen_and_are_recorded() {
    let p = Protected::start("safeclaw-chg-allowed");
    let scratch = p.dir.join("scratch");
    std::fs::write(&scratch, "x").unwrap();
    give_to_nobody(&scratch, 0o644);
    let made = p.dir.join("made");
    assert_eq!(p.probe(&["unlink", scratch.to_str().unwrap()]), "ok");
    assert_eq!(p.probe(&["mkdir", made.to_str().unwrap()]), "ok");
    assert!(!scratch.exists() && made.is_dir());
    let entries = p.daemon.entries();
    for (action, path) in [("file.delete", &scratch), ("file.mkdir", &made)] {
        let found = entries_for(&entries, action, path.to_str().unwrap());
        assert_eq!(found.len(), 1, "one {action} entry: {found:#?}");
        assert_eq!(found[0]["effect"], "allow", "{:#}", found[0]);
    }
}

//! Escape suite, changing a file without opening it for write: from inside a real agent session
//! (`safeclaw-agent exec --user nobody`), each change to a write-protected path fails with EPERM and
//! leaves one deny entry under its own action, decided by the write rules. The files and their
//! directory belong to the agent's user, so only SafeClaw stands in the way.
use std::path::PathBuf;

use safeclaw_integration::{
    entries_for, give_to_nobody, probe_outcome, test_files_dir, the_denial, Mount, RunAs, Turn, NOBODY,
};

use crate::{DAEMON, PROBE};

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
        self.probe_as(RunAs::Nobody, args)
    }

    fn probe_as(&self, run_as: RunAs, args: &[&str]) -> String {
        let mut argv = vec![PROBE];
        argv.extend_from_slice(args);
        probe_outcome(&self.daemon.session("escape", run_as, &argv))
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

/// The extended attribute `name` of `path`, if it has one.
fn xattr(path: &str, name: &str) -> Option<Vec<u8>> {
    let path = std::ffi::CString::new(path).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    let mut value = [0u8; 256];
    // SAFETY: valid C strings and a live buffer of the given size.
    let len = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
    usize::try_from(len).ok().map(|len| value[..len].to_vec())
}

/// The kernel the test runs on: before 6.6, tmpfs (the VM's `/tmp`) has no `user.` attributes.
fn tmpfs_has_user_xattrs() -> bool {
    std::env::var("SAFECLAW_VM_KERNEL").map_or(true, |kernel| kernel != "6.1")
}

#[test]
fn setxattr_is_refused_and_records_the_name_not_the_value() {
    let p = Protected::start("safeclaw-chg-setxattr");
    assert_eq!(p.probe(&["setxattr", &p.file, "user.origin", "agent-secret-value"]), "EPERM");
    assert_eq!(xattr(&p.file, "user.origin"), None);
    let file = p.file.clone();
    let entry = p.denial("file.setxattr", &file);
    assert_eq!(entry["requestDetails"]["xattrName"], "user.origin", "{entry:#}");
    assert!(!entry.to_string().contains("agent-secret-value"), "the value is never recorded: {entry:#}");
}

#[test]
fn fsetxattr_through_a_read_only_descriptor_is_refused() {
    let p = Protected::start("safeclaw-chg-fsetxattr");
    assert_eq!(p.probe(&["fsetxattr", &p.file, "user.origin", "x"]), "EPERM");
    assert_eq!(xattr(&p.file, "user.origin"), None);
    let file = p.file.clone();
    let entry = p.denial("file.setxattr", &file);
    assert_eq!(entry["requestDetails"]["xattrName"], "user.origin", "{entry:#}");
}

#[test]
fn removexattr_is_refused() {
    let p = Protected::start("safeclaw-chg-removexattr");
    // The hook runs before the file system looks the attribute up: no attribute is needed.
    assert_eq!(p.probe(&["removexattr", &p.file, "user.origin"]), "EPERM");
    let file = p.file.clone();
    let entry = p.denial("file.removexattr", &file);
    assert_eq!(entry["requestDetails"]["xattrName"], "user.origin", "{entry:#}");
}

#[test]
fn setting_a_posix_acl_is_refused() {
    let p = Protected::start("safeclaw-chg-setfacl");
    // 6.1 decides it at inode_setxattr, 6.12 at inode_set_acl: the same action either way.
    assert_eq!(p.probe(&["setfacl", &p.file]), "EPERM");
    assert_eq!(xattr(&p.file, "system.posix_acl_access"), None);
    let file = p.file.clone();
    let entry = p.denial("file.setxattr", &file);
    assert_eq!(entry["requestDetails"]["xattrName"], "system.posix_acl_access", "{entry:#}");
}

/// The attribute hooks get a dentry without its mount, so they decide every name the agent can reach
/// the file by: with a second allowed name (a bind mount of its directory) the change is allowed;
/// with a third inside the protected directory, that name decides.
#[test]
fn setxattr_on_a_file_also_named_inside_a_protected_directory_is_refused() {
    let p = Protected::start("safeclaw-chg-setxattr-bind");
    let (open, alias, inside) = (p.dir.join("open"), p.dir.join("alias"), p.autostart.join("empty"));
    for dir in [&open, &alias] {
        std::fs::create_dir_all(dir).unwrap();
        give_to_nobody(dir, 0o755);
    }
    let file = open.join("notes").display().to_string();
    std::fs::write(&file, "x").unwrap();
    give_to_nobody(file.as_ref(), 0o644);
    let alias_mount = Mount::bind(&open, &alias);
    let allowed = p.probe(&["setxattr", &file, "user.first", "agent"]);
    let inside_mount = Mount::bind(&open, &inside);
    let refused = p.probe(&["setxattr", &file, "user.second", "agent"]);
    drop((inside_mount, alias_mount));
    // Allowed by SafeClaw; before 6.6 tmpfs itself has no `user.` attributes.
    assert_eq!(allowed, if tmpfs_has_user_xattrs() { "ok" } else { "EOPNOTSUPP" });
    assert_eq!(refused, "EPERM");
    assert_eq!(xattr(&file, "user.second"), None);
    let named = inside.join("notes").display().to_string();
    let entry = p.denial("file.setxattr", &named);
    assert_eq!(entry["requestDetails"]["xattrName"], "user.second", "{entry:#}");
}

#[test]
fn setxattr_where_writing_is_allowed_happens_and_is_recorded() {
    let p = Protected::start("safeclaw-chg-setxattr-allowed");
    let scratch = p.dir.join("scratch").display().to_string();
    std::fs::write(&scratch, "x").unwrap();
    give_to_nobody(scratch.as_ref(), 0o644);
    let outcome = p.probe(&["setxattr", &scratch, "user.origin", "agent"]);
    if tmpfs_has_user_xattrs() {
        assert_eq!(outcome, "ok");
        assert_eq!(xattr(&scratch, "user.origin").as_deref(), Some(&b"agent"[..]));
    } else {
        // Allowed by SafeClaw, then refused by tmpfs itself.
        assert_eq!(outcome, "EOPNOTSUPP");
    }
    let entries = p.daemon.entries();
    let found = entries_for(&entries, "file.setxattr", &scratch);
    assert_eq!(found.len(), 1, "one file.setxattr entry: {found:#?}");
    assert_eq!(found[0]["effect"], "allow", "{:#}", found[0]);
    assert_eq!(found[0]["requestDetails"]["xattrName"], "user.origin", "{:#}", found[0]);
}

#[test]
fn root_agent_cannot_give_a_file_it_may_write_a_capability() {
    let p = Protected::start("safeclaw-chg-setfcap");
    let scratch = p.dir.join("tool").display().to_string();
    std::fs::write(&scratch, "x").unwrap();
    give_to_nobody(scratch.as_ref(), 0o755);
    assert_eq!(p.probe_as(RunAs::Root, &["setfcap", &scratch]), "EPERM");
    assert_eq!(xattr(&scratch, "security.capability"), None);
    let entries = p.daemon.entries();
    let entry = the_denial(&entries, "file.setxattr", &scratch);
    assert_eq!(entry["requestDetails"]["xattrName"], "security.capability", "{entry:#}");
    assert_eq!(entry["flags"], serde_json::json!(["protected_xattr"]), "{entry:#}");
    assert!(entry.get("matchedRule").is_none(), "no rule decides it: {entry:#}");
}

//! Escape suite, blinding SafeClaw: from inside a real agent session, leaving the cgroup (by its
//! `cgroup.procs`, by clone3, by a descriptor passed from outside), changing cgroupfs or bpffs, signalling or
//! tracing the daemon or another process outside, and bind-mounting a secret elsewhere in a private
//! mount namespace all fail with EPERM and are deny entries; and a thousand simultaneous denied opens
//! are a thousand denials and a thousand entries. Root-owned targets need a root agent (`--as-root`)
//! to get past file permissions to SafeClaw's hooks at all.
use safeclaw_integration::{give_to_nobody, probe_outcome, test_files_dir, RunAs};

use crate::{nobodys_process_outside, ALLOW_ALL, DAEMON, PROBE};

/// The one guard entry of `action`, checked to be a denial.
fn the_guard<'a>(entries: &'a [serde_json::Value], action: &str) -> &'a serde_json::Value {
    let found: Vec<_> = entries.iter().filter(|e| e["action"] == action).collect();
    assert_eq!(found.len(), 1, "exactly one {action} entry: {found:#?}");
    assert_eq!(found[0]["effect"], "deny");
    found[0]
}

#[test]
fn root_agent_cannot_move_out_of_its_cgroup() {
    let daemon = DAEMON.turn(ALLOW_ALL);
    let root_procs = daemon.cgroup.parent().unwrap().join("cgroup.procs");
    let script = format!("echo $$ > {}; echo status=$?", root_procs.display());
    let out = daemon.session("escape", RunAs::Root, &["/bin/sh", "-c", &script]);
    // dash: a failed redirection is status 2, with the errno's message.
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "status=2", "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"), "{out:?}");
    let entries = daemon.entries();
    let entry = the_guard(&entries, "guard.protected_fs_write");
    assert_eq!(entry["requestDetails"]["detail"], CGROUP2_SUPER_MAGIC, "{entry:#?}");
}

/// `cgroup2`'s magic, the detail of a guarded cgroupfs write.
const CGROUP2_SUPER_MAGIC: u32 = 0x6367_7270;
/// `bpf`'s magic (bpffs).
const BPF_FS_MAGIC: u32 = 0xcafe_4a11;

#[test]
fn root_agent_cannot_start_a_child_in_another_cgroup() {
    let daemon = DAEMON.turn(ALLOW_ALL);
    let outside = daemon.cgroup.parent().unwrap().to_str().unwrap().to_string();
    let out = daemon.session("escape", RunAs::Root, &[PROBE, "clone3-into", &outside]);
    assert_eq!(probe_outcome(&out), "EPERM");
    let entries = daemon.entries();
    let entry = the_guard(&entries, "guard.protected_fs_write");
    assert_eq!(entry["requestDetails"]["detail"], CGROUP2_SUPER_MAGIC, "{entry:#?}");
}

#[test]
fn root_agent_cannot_use_a_cgroup_procs_passed_from_outside() {
    use std::os::fd::AsRawFd as _;
    let daemon = DAEMON.turn(ALLOW_ALL);
    let socket = test_files_dir("safeclaw-esc-passed-fd").join("socket");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    // Opened for writing outside the cgroup, where nothing refuses it, then handed to the agent.
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(daemon.cgroup.parent().unwrap().join("cgroup.procs"))
        .unwrap();
    let sender = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        send_descriptor(&stream, procs.as_raw_fd());
    });
    let out = daemon.session("escape", RunAs::Root, &[PROBE, "receive-and-write", socket.to_str().unwrap()]);
    sender.join().unwrap();
    assert_eq!(probe_outcome(&out), "EBADF", "the descriptor never reaches the agent");
    let entries = daemon.entries();
    let entry = the_guard(&entries, "guard.protected_fs_write");
    assert_eq!(entry["requestDetails"]["detail"], CGROUP2_SUPER_MAGIC, "{entry:#?}");
}

/// Sends `fd` over `stream` (SCM_RIGHTS) with one byte of data.
fn send_descriptor(stream: &std::os::unix::net::UnixStream, fd: std::os::fd::RawFd) {
    use std::os::fd::AsRawFd as _;
    let mut byte = *b"x";
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut control = [0u64; 4];
    // SAFETY: a zeroed msghdr pointed at buffers that outlive the call, with one SCM_RIGHTS header
    // written inside `control` (CMSG_SPACE(4) = 24 bytes of its 32).
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(4) as _;
        let header = libc::CMSG_FIRSTHDR(&msg);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(4) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(header) as *mut i32, fd);
        libc::sendmsg(stream.as_raw_fd(), &msg, 0)
    };
    assert_eq!(sent, 1, "sendmsg: {}", std::io::Error::last_os_error());
}

#[test]
fn root_agent_cannot_change_cgroupfs_or_bpffs() {
    let daemon = DAEMON.turn(ALLOW_ALL);
    let parent = daemon.cgroup.parent().unwrap();
    let child = parent.join("safeclaw-escape-child");
    let link = daemon.pin_dir.join("safeclaw-escape-link");
    let script =
        format!("mkdir {}; echo mkdir=$?; ln -s x {}; echo symlink=$?", child.display(), link.display());
    let names = daemon.session("escape", RunAs::Root, &["/bin/sh", "-c", &script]);
    let made = (child.exists(), link.symlink_metadata().is_ok());
    let _ = std::fs::remove_dir(&child);
    let _ = std::fs::remove_file(&link);
    assert_eq!(made, (false, false), "{names:?}");
    assert_eq!(String::from_utf8_lossy(&names.stdout), "mkdir=1\nsymlink=1\n", "{names:?}");
    let procs = parent.join("cgroup.procs");
    let truncate = daemon.session("escape", RunAs::Root, &[PROBE, "truncate", procs.to_str().unwrap()]);
    assert_eq!(probe_outcome(&truncate), "EPERM");
    let xattr = daemon.session(
        "escape",
        RunAs::Root,
        &[PROBE, "setxattr", parent.to_str().unwrap(), "user.safeclaw", "1"],
    );
    assert_eq!(probe_outcome(&xattr), "EPERM");
    let entries = daemon.entries();
    let details: Vec<_> = entries
        .iter()
        .filter(|e| e["action"] == "guard.protected_fs_write")
        .map(|e| (e["effect"].clone(), e["requestDetails"]["detail"].clone()))
        .collect();
    let denied = |magic: u32| ("deny".into(), magic.into());
    assert_eq!(
        details,
        [
            denied(CGROUP2_SUPER_MAGIC),
            denied(BPF_FS_MAGIC),
            denied(CGROUP2_SUPER_MAGIC),
            denied(CGROUP2_SUPER_MAGIC)
        ],
        "mkdir, symlink, truncate, setxattr: {entries:#?}"
    );
}

#[test]
fn root_agent_cannot_kill_the_daemon() {
    let daemon = DAEMON.turn(ALLOW_ALL);
    let pid = daemon.pid();
    let script = format!("kill -KILL {pid}; echo status=$?");
    let out = daemon.session("escape", RunAs::Root, &["/bin/sh", "-c", &script]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "status=1", "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not permitted"), "{out:?}");
    let entries = daemon.entries();
    let entry = the_guard(&entries, "guard.signal");
    assert_eq!(entry["requestDetails"]["targetPid"], pid);
    assert_eq!(entry["requestDetails"]["detail"], 9, "SIGKILL");
}

#[test]
fn root_agent_cannot_ptrace_the_daemon() {
    let daemon = DAEMON.turn(ALLOW_ALL);
    let pid = daemon.pid();
    let out = daemon.session("escape", RunAs::Root, &[PROBE, "ptrace", &pid.to_string()]);
    assert_eq!(probe_outcome(&out), "EPERM");
    let entries = daemon.entries();
    assert_eq!(the_guard(&entries, "guard.ptrace")["requestDetails"]["targetPid"], pid);
}

#[test]
fn agent_cannot_ptrace_its_users_process_outside_the_cgroup() {
    let daemon = DAEMON.turn(ALLOW_ALL);
    // nobody's own process: file permissions and Yama would let nobody trace it.
    let mut outside = nobodys_process_outside();
    let out = daemon.session("escape", RunAs::Nobody, &[PROBE, "ptrace", &outside.id().to_string()]);
    outside.kill().unwrap();
    outside.wait().unwrap();
    assert_eq!(probe_outcome(&out), "EPERM");
    let entries = daemon.entries();
    assert_eq!(the_guard(&entries, "guard.ptrace")["requestDetails"]["targetPid"], outside.id());
}

#[test]
fn root_agent_cannot_bind_mount_in_a_private_mount_namespace() {
    let daemon = DAEMON.turn(ALLOW_ALL);
    let files = test_files_dir("safeclaw-esc-bind");
    let secret = files.join("secret");
    let decoy = files.join("decoy");
    std::fs::write(&secret, "s3cret").unwrap();
    std::fs::write(&decoy, "").unwrap();
    let out = daemon.session(
        "escape",
        RunAs::Root,
        &[PROBE, "unshare-bind", secret.to_str().unwrap(), decoy.to_str().unwrap()],
    );
    assert_eq!(probe_outcome(&out), "EPERM");
    let entries = daemon.entries();
    assert_eq!(the_guard(&entries, "guard.mount")["requestDetails"]["detail"], 1, "mount_op::MOUNT");
}

#[test]
fn a_thousand_simultaneous_denied_opens_are_all_denied_and_all_recorded() {
    let name = "safeclaw-esc-thousand";
    let secret = format!("/tmp/{name}/files/secret");
    let policy = format!(
        "version: 1\ndefault: allow\nrules:\n  - name: secret\n    action: file.read\n    effect: deny\n    paths: [{secret}]\n"
    );
    let daemon = DAEMON.turn(&policy);
    test_files_dir(name);
    std::fs::write(&secret, "s3cret").unwrap();
    give_to_nobody(secret.as_ref(), 0o600);
    let out = daemon.session("escape", RunAs::Nobody, &[PROBE, "many-open", &secret, "1000"]);
    assert_eq!(probe_outcome(&out), "EPERMx1000");
    let entries = daemon.entries();
    let found = safeclaw_integration::entries_for(&entries, "file.read", &secret);
    assert_eq!(found.len(), 1000, "one entry per attempt");
    assert!(found.iter().all(|e| e["effect"] == "deny" && e["matchedRule"] == "secret"));
    let pids: std::collections::BTreeSet<_> =
        found.iter().map(|e| e["requestDetails"]["pid"].to_string()).collect();
    assert_eq!(pids.len(), 1000, "each from its own process");
    let seqs: std::collections::BTreeSet<_> = found.iter().map(|e| e["kernelSeq"].to_string()).collect();
    assert_eq!(seqs.len(), 1000);
}

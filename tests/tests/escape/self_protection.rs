//! An agent cannot step around enforcement: each technique fails with EPERM from inside the agent
//! cgroup, works (or fails otherwise) from outside, and every denial is an audit entry.
use safeclaw_integration::denied;

use crate::{ALLOW_ALL, DAEMON};

#[test]
fn agent_cannot_escape_blind_or_unload_enforcement() {
    let daemon = DAEMON.turn(ALLOW_ALL);
    let root_procs = daemon.cgroup.parent().unwrap().join("cgroup.procs");
    let daemon_pid = daemon.pid();

    let leave = daemon.sh(&format!("echo $$ > {}", root_procs.display()));
    assert!(denied(&leave), "moving out of the cgroup: {leave:?}");
    let kill = daemon.sh(&format!("kill -STOP {daemon_pid}"));
    assert!(!kill.status.success(), "signalling the daemon succeeded");
    assert!(String::from_utf8_lossy(&kill.stderr).contains("not permitted"), "{kill:?}");
    let bpf = daemon.sh("exec bpftool prog list");
    assert!(!bpf.status.success(), "bpf() from inside succeeded: {bpf:?}");
    // Not tested here: userns_create. The VM runs tests in a chroot, where the kernel refuses
    // unshare(CLONE_NEWUSER) with EPERM before any LSM hook runs, so the hook cannot be observed.
    let mount = daemon.sh("exec mount -t tmpfs none /mnt");
    assert!(!mount.status.success(), "mount from inside succeeded: {mount:?}");
    // Inside the cgroup, signalling its own children stays possible.
    let own = daemon.sh("sleep 30 & kill $!; wait $!; test $? -eq 143");
    assert!(own.status.success(), "signalling its own child: {own:?}");

    // A daemon stopped or killed by the agent could not answer the reload `entries` waits for.
    let entries = daemon.entries();
    let guarded = |action: &str| entries.iter().filter(|e| e["action"] == action).count();
    assert!(guarded("guard.protected_fs_write") >= 1, "cgroup.procs write audited");
    let signal = entries
        .iter()
        .find(|e| e["action"] == "guard.signal" && e["requestDetails"]["targetPid"] == daemon_pid)
        .expect("the signal to the daemon is audited");
    assert_eq!(signal["effect"], "deny");
    assert_eq!(signal["requestDetails"]["detail"], 19, "SIGSTOP");
    assert!(guarded("guard.bpf") >= 1, "bpf() audited");
    assert!(guarded("guard.mount") >= 1, "mount audited");
}

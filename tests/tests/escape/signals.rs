//! Escape suite, signals without kill(): a pipe whose read end the agent tries to give (F_SETOWN) to
//! a process outside the cgroup, with SIGKILL or SIGTERM as its I/O signal (F_SETSIG), then a
//! write into it. Naming the outsider as owner is refused with EPERM (the kernel would otherwise
//! send the signal from whatever context the I/O happens in) and recorded as a `guard.signal`
//! denial flagged `sigio`; the target lives on. An agent may still own its descriptors itself.
use safeclaw_integration::{probe_outcome, RunAs};

use crate::{nobodys_process_outside, ALLOW_ALL, DAEMON, PROBE};

/// The one `guard.signal` entry: a refused F_SETOWN naming `target` (`detail` 0: no signal sent).
fn assert_owner_refused(entries: &[serde_json::Value], target: u32) {
    let found: Vec<_> = entries.iter().filter(|e| e["action"] == "guard.signal").collect();
    assert_eq!(found.len(), 1, "exactly one guard.signal entry: {found:#?}");
    assert_eq!(found[0]["effect"], "deny");
    assert_eq!(found[0]["requestDetails"]["targetPid"], target);
    assert_eq!(found[0]["requestDetails"]["detail"], 0);
    assert_eq!(found[0]["flags"], serde_json::json!(["sigio"]));
}

#[test]
fn sigio_cannot_kill_the_users_process_outside_the_cgroup() {
    let daemon = DAEMON.turn(ALLOW_ALL);
    // nobody's own process: without SafeClaw the kernel lets nobody's SIGIO reach it.
    let mut outside = nobodys_process_outside();
    let pid = outside.id();
    let out = daemon.session("escape", RunAs::Nobody, &[PROBE, "sigio", &pid.to_string(), "9"]);
    assert_eq!(probe_outcome(&out), "EPERM");
    let alive = outside.try_wait().unwrap().is_none();
    outside.kill().unwrap();
    outside.wait().unwrap();
    assert!(alive, "SIGKILL by SIGIO reached a process outside the cgroup");
    let entries = daemon.entries();
    assert_owner_refused(&entries, pid);
}

#[test]
fn root_agent_cannot_sigio_the_daemon() {
    let daemon = DAEMON.turn(ALLOW_ALL);
    let pid = daemon.pid();
    let out = daemon.session("escape", RunAs::Root, &[PROBE, "sigio", &pid.to_string(), "15"]);
    assert_eq!(probe_outcome(&out), "EPERM");
    let entries = daemon.entries();
    assert_owner_refused(&entries, pid);
}

#[test]
fn sigio_to_the_agents_own_process_is_delivered() {
    let daemon = DAEMON.turn(ALLOW_ALL);
    // The probe makes itself the owner and asks for SIGUSR1, whose default action ends it: the
    // signal stays inside the cgroup, so it is delivered (the probe dies before printing) and
    // nothing is recorded.
    let script = format!("exec {PROBE} sigio $$ 10");
    let out = daemon.session("escape", RunAs::Nobody, &["/bin/sh", "-c", &script]);
    assert!(!out.status.success() && out.stdout.is_empty(), "SIGUSR1 ended the probe: {out:?}");
    let entries = daemon.entries();
    assert!(entries.iter().all(|e| e["action"] != "guard.signal"), "no guard entry for an in-cgroup signal");
}

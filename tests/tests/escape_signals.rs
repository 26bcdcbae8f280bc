//! Escape suite, signals without kill(): a pipe whose read end is owned (F_SETOWN) by a process
//! outside the cgroup, with SIGKILL or SIGTERM as its I/O signal (F_SETSIG), and a write into it.
//! The kernel's signal is refused (the target lives on) and recorded as a `guard.signal` denial
//! flagged `sigio`, as `task_kill` records a kill().
use safeclaw_integration::{probe_outcome, Daemon, RunAs, NOBODY};

const PROBE: &str = env!("CARGO_BIN_EXE_escape-probe");
const ALLOW_ALL: &str = "version: 1\ndefault: allow\nrules: []\n";

/// The `guard.signal` entries, checked to be SIGIO denials of `signal` to `target`. The pipe
/// signals its reader's owner at the write and again when the probe exits and closes it (6.1 and
/// 6.12 alike): each is decided and recorded, so the count follows the kernel's attempts.
fn assert_sigio_denied(entries: &[serde_json::Value], target: u32, signal: u32) {
    let found: Vec<_> = entries.iter().filter(|e| e["action"] == "guard.signal").collect();
    assert!(!found.is_empty(), "no guard.signal entry");
    for entry in found {
        assert_eq!(entry["effect"], "deny");
        assert_eq!(entry["requestDetails"]["targetPid"], target);
        assert_eq!(entry["requestDetails"]["detail"], signal);
        assert_eq!(entry["flags"], serde_json::json!(["sigio"]));
    }
}

#[test]
fn sigio_cannot_kill_the_users_process_outside_the_cgroup() {
    let daemon = Daemon::start("safeclaw-esc-sigio", ALLOW_ALL);
    // nobody's own process: without SafeClaw the kernel lets nobody's SIGIO reach it.
    let mut outside = std::os::unix::process::CommandExt::uid(
        std::os::unix::process::CommandExt::gid(std::process::Command::new("sleep").arg("120"), NOBODY),
        NOBODY,
    )
    .spawn()
    .unwrap();
    let pid = outside.id();
    let out = daemon.session("escape", RunAs::Nobody, &[PROBE, "sigio", &pid.to_string(), "9"]);
    assert_eq!(probe_outcome(&out), "ok", "the write itself succeeds");
    let alive = outside.try_wait().unwrap().is_none();
    outside.kill().unwrap();
    outside.wait().unwrap();
    assert!(alive, "SIGKILL by SIGIO reached a process outside the cgroup");
    let (status, entries) = daemon.stop();
    assert!(status.success());
    assert_sigio_denied(&entries, pid, 9);
}

#[test]
fn root_agent_cannot_sigio_the_daemon() {
    let daemon = Daemon::start("safeclaw-esc-sigio-daemon", ALLOW_ALL);
    let pid = daemon.pid();
    let out = daemon.session("escape", RunAs::Root, &[PROBE, "sigio", &pid.to_string(), "15"]);
    assert_eq!(probe_outcome(&out), "ok", "the write itself succeeds");
    let (status, entries) = daemon.stop();
    assert!(status.success(), "the daemon survived to exit cleanly: {status}");
    assert_sigio_denied(&entries, pid, 15);
}

#[test]
fn sigio_to_the_agents_own_process_is_delivered() {
    let daemon = Daemon::start("safeclaw-esc-sigio-own", ALLOW_ALL);
    // The probe makes itself the owner and asks for SIGUSR1, whose default action ends it: the
    // signal stays inside the cgroup, so it is delivered (the probe dies before printing) and
    // nothing is recorded.
    let script = format!("exec {PROBE} sigio $$ 10");
    let out = daemon.session("escape", RunAs::Nobody, &["/bin/sh", "-c", &script]);
    assert!(!out.status.success() && out.stdout.is_empty(), "SIGUSR1 ended the probe: {out:?}");
    let (status, entries) = daemon.stop();
    assert!(status.success());
    assert!(entries.iter().all(|e| e["action"] != "guard.signal"), "no guard entry for an in-cgroup signal");
}

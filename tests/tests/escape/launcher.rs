//! The agent process `safeclaw-agent exec` starts: born in its session cgroup, as the user with the
//! user's HOME, with no signal blocked and SIGPIPE not ignored, its exit status passed on; a program
//! that cannot be executed is an error that runs nothing and leaves no session cgroup, and so is a
//! descriptor it would inherit that is open for writing on cgroupfs.
use safeclaw_integration::RunAs;

use crate::{ALLOW_ALL, DAEMON};

#[test]
fn the_agent_starts_in_its_session_cgroup_as_the_user_with_default_signals() {
    let daemon = DAEMON.turn(ALLOW_ALL);
    let script =
        "cat /proc/self/cgroup; id -u; echo HOME=$HOME; grep -E '^Sig(Blk|Ign)' /proc/self/status; exit 7";
    let out = daemon.session("proc", RunAs::Nobody, &["/bin/sh", "-c", script]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "the agent's exit status is the launcher's: {out:?}");
    let cgroup = stdout.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or_default();
    assert!(cgroup.starts_with("/safeclaw-escape/proc/sess_"), "{stdout}");
    assert!(stdout.lines().any(|l| l == "65534"), "runs as nobody: {stdout}");
    assert!(stdout.contains("HOME=/nonexistent"), "{stdout}");
    assert!(stdout.contains("SigBlk:\t0000000000000000"), "{stdout}");
    // What the guest's init ignores is inherited by everyone; SIGPIPE, which Rust ignores, must not be.
    let ignored = stdout.lines().find_map(|l| l.strip_prefix("SigIgn:\t")).unwrap_or_default();
    let ignored = u64::from_str_radix(ignored, 16).unwrap_or(u64::MAX);
    assert_eq!(ignored & (1 << (libc::SIGPIPE - 1)), 0, "SIGPIPE is back to default: {stdout}");
}

#[test]
fn a_program_that_cannot_run_is_an_error_and_leaves_no_session() {
    let daemon = DAEMON.turn(ALLOW_ALL);
    let bogus = daemon.files_dir().join("not-an-executable");
    std::fs::write(&bogus, "no interpreter line, no ELF header\n").unwrap();
    std::fs::set_permissions(&bogus, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = daemon.session("noexec", RunAs::Root, &[bogus.to_str().unwrap()]);
    assert!(!out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Exec format error"), "{out:?}");
    assert!(!daemon.cgroup.join("noexec").exists(), "the session cgroup was removed");
    let entries = daemon.entries();
    let ends: Vec<_> = entries.iter().filter(|e| e["action"] == "session.end").collect();
    assert_eq!(ends.len(), 1, "{ends:#?}");
}

#[test]
fn a_descriptor_open_for_writing_on_cgroupfs_is_never_inherited() {
    let daemon = DAEMON.turn(ALLOW_ALL);
    // Opened by the caller, outside, where nothing refuses it: the agent could write its own pid
    // there and leave its cgroup, as the kernel checks the opener.
    let outside = daemon.cgroup.parent().unwrap().join("cgroup.procs");
    let procs = std::fs::OpenOptions::new().write(true).open(&outside).unwrap();
    let out = std::process::Command::new(safeclaw_integration::agent_bin())
        .args(["exec", "--agent", "fd", "--cgroup"])
        .arg(daemon.cgroup.file_name().unwrap())
        .arg("--socket")
        .arg(daemon.socket())
        .args(["--as-root", "--", "/bin/sh", "-c", "echo $$"])
        .stdout(procs)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("descriptor 1 is open for writing on cgroupfs (cgroup2)"), "{stderr}");
    assert!(!daemon.cgroup.join("fd").exists(), "no session was started");
    let entries = daemon.entries();
    assert!(!entries.iter().any(|e| e["action"] == "session.start"), "{entries:#?}");
}

//! Escape suite, the control plane: from inside a real agent session, stopping the daemon by a signal
//! (`kill`, or SIGIO through F_SETOWN/F_SETSIG), outliving a deliberate stop, swapping the policy file
//! for a link, reaching the daemon's socket through another name, and pushing input into the caller's
//! terminal. Each is refused, and each refusal is on the record.
use std::io::Read as _;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::time::{Duration, Instant};

use safeclaw_integration::{agent_bin, give_to_nobody, probe_outcome, Daemon, RunAs};

use crate::{ALLOW_ALL, DAEMON, PROBE};

/// Allows everything but reading `<work>/files/secret`, so a test can show enforcement still holds.
fn policy_denying_secret(name: &str) -> (String, String) {
    let secret = format!("/tmp/{name}/files/secret");
    let policy = format!(
        "version: 1\ndefault: allow\nrules:\n  - name: secret\n    action: file.read\n    effect: deny\n    paths: [{secret}]\n"
    );
    (policy, secret)
}

fn start_with_secret(name: &str) -> (Daemon, String) {
    let (policy, secret) = policy_denying_secret(name);
    let daemon = Daemon::start(name, &policy);
    daemon.files_dir();
    std::fs::write(&secret, "s3cret").unwrap();
    give_to_nobody(secret.as_ref(), 0o600);
    (daemon, secret)
}

/// Whether `pid` names a live process (not a zombie).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    !matches!(stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()), Some('Z' | 'X') | None)
}

/// Waits (bounded) until the audit log's entries satisfy `found`.
fn wait_for(daemon: &Daemon, what: &str, found: impl Fn(&[serde_json::Value]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !found(&safeclaw_integration::read_entries(&daemon.audit_log)) {
        assert!(Instant::now() < deadline, "no {what} entry within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn root_agent_cannot_stop_the_daemon_by_kill_or_by_sigio() {
    let (mut daemon, secret) = start_with_secret("safeclaw-esc-sigterm");
    let pid = daemon.pid();
    let script = format!("kill -TERM {pid}; echo kill=$?; {PROBE} sigio {pid} 15");
    let out = daemon.session("escape", RunAs::Root, &["/bin/sh", "-c", &script]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("kill=1"), "kill is refused by task_kill: {out:?}");
    // F_SETOWN may itself be refused by a kernel hook (EPERM); otherwise the SIGTERM is sent as SIGIO.
    let sigio = stdout.lines().last().unwrap_or_default().to_string();
    assert!(sigio == "ok" || sigio == "EPERM", "{out:?}");
    // Kernel denials of a SIGTERM to the daemon: the kill's, and the SIGIO's where a kernel hook
    // refuses it before it reaches the daemon.
    let kernel_denials = |entries: &[serde_json::Value]| {
        entries
            .iter()
            .filter(|e| {
                e["effect"] == "deny"
                    && e["requestDetails"]["targetPid"] == pid
                    && e["requestDetails"]["detail"] == 15
            })
            .count()
    };
    let refusals = |entries: &[serde_json::Value]| {
        entries.iter().filter(|e| e["action"] == "daemon.signal_refused").count()
    };
    if sigio == "ok" {
        wait_for(&daemon, "signal refusal or denial", |entries| {
            refusals(entries) > 0 || kernel_denials(entries) >= 2
        });
    }
    assert!(daemon.running(), "the daemon obeyed a signal from inside a session");
    let read = daemon.session("escape", RunAs::Nobody, &[PROBE, "open", &secret]);
    assert_eq!(probe_outcome(&read), "EPERM", "still enforcing");

    let (status, entries) = daemon.stop();
    assert!(status.success());
    let kill = entries
        .iter()
        .find(|e| e["action"] == "guard.signal" && e["requestDetails"]["targetPid"] == pid)
        .expect("the kill is a guard entry");
    assert_eq!(
        (kill["effect"].as_str(), kill["requestDetails"]["detail"].as_u64()),
        (Some("deny"), Some(15))
    );
    if sigio == "ok" {
        // The kernel sends SIGIO for the write and again when the pipe's write end closes.
        let refused: Vec<_> = entries.iter().filter(|e| e["action"] == "daemon.signal_refused").collect();
        assert!(
            kernel_denials(&entries) >= 2 || !refused.is_empty(),
            "neither refused nor denied: {entries:#?}"
        );
        for entry in refused {
            assert_eq!(entry["details"]["signal"], 15);
            assert!(
                entry["details"]["reason"].as_str().unwrap_or_default().contains("F_SETOWN/F_SETSIG"),
                "{entry}"
            );
        }
    }
    let stop = entries.iter().find(|e| e["action"] == "daemon.stop").expect("a daemon.stop entry");
    assert!(
        stop["details"]["reason"].as_str().unwrap_or_default().starts_with("signal: SIGTERM from pid"),
        "{stop}"
    );
}

#[test]
fn no_session_process_outlives_a_deliberate_stop() {
    let daemon = Daemon::start("safeclaw-esc-stop-order", ALLOW_ALL);
    let files = daemon.files_dir();
    let (pids, escaped) = (files.join("pids"), files.join("escaped"));
    let root_procs = daemon.cgroup.parent().unwrap().join("cgroup.procs");
    // A child keeps trying to move to the root cgroup, to be outside when enforcement ends.
    let script = format!(
        "(while ! echo $$ > {root} 2>/dev/null; do sleep 0.05; done; echo escaped > {escaped}; exec sleep 600) & \
         echo $! > {pids}.tmp; echo $$ >> {pids}.tmp; mv {pids}.tmp {pids}; wait",
        root = root_procs.display(),
        escaped = escaped.display(),
        pids = pids.display(),
    );
    let mut launcher = std::process::Command::new(agent_bin())
        .args(["exec", "--agent", "escape", "--as-root", "--cgroup", "safeclaw-esc-stop-order", "--socket"])
        .arg(daemon.socket())
        .args(["--", "/bin/sh", "-c", &script])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pids.exists() {
        assert!(Instant::now() < deadline, "the session never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pids: Vec<u32> =
        std::fs::read_to_string(&pids).unwrap().lines().map(|l| l.trim().parse().unwrap()).collect();
    assert!(pids.iter().all(|&p| alive(p)), "{pids:?}");

    let out = daemon.agent_command(&["stop"]);
    assert!(out.status.success(), "{out:?}");
    let (status, entries) = daemon.wait();
    assert!(status.success());
    assert!(launcher.wait().is_ok());
    for pid in &pids {
        assert!(!alive(*pid), "session process {pid} outlived the stop");
    }
    assert!(!escaped.exists(), "a session process left the cgroup before the programs were detached");
    let position = |action: &str| entries.iter().position(|e| e["action"] == action);
    let ended = position("daemon.sessions_ended").expect("a daemon.sessions_ended entry");
    assert!(entries[ended]["details"]["processes"].as_u64().unwrap_or(0) >= 2, "{:#}", entries[ended]);
    assert!(
        entries[ended]["details"]["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("`safeclaw-agent stop` from pid"),
        "{:#}",
        entries[ended]
    );
    assert!(ended < position("daemon.stop").unwrap(), "sessions end before the daemon stops");
}

#[test]
fn root_agent_swapping_the_policy_for_a_link_is_refused_and_recorded() {
    let (mut daemon, secret) = start_with_secret("safeclaw-esc-policy-link");
    let policy = daemon.work().join("policy.yaml");
    let planted = daemon.files_dir().join("planted.yaml");
    let script = format!(
        "printf 'version: 1\\ndefault: allow\\nrules: []\\n' > {planted} && rm {policy} && ln -s {planted} {policy} && echo swapped",
        planted = planted.display(),
        policy = policy.display(),
    );
    let out = daemon.session("escape", RunAs::Root, &["/bin/sh", "-c", &script]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "swapped", "{out:?}");
    let names_the_link = |e: &serde_json::Value| {
        e["action"] == "policy.reload_rejected"
            && e["details"]["error"]
                .as_str()
                .is_some_and(|error| error.contains(&format!("{} is a symbolic link", policy.display())))
    };
    wait_for(&daemon, "policy.reload_rejected naming the link", |entries| {
        entries.iter().any(&names_the_link)
    });
    let read = daemon.session("escape", RunAs::Nobody, &[PROBE, "open", &secret]);
    assert_eq!(probe_outcome(&read), "EPERM", "the policy the daemon loaded still enforces");
    // An explicit reload refuses it too.
    let reload = daemon.agent_command(&["policy", "reload"]);
    assert!(!reload.status.success(), "{reload:?}");
    assert!(String::from_utf8_lossy(&reload.stderr).contains("is a symbolic link"), "{reload:?}");
    assert!(daemon.running());

    let (status, entries) = daemon.stop();
    assert!(status.success());
    // The automatic reload and the explicit one; the watcher may also have caught the moment between
    // `rm` and `ln` (a missing file, refused as well).
    assert!(entries.iter().filter(|e| names_the_link(e)).count() >= 2, "{entries:#?}");
    for entry in entries.iter().filter(|e| e["action"] == "policy.reload_rejected" && !names_the_link(e)) {
        let error = entry["details"]["error"].as_str().unwrap_or_default();
        assert!(error.contains("No such file or directory"), "{entry:#}");
    }
    let loads = entries.iter().filter(|e| e["action"] == "policy.load").count();
    assert_eq!(loads, 1, "only the policy the daemon started with was ever loaded");
}

#[test]
fn the_daemon_socket_refuses_a_session_whatever_name_reaches_it() {
    let daemon = DAEMON.turn(ALLOW_ALL);
    let socket = daemon.socket();
    let files = daemon.files_dir();
    let (symlink, hardlink) = (files.join("alias.sock"), files.join("hard.sock"));
    let through_proc = format!("/proc/{}/root{}", daemon.pid(), socket.display());
    let bin = agent_bin();
    let script = format!(
        "ln -s {socket} {symlink}; ln {socket} {hardlink}; \
         for s in {socket} {symlink} {hardlink} {through_proc}; do {bin} sessions --socket $s; echo status=$?; done",
        socket = socket.display(),
        symlink = symlink.display(),
        hardlink = hardlink.display(),
        bin = bin.display(),
    );
    let out = daemon.session("escape", RunAs::Root, &["/bin/sh", "-c", &script]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.matches("status=2").count(), 4, "every name is refused: {stdout}\n{stderr}");
    assert!(!stdout.contains("sess_"), "no session was listed to the agent: {stdout}");
    let refusal = "the daemon refused: processes inside the agent cgroup may not use this socket";
    // The real path, the symlink and the hard link reach the daemon; /proc/<pid>/root needs ptrace
    // access to the daemon, which the kernel refuses first.
    assert!(stderr.matches(refusal).count() >= 3, "{stderr}");

    let entries = daemon.entries();
    let refused: Vec<_> = entries.iter().filter(|e| e["action"] == "daemon.request_refused").collect();
    assert!(refused.len() >= 3, "{refused:#?}");
    for entry in refused {
        assert_eq!(entry["details"]["request"], "list", "{entry:#}");
        assert_eq!(entry["details"]["uid"], 0);
        assert!(
            entry["details"]["command"].as_str().unwrap_or_default().contains("sessions --socket"),
            "{entry:#}"
        );
    }
}

/// A pseudo-terminal pair: the caller's terminal in the next test.
fn open_pty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors; no name, termios or window size.
    let ret = unsafe {
        libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null())
    };
    assert_eq!(ret, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned here only.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// Bytes waiting in the terminal's input queue (what the caller's shell would read next).
fn pending_input(slave: &OwnedFd) -> i32 {
    let mut pending: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    assert_eq!(unsafe { libc::ioctl(slave.as_raw_fd(), libc::FIONREAD, &mut pending) }, 0);
    pending
}

#[test]
fn an_agent_cannot_push_input_into_the_callers_terminal() {
    terminal_injection_is_refused_and_recorded(false);
}

/// Root has CAP_SYS_ADMIN, with which the kernel lets TIOCSTI into any terminal the caller holds
/// open: only the `file_ioctl` guard stands in the way.
#[test]
fn a_root_agent_cannot_push_input_into_the_callers_terminal() {
    terminal_injection_is_refused_and_recorded(true);
}

fn terminal_injection_is_refused_and_recorded(as_root: bool) {
    use std::os::unix::process::CommandExt as _;
    let daemon = DAEMON.turn(ALLOW_ALL);
    let name = daemon.cgroup.file_name().expect("the agent cgroup has a name");
    let (master, slave) = open_pty();
    let caller_tty = slave.as_raw_fd();
    let mut launcher = std::process::Command::new(agent_bin());
    launcher.args(["exec", "--agent", "escape"]);
    if as_root {
        launcher.arg("--as-root");
    } else {
        launcher.args(["--user", "nobody"]);
    }
    launcher.arg("--cgroup").arg(name).arg("--socket").arg(daemon.socket());
    launcher.args(["--", PROBE, "tiocsti", "id\n"]);
    for stdio in 0..3 {
        let fd = slave.try_clone().unwrap();
        match stdio {
            0 => launcher.stdin(fd),
            1 => launcher.stdout(fd),
            _ => launcher.stderr(fd),
        };
    }
    // SAFETY: setsid and ioctl are async-signal-safe: the launcher's terminal is its controlling
    // terminal, as a shell's is.
    unsafe {
        launcher.pre_exec(move || {
            if libc::setsid() < 0 || libc::ioctl(caller_tty, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = launcher.status().unwrap();
    assert!(status.success(), "{status}");
    let injected = pending_input(&slave);
    // What the agent printed, from the terminal's other side.
    // SAFETY: O_NONBLOCK on our own descriptor.
    unsafe { libc::fcntl(master.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    let mut printed = Vec::new();
    let _ = std::fs::File::from(master).read_to_end(&mut printed);
    let printed = String::from_utf8_lossy(&printed);
    assert_eq!(injected, 0, "the agent pushed input into the caller's terminal: {printed}");
    // The guard refuses before the terminal's own checks (no controlling terminal, legacy TIOCSTI off).
    assert!(printed.contains("EPERM"), "{printed}");
    let entries = daemon.entries();
    let refused: Vec<_> = entries.iter().filter(|e| e["action"] == "guard.terminal_input").collect();
    assert_eq!(refused.len(), 1, "one refusal, the first byte's: {refused:#?}");
    assert_eq!(refused[0]["effect"], "deny");
    assert_eq!(refused[0]["requestDetails"]["detail"], 0x5412, "{:#}", refused[0]);
}

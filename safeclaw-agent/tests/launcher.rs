//! The launcher end to end on this host (root and cgroup v2 needed, BPF LSM not): `safeclaw-agent exec`
//! and `sessions` against an in-process socket server, each test in its own throwaway cgroup.
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use safeclaw_agent::cgroup;
use safeclaw_agent::identity::client::{ClientError, DaemonConnection};
use safeclaw_agent::identity::{server, session_cgroup, Registry, SessionEvent, SessionExit, SessionInfo};

const BIN: &str = env!("CARGO_BIN_EXE_safeclaw-agent");
/// Guards against hangs only; nothing here measures time.
const PATIENCE: Duration = Duration::from_secs(20);

static NEXT: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A cgroup directly under the mount standing in for the daemon's agent cgroup; removed with
/// everything below it (processes killed) when dropped, also when the test fails.
struct TestCgroup {
    name: String,
    path: PathBuf,
}

impl TestCgroup {
    fn new() -> Self {
        assert!(nix::unistd::geteuid().is_root(), "these tests create cgroups: run them as root");
        let mount = cgroup::find_mount().expect("these tests need a cgroup v2 mount");
        let name = unique("sctest");
        let (cgroup, created) = cgroup::ensure(&mount, &name).unwrap();
        assert!(created);
        TestCgroup { name, path: cgroup.path }
    }

    /// Everything below the test cgroup, relative to it.
    fn children(&self) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                if entry.file_type().unwrap().is_dir() {
                    out.push(entry.path().strip_prefix(base).unwrap().display().to_string());
                    walk(base, &entry.path(), out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.path, &self.path, &mut out);
        out
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        fn destroy(dir: &Path) {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        destroy(&entry.path());
                    }
                }
            }
            if let Err(e) = session_cgroup::remove(dir) {
                eprintln!("test cleanup: {e}");
            }
        }
        destroy(&self.path);
    }
}

/// The daemon's socket server on its own runtime and thread, so a test can make it vanish.
struct TestDaemon {
    socket: PathBuf,
    registry: Arc<Registry>,
    events: mpsc::Receiver<SessionEvent>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TestDaemon {
    fn start(agent_cgroup: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/agent.sock");
        let registry = Arc::new(Registry::new());
        let (events_tx, events) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (path, shared, cgroup) = (socket.clone(), Arc::clone(&registry), agent_cgroup.to_path_buf());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = server::bind(&path).unwrap();
                let (tx, mut rx) = tokio::sync::mpsc::channel(16);
                tokio::spawn(server::serve(listener, cgroup, shared, tx));
                tokio::spawn(async move {
                    while let Some(event) = rx.recv().await {
                        // Acknowledged at once, as the daemon does once the kernel knows the session.
                        let event = match event {
                            SessionEvent::Started { info, done } => {
                                let _ = done.send(Ok(()));
                                SessionEvent::Started { info, done: tokio::sync::oneshot::channel().0 }
                            }
                            other => other,
                        };
                        let _ = events_tx.send(event);
                    }
                });
                ready_tx.send(()).unwrap();
                let _ = stopped.await;
            });
            // Dropping the runtime here drops every connection: launchers see the daemon vanish.
        });
        ready.recv_timeout(PATIENCE).expect("test daemon did not start");
        TestDaemon { socket, registry, events, stop: Some(stop), thread: Some(thread), _dir: dir }
    }

    fn next_event(&self) -> SessionEvent {
        self.events.recv_timeout(PATIENCE).expect("no session event from the server")
    }

    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}

fn exec_command(cgroup: &TestCgroup, socket: &Path, flags: &[&str], command: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("exec")
        .args(["--cgroup", &cgroup.name])
        .arg("--socket")
        .arg(socket)
        .args(flags)
        .arg("--")
        .args(command);
    cmd.env_remove("SUDO_UID").env_remove("SUDO_GID").env("SAFECLAW_LOG", "warn");
    cmd
}

/// `exec --agent AGENT --user nobody -- COMMAND` against `socket`.
fn exec_as_nobody(cgroup: &TestCgroup, socket: &Path, agent: &str, command: &[&str]) -> Command {
    exec_command(cgroup, socket, &["--agent", agent, "--user", "nobody"], command)
}

fn run(mut cmd: Command) -> (Option<i32>, String, String) {
    let Output { status, stdout, stderr } = cmd.output().unwrap();
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Starts a launcher whose agent prints `ready` and then waits; returns once it printed.
fn start_waiting_agent(
    cgroup: &TestCgroup,
    daemon: &TestDaemon,
    agent: &str,
    script: &str,
) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut cmd = exec_as_nobody(cgroup, &daemon.socket, agent, &["sh", "-c", script]);
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    (child, stdout)
}

fn started(event: SessionEvent) -> Arc<SessionInfo> {
    match event {
        SessionEvent::Started { info, .. } => info,
        other => panic!("expected a start, got {other:?}"),
    }
}

fn ended(event: SessionEvent) -> (Arc<SessionInfo>, SessionExit) {
    match event {
        SessionEvent::Ended { session, exit } => (session, exit),
        other => panic!("expected an end, got {other:?}"),
    }
}

/// Whether a process exists and is not a zombie (killed agents are reaped by whoever inherits them).
fn process_alive(pid: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(Path::new("/proc").join(pid).join("stat")) else { return false };
    let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

fn wait_for_comm(pid: &str, comm: &str) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while std::fs::read_to_string(format!("/proc/{pid}/comm")).map_or(true, |c| c.trim() != comm) {
        assert!(std::time::Instant::now() < deadline, "process {pid} never became {comm}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn runs_in_its_session_cgroup_as_the_user_and_reports_the_exit() {
    let cgroup = TestCgroup::new();
    let daemon = TestDaemon::start(&cgroup.path);
    let mount = cgroup::find_mount().unwrap();
    let script = format!(
        "cat /proc/self/cgroup; echo uid=$(id -u) gid=$(id -g) HOME=$HOME USER=$USER LOGNAME=$LOGNAME; \
         stat -c ino=%i \"{}$(sed -n 's/^0:://p' /proc/self/cgroup)\"; echo launcher:; cat /proc/$PPID/cgroup; exit 3",
        mount.path.display()
    );
    let cmd = exec_command(
        &cgroup,
        &daemon.socket,
        &["--agent", "probe", "--session", "sess_probe-1", "--user", "nobody"],
        &["sh", "-c", &script],
    );
    let (code, stdout, stderr) = run(cmd);
    assert_eq!(code, Some(3), "stdout: {stdout}\nstderr: {stderr}");

    let session_cgroup = format!("0::/{}/probe/sess_probe-1\n", cgroup.name);
    let (agent_part, launcher_part) = stdout.split_once("launcher:\n").unwrap();
    assert!(agent_part.contains(&session_cgroup), "{stdout}");
    assert!(
        agent_part.contains("uid=65534 gid=65534 HOME=/nonexistent USER=nobody LOGNAME=nobody"),
        "{stdout}"
    );
    assert!(
        !launcher_part.contains(&cgroup.name),
        "the launcher must stay outside the agent cgroup: {stdout}"
    );

    let start = started(daemon.next_event());
    assert_eq!(
        (start.agent_id.as_str(), start.session_id.as_str(), start.user_id.as_str()),
        ("probe", "sess_probe-1", "nobody")
    );
    assert_eq!((start.uid, start.gid), (65534, 65534));
    assert_eq!(start.cgroup_path, cgroup.path.join("probe/sess_probe-1"));
    assert!(
        agent_part.contains(&format!("ino={}\n", start.cgroup_id)),
        "cgroup id {} vs {stdout}",
        start.cgroup_id
    );
    assert_eq!(start.argv, ["sh", "-c", script.as_str()]);
    let (end, exit) = ended(daemon.next_event());
    assert_eq!((end.session_id.as_str(), exit), ("sess_probe-1", SessionExit::Exited(3)));
    assert!(daemon.registry.live().is_empty());
    assert_eq!(cgroup.children(), Vec::<String>::new(), "session cgroup left behind");
}

#[test]
fn the_agent_does_not_inherit_the_launchers_blocked_signals() {
    let cgroup = TestCgroup::new();
    let daemon = TestDaemon::start(&cgroup.path);
    let cmd = exec_as_nobody(&cgroup, &daemon.socket, "mask", &["grep", "SigBlk", "/proc/self/status"]);
    let (code, stdout, stderr) = run(cmd);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "SigBlk:\t0000000000000000\n");
}

#[test]
fn the_agent_has_its_own_session_and_no_descriptor_of_the_caller_but_those_asked_for() {
    use std::os::unix::process::CommandExt as _;
    let cgroup = TestCgroup::new();
    let daemon = TestDaemon::start(&cgroup.path);
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (secret, shared) = (dir.path().join("secret"), dir.path().join("shared"));
    std::fs::write(&secret, "s3cret\n").unwrap();
    std::fs::write(&shared, "shared\n").unwrap();
    // Opened by the caller, as root, before `exec`; duplicated without close-on-exec into fds 7 and 9
    // of the launcher, as a shell's `7<secret 9<shared` would.
    let (secret, shared) = (std::fs::File::open(&secret).unwrap(), std::fs::File::open(&shared).unwrap());
    let (secret_fd, shared_fd) = (secret.as_raw_fd(), shared.as_raw_fd());
    let script = "echo pid=$$ sid=$(cut -d' ' -f6 /proc/$$/stat) pgrp=$(cut -d' ' -f5 /proc/$$/stat); \
                  ls /proc/$$/fd; echo end; cat <&9; cat <&7 || echo fd7-closed";
    let mut cmd = exec_command(
        &cgroup,
        &daemon.socket,
        &["--agent", "fds", "--user", "nobody", "--keep-fd", "9"],
        &["sh", "-c", script],
    );
    // SAFETY: dup2 is async-signal-safe; the descriptors stay open in the parent until the spawn.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(secret_fd, 7) < 0 || libc::dup2(shared_fd, 9) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (code, stdout, stderr) = run(cmd);
    drop((secret, shared));
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    let ids = stdout.lines().next().unwrap_or_default();
    let field = |name: &str| ids.split(' ').find_map(|w| w.strip_prefix(name)).unwrap_or("?").to_string();
    assert_eq!(field("sid="), field("pid="), "the agent leads a session of its own: {stdout}");
    assert_eq!(field("pgrp="), field("pid="), "and a process group of its own: {stdout}");
    // Listed by the shell's child with nothing but a plain command in flight, so the shell holds no pipe.
    let fds: Vec<&str> = stdout.lines().skip(1).take_while(|l| *l != "end").collect();
    assert_eq!(fds, ["0", "1", "2", "9"], "only stdio and --keep-fd 9 reach the agent: {stdout}");
    assert!(stdout.contains("shared\n"), "the kept descriptor is readable: {stdout}");
    assert!(!stdout.contains("s3cret"), "the caller's descriptor leaked: {stdout}");
    assert!(stdout.contains("fd7-closed"), "{stdout}");
    started(daemon.next_event());
    assert_eq!(ended(daemon.next_event()).1, SessionExit::Exited(0));

    for (bad, expected) in [("2", "only descriptors above 2"), ("1000", "no such open descriptor")] {
        let flags = ["--agent", "fds", "--user", "nobody", "--keep-fd", bad];
        let (code, _, stderr) = run(exec_command(&cgroup, &daemon.socket, &flags, &["true"]));
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(&format!("--keep-fd {bad}: {expected}")), "{stderr}");
    }
    assert_eq!(cgroup.children(), Vec::<String>::new());
}

#[test]
fn a_failed_exec_is_reported_and_leaves_nothing() {
    let cgroup = TestCgroup::new();
    let daemon = TestDaemon::start(&cgroup.path);
    // Executable by mode, so validation passes; the kernel refuses it (no such interpreter).
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = dir.path().join("agent");
    std::fs::write(&script, "#!/no/such/interpreter\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = script.to_str().unwrap();
    let cmd = exec_as_nobody(&cgroup, &daemon.socket, "broken", &[script]);
    let (code, _, stderr) = run(cmd);
    assert_eq!(code, Some(2));
    assert!(stderr.contains(&format!("cannot start {script}: No such file or directory")), "{stderr}");
    started(daemon.next_event());
    let (_, exit) = ended(daemon.next_event());
    assert!(matches!(&exit, SessionExit::NotStarted(reason) if reason.contains("No such file")), "{exit:?}");
    assert_eq!(cgroup.children(), Vec::<String>::new());
}

#[test]
fn leftover_processes_are_killed_and_the_cgroup_removed() {
    let cgroup = TestCgroup::new();
    let daemon = TestDaemon::start(&cgroup.path);
    let cmd = exec_as_nobody(&cgroup, &daemon.socket, "bg", &["sh", "-c", "sleep 60 & echo $!"]);
    let (code, stdout, stderr) = run(cmd);
    assert_eq!(code, Some(0), "{stderr}");
    let pid = stdout.trim();
    assert!(!pid.is_empty());
    assert!(!process_alive(pid), "background process {pid} survived its session");
    let start = started(daemon.next_event());
    assert!(start.session_id.as_str().starts_with("sess_"), "generated id {}", start.session_id);
    assert_eq!(ended(daemon.next_event()).1, SessionExit::Exited(0));
    assert_eq!(cgroup.children(), Vec::<String>::new());
}

#[test]
fn signals_to_the_launcher_reach_the_agent() {
    let cgroup = TestCgroup::new();
    let daemon = TestDaemon::start(&cgroup.path);
    let trap = "trap 'echo got-usr1' USR1; trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.1; done";
    let (mut child, mut stdout) = start_waiting_agent(&cgroup, &daemon, "sig", trap);
    let launcher = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(launcher, nix::sys::signal::SIGUSR1).unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "got-usr1\n");
    nix::sys::signal::kill(launcher, nix::sys::signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "got-term\n");
    assert_eq!(status.code(), Some(7));
    started(daemon.next_event());
    assert_eq!(ended(daemon.next_event()).1, SessionExit::Exited(7));

    // Signal once sleep runs, so the status is the agent's own death by SIGINT, not the shell's doing.
    let (mut child, mut stdout) =
        start_waiting_agent(&cgroup, &daemon, "sig", "echo ready; echo $$; exec sleep 60");
    let mut pid = String::new();
    stdout.read_line(&mut pid).unwrap();
    wait_for_comm(pid.trim(), "sleep");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGINT).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130), "128 + SIGINT");
    started(daemon.next_event());
    assert_eq!(ended(daemon.next_event()).1, SessionExit::Signaled(2));
    assert_eq!(cgroup.children(), Vec::<String>::new());
}

#[test]
fn refuses_to_launch_without_a_daemon() {
    let cgroup = TestCgroup::new();
    let missing = tempfile::tempdir().unwrap();
    let cmd = exec_as_nobody(&cgroup, &missing.path().join("agent.sock"), "a", &["sh", "-c", "echo RAN"]);
    let (code, stdout, stderr) = run(cmd);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("refusing to run the agent unenforced: no SafeClaw daemon is listening"),
        "{stderr}"
    );
    assert!(!stdout.contains("RAN"));
    assert_eq!(cgroup.children(), Vec::<String>::new());

    // SAFECLAW_SOCKET is honoured when --socket is absent.
    let mut cmd = Command::new(BIN);
    cmd.args(["exec", "--cgroup", &cgroup.name, "--agent", "a", "--user", "nobody", "--", "true"]);
    cmd.env("SAFECLAW_SOCKET", missing.path().join("env.sock"));
    let (code, _, stderr) = run(cmd);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("env.sock"), "{stderr}");
}

#[test]
fn a_daemon_enforcing_elsewhere_refuses_and_nothing_is_left() {
    let cgroup = TestCgroup::new();
    let elsewhere = TestCgroup::new();
    let daemon = TestDaemon::start(&elsewhere.path);
    let cmd = exec_as_nobody(&cgroup, &daemon.socket, "a", &["sh", "-c", "echo RAN"]);
    let (code, stdout, stderr) = run(cmd);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("the daemon refused") && stderr.contains("is not where this daemon enforces"),
        "{stderr}"
    );
    assert!(!stdout.contains("RAN"));
    assert_eq!(cgroup.children(), Vec::<String>::new());
    assert!(daemon.events.try_recv().is_err(), "a refused session must not be reported");
}

#[test]
fn bad_input_is_refused_before_anything_is_created() {
    let cgroup = TestCgroup::new();
    let daemon = TestDaemon::start(&cgroup.path);
    let cases: &[(&[&str], &[&str], &str)] = &[
        (&["--agent", "a", "--user", "no-such-user-xyz"], &["true"], "unknown user \"no-such-user-xyz\""),
        (
            &["--agent", "a", "--user", "nobody"],
            &["/no/such/command"],
            "command \"/no/such/command\" not found",
        ),
        (&["--agent", "a", "--user", "nobody"], &["no-such-command-xyz"], "not found in PATH"),
        (&["--agent", "a/b", "--user", "nobody"], &["true"], "--agent: cgroup name \"a/b\" is not allowed"),
        (&["--agent", "..", "--user", "nobody"], &["true"], "--agent: cgroup name \"..\" is not allowed"),
        (&["--agent", "a", "--session", "sess_../x", "--user", "nobody"], &["true"], "--session: session id"),
        (&["--agent", "a"], &["true"], "no user to run the agent as"),
        (&["--agent", "a", "--user", "root"], &["true"], "pass --as-root"),
    ];
    for (flags, command, expected) in cases {
        let (code, _, stderr) = run(exec_command(&cgroup, &daemon.socket, flags, command));
        assert_eq!(code, Some(2), "{flags:?} {command:?}: {stderr}");
        assert!(stderr.contains(expected), "{flags:?}: expected {expected:?} in {stderr}");
        assert_eq!(cgroup.children(), Vec::<String>::new(), "{flags:?} created a cgroup");
    }
    let mut missing_cgroup = Command::new(BIN);
    missing_cgroup.args([
        "exec",
        "--cgroup",
        "safeclaw-no-such-cgroup",
        "--agent",
        "a",
        "--user",
        "nobody",
        "--socket",
    ]);
    missing_cgroup.arg(&daemon.socket).args(["--", "true"]);
    let (code, _, stderr) = run(missing_cgroup);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("does not exist: is `safeclaw-agent run` running"), "{stderr}");
    assert!(daemon.events.try_recv().is_err(), "nothing may reach the daemon");
}

#[test]
fn a_vanished_launcher_makes_the_daemon_end_the_agent() {
    let cgroup = TestCgroup::new();
    let daemon = TestDaemon::start(&cgroup.path);
    let (mut child, mut stdout) =
        start_waiting_agent(&cgroup, &daemon, "orphan", "echo ready; echo $$; exec sleep 60");
    let mut pid = String::new();
    stdout.read_line(&mut pid).unwrap();
    let start = started(daemon.next_event());
    child.kill().unwrap();
    child.wait().unwrap();
    let (end, exit) = ended(daemon.next_event());
    assert_eq!((end.session_id.clone(), exit), (start.session_id.clone(), SessionExit::LauncherLost));
    assert!(!process_alive(pid.trim()), "agent {pid} outlived its launcher");
    assert_eq!(cgroup.children(), Vec::<String>::new());
}

#[test]
fn a_vanished_daemon_makes_the_launcher_kill_the_agent() {
    let cgroup = TestCgroup::new();
    let mut daemon = TestDaemon::start(&cgroup.path);
    let (mut child, mut stdout) =
        start_waiting_agent(&cgroup, &daemon, "unguarded", "echo ready; echo $$; exec sleep 60");
    let mut pid = String::new();
    stdout.read_line(&mut pid).unwrap();
    daemon.stop();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nothing enforces policy any more: the agent was killed"), "{stderr}");
    assert!(!process_alive(pid.trim()));
    assert_eq!(cgroup.children(), Vec::<String>::new());
}

#[test]
fn sessions_lists_what_the_daemon_knows() {
    let cgroup = TestCgroup::new();
    let daemon = TestDaemon::start(&cgroup.path);
    let (mut child, _stdout) = start_waiting_agent(&cgroup, &daemon, "lister", "echo ready; exec sleep 60");
    let start = started(daemon.next_event());

    let (code, stdout, stderr) = run({
        let mut cmd = Command::new(BIN);
        cmd.args(["sessions", "--json", "--socket"]).arg(&daemon.socket);
        cmd
    });
    assert_eq!(code, Some(0), "{stderr}");
    let listed: Vec<SessionInfo> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed, [(*start).clone()]);
    let (code, table, _) = run({
        let mut cmd = Command::new(BIN);
        cmd.args(["sessions", "--socket"]).arg(&daemon.socket);
        cmd
    });
    assert_eq!(code, Some(0));
    assert!(table.starts_with("AGENT"), "{table}");
    assert!(table.contains(&format!("lister  {}  nobody  {}", start.session_id, child.id())), "{table}");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGTERM).unwrap();
    child.wait().unwrap();
    ended(daemon.next_event());

    let missing = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run({
        let mut cmd = Command::new(BIN);
        cmd.args(["sessions", "--socket"]).arg(missing.path().join("none.sock"));
        cmd
    });
    assert_eq!(code, Some(2));
    assert!(stderr.contains("no SafeClaw daemon is listening on"), "{stderr}");
}

/// A session record for this process (the server checks the launcher pid against the peer).
fn session_for(cgroup: &cgroup::Cgroup, agents: &Path, agent: &str, session: &str) -> SessionInfo {
    serde_json::from_value(serde_json::json!({
        "agentId": agent, "sessionId": session, "userId": "tester", "uid": 0, "gid": 0,
        "cgroupId": cgroup.id, "cgroupPath": agents.join(agent).join(session),
        "argv": ["test"], "startedAt": "2026-02-13T10:45:23.102Z", "launcherPid": std::process::id()
    }))
    .unwrap()
}

#[tokio::test]
async fn server_checks_every_claim_and_answers_bad_input_with_an_error() {
    let test_cgroup = TestCgroup::new();
    let daemon = TestDaemon::start(&test_cgroup.path);
    let agents = cgroup::Cgroup { path: test_cgroup.path.clone(), id: 0, level: 1 };
    let agent = "proto".to_string().try_into().unwrap();
    let session_id = "sess_proto".to_string().try_into().unwrap();
    let session = session_cgroup::create(&agents, &agent, &session_id).unwrap();
    let good = session_for(&session, &agents.path, "proto", "sess_proto");

    let refused = |result: Result<(), ClientError>| match result {
        Err(ClientError::Refused(message)) => message,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let mut conn = DaemonConnection::connect(&daemon.socket).await.unwrap();
    let wrong_pid = SessionInfo { launcher_pid: 1, ..good.clone() };
    assert!(refused(conn.start(&wrong_pid).await).contains("is not the connecting process"));
    let wrong_id = SessionInfo { cgroup_id: session.id + 1, ..good.clone() };
    assert!(refused(conn.start(&wrong_id).await).contains(&format!("has id {}, not", session.id)));
    let outside =
        SessionInfo { cgroup_path: PathBuf::from("/sys/fs/cgroup/other/proto/sess_proto"), ..good.clone() };
    assert!(refused(conn.start(&outside).await).contains("is not where this daemon enforces"));
    let not_created = session_for(&session, &agents.path, "proto", "sess_other");
    assert!(refused(conn.start(&not_created).await).contains("cannot stat cgroup"));
    assert!(refused(conn.end(&good.session_id, &SessionExit::Exited(0)).await)
        .contains("was not started on this connection"));
    assert!(daemon.events.try_recv().is_err(), "refused requests must not reach the daemon");

    conn.start(&good).await.unwrap();
    let start = started(daemon.next_event());
    assert_eq!(*start, good);
    assert_eq!(daemon.registry.get(session.id).as_deref(), Some(&good));
    assert!(refused(conn.start(&good).await).contains("already carries session sess_proto"));
    let mut other = DaemonConnection::connect(&daemon.socket).await.unwrap();
    assert!(refused(other.start(&good).await).contains("session sess_proto is already running"));
    assert_eq!(other.list().await.unwrap(), std::slice::from_ref(&good));

    // Malformed lines get an error answer; the connection and the session survive them.
    let mut raw = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
    raw.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut raw_reader = BufReader::new(raw.try_clone().unwrap());
    for garbage in [
        "garbage",
        "{\"version\":1,\"body\":\"list\",\"extra\":1}",
        "{\"version\":9,\"body\":\"list\"}",
        "\u{0}",
    ] {
        writeln!(raw, "{garbage}").unwrap();
        let mut answer = String::new();
        raw_reader.read_line(&mut answer).unwrap();
        assert!(answer.starts_with("{\"version\":1,\"body\":{\"error\":"), "{garbage:?}: {answer}");
    }
    // An oversized line is refused and the connection closed.
    raw.write_all(&vec![b'x'; safeclaw_agent::identity::protocol::MAX_LINE + 1]).unwrap();
    let mut answer = String::new();
    raw_reader.read_line(&mut answer).unwrap();
    assert!(answer.contains("longer than"), "{answer}");
    answer.clear();
    assert_eq!(raw_reader.read_line(&mut answer).unwrap(), 0, "connection left open");

    assert!(refused(conn.end(&"sess_nope".to_string().try_into().unwrap(), &SessionExit::Exited(0)).await)
        .contains("not this connection's session"));
    session_cgroup::remove(&session.path).unwrap();
    conn.end(&good.session_id, &SessionExit::Signaled(9)).await.unwrap();
    let (end, exit) = ended(daemon.next_event());
    assert_eq!((end.session_id.as_str(), exit), ("sess_proto", SessionExit::Signaled(9)));
    assert!(other.list().await.unwrap().is_empty());
    assert!(daemon.registry.get(session.id).is_some(), "an ended session still resolves late events");
}

#[test]
fn non_root_peers_are_refused() {
    let cgroup = TestCgroup::new();
    let daemon = TestDaemon::start(&cgroup.path);
    // Open the way to the socket so the credential check itself is what refuses.
    let dir = daemon.socket.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(daemon._dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&daemon.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["sessions", "--socket"]).arg(&daemon.socket);
    std::os::unix::process::CommandExt::uid(&mut cmd, 65534);
    let (code, _, stderr) = run(cmd);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("the daemon refused: only root may use this socket"), "{stderr}");

    // With the directory locked down as `bind` leaves it, a non-root user is told to use sudo.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["sessions", "--socket"]).arg(&daemon.socket);
    std::os::unix::process::CommandExt::uid(&mut cmd, 65534);
    let (code, _, stderr) = run(cmd);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("is root-only: run this with sudo"), "{stderr}");
}

#[test]
fn processes_inside_the_agent_cgroup_are_refused_whatever_name_reaches_the_socket() {
    let cgroup = TestCgroup::new();
    let daemon = TestDaemon::start(&cgroup.path);
    let alias = daemon._dir.path().join("alias.sock");
    std::os::unix::fs::symlink(&daemon.socket, &alias).unwrap();
    let inside = cgroup.path.join("intruder");
    std::fs::create_dir(&inside).unwrap();
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec {BIN} sessions --socket {}",
        inside.display(),
        alias.display()
    );
    let (code, stdout, stderr) = run({
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script]);
        cmd
    });
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("the daemon refused: processes inside the agent cgroup may not use this socket"),
        "{stderr}"
    );
    match daemon.next_event() {
        SessionEvent::Refused { by, uid, request, reason } => {
            assert_eq!((uid, request), (0, "list"));
            assert!(reason.contains("inside the agent cgroup"), "{reason}");
            assert!(by.command.contains("sessions --socket"), "{by}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The same name from outside the agent cgroup is answered.
    let mut cmd = Command::new(BIN);
    cmd.args(["sessions", "--socket"]).arg(&alias);
    let (code, _, stderr) = run(cmd);
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test]
async fn bind_locks_down_the_socket_and_refuses_to_clobber() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/agent.sock");
    let listener = server::bind(&socket).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(socket.parent().unwrap()), 0o700);
    assert_eq!(mode(&socket), 0o600);
    assert!(matches!(server::bind(&socket), Err(server::ServerError::InUse(_))));
    drop(listener);
    server::bind(&socket).expect("a stale socket is replaced");

    let file = dir.path().join("run/not-a-socket");
    std::fs::write(&file, "keep me").unwrap();
    assert!(matches!(server::bind(&file), Err(server::ServerError::NotSocket(_))));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");

    let loose = dir.path().join("loose");
    std::fs::create_dir(&loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o755)).unwrap();
    server::bind(&loose.join("agent.sock")).unwrap();
    assert_eq!(mode(&loose), 0o700, "an existing directory is tightened");
}

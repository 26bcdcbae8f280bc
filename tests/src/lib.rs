//! Support for the tests that need a kernel with BPF LSM (`cargo xtask test` runs them inside the VM).
use safeclaw_agent::policy::compiled::{CompiledDfa, CompiledNet, CompiledPolicy, Effect};
use safeclaw_common::NO_RULE;

pub mod prometheus;

/// Fails (never skips) when the kernel cannot run the tests, saying why and how to run them.
pub fn require_bpf_lsm() {
    if std::env::var_os("SAFECLAW_IN_VM").is_none()
        && !std::path::Path::new("/sys/kernel/security/lsm").exists()
    {
        panic!("these tests need a kernel with BPF LSM; run them with `cargo xtask test` (inside the VM)");
    }
    if !nix::unistd::geteuid().is_root() {
        panic!("these tests need root (to load BPF LSM programs); run them with `cargo xtask test`");
    }
}

/// A DFA accepting exactly the given whole paths, each with its rule id (for hand-built test policies).
pub fn exact_paths_dfa(paths: &[(&[u8], u32)]) -> CompiledDfa {
    // State 0 = dead, state 1 = start; a trie over the paths' bytes with identity byte classes.
    let mut transitions = vec![0u32; 2 * 256];
    let mut accept = vec![NO_RULE, NO_RULE];
    for &(path, rule) in paths {
        let mut state = 1usize;
        for &byte in path {
            let next = transitions[state * 256 + byte as usize] as usize;
            state = if next != 0 {
                next
            } else {
                let fresh = accept.len();
                accept.push(NO_RULE);
                transitions.extend(std::iter::repeat_n(0, 256));
                transitions[state * 256 + byte as usize] = fresh as u32;
                fresh
            };
        }
        accept[state] = accept[state].min(rule);
    }
    let mut classes = [0u8; 256];
    for (i, c) in classes.iter_mut().enumerate() {
        *c = i as u8;
    }
    CompiledDfa { classes, class_count: 256, start: 1, dead: Some(0), transitions, accept }
}

/// A policy that allows everything except what `deny_read` and `deny_exec` name (rule ids 0 and 1).
pub fn deny_paths_policy(deny_read: &[u8], deny_exec: &[u8]) -> CompiledPolicy {
    CompiledPolicy {
        default_effect: Effect::Allow,
        rule_effects: vec![Effect::Deny, Effect::Deny],
        dfas: [
            exact_paths_dfa(&[(deny_read, 0)]),
            exact_paths_dfa(&[(deny_read, 0)]),
            exact_paths_dfa(&[(deny_exec, 1)]),
            CompiledDfa::empty(),
        ],
        net: CompiledNet::default(),
    }
}

/// A deny-by-default policy that allows reading exactly `paths` (rule `i` for `paths[i]`).
pub fn allow_paths_policy(paths: &[&[u8]]) -> CompiledPolicy {
    let rules: Vec<(&[u8], u32)> = paths.iter().enumerate().map(|(i, p)| (*p, i as u32)).collect();
    CompiledPolicy {
        default_effect: Effect::Deny,
        rule_effects: vec![Effect::Allow; paths.len()],
        dfas: [exact_paths_dfa(&rules), CompiledDfa::empty(), CompiledDfa::empty(), CompiledDfa::empty()],
        net: CompiledNet::default(),
    }
}

/// A `safeclaw-agent run` under test, with its own cgroup, pins, socket, state and audit log.
pub struct Daemon {
    name: String,
    child: std::process::Child,
    pub cgroup: std::path::PathBuf,
    pub audit_log: std::path::PathBuf,
    pub pin_dir: std::path::PathBuf,
    work: std::path::PathBuf,
    /// Arguments given to `run` beyond the ones every test daemon gets, with stderr kept in
    /// `DAEMON_LOG`; `None` for `start` (kept across a restart).
    extra_args: Option<Vec<String>>,
}

/// Where `Daemon::start_with` keeps the daemon's stderr, in its work directory.
const DAEMON_LOG: &str = "daemon.log";

/// The release agent `cargo xtask test` built (`SAFECLAW_AGENT_BIN`).
pub fn agent_bin() -> std::path::PathBuf {
    std::env::var_os("SAFECLAW_AGENT_BIN")
        .map(std::path::PathBuf::from)
        .expect("SAFECLAW_AGENT_BIN is not set: run the integration tests with `cargo xtask test`")
}

impl Daemon {
    /// Starts the daemon on `policy_yaml` with agent cgroup `name` and waits (bounded) until it enforces.
    pub fn start(name: &str, policy_yaml: &str) -> Daemon {
        let work = Daemon::prepare(name, policy_yaml);
        Daemon::launch(name, work, None)
    }

    /// `start`, with `extra_args` added to `run`'s command line (`--metrics ADDR`, `--ebpf-log debug`)
    /// and the daemon's stderr kept in `work()/daemon.log` (see `log_text`) instead of the test's.
    pub fn start_with(name: &str, policy_yaml: &str, extra_args: &[&str]) -> Daemon {
        let work = Daemon::prepare(name, policy_yaml);
        Daemon::launch(name, work, Some(extra_args.iter().map(|a| a.to_string()).collect()))
    }

    /// A fresh work directory for daemon `name` holding its policy.
    fn prepare(name: &str, policy_yaml: &str) -> std::path::PathBuf {
        require_bpf_lsm();
        let work = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        write_policy(&work, policy_yaml);
        work
    }

    /// Starts `run` on the files of `work` (which may hold a previous run's log and state) and waits.
    fn launch(name: &str, work: std::path::PathBuf, extra_args: Option<Vec<String>>) -> Daemon {
        let policy = work.join("policy.yaml");
        let ready = work.join("ready");
        let _ = std::fs::remove_file(&ready);
        let audit_log = work.join("log/audit.jsonl");
        let pin_dir = std::path::Path::new("/sys/fs/bpf").join(name);
        let mut command = std::process::Command::new(agent_bin());
        if extra_args.is_some() {
            let log =
                std::fs::OpenOptions::new().create(true).append(true).open(work.join(DAEMON_LOG)).unwrap();
            command.stderr(log);
        }
        command
            .args(["run", "--cgroup", name, "--policy"])
            .arg(&policy)
            .arg("--audit-log")
            .arg(&audit_log)
            .arg("--state-dir")
            .arg(work.join("state"))
            .arg("--ready-file")
            .arg(&ready)
            .arg("--pin-dir")
            .arg(&pin_dir)
            .arg("--socket")
            .arg(work.join("agent.sock"))
            .arg("--tool-socket")
            .arg(work.join("tools/tool.sock"))
            .args(extra_args.iter().flatten());
        let child = command.spawn().expect("cannot start safeclaw-agent");
        let mut daemon = Daemon {
            name: name.to_owned(),
            child,
            cgroup: safeclaw_agent::cgroup::find_mount().unwrap().path.join(name),
            audit_log,
            pin_dir,
            work,
            extra_args,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
        while !ready.exists() {
            if let Some(status) = daemon.child.try_wait().unwrap() {
                panic!("safeclaw-agent exited with {status} before it was enforcing");
            }
            if std::time::Instant::now() >= deadline {
                let threads = thread_waits(daemon.child.id());
                panic!("safeclaw-agent was not enforcing after 180 s. Its threads waited in:\n{threads}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        daemon
    }

    /// What the daemon wrote to stderr, for daemons started by `start_with`.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.work.join(DAEMON_LOG)).unwrap_or_default()
    }

    /// A scratch directory of this daemon's test.
    pub fn work(&self) -> &std::path::Path {
        &self.work
    }

    /// `work()/files`, created, and both directories open to every user (mode 0755, whatever the
    /// umask): where a test puts files an unprivileged agent session must reach.
    pub fn files_dir(&self) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let files = self.work.join("files");
        std::fs::create_dir_all(&files).unwrap();
        for dir in [&self.work, &files] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        files
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the daemon process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Runs `script` with `sh -c` inside `cgroup` (created if missing).
    pub fn sh_in(cgroup: &std::path::Path, script: &str) -> std::process::Output {
        std::fs::create_dir_all(cgroup).unwrap();
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("echo $$ > {}/cgroup.procs && {script}", cgroup.display()))
            .output()
            .unwrap()
    }

    /// Runs `script` in the agent cgroup.
    pub fn sh(&self, script: &str) -> std::process::Output {
        Daemon::sh_in(&self.cgroup, script)
    }

    /// The socket launchers and control commands (`--socket`) reach this daemon on.
    pub fn socket(&self) -> std::path::PathBuf {
        self.work.join("agent.sock")
    }

    /// The socket agent CLI hooks reach this daemon on (open to every user).
    pub fn tool_socket(&self) -> std::path::PathBuf {
        self.work.join("tools/tool.sock")
    }

    /// `safeclaw-agent ARGS...` against this daemon's socket (from outside the agent cgroup).
    pub fn agent_command(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(agent_bin())
            .args(args)
            .arg("--socket")
            .arg(self.socket())
            .output()
            .unwrap()
    }

    /// Runs `argv` as a real agent session: `safeclaw-agent exec --agent AGENT` against this daemon,
    /// as `run_as`.
    pub fn session(&self, agent: &str, run_as: RunAs, argv: &[&str]) -> std::process::Output {
        let cgroup_name = self.cgroup.file_name().expect("the agent cgroup has a name");
        let mut command = std::process::Command::new(agent_bin());
        command.args(["exec", "--agent", agent, "--cgroup"]).arg(cgroup_name);
        command.arg("--socket").arg(self.socket());
        match run_as {
            RunAs::Nobody => command.args(["--user", "nobody"]),
            RunAs::Root => command.arg("--as-root"),
        };
        command.arg("--").args(argv).output().expect("cannot run safeclaw-agent exec")
    }

    /// SIGKILL and wait: pinned enforcement stays, and the audit log and ring are left as they are.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        if self.reaped_within(REAP_TIMEOUT).is_none() {
            let threads = thread_waits(self.child.id());
            panic!("safeclaw-agent was not reaped {} s after SIGKILL:\n{threads}", REAP_TIMEOUT.as_secs());
        }
    }

    /// A new daemon on the killed one's policy, pins, state and audit log.
    pub fn restart(self) -> Daemon {
        Daemon::launch(&self.name, self.work.clone(), self.extra_args.clone())
    }

    /// SIGTERM, wait, and the audit entries written.
    pub fn stop(self) -> (std::process::ExitStatus, Vec<serde_json::Value>) {
        let log = self.audit_log.clone();
        (self.terminate(), read_entries(&log))
    }

    /// SIGTERM and wait, leaving the log unread: a burst's million entries would not fit a guest's
    /// memory as parsed values.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        self.exit_status()
    }

    /// Waits (bounded) for the daemon to exit by itself; its status and the audit entries written.
    pub fn wait(mut self) -> (std::process::ExitStatus, Vec<serde_json::Value>) {
        let log = self.audit_log.clone();
        (self.exit_status(), read_entries(&log))
    }

    fn exit_status(&mut self) -> std::process::ExitStatus {
        match self.exit_within(DAEMON_EXIT_TIMEOUT) {
            Ok(status) => status,
            Err(threads) => {
                panic!(
                    "safeclaw-agent did not exit within {} s; killed. Its threads waited in:\n{threads}",
                    DAEMON_EXIT_TIMEOUT.as_secs()
                )
            }
        }
    }

    /// The daemon's exit status once it exits within `timeout`; otherwise where its threads wait
    /// (taken before it is killed with SIGKILL and reaped), so that a stuck shutdown fails with a
    /// clue instead of hanging the test binary.
    fn exit_within(&mut self, timeout: std::time::Duration) -> Result<std::process::ExitStatus, String> {
        if let Some(status) = self.reaped_within(timeout) {
            return Ok(status);
        }
        let threads = thread_waits(self.child.id());
        let _ = self.child.kill();
        match self.reaped_within(REAP_TIMEOUT) {
            Some(_) => Err(threads),
            None => Err(format!(
                "{threads}and {} s after SIGKILL still:\n{}",
                REAP_TIMEOUT.as_secs(),
                thread_waits(self.child.id())
            )),
        }
    }

    /// The daemon's exit status once it is reaped within `timeout`. Bounded because a task stuck in
    /// the kernel (uninterruptible sleep) never dies, even of SIGKILL, and an unbounded wait would hang
    /// the test binary without a word.
    fn reaped_within(&mut self, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if std::time::Instant::now() < deadline => {}
                Ok(None) | Err(_) => return None,
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// How long a SIGKILLed daemon may take to be reaped.
const REAP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a daemon may take to exit after SIGTERM (5-6 s in the VM, most of it the kernel freeing
/// the program links one at a time).
const DAEMON_EXIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// One line per thread of `pid`: its name, state and the kernel function it sleeps in, then its kernel
/// stack (readable by root).
fn thread_waits(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return format!("(/proc/{pid}/task is unreadable)");
    };
    let mut text = String::new();
    for task in tasks.flatten() {
        let dir = task.path();
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        let state: String = read("stat")
            .rsplit_once(") ")
            .map(|(_, rest)| rest.chars().take(1).collect())
            .unwrap_or_default();
        text.push_str(&format!(
            "  {} {} state {state} in {}\n",
            task.file_name().to_string_lossy(),
            read("comm").trim(),
            read("wchan")
        ));
        for frame in read("stack").lines().take(8) {
            text.push_str(&format!("      {frame}\n"));
        }
    }
    text
}

/// A test that fails midway must not leave its daemon enforcing on the tests after it, nor hang on a
/// daemon that does not stop.
impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            if let Err(threads) = self.exit_within(DAEMON_EXIT_TIMEOUT) {
                // Past libtest's capture: a drop during a panic has no other way to be seen.
                let _ = std::io::Write::write_all(
                    &mut std::io::stderr(),
                    format!(
                        "safeclaw-agent did not exit within {} s of SIGTERM; killed. Its threads waited in:\n{threads}",
                        DAEMON_EXIT_TIMEOUT.as_secs()
                    )
                    .as_bytes(),
                );
            }
        }
    }
}

/// Writes `work/policy.yaml` as the daemon requires it (nobody but root can change it, whatever the
/// umask), by rename so that the daemon's watcher never reads half a policy.
fn write_policy(work: &std::path::Path, policy_yaml: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(work, std::fs::Permissions::from_mode(0o755)).unwrap();
    let next = work.join("policy.yaml.next");
    std::fs::write(&next, policy_yaml).unwrap();
    std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&next, work.join("policy.yaml")).unwrap();
}

/// The tests' `safeclaw-probe` running inside an agent cgroup, driven a line at a time.
pub struct Probe {
    pub child: std::process::Child,
    answers: std::io::BufReader<std::process::ChildStdout>,
}

impl Probe {
    /// Starts `binary` (the test's `env!("CARGO_BIN_EXE_safeclaw-probe")`) in `cgroup` with `launch`,
    /// shell words that end by running the probe, which is `"$0"` (`exec "$0"`, `cd DIR && exec
    /// taskset -c 0 "$0"`).
    pub fn start(binary: &str, cgroup: &std::path::Path, launch: &str) -> Probe {
        use std::process::{Command, Stdio};
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("echo $$ > {}/cgroup.procs && {launch}", cgroup.display()))
            .arg(binary)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let answers = std::io::BufReader::new(child.stdout.take().unwrap());
        Probe { child, answers }
    }

    /// Sends one request line (tab-separated words, without the newline).
    pub fn send(&mut self, line: &str) {
        use std::io::Write as _;
        self.child.stdin.as_mut().unwrap().write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    /// The next answer line, trimmed.
    pub fn answer(&mut self) -> String {
        use std::io::BufRead as _;
        let mut line = String::new();
        self.answers.read_line(&mut line).unwrap();
        line.trim().to_owned()
    }

    /// Closes the probe's input and checks that it exited successfully.
    pub fn end(&mut self) {
        drop(self.child.stdin.take());
        assert!(self.child.wait().unwrap().success());
    }
}

/// Runs `start` on a thread that then parks until the test binary exits, and returns what it made: a
/// child started there with [`end_with_spawning_thread`] lives exactly as long as the test binary.
pub fn on_keeper_thread<T: Send + 'static>(start: impl FnOnce() -> T + Send + 'static) -> T {
    let (started, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = started.send(start());
        loop {
            std::thread::park();
        }
    });
    receive.recv().expect("the keeper thread panicked while starting its child")
}

/// The child gets SIGTERM when the thread that spawns it ends (`PR_SET_PDEATHSIG`), so that nothing a
/// test starts outlives it and disturbs the test binaries after it.
pub fn end_with_spawning_thread(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: between fork and exec only prctl(2) runs, which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM).map_err(std::io::Error::from)
        });
    }
}

/// One daemon for all the tests of a test binary, each test enforcing its own policy on it in turn.
/// Starting and stopping a daemon costs 11 s (6.1) to 16 s (6.12) in the emulated VM: verifying the
/// programs takes 3-7 s of it, and detaching them 5 s (the kernel waits for an RCU-tasks grace period
/// per link, one link at a time), most of a short test's time.
/// The daemon ends with the test binary; tests that stop, kill or restart it start their own.
pub struct SharedDaemon {
    name: &'static str,
    daemon: std::sync::Mutex<Option<Daemon>>,
}

impl SharedDaemon {
    /// A daemon on agent cgroup `name`, started by the first `turn`.
    pub const fn new(name: &'static str) -> SharedDaemon {
        SharedDaemon { name, daemon: std::sync::Mutex::new(None) }
    }

    /// Waits for the daemon (starting it on first use), makes it enforce `policy_yaml`, and holds it
    /// for this test alone until the turn is dropped.
    pub fn turn(&'static self, policy_yaml: &str) -> Turn {
        // A test that failed during its turn leaves the daemon usable by the next.
        let mut daemon = self.daemon.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match daemon.as_mut() {
            Some(running) => {
                assert!(running.running(), "the shared daemon {} has exited", self.name);
                write_policy(&running.work, policy_yaml);
            }
            None => {
                *daemon = Some(Daemon::start(self.name, policy_yaml));
                stop_at_exit(self);
            }
        }
        let mut turn = Turn { daemon, from: 0 };
        turn.from = turn.recorded();
        turn
    }
}

/// The shared daemons started by this test binary, stopped when it exits.
static STARTED: std::sync::Mutex<Vec<&'static SharedDaemon>> = std::sync::Mutex::new(Vec::new());

/// Makes the test binary's exit stop `shared` with SIGTERM from the binary itself, and wait for it.
/// (Not `PR_SET_PDEATHSIG`: that SIGTERM comes from a process already exiting; the daemon cannot place
/// a sender that is gone, refuses the signal on doubt, and would enforce on for the rest of the run.)
fn stop_at_exit(shared: &'static SharedDaemon) {
    extern "C" fn stop_all() {
        let started = std::mem::take(&mut *STARTED.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for shared in started {
            // Dropping a daemon sends SIGTERM and waits for it to exit.
            drop(shared.daemon.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take());
        }
    }
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a plain function; it runs once, in `exit`, after every test has ended.
    REGISTERED.call_once(|| assert_eq!(unsafe { libc::atexit(stop_all) }, 0, "atexit failed"));
    STARTED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(shared);
}

/// One test's use of a `SharedDaemon`, which enforces the test's policy meanwhile.
pub struct Turn {
    daemon: std::sync::MutexGuard<'static, Option<Daemon>>,
    /// How many entries the log held when the test's policy began to enforce.
    from: usize,
}

impl Turn {
    /// The entries written during this turn, once everything the kernel recorded before this call is
    /// in the log.
    pub fn entries(&self) -> Vec<serde_json::Value> {
        let through = self.recorded();
        let mut entries = read_complete_entries(&self.audit_log);
        entries.truncate(through);
        entries.split_off(self.from.min(through))
    }

    /// Reloads the policy file and returns how many entries the log holds once the reload's own
    /// entry is there. The daemon records what the kernel saw before a request ahead of the request
    /// and writes its entries in order, so everything before the reload is then in the log too.
    fn recorded(&self) -> usize {
        let before = read_complete_entries(&self.audit_log).len();
        // In this process: starting `safeclaw-agent policy reload` costs about a second in the VM,
        // twice per test. (`policy reload` itself is tested in policy_runtime.)
        let reloaded = safeclaw_agent::control::reload(Some(&self.socket()));
        assert!(
            matches!(reloaded, Ok(code) if code == std::process::ExitCode::SUCCESS),
            "policy reload failed: {reloaded:?}"
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let entries = read_complete_entries(&self.audit_log);
            if let Some(at) = entries.iter().skip(before).position(|e| e["action"] == "policy.load") {
                return before + at + 1;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the reload's policy.load entry did not appear in 60 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl std::ops::Deref for Turn {
    type Target = Daemon;

    fn deref(&self) -> &Daemon {
        self.daemon.as_ref().expect("a turn holds a started daemon")
    }
}

/// A mount at an existing directory, made by the test process (root, outside the agent cgroup) and
/// detached when dropped, also when the test panics.
pub struct Mount(std::path::PathBuf);

impl Mount {
    /// `source` bind-mounted at `target`.
    pub fn bind(source: &std::path::Path, target: &std::path::Path) -> Mount {
        use nix::mount::{mount, MsFlags};
        mount(Some(source), target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .unwrap_or_else(|e| panic!("bind mount of {} at {}: {e}", source.display(), target.display()));
        Mount(target.to_owned())
    }

    /// A new tmpfs at `target`, private (no propagation to or from its peers), so that mounts inside
    /// it can be moved.
    pub fn private_tmpfs(target: &std::path::Path) -> Mount {
        use nix::mount::{mount, MsFlags};
        mount(Some("tmpfs"), target, Some("tmpfs"), MsFlags::empty(), None::<&str>)
            .unwrap_or_else(|e| panic!("tmpfs at {}: {e}", target.display()));
        let mounted = Mount(target.to_owned());
        mount(None::<&str>, target, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>)
            .unwrap_or_else(|e| panic!("making {} private: {e}", target.display()));
        mounted
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// `/tmp/NAME/files`, emptied and created, both directories open to every user (mode 0755, whatever
/// the umask): where a test on a `SharedDaemon` puts files an unprivileged agent session must reach.
pub fn test_files_dir(name: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let top = std::path::Path::new("/tmp").join(name);
    let _ = std::fs::remove_dir_all(&top);
    let files = top.join("files");
    std::fs::create_dir_all(&files).unwrap();
    for dir in [&top, &files] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    files
}

/// The entries of the log as far as whole lines are written (a running daemon may be mid-write).
fn read_complete_entries(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
    complete
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("bad audit line {line:?}: {e}")))
        .collect()
}

/// Names of the program links pinned under `pin_dir` (every epoch's).
pub fn pinned_links(pin_dir: &std::path::Path) -> Vec<String> {
    let Ok(epochs) = std::fs::read_dir(pin_dir.join("links")) else { return Vec::new() };
    epochs
        .flatten()
        .filter_map(|epoch| std::fs::read_dir(epoch.path()).ok())
        .flat_map(|links| links.flatten().map(|l| l.file_name().to_string_lossy().into_owned()))
        .collect()
}

/// The account an agent session runs as.
#[derive(Clone, Copy, Debug)]
pub enum RunAs {
    /// `--user nobody`: an unprivileged agent, the case SafeClaw is built for.
    Nobody,
    /// `--as-root`: needed where an unprivileged agent is stopped by file permissions before any
    /// SafeClaw hook runs (signalling or tracing root's daemon, writing cgroupfs, mounting).
    Root,
}

/// The uid and gid of `nobody`, the account unprivileged test sessions run as.
pub const NOBODY: u32 = 65534;

/// The JSON entries of an audit log.
pub fn read_entries(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("bad audit line {line:?}: {e}")))
        .collect()
}

/// The action entries about `path` (file or exec path, or unix socket path).
pub fn entries_for<'a>(
    entries: &'a [serde_json::Value],
    action: &str,
    path: &str,
) -> Vec<&'a serde_json::Value> {
    entries.iter().filter(|e| e["action"] == action && e["requestDetails"]["path"] == path).collect()
}

/// Whether a command failed with EPERM.
pub fn denied(output: &std::process::Output) -> bool {
    !output.status.success() && String::from_utf8_lossy(&output.stderr).contains("Operation not permitted")
}

/// What an escape-probe session printed (its verdict: `ok` or an errno name), once the session
/// itself ran to completion.
pub fn probe_outcome(output: &std::process::Output) -> String {
    assert!(output.status.success(), "the session did not complete: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The one audit entry for `action` on `path`, checked to be a denial.
pub fn the_denial<'a>(entries: &'a [serde_json::Value], action: &str, path: &str) -> &'a serde_json::Value {
    let found = entries_for(entries, action, path);
    assert_eq!(found.len(), 1, "exactly one {action} entry for {path}: {found:#?}");
    assert_eq!(found[0]["effect"], "deny", "{:#}", found[0]);
    found[0]
}

/// Makes `path` belong to `nobody` with `mode`: the agent's own file, which file permissions alone
/// would let it read, so only SafeClaw stands in the way.
pub fn give_to_nobody(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_stuck_daemon_is_described_by_where_each_of_its_threads_waits() {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (ready, started) = std::sync::mpsc::channel::<()>();
        let helper = std::thread::Builder::new()
            .name("waits-here".into())
            .spawn(move || {
                ready.send(()).unwrap();
                wait.recv().unwrap();
            })
            .unwrap();
        started.recv().unwrap();
        // The helper may not have reached its wait yet: look again briefly.
        let described = (0..100).find_map(|_| {
            let text = super::thread_waits(std::process::id());
            let found = text.lines().any(|line| line.contains(" waits-here state S in "));
            std::thread::sleep(std::time::Duration::from_millis(10));
            found.then_some(text)
        });
        release.send(()).unwrap();
        helper.join().unwrap();
        assert!(described.is_some(), "{}", super::thread_waits(std::process::id()));
    }
}

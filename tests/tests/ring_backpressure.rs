//! Agents faster than the daemon are paused, not denied: once the event ring is half full the agent
//! cgroup is frozen until the daemon has recorded most of it, every open succeeds, every one of them
//! is in the log, and the pause is recorded in the chain.
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use safeclaw_common::{EVENTS_RING_BYTES, EVENT_FIXED_LEN};
use safeclaw_integration::{agent_bin, entries_for, Daemon};

const NAME: &str = "safeclaw-it-backpressure";

const POLICY: &str = "version: 1\ndefault: allow\nrules: []\n";

/// Every allowed open its own entry, so that the burst's entries, not a count, fill the ring.
const CONFIG: &str = "audit:\n  repeatWindow: 0ms\n";

/// Its `r-times` command opens a file in a tight loop.
const PROBE: &str = env!("CARGO_BIN_EXE_safeclaw-probe");

const AGENTS: u64 = 2;
/// Opens after the pause, each agent: they run again and are recorded too.
const OPENS_AFTER: u64 = 5_000;

/// One probe inside the agent cgroup, driven a line at a time.
struct Agent {
    child: Child,
    answers: BufReader<ChildStdout>,
}

impl Agent {
    fn start(cgroup: &std::path::Path) -> Agent {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("echo $$ > {}/cgroup.procs && exec \"$0\"", cgroup.display()))
            .arg(PROBE)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let answers = BufReader::new(child.stdout.take().unwrap());
        Agent { child, answers }
    }

    fn ask_to_open(&mut self, file: &std::path::Path, times: u64) {
        let line = format!("r-times\t{}\t{times}\n", file.display());
        self.child.stdin.as_mut().unwrap().write_all(line.as_bytes()).unwrap();
    }

    /// The answer to `ask_to_open`: opens that succeeded, opens denied.
    fn answer(&mut self) -> String {
        let mut line = String::new();
        self.answers.read_line(&mut line).unwrap();
        line.trim().to_owned()
    }
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
}

#[test]
fn a_stalled_daemon_pauses_fast_agents_instead_of_denying_them() {
    let config = std::env::temp_dir().join(format!("{NAME}-config.yaml"));
    std::fs::write(&config, CONFIG).unwrap();
    let daemon = Daemon::start_with(NAME, POLICY, &["--config", &config.display().to_string()]);
    let file = daemon.work().join("burst.txt");
    std::fs::write(&file, "x").unwrap();
    std::fs::create_dir_all(&daemon.cgroup).unwrap();
    let mut agents: Vec<Agent> = (0..AGENTS).map(|_| Agent::start(&daemon.cgroup)).collect();
    for agent in &mut agents {
        agent.ask_to_open(&file, 1);
        assert_eq!(agent.answer(), "1 0", "the agent did not start");
    }
    // Let the daemon record the agents' start (their exec, the loader's opens) and release it.
    std::thread::sleep(Duration::from_secs(2));

    // The daemon stalls (as one starved of CPU would) while the agents fill 60 % of the ring: past
    // the half where it pauses them, short of full, where the kernel would deny.
    let record = 8 + (EVENT_FIXED_LEN + file.as_os_str().len()).next_multiple_of(8) as u64;
    let before_pause = u64::from(EVENTS_RING_BYTES) * 6 / 10 / record / AGENTS;
    signal(daemon.pid(), nix::sys::signal::Signal::SIGSTOP);
    for agent in &mut agents {
        agent.ask_to_open(&file, before_pause);
    }
    for agent in &mut agents {
        assert_eq!(agent.answer(), format!("{before_pause} 0"), "opens that succeeded, opens denied");
    }
    signal(daemon.pid(), nix::sys::signal::Signal::SIGCONT);
    let events = daemon.cgroup.join("cgroup.events");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&events).unwrap().lines().any(|l| l == "frozen 1") {
        assert!(
            Instant::now() < deadline,
            "the agent cgroup was not frozen within 60 s of the daemon going on"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Answered only once the daemon has caught up and lets them run.
    for agent in &mut agents {
        agent.ask_to_open(&file, OPENS_AFTER);
    }
    for agent in &mut agents {
        assert_eq!(agent.answer(), format!("{OPENS_AFTER} 0"));
        drop(agent.child.stdin.take());
        assert!(agent.child.wait().unwrap().success());
    }
    let log = daemon.audit_log.clone();
    let head = daemon.work().join("state/audit.head");
    let (status, entries) = daemon.stop();
    assert!(status.success(), "daemon exit: {status}");
    std::fs::remove_file(&config).unwrap();

    let gaps: Vec<_> = entries.iter().filter(|e| e["action"] == "audit.gap").collect();
    assert!(gaps.is_empty(), "attempts denied for want of ring space: {gaps:#?}");
    let recorded: u64 = entries_for(&entries, "file.read", &file.display().to_string())
        .into_iter()
        .filter(|e| e["effect"] == "allow")
        .map(|e| e["repeats"]["count"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(recorded, AGENTS * (1 + before_pause + OPENS_AFTER), "every open has its entry");

    let position = |action: &str| entries.iter().position(|e| e["action"] == action);
    let paused = position("daemon.agents_paused").expect("a daemon.agents_paused entry");
    let resumed = position("daemon.agents_resumed").expect("a daemon.agents_resumed entry");
    assert!(paused < resumed, "resumed before paused");
    let details = &entries[paused]["details"];
    let (used, size) = (details["ringUsedBytes"].as_u64().unwrap(), details["ringBytes"].as_u64().unwrap());
    assert_eq!(size, u64::from(EVENTS_RING_BYTES));
    assert!(used * 2 >= size && used < size, "paused at {used} of {size} bytes");
    assert!(entries[resumed]["details"]["pausedMs"].as_u64().unwrap() > 0);

    let verify =
        Command::new(agent_bin()).args(["audit", "verify"]).arg(&log).arg("--head").arg(&head).output();
    let verify = verify.unwrap();
    assert!(verify.status.success(), "audit verify: {verify:?}");
}

//! Agents faster than the daemon are paused, not denied: once the event ring is half full the agent
//! cgroup is frozen until the daemon has recorded most of it, every open succeeds, every one of them
//! is in the log, and the pause is recorded in the chain. A daemon killed during a pause leaves the
//! agents frozen, and the next one resumes them.
use std::process::Command;
use std::time::{Duration, Instant};

use safeclaw_common::{EVENTS_RING_BYTES, EVENT_FIXED_LEN};
use safeclaw_integration::{agent_bin, entries_for, Daemon, Probe};

const POLICY: &str = "version: 1\ndefault: allow\nrules: []\n";

/// Every allowed open its own entry, so that the burst's entries, not a count, fill the ring.
const CONFIG: &str = "audit:\n  repeatWindow: 0ms\n";

/// Its `r-times` command opens a file in a tight loop.
const PROBE: &str = env!("CARGO_BIN_EXE_safeclaw-probe");

const AGENTS: u64 = 2;
/// Opens after the pause, each agent: they run again and are recorded too.
const OPENS_AFTER: u64 = 5_000;

/// One probe inside the agent cgroup.
struct Agent(Probe);

impl Agent {
    fn start(cgroup: &std::path::Path) -> Agent {
        Agent(Probe::start(PROBE, cgroup, "exec \"$0\""))
    }

    fn ask_to_open(&mut self, file: &std::path::Path, times: u64) {
        self.0.send(&format!("r-times\t{}\t{times}", file.display()));
    }

    /// The answer to `ask_to_open`: opens that succeeded, opens denied.
    fn answer(&mut self) -> String {
        self.0.answer()
    }
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
}

/// A daemon on the permissive policy that records every open, a file to open, and agents that have
/// filled 60 % of the ring while the daemon was stalled: past the half where it pauses them, short of
/// full, where the kernel would deny. Returns once the agent cgroup is frozen; also the opens each
/// agent made so far.
fn paused_agents(name: &str) -> (Daemon, std::path::PathBuf, Vec<Agent>, u64) {
    let config = config_path(name);
    std::fs::write(&config, CONFIG).unwrap();
    let daemon = Daemon::start_with(name, POLICY, &["--config", &config.display().to_string()]);
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

    // The daemon stalls (as one starved of CPU would) while the agents fill the ring.
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
    let deadline = Instant::now() + Duration::from_secs(60);
    while !frozen(&daemon.cgroup) {
        assert!(
            Instant::now() < deadline,
            "the agent cgroup was not frozen within 60 s of the daemon going on"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    (daemon, file, agents, 1 + before_pause)
}

/// The daemon config `paused_agents` writes for the test `name`, removed by `stop_and_check`.
fn config_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{name}-config.yaml"))
}

fn frozen(cgroup: &std::path::Path) -> bool {
    std::fs::read_to_string(cgroup.join("cgroup.events")).unwrap().lines().any(|l| l == "frozen 1")
}

/// Opens `OPENS_AFTER` more in each agent, which they answer only once they run again, then ends them.
fn open_more_and_end(agents: &mut [Agent], file: &std::path::Path) {
    for agent in agents.iter_mut() {
        agent.ask_to_open(file, OPENS_AFTER);
    }
    for agent in agents.iter_mut() {
        assert_eq!(agent.answer(), format!("{OPENS_AFTER} 0"));
        agent.0.end();
    }
}

/// Stops the daemon; its entries, once the log is checked to hold no gap, one entry per open of
/// `file` (`opens` in all) and to verify.
fn stop_and_check(daemon: Daemon, name: &str, file: &std::path::Path, opens: u64) -> Vec<serde_json::Value> {
    let log = daemon.audit_log.clone();
    let head = daemon.work().join("state/audit.head");
    let (status, entries) = daemon.stop();
    assert!(status.success(), "daemon exit: {status}");
    std::fs::remove_file(config_path(name)).unwrap();

    let gaps: Vec<_> = entries.iter().filter(|e| e["action"] == "audit.gap").collect();
    assert!(gaps.is_empty(), "attempts denied for want of ring space: {gaps:#?}");
    let recorded: u64 = entries_for(&entries, "file.read", &file.display().to_string())
        .into_iter()
        .filter(|e| e["effect"] == "allow")
        .map(|e| e["repeats"]["count"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(recorded, opens, "every open has its entry, once");
    let verify =
        Command::new(agent_bin()).args(["audit", "verify"]).arg(&log).arg("--head").arg(&head).output();
    let verify = verify.unwrap();
    assert!(verify.status.success(), "audit verify: {verify:?}");
    entries
}

#[test]
fn a_stalled_daemon_pauses_fast_agents_instead_of_denying_them() {
    let name = "safeclaw-it-backpressure";
    let (daemon, file, mut agents, opens_before) = paused_agents(name);
    open_more_and_end(&mut agents, &file);
    let entries = stop_and_check(daemon, name, &file, AGENTS * (opens_before + OPENS_AFTER));

    let position = |action: &str| entries.iter().position(|e| e["action"] == action);
    let paused = position("daemon.agents_paused").expect("a daemon.agents_paused entry");
    let resumed = position("daemon.agents_resumed").expect("a daemon.agents_resumed entry");
    assert!(paused < resumed, "resumed before paused");
    let details = &entries[paused]["details"];
    let (used, size) = (details["ringUsedBytes"].as_u64().unwrap(), details["ringBytes"].as_u64().unwrap());
    assert_eq!(size, u64::from(EVENTS_RING_BYTES));
    assert!(used * 2 >= size && used < size, "paused at {used} of {size} bytes");
    assert!(entries[resumed]["details"]["pausedMs"].as_u64().unwrap() > 0);
}

#[test]
fn the_next_daemon_thaws_agents_that_a_daemon_killed_during_a_pause_left_frozen() {
    let name = "safeclaw-it-backpressure-killed";
    let (mut daemon, file, mut agents, opens_before) = paused_agents(name);
    // Stopped before it is checked, so that the pause cannot end between the check and the kill.
    signal(daemon.pid(), nix::sys::signal::Signal::SIGSTOP);
    let freeze = std::fs::read_to_string(daemon.cgroup.join("cgroup.freeze")).unwrap();
    assert_eq!(freeze.trim(), "1", "the daemon resumed the agents before the test could kill it");
    daemon.kill();
    std::thread::sleep(Duration::from_millis(500));
    assert!(frozen(&daemon.cgroup), "the agents ran again with no daemon to record them");
    let daemon = daemon.restart();
    // Bounded here: agents left frozen would never answer below.
    let deadline = Instant::now() + Duration::from_secs(60);
    while frozen(&daemon.cgroup) {
        assert!(Instant::now() < deadline, "the agents are still frozen 60 s after the new daemon started");
        std::thread::sleep(Duration::from_millis(5));
    }
    open_more_and_end(&mut agents, &file);
    let entries = stop_and_check(daemon, name, &file, AGENTS * (opens_before + OPENS_AFTER));

    let second_start = entries
        .iter()
        .rposition(|e| e["action"] == "daemon.start")
        .expect("the second daemon's daemon.start");
    let lifted = entries[second_start..]
        .iter()
        .find(|e| e["action"] == "daemon.agents_resumed")
        .expect("the second daemon records that it resumed the agents");
    assert_eq!(lifted["details"], serde_json::json!({"leftByPreviousDaemon": true}), "{lifted:#}");
}

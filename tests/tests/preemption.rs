//! Decisions stay whole when the kernel preempts a program mid-hook. With the guest switched to full
//! preemption, agents pinned to one CPU open an allowed pair of files and a denied one as fast as they
//! can, so that one task's program is often preempted while another's runs on the same CPU: no denied
//! open succeeds, no allowed one is refused, and every entry names the task, the path and the verdict
//! that belong together.
use std::process::Command;

use safeclaw_integration::{entries_for, Daemon, Probe};

const NAME: &str = "safeclaw-it-preempt";

const POLICY: &str = r#"
version: 1
default: allow
rules:
  - name: secret-read
    action: file.read
    effect: deny
    paths: [/tmp/safeclaw-it-preempt/files/secret]
"#;

/// Its `r-cycle` command opens files in turn for a while.
const PROBE: &str = env!("CARGO_BIN_EXE_safeclaw-probe");

/// How long the agents race each other.
const SECONDS: u64 = 4;

/// The scheduler's preemption model switch (kernels built with PREEMPT_DYNAMIC).
const PREEMPT: &str = "/sys/kernel/debug/sched/preempt";

/// Full preemption until dropped, then the model the kernel had.
struct FullPreemption {
    previous: String,
}

impl FullPreemption {
    fn switch() -> FullPreemption {
        if !std::path::Path::new(PREEMPT).exists() {
            let mounted =
                Command::new("mount").args(["-t", "debugfs", "debugfs", "/sys/kernel/debug"]).status();
            assert!(mounted.is_ok_and(|s| s.success()), "cannot mount debugfs to reach {PREEMPT}");
        }
        let previous = current_model();
        std::fs::write(PREEMPT, "full")
            .unwrap_or_else(|e| panic!("cannot switch the kernel to full preemption ({PREEMPT}): {e}"));
        assert_eq!(current_model(), "full", "the kernel did not switch to full preemption");
        FullPreemption { previous }
    }
}

impl Drop for FullPreemption {
    fn drop(&mut self) {
        let _ = std::fs::write(PREEMPT, &self.previous);
    }
}

/// The model in force: the one in parentheses in `none (voluntary) full`.
fn current_model() -> String {
    let models = std::fs::read_to_string(PREEMPT).unwrap_or_else(|e| panic!("cannot read {PREEMPT}: {e}"));
    let start = models.find('(').expect("no current preemption model") + 1;
    let end = models[start..].find(')').expect("no current preemption model") + start;
    models[start..end].to_owned()
}

/// A probe inside the agent cgroup, pinned to CPU 0 and working in `dir`.
struct Agent(Probe);

impl Agent {
    fn start(cgroup: &std::path::Path, dir: &std::path::Path) -> Agent {
        Agent(Probe::start(PROBE, cgroup, &format!("cd {} && exec taskset -c 0 \"$0\"", dir.display())))
    }

    /// Opens `files` (relative to the agent's directory) in turn for `SECONDS`.
    fn cycle(&mut self, files: &[&str]) {
        self.0.send(&format!("r-cycle\t{SECONDS}\t{}", files.join("\t")));
    }

    /// The answer to `cycle`: opens that succeeded, opens denied.
    fn answer(&mut self) -> (u64, u64) {
        let line = self.0.answer();
        let (ok, denied) = line.split_once(' ').unwrap_or_else(|| panic!("probe answered {line:?}"));
        (ok.parse().unwrap(), denied.parse().unwrap())
    }

    fn pid(&self) -> u32 {
        self.0.child.id()
    }

    /// Times the scheduler took the CPU from this agent.
    fn preempted(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("nonvoluntary_ctxt_switches:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

#[test]
fn decisions_preempted_on_one_cpu_keep_their_own_path_task_and_verdict() {
    let daemon = Daemon::start(NAME, POLICY);
    let files = daemon.work().join("files");
    std::fs::create_dir_all(&files).unwrap();
    for name in ["secret", "a", "b"] {
        std::fs::write(files.join(name), name).unwrap();
    }
    std::fs::create_dir_all(&daemon.cgroup).unwrap();
    let mut denied_agent = Agent::start(&daemon.cgroup, &files);
    let mut allowed_agents = [Agent::start(&daemon.cgroup, &files), Agent::start(&daemon.cgroup, &files)];

    let (opened_secret, secret_denials, allowed, preempted) = {
        let _full = FullPreemption::switch();
        denied_agent.cycle(&["secret"]);
        for agent in &mut allowed_agents {
            // Two files in turn: each open misses the memo and resolves its path into the scratch.
            agent.cycle(&["a", "b"]);
        }
        let (opened_secret, secret_denials) = denied_agent.answer();
        let allowed: Vec<(u64, u64)> = allowed_agents.iter_mut().map(Agent::answer).collect();
        let preempted = denied_agent.preempted() + allowed_agents.iter().map(Agent::preempted).sum::<u64>();
        (opened_secret, secret_denials, allowed, preempted)
    };
    let denied_pid = denied_agent.pid();
    let allowed_pids: Vec<u32> = allowed_agents.iter().map(Agent::pid).collect();
    for agent in std::iter::once(&mut denied_agent).chain(&mut allowed_agents) {
        agent.0.end();
    }
    let (status, entries) = daemon.stop();
    assert!(status.success(), "daemon exit: {status}");

    assert!(preempted >= 100, "the agents were preempted only {preempted} times: the race was not run");
    assert_eq!(opened_secret, 0, "a denied open succeeded ({secret_denials} were denied)");
    assert!(secret_denials > 0, "the denied agent made no attempt");
    for (ok, refused) in &allowed {
        assert!(*ok > 0, "an allowed agent made no attempt");
        assert_eq!(*refused, 0, "allowed opens refused ({ok} succeeded)");
    }
    let gaps: Vec<_> = entries.iter().filter(|e| e["action"] == "audit.gap").collect();
    assert!(gaps.is_empty(), "attempts that never reached the log: {gaps:#?}");

    let path = |name: &str| files.join(name).display().to_string();
    let pid = |e: &serde_json::Value| e["requestDetails"]["pid"].as_u64().unwrap() as u32;
    let secret = entries_for(&entries, "file.read", &path("secret"));
    assert_eq!(secret.len() as u64, secret_denials, "one entry per denied open of the secret");
    for entry in &secret {
        assert_eq!(entry["effect"], "deny", "{entry:#}");
        assert_eq!(pid(entry), denied_pid, "the secret's entry names another task: {entry:#}");
    }
    let mut counted = std::collections::BTreeMap::new();
    let mut first_of = std::collections::BTreeMap::new();
    let mut repeats_of = std::collections::BTreeMap::new();
    for name in ["a", "b"] {
        for entry in entries_for(&entries, "file.read", &path(name)) {
            assert_eq!(entry["effect"], "allow", "{entry:#}");
            assert!(allowed_pids.contains(&pid(entry)), "{name}'s entry names another task: {entry:#}");
            *counted.entry(pid(entry)).or_insert(0) += entry["repeats"]["count"].as_u64().unwrap_or(1);
            match entry["repeats"]["ofKernelSeq"].as_u64() {
                Some(of) => {
                    assert!(repeats_of.insert(of, entry).is_none(), "repeats counted twice: {entry:#}")
                }
                None => assert!(first_of.insert(entry["kernelSeq"].as_u64().unwrap(), entry).is_none()),
            }
        }
    }
    for (of, entry) in &repeats_of {
        let first = first_of.get(of).unwrap_or_else(|| panic!("repeats of no recorded attempt: {entry:#}"));
        assert_eq!(first["requestDetails"], entry["requestDetails"], "repeats of another attempt");
    }
    for ((ok, _), pid) in allowed.iter().zip(&allowed_pids) {
        assert_eq!(counted.get(pid), Some(ok), "task {pid}'s allowed opens in the log, each once");
    }
    let dir = format!("{}/", files.display());
    let torn: Vec<_> = entries
        .iter()
        .filter(|e| e["requestDetails"]["path"].as_str().is_some_and(|p| p.starts_with(&dir)))
        .filter(|e| {
            !["secret", "a", "b"].iter().any(|name| e["requestDetails"]["path"] == path(name).as_str())
        })
        .collect();
    assert!(torn.is_empty(), "entries for paths no agent opened: {torn:#?}");
}

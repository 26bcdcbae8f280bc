//! In-VM benchmark of SafeClaw against auditd and fapolicyd in one boot: micro operations, real workloads,
//! the audit burst (with a CPU profile of the daemon) and memory, each configuration interleaved round by
//! round with the order rotated.
//! Prints Markdown between `safeclaw-bench: results` and `safeclaw-bench: complete`; `cargo xtask bench`
//! runs it in the VM and appends that to docs/benchmarks.md.
mod burst;
mod open_profile;
mod ops;
mod paired;
mod peers;
mod profile;
mod real;
mod report;
mod safeclaw;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use ops::{Fixture, Op, Timing};
use real::{Projects, Workload};
use safeclaw::Policy;

/// How much each part measures: `--quick` for the smoke test, the default for the published table.
pub struct Sizes {
    pub rounds: usize,
    pub open_iterations: u32,
    pub denied_iterations: u32,
    pub exec_iterations: u32,
    pub connect_iterations: u32,
    pub repo_files: u32,
    pub burst_opens: u64,
    /// Distinct files of the second burst (as many opens as the first).
    pub burst_files: u32,
    /// Opens of each loop of the kernel profile (`open_profile`).
    pub profile_opens: u32,
    pub launcher_runs: u32,
    /// Pairs of a baseline block and SafeClaw's outside and inside blocks (`paired`): at least the
    /// first, at most the second. Few: under TCG each daemon stop risks a guest panic (see `paired`).
    pub min_pairs: usize,
    pub max_pairs: usize,
    /// Iterations of each operation in a pair's block, in `Op::ALL` order: larger than a round's, so
    /// that a block outlasts the emulator's pauses of a few milliseconds.
    pub pair_iterations: [u32; 4],
    pub rule_counts: Vec<u32>,
    pub workloads: Vec<Workload>,
}

impl Sizes {
    fn full() -> Sizes {
        Sizes {
            rounds: 5,
            open_iterations: 2_000,
            denied_iterations: 200,
            exec_iterations: 50,
            connect_iterations: 500,
            repo_files: 2_000,
            burst_opens: 1_000_000,
            burst_files: 100_000,
            profile_opens: 100_000,
            launcher_runs: 5,
            min_pairs: 8,
            max_pairs: 16,
            pair_iterations: [20_000, 2_000, 100, 2_000],
            rule_counts: vec![10, 100, 1_000, 10_000],
            workloads: Workload::ALL.to_vec(),
        }
    }

    fn quick() -> Sizes {
        Sizes {
            rounds: 1,
            open_iterations: 200,
            denied_iterations: 100,
            exec_iterations: 10,
            connect_iterations: 100,
            repo_files: 100,
            burst_opens: 4_000,
            burst_files: 400,
            profile_opens: 5_000,
            launcher_runs: 2,
            min_pairs: 1,
            max_pairs: 1,
            pair_iterations: [200, 100, 10, 100],
            rule_counts: vec![100],
            workloads: vec![Workload::GitStatus],
        }
    }

    fn pair_iterations(&self, op: Op) -> u32 {
        const _: () = assert!(
            Op::ALL[0] as usize == 0
                && Op::ALL[1] as usize == 1
                && Op::ALL[2] as usize == 2
                && Op::ALL[3] as usize == 3,
            "pair_iterations is indexed by Op in Op::ALL order"
        );
        self.pair_iterations[op as usize]
    }

    fn iterations(&self, op: Op) -> u32 {
        match op {
            Op::OpenAllowed => self.open_iterations,
            Op::OpenDenied => self.denied_iterations,
            Op::Exec => self.exec_iterations,
            Op::Connect => self.connect_iterations,
        }
    }
}

/// What runs while a configuration is measured; configurations of one environment share a phase.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Env {
    Baseline,
    SafeClaw,
    Auditd,
    Fapolicyd,
}

impl Env {
    const ALL: [Env; 4] = [Env::Baseline, Env::SafeClaw, Env::Auditd, Env::Fapolicyd];

    pub fn label(self) -> &'static str {
        match self {
            Env::Baseline => "baseline",
            Env::SafeClaw => "SafeClaw",
            Env::Auditd => "auditd",
            Env::Fapolicyd => "fapolicyd",
        }
    }
}

/// One measured configuration of the micro benchmark.
pub struct Config {
    pub env: Env,
    /// SafeClaw's policy; `None` for the others.
    pub policy: Option<Policy>,
    /// Whether the measured process is in SafeClaw's agent cgroup.
    pub inside: bool,
}

impl Config {
    pub fn label(&self) -> String {
        match (self.env, self.policy, self.inside) {
            (Env::Baseline, ..) => "baseline (nothing attached)".into(),
            (Env::SafeClaw, Some(policy), false) => {
                format!("SafeClaw, outside the agent cgroup ({})", policy.label())
            }
            (Env::SafeClaw, Some(policy), true) => {
                format!("SafeClaw, inside, {}, full audit log", policy.label())
            }
            (Env::Auditd, ..) => "auditd, logging the same calls".into(),
            (Env::Fapolicyd, ..) => "fapolicyd, deciding every open".into(),
            (Env::SafeClaw, None, _) => "SafeClaw".into(),
        }
    }
}

/// The configuration table: everything the micro benchmark measures, in report order.
fn configs(sizes: &Sizes) -> Vec<Config> {
    let mut configs = vec![
        Config { env: Env::Baseline, policy: None, inside: false },
        Config { env: Env::SafeClaw, policy: Some(Policy::Default), inside: false },
        Config { env: Env::SafeClaw, policy: Some(Policy::Default), inside: true },
        Config { env: Env::Auditd, policy: None, inside: false },
        Config { env: Env::Fapolicyd, policy: None, inside: false },
    ];
    configs.extend(sizes.rule_counts.iter().map(|&n| Config {
        env: Env::SafeClaw,
        policy: Some(Policy::Rules(n)),
        inside: true,
    }));
    configs
}

/// Everything measured, filled round by round.
pub struct Results {
    /// `[config][op]`: one timing per round.
    pub micro: Vec<Vec<Vec<Timing>>>,
    /// `[config]`: audit entries (SafeClaw) or records (auditd) written while it was measured, per round.
    pub logged: Vec<Vec<u64>>,
    /// `[env][workload]`: wall seconds per round.
    pub real: Vec<Vec<Vec<f64>>>,
    /// `[env][workload]`: entries or records per round.
    pub real_logged: Vec<Vec<Vec<u64>>>,
    /// Denied attempts in SafeClaw's log during the real workloads (all are false denials): action and path.
    pub real_denials: Vec<String>,
    pub fapolicyd: peers::Decisions,
    pub auditd_lost: u64,
    /// Wall seconds of `safeclaw-agent exec -- true` and of plain `true`.
    pub launcher: (Vec<f64>, Vec<f64>),
    /// Policy → wall seconds of each reload into it (SIGHUP to its `policy.load` entry).
    pub reloads: std::collections::BTreeMap<Policy, Vec<f64>>,
    /// Program name → (run count, run time ns) of the SafeClaw phase run with bpf_stats on.
    pub bpf_stats: std::collections::BTreeMap<String, (u64, u64)>,
}

impl Results {
    fn empty(configs: &[Config], sizes: &Sizes) -> Self {
        fn per_workload<T>(sizes: &Sizes) -> Vec<Vec<Vec<T>>> {
            Env::ALL.iter().map(|_| sizes.workloads.iter().map(|_| Vec::new()).collect()).collect()
        }
        Results {
            micro: configs.iter().map(|_| Op::ALL.iter().map(|_| Vec::new()).collect()).collect(),
            logged: configs.iter().map(|_| Vec::new()).collect(),
            real: per_workload(sizes),
            real_logged: per_workload(sizes),
            real_denials: Vec::new(),
            fapolicyd: peers::Decisions::default(),
            auditd_lost: 0,
            launcher: (Vec::new(), Vec::new()),
            reloads: Default::default(),
            bpf_stats: Default::default(),
        }
    }
}

/// Whether a SafeClaw phase reads the programs' bpf_stats before its daemon stops.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stats {
    Off,
    Read,
}

fn set_bpf_stats(on: bool) -> anyhow::Result<()> {
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", if on { "1" } else { "0" })
        .context("writing kernel.bpf_stats_enabled")
}

fn main() -> anyhow::Result<()> {
    let mut sizes = Sizes::full();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => sizes = Sizes::quick(),
            "--rounds" => {
                sizes.rounds = args.next().context("--rounds needs a value")?.parse().context("--rounds")?;
            }
            other => bail!("unknown argument {other} (use --quick, --rounds N)"),
        }
    }
    if sizes.rounds < 1 {
        bail!("--rounds must be at least 1");
    }
    peers::require_installed()?;
    safeclaw_integration::require_bpf_lsm();
    // The agent and `true` run from the guest's tmpfs: started from the virtiofs root, every page they
    // fault in would be a FUSE round trip to the host, which no installed system pays.
    let home = PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?);
    // In the workspace, where default.yaml lets the agent run binaries.
    let bin = home.join("projects/bench-bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::copy(safeclaw_integration::agent_bin(), bin.join("safeclaw-agent"))
        .context("copying the agent")?;
    std::fs::copy("/bin/true", bin.join("true"))?;
    // Single-threaded still: nothing reads the environment concurrently.
    std::env::set_var("SAFECLAW_AGENT_BIN", bin.join("safeclaw-agent"));
    set_bpf_stats(false)?;

    let fixture = Fixture::create(&home.join("projects/bench"))?;
    eprintln!("safeclaw-bench: creating the real-workload fixture");
    let projects = Projects::create(&home.join("projects/real"), sizes.repo_files)?;
    let plain_cgroup = safeclaw_agent::cgroup::find_mount()?.path.join("bench-plain");
    std::fs::create_dir_all(&plain_cgroup)?;
    // One unmeasured run of each workload, so that no phase pays the cold virtiofs and page caches.
    for &workload in &sizes.workloads {
        projects.run(workload, Some(&plain_cgroup)).context("warm-up run")?;
    }
    let auditd = peers::Auditd::start()?;
    let mut fapolicyd = peers::FapolicydSetup::prepare(&fixture)?;

    let configs = configs(&sizes);
    let mut results = Results::empty(&configs, &sizes);
    let started = std::time::Instant::now();
    let bench = Bench { sizes: &sizes, configs: &configs, fixture: &fixture, projects: &projects };
    for round in 0..sizes.rounds {
        for k in 0..Env::ALL.len() {
            let env = Env::ALL[(round + k) % Env::ALL.len()];
            eprintln!(
                "safeclaw-bench: round {} of {}: {} ({:.0} s)",
                round + 1,
                sizes.rounds,
                env.label(),
                started.elapsed().as_secs_f64()
            );
            match env {
                Env::Baseline => bench.phase(round, env, &plain_cgroup, &mut results, &mut || Ok(0))?,
                Env::Auditd => {
                    auditd.enable()?;
                    bench.phase(round, env, &plain_cgroup, &mut results, &mut || {
                        Ok(auditd.settled_records())
                    })?;
                    auditd.disable()?;
                }
                Env::Fapolicyd => {
                    let daemon = fapolicyd.start()?;
                    bench.phase(round, env, &plain_cgroup, &mut results, &mut || Ok(0))?;
                    let decisions = daemon.stop()?;
                    results.fapolicyd.allowed += decisions.allowed;
                    results.fapolicyd.denied += decisions.denied;
                }
                Env::SafeClaw => bench.safeclaw_phase(round, &mut results, Stats::Off)?,
            }
        }
    }
    eprintln!(
        "safeclaw-bench: SafeClaw outside and inside the agent cgroup, in pairs with the baseline ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    let pairs = paired::run(&fixture, &sizes, &plain_cgroup)?;
    eprintln!(
        "safeclaw-bench: a kernel profile of {} opens, baseline, outside and inside ({:.0} s)",
        sizes.profile_opens,
        started.elapsed().as_secs_f64()
    );
    let profile = open_profile::run(&fixture, sizes.profile_opens, &plain_cgroup)?;
    // kernel.bpf_stats_enabled puts two clock reads and a counter update around every program run,
    // which a production host does not pay: the timed rounds run without it, and one more SafeClaw
    // phase, whose timings are dropped, counts the programs' runs and time on the same work.
    eprintln!(
        "safeclaw-bench: the SafeClaw phase again with bpf_stats ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    set_bpf_stats(true)?;
    let mut untimed = Results::empty(&configs, &sizes);
    bench.safeclaw_phase(sizes.rounds, &mut untimed, Stats::Read)?;
    set_bpf_stats(false)?;
    results.bpf_stats = untimed.bpf_stats;
    results.real_denials.extend(untimed.real_denials);
    results.auditd_lost = auditd.status_field("lost")?;
    auditd.stop()?;
    let mut bursts = Vec::new();
    for target in [burst::Target::SameFile, burst::Target::DistinctFiles(sizes.burst_files)] {
        eprintln!(
            "safeclaw-bench: burst of {} opens of {} ({:.0} s)",
            sizes.burst_opens,
            target.label(),
            started.elapsed().as_secs_f64()
        );
        bursts.push(burst::run(&fixture, sizes.burst_opens, target)?);
    }
    std::fs::remove_dir(&plain_cgroup).ok();

    report::print_evidence_summary(&configs, &results);
    println!("safeclaw-bench: results");
    report::print(&sizes, &configs, &results, &pairs, &bursts, fixture.placement)?;
    open_profile::print(&profile);
    println!("safeclaw-bench: complete");
    Ok(())
}

struct Bench<'a> {
    sizes: &'a Sizes,
    configs: &'a [Config],
    fixture: &'a Fixture,
    projects: &'a Projects,
}

impl Bench<'_> {
    /// The micro configurations of `env` and the real workloads (in `cgroup`), with nothing to prepare.
    fn phase(
        &self,
        round: usize,
        env: Env,
        cgroup: &Path,
        results: &mut Results,
        count: &mut dyn FnMut() -> anyhow::Result<u64>,
    ) -> anyhow::Result<()> {
        self.micro_phase(&self.indices(|c| c.env == env), round, results, &mut |_| Ok(None), count)?;
        self.real_phase(env, Some(cgroup), results, count)
    }

    /// Measures the configurations `indices` (order rotated by round): `prepare` readies one and returns
    /// the cgroup its processes enter, `count` reads the log's size.
    fn micro_phase(
        &self,
        indices: &[usize],
        round: usize,
        results: &mut Results,
        prepare: &mut dyn FnMut(&Config) -> anyhow::Result<Option<PathBuf>>,
        count: &mut dyn FnMut() -> anyhow::Result<u64>,
    ) -> anyhow::Result<()> {
        for k in 0..indices.len() {
            let index = indices[(round + k) % indices.len()];
            let config = &self.configs[index];
            let cgroup = prepare(config)?;
            let before = count()?;
            for (o, &op) in Op::ALL.iter().enumerate() {
                let timing = ops::measure(self.fixture, op, self.sizes.iterations(op), cgroup.as_deref())
                    .with_context(|| config.label())?;
                results.micro[index][o].push(timing);
            }
            results.logged[index].push(count()? - before);
        }
        Ok(())
    }

    fn real_phase(
        &self,
        env: Env,
        cgroup: Option<&Path>,
        results: &mut Results,
        count: &mut dyn FnMut() -> anyhow::Result<u64>,
    ) -> anyhow::Result<()> {
        let e = Env::ALL.iter().position(|&x| x == env).unwrap_or(0);
        for (w, &workload) in self.sizes.workloads.iter().enumerate() {
            let before = count()?;
            let seconds = self.projects.run(workload, cgroup).with_context(|| env.label())?;
            results.real[e][w].push(seconds);
            results.real_logged[e][w].push(count()? - before);
        }
        Ok(())
    }

    /// One daemon for all SafeClaw configurations, rotated together (a policy change is a SIGHUP
    /// reload, timed); then, back on the default policy, the real workloads and the launcher.
    fn safeclaw_phase(&self, round: usize, results: &mut Results, stats: Stats) -> anyhow::Result<()> {
        let daemon = safeclaw::start(Policy::Default, self.fixture)?;
        let mut count = || Ok(safeclaw::settled_count(&daemon));
        let mut current = Policy::Default;
        let mut reloads = Vec::new();
        let mut switch = |policy: Policy| -> anyhow::Result<()> {
            if policy != current {
                reloads.push((policy, safeclaw::reload(&daemon, policy, self.fixture)?));
                current = policy;
            }
            Ok(())
        };
        let mut prepare = |config: &Config| {
            switch(config.policy.unwrap_or(Policy::Default))?;
            Ok(config.inside.then(|| daemon.cgroup.clone()))
        };
        let all = self.indices(|c| c.env == Env::SafeClaw);
        self.micro_phase(&all, round, results, &mut prepare, &mut count)?;
        switch(Policy::Default)?;
        for (policy, seconds) in reloads {
            results.reloads.entry(policy).or_default().push(seconds);
        }
        let entries_before = safeclaw::entries(&daemon.audit_log).len();
        self.real_phase(Env::SafeClaw, Some(&daemon.cgroup), results, &mut count)?;
        let entries = safeclaw::entries(&daemon.audit_log);
        results.real_denials.extend(
            entries.iter().skip(entries_before).filter(|e| e["effect"] == "deny").map(|e| {
                let details = &e["requestDetails"];
                format!("{} {} ({})", e["action"], details["path"], details["comm"])
            }),
        );
        self.launcher(&daemon, results)?;
        if stats == Stats::Read {
            report::add_bpf_stats(&mut results.bpf_stats)?;
        }
        let status = daemon.terminate();
        if !status.success() {
            bail!("safeclaw-agent exited with {status}");
        }
        Ok(())
    }

    fn indices(&self, wanted: impl Fn(&Config) -> bool) -> Vec<usize> {
        (0..self.configs.len()).filter(|&i| wanted(&self.configs[i])).collect()
    }

    /// `safeclaw-agent exec --agent bench -- true` against plain `true`, launched from outside the cgroup.
    fn launcher(&self, daemon: &safeclaw_integration::Daemon, results: &mut Results) -> anyhow::Result<()> {
        let agent = safeclaw_integration::agent_bin();
        let socket = daemon.work().join("agent.sock");
        for _ in 0..self.sizes.launcher_runs {
            let mut launched = std::process::Command::new(&agent);
            launched
                .args(["exec", "--as-root", "--agent", "bench", "--cgroup", safeclaw::CGROUP, "--socket"])
                .arg(&socket)
                .arg("--")
                .arg(agent.with_file_name("true"));
            results.launcher.0.push(timed(launched)?);
            results.launcher.1.push(timed(std::process::Command::new(agent.with_file_name("true")))?);
        }
        Ok(())
    }
}

fn timed(mut command: std::process::Command) -> anyhow::Result<f64> {
    let start = std::time::Instant::now();
    let output = command.stdin(std::process::Stdio::null()).output().context("cannot run the launcher")?;
    let seconds = start.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!("{command:?} failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    Ok(seconds)
}

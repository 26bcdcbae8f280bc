//! The audit pipeline with the kernel in the loop: a burst of opens from 4 processes inside the agent
//! cgroup (of one file, or of many distinct files), how fast it became durable, whether every attempt
//! is accounted for, and the daemon's memory.
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::ops::{self, Fixture, Op, Work};
use crate::safeclaw::{self, Policy};

pub const PROCESSES: u32 = 4;

/// What the burst's processes open.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The one allowed file, over and over: what counting repeats in the kernel is for.
    SameFile,
    /// This many distinct allowed files, every process walking all of them in turn from its own
    /// starting point: a process opens a file again only after opening all the others, seconds later
    /// in a full run, so a repeat falls in another `audit.repeatWindow` and counting cannot help.
    DistinctFiles(u32),
}

impl Target {
    pub fn label(self) -> String {
        match self {
            Target::SameFile => "one allowed file".to_owned(),
            Target::DistinctFiles(n) => format!("{n} distinct allowed files"),
        }
    }
}

pub struct Burst {
    pub target: Target,
    pub attempts: u64,
    /// Opens that failed (the kernel denies what the ring buffer cannot take).
    pub failed: u64,
    /// Attempts the log accounts for: entries, plus the attempts an entry's `repeats` counts.
    pub recorded: u64,
    /// Entries written for the burst's attempts.
    pub entries: u64,
    /// Kernel events the daemon recorded as missing (`audit.gap`).
    pub gap_events: u64,
    /// Times the daemon paused the agents because the ring was half full, and for how long in all.
    pub pauses: u64,
    pub paused_ms: u64,
    /// Holes in the kernelSeq sequence of the log that no `audit.gap` entry covers.
    pub unexplained_seq_holes: u64,
    /// From the first open to the daemon's exit after SIGTERM (everything committed with fdatasync).
    pub durable_seconds: f64,
    pub idle_rss_kb: u64,
    pub peak_rss_kb: u64,
    /// The RSS by kind, at idle and after the burst: where growth came from.
    pub idle_split: safeclaw::RssSplit,
    pub after_split: safeclaw::RssSplit,
    /// Of the RSS at idle, the kB that are BPF map pages mapped into the daemon.
    pub idle_mapped_bpf_rss_kb: u64,
    /// Of the RSS after the burst, the kB that are BPF map pages mapped into the daemon (the ring).
    pub mapped_bpf_rss_kb: u64,
    pub bpf_map_bytes: u64,
    /// The daemon's most sampled symbols during the burst, or why there is no profile.
    pub profile: Result<crate::profile::Top, String>,
}

impl Burst {
    pub fn events_per_second(&self) -> f64 {
        self.recorded as f64 / self.durable_seconds
    }

    /// Attempts neither recorded nor denied.
    pub fn unaccounted(&self) -> u64 {
        self.attempts.saturating_sub(self.recorded).saturating_sub(self.failed.min(self.gap_events))
    }
}

pub fn run(fixture: &Fixture, opens: u64, target: Target) -> anyhow::Result<Burst> {
    let names = match target {
        Target::SameFile => Vec::new(),
        Target::DistinctFiles(count) => ops::distinct_files(fixture, count)?,
    };
    let daemon = safeclaw::start(Policy::Default, fixture)?;
    std::thread::sleep(Duration::from_secs(2));
    let idle_rss_kb = safeclaw::status_kb(daemon.pid(), "VmRSS")?;
    let idle_split = safeclaw::RssSplit::of(daemon.pid())?;
    let idle_mapped_bpf_rss_kb = safeclaw::mapped_bpf_rss_kb(daemon.pid())?;
    let bpf_map_bytes = safeclaw::bpf_map_bytes(daemon.pid())?;
    let per_process = u32::try_from(opens / u64::from(PROCESSES)).context("burst too large")?;
    let recording = crate::profile::Recording::attach(daemon.pid(), crate::profile::DAEMON_FREQUENCY);
    let start = Instant::now();
    let failures = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..PROCESSES)
            .map(|process| {
                let work = match target {
                    Target::SameFile => Work::Op(Op::OpenAllowed),
                    Target::DistinctFiles(_) => Work::OpenEach {
                        names: &names,
                        first: names.len() * process as usize / PROCESSES as usize,
                    },
                };
                let cgroup = &daemon.cgroup;
                scope.spawn(move || ops::measure_lenient(fixture, work, per_process, Some(cgroup)))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().map_err(|_| anyhow::anyhow!("burst worker panicked"))?.map(|t| t.failures))
            .sum::<anyhow::Result<u64>>()
    });
    let failed = failures?;
    let peak_rss_kb = safeclaw::status_kb(daemon.pid(), "VmHWM")?;
    let mapped_bpf_rss_kb = safeclaw::mapped_bpf_rss_kb(daemon.pid())?;
    let after_split = safeclaw::RssSplit::of(daemon.pid())?;
    let log = daemon.audit_log.clone();
    let status = daemon.terminate();
    let durable_seconds = start.elapsed().as_secs_f64();
    anyhow::ensure!(status.success(), "the daemon exited with {status} after the burst");
    let profile = recording
        .and_then(|r| r.finish(15, crate::profile::Sort::ObjectAndSymbol))
        .map_err(|e| format!("{e:#}"));
    // Streamed: a million parsed entries would not fit the guest's memory.
    let allowed = fixture.allowed_path();
    let distinct = format!("{}/distinct/", fixture.dir.display());
    let ours = |path: &str| match target {
        Target::SameFile => path == allowed,
        Target::DistinctFiles(_) => path.starts_with(&distinct),
    };
    let (mut recorded, mut entries, mut gap_events, mut seqs) = (0u64, 0u64, 0u64, Vec::new());
    let (mut pauses, mut paused_ms) = (0u64, 0u64);
    let file = std::fs::File::open(&log).with_context(|| format!("cannot open {}", log.display()))?;
    for line in std::io::BufRead::lines(std::io::BufReader::new(file)) {
        let entry: serde_json::Value = serde_json::from_str(&line?).context("a corrupt audit line")?;
        if entry["action"] == "file.read" && entry["requestDetails"]["path"].as_str().is_some_and(ours) {
            // An entry with `repeats` stands for that many identical attempts after a recorded one.
            recorded += entry["repeats"]["count"].as_u64().unwrap_or(1);
            entries += 1;
        }
        if entry["action"] == "audit.gap" {
            gap_events += entry["details"]["count"].as_u64().unwrap_or(0);
        }
        if entry["action"] == "daemon.agents_paused" {
            pauses += 1;
        }
        if entry["action"] == "daemon.agents_resumed" {
            paused_ms += entry["details"]["pausedMs"].as_u64().unwrap_or(0);
        }
        if let Some(seq) = entry["kernelSeq"].as_u64() {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    let holes: u64 = seqs.windows(2).map(|w| w[1].saturating_sub(w[0]).saturating_sub(1)).sum();
    Ok(Burst {
        target,
        attempts: u64::from(per_process) * u64::from(PROCESSES),
        failed,
        recorded,
        entries,
        gap_events,
        pauses,
        paused_ms,
        unexplained_seq_holes: holes.saturating_sub(gap_events),
        durable_seconds,
        idle_rss_kb,
        peak_rss_kb,
        idle_split,
        after_split,
        idle_mapped_bpf_rss_kb,
        mapped_bpf_rss_kb,
        bpf_map_bytes,
        profile,
    })
}

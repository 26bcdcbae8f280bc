//! The audit pipeline with the kernel in the loop: a burst of opens from 4 processes inside the agent
//! cgroup, how fast it became durable, whether every attempt is accounted for, and the daemon's memory.
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::ops::{self, Fixture, Op};
use crate::safeclaw::{self, Policy};

pub const PROCESSES: u32 = 4;

pub struct Burst {
    pub attempts: u64,
    /// Opens that failed (the kernel denies what the ring buffer cannot take).
    pub failed: u64,
    /// Attempts the log accounts for: entries, plus the attempts an entry's `repeats` counts.
    pub recorded: u64,
    /// Entries written for the burst's attempts.
    pub entries: u64,
    /// Kernel events the daemon recorded as missing (`audit.gap`).
    pub gap_events: u64,
    /// Holes in the kernelSeq sequence of the log that no `audit.gap` entry covers.
    pub unexplained_seq_holes: u64,
    /// From the first open to the daemon's exit after SIGTERM (everything committed with fdatasync).
    pub durable_seconds: f64,
    pub idle_rss_kb: u64,
    pub peak_rss_kb: u64,
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

pub fn run(fixture: &Fixture, opens: u64) -> anyhow::Result<Burst> {
    let daemon = safeclaw::start(Policy::Default, fixture)?;
    std::thread::sleep(Duration::from_secs(2));
    let idle_rss_kb = safeclaw::status_kb(daemon.pid(), "VmRSS")?;
    let bpf_map_bytes = safeclaw::bpf_map_bytes(daemon.pid())?;
    let per_process = u32::try_from(opens / u64::from(PROCESSES)).context("burst too large")?;
    let recording = crate::profile::Recording::attach(daemon.pid());
    let start = Instant::now();
    let failures = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..PROCESSES)
            .map(|_| {
                scope.spawn(|| {
                    ops::measure_lenient(fixture, Op::OpenAllowed, per_process, Some(&daemon.cgroup))
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().map_err(|_| anyhow::anyhow!("burst worker panicked"))?.map(|t| t.failures))
            .sum::<anyhow::Result<u64>>()
    });
    let failed = failures?;
    let peak_rss_kb = safeclaw::status_kb(daemon.pid(), "VmHWM")?;
    let log = daemon.audit_log.clone();
    let (status, _) = daemon.stop();
    let durable_seconds = start.elapsed().as_secs_f64();
    anyhow::ensure!(status.success(), "the daemon exited with {status} after the burst");
    let profile = recording.and_then(|r| r.finish(15)).map_err(|e| format!("{e:#}"));
    // Streamed: a million parsed entries would not fit the guest's memory.
    let allowed = fixture.allowed_path();
    let (mut recorded, mut entries, mut gap_events, mut seqs) = (0u64, 0u64, 0u64, Vec::new());
    let file = std::fs::File::open(&log).with_context(|| format!("cannot open {}", log.display()))?;
    for line in std::io::BufRead::lines(std::io::BufReader::new(file)) {
        let entry: serde_json::Value = serde_json::from_str(&line?).context("a corrupt audit line")?;
        if entry["action"] == "file.read" && entry["requestDetails"]["path"] == allowed.as_str() {
            // An entry with `repeats` stands for that many identical attempts after a recorded one.
            recorded += entry["repeats"]["count"].as_u64().unwrap_or(1);
            entries += 1;
        }
        if entry["action"] == "audit.gap" {
            gap_events += entry["details"]["count"].as_u64().unwrap_or(0);
        }
        if let Some(seq) = entry["kernelSeq"].as_u64() {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    let holes: u64 = seqs.windows(2).map(|w| w[1].saturating_sub(w[0]).saturating_sub(1)).sum();
    Ok(Burst {
        attempts: u64::from(per_process) * u64::from(PROCESSES),
        failed,
        recorded,
        entries,
        gap_events,
        unexplained_seq_holes: holes.saturating_sub(gap_events),
        durable_seconds,
        idle_rss_kb,
        peak_rss_kb,
        bpf_map_bytes,
        profile,
    })
}

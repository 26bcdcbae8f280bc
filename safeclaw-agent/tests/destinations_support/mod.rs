//! Helpers shared by the destination tests: a log written by the project's writer while the test runs,
//! the `audit deliver` process the tests kill, free loopback ports, and waiting with a deadline.
#![allow(dead_code)]

pub mod moto;
pub mod rsyslog;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use safeclaw_agent::audit::reader::{ChainEntry, ChainReader};
use safeclaw_agent::audit::segment::LogName;
use safeclaw_agent::audit::signing::HeadFile;
use safeclaw_agent::audit::synthetic::record;
use safeclaw_agent::audit::{AuditWriter, Lifecycle, WriterOptions};
use safeclaw_agent::destinations::status::Status;

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits up to `limit` for `ready`, panicking with `what` when it never happens.
pub fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A log directory (`log/audit.jsonl`, state in `state/`).
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        Workspace { dir: tempfile::tempdir().unwrap() }
    }

    pub fn active(&self) -> PathBuf {
        self.dir.path().join("log/audit.jsonl")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn config(&self, destinations_yaml: &str) -> PathBuf {
        let path = self.dir.path().join("config.yaml");
        std::fs::write(&path, format!("audit:\n  destinations:\n{destinations_yaml}")).unwrap();
        path
    }

    /// Writes `actions` synthetic attempts with the real writer on a thread (rotating every 4 MiB,
    /// compressed), committing every 500 of them; returns when asked through the handle.
    pub fn write_in_background(&self, actions: u64, pace: Duration) -> JoinHandle<()> {
        let mut opts = WriterOptions::new(&self.active()).with_state_dir(&self.state());
        opts.max_segment_bytes = Some(4 << 20);
        std::thread::spawn(move || {
            let mut writer = AuditWriter::open(opts).unwrap();
            writer.log(&Lifecycle::KernelSessionStart);
            for k in 0..actions {
                writer.append(&record(k));
                if k % 500 == 499 {
                    writer.commit().unwrap();
                    writer.tick().unwrap();
                    std::thread::sleep(pace);
                }
            }
            writer.close().unwrap();
        })
    }

    /// Entries the signed head covers.
    pub fn durable_end(&self) -> u64 {
        HeadFile::read(&self.state().join("audit.head")).unwrap().map_or(0, |h| h.size)
    }

    /// First sequence of the active segment: every rotated segment before it is sealed (what S3 takes).
    pub fn sealed_end(&self) -> u64 {
        let text = std::fs::read_to_string(self.active()).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        first["sequence"].as_u64().unwrap()
    }

    /// How many rotated (sealed) segments the log has.
    pub fn rotated(&self) -> usize {
        LogName::of_active(&self.active()).list().unwrap().iter().filter(|s| s.first_seq.is_some()).count()
    }

    /// Every durable entry, read back (and checked) with the shared reader.
    pub fn entries(&self) -> Vec<ChainEntry> {
        let end = self.durable_end();
        let mut reader = ChainReader::new(&self.active());
        let mut out = Vec::new();
        while (out.len() as u64) < end {
            let batch = reader.read(out.len() as u64, end, 10_000).unwrap();
            assert!(!batch.is_empty(), "the log ends at {} of {end}", out.len());
            out.extend(batch);
        }
        out
    }

    pub fn status(&self, name: &str) -> Status {
        Status::load(&self.state().join(format!("destinations/{name}.json"))).unwrap().unwrap_or_default()
    }
}

/// `safeclaw-agent audit deliver` for the workspace's log and `config`.
pub struct Deliverer {
    child: Option<Child>,
    args: Vec<String>,
    log: PathBuf,
}

impl Deliverer {
    pub fn start(workspace: &Workspace, config: &Path) -> Self {
        let args = vec![
            "audit".into(),
            "deliver".into(),
            "--config".into(),
            config.display().to_string(),
            "--audit-log".into(),
            workspace.active().display().to_string(),
            "--state-dir".into(),
            workspace.state().display().to_string(),
        ];
        let mut deliverer = Deliverer { child: None, args, log: workspace.dir.path().join("deliver.log") };
        deliverer.spawn();
        deliverer
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_safeclaw-agent"))
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL, as a crash would; then starts again.
    pub fn kill9_and_restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        self.spawn();
    }

    /// SIGTERM and wait: the clean stop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let status = child.wait().unwrap();
            assert!(status.success(), "audit deliver exited with {status}: {}", self.output());
        }
    }

    /// What the process wrote on standard error.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Deliverer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Checks the at-least-once contract on the sequences a receiver saw, in arrival order: every one of
/// `0..end` present, each either the next one or the restart of a re-sent range (so duplicates only come
/// from re-sending); returns how many times sending restarted.
pub fn assert_complete_in_order(received: &[u64], end: u64) -> usize {
    let runs = runs(received);
    eprintln!(
        "received {} entries of {end} in {} runs: {:?}",
        received.len(),
        runs.len(),
        &runs[..runs.len().min(20)]
    );
    let mut seen = vec![false; end as usize];
    let mut restarts = 0;
    let mut highest: Option<u64> = None;
    for (i, &sequence) in received.iter().enumerate() {
        assert!(sequence < end, "sequence {sequence} beyond the log's {end} entries");
        if i > 0 {
            let previous = received[i - 1];
            if sequence != previous + 1 {
                assert!(
                    sequence <= previous,
                    "gap in arrival order: {sequence} after {previous} (position {i})"
                );
                assert!(
                    highest.is_some_and(|h| sequence <= h) && seen[sequence as usize],
                    "{sequence} after {previous} is neither next nor a re-send of delivered entries"
                );
                restarts += 1;
            }
        } else {
            assert_eq!(sequence, 0, "the first entry received is not entry 0");
        }
        seen[sequence as usize] = true;
        highest = highest.max(Some(sequence));
    }
    let missing: Vec<usize> =
        seen.iter().enumerate().filter(|(_, s)| !**s).map(|(i, _)| i).take(10).collect();
    assert!(missing.is_empty(), "never received: {missing:?} (first 10)");
    restarts
}

/// Contiguous ranges of `sequences` in arrival order, for failure messages.
fn runs(sequences: &[u64]) -> Vec<std::ops::RangeInclusive<u64>> {
    let mut runs: Vec<std::ops::RangeInclusive<u64>> = Vec::new();
    for &s in sequences {
        match runs.last_mut() {
            Some(run) if *run.end() + 1 == s => *run = *run.start()..=s,
            _ => runs.push(s..=s),
        }
    }
    runs
}

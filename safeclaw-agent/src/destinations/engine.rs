//! The delivery engine: one thread per destination reads the chain back from the segments (the local log
//! is the queue), sends it in batches through the destination's transport, and moves a durable cursor,
//! retrying with exponential backoff and jitter. Nothing here can block the writer or enforcement.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::status::Status;
use crate::audit::clock::TimestampFormatter;
use crate::audit::reader::{ChainEntry, ChainReader, ReadError};
use crate::audit::segment::{Compression, LogName};
use crate::audit::signing::HeadFile;
use crate::audit::Lifecycle;

/// How a transport took a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// The receiver acknowledged it (an HTTP 2xx): delivered.
    Acknowledged,
    /// Written to a stream that has no acknowledgements (syslog over TCP or TLS): delivered once
    /// `Transport::confirmed` says so.
    Written,
    /// Sent as datagrams: nothing will ever confirm or refute it.
    Fired,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying (connection refused or reset, timeout, 5xx, 408, 429); `after` is the receiver's
    /// Retry-After.
    #[error("{reason}")]
    Retry { reason: String, after: Option<Duration> },
    /// The receiver refused the batch itself (e.g. HTTP 400): retried slowly, never skipped.
    #[error("{reason}")]
    Refused { reason: String },
}

impl SendError {
    pub fn retry(reason: impl Into<String>) -> Self {
        SendError::Retry { reason: reason.into(), after: None }
    }
}

/// What carries batches to one destination. Messages must never contain secrets.
pub trait Transport: Send {
    /// Where it sends, for status and logs, without secrets.
    fn target(&self) -> String;
    /// Most entries per `send`.
    fn batch_size(&self) -> usize;
    /// How long a partial batch may wait for more entries (zero: send what there is).
    fn flush_interval(&self) -> Duration {
        Duration::ZERO
    }
    fn send(&mut self, batch: &[ChainEntry]) -> Result<Sent, SendError>;
    /// For `Written` batches: the end (last sequence + 1) of the latest one now known to be delivered,
    /// if any became so. An error means the connection that carried them broke: the engine sends
    /// everything after its cursor again.
    fn confirmed(&mut self) -> Result<Option<u64>, SendError> {
        Ok(None)
    }
    /// Destinations that take whole sealed segments and the signed head instead of entry batches (S3):
    /// the worker hands them those, and the cursor is the end of the last segment confirmed stored.
    fn archive(&mut self) -> Option<&mut dyn Archive> {
        None
    }
}

/// What an archiving destination stores.
pub trait Archive {
    /// Stores one sealed rotated segment file of log `log_id`; Ok once the store confirmed it.
    fn upload_segment(&mut self, log_id: &str, segment: &Path) -> Result<(), SendError>;
    /// Stores the signed head file (`bytes`, as on disk).
    fn upload_head(&mut self, head: &HeadFile, bytes: Vec<u8>) -> Result<(), SendError>;
    /// What rotated segments are compressed with: a segment is sealed once it is.
    fn compression(&self) -> Compression;
    /// Least time between two puts of a moving head.
    fn head_interval(&self) -> Duration;
}

/// The rotated segment holding entry `cursor` or the first after it, if it is sealed (rotated, compressed
/// as configured, and followed by a segment whose first entry is known).
#[derive(Debug, PartialEq, Eq)]
struct Sealed {
    path: PathBuf,
    first: u64,
    end: u64,
}

fn next_sealed(active: &Path, cursor: u64, compression: Compression) -> std::io::Result<Option<Sealed>> {
    let segments = LogName::of_active(active).list()?;
    let rotated: Vec<(u64, &PathBuf, Compression)> =
        segments.iter().filter_map(|s| s.first_seq.map(|f| (f, &s.path, s.compression))).collect();
    // The segment holding `cursor` starts at or before it; else the first one after it.
    let index = rotated
        .iter()
        .rposition(|(first, _, _)| *first <= cursor)
        .or_else(|| rotated.iter().position(|(first, _, _)| *first > cursor));
    let Some(index) = index else { return Ok(None) };
    let (first, path, kind) = rotated[index];
    if compression != Compression::None && kind == Compression::None {
        return Ok(None);
    }
    let end = match rotated.get(index + 1) {
        Some((next, _, _)) => *next,
        None => match first_sequence(active)? {
            Some(next) => next,
            None => return Ok(None),
        },
    };
    if end <= cursor {
        return Ok(None);
    }
    Ok(Some(Sealed { path: path.clone(), first, end }))
}

/// The sequence of the first entry of the active segment, once it has one.
fn first_sequence(active: &Path) -> std::io::Result<Option<u64>> {
    use std::io::{BufRead, Read};
    let file = match std::fs::File::open(active) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut line = Vec::new();
    std::io::BufReader::new(file.take(1 << 20)).read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Ok(None);
    }
    let value: serde_json::Value = serde_json::from_slice(&line).map_err(std::io::Error::other)?;
    Ok(value["sequence"].as_u64())
}

/// Exponential backoff with full jitter between `BACKOFF_MIN` and `BACKOFF_MAX`.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Least wait before retrying a batch the receiver refused: slow, but a fixed receiver is noticed soon.
const REFUSED_RETRY: Duration = Duration::from_secs(10);
/// Longest Retry-After honoured: a receiver cannot park delivery for longer.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(600);

impl Backoff {
    /// The wait before the next attempt: a random time between half and all of min × 2^failures
    /// (capped), or the receiver's Retry-After when that is longer.
    pub fn next(&mut self, retry_after: Option<Duration>) -> Duration {
        let ceiling = BACKOFF_MIN.saturating_mul(1 << self.failures.min(16)).min(BACKOFF_MAX);
        self.failures = self.failures.saturating_add(1);
        let mut random = [0u8; 8];
        let fraction = match getrandom::fill(&mut random) {
            Ok(()) => u64::from_le_bytes(random) as f64 / u64::MAX as f64,
            Err(_) => 1.0,
        };
        let jittered = ceiling.mul_f64(0.5 + fraction / 2.0);
        retry_after.map_or(jittered, |after| after.min(RETRY_AFTER_MAX).max(jittered))
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Where a worker finds the log and how far it is durable.
#[derive(Clone, Debug)]
pub struct LogSource {
    pub active: PathBuf,
    /// The signed head: entries below its `size` are durable and signed, and only those are sent.
    pub head: PathBuf,
}

impl LogSource {
    /// Entries `0 .. end` are durable; 0 before the first commit.
    pub fn durable_end(&self) -> Result<u64, String> {
        match HeadFile::read(&self.head) {
            Ok(head) => Ok(head.map_or(0, |h| h.size)),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Whether a destination is failing, as the daemon records it in the chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Failing {
    pub since: String,
    pub error: String,
}

/// What a worker shares with the daemon.
#[derive(Debug, Default)]
struct Shared {
    failing: Mutex<Option<Failing>>,
}

/// How often an idle worker looks for new entries.
const POLL: Duration = Duration::from_millis(50);

struct Worker {
    name: String,
    transport: Box<dyn Transport>,
    source: LogSource,
    status_path: PathBuf,
    status: Status,
    reader: ChainReader,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    clock: TimestampFormatter,
}

impl Worker {
    fn now(&mut self) -> String {
        self.clock.format(SystemTime::now())
    }

    fn save(&mut self) {
        if let Err(e) = self.status.save(&self.status_path) {
            tracing::warn!(destination = %self.name, error = %e, "cannot save the destination's cursor");
        }
    }

    /// Sleeps up to `duration`, waking early when asked to stop; false when stopping.
    fn sleep(&self, duration: Duration) -> bool {
        let until = Instant::now() + duration;
        while !self.stop.load(Ordering::Relaxed) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(POLL));
        }
        false
    }

    fn failed(&mut self, error: &SendError) {
        let now = self.now();
        let reason = error.to_string();
        if self.status.failing_since.is_none() {
            tracing::warn!(destination = %self.name, error = %reason, "audit destination failing");
            self.status.failing_since = Some(now.clone());
        }
        self.status.stuck = matches!(error, SendError::Refused { .. });
        self.status.last_error = Some(reason.clone());
        self.status.last_error_time = Some(now);
        let since = self.status.failing_since.clone().unwrap_or_default();
        if let Ok(mut failing) = self.shared.failing.lock() {
            *failing = Some(Failing { since, error: reason });
        }
        self.save();
    }

    fn delivered(&mut self, end: u64) {
        self.status.delivered = end;
        self.status.last_success = Some(self.now());
        if self.status.failing_since.take().is_some() {
            tracing::info!(destination = %self.name, "audit destination delivering again");
        }
        self.status.stuck = false;
        if let Ok(mut failing) = self.shared.failing.lock() {
            *failing = None;
        }
        self.save();
    }

    /// Archiving destinations: each sealed segment after the cursor in turn, and the head as it moves.
    fn run_archive(mut self) {
        let mut backoff = Backoff::default();
        // The head last put: its size and when.
        let mut head_put: Option<(u64, Instant)> = None;
        while !self.stop.load(Ordering::Relaxed) {
            let Some(archive) = self.transport.archive() else { return };
            let (compression, head_interval) = (archive.compression(), archive.head_interval());
            let head_bytes = match std::fs::read(&self.source.head) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.sleep(POLL * 10);
                    continue;
                }
                Err(e) => {
                    self.failed(&SendError::retry(format!("cannot read the signed head: {e}")));
                    self.sleep(backoff.next(None));
                    continue;
                }
            };
            let head: HeadFile = match serde_json::from_slice(&head_bytes) {
                Ok(head) => head,
                Err(e) => {
                    // Replaced atomically by the writer: a bad one is not a half-written one.
                    self.failed(&SendError::retry(format!("the signed head is unreadable: {e}")));
                    self.sleep(backoff.next(None));
                    continue;
                }
            };
            let cursor = self.status.delivered;
            // A moving head goes first once per interval, so a backlog of segments cannot hold it back.
            let head_due =
                head_put.is_none_or(|(size, at)| size != head.size && at.elapsed() >= head_interval);
            let sealed =
                if head_due { Ok(None) } else { next_sealed(&self.source.active, cursor, compression) };
            let outcome = match sealed {
                Ok(Some(sealed)) if sealed.first > cursor => {
                    let reason = format!(
                        "entries {cursor}..{} were deleted by retention before delivery",
                        sealed.first - 1
                    );
                    tracing::error!(destination = %self.name, "{reason}");
                    self.status.lost_to_retention += sealed.first - cursor;
                    self.status.last_error = Some(reason);
                    self.status.delivered = sealed.first;
                    self.save();
                    continue;
                }
                Ok(Some(sealed)) => {
                    let Some(archive) = self.transport.archive() else { return };
                    archive.upload_segment(&head.log_id, &sealed.path).map(|()| Some(sealed.end))
                }
                Ok(None) if head_due => {
                    let Some(archive) = self.transport.archive() else { return };
                    let size = head.size;
                    archive.upload_head(&head, head_bytes).map(|()| {
                        head_put = Some((size, Instant::now()));
                        None
                    })
                }
                Ok(None) => {
                    self.sleep(POLL * 4);
                    continue;
                }
                Err(e) => Err(SendError::retry(format!("cannot list the log's segments: {e}"))),
            };
            match outcome {
                Ok(Some(end)) => {
                    self.delivered(end);
                    backoff.reset();
                }
                Ok(None) => {
                    if self.status.failing_since.is_some() {
                        let end = self.status.delivered;
                        self.delivered(end);
                    }
                    backoff.reset();
                }
                Err(e) => {
                    let after = matches!(e, SendError::Refused { .. }).then_some(REFUSED_RETRY);
                    self.failed(&e);
                    let wait = backoff.next(after);
                    self.sleep(wait);
                }
            }
        }
    }

    fn run(mut self) {
        lower_priority(&self.name);
        if self.transport.archive().is_some() {
            return self.run_archive();
        }
        let mut backoff = Backoff::default();
        let mut next = self.status.delivered;
        let mut waiting_since: Option<Instant> = None;
        while !self.stop.load(Ordering::Relaxed) {
            if next > self.status.delivered {
                match self.transport.confirmed() {
                    Ok(Some(end)) => {
                        self.delivered(end);
                        backoff.reset();
                    }
                    Ok(None) => {}
                    Err(e) => {
                        next = self.status.delivered;
                        self.failed(&e);
                        let wait = backoff.next(None);
                        self.sleep(wait);
                        continue;
                    }
                }
            }
            let end = match self.source.durable_end() {
                Ok(end) => end,
                Err(e) => {
                    self.failed(&SendError::retry(format!("cannot read the signed head: {e}")));
                    self.sleep(backoff.next(None));
                    continue;
                }
            };
            let batch_size = self.transport.batch_size();
            let available = end.saturating_sub(next);
            if available == 0 {
                waiting_since = None;
                self.sleep(POLL);
                continue;
            }
            if (available as usize) < batch_size {
                let first_seen = *waiting_since.get_or_insert_with(Instant::now);
                if first_seen.elapsed() < self.transport.flush_interval() {
                    self.sleep(POLL);
                    continue;
                }
            }
            let batch = match self.reader.read(next, end, batch_size) {
                Ok(batch) => batch,
                Err(ReadError::Deleted { wanted, first_available }) => {
                    // Retention removed them before they left the host: nothing can send them now.
                    let lost = first_available - wanted;
                    self.status.lost_to_retention += lost;
                    let reason = format!(
                        "entries {wanted}..{} were deleted by retention before delivery",
                        first_available - 1
                    );
                    tracing::error!(destination = %self.name, "{reason}");
                    self.status.last_error = Some(reason);
                    next = first_available;
                    self.status.delivered = first_available;
                    self.save();
                    continue;
                }
                Err(e) => {
                    self.failed(&SendError::retry(format!("cannot read the log: {e}")));
                    self.sleep(BACKOFF_MAX);
                    continue;
                }
            };
            let Some(last) = batch.last() else {
                self.sleep(POLL);
                continue;
            };
            let batch_end = last.sequence + 1;
            waiting_since = None;
            match self.transport.send(&batch) {
                Ok(Sent::Acknowledged | Sent::Fired) => {
                    next = batch_end;
                    self.delivered(batch_end);
                    backoff.reset();
                }
                Ok(Sent::Written) => next = batch_end,
                Err(e) => {
                    next = self.status.delivered;
                    let after = match &e {
                        SendError::Retry { after, .. } => *after,
                        SendError::Refused { .. } => Some(REFUSED_RETRY),
                    };
                    self.failed(&e);
                    let wait = backoff.next(after);
                    self.sleep(wait);
                }
            }
        }
        // Stopping: what was written counts only if it is confirmed by now.
        if next > self.status.delivered {
            if let Ok(Some(end)) = self.transport.confirmed() {
                self.delivered(end);
            }
        }
    }
}

/// Nice value of delivery threads: on a host short of CPU they yield to the writer and enforcement
/// (delivery only falls behind, and catches up from its cursor), instead of taking their share.
const DELIVERY_NICE: libc::c_int = 10;

/// Lowers the calling thread's priority to `DELIVERY_NICE` (Linux: nice is per thread).
fn lower_priority(name: &str) {
    // SAFETY: gettid and setpriority take and return plain integers.
    let tid = unsafe { libc::gettid() };
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, DELIVERY_NICE) } != 0 {
        let error = std::io::Error::last_os_error();
        tracing::debug!(destination = %name, %error, "cannot lower the delivery thread's priority");
    }
}

/// One configured destination, ready to start.
pub struct Destination {
    pub name: String,
    pub transport: Box<dyn Transport>,
}

/// The running workers, and what the daemon has recorded of their failures.
pub struct Deliveries {
    stop: Arc<AtomicBool>,
    workers: Vec<Running>,
}

struct Running {
    name: String,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    /// The failing state last recorded in the chain, and when.
    recorded: Option<Failing>,
    recorded_at: Option<Instant>,
}

/// Least time between two chain entries about one destination: a flapping receiver cannot flood the log.
pub const EVIDENCE_INTERVAL: Duration = Duration::from_secs(60);

impl Deliveries {
    /// Starts one thread per destination; cursors live in `state_dir`.
    pub fn start(
        destinations: Vec<Destination>,
        source: &LogSource,
        state_dir: &Path,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for destination in destinations {
            let status_path = super::config::status_path(state_dir, &destination.name);
            let saved = Status::load(&status_path).map_err(|e| std::io::Error::other(e.to_string()))?;
            let mut status = saved.unwrap_or_default();
            status.target = destination.transport.target();
            let shared = Arc::new(Shared::default());
            let worker = Worker {
                name: destination.name.clone(),
                transport: destination.transport,
                source: source.clone(),
                status_path,
                status,
                reader: ChainReader::new(&source.active),
                stop: Arc::clone(&stop),
                shared: Arc::clone(&shared),
                clock: TimestampFormatter::default(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("deliver-{}", destination.name))
                .spawn(move || worker.run())?;
            workers.push(Running {
                name: destination.name,
                thread: Some(thread),
                shared,
                recorded: None,
                recorded_at: None,
            });
        }
        Ok(Deliveries { stop, workers })
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Chain entries for destinations that started or stopped failing since last recorded, at most one
    /// per destination per `EVIDENCE_INTERVAL` (the latest state wins, so the chain always catches up).
    pub fn evidence(&mut self) -> Vec<Lifecycle> {
        let mut out = Vec::new();
        for worker in &mut self.workers {
            let now = worker.shared.failing.lock().map(|f| f.clone()).unwrap_or_default();
            let changed = now.is_some() != worker.recorded.is_some();
            let allowed = worker.recorded_at.is_none_or(|at| at.elapsed() >= EVIDENCE_INTERVAL);
            if !changed || !allowed {
                continue;
            }
            out.push(match &now {
                Some(failing) => Lifecycle::DestinationFailing {
                    destination: worker.name.clone(),
                    error: failing.error.clone(),
                    since: failing.since.clone(),
                },
                None => Lifecycle::DestinationRecovered {
                    destination: worker.name.clone(),
                    failing_since: worker.recorded.as_ref().map(|f| f.since.clone()).unwrap_or_default(),
                },
            });
            worker.recorded = now;
            worker.recorded_at = Some(Instant::now());
        }
        out
    }

    /// Asks every worker to stop and waits for them (each finishes or abandons its batch in flight).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take() {
                if thread.join().is_err() {
                    tracing::warn!(destination = %worker.name, "delivery thread panicked");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::synthetic::record;
    use crate::audit::{AuditWriter, WriterOptions};
    use std::sync::atomic::AtomicUsize;

    /// Refuses connections `failures` times, then acknowledges everything, keeping what it got.
    struct Flaky {
        failures: Arc<AtomicUsize>,
        got: Arc<Mutex<Vec<u64>>>,
    }

    impl Transport for Flaky {
        fn target(&self) -> String {
            "flaky".into()
        }
        fn batch_size(&self) -> usize {
            7
        }
        fn send(&mut self, batch: &[ChainEntry]) -> Result<Sent, SendError> {
            if self.failures.load(Ordering::SeqCst) > 0 {
                self.failures.fetch_sub(1, Ordering::SeqCst);
                return Err(SendError::retry("connection refused"));
            }
            self.got.lock().unwrap().extend(batch.iter().map(|e| e.sequence));
            Ok(Sent::Acknowledged)
        }
    }

    #[test]
    fn failing_destination_is_recorded_once_then_delivers_everything_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let active = dir.path().join("log/audit.jsonl");
        let state = dir.path().join("state");
        let mut writer = AuditWriter::open(WriterOptions::new(&active).with_state_dir(&state)).unwrap();
        for k in 0..100 {
            writer.append(&record(k));
        }
        writer.close().unwrap();
        let source = LogSource { active, head: state.join("audit.head") };
        let end = source.durable_end().unwrap();
        let failures = Arc::new(AtomicUsize::new(3));
        let got = Arc::new(Mutex::new(Vec::new()));
        let transport = Flaky { failures: Arc::clone(&failures), got: Arc::clone(&got) };
        let destination = Destination { name: "flaky".into(), transport: Box::new(transport) };
        let mut deliveries = Deliveries::start(vec![destination], &source, &state).unwrap();
        let status_path = super::super::config::status_path(&state, "flaky");
        let start = Instant::now();
        let mut evidence = Vec::new();
        while Status::load(&status_path).unwrap().is_none_or(|s| s.delivered < end) {
            assert!(start.elapsed() < Duration::from_secs(30), "not delivered");
            evidence.extend(deliveries.evidence());
            std::thread::sleep(Duration::from_millis(20));
        }
        evidence.extend(deliveries.evidence());
        deliveries.stop();
        assert_eq!(*got.lock().unwrap(), (0..end).collect::<Vec<_>>());
        // One entry for the failure; its recovery waits for the rate limit.
        assert!(
            matches!(evidence.as_slice(), [Lifecycle::DestinationFailing { destination, error, .. }]
                if destination == "flaky" && error == "connection refused"),
            "{evidence:?}"
        );
        let status = Status::load(&status_path).unwrap().unwrap();
        assert!(
            status.failing_since.is_none() && status.last_error.is_some() && status.last_success.is_some()
        );
    }

    #[test]
    fn delivery_threads_run_at_a_lower_priority_than_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let source =
            LogSource { active: dir.path().join("log/audit.jsonl"), head: dir.path().join("audit.head") };
        let transport = Flaky { failures: Arc::new(AtomicUsize::new(0)), got: Arc::default() };
        let destination = Destination { name: "nice".into(), transport: Box::new(transport) };
        let deliveries = Deliveries::start(vec![destination], &source, dir.path()).unwrap();
        // The thread's nice value: field 19 of its stat, the 17th after the parenthesised name.
        let nice_of_worker = || {
            std::fs::read_dir("/proc/self/task").unwrap().flatten().find_map(|task| {
                let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
                (comm.trim() == "deliver-nice").then_some(())?;
                let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
                stat.rsplit_once(')')?.1.split_whitespace().nth(16)?.parse::<i32>().ok()
            })
        };
        let start = Instant::now();
        while nice_of_worker() != Some(DELIVERY_NICE) {
            assert!(start.elapsed() < Duration::from_secs(10), "nice {:?}", nice_of_worker());
            std::thread::sleep(Duration::from_millis(10));
        }
        deliveries.stop();
    }

    #[test]
    fn backoff_grows_with_jitter_and_honours_retry_after() {
        let mut backoff = Backoff::default();
        let first = backoff.next(None);
        assert!(first >= BACKOFF_MIN / 2 && first <= BACKOFF_MIN, "{first:?}");
        let waits: Vec<Duration> = (0..20).map(|_| backoff.next(None)).collect();
        assert!(waits.iter().all(|w| *w <= BACKOFF_MAX));
        assert!(waits[19] >= BACKOFF_MAX / 2, "{waits:?}");
        assert_eq!(backoff.next(Some(Duration::from_secs(3600))), RETRY_AFTER_MAX);
        backoff.reset();
        assert!(backoff.next(Some(Duration::from_secs(2))) == Duration::from_secs(2));
    }
}

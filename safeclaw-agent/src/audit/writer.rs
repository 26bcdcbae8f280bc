//! The durable writer: turns records into sealed, chained entries, group-commits them with fsync, signs
//! checkpoints and the head file, rotates and compresses segments, deletes expired ones, and reports its
//! health so that the daemon can fail closed.
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::chain::{hex_string, seal_in_place, Digest, GENESIS};
use super::clock::{TimestampFormatter, TIMESTAMP_LEN};
use super::committer::{Committer, Job, Outcome};
use super::durable;
use super::entry::{
    write_action, write_lifecycle, write_writer_event, ActionRecord, FieldSet, Header, Lifecycle, WriterEvent,
};
use super::recover::{check_head, non_empty, scan, HeadCheck, SegmentEnd};
use super::redact::Redactor;
use super::retention::{expired, RetentionRule};
use super::segment::{self, Compression, LogName, Segment};
use super::sequence::{Arrival, KernelSeqs};
use super::signing::{
    AuditKey, HeadError, HeadFile, HeadStatement, KeyError, PublicKey, HEAD_REASON, KEY_ROTATION,
};
use crate::policy::compiled::Effect;

/// What to do while the log cannot be written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailureMode {
    /// Deny every agent action (the daemon puts the kernel in lockdown) until writing works again.
    #[default]
    FailClosed,
    /// Keep enforcing the policy and count what could not be recorded.
    EnforceAndCount,
}

impl FailureMode {
    fn as_str(self) -> &'static str {
        match self {
            FailureMode::FailClosed => "failClosed",
            FailureMode::EnforceAndCount => "enforceAndCount",
        }
    }
}

/// Everything the writer needs; `WriterOptions::new` gives the defaults for one log path.
pub struct WriterOptions {
    /// The active segment; rotated ones go beside it.
    pub log_path: PathBuf,
    pub key_path: PathBuf,
    pub head_path: PathBuf,
    pub fields: FieldSet,
    pub redactor: Redactor,
    /// Longest time an appended entry waits for its fsync.
    pub commit_interval: Duration,
    /// A checkpoint after this many entries…
    pub checkpoint_every: u64,
    /// …or this long after the previous one, whichever comes first.
    pub checkpoint_interval: Duration,
    /// Rotate once the active segment reaches this size.
    pub max_segment_bytes: Option<u64>,
    pub compression: Compression,
    pub retention: Option<RetentionRule>,
    /// With `rotation.archiveTo`: how far the archive has stored the log (read with the state directory);
    /// retention deletes only segments wholly before it.
    pub archived: Option<ArchivedThrough>,
    pub on_failure: FailureMode,
    /// Entries kept in memory while the log cannot be written; beyond this, attempts are counted only.
    pub max_buffered_bytes: usize,
    /// A commit starts early once this many bytes are pending (after the one in flight ends), so that a
    /// burst cannot grow the daemon's memory: what waits meanwhile stays in the kernel's ring buffer.
    pub max_batch_bytes: usize,
    /// How long a kernel sequence number may be missing, once later ones arrived, before it is recorded
    /// as lost (events of different CPUs arrive out of order).
    pub gap_wait: Duration,
}

/// Entries `0 .. n` are archived off the host, given the state directory.
pub type ArchivedThrough = std::sync::Arc<dyn Fn(&Path) -> u64 + Send + Sync>;

/// Default `max_batch_bytes`: about 3,000 entries. The daemon holds up to three batches (the one
/// pending, the one in flight, the spare buffer), so this bounds what a burst adds to its heap to about
/// 6 MiB; 8 MiB let the distinct-file burst grow the heap by 22 MB.
pub const MAX_BATCH_BYTES: usize = 2 << 20;

impl WriterOptions {
    /// Defaults: key and head under `/var/lib/safeclaw`, every field, built-in redaction, 100 ms group
    /// commit, a checkpoint every 10,000 entries or 60 s, no rotation, fail closed.
    pub fn new(log_path: &Path) -> Self {
        WriterOptions {
            log_path: log_path.to_owned(),
            key_path: PathBuf::from(super::DEFAULT_KEY),
            head_path: PathBuf::from(super::DEFAULT_HEAD),
            fields: FieldSet::ALL,
            redactor: Redactor::builtin(),
            commit_interval: Duration::from_millis(100),
            checkpoint_every: 10_000,
            checkpoint_interval: Duration::from_secs(60),
            max_segment_bytes: None,
            compression: Compression::Zstd,
            retention: None,
            archived: None,
            on_failure: FailureMode::FailClosed,
            max_buffered_bytes: 64 << 20,
            max_batch_bytes: MAX_BATCH_BYTES,
            gap_wait: super::sequence::HOLE_WAIT,
        }
    }

    /// Key and head file in `state_dir` instead of `/var/lib/safeclaw` (tests, private deployments).
    pub fn with_state_dir(mut self, state_dir: &Path) -> Self {
        self.key_path = state_dir.join("audit.key");
        self.head_path = state_dir.join("audit.head");
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Head(#[from] HeadError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "the audit key {key} is missing but the log {log} exists: a new key would sign a log it did not \
         start. Restore the key from its backup, or move the log aside to start a new one"
    )]
    KeyLost { key: PathBuf, log: PathBuf },
    #[error(
        "the audit key {key} ({file_key}) is not the key that signs the log {log} ({log_key}): restore \
         that key, or change keys with `safeclaw-agent audit rotate-key`, which records the new key signed \
         by the old"
    )]
    KeyMismatch { key: PathBuf, log: PathBuf, file_key: Digest, log_key: Digest },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> AuditError + '_ {
    move |source| AuditError::Io { path: path.to_owned(), source }
}

/// Whether the log is being written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// Writing has failed since `since`; entries wait in memory (up to the configured bound).
    Failing {
        since: SystemTime,
        error: String,
    },
}

/// How far the log is durable: everything appended up to these numbers survives a crash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    /// Highest durable entry sequence.
    pub sequence: Option<u64>,
    /// Highest durable kernel sequence of the current kernel session: ring-buffer events up to it may go.
    pub kernel_seq: Option<u64>,
}

/// What `append` and `log` did with an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// In the commit buffer with this sequence number.
    Buffered { sequence: u64 },
    /// Writing is failing and the buffer is full: only counted (reported when writing recovers).
    Dropped,
    /// The log already holds this event: a restarted daemon reads again what its predecessor recorded
    /// but had not yet released from the ring.
    AlreadyRecorded,
}

/// What opening found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Sequence the next entry gets.
    pub next_sequence: u64,
    /// Kernel sequence of the last recorded event of the current kernel session.
    pub last_kernel_seq: Option<u64>,
    /// Bytes of an interrupted write that were cut off.
    pub discarded_bytes: u64,
    /// Set when the log does not agree with the head file (the entry that says so is in the log).
    pub tamper: Option<&'static str>,
    /// The first attempts (kernel sequences) of the current kernel session whose counted repeats the
    /// log holds, as far back as the writer read it.
    pub repeats_recorded: Vec<u64>,
}

#[derive(Default)]
struct FailureCounts {
    recorded: u64,
    dropped: u64,
    denied: u64,
    allowed: u64,
}

pub struct AuditWriter {
    /// Held while the writer lives: one writer per log.
    _lock: nix::fcntl::Flock<File>,
    opts: WriterOptions,
    name: LogName,
    key: AuditKey,
    key_id: Digest,
    log_id: String,
    committer: Committer,
    /// The batch the commit thread is writing.
    in_flight: Option<InFlight>,
    /// An emptied batch buffer, reused for the next one.
    spare: Vec<u8>,
    /// File length after the last successful fsync: a failed commit is rewritten from here.
    durable_len: u64,
    segment_first_seq: u64,
    chain: Chain,
    pending_kernel_seq: Option<u64>,
    /// Counts kernel sessions, so that a commit finishing after a new session began does not report the
    /// old session's kernel sequence as durable.
    kernel_session: u64,
    /// Which kernel sequences arrived, and which are missing.
    kernel_seqs: KernelSeqs,
    durable: Durable,
    last_checkpoint: Instant,
    /// Timestamp of the last checkpoint: one dated earlier is preceded by an `audit.clock_step` entry.
    last_checkpoint_time: Option<String>,
    last_retention: Option<Instant>,
    /// What the last retention round this writer made accounts for: (`coveredFrom`, last deleted).
    retention_coverage: Option<(u64, u64)>,
    timestamps: TimestampFormatter,
    health: Health,
    failure: FailureCounts,
    compressing: Vec<JoinHandle<io::Result<PathBuf>>>,
    recovered: Recovered,
}

/// What a batch in flight makes durable once written.
struct InFlight {
    mark: Durable,
    kernel_session: u64,
}

/// How often retention is checked besides at each rotation.
const RETENTION_PERIOD: Duration = Duration::from_secs(3600);

impl AuditWriter {
    /// Opens (or creates) the log, its key and head file, and continues the chain from the last durable
    /// entry. Whatever recovery found (a cut-off write, a log that does not reach its signed head) is
    /// recorded as an entry and committed before this returns.
    pub fn open(opts: WriterOptions) -> Result<Self, AuditError> {
        let name = LogName::of_active(&opts.log_path);
        let log_dir = durable::parent_of(&opts.log_path).to_owned();
        durable::create_private_dir(&log_dir).map_err(io_at(&log_dir))?;
        let lock = lock_log_dir(&log_dir)?;
        segment::remove_leftovers(&name).map_err(io_at(&log_dir))?;
        let head = HeadFile::read(&opts.head_path);
        let segments = name.list().map_err(io_at(&log_dir))?;
        let probe = head.as_ref().ok().and_then(Option::as_ref).and_then(|h| h.size.checked_sub(1));
        let active = name.active();
        let last_segment = segments.iter().rev().find(|s| non_empty(&s.path));
        let mut end = match last_segment {
            Some(s) => scan(s, probe).map_err(io_at(&s.path))?,
            None => SegmentEnd::default(),
        };
        // Rotated shortly before a crash: the ring records not yet released may be in earlier segments,
        // and so may the open holes of the kernel session. Small segments may take several.
        let last_path = last_segment.map(|s| s.path.as_path());
        let mut earlier = segments
            .iter()
            .rev()
            .skip_while(|s| Some(s.path.as_path()) != last_path)
            .skip(1)
            .filter(|s| non_empty(&s.path));
        while end.wants_earlier() {
            let Some(previous) = earlier.next() else { break };
            let before = scan(previous, None).map_err(io_at(&previous.path))?;
            end.inherit(&before);
            if end.session.wants_earlier() {
                end.session.follow(before.session);
            }
        }
        let key = log_key(&opts.key_path, &opts.log_path, last_segment.is_some(), end.key_id)?;
        let active_end = if last_segment.is_some_and(|s| s.path == active) { Some(&end) } else { None };
        if let Some(e) = active_end.filter(|e| e.partial_len > 0) {
            // An interrupted write: never committed, so never acknowledged. Cut it off.
            let file = OpenOptions::new().write(true).open(&active).map_err(io_at(&active))?;
            file.set_len(e.complete_len).and_then(|()| file.sync_all()).map_err(io_at(&active))?;
        }
        let file = open_active(&active)?;
        let durable_len = file.metadata().map_err(io_at(&active))?.len();
        let committer = Committer::start(file, opts.head_path.clone()).map_err(io_at(&active))?;
        let key_id = key.public().key_id();
        let (log_id, next_seq, prev) = match (&end.last, &end.log_id) {
            (Some((seq, hash)), Some(log_id)) => (log_id.clone(), seq + 1, *hash),
            _ => (new_log_id(&log_dir)?, 0, GENESIS),
        };
        if next_seq == 0 && matches!(head, Ok(None)) {
            // A head before the first entry, so that a crash between the first commit and its head file
            // cannot look like a deleted head (`audit.head_missing`) at the next start.
            let time = TimestampFormatter::default().format(SystemTime::now());
            let statement = HeadStatement {
                log_id: &log_id,
                key_id,
                size: 0,
                head: GENESIS,
                time: &time,
                reason: HEAD_REASON,
            };
            HeadFile::signed(&key, statement).write(&opts.head_path).map_err(io_at(&opts.head_path))?;
        }
        let segment_first_seq = active_end.and_then(|e| e.first_sequence).unwrap_or(next_seq);
        let mut writer = AuditWriter {
            _lock: lock,
            name,
            key,
            key_id,
            log_id,
            committer,
            in_flight: None,
            spare: Vec::new(),
            durable_len,
            segment_first_seq,
            chain: Chain {
                next_seq,
                prev,
                pending: Vec::with_capacity(1 << 20),
                pending_since: None,
                pending_last: None,
                since_checkpoint: end.since_checkpoint,
            },
            pending_kernel_seq: None,
            kernel_session: 0,
            kernel_seqs: KernelSeqs::resume(&end.session, end.last_kernel_seq, opts.gap_wait),
            durable: Durable { sequence: next_seq.checked_sub(1), kernel_seq: end.last_kernel_seq },
            last_checkpoint: Instant::now(),
            last_checkpoint_time: end.last_checkpoint_time.clone(),
            last_retention: None,
            retention_coverage: None,
            timestamps: TimestampFormatter::default(),
            health: Health::Ok,
            failure: FailureCounts::default(),
            compressing: Vec::new(),
            recovered: Recovered {
                next_sequence: next_seq,
                last_kernel_seq: end.last_kernel_seq,
                discarded_bytes: active_end.map_or(0, |e| e.partial_len),
                tamper: None,
                repeats_recorded: end.session.repeats_of.iter().copied().collect(),
            },
            opts,
        };
        let continues_rotated = active_end.is_none() && next_seq > 0;
        writer.record_recovery(head, &end)?;
        if continues_rotated {
            // The newest segment was rotated out before a crash: this one continues it.
            writer.push_event(WriterEvent::SegmentStart {
                log_id: writer.log_id.clone(),
                last_kernel_seq: end.last_kernel_seq,
            });
        }
        writer.resume_compression(&segments);
        writer.commit()?;
        Ok(writer)
    }

    fn record_recovery(
        &mut self,
        head: Result<Option<HeadFile>, HeadError>,
        end: &SegmentEnd,
    ) -> Result<(), AuditError> {
        if self.chain.next_seq == 0 {
            let public_key = self.key.public().to_text();
            self.push_event(WriterEvent::LogStart { log_id: self.log_id.clone(), public_key });
        }
        if self.recovered.discarded_bytes > 0 {
            self.push_event(WriterEvent::CrashRecovered { discarded_bytes: self.recovered.discarded_bytes });
        }
        let found_size = end.last.map_or(0, |(seq, _)| seq + 1);
        let head = match head {
            Ok(head) => head,
            Err(HeadError::Malformed { .. }) => {
                self.tamper("head_unreadable", 0, GENESIS, found_size);
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        if end.corrupt_lines > 0 {
            self.tamper("corrupt_entry", 0, GENESIS, found_size);
        }
        let log_id = end.log_id.as_deref();
        match check_head(head.as_ref(), log_id, end, found_size) {
            HeadCheck::Consistent => {}
            HeadCheck::Missing if found_size == 0 => {}
            HeadCheck::Missing => {
                tracing::error!(
                    head = %self.opts.head_path.display(),
                    entries = found_size,
                    "the audit log exists but its signed head file does not: a tail cut while the agent was \
                     stopped cannot be ruled out; recorded as audit.head_missing, which fails verification \
                     until an auditor accepts it"
                );
                self.push_event(WriterEvent::HeadMissing);
            }
            HeadCheck::Truncated { signed_size, signed_head, found_size } => {
                self.tamper("truncated", signed_size, signed_head, found_size)
            }
            HeadCheck::Mismatch { signed_size, signed_head, found_size } => {
                self.tamper("head_mismatch", signed_size, signed_head, found_size)
            }
            HeadCheck::OtherLog { signed_size, signed_head, found_size } => self.tamper(
                if found_size == 0 { "log_missing" } else { "other_log" },
                signed_size,
                signed_head,
                found_size,
            ),
        }
        Ok(())
    }

    fn tamper(&mut self, kind: &'static str, signed_size: u64, signed_head: Digest, found_size: u64) {
        tracing::error!(kind, signed_size, found_size, "audit log does not match its signed head");
        self.recovered.tamper = Some(kind);
        self.push_event(WriterEvent::TamperDetected { kind, signed_size, signed_head, found_size });
    }

    /// What opening found.
    pub fn recovered(&self) -> &Recovered {
        &self.recovered
    }

    pub fn failure_mode(&self) -> FailureMode {
        self.opts.on_failure
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    pub fn durable(&self) -> Durable {
        self.durable
    }

    /// Sequence the next entry will get.
    pub fn next_sequence(&self) -> u64 {
        self.chain.next_seq
    }

    /// Records an attempt. Cheap: it is sealed into memory; `commit` (or `tick`) makes it durable. Kernel
    /// sequence numbers missing for longer than `sequence::HOLE_WAIT` (or `MAX_SPAN` numbers) become gap
    /// entries; one going back below everything accounted for is recorded as a reset first.
    pub fn append(&mut self, record: &ActionRecord) -> Appended {
        // Repeats take no kernel sequence number of their own: their attempt's was accounted for.
        let arrival = match record.repeats {
            Some(_) => Arrival::New,
            None => self.kernel_seqs.arrive(record.kernel_seq, Instant::now),
        };
        match arrival {
            Arrival::New => {}
            Arrival::AlreadyRecorded => return Appended::AlreadyRecorded,
            Arrival::Late => {
                tracing::warn!(
                    kernel_seq = record.kernel_seq,
                    "a kernel event arrived after it was recorded as lost"
                )
            }
            Arrival::Reset { expected } => {
                self.push_event(WriterEvent::KernelSeqReset { expected, got: record.kernel_seq });
            }
        }
        self.record_lost(None);
        if self.health != Health::Ok {
            match record.effect {
                Effect::Deny => self.failure.denied += 1,
                Effect::Allow | Effect::Audit => self.failure.allowed += 1,
            }
            if self.chain.pending.len() >= self.opts.max_buffered_bytes {
                self.failure.dropped += 1;
                return Appended::Dropped;
            }
            self.failure.recorded += 1;
        }
        let mut stamp = Vec::with_capacity(TIMESTAMP_LEN);
        self.timestamps.write(record.time, &mut stamp);
        let (fields, redactor) = (self.opts.fields, &self.opts.redactor);
        let sealing = Instant::now();
        let sequence =
            self.chain.push(&stamp, |out, header| write_action(out, header, record, fields, redactor));
        crate::metrics::histogram::APPEND.observe(sealing.elapsed());
        if record.repeats.is_none() {
            self.pending_kernel_seq = Some(record.kernel_seq);
        }
        if self.chain.since_checkpoint >= self.opts.checkpoint_every {
            self.checkpoint("count");
        }
        if self.health == Health::Ok && self.chain.pending.len() >= self.opts.max_batch_bytes {
            // A failure marks the log failing; `tick` reports it and retries.
            let _ = self.commit_early();
        }
        Appended::Buffered { sequence }
    }

    /// Records an agent tool call or result the daemon decided; its sequence number.
    pub fn record_tool(&mut self, record: &super::tool_entry::ToolRecord) -> u64 {
        let (fields, redactor) = (self.opts.fields, &self.opts.redactor);
        let mut stamp = Vec::with_capacity(TIMESTAMP_LEN);
        self.timestamps.write(record.time, &mut stamp);
        self.chain
            .push(&stamp, |out, header| super::tool_entry::write_tool(out, header, record, fields, redactor))
    }

    /// Records a daemon or session event. `KernelSessionStart` also makes the next kernel event expected
    /// to be number 0.
    pub fn log(&mut self, event: &Lifecycle) -> u64 {
        if *event == Lifecycle::KernelSessionStart {
            self.record_all_lost();
            self.kernel_session += 1;
            self.kernel_seqs = KernelSeqs::session_start(self.opts.gap_wait);
            self.pending_kernel_seq = None;
            self.durable.kernel_seq = None;
        }
        self.push(SystemTime::now(), |out, header| write_lifecycle(out, header, event))
    }

    /// Gap entries for the holes that waited long enough (`now`: `None` checks the span bound only).
    fn record_lost(&mut self, now: Option<Instant>) {
        while let Some(lost) = self.kernel_seqs.expire(now) {
            self.push_event(WriterEvent::Gap { from: *lost.start(), to: *lost.end() });
        }
    }

    /// The kernel issued every number below `next` in this kernel session and will issue no more (its
    /// programs are detached, the ring drained): gap entries for every one not recorded, the last
    /// ones included, which no later arrival would ever reveal.
    pub fn kernel_issued_below(&mut self, next: u64) {
        while let Some(lost) = self.kernel_seqs.expire_all_below(next) {
            self.push_event(WriterEvent::Gap { from: *lost.start(), to: *lost.end() });
        }
    }

    /// Gap entries for every hole: no more events of this kernel session will come.
    fn record_all_lost(&mut self) {
        while let Some(lost) = self.kernel_seqs.expire_all() {
            self.push_event(WriterEvent::Gap { from: *lost.start(), to: *lost.end() });
        }
    }

    fn push_event(&mut self, event: WriterEvent) -> u64 {
        self.push(SystemTime::now(), |out, header| write_writer_event(out, header, &event))
    }

    fn push(&mut self, time: SystemTime, write: impl FnOnce(&mut Vec<u8>, &Header<'_>)) -> u64 {
        let mut stamp = Vec::with_capacity(TIMESTAMP_LEN);
        self.timestamps.write(time, &mut stamp);
        self.chain.push(&stamp, write)
    }

    /// Appends a signed checkpoint over everything before it.
    fn checkpoint(&mut self, trigger: &'static str) {
        let mut stamp = Vec::with_capacity(TIMESTAMP_LEN);
        self.timestamps.write(SystemTime::now(), &mut stamp);
        let time = String::from_utf8_lossy(&stamp).into_owned();
        if let Some(previous) = self.last_checkpoint_time.take().filter(|p| *p > time) {
            // The wall clock was stepped back: say so before signing an earlier time.
            tracing::warn!(%previous, now = %time, "the wall clock went back; recorded as audit.clock_step");
            let event = WriterEvent::ClockStep { previous };
            self.chain.push(&stamp, |out, header| write_writer_event(out, header, &event));
        }
        self.last_checkpoint_time = Some(time.clone());
        let statement = HeadStatement {
            log_id: &self.log_id,
            key_id: self.key_id,
            size: self.chain.next_seq,
            head: self.chain.prev,
            time: &time,
            reason: trigger,
        };
        let signature = self.key.sign(&statement);
        let event =
            WriterEvent::Checkpoint { log_id: self.log_id.clone(), key_id: self.key_id, trigger, signature };
        self.chain.push(&stamp, |out, header| write_writer_event(out, header, &event));
        self.chain.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
    }

    /// Changes the signing key to the one at `pending_key_path(key file)`: records the new public key in
    /// an `audit.key_rotation` entry that the old key signs with a `key_rotation` checkpoint, commits,
    /// then moves the new key over the old key file. Later checkpoints and heads are signed by the new key.
    pub fn rotate_key(&mut self) -> Result<PublicKey, AuditError> {
        let pending = pending_key_path(&self.opts.key_path);
        let new = AuditKey::load(&pending)?;
        let public_key = new.public();
        let event = WriterEvent::KeyRotation {
            log_id: self.log_id.clone(),
            key_id: public_key.key_id(),
            public_key: public_key.to_text(),
        };
        self.push_event(event);
        self.checkpoint(KEY_ROTATION);
        // The head file of this commit is the new key's first signature.
        self.key = new;
        self.key_id = public_key.key_id();
        self.commit()?;
        if self.health != Health::Ok {
            return Err(AuditError::Io {
                path: self.opts.log_path.clone(),
                source: io::Error::other(
                    "the key rotation could not be committed; the new key stays pending",
                ),
            });
        }
        // A crash before this rename is completed by the next `open` (the log names the pending key).
        fs::rename(&pending, &self.opts.key_path).map_err(io_at(&self.opts.key_path))?;
        durable::sync_parent(&self.opts.key_path).map_err(io_at(&self.opts.key_path))?;
        Ok(public_key)
    }

    /// Writes and fsyncs everything appended so far (then the signed head file) and waits for it. On
    /// error the entries stay buffered, health turns `Failing`, and the next call retries.
    pub fn commit(&mut self) -> Result<Durable, AuditError> {
        self.flush()?;
        if self.segment_full() {
            self.rotate()?;
        }
        Ok(self.durable)
    }

    fn record_write_recovery(&mut self) {
        let Health::Failing { since, error } = std::mem::replace(&mut self.health, Health::Ok) else {
            return;
        };
        let counts = std::mem::take(&mut self.failure);
        let since = self.timestamps.format(since);
        tracing::warn!(dropped = counts.dropped, "audit log writable again");
        self.push_event(WriterEvent::WriteRecovered {
            since,
            error,
            mode: self.opts.on_failure.as_str(),
            recorded: counts.recorded,
            dropped: counts.dropped,
            denied: counts.denied,
            allowed: counts.allowed,
        });
    }

    /// Waits for the batch in flight, then writes what is pending (a recovery entry included) and waits.
    fn flush(&mut self) -> Result<(), AuditError> {
        self.settle(true)?;
        if !self.chain.pending.is_empty() {
            self.submit()?;
            self.settle(true)?;
        }
        Ok(())
    }

    /// Hands the pending entries to the commit thread, with the head file that signs them.
    fn submit(&mut self) -> Result<(), AuditError> {
        let time = self.timestamps.format(SystemTime::now());
        // `prev` is the hash of the last pending entry, number `next_seq - 1`.
        let statement = HeadStatement {
            log_id: &self.log_id,
            key_id: self.key_id,
            size: self.chain.next_seq,
            head: self.chain.prev,
            time: &time,
            reason: "",
        };
        let head = HeadFile::signed(&self.key, statement);
        let bytes = std::mem::replace(&mut self.chain.pending, std::mem::take(&mut self.spare));
        self.chain.pending_since = None;
        let kernel_seq =
            if self.pending_kernel_seq.is_some() { self.pending_kernel_seq } else { self.durable.kernel_seq };
        self.in_flight = Some(InFlight {
            mark: Durable { sequence: self.chain.pending_last, kernel_seq },
            kernel_session: self.kernel_session,
        });
        if let Err(e) = self.committer.send(Job::Write { bytes, durable_len: self.durable_len, head }) {
            return Err(self.failing(e));
        }
        Ok(())
    }

    /// Marks the log failing (if it was not already) and returns the error for the caller.
    fn failing(&mut self, error: io::Error) -> AuditError {
        if self.health == Health::Ok {
            tracing::error!(error = %error, "audit log write failed");
            self.health = Health::Failing { since: SystemTime::now(), error: error.to_string() };
        }
        AuditError::Io { path: self.name.active(), source: error }
    }

    /// Takes the outcome of the batch in flight (`wait`: waiting for it). Success advances the durable
    /// mark; failure puts the batch back in front of what was appended since and marks the log failing.
    fn settle(&mut self, wait: bool) -> Result<(), AuditError> {
        let outcome = match self.committer.outcome(wait) {
            Ok(Some(outcome)) => outcome,
            Ok(None) => return Ok(()),
            Err(e) => return Err(self.failing(e)),
        };
        let Some(in_flight) = self.in_flight.take() else { return Ok(()) };
        match outcome {
            Outcome::Written { len, mut bytes } => {
                self.durable_len = len;
                self.durable.sequence = in_flight.mark.sequence;
                if in_flight.kernel_session == self.kernel_session {
                    self.durable.kernel_seq = in_flight.mark.kernel_seq;
                }
                bytes.clear();
                self.spare = bytes;
                if self.health != Health::Ok {
                    self.record_write_recovery();
                }
                Ok(())
            }
            Outcome::Failed { error, mut bytes } => {
                bytes.extend_from_slice(&self.chain.pending);
                self.chain.pending = bytes;
                self.chain.pending_since.get_or_insert_with(Instant::now);
                Err(self.failing(error))
            }
        }
    }

    /// Housekeeping the daemon calls at least every `commit_interval` (and every few milliseconds while
    /// `next_deadline` says so): collects a finished commit, writes a checkpoint when the interval has
    /// passed, starts a commit when the oldest buffered entry has waited long enough (or a failing log may
    /// be writable again), rotates, and applies retention once an hour. Commits run on their own thread;
    /// `durable()` reports what they finished.
    pub fn tick(&mut self) -> Result<Durable, AuditError> {
        self.settle(false)?;
        if self.kernel_seqs.deadline().is_some() {
            self.record_lost(Some(Instant::now()));
        }
        if self.chain.since_checkpoint > 0 && self.last_checkpoint.elapsed() >= self.opts.checkpoint_interval
        {
            self.checkpoint("interval");
        }
        if self.committer.busy() {
            return Ok(self.durable);
        }
        // Rotation first: under steady load a commit is due again as soon as the last one finishes.
        if self.segment_full() {
            self.rotate()?;
        }
        let due = self.chain.pending_since.is_some_and(|t| t.elapsed() >= self.opts.commit_interval);
        if !self.chain.pending.is_empty() && (due || self.health != Health::Ok) {
            self.submit()?;
            return Ok(self.durable);
        }
        self.reap_compression();
        if self.opts.retention.is_some()
            && self.last_retention.is_none_or(|t| t.elapsed() >= RETENTION_PERIOD)
        {
            self.apply_retention()?;
        }
        Ok(self.durable)
    }

    /// When `tick` next has work: the commit deadline of the oldest buffered entry, or the next checkpoint.
    pub fn next_deadline(&self) -> Instant {
        if self.committer.busy() {
            return Instant::now() + Duration::from_millis(5);
        }
        let checkpoint = self.last_checkpoint + self.opts.checkpoint_interval;
        let hole = self.kernel_seqs.deadline().unwrap_or(checkpoint);
        match self.chain.pending_since {
            Some(t) => checkpoint.min(hole).min(t + self.opts.commit_interval),
            None => checkpoint.min(hole),
        }
    }

    /// Gap entries for every hole, a final checkpoint and commit; waits for background compression. Call
    /// it once no more kernel events of this session can arrive.
    pub fn close(mut self) -> Result<Durable, AuditError> {
        self.record_all_lost();
        self.checkpoint("shutdown");
        let durable = self.commit()?;
        for handle in self.compressing.drain(..) {
            report_compression(handle.join());
        }
        Ok(durable)
    }

    /// Waits for the batch in flight, then hands over what is pending. Rotation comes first, as in `tick`:
    /// a flood that keeps the committer busy must not grow one segment without bound.
    fn commit_early(&mut self) -> Result<(), AuditError> {
        self.settle(true)?;
        if self.segment_full() {
            self.rotate()
        } else {
            self.submit()
        }
    }

    /// Whether the active segment has reached `max_segment_bytes`.
    fn segment_full(&self) -> bool {
        self.opts.max_segment_bytes.is_some_and(|max| self.durable_len >= max)
    }

    fn rotate(&mut self) -> Result<(), AuditError> {
        self.checkpoint("rotation");
        self.flush()?;
        let active = self.name.active();
        let rotated = self.name.rotated(self.segment_first_seq);
        fs::rename(&active, &rotated).map_err(io_at(&rotated))?;
        durable::sync_parent(&active).map_err(io_at(&active))?;
        self.committer.send(Job::Switch(open_active(&active)?)).map_err(io_at(&active))?;
        self.durable_len = 0;
        self.segment_first_seq = self.chain.next_seq;
        let last_kernel_seq = self.pending_kernel_seq.or(self.durable.kernel_seq);
        self.push_event(WriterEvent::SegmentStart { log_id: self.log_id.clone(), last_kernel_seq });
        self.flush()?;
        self.start_compression(rotated);
        self.apply_retention()
    }

    fn start_compression(&mut self, plain: PathBuf) {
        let compression = self.opts.compression;
        if compression != Compression::None {
            self.compressing.push(std::thread::spawn(move || segment::compress(&plain, compression)));
        }
    }

    fn resume_compression(&mut self, segments: &[Segment]) {
        for s in segments.iter().filter(|s| s.first_seq.is_some() && s.compression == Compression::None) {
            self.start_compression(s.path.clone());
        }
    }

    fn reap_compression(&mut self) {
        let (done, running): (Vec<_>, Vec<_>) = self.compressing.drain(..).partition(|h| h.is_finished());
        self.compressing = running;
        for handle in done {
            report_compression(handle.join());
        }
    }

    /// Deletes expired rotated segments, each after a committed, checkpointed entry that records it.
    fn apply_retention(&mut self) -> Result<(), AuditError> {
        self.last_retention = Some(Instant::now());
        let Some(rule) = self.opts.retention.clone() else { return Ok(()) };
        if !self.compressing.is_empty() {
            // A segment may be mid-compression; look again at the next pass.
            self.last_retention = None;
            return Ok(());
        }
        let dir = durable::parent_of(&self.opts.log_path).to_owned();
        let segments = self.name.list().map_err(io_at(&dir))?;
        let mut doomed = expired(&segments, &rule, SystemTime::now()).map_err(io_at(&dir))?;
        if let Some(archived) = &self.opts.archived {
            // Only what the archive has stored; the rest waits for it (looked at again next pass).
            let through = archived(durable::parent_of(&self.opts.head_path));
            doomed.retain(|e| e.last < through);
        }
        let Some(first) = doomed.first().map(|e| e.first) else { return Ok(()) };
        let covered_from = covered_from(&segments, first, self.retention_coverage).map_err(io_at(&dir))?;
        self.retention_coverage = doomed.last().map(|e| (covered_from, e.last));
        for e in &doomed {
            let segment = e.segment.path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            self.push_event(WriterEvent::RetentionDelete {
                segment,
                covered_from,
                first: e.first,
                last: e.last,
                last_hash: e.last_hash,
                last_time: e.last_time.clone(),
                retention: rule.label.clone(),
            });
        }
        self.checkpoint("retention");
        self.flush()?;
        for e in &doomed {
            fs::remove_file(&e.segment.path).map_err(io_at(&e.segment.path))?;
        }
        durable::sync_parent(&self.opts.log_path).map_err(io_at(&dir))
    }
}

/// The sealed entries not yet written, and where the chain stands.
struct Chain {
    next_seq: u64,
    prev: Digest,
    pending: Vec<u8>,
    pending_since: Option<Instant>,
    pending_last: Option<u64>,
    since_checkpoint: u64,
}

impl Chain {
    fn push(&mut self, stamp: &[u8], write: impl FnOnce(&mut Vec<u8>, &Header<'_>)) -> u64 {
        let sequence = self.next_seq;
        let header = Header { sequence, prev_hash: self.prev, timestamp: stamp };
        let start = self.pending.len();
        write(&mut self.pending, &header);
        self.prev = seal_in_place(&mut self.pending, start);
        self.next_seq += 1;
        self.since_checkpoint += 1;
        self.pending_last = Some(sequence);
        self.pending_since.get_or_insert_with(Instant::now);
        sequence
    }
}

/// The lowest sequence whose deletion the log accounts for, once the entries from `first` on are deleted
/// too: `first` itself unless retention entries of earlier rounds (in any remaining segment) record
/// deleting everything before it. The writer only carries forward what its log records, so a segment an
/// attacker removed stays unaccounted for.
/// The last round's coverage is usually known (`known`: what this writer recorded last); otherwise the
/// segments are read newest first (the last round's entries are in the newest) until it is found.
fn covered_from(segments: &[Segment], first: u64, known: Option<(u64, u64)>) -> io::Result<u64> {
    let mut from = first;
    let mut recorded: Vec<(u64, u64)> = known.into_iter().collect();
    let mut unread = segments.iter().rev();
    loop {
        while let Some(earlier) = recorded.iter().filter(|r| r.1 + 1 == from && r.0 < from).map(|r| r.0).min()
        {
            from = earlier;
        }
        if from == 0 {
            return Ok(0);
        }
        match unread.next() {
            Some(segment) => recorded.extend(scan(segment, None)?.retention),
            None => return Ok(from),
        }
    }
}

/// The signing key for the log: the key file, which must be the key the log names last. A missing key
/// next to an existing log, or another key, is refused (a new key would sign history it never saw);
/// a key rotation interrupted after its entries were committed is completed.
fn log_key(
    key_path: &Path,
    log_path: &Path,
    log_exists: bool,
    log_key: Option<Digest>,
) -> Result<AuditKey, AuditError> {
    let pending = pending_key_path(key_path);
    let key = match fs::symlink_metadata(key_path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound && log_exists => {
            return Err(AuditError::KeyLost { key: key_path.to_owned(), log: log_path.to_owned() })
        }
        _ => AuditKey::load_or_create(key_path)?,
    };
    let Some(log_key) = log_key.filter(|k| *k != key.public().key_id()) else { return Ok(key) };
    if fs::symlink_metadata(&pending).is_ok() {
        let new = AuditKey::load(&pending)?;
        if new.public().key_id() == log_key {
            fs::rename(&pending, key_path).map_err(io_at(key_path))?;
            durable::sync_parent(key_path).map_err(io_at(key_path))?;
            return Ok(new);
        }
    }
    Err(AuditError::KeyMismatch {
        key: key_path.to_owned(),
        log: log_path.to_owned(),
        file_key: key.public().key_id(),
        log_key,
    })
}

/// Where `audit rotate-key` keeps the new key until the log records it.
pub fn pending_key_path(key_path: &Path) -> PathBuf {
    let mut name = key_path.as_os_str().to_owned();
    name.push(".new");
    PathBuf::from(name)
}

/// A writer dropped without `close` (an error path, or a test standing in for a kill) still waits for
/// its compressions: a thread left running would rewrite and delete segments behind the back of the
/// next writer of the same log in this process, which resumes compressing the same plain segments.
impl Drop for AuditWriter {
    fn drop(&mut self) {
        for handle in self.compressing.drain(..) {
            report_compression(handle.join());
        }
    }
}

fn report_compression(result: std::thread::Result<io::Result<PathBuf>>) {
    match result {
        Ok(Ok(_)) => {}
        // The plain segment stays and verifies; compression is retried at the next start.
        Ok(Err(e)) => tracing::warn!(error = %e, "compressing a rotated audit segment failed"),
        Err(_) => tracing::warn!("compression thread panicked"),
    }
}

fn open_active(path: &Path) -> Result<File, AuditError> {
    let file = OpenOptions::new().append(true).create(true).mode(0o600).open(path).map_err(io_at(path))?;
    durable::sync_parent(path).map_err(io_at(path))?;
    Ok(file)
}

/// Locks the log's directory (`flock`, released when the process dies) so that a second writer (a
/// second daemon, `audit rotate-key` beside a running daemon) is refused instead of forking the chain.
fn lock_log_dir(dir: &Path) -> Result<nix::fcntl::Flock<File>, AuditError> {
    let handle = File::open(dir).map_err(io_at(dir))?;
    nix::fcntl::Flock::lock(handle, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        let source =
            io::Error::other(format!("another audit writer (a running daemon?) has this log open ({errno})"));
        AuditError::Io { path: dir.to_owned(), source }
    })
}

fn new_log_id(dir: &Path) -> Result<String, AuditError> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| io_at(dir)(io::Error::other(e.to_string())))?;
    Ok(hex_string(&id))
}

impl AuditWriter {
    /// Pretends the last checkpoint was made at `time`, as if the wall clock had since been stepped back.
    pub(crate) fn set_last_checkpoint_time(&mut self, time: &str) {
        self.last_checkpoint_time = Some(time.to_owned());
    }
}

#[cfg(test)]
impl AuditWriter {
    /// Makes every following write fail with `kind` (`None`: work again).
    pub(crate) fn inject_write_failure(&mut self, kind: Option<io::ErrorKind>) {
        let _ = self.committer.send(Job::FailWrites(kind));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::synthetic::record;
    use crate::audit::verify::{log_files, verify, Damage, VerifyOptions};

    fn options(dir: &Path) -> WriterOptions {
        WriterOptions::new(&dir.join("log/audit.jsonl")).with_state_dir(&dir.join("state"))
    }

    fn check(dir: &Path) -> crate::audit::verify::Report {
        let opts = options(dir);
        let key = AuditKey::load(&opts.key_path).unwrap().public();
        let verify_opts = VerifyOptions {
            trusted_key: Some(key),
            head_path: Some(opts.head_path.clone()),
            from: None,
            ..Default::default()
        };
        verify(&log_files(&opts.log_path).unwrap(), &verify_opts, std::sync::Arc::new(|_| {})).unwrap()
    }

    fn entries(dir: &Path) -> Vec<serde_json::Value> {
        let text = fs::read_to_string(dir.join("log/audit.jsonl")).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn a_closed_log_verifies_and_reopens_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = AuditWriter::open(options(dir.path())).unwrap();
        writer.log(&Lifecycle::KernelSessionStart);
        for k in 0..25 {
            writer.append(&record(k));
        }
        assert_eq!(writer.close().unwrap().kernel_seq, Some(24));
        let report = check(dir.path());
        assert_eq!(report.failure, None);
        assert_eq!(report.entries, 28);
        let writer = AuditWriter::open(options(dir.path())).unwrap();
        assert_eq!(writer.recovered().next_sequence, 28);
        assert_eq!(writer.recovered().last_kernel_seq, Some(24));
        writer.close().unwrap();
        assert_eq!(check(dir.path()).failure, None);
    }

    #[test]
    fn counted_repeats_take_no_kernel_sequence_and_the_log_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = AuditWriter::open(options(dir.path())).unwrap();
        writer.log(&Lifecycle::KernelSessionStart);
        writer.append(&record(0));
        let repeats = crate::audit::Repeats {
            count: 41,
            first_time: "2026-12-05T10:00:00.000Z".into(),
            last_time: "2026-12-05T10:00:00.900Z".into(),
        };
        writer.append(&ActionRecord { repeats: Some(repeats), ..record(0) });
        writer.append(&record(1));
        assert_eq!(writer.close().unwrap().kernel_seq, Some(1));
        let written = entries(dir.path());
        let counted: Vec<_> = written.iter().filter(|e| e["repeats"].is_object()).collect();
        assert_eq!(counted.len(), 1, "{written:#?}");
        assert!(counted[0]["kernelSeq"].is_null());
        assert_eq!(counted[0]["repeats"]["count"], 41);
        assert_eq!(counted[0]["repeats"]["ofKernelSeq"], 0);
        assert_eq!(counted[0]["repeats"]["firstTime"], "2026-12-05T10:00:00.000Z");
        assert!(written
            .iter()
            .all(|e| e["action"] != "audit.gap" && e["action"] != "audit.kernel_seq_reset"));
        let report = check(dir.path());
        assert_eq!((report.failure, report.gaps), (None, 0));
    }

    #[test]
    fn a_reopened_writer_knows_which_counted_repeats_its_kernel_session_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let counted = |of: u64| ActionRecord {
            repeats: Some(crate::audit::Repeats {
                count: 7,
                first_time: "2026-12-05T10:00:00.000Z".into(),
                last_time: "2026-12-05T10:00:00.900Z".into(),
            }),
            ..record(of)
        };
        let mut writer = AuditWriter::open(options(dir.path())).unwrap();
        writer.log(&Lifecycle::KernelSessionStart);
        writer.append(&record(0));
        writer.append(&counted(0));
        writer.log(&Lifecycle::KernelSessionStart);
        for k in 0..3 {
            writer.append(&record(k));
        }
        writer.append(&counted(2));
        writer.append(&counted(1));
        writer.close().unwrap();
        // The earlier session's count of attempt 0 is not this session's attempt 0.
        let writer = AuditWriter::open(options(dir.path())).unwrap();
        assert_eq!(writer.recovered().repeats_recorded, vec![2, 1]);
        writer.close().unwrap();
        assert_eq!(check(dir.path()).failure, None);
    }

    #[test]
    fn kernel_sequence_jumps_become_gap_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = AuditWriter::open(options(dir.path())).unwrap();
        writer.log(&Lifecycle::KernelSessionStart);
        writer.append(&record(0));
        writer.append(&record(5));
        writer.log(&Lifecycle::KernelSessionStart);
        writer.append(&record(0));
        writer.close().unwrap();
        let gaps: Vec<_> = entries(dir.path()).into_iter().filter(|e| e["action"] == "audit.gap").collect();
        assert_eq!(gaps.len(), 1);
        assert_eq!(gaps[0]["details"]["fromKernelSeq"], 1);
        assert_eq!(gaps[0]["details"]["toKernelSeq"], 4);
        let report = check(dir.path());
        assert_eq!((report.gaps, report.lost_kernel_events), (1, 4));
    }

    #[test]
    fn numbers_issued_after_the_last_recorded_event_become_a_gap_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = AuditWriter::open(options(dir.path())).unwrap();
        writer.log(&Lifecycle::KernelSessionStart);
        writer.append(&record(0));
        writer.append(&record(1));
        writer.append(&record(3));
        // The kernel issued 0..=6: 2 is a hole, 4..=6 were denied after the last one recorded.
        writer.kernel_issued_below(7);
        writer.close().unwrap();
        let gaps: Vec<(u64, u64)> = entries(dir.path())
            .into_iter()
            .filter(|e| e["action"] == "audit.gap")
            .map(|e| {
                let details = &e["details"];
                (details["fromKernelSeq"].as_u64().unwrap(), details["toKernelSeq"].as_u64().unwrap())
            })
            .collect();
        assert_eq!(gaps, [(2, 2), (4, 6)]);
        let report = check(dir.path());
        assert_eq!(report.failure, None);
        assert_eq!((report.gaps, report.lost_kernel_events), (2, 4));
    }

    #[test]
    fn events_of_two_cpus_out_of_order_are_neither_gaps_nor_resets() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = AuditWriter::open(options(dir.path())).unwrap();
        writer.log(&Lifecycle::KernelSessionStart);
        for k in [0, 2, 1, 3, 6, 4, 5, 7] {
            assert!(matches!(writer.append(&record(k)), Appended::Buffered { .. }));
            writer.tick().unwrap();
        }
        writer.close().unwrap();
        let actions: Vec<String> =
            entries(dir.path()).iter().map(|e| e["action"].as_str().unwrap().to_owned()).collect();
        assert!(!actions.iter().any(|a| a == "audit.gap" || a == "audit.kernel_seq_reset"), "{actions:?}");
        let report = check(dir.path());
        assert_eq!((report.failure, report.gaps), (None, 0));
    }

    #[test]
    fn a_number_still_missing_after_the_wait_is_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(dir.path());
        opts.gap_wait = Duration::from_millis(20);
        let mut writer = AuditWriter::open(opts).unwrap();
        writer.log(&Lifecycle::KernelSessionStart);
        for k in [0, 1, 3] {
            writer.append(&record(k));
        }
        writer.tick().unwrap();
        let deadline = writer.next_deadline();
        assert!(deadline <= Instant::now() + Duration::from_millis(20));
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
        writer.tick().unwrap();
        writer.append(&record(4));
        writer.commit().unwrap();
        let gaps: Vec<_> = entries(dir.path()).into_iter().filter(|e| e["action"] == "audit.gap").collect();
        assert_eq!(gaps.len(), 1);
        assert_eq!(
            (&gaps[0]["details"]["fromKernelSeq"], &gaps[0]["details"]["toKernelSeq"]),
            (&2.into(), &2.into())
        );
        // The straggler is still recorded, after its gap entry, and is not a reset.
        writer.append(&record(2));
        writer.close().unwrap();
        let all = entries(dir.path());
        assert!(all.iter().any(|e| e["kernelSeq"] == 2));
        assert!(!all.iter().any(|e| e["action"] == "audit.kernel_seq_reset"));
    }

    #[test]
    fn a_reopened_writer_skips_what_it_recorded_and_fills_open_holes() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = AuditWriter::open(options(dir.path())).unwrap();
        writer.log(&Lifecycle::KernelSessionStart);
        for k in [0, 1, 3, 4] {
            writer.append(&record(k));
        }
        writer.commit().unwrap();
        // Killed: 3 and 4 were durable but still in the ring; 2 was not in the ring yet.
        drop(writer);
        let mut writer = AuditWriter::open(options(dir.path())).unwrap();
        assert_eq!(writer.append(&record(3)), Appended::AlreadyRecorded);
        assert_eq!(writer.append(&record(4)), Appended::AlreadyRecorded);
        assert!(matches!(writer.append(&record(2)), Appended::Buffered { .. }));
        assert!(matches!(writer.append(&record(5)), Appended::Buffered { .. }));
        writer.close().unwrap();
        let seqs: Vec<u64> = entries(dir.path()).iter().filter_map(|e| e["kernelSeq"].as_u64()).collect();
        assert_eq!(seqs, [0, 1, 3, 4, 2, 5]);
        let report = check(dir.path());
        assert_eq!((report.failure, report.gaps), (None, 0));
    }

    #[test]
    fn a_writer_reopened_after_several_small_segments_reads_back_as_far_as_it_needs() {
        let dir = tempfile::tempdir().unwrap();
        let small = |dir: &Path| {
            let mut opts = options(dir);
            opts.max_segment_bytes = Some(2 << 10);
            opts
        };
        let mut writer = AuditWriter::open(small(dir.path())).unwrap();
        writer.log(&Lifecycle::KernelSessionStart);
        for k in (0..20).filter(|&k| k != 2) {
            writer.append(&record(k));
            // A commit per entry rotates every few entries.
            writer.commit().unwrap();
        }
        drop(writer);
        assert!(log_files(&dir.path().join("log/audit.jsonl")).unwrap().len() > 5);
        let mut writer = AuditWriter::open(small(dir.path())).unwrap();
        // Both lie several segments back: the first is known, the second still an open hole.
        assert_eq!(writer.append(&record(3)), Appended::AlreadyRecorded);
        assert!(matches!(writer.append(&record(2)), Appended::Buffered { .. }));
        writer.close().unwrap();
        let report = check(dir.path());
        assert_eq!((report.failure, report.gaps), (None, 0));
    }

    #[test]
    fn a_writer_reopened_just_after_rotation_still_knows_what_it_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(dir.path());
        opts.max_segment_bytes = Some(8 << 10);
        let mut writer = AuditWriter::open(opts).unwrap();
        writer.log(&Lifecycle::KernelSessionStart);
        for k in [0, 1, 3] {
            writer.append(&record(k));
        }
        for k in 4..30 {
            writer.append(&record(k));
        }
        // Commits, then rotates: the new segment holds only its start entry.
        writer.commit().unwrap();
        drop(writer);
        let mut opts = options(dir.path());
        opts.max_segment_bytes = Some(8 << 10);
        let mut writer = AuditWriter::open(opts).unwrap();
        assert_eq!(writer.append(&record(29)), Appended::AlreadyRecorded);
        assert!(matches!(writer.append(&record(2)), Appended::Buffered { .. }));
        assert!(matches!(writer.append(&record(30)), Appended::Buffered { .. }));
        writer.close().unwrap();
        let report = check(dir.path());
        assert_eq!((report.failure, report.gaps, report.files > 1), (None, 0, true));
        let files = log_files(&dir.path().join("log/audit.jsonl")).unwrap();
        let last = fs::read_to_string(files.last().unwrap()).unwrap();
        assert!(!last.contains("audit.kernel_seq_reset"), "{last}");
    }

    #[test]
    fn checkpoints_follow_the_entry_cadence() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(dir.path());
        opts.checkpoint_every = 10;
        let mut writer = AuditWriter::open(opts).unwrap();
        for k in 0..35 {
            writer.append(&record(k));
        }
        writer.close().unwrap();
        let triggers: Vec<String> = entries(dir.path())
            .iter()
            .filter(|e| e["action"] == "audit.checkpoint")
            .map(|e| e["details"]["trigger"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(triggers, ["count", "count", "count", "shutdown"]);
        assert_eq!(check(dir.path()).checkpoints, 4);
    }

    #[test]
    fn durable_tracks_commits_not_appends() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = AuditWriter::open(options(dir.path())).unwrap();
        writer.log(&Lifecycle::KernelSessionStart);
        writer.append(&record(0));
        writer.append(&record(1));
        assert_eq!(writer.durable().kernel_seq, None);
        let durable = writer.commit().unwrap();
        assert_eq!(durable.kernel_seq, Some(1));
        assert_eq!(durable.sequence, Some(writer.next_sequence() - 1));
    }

    #[test]
    fn a_burst_commits_early_instead_of_growing_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(dir.path());
        opts.max_batch_bytes = 16 << 10;
        opts.commit_interval = Duration::from_secs(3600);
        let mut writer = AuditWriter::open(opts).unwrap();
        writer.log(&Lifecycle::KernelSessionStart);
        let mut largest_batch = 0;
        for k in 0..500 {
            writer.append(&record(k));
            largest_batch = largest_batch.max(writer.chain.pending.len());
        }
        // No tick, no commit and a commit interval of an hour: only the size bound made entries durable.
        let early = writer.durable().kernel_seq.expect("nothing was committed early");
        assert!(early > 400, "durable only through kernel event {early}");
        assert!(largest_batch < (16 << 10) + 4096, "batch grew to {largest_batch} bytes");
        writer.close().unwrap();
        assert_eq!(check(dir.path()).failure, None);
    }

    #[test]
    fn a_flood_of_early_commits_still_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(dir.path());
        opts.max_batch_bytes = 16 << 10;
        opts.max_segment_bytes = Some(64 << 10);
        opts.commit_interval = Duration::from_secs(3600);
        let mut writer = AuditWriter::open(opts).unwrap();
        writer.log(&Lifecycle::KernelSessionStart);
        // Only early commits run: no tick, no commit until the end.
        for k in 0..2000 {
            writer.append(&record(k));
        }
        writer.close().unwrap();
        let files = log_files(&dir.path().join("log/audit.jsonl")).unwrap();
        assert!(files.len() > 5, "{} segments", files.len());
        for file in &files[..files.len() - 1] {
            let len = fs::metadata(file).unwrap().len();
            assert!(len < (64 << 10) + (16 << 10) + 8192, "{} has {len} bytes", file.display());
        }
        assert_eq!(check(dir.path()).failure, None);
    }

    #[test]
    fn write_failure_fails_closed_then_records_what_happened() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(dir.path());
        opts.max_buffered_bytes = 4096;
        let mut writer = AuditWriter::open(opts).unwrap();
        writer.log(&Lifecycle::KernelSessionStart);
        writer.append(&record(0));
        writer.commit().unwrap();
        writer.inject_write_failure(Some(io::ErrorKind::StorageFull));
        writer.append(&record(1));
        assert!(writer.commit().is_err());
        assert!(matches!(writer.health(), Health::Failing { .. }));
        let mut dropped = 0;
        for k in 2..40 {
            if writer.append(&record(k)) == Appended::Dropped {
                dropped += 1;
            }
        }
        assert!(dropped > 0, "the 4 KiB buffer must fill");
        assert!(writer.commit().is_err());
        writer.inject_write_failure(None);
        writer.commit().unwrap();
        assert_eq!(writer.health(), &Health::Ok);
        writer.close().unwrap();
        let recovered: Vec<_> =
            entries(dir.path()).into_iter().filter(|e| e["action"] == "audit.write_recovered").collect();
        assert_eq!(recovered.len(), 1);
        let d = &recovered[0]["details"];
        assert_eq!(d["dropped"], dropped);
        assert_eq!(d["mode"], "failClosed");
        assert_eq!(
            d["deniedDuringFailure"].as_u64().unwrap() + d["allowedDuringFailure"].as_u64().unwrap(),
            38
        );
        assert_eq!(check(dir.path()).failure, None);
    }

    #[test]
    fn an_interrupted_write_is_cut_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = AuditWriter::open(options(dir.path())).unwrap();
        writer.append(&record(0));
        writer.commit().unwrap();
        drop(writer);
        let log = dir.path().join("log/audit.jsonl");
        let mut file = OpenOptions::new().append(true).open(&log).unwrap();
        std::io::Write::write_all(&mut file, b"{\"action\":\"file.re").unwrap();
        let writer = AuditWriter::open(options(dir.path())).unwrap();
        assert_eq!(writer.recovered().discarded_bytes, 18);
        writer.close().unwrap();
        assert!(entries(dir.path()).iter().any(|e| e["action"] == "audit.crash_recovered"));
        assert_eq!(check(dir.path()).failure, None);
    }

    #[test]
    fn a_lost_key_next_to_a_log_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let writer = AuditWriter::open(options(dir.path())).unwrap();
        writer.close().unwrap();
        let before = fs::read(dir.path().join("log/audit.jsonl")).unwrap();
        let opts = options(dir.path());
        fs::remove_file(&opts.key_path).unwrap();
        let refused = AuditWriter::open(opts).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("missing but the log") && refused.contains("audit.key"), "{refused}");
        assert!(!options(dir.path()).key_path.exists(), "no new key was created");
        assert_eq!(fs::read(dir.path().join("log/audit.jsonl")).unwrap(), before);
    }

    #[test]
    fn another_key_next_to_a_log_is_refused_until_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let writer = AuditWriter::open(options(dir.path())).unwrap();
        writer.close().unwrap();
        let opts = options(dir.path());
        fs::remove_file(&opts.key_path).unwrap();
        AuditKey::create(&opts.key_path).unwrap();
        let refused = AuditWriter::open(opts).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("rotate-key"), "{refused}");
    }

    #[test]
    fn a_key_rotation_interrupted_before_the_key_file_moved_is_completed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path());
        let (key_path, pending) = (opts.key_path.clone(), pending_key_path(&opts.key_path));
        AuditKey::create(&key_path).unwrap();
        let old = fs::read(&key_path).unwrap();
        let mut writer = AuditWriter::open(opts).unwrap();
        writer.append(&record(0));
        let new = AuditKey::create(&pending).unwrap().public();
        writer.rotate_key().unwrap();
        writer.close().unwrap();
        // Put the old key file back with the new key pending, as a crash before the rename leaves them.
        fs::rename(&key_path, &pending).unwrap();
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&key_path).unwrap();
        std::io::Write::write_all(&mut file, &old).unwrap();
        let writer = AuditWriter::open(options(dir.path())).unwrap();
        writer.close().unwrap();
        assert_eq!(AuditKey::load(&key_path).unwrap().public(), new);
        assert!(!pending.exists());
        let first_key = entries(dir.path())[0]["details"]["publicKey"].as_str().unwrap().to_owned();
        let opts = options(dir.path());
        let verify_opts = VerifyOptions {
            trusted_key: crate::audit::signing::PublicKey::parse(&first_key),
            head_path: Some(opts.head_path.clone()),
            ..Default::default()
        };
        let report =
            verify(&log_files(&opts.log_path).unwrap(), &verify_opts, std::sync::Arc::new(|_| {})).unwrap();
        assert_eq!(report.failure, None, "{report:?}");
    }

    #[test]
    fn a_clock_stepped_back_is_recorded_and_the_log_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = AuditWriter::open(options(dir.path())).unwrap();
        writer.append(&record(0));
        writer.set_last_checkpoint_time("2099-01-01T00:00:00.000Z");
        writer.close().unwrap();
        let actions: Vec<_> =
            entries(dir.path()).iter().map(|e| e["action"].as_str().unwrap().to_owned()).collect();
        assert_eq!(actions[actions.len() - 2..], ["audit.clock_step", "audit.checkpoint"]);
        assert_eq!(check(dir.path()).failure, None);
    }

    #[test]
    fn retention_rounds_carry_coverage_and_the_log_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(dir.path());
        opts.max_segment_bytes = Some(4 << 10);
        opts.compression = Compression::None;
        opts.checkpoint_every = 10;
        opts.retention = Some(RetentionRule { keep: Duration::ZERO, label: "0d".into() });
        let mut writer = AuditWriter::open(opts).unwrap();
        for k in 0..120 {
            writer.append(&record(k));
            writer.commit().unwrap();
        }
        writer.close().unwrap();
        let all = entries(dir.path());
        let deletions: Vec<_> = all.iter().filter(|e| e["action"] == "audit.retention_delete").collect();
        assert!(all[0]["sequence"].as_u64().unwrap() > 50, "several rounds ran");
        assert!(!deletions.is_empty() && deletions.iter().all(|e| e["details"]["coveredFrom"] == 0));
        assert!(deletions.iter().all(|e| e["details"]["firstSequence"].as_u64().unwrap() > 0));
        assert_eq!(check(dir.path()).failure, None);
    }

    #[test]
    fn with_an_archive_retention_deletes_only_what_it_stored() {
        for archived in [0, 40] {
            let dir = tempfile::tempdir().unwrap();
            let mut opts = options(dir.path());
            opts.max_segment_bytes = Some(4 << 10);
            opts.compression = Compression::None;
            opts.retention = Some(RetentionRule { keep: Duration::ZERO, label: "0d".into() });
            let state = dir.path().join("state");
            opts.archived = Some(std::sync::Arc::new(move |state_dir: &Path| {
                assert_eq!(state_dir, state);
                archived
            }));
            let mut writer = AuditWriter::open(opts).unwrap();
            for k in 0..120 {
                writer.append(&record(k));
                writer.commit().unwrap();
            }
            writer.close().unwrap();
            let segments = LogName::of_active(&dir.path().join("log/audit.jsonl")).list().unwrap();
            let first = segments[0].first_seq.unwrap();
            if archived == 0 {
                assert_eq!(first, 0, "a segment was deleted before it was archived");
            } else {
                // Deleted up to the archive's cursor, never past it.
                assert!(first > 0 && first <= archived, "first remaining segment starts at {first}");
            }
            assert_eq!(check(dir.path()).failure, None);
        }
    }

    #[test]
    fn truncate_and_continue_is_recorded_and_fails_verification() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = AuditWriter::open(options(dir.path())).unwrap();
        for k in 0..10 {
            writer.append(&record(k));
        }
        writer.close().unwrap();
        let log = dir.path().join("log/audit.jsonl");
        let text = fs::read_to_string(&log).unwrap();
        let kept: String = text.lines().take(5).map(|l| format!("{l}\n")).collect();
        fs::write(&log, kept).unwrap();
        let mut writer = AuditWriter::open(options(dir.path())).unwrap();
        assert_eq!(writer.recovered().tamper, Some("truncated"));
        writer.append(&record(10));
        writer.close().unwrap();
        let report = check(dir.path());
        assert!(
            matches!(report.failure.as_ref().map(|f| &f.damage), Some(Damage::TamperRecorded { kind, .. }) if kind == "truncated"),
            "{report:?}"
        );
    }

    #[test]
    fn rotation_happens_when_commits_are_always_due() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(dir.path());
        opts.max_segment_bytes = Some(8 << 10);
        opts.commit_interval = Duration::ZERO;
        let mut writer = AuditWriter::open(opts).unwrap();
        for k in 0..300 {
            writer.append(&record(k));
            writer.tick().unwrap();
            if k % 20 == 19 {
                // Let the commit in flight finish; every batch of 20 outgrows the 8 KiB segment.
                while writer.durable().sequence != Some(writer.next_sequence() - 1) {
                    std::thread::sleep(Duration::from_millis(1));
                    writer.tick().unwrap();
                }
            }
        }
        writer.close().unwrap();
        let files = log_files(&dir.path().join("log/audit.jsonl")).unwrap();
        assert!(files.len() > 10, "{files:?}");
        assert_eq!(check(dir.path()).failure, None);
    }

    #[test]
    fn rotation_compresses_and_the_chain_continues() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(dir.path());
        opts.max_segment_bytes = Some(8 << 10);
        let mut writer = AuditWriter::open(opts).unwrap();
        for k in 0..200 {
            writer.append(&record(k));
            if k % 10 == 9 {
                writer.commit().unwrap();
            }
        }
        writer.close().unwrap();
        let files = log_files(&dir.path().join("log/audit.jsonl")).unwrap();
        assert!(files.len() > 3, "{files:?}");
        assert!(
            files[..files.len() - 1].iter().all(|f| f.extension().is_some_and(|e| e == "zst")),
            "{files:?}"
        );
        let report = check(dir.path());
        assert_eq!(report.failure, None);
        assert_eq!(report.files, files.len());
    }

    #[test]
    fn a_writer_dropped_without_close_leaves_no_compression_running() {
        let dir = tempfile::tempdir().unwrap();
        let rotating = || {
            let mut opts = options(dir.path());
            opts.max_segment_bytes = Some(8 << 10);
            opts
        };
        let mut writer = AuditWriter::open(rotating()).unwrap();
        for k in 0..200 {
            writer.append(&record(k));
            if k % 10 == 9 {
                writer.commit().unwrap();
            }
        }
        drop(writer);
        let log = dir.path().join("log/audit.jsonl");
        let files = log_files(&log).unwrap();
        assert!(files.len() > 3, "{files:?}");
        // Every rotated segment was compressed by the time drop returned: none is left plain, and no
        // compression's temporary file is beside the log.
        assert!(
            files[..files.len() - 1].iter().all(|f| f.extension().is_some_and(|e| e == "zst")),
            "{files:?}"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("log"))
            .unwrap()
            .flatten()
            .filter(|d| d.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        // The next writer continues the same chain, as after a restart.
        let mut writer = AuditWriter::open(rotating()).unwrap();
        writer.append(&record(200));
        writer.close().unwrap();
        assert_eq!(check(dir.path()).failure, None);
    }
}

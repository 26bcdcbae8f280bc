//! Verification: reads a log's segments in order, checks every entry's hash, link and sequence, every
//! checkpoint's signature against a trusted key, and the signed head; names the first damaged entry and
//! the kind of damage. Memory stays constant: lines are parsed in fixed-size chunks, two at a time.
use std::fmt;
use std::io::{self, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::chain::{Digest, GENESIS};
use super::parse::{parse_reading, Kind, LineError, Summary};
use super::scan::{Members, Span};
use super::segment::{open_reader, Compression};
use super::signing::{HeadFile, HeadStatement, PublicKey, KEY_ROTATION};

/// What to check against.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// The key auditors trust. Without it the key in the log's first entry is used, which proves
    /// integrity only against someone who cannot replace the whole log.
    pub trusted_key: Option<PublicKey>,
    /// The head file: read before the scan, and again after it for entries a running writer added meanwhile.
    pub head_path: Option<PathBuf>,
    /// Start at this sequence, taking its `prevHash` on trust (entries before it were verified earlier).
    pub from: Option<u64>,
    /// Recorded incidents the operator has looked into and accepts (`--accept head_missing@SEQ`).
    pub accept: Vec<Acceptance>,
}

/// An `audit.head_missing` or `audit.tamper_detected` entry that does not fail verification: the operator
/// has looked into that incident and accepts the log as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acceptance {
    pub incident: Incident,
    pub sequence: u64,
}

/// What the writer recorded finding at a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Incident {
    /// `audit.head_missing`: the log existed but its head file did not.
    HeadMissing,
    /// `audit.tamper_detected`: the log did not match its head file.
    TamperDetected,
}

impl Incident {
    fn name(self) -> &'static str {
        match self {
            Incident::HeadMissing => "head_missing",
            Incident::TamperDetected => "tamper_detected",
        }
    }
}

impl std::str::FromStr for Acceptance {
    type Err = String;

    /// `head_missing@SEQ` or `tamper_detected@SEQ`.
    fn from_str(text: &str) -> Result<Self, String> {
        let (name, sequence) = text
            .split_once('@')
            .ok_or_else(|| format!("{text:?}: expected head_missing@SEQ or tamper_detected@SEQ"))?;
        let incident = [Incident::HeadMissing, Incident::TamperDetected]
            .into_iter()
            .find(|i| i.name() == name)
            .ok_or_else(|| format!("{name:?}: only head_missing and tamper_detected can be accepted"))?;
        let sequence = sequence.parse().map_err(|_| format!("{sequence:?}: not a sequence number"))?;
        Ok(Acceptance { incident, sequence })
    }
}

/// Where an entry was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: Arc<Path>,
    /// 1-based line number in the (decompressed) file.
    pub line: u64,
}

/// The first damage found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Sequence number of the first bad entry (or where it should have been).
    pub sequence: Option<u64>,
    pub location: Option<Location>,
    pub damage: Damage,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Damage {
    /// Not a sealed entry (not JSON, fields missing, no hash member).
    Malformed {
        reason: String,
    },
    /// The bytes do not hash to the entry's own hash: a byte was changed.
    ContentChanged,
    /// The next entry's `prevHash` is not this entry's hash: this entry was changed and rehashed (or the
    /// next entry's link was rewritten).
    Rehashed,
    /// Entries `expected..found` are missing.
    Deleted {
        expected: u64,
        found: u64,
    },
    /// Entry `found` comes before entry `expected`.
    Reordered {
        expected: u64,
        found: u64,
    },
    /// An entry with an already used sequence number: `found` appears again where `expected` was due.
    Inserted {
        expected: u64,
        found: u64,
    },
    /// A file starts at `found` where `expected` was due: a segment is missing.
    MissingSegment {
        expected: u64,
        found: u64,
    },
    /// The log starts at `first` and no signed retention entry accounts for the entries before it.
    MissingHistory {
        first: u64,
    },
    /// Entry 0 is not a log start with the genesis `prevHash`.
    BadGenesis,
    /// A checkpoint or the log start names another key than the trusted one: the log was regenerated or
    /// re-signed.
    WrongKey {
        key: String,
    },
    /// A checkpoint of another log.
    OtherLog {
        log_id: String,
    },
    /// A checkpoint's signature does not cover the chain before it: an entry in `from..=to` was changed
    /// and the chain relinked, or the checkpoint was forged.
    Relinked {
        from: u64,
        to: u64,
    },
    /// A checkpoint is dated before the previous one.
    CheckpointTimeRegressed,
    /// The signed head says the log had `signed_size` entries; it ends after `found_size`.
    Truncated {
        signed_size: u64,
        found_size: u64,
    },
    /// The entry at the signed head differs from what was signed: entries up to it were rewritten.
    HeadMismatch {
        signed_size: u64,
    },
    /// The head file is not a valid signature of this log by the trusted key.
    BadHead {
        reason: String,
    },
    /// Entries `from..=to` come after the last signature: nothing proves they were not appended or changed.
    UnsignedTail {
        from: u64,
        to: u64,
    },
    /// The writer itself found the log damaged when it restarted (`audit.tamper_detected`).
    TamperRecorded {
        kind: String,
        signed_size: u64,
        found_size: u64,
    },
    /// The writer found the log without its head file at a restart (`audit.head_missing`): a tail cut
    /// while it was stopped would not show.
    HeadMissingRecorded,
    /// The head file verification was asked to check does not exist.
    HeadFileMissing {
        path: PathBuf,
    },
    /// An `audit.key_rotation` entry not followed by a `key_rotation` checkpoint of the previous key.
    UnsignedKeyRotation,
    /// A file could not be read or decompressed.
    Unreadable {
        reason: String,
    },
    /// Two files start at the same entry and differ.
    DuplicateSegment {
        first: PathBuf,
        second: PathBuf,
    },
    /// Checkpoints exist but no key to check them: neither `--pubkey` nor a log start entry.
    NoKey,
    Empty,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::Malformed { reason } => write!(f, "malformed entry: {reason}"),
            Damage::ContentChanged => write!(f, "content changed: the entry does not match its own hash"),
            Damage::Rehashed => {
                write!(f, "entry changed and rehashed: the next entry's prevHash still names the original")
            }
            Damage::Deleted { expected, found } => {
                write!(f, "entries {expected}..{} deleted: sequence jumps to {found}", found - 1)
            }
            Damage::Reordered { expected, found } => write!(f, "entries reordered: {found} comes before {expected}"),
            Damage::Inserted { expected, found } => {
                write!(f, "entry inserted: sequence {found} appears again where {expected} was due")
            }
            Damage::MissingSegment { expected, found } => {
                write!(f, "segment missing: entries {expected}..{} are absent between files", found - 1)
            }
            Damage::MissingHistory { first } => write!(
                f,
                "log starts at entry {first} and no signed retention entry records deleting entries 0..{}",
                first - 1
            ),
            Damage::BadGenesis => write!(f, "entry 0 is not a log start linked to the genesis hash"),
            Damage::WrongKey { key } => write!(f, "signed by another key ({key}): the log was regenerated or re-signed"),
            Damage::OtherLog { log_id } => write!(f, "checkpoint of another log ({log_id})"),
            Damage::Relinked { from, to } => write!(
                f,
                "checkpoint signature does not match the chain: an entry in {from}..={to} was changed and the \
                 chain relinked, or the checkpoint was forged"
            ),
            Damage::CheckpointTimeRegressed => {
                write!(f, "checkpoint dated before the previous checkpoint with no audit.clock_step entry between")
            }
            Damage::Truncated { signed_size, found_size } => write!(
                f,
                "tail truncated: the signed head covers {signed_size} entries, the log has {found_size}"
            ),
            Damage::HeadMismatch { signed_size } => write!(
                f,
                "entry {} differs from the signed head: entries up to it were rewritten",
                signed_size.saturating_sub(1)
            ),
            Damage::BadHead { reason } => write!(f, "head file rejected: {reason}"),
            Damage::UnsignedTail { from, to } => {
                write!(f, "entries {from}..={to} are not covered by any signature (appended or changed after the last checkpoint)")
            }
            Damage::TamperRecorded { kind, signed_size, found_size } => write!(
                f,
                "the writer found the log damaged at restart ({kind}: signed {signed_size} entries, found {found_size})"
            ),
            Damage::HeadMissingRecorded => write!(
                f,
                "the writer found the log without its head file at restart (audit.head_missing): a tail cut \
                 while it was stopped would not show; after checking an off-host copy of the head, accept it \
                 with --accept head_missing@SEQ"
            ),
            Damage::HeadFileMissing { path } => {
                write!(f, "head file {} does not exist: a cut tail would not show", path.display())
            }
            Damage::UnsignedKeyRotation => write!(
                f,
                "key rotation not signed by the previous key (the next entry must be its key_rotation checkpoint)"
            ),
            Damage::Unreadable { reason } => write!(f, "unreadable: {reason}"),
            Damage::DuplicateSegment { first, second } => write!(
                f,
                "{} and {} both start at this entry and differ",
                first.display(),
                second.display()
            ),
            Damage::NoKey => write!(f, "no key to check signatures: pass --pubkey"),
            Damage::Empty => write!(f, "no entries"),
        }
    }
}

/// Which key signatures were checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    Trusted,
    /// Taken from the log itself.
    Embedded,
}

/// The outcome, with counts an auditor wants to see.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub entries: u64,
    pub first_sequence: Option<u64>,
    pub last_sequence: Option<u64>,
    pub files: usize,
    pub checkpoints: u64,
    /// Highest sequence covered by a signature (a checkpoint, or the head file).
    pub signed_through: Option<u64>,
    pub key_source: Option<KeySource>,
    pub gaps: u64,
    pub lost_kernel_events: u64,
    pub retention_deletions: u64,
    /// Bytes after the last newline of the last segment: an interrupted write, not an entry.
    pub partial_line_bytes: u64,
    /// Recorded incidents the operator accepted, by sequence.
    pub accepted: Vec<Acceptance>,
    pub failure: Option<Failure>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct VerifyIoError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// Bytes of complete lines parsed per task.
const CHUNK_BYTES: usize = 1 << 20;
/// How long verify waits for a running writer to sign the entries it has read.
const LIVE_WAIT: Duration = Duration::from_secs(3);

/// Sees every entry that verification accepted, in chain order, with its line (without the newline), so
/// that a reader such as a report is computed in the same pass over the log.
pub trait EntryVisitor {
    /// Top-level members `visit` reads. The parsing workers find them in the same scan that verification
    /// makes of each line (`scan::common_and_members`), so that the checking thread, which sees every
    /// entry in order, only aggregates.
    fn members(&self) -> &'static [&'static str] {
        &[]
    }

    /// `members` holds the raw values of the members asked for, in that order.
    fn visit(&mut self, summary: &Summary, line: &[u8], members: Members<'_>);
}

/// A visitor that looks at nothing.
struct NoVisitor;

impl EntryVisitor for NoVisitor {
    fn visit(&mut self, _: &Summary, _: &[u8], _: Members<'_>) {}
}

/// Verifies the files of one log (any order: they are sorted by their first sequence number).
/// `progress` is told how many file bytes have been read. Every damage, unreadable files included, is a
/// failure in the report; the error is kept for callers of older versions and is not returned.
pub fn verify(
    files: &[PathBuf],
    opts: &VerifyOptions,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
) -> Result<Report, VerifyIoError> {
    verify_visiting(files, opts, progress, &mut NoVisitor)
}

/// `verify`, showing each accepted entry to `visitor` as it goes.
pub fn verify_visiting(
    files: &[PathBuf],
    opts: &VerifyOptions,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
    visitor: &mut dyn EntryVisitor,
) -> Result<Report, VerifyIoError> {
    let head = match &opts.head_path {
        Some(path) => match HeadFile::read(path) {
            Ok(Some(head)) => Some(head),
            Ok(None) => return Ok(failed(Damage::HeadFileMissing { path: path.clone() })),
            Err(e) => return Ok(failed(Damage::BadHead { reason: e.to_string() })),
        },
        None => None,
    };
    let mut checker = Checker::new(opts, head, visitor);
    if let Err(e) = check_files(&mut checker, files, progress) {
        let sequence = checker.expected;
        let damage = Damage::Unreadable { reason: e.to_string() };
        checker.report.failure.get_or_insert(Failure { sequence, location: None, damage });
        return Ok(checker.report);
    }
    checker.finish();
    Ok(checker.report)
}

fn failed(damage: Damage) -> Report {
    Report { failure: Some(Failure { sequence: None, location: None, damage }), ..Report::default() }
}

fn check_files(
    checker: &mut Checker<'_>,
    files: &[PathBuf],
    progress: Arc<dyn Fn(u64) + Send + Sync>,
) -> Result<(), VerifyIoError> {
    let files = match in_order(files)? {
        Ordered::Files(files) => files,
        Ordered::Duplicate { sequence, first, second } => {
            let damage = Damage::DuplicateSegment { first, second: second.clone() };
            let location = Location { file: Arc::from(second.as_path()), line: 1 };
            checker.report.failure =
                Some(Failure { sequence: Some(sequence), location: Some(location), damage });
            return Ok(());
        }
    };
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    let wanted = checker.visitor.members();
    let mut last_file = None;
    for (index, path) in files.iter().enumerate() {
        let progress = progress.clone();
        let io_err = |source| VerifyIoError { path: path.clone(), source };
        // A file being appended to is read up to its length now, so that a writer faster than the
        // verifier cannot keep it reading forever; `await_live_signature` reads on up to a signed head.
        let length = std::fs::metadata(path).map_err(io_err)?.len();
        let limit = if Compression::of_content(path).map_err(io_err)? == Compression::None {
            length
        } else {
            u64::MAX
        };
        let mut reader = open_reader(path, move |n| progress(n)).map_err(io_err)?.take(limit);
        checker.report.files += 1;
        checker.file_start = true;
        let mut position = FilePosition { path: Arc::from(path.as_path()), carry: Vec::new(), next_line: 1 };
        if check_file(checker, &mut reader, &mut position, workers, wanted)? == Flow::Stop {
            return Ok(());
        }
        if !position.carry.is_empty() && index + 1 < files.len() {
            // Only the last segment can end in an interrupted write.
            let location = Location { file: position.path.clone(), line: position.next_line };
            let reason = "the file ends inside a line, and it is not the last segment".into();
            let _ = checker.fail(checker.expected, Some(location), Damage::Malformed { reason });
            return Ok(());
        }
        last_file = Some((reader, position));
    }
    if let Some((mut reader, mut position)) = last_file {
        checker.report.partial_line_bytes = position.carry.len() as u64;
        let before = checker.report.last_sequence;
        await_live_signature(checker, &mut reader, &mut position)?;
        if checker.report.last_sequence != before {
            checker.report.partial_line_bytes = 0;
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// Where reading a file stands: the partial line carried over and the next line's number.
struct FilePosition {
    path: Arc<Path>,
    carry: Vec<u8>,
    next_line: u64,
}

/// Parses a file to its current end and feeds the checker in order. A reader thread cuts the file into
/// chunks of whole lines, `workers` threads parse them (hashing is most of the work) and find the members
/// named in `wanted` for the visitor, and this thread checks their results in file order. A fixed pool of
/// chunk buffers circulates between them, so memory stays constant however long the log.
fn check_file(
    checker: &mut Checker<'_>,
    reader: &mut (dyn Read + Send),
    at: &mut FilePosition,
    workers: usize,
    wanted: &'static [&'static str],
) -> Result<Flow, VerifyIoError> {
    let pool = 2 * workers + 1;
    let carry = &mut at.carry;
    let (flow, read) = std::thread::scope(|scope| {
        let (spare_tx, spare_rx) = mpsc::sync_channel::<Chunk>(pool);
        let (chunk_tx, chunk_rx) = mpsc::sync_channel::<Chunk>(pool);
        let (parsed_tx, parsed_rx) = mpsc::sync_channel::<Chunk>(pool);
        for _ in 0..pool {
            let _ = spare_tx.send(Chunk::default());
        }
        let reading = scope.spawn(move || -> io::Result<()> {
            let mut index = 0;
            // Ends when the checker stops (it drops the spares' sender) or at the end of the file.
            while let Ok(mut chunk) = spare_rx.recv() {
                if !read_chunk(reader, carry, &mut chunk)? {
                    break;
                }
                chunk.index = index;
                index += 1;
                if chunk_tx.send(chunk).is_err() {
                    break;
                }
            }
            Ok(())
        });
        let chunk_rx = Arc::new(Mutex::new(chunk_rx));
        for _ in 0..workers {
            let (chunk_rx, parsed_tx) = (chunk_rx.clone(), parsed_tx.clone());
            scope.spawn(move || loop {
                let next = chunk_rx.lock().map_or(None, |rx| rx.recv().ok());
                let Some(mut chunk) = next else { return };
                chunk.parse(wanted);
                if parsed_tx.send(chunk).is_err() {
                    return;
                }
            });
        }
        drop(parsed_tx);
        let flow = check_in_order(checker, &parsed_rx, &spare_tx, &at.path, &mut at.next_line, wanted.len());
        // Closing these ends the reader and the workers, wherever they wait.
        drop((parsed_rx, spare_tx));
        let read = reading.join().unwrap_or_else(|_| Err(io::Error::other("the reader thread panicked")));
        (flow, read)
    });
    if flow == Flow::Continue {
        read.map_err(|source| VerifyIoError { path: at.path.to_path_buf(), source })?;
    }
    Ok(flow)
}

/// A piece of a file, whole lines, with what parsing them gave.
#[derive(Default)]
struct Chunk {
    index: u64,
    /// The chunk's bytes are `buffer[..filled]`. The buffer keeps its length between uses, so that
    /// reading into it does not zero it again for every chunk.
    buffer: Vec<u8>,
    filled: usize,
    /// Where each line lies in `buffer` (without its newline): found once, by the worker.
    lines: Vec<Range<usize>>,
    parsed: Vec<Parsed>,
    /// Per line, where the members the visitor wants lie (`wanted.len()` each, `None` for an absent one).
    members: Vec<Option<Span>>,
    /// Per line, whether those members were found (see `scan::common_and_members`).
    readable: Vec<bool>,
}

impl Chunk {
    /// Parses every line of `data`, and finds the `wanted` members of each entry that parsed.
    fn parse(&mut self, wanted: &[&str]) {
        self.lines.clear();
        self.parsed.clear();
        self.members.clear();
        self.readable.clear();
        let data = &self.buffer[..self.filled];
        self.lines.extend(line_ranges(data));
        for line in self.lines.iter().map(|range| &data[range.clone()]) {
            let start = self.members.len();
            self.members.resize(start + wanted.len(), None);
            let parsed = parse_reading(line, wanted, &mut self.members[start..]);
            self.readable.push(matches!(parsed, Ok((_, true))));
            self.parsed.push(parsed.map(|(summary, _)| summary));
        }
    }
}

/// Takes parsed chunks as the workers finish them, checks them in file order, and returns their buffers.
fn check_in_order(
    checker: &mut Checker<'_>,
    parsed: &mpsc::Receiver<Chunk>,
    spare: &mpsc::SyncSender<Chunk>,
    path: &Arc<Path>,
    next_line: &mut u64,
    wanted: usize,
) -> Flow {
    // Chunks finished ahead of the one due; the pool bounds how many.
    let mut early = std::collections::BTreeMap::new();
    let mut due = 0;
    for chunk in parsed {
        early.insert(chunk.index, chunk);
        while let Some(mut chunk) = early.remove(&due) {
            due += 1;
            let data = &chunk.buffer[..chunk.filled];
            let lines = chunk.lines.iter().map(|range| &data[range.clone()]);
            for (index, (result, line)) in chunk.parsed.drain(..).zip(lines).enumerate() {
                let location = Location { file: path.clone(), line: *next_line };
                *next_line += 1;
                let spans = chunk
                    .readable
                    .get(index)
                    .filter(|r| **r)
                    .map(|_| &chunk.members[index * wanted..(index + 1) * wanted]);
                if checker.check(result, line, Members::new(line, spans), location).is_err() {
                    return Flow::Stop;
                }
            }
            // The reader may have finished; then the buffer is simply freed.
            let _ = spare.send(chunk);
        }
    }
    Flow::Continue
}

/// A log being written ends with entries its writer has not signed yet: wait briefly for a head that
/// covers them, then read the active file exactly up to that head (later entries are left unread).
fn await_live_signature(
    checker: &mut Checker<'_>,
    reader: &mut io::Take<impl Read>,
    at: &mut FilePosition,
) -> Result<(), VerifyIoError> {
    let Some(head_path) = checker.opts.head_path.clone() else { return Ok(()) };
    // Only a head written in the last seconds means a writer is at work; otherwise do not wait.
    let recent = std::fs::metadata(&head_path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < LIVE_WAIT));
    if !recent {
        return Ok(());
    }
    let deadline = Instant::now() + LIVE_WAIT;
    while checker.unsigned_tail() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let Ok(Some(head)) = HeadFile::read(&head_path) else { continue };
        let Some(last) = checker.report.last_sequence else { return Ok(()) };
        if head.size <= last + 1 || checker.head_statement_ok(&head).is_err() {
            continue;
        }
        let target = head.size - 1;
        checker.head = Some(head);
        reader.set_limit(u64::MAX);
        // Lines may straddle what was read: keep the carry and read line by line up to the head.
        let mut lines =
            io::BufReader::new(io::Cursor::new(std::mem::take(&mut at.carry)).chain(&mut *reader));
        let mut line = Vec::new();
        let wanted = checker.visitor.members();
        let mut spans = vec![None; wanted.len()];
        while checker.report.last_sequence.is_some_and(|s| s < target) {
            line.clear();
            let n = io::BufRead::read_until(&mut lines, b'\n', &mut line)
                .map_err(|source| VerifyIoError { path: at.path.to_path_buf(), source })?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            let location = Location { file: at.path.clone(), line: at.next_line };
            at.next_line += 1;
            let line = &line[..line.len() - 1];
            let parsed = parse_reading(line, wanted, &mut spans);
            let found = matches!(parsed, Ok((_, true))).then_some(&spans[..]);
            if checker
                .check(parsed.map(|(summary, _)| summary), line, Members::new(line, found), location)
                .is_err()
            {
                return Ok(());
            }
        }
        return Ok(());
    }
    Ok(())
}

/// Fills `chunk` (a recycled buffer) with the carried-over partial line and up to `CHUNK_BYTES` more:
/// the complete lines or, at the end, whatever remains; a longer line is read whole. False at the end.
fn read_chunk(reader: &mut dyn Read, carry: &mut Vec<u8>, chunk: &mut Chunk) -> io::Result<bool> {
    let buffer = &mut chunk.buffer;
    let mut filled = carry.len();
    if buffer.len() < filled {
        buffer.resize(filled, 0);
    }
    buffer[..filled].copy_from_slice(carry);
    carry.clear();
    loop {
        let searched = filled;
        let target = filled + CHUNK_BYTES;
        if buffer.len() < target {
            buffer.resize(target, 0);
        }
        filled += fill(reader, &mut buffer[filled..target])?;
        // Bytes after the last newline are carried over; at the end of the file (for now) they are no
        // entry (yet): an interrupted write, or one still in progress.
        if let Some(last) = memchr::memrchr(b'\n', &buffer[searched..filled]) {
            let complete = searched + last + 1;
            carry.extend_from_slice(&buffer[complete..filled]);
            chunk.filled = complete;
            return Ok(true);
        }
        if filled < target {
            carry.extend_from_slice(&buffer[..filled]);
            chunk.filled = 0;
            return Ok(false);
        }
    }
}

/// Reads until `buf` is full or the reader ends; how many bytes it read.
fn fill(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match reader.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

type Parsed = Result<Summary, LineError>;

/// Where the lines of a chunk lie, without their newlines; a last line without one counts too.
fn line_ranges(data: &[u8]) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start == data.len() {
            return None;
        }
        let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |at| start + at);
        let line = start..end;
        start = (end + 1).min(data.len());
        Some(line)
    })
}

/// Orders files by the sequence number of their first line; empty files are dropped, and of two files
/// with the same content (a compressed copy beside the plain one it was made from) one is kept.
pub fn order_by_first_sequence(files: &[PathBuf]) -> Result<Vec<PathBuf>, VerifyIoError> {
    Ok(match in_order(files)? {
        Ordered::Files(files) => files,
        // Both stay: reading them shows the second as an insertion.
        Ordered::Duplicate { .. } => {
            let mut keyed = first_sequences(files)?;
            keyed.sort();
            keyed.into_iter().map(|(_, p)| p).collect()
        }
    })
}

enum Ordered {
    Files(Vec<PathBuf>),
    /// Two files start at entry `sequence` and their contents differ.
    Duplicate {
        sequence: u64,
        first: PathBuf,
        second: PathBuf,
    },
}

fn in_order(files: &[PathBuf]) -> Result<Ordered, VerifyIoError> {
    let mut keyed = first_sequences(files)?;
    keyed.sort();
    let mut out: Vec<(u64, PathBuf)> = Vec::with_capacity(keyed.len());
    for (sequence, path) in keyed {
        match out.last() {
            Some((previous, kept)) if *previous == sequence && sequence != u64::MAX => {
                if content_digest(kept)? != content_digest(&path)? {
                    return Ok(Ordered::Duplicate { sequence, first: kept.clone(), second: path });
                }
            }
            _ => out.push((sequence, path)),
        }
    }
    Ok(Ordered::Files(out.into_iter().map(|(_, p)| p).collect()))
}

/// Each non-empty file with the sequence of its first line (`u64::MAX` when that line has none).
fn first_sequences(files: &[PathBuf]) -> Result<Vec<(u64, PathBuf)>, VerifyIoError> {
    let mut keyed = Vec::new();
    for path in files {
        let io_err = |source| VerifyIoError { path: path.clone(), source };
        let mut reader = io::BufReader::new(open_reader(path, |_| {}).map_err(io_err)?);
        let mut first = Vec::new();
        io::BufRead::read_until(&mut reader, b'\n', &mut first).map_err(io_err)?;
        if first.is_empty() {
            continue;
        }
        let sequence = super::scan::common(first.trim_ascii_end()).map_or(u64::MAX, |c| c.sequence);
        keyed.push((sequence, path.clone()));
    }
    Ok(keyed)
}

/// SHA-256 of a file's decompressed content.
fn content_digest(path: &Path) -> Result<Digest, VerifyIoError> {
    let io_err = |source| VerifyIoError { path: path.to_owned(), source };
    let mut reader = open_reader(path, |_| {}).map_err(io_err)?;
    let mut hasher = sha2::Sha256::default();
    io::copy(&mut reader, &mut hasher).map_err(io_err)?;
    Ok(Digest(sha2::Digest::finalize(hasher).into()))
}

/// A sequence jump waiting for the next entry to tell deletion from reordering.
struct PendingJump {
    expected: u64,
    found: u64,
    location: Location,
}

struct Checker<'a> {
    opts: &'a VerifyOptions,
    head: Option<HeadFile>,
    head_hash_seen: Option<Digest>,
    report: Report,
    expected: Option<u64>,
    last_hash: Digest,
    last_location: Option<Location>,
    file_start: bool,
    key: Option<PublicKey>,
    log_id: Option<String>,
    /// Where verification started without an entry 0: (sequence, its prevHash).
    anchor: Option<(u64, Digest)>,
    last_checkpoint: Option<(u64, String)>,
    /// An `audit.clock_step` entry since the last checkpoint: the next may be dated earlier.
    clock_stepped: bool,
    /// An `audit.key_rotation` entry waiting for the previous key's checkpoint: (its sequence, where it
    /// was read, the new key).
    rotation: Option<(u64, Location, PublicKey)>,
    /// Retention entries: (`coveredFrom`, `lastSequence`, `lastHash`).
    retention: Vec<(u64, u64, Digest)>,
    jump: Option<PendingJump>,
    visitor: &'a mut dyn EntryVisitor,
}

impl<'a> Checker<'a> {
    fn new(opts: &'a VerifyOptions, head: Option<HeadFile>, visitor: &'a mut dyn EntryVisitor) -> Self {
        Checker {
            opts,
            // A head of size 0 (written before a new log's first entry) signs the genesis hash.
            head_hash_seen: head.as_ref().filter(|h| h.size == 0).map(|_| GENESIS),
            head,
            report: Report { key_source: opts.trusted_key.map(|_| KeySource::Trusted), ..Report::default() },
            expected: None,
            last_hash: GENESIS,
            last_location: None,
            file_start: false,
            key: opts.trusted_key,
            log_id: None,
            anchor: None,
            last_checkpoint: None,
            clock_stepped: false,
            rotation: None,
            retention: Vec::new(),
            jump: None,
            visitor,
        }
    }

    fn fail(&mut self, sequence: Option<u64>, location: Option<Location>, damage: Damage) -> Result<(), ()> {
        self.report.failure = Some(Failure { sequence, location, damage });
        Err(())
    }

    fn check(
        &mut self,
        parsed: Parsed,
        line: &[u8],
        members: Members<'_>,
        location: Location,
    ) -> Result<(), ()> {
        let summary = match parsed {
            Ok(summary) => summary,
            Err(LineError::HashMismatch { sequence: Some(s) })
                if self.opts.from.is_some_and(|from| s < from) =>
            {
                return Ok(())
            }
            Err(LineError::HashMismatch { sequence }) => {
                let sequence = sequence.or(self.expected);
                return self.fail(sequence, Some(location), Damage::ContentChanged);
            }
            Err(LineError::Malformed(reason)) => {
                return self.fail(self.expected, Some(location), Damage::Malformed { reason })
            }
        };
        if self.opts.from.is_some_and(|from| summary.sequence < from) {
            return Ok(());
        }
        if let Some(jump) = self.jump.take() {
            let damage = if summary.sequence < jump.found {
                Damage::Reordered { expected: jump.expected, found: jump.found }
            } else {
                Damage::Deleted { expected: jump.expected, found: jump.found }
            };
            return self.fail(Some(jump.expected), Some(jump.location), damage);
        }
        let file_start = std::mem::replace(&mut self.file_start, false);
        match self.expected {
            None => self.start(&summary, &location)?,
            Some(expected) if summary.sequence > expected && file_start => {
                return self.fail(
                    Some(expected),
                    Some(location),
                    Damage::MissingSegment { expected, found: summary.sequence },
                );
            }
            Some(expected) if summary.sequence > expected => {
                self.jump = Some(PendingJump { expected, found: summary.sequence, location });
                return Ok(());
            }
            Some(expected) if summary.sequence < expected => {
                return self.fail(
                    Some(summary.sequence),
                    Some(location),
                    Damage::Inserted { expected, found: summary.sequence },
                );
            }
            Some(_) if summary.prev != self.last_hash => {
                let previous = self.last_location.clone();
                return self.fail(summary.sequence.checked_sub(1), previous, Damage::Rehashed);
            }
            Some(_) => {}
        }
        self.check_kind(&summary, &location)?;
        self.accept(&summary, location);
        self.visitor.visit(&summary, line, members);
        Ok(())
    }

    /// The first entry verified: entry 0 must be the log start; a later one is an anchor that retention
    /// entries (or `--from`) must account for.
    fn start(&mut self, summary: &Summary, location: &Location) -> Result<(), ()> {
        self.report.first_sequence = Some(summary.sequence);
        if summary.sequence == 0 {
            let Kind::LogStart { log_id, public_key } = &summary.kind else {
                return self.fail(Some(0), Some(location.clone()), Damage::BadGenesis);
            };
            if summary.prev != GENESIS {
                return self.fail(Some(0), Some(location.clone()), Damage::BadGenesis);
            }
            let embedded = PublicKey::parse(public_key);
            match (self.key, embedded) {
                (Some(trusted), Some(embedded)) if trusted != embedded => {
                    return self.fail(
                        Some(0),
                        Some(location.clone()),
                        Damage::WrongKey { key: embedded.to_text() },
                    );
                }
                (Some(_), _) => {}
                (None, Some(embedded)) => {
                    self.key = Some(embedded);
                    self.report.key_source = Some(KeySource::Embedded);
                }
                (None, None) => {
                    return self.fail(
                        Some(0),
                        Some(location.clone()),
                        Damage::Malformed { reason: "bad publicKey".into() },
                    );
                }
            }
            self.log_id = Some(log_id.clone());
        } else {
            self.anchor = Some((summary.sequence, summary.prev));
        }
        Ok(())
    }

    fn check_kind(&mut self, summary: &Summary, location: &Location) -> Result<(), ()> {
        let seq = summary.sequence;
        if let Some((rotated_at, rotated_location, new_key)) = self.rotation.take() {
            let signed = matches!(&summary.kind, Kind::Checkpoint { trigger, .. } if trigger == KEY_ROTATION);
            if !signed {
                return self.fail(Some(rotated_at), Some(rotated_location), Damage::UnsignedKeyRotation);
            }
            // Checked with the previous key first; later checkpoints and the head with the new one.
            self.check_checkpoint(summary, location)?;
            self.key = Some(new_key);
            return Ok(());
        }
        match &summary.kind {
            Kind::LogStart { .. } if seq != 0 => self.fail(
                Some(seq),
                Some(location.clone()),
                Damage::Malformed { reason: "a second log start".into() },
            ),
            Kind::Checkpoint { trigger, .. } if trigger == KEY_ROTATION => self.fail(
                Some(seq),
                Some(location.clone()),
                Damage::Malformed {
                    reason: "a key_rotation checkpoint without a key rotation before it".into(),
                },
            ),
            Kind::Checkpoint { .. } => self.check_checkpoint(summary, location),
            Kind::RetentionDelete { covered_from, last, last_hash } => {
                self.retention.push((*covered_from, *last, *last_hash));
                self.report.retention_deletions += 1;
                Ok(())
            }
            Kind::TamperDetected { kind, signed_size, found_size } => {
                let damage = Damage::TamperRecorded {
                    kind: kind.clone(),
                    signed_size: *signed_size,
                    found_size: *found_size,
                };
                self.incident(Incident::TamperDetected, seq, location, damage)
            }
            Kind::HeadMissing => {
                self.incident(Incident::HeadMissing, seq, location, Damage::HeadMissingRecorded)
            }
            Kind::KeyRotation { key_id, public_key } => match PublicKey::parse(public_key) {
                Some(key) if key.key_id() == *key_id => {
                    self.rotation = Some((seq, location.clone(), key));
                    Ok(())
                }
                _ => self.fail(
                    Some(seq),
                    Some(location.clone()),
                    Damage::Malformed { reason: "key rotation with a bad publicKey or keyId".into() },
                ),
            },
            Kind::ClockStep => {
                self.clock_stepped = true;
                Ok(())
            }
            Kind::Gap { from_kernel_seq, to_kernel_seq } => {
                self.report.gaps += 1;
                self.report.lost_kernel_events += to_kernel_seq.saturating_sub(*from_kernel_seq) + 1;
                Ok(())
            }
            Kind::LogStart { .. }
            | Kind::Plain { .. }
            | Kind::SegmentStart { .. }
            | Kind::KernelSessionStart => Ok(()),
        }
    }

    /// An incident the writer recorded fails verification unless the operator accepted it.
    fn incident(
        &mut self,
        incident: Incident,
        seq: u64,
        location: &Location,
        damage: Damage,
    ) -> Result<(), ()> {
        let acceptance = Acceptance { incident, sequence: seq };
        if self.opts.accept.contains(&acceptance) {
            self.report.accepted.push(acceptance);
            return Ok(());
        }
        self.fail(Some(seq), Some(location.clone()), damage)
    }

    fn check_checkpoint(&mut self, summary: &Summary, location: &Location) -> Result<(), ()> {
        let seq = summary.sequence;
        match &summary.kind {
            Kind::Checkpoint { log_id, key_id, signature, trigger, timestamp } => {
                let Some(key) = self.key else {
                    return self.fail(Some(seq), Some(location.clone()), Damage::NoKey);
                };
                if Digest::parse(key_id) != Some(key.key_id()) {
                    return self.fail(
                        Some(seq),
                        Some(location.clone()),
                        Damage::WrongKey { key: key_id.clone() },
                    );
                }
                if self.log_id.get_or_insert_with(|| log_id.clone()) != log_id {
                    return self.fail(
                        Some(seq),
                        Some(location.clone()),
                        Damage::OtherLog { log_id: log_id.clone() },
                    );
                }
                let statement = HeadStatement {
                    log_id,
                    key_id: key.key_id(),
                    size: seq,
                    head: summary.prev,
                    time: timestamp,
                    reason: trigger,
                };
                if trigger == super::signing::HEAD_REASON || !key.verifies(&statement, signature) {
                    let from = self
                        .last_checkpoint
                        .as_ref()
                        .map_or(self.report.first_sequence.unwrap_or(0), |(s, _)| s + 1);
                    return self.fail(
                        Some(seq),
                        Some(location.clone()),
                        Damage::Relinked { from, to: seq.saturating_sub(1) },
                    );
                }
                // Timestamps have one fixed form, so text order is time order.
                let regressed =
                    self.last_checkpoint.as_ref().is_some_and(|(_, t)| t.as_str() > timestamp.as_str());
                if regressed && !self.clock_stepped {
                    return self.fail(Some(seq), Some(location.clone()), Damage::CheckpointTimeRegressed);
                }
                self.clock_stepped = false;
                self.last_checkpoint = Some((seq, timestamp.clone()));
                self.report.checkpoints += 1;
                self.report.signed_through = Some(seq);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn accept(&mut self, summary: &Summary, location: Location) {
        self.report.entries += 1;
        self.report.last_sequence = Some(summary.sequence);
        self.expected = Some(summary.sequence + 1);
        self.last_hash = summary.hash;
        self.last_location = Some(location);
        if self.head.as_ref().is_some_and(|h| h.size == summary.sequence + 1) {
            self.head_hash_seen = Some(summary.hash);
        }
    }

    /// End-of-log checks: pending jump, retention anchor, head file, unsigned tail.
    fn finish(&mut self) {
        if self.report.failure.is_some() {
            return;
        }
        if let Some(jump) = self.jump.take() {
            let damage = Damage::Deleted { expected: jump.expected, found: jump.found };
            let _ = self.fail(Some(jump.expected), Some(jump.location), damage);
            return;
        }
        if let Some((rotated_at, location, _)) = self.rotation.take() {
            let _ = self.fail(Some(rotated_at), Some(location), Damage::UnsignedKeyRotation);
            return;
        }
        let Some(last) = self.report.last_sequence else {
            let _ = self.fail(None, None, Damage::Empty);
            return;
        };
        if let Some((first, prev)) = self.anchor {
            if self.opts.from.is_none() && !self.retention_covers(first, prev) {
                let _ = self.fail(Some(0), None, Damage::MissingHistory { first });
                return;
            }
        }
        if self.check_head(last).is_err() {
            return;
        }
        let signed = self.report.signed_through;
        if signed.is_none_or(|s| s < last) {
            let from = signed.map_or(self.report.first_sequence.unwrap_or(0), |s| s + 1);
            let _ = self.fail(Some(from), None, Damage::UnsignedTail { from, to: last });
        }
    }

    /// Whether signed retention entries account for every entry before `first`: one records deleting
    /// up to `first - 1` with the hash `first` links to, and its coverage reaches back to entry 0, directly
    /// (`coveredFrom` = 0) or through entries that cover what comes before it.
    fn retention_covers(&self, first: u64, prev: Digest) -> bool {
        let newest = self.retention.iter().filter(|r| r.1 + 1 == first && r.2 == prev).map(|r| r.0).min();
        let Some(mut from) = newest else { return false };
        // Each step moves `from` down strictly, so this ends.
        while from > 0 {
            match self.retention.iter().filter(|r| r.1 + 1 == from && r.0 < from).map(|r| r.0).min() {
                Some(earlier) => from = earlier,
                None => return false,
            }
        }
        true
    }

    fn head_statement_ok(&self, head: &HeadFile) -> Result<(), String> {
        let Some(statement) = head.statement() else { return Err("unreadable statement".into()) };
        let Some(key) = self.key else { return Err("no key to check it".into()) };
        if self.log_id.as_deref() != Some(head.log_id.as_str()) {
            return Err(format!("it belongs to log {}, not to this one", head.log_id));
        }
        if statement.key_id != key.key_id() || !key.verifies(&statement, &head.signature) {
            return Err("its signature is not by the trusted key".into());
        }
        Ok(())
    }

    fn check_head(&mut self, last: u64) -> Result<(), ()> {
        let Some(head) = self.head.clone() else { return Ok(()) };
        if let Err(reason) = self.head_statement_ok(&head) {
            return self.fail(None, None, Damage::BadHead { reason });
        }
        if self.opts.from.is_some_and(|from| head.size <= from) {
            return Ok(());
        }
        let found_size = last + 1;
        if head.size > found_size {
            return self.fail(
                Some(found_size),
                None,
                Damage::Truncated { signed_size: head.size, found_size },
            );
        }
        if self.head_hash_seen.map(|h| h.to_string()) != Some(head.head.clone()) {
            return self.fail(
                head.size.checked_sub(1),
                None,
                Damage::HeadMismatch { signed_size: head.size },
            );
        }
        let through = self.report.signed_through.max(head.size.checked_sub(1));
        self.report.signed_through = through;
        Ok(())
    }

    /// Whether entries read so far lack a signature (a running writer may sign them shortly).
    fn unsigned_tail(&self) -> bool {
        self.report.failure.is_none()
            && self.jump.is_none()
            && self
                .report
                .last_sequence
                .is_some_and(|last| self.report.signed_through.is_none_or(|s| s < last))
    }
}

/// All files of the log whose active segment is `active` (rotated ones beside it), in order.
pub fn log_files(active: &Path) -> io::Result<Vec<PathBuf>> {
    let name = super::segment::LogName::of_active(active);
    Ok(name.list()?.into_iter().map(|s| s.path).collect())
}

//! Reading a log's entries back by sequence number, across the active and rotated (compressed)
//! segments, each line checked against its own hash and linked to the one before: the one reader that
//! destinations (and other consumers of the chain) share.
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use super::chain::Digest;
use super::parse::{self, LineError};
use super::scan;
use super::segment::{open_reader, LogName, Segment};

/// One entry as written: its sequence, its hash and the exact line (without the newline).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainEntry {
    pub sequence: u64,
    pub hash: Digest,
    pub line: Vec<u8>,
}

impl ChainEntry {
    /// The line as text (the writer only writes UTF-8).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.line)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The log does not hold what the chain promises at `sequence`.
    #[error("{path}: entry {sequence}: {reason}")]
    Damaged { path: PathBuf, sequence: u64, reason: String },
    /// Retention deleted `wanted` (and what follows up to `first_available`) before it was read.
    #[error("entry {wanted} is no longer in the log: its first entry is {first_available}")]
    Deleted { wanted: u64, first_available: u64 },
}

/// A segment being read, with the segments that follow it.
struct Open {
    path: PathBuf,
    reader: BufReader<Box<dyn Read + Send>>,
    /// The last segment listed: the active one, which may still grow.
    growing: bool,
    following: Vec<Segment>,
    /// The start of a line still being written.
    partial: Vec<u8>,
}

/// Reads entries by sequence; keeps its place, so that reading on from where it stopped costs only the
/// new lines.
pub struct ChainReader {
    name: LogName,
    open: Option<Open>,
    /// Sequence of the next entry to yield, and the hash of the entry before it when known.
    next: u64,
    prev: Option<Digest>,
    /// Whether the open segment's next line is entry `next` (false while skipping to it).
    positioned: bool,
    /// Whether the open segment was chosen from a listing made for `next` (rather than taken from an
    /// older listing, whose active segment may since have been rotated away).
    fresh: bool,
}

/// What one line is to the reader.
enum Line {
    Entry(ChainEntry),
    /// Before the entry wanted.
    Skipped,
    /// After the entry wanted: the segment does not hold it.
    Ahead(u64),
}

impl ChainReader {
    /// A reader of the log whose active segment is `active`.
    pub fn new(active: &Path) -> Self {
        ChainReader {
            name: LogName::of_active(active),
            open: None,
            next: 0,
            prev: None,
            positioned: false,
            fresh: false,
        }
    }

    /// Up to `max` entries from `from` on, none at or beyond `until`; fewer (even none) when the log does
    /// not hold them yet. Each entry's hash is checked and each links to the one before it.
    pub fn read(&mut self, from: u64, until: u64, max: usize) -> Result<Vec<ChainEntry>, ReadError> {
        let mut out = Vec::new();
        if from >= until || max == 0 {
            return Ok(out);
        }
        if self.open.is_none() || self.next != from {
            self.locate(from)?;
        }
        let mut relocated = false;
        let mut fresh_misses = 0u8;
        let mut line = Vec::new();
        while out.len() < max && self.next < until {
            let Some(open) = self.open.as_mut() else { break };
            line.clear();
            line.append(&mut open.partial);
            let read = open.reader.read_until(b'\n', &mut line).map_err(|e| io_error(&open.path, e))?;
            if read == 0 || line.last() != Some(&b'\n') {
                open.partial.append(&mut line);
                if !open.growing {
                    self.advance_segment()?;
                    continue;
                }
                // The active segment ends here, yet entries below `until` (durable, so written) are
                // wanted: it was rotated away while we read. Find them once per call.
                if relocated {
                    break;
                }
                relocated = true;
                self.locate(self.next)?;
                continue;
            }
            line.pop();
            match self.accept(&line)? {
                Line::Entry(entry) => out.push(entry),
                Line::Skipped => {}
                Line::Ahead(first_available) => {
                    // Listings made for this very entry keep missing it (not a rotation racing the
                    // listing): retention deleted it.
                    fresh_misses += u8::from(self.fresh);
                    if fresh_misses >= 3 {
                        return Err(ReadError::Deleted { wanted: self.next, first_available });
                    }
                    self.locate(self.next)?;
                }
            }
        }
        Ok(out)
    }

    /// Checks one complete line; `None` for lines before `next` (skipped while finding the place).
    fn accept(&mut self, line: &[u8]) -> Result<Line, ReadError> {
        let path = self.open.as_ref().map(|o| o.path.clone()).unwrap_or_default();
        let damaged =
            |sequence: u64, reason: String| ReadError::Damaged { path: path.clone(), sequence, reason };
        if !self.positioned {
            // Still looking for `next`: the sequence is enough to skip a line.
            let sequence = scan::common(line).map_err(|e| damaged(self.next, e))?.sequence;
            if sequence < self.next {
                return Ok(Line::Skipped);
            }
            if sequence > self.next {
                return Ok(Line::Ahead(sequence));
            }
            self.positioned = true;
        }
        let summary = parse::parse(line).map_err(|e| match e {
            LineError::HashMismatch { .. } => damaged(self.next, "content does not match its hash".into()),
            LineError::Malformed(reason) => damaged(self.next, reason),
        })?;
        if summary.sequence != self.next {
            return Err(damaged(self.next, format!("sequence {} found instead", summary.sequence)));
        }
        if self.prev.is_some_and(|prev| prev != summary.prev) {
            return Err(damaged(self.next, format!("prevHash does not link to entry {}", self.next - 1)));
        }
        self.next += 1;
        self.prev = Some(summary.hash);
        Ok(Line::Entry(ChainEntry { sequence: summary.sequence, hash: summary.hash, line: line.to_vec() }))
    }

    /// Opens the segment that holds `from` (the last one named as starting at or before it) and the
    /// ones after it; keeps the link to the previous entry when `from` continues where reading was.
    fn locate(&mut self, from: u64) -> Result<(), ReadError> {
        if from != self.next {
            self.prev = None;
            self.next = from;
        }
        self.positioned = false;
        self.fresh = true;
        let dir_error = |e| io_error(&self.name.active(), e);
        let segments = self.name.list().map_err(dir_error)?;
        let start =
            segments.iter().rposition(|s| s.first_seq.is_some_and(|first| first <= from)).unwrap_or(0);
        let mut remaining: Vec<Segment> = segments[start..].to_vec();
        remaining.reverse();
        self.open = None;
        self.open_next(remaining)
    }

    /// Moves on from a finished rotated segment to the next one.
    fn advance_segment(&mut self) -> Result<(), ReadError> {
        let following = self.open.take().map(|o| o.following).unwrap_or_default();
        self.positioned = false;
        self.fresh = false;
        self.open_next(following)
    }

    /// Opens the last of `remaining` (kept in reverse order); a file compressed away meanwhile is found
    /// again by listing.
    fn open_next(&mut self, mut remaining: Vec<Segment>) -> Result<(), ReadError> {
        let Some(segment) = remaining.pop() else { return Ok(()) };
        match open_reader(&segment.path, |_| {}) {
            Ok(reader) => {
                self.open = Some(Open {
                    path: segment.path,
                    reader: BufReader::with_capacity(256 << 10, reader),
                    growing: remaining.is_empty(),
                    following: remaining,
                    partial: Vec::new(),
                });
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let segments = self.name.list().map_err(|e| io_error(&segment.path, e))?;
                let mut again: Vec<Segment> = segments
                    .into_iter()
                    .filter(|s| s.first_seq.is_none() || s.first_seq >= segment.first_seq)
                    .collect();
                again.reverse();
                if again.is_empty() {
                    return Ok(());
                }
                self.open_next(again)
            }
            Err(e) => Err(io_error(&segment.path, e)),
        }
    }
}

fn io_error(path: &Path, source: io::Error) -> ReadError {
    ReadError::Io { path: path.to_owned(), source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::segment::Compression;
    use crate::audit::synthetic::record;
    use crate::audit::{AuditWriter, WriterOptions};

    fn write_log(dir: &Path, actions: u64, rotate: Option<u64>, compression: Compression) -> PathBuf {
        let active = dir.join("log/audit.jsonl");
        let mut opts = WriterOptions::new(&active).with_state_dir(&dir.join("state"));
        opts.max_segment_bytes = rotate;
        opts.compression = compression;
        let mut writer = AuditWriter::open(opts).unwrap();
        for k in 0..actions {
            writer.append(&record(k));
            // Commit (not just tick) so that rotation, which follows durable size, happens at a known pace.
            if k % 50 == 49 {
                writer.commit().unwrap();
            }
        }
        writer.close().unwrap();
        active
    }

    fn sequences(entries: &[ChainEntry]) -> Vec<u64> {
        entries.iter().map(|e| e.sequence).collect()
    }

    #[test]
    fn reads_any_range_across_rotated_and_compressed_segments() {
        let dir = tempfile::tempdir().unwrap();
        let active = write_log(dir.path(), 2000, Some(16 << 10), Compression::Zstd);
        let segments = LogName::of_active(&active).list().unwrap();
        assert!(segments.len() > 3, "the log should have rotated: {segments:?}");
        assert!(segments.iter().any(|s| s.compression == Compression::Zstd));
        let mut reader = ChainReader::new(&active);
        // All of it in batches, then a jump back and forward.
        let mut next = 0;
        loop {
            let batch = reader.read(next, u64::MAX, 333).unwrap();
            if batch.is_empty() {
                break;
            }
            assert_eq!(batch[0].sequence, next);
            assert_eq!(sequences(&batch), (next..next + batch.len() as u64).collect::<Vec<_>>());
            next += batch.len() as u64;
        }
        assert!(next > 2000, "{next}");
        for from in [1500, 7, next - 1] {
            let batch = reader.read(from, from + 5, 100).unwrap();
            assert_eq!(batch[0].sequence, from);
            assert!(batch.len() <= 5);
            let value: serde_json::Value = serde_json::from_slice(&batch[0].line).unwrap();
            assert_eq!(value["sequence"], from);
        }
        assert!(reader.read(next, u64::MAX, 10).unwrap().is_empty());
    }

    #[test]
    fn a_changed_entry_is_reported_not_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let active = write_log(dir.path(), 20, None, Compression::None);
        let text = std::fs::read_to_string(&active).unwrap();
        std::fs::write(&active, text.replacen("module_4.rs", "module_6.rs", 1)).unwrap();
        let error = ChainReader::new(&active).read(0, u64::MAX, 100).unwrap_err();
        assert!(matches!(&error, ReadError::Damaged { reason, .. } if reason.contains("hash")), "{error}");
    }

    #[test]
    fn a_missing_beginning_says_what_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let active = write_log(dir.path(), 2000, Some(64 << 10), Compression::None);
        let first = LogName::of_active(&active).list().unwrap().remove(0);
        std::fs::remove_file(&first.path).unwrap();
        let error = ChainReader::new(&active).read(0, u64::MAX, 10).unwrap_err();
        assert!(matches!(error, ReadError::Deleted { wanted: 0, first_available } if first_available > 0));
    }
}

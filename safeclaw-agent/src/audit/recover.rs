//! Reading the end of an existing log when the writer opens it: where the chain stands, which kernel
//! sequence was last recorded, whether a crash left half a line, and whether the log still reaches the
//! signed head kept outside it.
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use super::chain::Digest;
use super::parse::{parse_reading, Kind, Summary};
use super::segment::{open_reader, Segment};
use super::sequence::SessionTail;
use super::signing::{HeadFile, PublicKey, KEY_ROTATION};

/// Where the chain of one segment ends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentEnd {
    /// The last entry that parsed and hashed correctly: (sequence, hash).
    pub last: Option<(u64, Digest)>,
    pub first_sequence: Option<u64>,
    pub log_id: Option<String>,
    /// Kernel sequence of the last recorded event (`None` after a kernel session start).
    pub last_kernel_seq: Option<u64>,
    /// Bytes up to and including the last newline.
    pub complete_len: u64,
    /// Bytes after the last newline (a write the crash interrupted).
    pub partial_len: u64,
    /// Complete lines that did not parse or hash.
    pub corrupt_lines: u64,
    /// Entries after the last checkpoint.
    pub since_checkpoint: u64,
    /// Hash of the entry with the sequence asked for, if the segment holds it.
    pub hash_at_probe: Option<Digest>,
    /// Timestamp of the last entry.
    pub last_timestamp: Option<String>,
    /// The kernel sequences the current kernel session recorded or lost in this segment.
    pub session: SessionTail,
    /// Id of the key that signs this segment's last checkpoints (named by the log start, a key rotation
    /// or a checkpoint).
    pub key_id: Option<Digest>,
    /// Time of the last checkpoint.
    pub last_checkpoint_time: Option<String>,
    /// Deletions the retention entries in this segment account for: (`coveredFrom`, `lastSequence`).
    pub retention: Vec<(u64, u64)>,
}

impl SegmentEnd {
    /// Takes what the segment before this one knows and this one does not: the key and the last
    /// checkpoint's time (the session is followed separately).
    pub fn inherit(&mut self, before: &SegmentEnd) {
        self.key_id = self.key_id.or(before.key_id);
        if self.last_checkpoint_time.is_none() {
            self.last_checkpoint_time.clone_from(&before.last_checkpoint_time);
        }
    }

    /// Whether the key or the last checkpoint's time must come from an earlier segment.
    pub fn wants_earlier(&self) -> bool {
        self.session.wants_earlier() || self.key_id.is_none() || self.last_checkpoint_time.is_none()
    }
}

/// Reads `segment` to its end; `probe` asks for the hash of one sequence number.
pub fn scan(segment: &Segment, probe: Option<u64>) -> io::Result<SegmentEnd> {
    let mut reader = BufReader::with_capacity(1 << 20, open_reader(&segment.path, |_| {})?);
    let mut end = SegmentEnd::default();
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            end.partial_len = n as u64;
            break;
        }
        end.complete_len += n as u64;
        let body = &line[..line.len() - 1];
        let mut repeats = [None];
        match parse_reading(body, &["repeats"], &mut repeats) {
            Ok((summary, found)) => {
                record(&mut end, &summary, probe, body);
                if let Some(of) = repeats[0].filter(|_| found).and_then(|span| repeats_of(body, span)) {
                    end.session.record_repeats(of);
                }
            }
            Err(_) => end.corrupt_lines += 1,
        }
    }
    Ok(end)
}

fn record(end: &mut SegmentEnd, summary: &Summary, probe: Option<u64>, line: &[u8]) {
    end.first_sequence.get_or_insert(summary.sequence);
    end.last = Some((summary.sequence, summary.hash));
    end.since_checkpoint += 1;
    if probe == Some(summary.sequence) {
        end.hash_at_probe = Some(summary.hash);
    }
    match &summary.kind {
        Kind::Plain { kernel_seq: Some(k) } => {
            end.last_kernel_seq = Some(*k);
            end.session.record(*k);
        }
        Kind::Plain { kernel_seq: None }
        | Kind::TamperDetected { .. }
        | Kind::HeadMissing
        | Kind::ClockStep => {}
        Kind::RetentionDelete { covered_from, last, .. } => end.retention.push((*covered_from, *last)),
        Kind::KeyRotation { key_id, .. } => end.key_id = Some(*key_id),
        Kind::Gap { from_kernel_seq, to_kernel_seq } => {
            end.last_kernel_seq = Some(*to_kernel_seq);
            end.session.lose(*from_kernel_seq..=*to_kernel_seq);
        }
        Kind::KernelSessionStart => {
            end.last_kernel_seq = None;
            end.session.start_session();
        }
        Kind::SegmentStart { last_kernel_seq, log_id } => {
            end.last_kernel_seq = *last_kernel_seq;
            end.session.start_segment();
            end.log_id = Some(log_id.clone());
        }
        Kind::LogStart { log_id, public_key } => {
            end.log_id = Some(log_id.clone());
            end.key_id = PublicKey::parse(public_key).map(|k| k.key_id());
        }
        Kind::Checkpoint { log_id, key_id, trigger, timestamp, .. } => {
            end.log_id = Some(log_id.clone());
            end.since_checkpoint = 0;
            end.last_checkpoint_time = Some(timestamp.clone());
            // A key rotation's checkpoint is the previous key's last signature.
            if trigger != KEY_ROTATION {
                end.key_id = Digest::parse(key_id).or(end.key_id);
            }
        }
    }
    end.last_timestamp = timestamp_of(line);
}

/// `repeats.ofKernelSeq` of an entry of counted repeats, whose `repeats` member spans `span` of `line`.
fn repeats_of(line: &[u8], (start, end): super::scan::Span) -> Option<u64> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Repeats {
        of_kernel_seq: u64,
    }
    let value = line.get(start as usize..end as usize)?;
    serde_json::from_slice::<Repeats>(value).ok().map(|r| r.of_kernel_seq)
}

fn timestamp_of(line: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Stamp {
        timestamp: String,
    }
    serde_json::from_slice::<Stamp>(line).ok().map(|s| s.timestamp)
}

/// How the log found at open relates to the signed head file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadCheck {
    /// The log reaches the head and agrees with it (or the head lies in an older segment we did not read).
    Consistent,
    Missing,
    /// The log ends before the signed size: entries were cut off.
    Truncated {
        signed_size: u64,
        signed_head: Digest,
        found_size: u64,
    },
    /// The entry at the signed position differs from what was signed.
    Mismatch {
        signed_size: u64,
        signed_head: Digest,
        found_size: u64,
    },
    /// The head file belongs to another log (or to a log that disappeared).
    OtherLog {
        signed_size: u64,
        signed_head: Digest,
        found_size: u64,
    },
}

/// Compares the scanned end of the log (`found_size` entries) with the head file.
pub fn check_head(
    head: Option<&HeadFile>,
    log_id: Option<&str>,
    end: &SegmentEnd,
    found_size: u64,
) -> HeadCheck {
    let Some(head) = head else { return HeadCheck::Missing };
    let Some(statement) = head.statement() else { return HeadCheck::Missing };
    let signed = (statement.size, statement.head);
    if log_id != Some(head.log_id.as_str()) {
        return HeadCheck::OtherLog { signed_size: signed.0, signed_head: signed.1, found_size };
    }
    if statement.size > found_size {
        return HeadCheck::Truncated { signed_size: signed.0, signed_head: signed.1, found_size };
    }
    match end.hash_at_probe {
        Some(hash) if hash != statement.head => {
            HeadCheck::Mismatch { signed_size: signed.0, signed_head: signed.1, found_size }
        }
        _ => HeadCheck::Consistent,
    }
}

/// Whether `path` exists and holds at least one byte.
pub fn non_empty(path: &Path) -> bool {
    std::fs::metadata(path).map(|m| m.len() > 0).unwrap_or(false)
}

//! Retention: which whole rotated segments are older than the configured period. Only a prefix of the
//! log is ever deleted, so what remains is one unbroken chain.
use std::io;
use std::time::{Duration, SystemTime};

use super::chain::Digest;
use super::clock;
use super::recover::scan;
use super::segment::Segment;

/// How long entries are kept, and the config text that said so (recorded in deletion entries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionRule {
    pub keep: Duration,
    pub label: String,
}

/// A segment whose newest entry is older than the retention period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expired {
    pub segment: Segment,
    pub first: u64,
    pub last: u64,
    pub last_hash: Digest,
    pub last_time: String,
}

/// The oldest rotated segments whose last entry is before `now - rule.keep`, oldest first, stopping at the
/// first one that is not (or that cannot be read: it is kept).
pub fn expired(segments: &[Segment], rule: &RetentionRule, now: SystemTime) -> io::Result<Vec<Expired>> {
    let Some(cutoff) = now.checked_sub(rule.keep) else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for segment in segments.iter().filter(|s| s.first_seq.is_some()) {
        // The file was last written at rotation, when its last entry was made: a cheap first filter.
        if std::fs::metadata(&segment.path)?.modified()? > cutoff {
            break;
        }
        let end = scan(segment, None)?;
        let (Some(first), Some((last, last_hash)), Some(last_time)) =
            (end.first_sequence, end.last, end.last_timestamp)
        else {
            break;
        };
        if end.corrupt_lines > 0 || end.partial_len > 0 || clock::parse(&last_time).is_none_or(|t| t > cutoff)
        {
            break;
        }
        out.push(Expired { segment: segment.clone(), first, last, last_hash, last_time });
    }
    Ok(out)
}

/// Names `retention.overrides` accepts: the report frameworks, GDPR, financial record keeping (SOX and
/// similar) and legal holds. An unknown name is refused, so a misspelt `hipa: 6y` cannot silently
/// leave a log under a shorter period than intended.
pub const RETENTION_FRAMEWORKS: [&str; 8] =
    ["financial", "gdpr", "hipaa", "iso27001", "legal", "pci-dss", "soc2", "sox"];

/// A framework name of `retention.overrides`.
/// Deserialized in `crate::config`, which places a refused name at its line.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RetentionFramework(String);

impl TryFrom<String> for RetentionFramework {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        if RETENTION_FRAMEWORKS.contains(&name.as_str()) {
            Ok(RetentionFramework(name))
        } else {
            Err(format!("unknown retention framework {name:?}; known: {}", RETENTION_FRAMEWORKS.join(", ")))
        }
    }
}

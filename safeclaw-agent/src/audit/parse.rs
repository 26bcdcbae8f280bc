//! Reading sealed lines back: the hash check and the few fields that verification and recovery need,
//! parsed without building the whole entry.
use std::borrow::Cow;

use serde::Deserialize;

use super::chain::{unseal, Digest, HASH_SUFFIX_LEN};
use super::entry::{write_writer_event, Header, WriterEvent};
use super::scan;

/// Everything, for the entries verification and recovery look into.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    #[serde(borrow)]
    details: Option<Details<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Details<'a> {
    #[serde(borrow)]
    format: Option<Cow<'a, str>>,
    #[serde(borrow)]
    log_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    public_key: Option<Cow<'a, str>>,
    #[serde(borrow)]
    key_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    signature: Option<Cow<'a, str>>,
    #[serde(borrow)]
    trigger: Option<Cow<'a, str>>,
    first_sequence: Option<u64>,
    covered_from: Option<u64>,
    last_sequence: Option<u64>,
    #[serde(borrow)]
    last_hash: Option<Cow<'a, str>>,
    last_kernel_seq: Option<u64>,
    from_kernel_seq: Option<u64>,
    to_kernel_seq: Option<u64>,
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    signed_size: Option<u64>,
    found_size: Option<u64>,
}

/// What one line says, once its hash has been checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub sequence: u64,
    pub prev: Digest,
    pub hash: Digest,
    pub kind: Kind,
}

/// The entry kinds verification and recovery treat specially.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An attempt (or any lifecycle entry with nothing to check), with its kernel sequence if any.
    Plain {
        kernel_seq: Option<u64>,
    },
    LogStart {
        log_id: String,
        public_key: String,
    },
    Checkpoint {
        log_id: String,
        key_id: String,
        signature: String,
        trigger: String,
        timestamp: String,
    },
    SegmentStart {
        log_id: String,
        last_kernel_seq: Option<u64>,
    },
    KernelSessionStart,
    Gap {
        from_kernel_seq: u64,
        to_kernel_seq: u64,
    },
    RetentionDelete {
        /// Lowest sequence whose deletion the log accounts for, this entry's segment included
        /// (`coveredFrom`; entries of format 1 without it cover their own segment only).
        covered_from: u64,
        last: u64,
        last_hash: Digest,
    },
    TamperDetected {
        kind: String,
        signed_size: u64,
        found_size: u64,
    },
    /// The writer found the log but not its head file.
    HeadMissing,
    /// Checkpoints after the next one (which the previous key signs) are signed by `key_id`.
    KeyRotation {
        key_id: Digest,
        public_key: String,
    },
    /// The wall clock went back before the previous checkpoint's time.
    ClockStep,
}

/// Why a line could not be read as a sealed entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("not a sealed entry: {0}")]
    Malformed(String),
    /// The line's bytes do not hash to the hash it carries: `sequence` is what the line claims, if readable.
    #[error("content does not match its hash")]
    HashMismatch { sequence: Option<u64> },
}

fn missing(action: &str, field: &str) -> LineError {
    LineError::Malformed(format!("{action} entry without details.{field}"))
}

/// Checks one line (without its newline) and extracts its summary.
pub fn parse(line: &[u8]) -> Result<Summary, LineError> {
    parse_reading(line, &[], &mut []).map(|(summary, _)| summary)
}

/// `parse`, finding in the same pass the raw values of the top-level members `names` for a reader of the
/// entry (see `scan::common_and_members`; the flag says whether they were found).
pub fn parse_reading(
    line: &[u8],
    names: &[&str],
    spans: &mut [Option<scan::Span>],
) -> Result<(Summary, bool), LineError> {
    let Some((body, claimed)) = unseal(line) else {
        return Err(LineError::Malformed("does not end in a \"hash\":\"sha256:…\" member".into()));
    };
    let (common, found) = match scan::common_and_members(line, names, spans) {
        Ok(read) => read,
        Err(reason) => {
            let sequence =
                serde_json::from_slice::<serde_json::Value>(line).ok().and_then(|v| v["sequence"].as_u64());
            // A parseable line whose fields were altered still fails the hash first: say so.
            if sequence.is_some() && body.digest() != claimed {
                return Err(LineError::HashMismatch { sequence });
            }
            return Err(LineError::Malformed(reason));
        }
    };
    // The line scanned as one object and ends in the 82-byte hash member, so that member is its last,
    // top-level member (a JSON parser keeps the last of duplicate keys, as Python's does).
    if body.digest() != claimed {
        return Err(LineError::HashMismatch { sequence: Some(common.sequence) });
    }
    let prev = Digest::parse(common.prev_hash).ok_or_else(|| LineError::Malformed("bad prevHash".into()))?;
    let summary = |kind| (Summary { sequence: common.sequence, prev, hash: claimed, kind }, found);
    if !common.action.starts_with("audit.") && !common.action.starts_with("kernel.") {
        return Ok(summary(Kind::Plain { kernel_seq: common.kernel_seq }));
    }
    // The few entries verification looks into are parsed in full, as strict JSON.
    let fields: Fields<'_> = serde_json::from_slice(line).map_err(|e| LineError::Malformed(e.to_string()))?;
    let d = fields.details.unwrap_or_default();
    let action = common.action;
    let text = |value: Option<Cow<'_, str>>, name: &str| {
        value.map(Cow::into_owned).ok_or_else(|| missing(action, name))
    };
    let kind = match action {
        "audit.log_start" => {
            let format = text(d.format, "format")?;
            if !super::FORMATS.contains(&format.as_str()) {
                return Err(LineError::Malformed(format!(
                    "format {format:?} is not one this verifier knows"
                )));
            }
            Kind::LogStart { log_id: text(d.log_id, "logId")?, public_key: text(d.public_key, "publicKey")? }
        }
        "audit.checkpoint" => {
            let kind = Kind::Checkpoint {
                log_id: text(d.log_id, "logId")?,
                key_id: text(d.key_id, "keyId")?,
                signature: text(d.signature, "signature")?,
                trigger: text(d.trigger, "trigger")?,
                timestamp: fields.timestamp.into_owned(),
            };
            check_checkpoint_form(line, common.sequence, prev, &kind)?;
            kind
        }
        "audit.head_missing" => Kind::HeadMissing,
        "audit.clock_step" => Kind::ClockStep,
        "audit.key_rotation" => Kind::KeyRotation {
            key_id: d.key_id.as_deref().and_then(Digest::parse).ok_or_else(|| missing(action, "keyId"))?,
            public_key: text(d.public_key, "publicKey")?,
        },
        "audit.segment_start" => {
            Kind::SegmentStart { log_id: text(d.log_id, "logId")?, last_kernel_seq: d.last_kernel_seq }
        }
        "kernel.session_start" => Kind::KernelSessionStart,
        "audit.gap" => Kind::Gap {
            from_kernel_seq: d.from_kernel_seq.ok_or_else(|| missing(action, "fromKernelSeq"))?,
            to_kernel_seq: d.to_kernel_seq.ok_or_else(|| missing(action, "toKernelSeq"))?,
        },
        "audit.retention_delete" => Kind::RetentionDelete {
            covered_from: d
                .covered_from
                .or(d.first_sequence)
                .ok_or_else(|| missing(action, "firstSequence"))?,
            last: d.last_sequence.ok_or_else(|| missing(action, "lastSequence"))?,
            last_hash: d
                .last_hash
                .as_deref()
                .and_then(Digest::parse)
                .ok_or_else(|| missing(action, "lastHash"))?,
        },
        "audit.tamper_detected" => Kind::TamperDetected {
            kind: text(d.kind, "kind")?,
            signed_size: d.signed_size.ok_or_else(|| missing(action, "signedSize"))?,
            found_size: d.found_size.ok_or_else(|| missing(action, "foundSize"))?,
        },
        _ => Kind::Plain { kernel_seq: common.kernel_seq },
    };
    Ok(summary(kind))
}

/// Checkpoint triggers (`details.trigger`); any other value makes the entry malformed.
pub const TRIGGERS: [&str; 6] = ["count", "interval", "rotation", "retention", "shutdown", "key_rotation"];

/// A checkpoint's line must be exactly what the writer makes of the values its signature fixes: the
/// members `action`, `details` {`keyId`, `logId`, `signature`, `trigger`}, `prevHash`, `sequence`,
/// `timestamp`, `hash`, canonical JSON, lower-case hex. Without this the last checkpoint of a log (whose
/// own hash nothing later covers) could gain members or be re-encoded without breaking a signature.
fn check_checkpoint_form(line: &[u8], sequence: u64, prev: Digest, kind: &Kind) -> Result<(), LineError> {
    let Kind::Checkpoint { log_id, key_id, signature, trigger, timestamp } = kind else { return Ok(()) };
    let not_canonical =
        |what: &str| LineError::Malformed(format!("checkpoint not in its fixed form: {what}"));
    let trigger = TRIGGERS.iter().find(|t| **t == trigger).ok_or_else(|| not_canonical("unknown trigger"))?;
    let key_id = Digest::parse(key_id).ok_or_else(|| not_canonical("keyId"))?;
    if !is_lower_hex(log_id, 32) {
        return Err(not_canonical("logId"));
    }
    if !signature.strip_prefix(super::signing::ED25519_PREFIX).is_some_and(|h| is_lower_hex(h, 128)) {
        return Err(not_canonical("signature"));
    }
    if !super::clock::is_canonical(timestamp) {
        return Err(not_canonical("timestamp"));
    }
    let event =
        WriterEvent::Checkpoint { log_id: log_id.clone(), key_id, trigger, signature: signature.clone() };
    let header = Header { sequence, prev_hash: prev, timestamp: timestamp.as_bytes() };
    let mut expected = Vec::with_capacity(line.len());
    write_writer_event(&mut expected, &header, &event);
    // `expected` ends in `}` where the line goes on with its hash member.
    let body = &line[..line.len() - HASH_SUFFIX_LEN];
    if expected.len() != body.len() + 1 || expected[..body.len()] != *body {
        return Err(not_canonical("other members or another encoding than the canonical one"));
    }
    Ok(())
}

/// Whether `text` is exactly `digits` lower-case hex digits.
pub fn is_lower_hex(text: &str, digits: usize) -> bool {
    text.len() == digits && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::seal;

    fn sealed(body: &str) -> Vec<u8> {
        let mut line = Vec::new();
        seal(body.as_bytes(), &mut line);
        line.pop();
        line
    }

    const PREV: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn parses_a_sealed_entry() {
        let line = sealed(&format!(
            r#"{{"action":"file.read","kernelSeq":4,"prevHash":"{PREV}","sequence":3,"timestamp":"2026-02-13T10:45:23.102Z"}}"#
        ));
        let summary = parse(&line).unwrap();
        assert_eq!(summary.sequence, 3);
        assert_eq!(summary.kind, Kind::Plain { kernel_seq: Some(4) });
        assert_eq!(summary.prev, Digest([0; 32]));
    }

    #[test]
    fn a_changed_byte_is_a_hash_mismatch() {
        let mut line = sealed(&format!(
            r#"{{"action":"file.read","kernelSeq":4,"prevHash":"{PREV}","sequence":3,"timestamp":"2026-02-13T10:45:23.102Z"}}"#
        ));
        line[12] = b'x';
        assert_eq!(parse(&line), Err(LineError::HashMismatch { sequence: Some(3) }));
    }

    #[test]
    fn garbage_and_duplicate_keys_are_malformed() {
        assert!(matches!(parse(b"not json"), Err(LineError::Malformed(_))));
        let dup = sealed(&format!(
            r#"{{"action":"x","prevHash":"{PREV}","sequence":3,"sequence":4,"timestamp":"t"}}"#
        ));
        assert!(matches!(parse(&dup), Err(LineError::Malformed(_))));
        let checkpoint_without_signature = sealed(&format!(
            r#"{{"action":"audit.checkpoint","details":{{}},"prevHash":"{PREV}","sequence":3,"timestamp":"t"}}"#
        ));
        assert!(matches!(parse(&checkpoint_without_signature), Err(LineError::Malformed(_))));
    }
}

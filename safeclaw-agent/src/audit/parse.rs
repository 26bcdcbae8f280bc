//! Reading sealed lines back: the hash check and the few fields that verification and recovery need,
//! parsed without building the whole entry.
use std::borrow::Cow;

use serde::Deserialize;

use super::chain::{unseal, Digest};
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
        first: u64,
        last: u64,
        last_hash: Digest,
    },
    TamperDetected {
        kind: String,
        signed_size: u64,
        found_size: u64,
    },
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
    let Some((body, claimed)) = unseal(line) else {
        return Err(LineError::Malformed("does not end in a \"hash\":\"sha256:…\" member".into()));
    };
    let common = match scan::common(line) {
        Ok(common) => common,
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
    let summary = |kind| Summary { sequence: common.sequence, prev, hash: claimed, kind };
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
            Kind::LogStart { log_id: text(d.log_id, "logId")?, public_key: text(d.public_key, "publicKey")? }
        }
        "audit.checkpoint" => Kind::Checkpoint {
            log_id: text(d.log_id, "logId")?,
            key_id: text(d.key_id, "keyId")?,
            signature: text(d.signature, "signature")?,
            trigger: text(d.trigger, "trigger")?,
            timestamp: fields.timestamp.into_owned(),
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
            first: d.first_sequence.ok_or_else(|| missing(action, "firstSequence"))?,
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

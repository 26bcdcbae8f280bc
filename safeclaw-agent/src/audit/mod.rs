//! Audit trail: entries, the hash chain, the durable writer, verification and tailing.
//!
//! The daemon builds an `ActionRecord` per kernel event and hands it to an `AuditWriter`; auditors check
//! the result with `verify` (or the Python verifier in docs/audit-format.md).
pub mod canonical;
pub mod chain;
pub mod cli;
pub mod clock;
pub mod committer;
pub mod conformance;
pub mod durable;
pub mod entry;
pub mod export;
pub mod parse;
pub mod reader;
pub mod recover;
pub mod redact;
pub mod retention;
pub mod scan;
pub mod segment;
pub mod sequence;
pub mod signing;
pub mod synthetic;
pub mod tail;
pub mod tool_entry;
pub mod vectors;
pub mod verify;
pub mod writer;

pub use chain::Digest;
pub use entry::{
    ActionRecord, ConnectTarget, FieldSet, FileMode, Identity, KernelFlags, Lifecycle, ProcessInfo, Protocol,
    Repeats, RequestDetails, RuleMeta,
};
pub use writer::{Appended, AuditError, AuditWriter, Durable, FailureMode, Health, Recovered, WriterOptions};

/// `details.format` of a log's first entry. Format 2 added fixed checkpoint lines, `audit.key_rotation`,
/// `audit.clock_step` and `coveredFrom` in retention entries; format 1 logs verify under the same rules.
pub const FORMAT: &str = "safeclaw-audit/2";
/// Formats the verifier reads.
pub const FORMATS: [&str; 2] = ["safeclaw-audit/1", FORMAT];
/// Active log segment when neither `--audit-log` nor a file destination says otherwise.
pub const DEFAULT_LOG: &str = "/var/log/safeclaw/audit.jsonl";
/// Signing key (mode 0600, directory 0700).
pub const DEFAULT_KEY: &str = "/var/lib/safeclaw/audit.key";
/// Latest signed head, kept outside the log.
pub const DEFAULT_HEAD: &str = "/var/lib/safeclaw/audit.head";

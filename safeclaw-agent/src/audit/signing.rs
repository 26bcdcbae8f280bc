//! The signing key (Ed25519 in a root-only file) and signed heads: the statement "log L had N entries
//! ending in hash H at time T", which checkpoints carry inside the log and the head file keeps outside it.
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::Deserialize;

use super::canonical::Object;
use super::chain::{decode_hex, encode_hex, Digest};
use super::durable;

/// Text form prefix of public keys and signatures.
pub const ED25519_PREFIX: &str = "ed25519:";
/// First line of every signed message.
pub const MESSAGE_MAGIC: &str = "safeclaw-audit-checkpoint/v1";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a SafeClaw audit key (expected `ed25519-secret:` and 64 hex digits)")]
    Malformed { path: PathBuf },
    #[error("{path}: mode {mode:o} lets other users read or replace the key; run `chmod 600 {path}` and check who read it")]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("{path}: owned by uid {owner}, not by uid {euid} running the agent")]
    WrongOwner { path: PathBuf, owner: u32, euid: u32 },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeyError + '_ {
    move |source| KeyError::Io { path: path.to_owned(), source }
}

/// The log's signing key.
pub struct AuditKey {
    signing: SigningKey,
}

const SECRET_PREFIX: &str = "ed25519-secret:";

impl AuditKey {
    /// Loads the key at `path`, or creates it (mode 0600, directory 0700) if there is none.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        match fs::symlink_metadata(path) {
            Ok(_) => Self::load(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Self::create(path),
            Err(e) => Err(io_err(path)(e)),
        }
    }

    /// Loads an existing key, refusing one that other users could read or replace.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let meta = fs::metadata(path).map_err(io_err(path))?;
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::TooOpen { path: path.to_owned(), mode });
        }
        let euid = nix::unistd::geteuid().as_raw();
        if meta.uid() != euid {
            return Err(KeyError::WrongOwner { path: path.to_owned(), owner: meta.uid(), euid });
        }
        let text = fs::read_to_string(path).map_err(io_err(path))?;
        let mut seed = [0u8; 32];
        text.trim_end()
            .strip_prefix(SECRET_PREFIX)
            .and_then(|hex| decode_hex(hex, &mut seed))
            .ok_or_else(|| KeyError::Malformed { path: path.to_owned() })?;
        Ok(AuditKey { signing: SigningKey::from_bytes(&seed) })
    }

    /// Creates a new key at `path` (which must not exist).
    pub fn create(path: &Path) -> Result<Self, KeyError> {
        durable::create_private_dir(durable::parent_of(path)).map_err(io_err(path))?;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| io_err(path)(io::Error::other(e.to_string())))?;
        let mut text = SECRET_PREFIX.as_bytes().to_vec();
        encode_hex(&seed, &mut text);
        text.push(b'\n');
        // create_new: two agents racing to create a key must not overwrite each other's.
        let mut file =
            OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io_err(path))?;
        file.write_all(&text).and_then(|()| file.sync_all()).map_err(io_err(path))?;
        durable::sync_parent(path).map_err(io_err(path))?;
        Ok(AuditKey { signing: SigningKey::from_bytes(&seed) })
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key())
    }

    /// `ed25519:<128 hex>` signature of `statement`'s message.
    pub fn sign(&self, statement: &HeadStatement<'_>) -> String {
        let signature = self.signing.sign(&statement.message());
        let mut out = ED25519_PREFIX.as_bytes().to_vec();
        encode_hex(&signature.to_bytes(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// A public key, as auditors get it from `audit pubkey`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses `ed25519:<64 hex>`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        decode_hex(text.trim().strip_prefix(ED25519_PREFIX)?, &mut bytes)?;
        VerifyingKey::from_bytes(&bytes).ok().map(PublicKey)
    }

    pub fn to_text(&self) -> String {
        let mut out = ED25519_PREFIX.as_bytes().to_vec();
        encode_hex(self.0.as_bytes(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// `sha256` of the 32 raw key bytes.
    pub fn key_id(&self) -> Digest {
        Digest::of(self.0.as_bytes())
    }

    /// Whether `signature` (`ed25519:<hex>`) is this key's signature of `statement` (strict RFC 8032 checks,
    /// so that no second valid signature of the same message exists).
    pub fn verifies(&self, statement: &HeadStatement<'_>, signature: &str) -> bool {
        let mut bytes = [0u8; 64];
        let parsed = signature.strip_prefix(ED25519_PREFIX).and_then(|hex| decode_hex(hex, &mut bytes));
        parsed.is_some() && self.0.verify_strict(&statement.message(), &Signature::from_bytes(&bytes)).is_ok()
    }
}

/// What a signature covers: the first `size` entries of log `log_id` end in `head`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadStatement<'a> {
    pub log_id: &'a str,
    pub key_id: Digest,
    pub size: u64,
    pub head: Digest,
    pub time: &'a str,
    /// Why it was made: a checkpoint trigger, or `head` for the head file.
    pub reason: &'a str,
}

impl HeadStatement<'_> {
    /// The signed bytes: seven `\n`-terminated lines.
    pub fn message(&self) -> Vec<u8> {
        format!(
            "{MESSAGE_MAGIC}\nlog {}\nkey {}\nsize {}\nhead {}\ntime {}\nreason {}\n",
            self.log_id, self.key_id, self.size, self.head, self.time, self.reason
        )
        .into_bytes()
    }
}

/// The latest signed head, kept outside the log (`/var/lib/safeclaw/audit.head` by default).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeadFile {
    pub log_id: String,
    pub key_id: String,
    pub size: u64,
    pub head: String,
    pub time: String,
    pub signature: String,
}

/// Trigger of the checkpoint the previous key signs after an `audit.key_rotation` entry.
pub const KEY_ROTATION: &str = "key_rotation";

/// `reason` of head-file statements.
pub const HEAD_REASON: &str = "head";

#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not a SafeClaw head file: {reason}")]
    Malformed { path: PathBuf, reason: String },
}

impl HeadFile {
    pub fn statement(&self) -> Option<HeadStatement<'_>> {
        Some(HeadStatement {
            log_id: &self.log_id,
            key_id: Digest::parse(&self.key_id)?,
            size: self.size,
            head: Digest::parse(&self.head)?,
            time: &self.time,
            reason: HEAD_REASON,
        })
    }

    /// Signs a head file for `statement` (whose reason is replaced by `head`).
    pub fn signed(key: &AuditKey, statement: HeadStatement<'_>) -> Self {
        let statement = HeadStatement { reason: HEAD_REASON, ..statement };
        HeadFile {
            log_id: statement.log_id.to_owned(),
            key_id: statement.key_id.to_string(),
            size: statement.size,
            head: statement.head.to_string(),
            time: statement.time.to_owned(),
            signature: key.sign(&statement),
        }
    }

    /// `None` when there is no head file.
    pub fn read(path: &Path) -> Result<Option<Self>, HeadError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(HeadError::Io { path: path.to_owned(), source }),
        };
        let head: HeadFile = serde_json::from_str(&text)
            .map_err(|e| HeadError::Malformed { path: path.to_owned(), reason: e.to_string() })?;
        if head.statement().is_none() {
            return Err(HeadError::Malformed {
                path: path.to_owned(),
                reason: "bad keyId or head digest".into(),
            });
        }
        Ok(Some(head))
    }

    /// Atomically replaces the head file (mode 0600).
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let mut out = Vec::with_capacity(400);
        let mut obj = Object::begin(&mut out);
        obj.str("head", &self.head);
        obj.str("keyId", &self.key_id);
        obj.str("logId", &self.log_id);
        obj.str("signature", &self.signature);
        obj.u64("size", self.size);
        obj.str("time", &self.time);
        obj.end();
        out.push(b'\n');
        durable::write_atomic(path, &out, 0o600)
    }
}

/// Signatures over documents other than chain statements (the evidence pack's manifest). The message is
/// `context`, a newline, then the document: a context such as `safeclaw-evidence-manifest/v1` is no
/// checkpoint statement's first line, so no such signature can pass for a checkpoint.
fn document_message(context: &str, document: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(context.len() + 1 + document.len());
    message.extend_from_slice(context.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(document);
    message
}

impl AuditKey {
    /// `ed25519:<128 hex>` signature of `document` under `context`.
    pub fn sign_document(&self, context: &str, document: &[u8]) -> String {
        let signature = self.signing.sign(&document_message(context, document));
        let mut out = ED25519_PREFIX.as_bytes().to_vec();
        encode_hex(&signature.to_bytes(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl PublicKey {
    /// Whether `signature` is this key's signature of `document` under `context` (strict checks).
    pub fn verifies_document(&self, context: &str, document: &[u8], signature: &str) -> bool {
        let mut bytes = [0u8; 64];
        let parsed =
            signature.trim().strip_prefix(ED25519_PREFIX).and_then(|hex| decode_hex(hex, &mut bytes));
        parsed.is_some()
            && self
                .0
                .verify_strict(&document_message(context, document), &Signature::from_bytes(&bytes))
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn statement(size: u64) -> HeadStatement<'static> {
        HeadStatement {
            log_id: "00112233445566778899aabbccddeeff",
            key_id: Digest::of(b"k"),
            size,
            head: Digest::of(b"h"),
            time: "2026-02-13T10:45:23.102Z",
            reason: "count",
        }
    }

    #[test]
    fn key_is_created_root_only_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/audit.key");
        let key = AuditKey::load_or_create(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777, 0o700);
        let again = AuditKey::load_or_create(&path).unwrap();
        assert_eq!(key.public(), again.public());
    }

    #[test]
    fn readable_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.key");
        AuditKey::load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(AuditKey::load(&path), Err(KeyError::TooOpen { mode: 0o644, .. })));
    }

    #[test]
    fn malformed_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.key");
        fs::write(&path, "hello").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(AuditKey::load(&path), Err(KeyError::Malformed { .. })));
    }

    #[test]
    fn signatures_bind_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let key = AuditKey::load_or_create(&dir.path().join("k")).unwrap();
        let public = PublicKey::parse(&key.public().to_text()).unwrap();
        let signature = key.sign(&statement(5));
        assert!(public.verifies(&statement(5), &signature));
        assert!(!public.verifies(&statement(6), &signature));
        assert!(!public.verifies(&HeadStatement { reason: "time", ..statement(5) }, &signature));
        assert!(!public.verifies(&statement(5), "ed25519:00"));
    }

    #[test]
    fn head_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let key = AuditKey::load_or_create(&dir.path().join("k")).unwrap();
        let path = dir.path().join("audit.head");
        assert_eq!(HeadFile::read(&path).unwrap(), None);
        let head = HeadFile::signed(&key, statement(9));
        head.write(&path).unwrap();
        let back = HeadFile::read(&path).unwrap().unwrap();
        assert_eq!(back, head);
        assert!(key.public().verifies(&back.statement().unwrap(), &back.signature));
        fs::write(&path, "{}").unwrap();
        assert!(matches!(HeadFile::read(&path), Err(HeadError::Malformed { .. })));
    }
}

//! The hash chain: `sha256:<hex>` digests, the genesis value, and sealing an entry body into a log line.
//!
//! A line is the canonical body (the entry without `hash`) with `,"hash":"sha256:<hex>"` inserted before its
//! closing brace, where the digest is SHA-256 of the body bytes. So the hashed bytes are the line's bytes
//! minus that fixed-length suffix, plus `}`.
use std::fmt;

use sha2::{Digest as _, Sha256};

/// The text form's prefix.
pub const PREFIX: &str = "sha256:";
/// Bytes a sealed line has after its body's last member: `,"hash":"sha256:` + 64 hex + `"}`.
pub const HASH_SUFFIX_LEN: usize = HASH_MEMBER_PREFIX.len() + 64 + 2;
const HASH_MEMBER_PREFIX: &[u8] = b",\"hash\":\"sha256:";

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Digest(pub [u8; 32]);

/// `prevHash` of the first entry of a log.
pub const GENESIS: Digest = Digest([0; 32]);

impl Digest {
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(text: &str) -> Option<Self> {
        let hex = text.strip_prefix(PREFIX)?;
        let mut out = [0u8; 32];
        decode_hex(hex, &mut out)?;
        Some(Digest(out))
    }

    /// Appends the `sha256:<hex>` text form.
    pub fn write_text(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(PREFIX.as_bytes());
        encode_hex(&self.0, out);
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::with_capacity(71);
        self.write_text(&mut out);
        f.write_str(&String::from_utf8_lossy(&out))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Lowercase hex of `bytes`, appended to `out`.
pub fn encode_hex(bytes: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0xf)]);
    }
}

pub fn hex_string(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    encode_hex(bytes, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes exactly `out.len() * 2` lowercase hex digits.
pub fn decode_hex(hex: &str, out: &mut [u8]) -> Option<()> {
    let hex = hex.as_bytes();
    if hex.len() != out.len() * 2 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for (slot, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *slot = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(())
}

/// Appends the sealed line for `body` (a canonical JSON object) to `out`, newline included, and returns the
/// entry's hash.
pub fn seal(body: &[u8], out: &mut Vec<u8>) -> Digest {
    debug_assert!(body.len() > 2 && body.last() == Some(&b'}'));
    let hash = Digest::of(body);
    out.extend_from_slice(&body[..body.len() - 1]);
    out.extend_from_slice(HASH_MEMBER_PREFIX);
    encode_hex(&hash.0, out);
    out.extend_from_slice(b"\"}\n");
    hash
}

/// Splits a sealed line (without its newline) into the hashed body and the hash it claims. `None` when
/// the line does not end in a hash member of the sealed form.
pub fn unseal(line: &[u8]) -> Option<(BodyBytes<'_>, Digest)> {
    let split = line.len().checked_sub(HASH_SUFFIX_LEN)?;
    let (head, suffix) = line.split_at(split);
    let hex = suffix.strip_prefix(HASH_MEMBER_PREFIX)?.strip_suffix(b"\"}")?;
    let mut claimed = [0u8; 32];
    decode_hex(std::str::from_utf8(hex).ok()?, &mut claimed)?;
    Some((BodyBytes(head), Digest(claimed)))
}

/// The hashed bytes of a sealed line: its text before the hash member, then `}`.
pub struct BodyBytes<'a>(&'a [u8]);

impl BodyBytes<'_> {
    pub fn digest(&self) -> Digest {
        let mut hasher = Sha256::new();
        hasher.update(self.0);
        hasher.update(b"}");
        Digest(hasher.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_unseal_recovers_body_hash() {
        let body = br#"{"a":1}"#;
        let mut line = Vec::new();
        let hash = seal(body, &mut line);
        assert_eq!(line.last(), Some(&b'\n'));
        let line = &line[..line.len() - 1];
        let parsed: serde_json::Value = serde_json::from_slice(line).unwrap();
        assert_eq!(parsed["hash"], hash.to_string());
        let (bytes, claimed) = unseal(line).unwrap();
        assert_eq!(claimed, hash);
        assert_eq!(bytes.digest(), hash);
        assert_eq!(hash, Digest::of(body));
    }

    #[test]
    fn digest_text_round_trips_and_rejects_bad_forms() {
        let d = Digest::of(b"x");
        assert_eq!(Digest::parse(&d.to_string()), Some(d));
        assert_eq!(Digest::parse("sha256:ABCD"), None);
        assert_eq!(Digest::parse(&d.to_string().to_uppercase()), None);
        assert_eq!(Digest::parse(&d.to_string()[7..]), None);
    }

    #[test]
    fn unseal_rejects_lines_without_a_hash_member() {
        assert!(unseal(b"{}").is_none());
        assert!(unseal(br#"{"a":1,"hash":"sha256:zz"}"#).is_none());
    }
}

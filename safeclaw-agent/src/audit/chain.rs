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
    let start = out.len();
    out.resize(start + bytes.len() * 2, 0);
    for (pair, &b) in out[start..].chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
}

pub fn hex_string(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    encode_hex(bytes, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes exactly `out.len() * 2` lowercase hex digits.
pub fn decode_hex(hex: &str, out: &mut [u8]) -> Option<()> {
    decode_hex_bytes(hex.as_bytes(), out)
}

/// Value of each lowercase hex digit; `INVALID` for every other byte.
const HEX_VALUE: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};
const INVALID: u8 = 0xff;

fn decode_hex_bytes(hex: &[u8], out: &mut [u8]) -> Option<()> {
    if hex.len() != out.len() * 2 {
        return None;
    }
    // Sixteen digits at a time (two per line of the log are decoded: its hash and `prevHash`).
    let mut groups = hex.chunks_exact(16);
    let mut slots = out.chunks_exact_mut(8);
    for (slot, group) in slots.by_ref().zip(groups.by_ref()) {
        slot.copy_from_slice(&decode_group(group.try_into().ok()?)?);
    }
    decode_digits(groups.remainder(), slots.into_remainder())
}

/// Decodes `hex` into `out` (half its length) a digit at a time, branch-free per byte: collects invalid
/// digits in `bad` and checks once.
fn decode_digits(hex: &[u8], out: &mut [u8]) -> Option<()> {
    let mut bad = 0u8;
    for (slot, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let (high, low) = (HEX_VALUE[usize::from(pair[0])], HEX_VALUE[usize::from(pair[1])]);
        bad |= (high | low) & 0xf0;
        *slot = high << 4 | (low & 0x0f);
    }
    (bad == 0).then_some(())
}

/// Sixteen lowercase hex digits as eight bytes, with SSE2 (part of every x86_64 CPU).
#[cfg(target_arch = "x86_64")]
fn decode_group(group: &[u8; 16]) -> Option<[u8; 8]> {
    use std::arch::x86_64::{
        _mm_and_si128, _mm_cmpgt_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
        _mm_packus_epi16, _mm_set1_epi16, _mm_set1_epi8, _mm_slli_epi16, _mm_srli_epi16, _mm_storel_epi64,
        _mm_sub_epi8,
    };
    let mut out = [0u8; 8];
    // SAFETY: SSE2 is always available on x86_64; the load reads the 16 bytes of `group` and the store
    // writes the 8 of `out` (both unaligned).
    unsafe {
        let digits = _mm_loadu_si128(group.as_ptr().cast());
        // Signed compares: bytes from 0x80 on are negative, so outside both ranges.
        let within = |low: u8, high: u8| {
            _mm_and_si128(
                _mm_cmpgt_epi8(digits, _mm_set1_epi8(low as i8 - 1)),
                _mm_cmplt_epi8(digits, _mm_set1_epi8(high as i8 + 1)),
            )
        };
        let letters = within(b'a', b'f');
        if _mm_movemask_epi8(_mm_or_si128(within(b'0', b'9'), letters)) != 0xffff {
            return None;
        }
        // '0'..'9' → 0..9 and 'a'..'f' → 10..15 ('a' - '0' - 10 = 39).
        let values = _mm_sub_epi8(
            _mm_sub_epi8(digits, _mm_set1_epi8(b'0' as i8)),
            _mm_and_si128(letters, _mm_set1_epi8(39)),
        );
        // Each 16-bit lane holds a pair: the high digit in its low byte, the low digit in its high byte.
        let bytes = _mm_or_si128(
            _mm_and_si128(_mm_slli_epi16(values, 4), _mm_set1_epi16(0xf0)),
            _mm_srli_epi16(values, 8),
        );
        _mm_storel_epi64(out.as_mut_ptr().cast(), _mm_packus_epi16(bytes, bytes));
    }
    Some(out)
}

/// Sixteen lowercase hex digits as eight bytes, on other CPUs.
#[cfg(any(not(target_arch = "x86_64"), test))]
fn portable_decode_group(group: &[u8; 16]) -> Option<[u8; 8]> {
    let mut out = [0u8; 8];
    decode_digits(group, &mut out).map(|()| out)
}

#[cfg(not(target_arch = "x86_64"))]
use portable_decode_group as decode_group;

/// Appends the sealed line for `body` (a canonical JSON object) to `out`, newline included, and returns the
/// entry's hash.
pub fn seal(body: &[u8], out: &mut Vec<u8>) -> Digest {
    let start = out.len();
    out.extend_from_slice(body);
    seal_in_place(out, start)
}

/// Seals the canonical body that occupies `out[start..]`, in place: saves copying it.
pub fn seal_in_place(out: &mut Vec<u8>, start: usize) -> Digest {
    debug_assert!(out.len() > start + 2 && out.last() == Some(&b'}'));
    let hash = Digest::of(&out[start..]);
    out.pop();
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
    decode_hex_bytes(hex, &mut claimed)?;
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
    fn the_vector_and_portable_hex_decoders_agree_on_every_byte_at_every_place() {
        let base = *b"0123456789abcdef";
        for at in 0..16 {
            for byte in 0..=255u8 {
                let mut group = base;
                group[at] = byte;
                assert_eq!(decode_group(&group), portable_decode_group(&group), "{byte:#x} at {at}");
            }
        }
        let mut out = [0u8; 8];
        assert_eq!(decode_group(&base), Some([0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]));
        assert!(decode_hex("0123456789ABCDEF", &mut out).is_none());
        // Digests are decoded in groups and a remainder: a bad digit is found in either.
        let digest = Digest::of(b"x").to_string();
        for at in PREFIX.len()..digest.len() {
            let mut changed = digest.clone().into_bytes();
            changed[at] = b'g';
            assert_eq!(Digest::parse(std::str::from_utf8(&changed).unwrap()), None, "{at}");
        }
        assert!(decode_hex("abc", &mut out[..1]).is_none());
        assert_eq!(decode_hex("0aff0", &mut out[..2]), None);
        assert_eq!(decode_hex("0aff", &mut out[..2]).map(|()| [out[0], out[1]]), Some([0x0a, 0xff]));
    }

    #[test]
    fn unseal_rejects_lines_without_a_hash_member() {
        assert!(unseal(b"{}").is_none());
        assert!(unseal(br#"{"a":1,"hash":"sha256:zz"}"#).is_none());
    }
}

//! A single pass over a sealed line's top-level JSON members that finds the few fields every line is read
//! for, stepping over nested values and strings without decoding them: verification's hot path.
//!
//! It checks the line's structure (one object, members `"key":value` separated by commas, balanced
//! nesting, well-formed scalars), not the content of strings. That is enough because the hash chain and the
//! signatures, not this scan, vouch for every byte: a line whose structure this scan accepts but a strict
//! JSON parser would refuse can only have been written by someone holding the signing key.
use std::cell::RefCell;

/// The members every line is read for, borrowed from the line.
#[derive(Debug, PartialEq, Eq)]
pub struct Common<'a> {
    pub sequence: u64,
    pub prev_hash: &'a str,
    pub action: &'a str,
    pub kernel_seq: Option<u64>,
}

/// Nesting deeper than this is refused rather than scanned (the writer never nests beyond 3).
const MAX_DEPTH: usize = 64;

thread_local! {
    /// The quote-and-backslash bitmap of the line being scanned, kept to save an allocation per line.
    static SPECIALS: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Reads the common members of `line` (one JSON object, no newline).
pub fn common(line: &[u8]) -> Result<Common<'_>, String> {
    common_and_members(line, &[], &mut []).map(|(common, _)| common)
}

/// Reads the common members of `line` and, in the same pass, finds the raw values of the top-level
/// members named `names`: `spans[i]` for `names[i]`, `None` where absent. The flag says whether they
/// were found: false when one of them appears twice or the line is longer than 32-bit offsets reach
/// (neither makes the line itself invalid; the common members decide that).
pub fn common_and_members<'a>(
    line: &'a [u8],
    names: &[&str],
    spans: &mut [Option<Span>],
) -> Result<(Common<'a>, bool), String> {
    spans.fill(None);
    let mut found = u32::try_from(line.len()).is_ok();
    SPECIALS.with_borrow_mut(|specials| {
        mark_specials(line, specials);
        let common = scan_common(Scanner { line, specials, at: 0 }, |key, value| {
            if let Some(index) = names.iter().position(|name| name.as_bytes() == key) {
                // Both ends are within the line; when its length does not fit in 32 bits, `found` is false.
                found &= spans[index].replace((value.start as u32, value.end as u32)).is_none();
            }
        })?;
        Ok((common, found))
    })
}

/// Where a member's raw value lies in its line (a string with its quotes), as byte offsets.
pub type Span = (u32, u32);

/// Members found by `common_and_members`, for one line.
#[derive(Clone, Copy)]
pub struct Members<'a> {
    line: &'a [u8],
    /// `None` when the line's members could not be read.
    spans: Option<&'a [Option<Span>]>,
}

impl<'a> Members<'a> {
    pub fn new(line: &'a [u8], spans: Option<&'a [Option<Span>]>) -> Self {
        Members { line, spans }
    }

    /// Whether the line scanned and named no wanted member twice.
    pub fn readable(&self) -> bool {
        self.spans.is_some()
    }

    /// The raw value of the `index`th member asked for, if present.
    pub fn raw(&self, index: usize) -> Option<&'a [u8]> {
        let (start, end) = (*self.spans?.get(index)?)?;
        self.line.get(start as usize..end as usize)
    }
}

/// Walks one object's top-level members, showing each key (escapes left as they are) and where its raw
/// value lies; refuses trailing bytes after the object.
fn each_member<'a>(
    mut scan: Scanner<'a, '_>,
    mut found: impl FnMut(&'a [u8], std::ops::Range<usize>) -> Result<(), String>,
) -> Result<(), String> {
    let line = scan.line;
    scan.expect(b'{')?;
    if scan.peek() == Some(b'}') {
        scan.at += 1;
    } else {
        loop {
            let key = scan.string()?;
            scan.expect(b':')?;
            let start = scan.at;
            scan.value()?;
            found(key, start..scan.at)?;
            match scan.next_byte()? {
                b',' => continue,
                b'}' => break,
                other => return Err(scan.unexpected(other)),
            }
        }
    }
    if scan.at != line.len() {
        return Err(format!("trailing bytes after the object at byte {}", scan.at));
    }
    Ok(())
}

/// The common members, showing every member (key and where its value lies) to `other` too.
fn scan_common<'a>(
    scan: Scanner<'a, '_>,
    mut other: impl FnMut(&[u8], std::ops::Range<usize>),
) -> Result<Common<'a>, String> {
    let line = scan.line;
    let (mut sequence, mut prev_hash, mut action, mut kernel_seq) = (None, None, None, None);
    each_member(scan, |key, value| {
        other(key, value.clone());
        let slot = match key {
            b"sequence" => &mut sequence,
            b"prevHash" => &mut prev_hash,
            b"action" => &mut action,
            b"kernelSeq" => &mut kernel_seq,
            _ => return Ok(()),
        };
        if slot.replace(&line[value]).is_some() {
            return Err(format!("duplicate member `{}`", String::from_utf8_lossy(key)));
        }
        Ok(())
    })?;
    let required =
        |value: Option<&'a [u8]>, name: &str| value.ok_or_else(|| format!("missing field `{name}`"));
    Ok(Common {
        sequence: integer(required(sequence, "sequence")?, "sequence")?,
        prev_hash: plain_string(required(prev_hash, "prevHash")?, "prevHash")?,
        action: plain_string(required(action, "action")?, "action")?,
        kernel_seq: match kernel_seq {
            None | Some(b"null") => None,
            Some(raw) => Some(integer(raw, "kernelSeq")?),
        },
    })
}

/// A non-negative integer written as JSON digits (no sign, fraction or exponent; canonical form has none).
fn integer(raw: &[u8], name: &str) -> Result<u64, String> {
    let bad = || format!("`{name}` is not a non-negative integer");
    if raw.is_empty() || !raw.iter().all(u8::is_ascii_digit) || (raw.len() > 1 && raw[0] == b'0') {
        return Err(bad());
    }
    raw.iter()
        .try_fold(0u64, |n, &digit| n.checked_mul(10)?.checked_add(u64::from(digit - b'0')))
        .ok_or_else(bad)
}

/// A JSON string without escapes (the writer's fixed names and hashes never need one), as text.
fn plain_string<'a>(raw: &'a [u8], name: &str) -> Result<&'a str, String> {
    let inner = raw
        .strip_prefix(b"\"")
        .and_then(|r| r.strip_suffix(b"\""))
        // A fold the compiler vectorizes: these are whole hashes, on every line.
        .filter(|inner| !inner.iter().fold(false, |escaped, &byte| escaped | (byte == b'\\')))
        .ok_or_else(|| format!("`{name}` is not a plain string"))?;
    std::str::from_utf8(inner).map_err(|_| format!("`{name}` is not UTF-8"))
}

struct Scanner<'a, 's> {
    line: &'a [u8],
    /// Bit `i % 64` of word `i / 64` is set where `line[i]` is `"` or `\\`.
    specials: &'s [u64],
    at: usize,
}

impl<'a> Scanner<'a, '_> {
    fn peek(&self) -> Option<u8> {
        self.line.get(self.at).copied()
    }

    fn next_byte(&mut self) -> Result<u8, String> {
        let byte = self.peek().ok_or("line ends inside the object")?;
        self.at += 1;
        Ok(byte)
    }

    fn unexpected(&self, byte: u8) -> String {
        format!("unexpected `{}` at byte {}", char::from(byte).escape_default(), self.at - 1)
    }

    fn expect(&mut self, wanted: u8) -> Result<(), String> {
        match self.next_byte()? {
            byte if byte == wanted => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }

    /// A string's contents (between its quotes, escapes left as they are).
    fn string(&mut self) -> Result<&'a [u8], String> {
        self.expect(b'"')?;
        let start = self.at;
        self.skip_string_body()?;
        Ok(&self.line[start..self.at - 1])
    }

    /// Steps past the closing quote of a string whose opening quote was consumed. Inlined: called for
    /// every string of every line, it keeps the position in a register.
    #[inline(always)]
    fn skip_string_body(&mut self) -> Result<(), String> {
        loop {
            let found = self.next_special().ok_or("unterminated string")?;
            self.at = found + 1;
            if self.line[found] == b'"' {
                return Ok(());
            }
            // A backslash: the next byte is escaped, whatever it is.
            self.next_byte().map_err(|_| "unterminated string")?;
        }
    }

    /// Position of the first `"` or `\\` at or after `self.at`.
    #[inline(always)]
    fn next_special(&self) -> Option<usize> {
        let mut index = self.at / 64;
        let mut word = self.specials.get(index)? & (u64::MAX << (self.at % 64));
        while word == 0 {
            index += 1;
            word = *self.specials.get(index)?;
        }
        Some(index * 64 + word.trailing_zeros() as usize)
    }

    /// One value, returned raw (a string with its quotes).
    fn value(&mut self) -> Result<&'a [u8], String> {
        let start = self.at;
        match self.next_byte()? {
            b'"' => self.skip_string_body()?,
            b'{' | b'[' => self.skip_nested()?,
            first @ (b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
                let (mut digits, mut other) = (first.is_ascii_digit(), first.is_ascii_alphabetic());
                while let Some(byte) = self.peek().filter(|b| !matches!(b, b',' | b'}' | b']')) {
                    digits |= byte.is_ascii_digit();
                    other |= !matches!(byte, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E');
                    self.at += 1;
                }
                let raw = &self.line[start..self.at];
                let number = digits && !other;
                if !number && !matches!(raw, b"true" | b"false" | b"null") {
                    return Err(format!("bad value at byte {start}"));
                }
            }
            other => return Err(self.unexpected(other)),
        }
        Ok(&self.line[start..self.at])
    }

    /// Steps past an object or array whose opening bracket was consumed, checking bracket balance.
    fn skip_nested(&mut self) -> Result<(), String> {
        let mut open = [0u8; MAX_DEPTH];
        open[0] = self.line[self.at - 1];
        let mut depth = 1;
        while depth > 0 {
            match self.next_byte()? {
                b'"' => self.skip_string_body()?,
                byte @ (b'{' | b'[') => {
                    if depth == MAX_DEPTH {
                        return Err(format!("nested deeper than {MAX_DEPTH}"));
                    }
                    open[depth] = byte;
                    depth += 1;
                }
                byte @ (b'}' | b']') => {
                    depth -= 1;
                    if open[depth] != if byte == b'}' { b'{' } else { b'[' } {
                        return Err(self.unexpected(byte));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Fills `specials` with the bitmap of `"` and `\\` in `line`, eight bytes at a time and without branches:
/// a line has dozens of short strings, and finding each one's end separately costs a mispredicted branch.
fn mark_specials(line: &[u8], specials: &mut Vec<u64>) {
    specials.clear();
    let mut blocks = line.chunks_exact(64);
    // Every block is 64 bytes: the conversion to an array cannot fail (and compiles to nothing).
    specials.extend(blocks.by_ref().map(|block| block.try_into().map_or(0, block_bits)));
    let mut last = [0u8; 64];
    let rest = blocks.remainder();
    last[..rest.len()].copy_from_slice(rest);
    specials.push(block_bits(&last));
}

/// The bitmap word of 64 bytes, sixteen at a time with SSE2 (part of every x86_64 CPU), unrolled.
#[cfg(target_arch = "x86_64")]
fn block_bits(block: &[u8; 64]) -> u64 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    let lane = |offset: usize| {
        debug_assert!(offset <= 48);
        // SAFETY: SSE2 is always available on x86_64, and the 16 bytes at `offset` (0, 16, 32 or 48)
        // lie within the 64 of `block` (the load is unaligned).
        let found = unsafe {
            let bytes = _mm_loadu_si128(block.as_ptr().add(offset).cast());
            let quotes = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'"' as i8));
            let backslashes = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'\\' as i8));
            _mm_movemask_epi8(_mm_or_si128(quotes, backslashes)) as u16
        };
        u64::from(found) << offset
    };
    lane(0) | lane(16) | lane(32) | lane(48)
}

/// The bitmap word of 64 bytes, eight at a time in a register, on other CPUs.
#[cfg(any(not(target_arch = "x86_64"), test))]
fn portable_block_bits(block: &[u8; 64]) -> u64 {
    block.chunks_exact(8).enumerate().fold(0, |bits, (index, word)| {
        bits | byte_bits(u64::from_le_bytes(<[u8; 8]>::try_from(word).unwrap_or_default())) << (index * 8)
    })
}

#[cfg(not(target_arch = "x86_64"))]
use portable_block_bits as block_bits;

/// One bit per byte of `word` (bit `i` for byte `i`): whether that byte is `"` or `\\`.
#[cfg(any(not(target_arch = "x86_64"), test))]
fn byte_bits(word: u64) -> u64 {
    let high_bits = bytes_equal(word, b'"') | bytes_equal(word, b'\\');
    // Gathers the eight high bits into the top byte (each lands on its own bit: no carries), then down.
    ((high_bits >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56
}

/// The high bit of each byte of `word` that equals `byte`, and no other bit (exact, no carries between bytes).
#[cfg(any(not(target_arch = "x86_64"), test))]
fn bytes_equal(word: u64, byte: u8) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let zero_where_equal = word ^ (u64::from(byte) * 0x0101_0101_0101_0101);
    !(((zero_where_equal & LOW7) + LOW7) | zero_where_equal | LOW7)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::Digest;
    use crate::audit::redact::Redactor;
    use crate::audit::synthetic;

    const LINE: &[u8] = br#"{"action":"file.read","details":{"a":[1,{"sequence":9}],"s":"x\"}"},"kernelSeq":4,"prevHash":"sha256:00","requestDetails":{"path":"/a\\"},"sequence":3,"x":null}"#;

    #[test]
    fn finds_top_level_members_past_nested_values_and_escapes() {
        assert_eq!(
            common(LINE),
            Ok(Common { sequence: 3, prev_hash: "sha256:00", action: "file.read", kernel_seq: Some(4) })
        );
    }

    #[test]
    fn agrees_with_serde_json_on_the_writer_s_lines() {
        for i in 0..64 {
            use crate::audit::entry::{write_action, FieldSet, Header};
            let header = Header {
                sequence: i,
                prev_hash: Digest::of(b"prev"),
                timestamp: b"2026-02-13T10:45:23.102Z",
            };
            let mut line = Vec::new();
            write_action(&mut line, &header, &synthetic::record(i), FieldSet::ALL, &Redactor::builtin());
            let parsed: serde_json::Value = serde_json::from_slice(&line).unwrap();
            let found = common(&line).unwrap();
            assert_eq!(parsed["sequence"].as_u64(), Some(found.sequence));
            assert_eq!(parsed["kernelSeq"].as_u64(), found.kernel_seq);
            assert_eq!(parsed["action"].as_str(), Some(found.action));
            assert_eq!(parsed["prevHash"].as_str(), Some(found.prev_hash));
        }
    }

    #[test]
    fn finds_any_named_members_as_serde_json_reads_them() {
        let names = ["requestDetails", "details", "x", "absent", "prevHash"];
        let mut spans = [None; 5];
        let (common, found) = common_and_members(LINE, &names, &mut spans).unwrap();
        assert!(found);
        assert_eq!(common.sequence, 3);
        let parsed: serde_json::Value = serde_json::from_slice(LINE).unwrap();
        let found = Members::new(LINE, Some(&spans));
        for (index, name) in names.iter().enumerate() {
            let value = found.raw(index).map(|raw| serde_json::from_slice::<serde_json::Value>(raw).unwrap());
            assert_eq!(value.as_ref(), parsed.get(name), "{name}");
        }
        assert!(!Members::new(LINE, None).readable());
        // A wanted member twice leaves the line valid but its members unread.
        let twice = br#"{"sequence":1,"prevHash":"p","action":"a","x":1,"x":2}"#;
        assert_eq!(common_and_members(twice, &["x"], &mut spans[..1]).map(|(_, found)| found), Ok(false));
        assert!(common_and_members(br#"{"x":1} "#, &["x"], &mut spans[..1]).is_err());
    }

    #[test]
    fn marks_quotes_and_backslashes_at_every_offset() {
        let mut specials = Vec::new();
        for len in 0..140 {
            // Bytes one bit away from the wanted ones, and non-ASCII, must not be marked.
            let mut line: Vec<u8> =
                (0..len).map(|i| [b'a', 0xa2, 0xdc, b'"' ^ 0x80, b'\\' ^ 1][i % 5]).collect();
            for (i, at) in (0..len).step_by(7).enumerate() {
                line[at] = if i % 2 == 0 { b'"' } else { b'\\' };
            }
            mark_specials(&line, &mut specials);
            for (i, &byte) in line.iter().enumerate() {
                let marked = specials[i / 64] >> (i % 64) & 1 == 1;
                assert_eq!(marked, byte == b'"' || byte == b'\\', "len {len} byte {i}");
            }
            assert!(specials.iter().map(|w| w.count_ones()).sum::<u32>() as usize == len.div_ceil(7));
        }
    }

    #[test]
    fn the_vector_and_portable_bitmaps_agree() {
        let mut block = [0u8; 64];
        for seed in 0u64..2000 {
            let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            for byte in &mut block {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *byte = [b'"', b'\\', b'a', 0xa2, b'"' ^ 0x80, (x >> 8) as u8][(x % 6) as usize];
            }
            assert_eq!(block_bits(&block), portable_block_bits(&block), "{block:?}");
        }
    }

    #[test]
    fn every_cut_and_every_changed_byte_of_a_line_gives_an_answer_not_a_panic() {
        use crate::audit::entry::{write_action, FieldSet, Header};
        let header =
            Header { sequence: 7, prev_hash: Digest::of(b"prev"), timestamp: b"2026-02-13T10:45:23.102Z" };
        let mut line = Vec::new();
        write_action(&mut line, &header, &synthetic::record(7), FieldSet::ALL, &Redactor::builtin());
        for cut in 0..line.len() {
            assert!(common(&line[..cut]).is_err(), "accepted a line cut at byte {cut}");
        }
        for at in 0..line.len() {
            for byte in [b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b'x', 0xff] {
                let mut changed = line.clone();
                changed[at] = byte;
                let _ = common(&changed);
            }
        }
    }

    #[test]
    fn refuses_broken_structure_and_ambiguous_members() {
        let cases: &[&[u8]] = &[
            b"",
            b"not json",
            br#"{"sequence":3"#,
            br#"{"sequence":3,"prevHash":"p","action":"a"} "#,
            br#"{"sequence":3,"prevHash":"p","action":"a","sequence":4}"#,
            br#"{"sequence":-3,"prevHash":"p","action":"a"}"#,
            br#"{"sequence":03,"prevHash":"p","action":"a"}"#,
            br#"{"sequence":3,"prevHash":"p","action":"a\u0041"}"#,
            br#"{"sequence":3,"prevHash":"p","action":"a","d":{"x":[1}]}"#,
            br#"{"sequence":3,"prevHash":"p","action":"a","d":"unterminated}"#,
            br#"{"sequence":3,"prevHash":"p","action":"a","d":tru}"#,
            br#"{"sequence":3,"prevHash":"p"}"#,
            br#"{"sequence":99999999999999999999999,"prevHash":"p","action":"a"}"#,
        ];
        for case in cases {
            assert!(common(case).is_err(), "accepted {}", String::from_utf8_lossy(case));
        }
        let deep = format!(
            r#"{{"sequence":1,"prevHash":"p","action":"a","d":{}{}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert!(common(deep.as_bytes()).is_err());
    }
}

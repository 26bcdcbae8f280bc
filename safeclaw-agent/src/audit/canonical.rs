//! RFC 8785 (JSON Canonicalization Scheme) output for the shapes audit entries use: objects written with
//! keys in ascending order, strings, integers, booleans, arrays, and millisecond durations.
//!
//! Numbers are integers below 2^53, except durations, which are written as the exact decimal of
//! `nanoseconds / 10^6` with trailing zeros trimmed; for the values allowed (under 10^15 ns) that decimal is
//! the shortest round-trip form ECMAScript prints, so the output stays canonical.

/// Largest duration written exactly: 15 significant digits always round-trip through an IEEE double.
pub const MAX_DURATION_NS: u64 = 999_999_999_999_999;

/// Appends a JSON string literal escaped as RFC 8785 requires: `"` and `\` escaped, control characters as
/// the short escapes or `\u00xx` (lowercase hex), everything else verbatim UTF-8.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    // Without an early exit this check vectorizes; almost every string takes the fast path.
    if !bytes.iter().fold(false, |any, &b| any | needs_escape(b)) {
        out.extend_from_slice(bytes);
    } else {
        let mut start = 0;
        while let Some(offset) = bytes[start..].iter().position(|&b| needs_escape(b)) {
            let at = start + offset;
            out.extend_from_slice(&bytes[start..at]);
            write_escape(out, bytes[at]);
            start = at + 1;
        }
        out.extend_from_slice(&bytes[start..]);
    }
    out.push(b'"');
}

fn needs_escape(b: u8) -> bool {
    (b < 0x20) | (b == b'"') | (b == b'\\')
}

fn write_escape(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        _ => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(b >> 4)],
            HEX[usize::from(b & 0xf)],
        ]),
    }
}

pub fn write_u64(out: &mut Vec<u8>, value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = value;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Writes `ns` nanoseconds as milliseconds (`183` → `0.000183`, `2_000_000` → `2`), clamped to
/// `MAX_DURATION_NS`.
pub fn write_duration_ms(out: &mut Vec<u8>, ns: u64) {
    let ns = ns.min(MAX_DURATION_NS);
    write_u64(out, ns / 1_000_000);
    let mut frac = ns % 1_000_000;
    if frac == 0 {
        return;
    }
    let mut width = 6;
    while frac.is_multiple_of(10) {
        frac /= 10;
        width -= 1;
    }
    out.push(b'.');
    let mut digits = [b'0'; 6];
    for slot in digits[..width].iter_mut().rev() {
        *slot = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    out.extend_from_slice(&digits[..width]);
}

/// An object under construction. Keys must be given in ascending byte order (which equals RFC 8785's
/// UTF-16 order for the ASCII keys we use); debug builds check it.
pub struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
    #[cfg(debug_assertions)]
    last_key: &'static str,
}

impl<'a> Object<'a> {
    pub fn begin(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Object {
            out,
            first: true,
            #[cfg(debug_assertions)]
            last_key: "",
        }
    }

    /// Writes `"key":` and returns the buffer for the value.
    pub fn key(&mut self, key: &'static str) -> &mut Vec<u8> {
        #[cfg(debug_assertions)]
        {
            debug_assert!(
                self.first || self.last_key < key,
                "canonical key order: {:?} after {:?}",
                key,
                self.last_key
            );
            self.last_key = key;
        }
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        // Keys are our own ASCII names: nothing to escape.
        debug_assert!(!key.bytes().any(needs_escape));
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    pub fn str(&mut self, key: &'static str, value: &str) {
        write_str(self.key(key), value);
    }

    pub fn opt_str(&mut self, key: &'static str, value: Option<&str>) {
        if let Some(value) = value {
            self.str(key, value);
        }
    }

    pub fn u64(&mut self, key: &'static str, value: u64) {
        write_u64(self.key(key), value);
    }

    pub fn bool(&mut self, key: &'static str, value: bool) {
        self.key(key).extend_from_slice(if value { b"true" } else { b"false" });
    }

    pub fn str_array<'s>(&mut self, key: &'static str, values: impl IntoIterator<Item = &'s str>) {
        let out = self.key(key);
        out.push(b'[');
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, value);
        }
        out.push(b']');
    }

    /// A nested object under `key`, filled by `fill`.
    pub fn object(&mut self, key: &'static str, fill: impl FnOnce(&mut Object<'_>)) {
        let out = self.key(key);
        let mut inner = Object::begin(out);
        fill(&mut inner);
        inner.end();
    }

    pub fn end(self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_escape_as_rfc8785() {
        assert_eq!(string("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(string("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(string("\u{1}\u{1f}"), r#""\u0001\u001f""#);
        assert_eq!(string("é/€\u{7f}"), "\"é/€\u{7f}\"");
    }

    #[test]
    fn strings_round_trip_through_serde_json() {
        let tricky = "x\u{0}y\"z\\\u{2028}😀";
        let parsed: String = serde_json::from_str(&string(tricky)).unwrap();
        assert_eq!(parsed, tricky);
    }

    #[test]
    fn durations_are_shortest_decimals() {
        let ms = |ns| {
            let mut out = Vec::new();
            write_duration_ms(&mut out, ns);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(ms(0), "0");
        assert_eq!(ms(1), "0.000001");
        assert_eq!(ms(183), "0.000183");
        assert_eq!(ms(180_000), "0.18");
        assert_eq!(ms(2_000_000), "2");
        assert_eq!(ms(1_234_500_000), "1234.5");
        assert_eq!(ms(u64::MAX), "999999999.999999");
        for ns in [1u64, 50, 183, 180_000, 999_999, 123_456_789, MAX_DURATION_NS] {
            // The shortest round-trip form of the parsed double is what we wrote.
            let text = ms(ns);
            let value: f64 = text.parse().unwrap();
            let shortest = format!("{value}");
            assert_eq!(shortest, text, "ns={ns}");
        }
    }

    #[test]
    fn objects_write_members_in_order() {
        let mut out = Vec::new();
        let mut obj = Object::begin(&mut out);
        obj.str("a", "x");
        obj.object("b", |inner| inner.u64("c", 7));
        obj.str_array("d", ["p", "q"]);
        obj.bool("e", true);
        obj.end();
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"a":"x","b":{"c":7},"d":["p","q"],"e":true}"#);
    }
}

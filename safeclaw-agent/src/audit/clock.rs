//! Entry timestamps: RFC 3339 UTC with milliseconds (`2026-02-13T10:45:23.102Z`), formatted and parsed.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Length of every timestamp we write.
pub const TIMESTAMP_LEN: usize = 24;

/// Formats timestamps, reusing the date-and-seconds prefix while the second does not change (entries
/// arrive in bursts within one second).
#[derive(Default)]
pub struct TimestampFormatter {
    cached_second: Option<i64>,
    prefix: [u8; 19],
}

impl TimestampFormatter {
    /// Appends the timestamp of `at` (times before 1970 or after 9999 are clamped into range).
    pub fn write(&mut self, at: SystemTime, out: &mut Vec<u8>) {
        let (second, millis) = split_unix(at);
        if self.cached_second != Some(second) {
            let date = OffsetDateTime::from_unix_timestamp(second).unwrap_or(OffsetDateTime::UNIX_EPOCH);
            let text = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                date.year(),
                u8::from(date.month()),
                date.day(),
                date.hour(),
                date.minute(),
                date.second()
            );
            self.prefix.copy_from_slice(&text.as_bytes()[..19]);
            self.cached_second = Some(second);
        }
        out.extend_from_slice(&self.prefix);
        out.push(b'.');
        out.push(b'0' + (millis / 100) as u8);
        out.push(b'0' + (millis / 10 % 10) as u8);
        out.push(b'0' + (millis % 10) as u8);
        out.push(b'Z');
    }

    pub fn format(&mut self, at: SystemTime) -> String {
        let mut out = Vec::with_capacity(TIMESTAMP_LEN);
        self.write(at, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Latest second we format: 9999-12-31T23:59:59Z.
const MAX_SECOND: i64 = 253_402_300_799;

fn split_unix(at: SystemTime) -> (i64, u32) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let second = i64::try_from(since.as_secs()).unwrap_or(MAX_SECOND).min(MAX_SECOND);
    (second, since.subsec_millis())
}

/// Whether `text` is a timestamp as we write them: `YYYY-MM-DDTHH:MM:SS.mmmZ`, a valid UTC time.
pub fn is_canonical(text: &str) -> bool {
    let pattern = b"dddd-dd-ddTdd:dd:dd.dddZ";
    text.len() == TIMESTAMP_LEN
        && text.bytes().zip(pattern).all(|(b, &p)| if p == b'd' { b.is_ascii_digit() } else { b == p })
        && parse(text).is_some()
}

/// Parses an RFC 3339 time (any offset), or a bare date `YYYY-MM-DD` meaning its UTC midnight.
pub fn parse(text: &str) -> Option<SystemTime> {
    let parsed = OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .or_else(|| OffsetDateTime::parse(&format!("{text}T00:00:00Z"), &Rfc3339).ok())?;
    let nanos = parsed.unix_timestamp_nanos();
    let nanos = u64::try_from(nanos).ok()?;
    Some(UNIX_EPOCH + Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_milliseconds() {
        let at = UNIX_EPOCH + Duration::from_millis(1_770_979_523_102);
        let mut f = TimestampFormatter::default();
        assert_eq!(f.format(at), "2026-02-13T10:45:23.102Z");
        assert_eq!(f.format(at + Duration::from_millis(5)), "2026-02-13T10:45:23.107Z");
        assert_eq!(f.format(at + Duration::from_secs(1)), "2026-02-13T10:45:24.102Z");
        assert_eq!(f.format(UNIX_EPOCH).len(), TIMESTAMP_LEN);
    }

    #[test]
    fn parses_what_it_formats_and_bare_dates() {
        let at = UNIX_EPOCH + Duration::from_millis(1_770_979_523_102);
        assert_eq!(parse(&TimestampFormatter::default().format(at)), Some(at));
        assert_eq!(parse("2026-02-13"), Some(UNIX_EPOCH + Duration::from_secs(1_770_940_800)));
        assert_eq!(parse("2026-02-13T11:45:23.102+01:00"), Some(at));
        assert_eq!(parse("yesterday"), None);
        assert!(is_canonical("2026-02-13T10:45:23.102Z"));
        for bad in ["2026-02-13T10:45:23.102+00:00", "2026-02-13T10:45:23Z", "2026-13-13T10:45:23.102Z"] {
            assert!(!is_canonical(bad), "{bad}");
        }
    }
}

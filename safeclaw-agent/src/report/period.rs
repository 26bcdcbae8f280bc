//! The period a report covers: `2026-Q1`, `2026-02`, `2026`, or `2026-01-01:2026-02-13` (both days
//! included), as a half-open range of RFC 3339 timestamps that compare as text with the log's.
use serde::Serialize;
use time::{Date, Month};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Period {
    /// As given on the command line.
    pub label: String,
    /// First instant included: `YYYY-MM-DDT00:00:00.000Z`.
    pub from: String,
    /// First instant excluded.
    pub until: String,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("--period {text:?}: {reason} (expected 2026-Q1, 2026-02, 2026, or 2026-01-01:2026-02-13)")]
pub struct PeriodError {
    text: String,
    reason: String,
}

impl Period {
    pub fn parse(text: &str) -> Result<Period, PeriodError> {
        let fail = |reason: &str| PeriodError { text: text.to_string(), reason: reason.to_string() };
        let (from, until) = if let Some((a, b)) = text.split_once(':') {
            let (from, last) =
                (day(a).ok_or_else(|| fail("bad first day"))?, day(b).ok_or_else(|| fail("bad last day"))?);
            if last < from {
                return Err(fail("the last day is before the first"));
            }
            (from, last.next_day().ok_or_else(|| fail("out of range"))?)
        } else if let Some((y, q)) = text.split_once("-Q") {
            let quarter: u8 =
                q.parse().ok().filter(|q| (1..=4).contains(q)).ok_or_else(|| fail("quarter 1 to 4"))?;
            let year = year(y).ok_or_else(|| fail("bad year"))?;
            let from = month_start(year, 3 * quarter - 2).ok_or_else(|| fail("bad quarter"))?;
            (
                from,
                month_start(year, 3 * quarter + 1)
                    .or_else(|| month_start(year + 1, 1))
                    .ok_or_else(|| fail("out of range"))?,
            )
        } else if let Some((y, m)) = text.split_once('-') {
            let (year, month) =
                (year(y).ok_or_else(|| fail("bad year"))?, m.parse::<u8>().map_err(|_| fail("bad month"))?);
            let from = month_start(year, month).ok_or_else(|| fail("month 01 to 12"))?;
            let until = if month == 12 { month_start(year + 1, 1) } else { month_start(year, month + 1) };
            (from, until.ok_or_else(|| fail("out of range"))?)
        } else {
            let year = year(text).ok_or_else(|| fail("bad year"))?;
            (
                month_start(year, 1).ok_or_else(|| fail("bad year"))?,
                month_start(year + 1, 1).ok_or_else(|| fail("out of range"))?,
            )
        };
        Ok(Period { label: text.to_string(), from: stamp(from), until: stamp(until) })
    }

    /// Whether an entry's timestamp (RFC 3339 UTC with milliseconds) falls in the period.
    pub fn contains(&self, timestamp: &str) -> bool {
        self.from.as_str() <= timestamp && timestamp < self.until.as_str()
    }
}

fn year(text: &str) -> Option<i32> {
    (text.len() == 4 && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse().ok()).flatten()
}

fn month_start(year: i32, month: u8) -> Option<Date> {
    Date::from_calendar_date(year, Month::try_from(month).ok()?, 1).ok()
}

fn day(text: &str) -> Option<Date> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    (text.len() == 10).then(|| Date::parse(text, &format).ok()).flatten()
}

fn stamp(date: Date) -> String {
    format!("{:04}-{:02}-{:02}T00:00:00.000Z", date.year(), u8::from(date.month()), date.day())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarters_months_years_and_ranges() {
        let p = Period::parse("2026-Q1").unwrap();
        assert_eq!(
            (p.from.as_str(), p.until.as_str()),
            ("2026-01-01T00:00:00.000Z", "2026-04-01T00:00:00.000Z")
        );
        let p = Period::parse("2026-Q4").unwrap();
        assert_eq!(p.until, "2027-01-01T00:00:00.000Z");
        let p = Period::parse("2026-02").unwrap();
        assert_eq!(
            (p.from.as_str(), p.until.as_str()),
            ("2026-02-01T00:00:00.000Z", "2026-03-01T00:00:00.000Z")
        );
        let p = Period::parse("2026-12").unwrap();
        assert_eq!(p.until, "2027-01-01T00:00:00.000Z");
        let p = Period::parse("2026").unwrap();
        assert_eq!(
            (p.from.as_str(), p.until.as_str()),
            ("2026-01-01T00:00:00.000Z", "2027-01-01T00:00:00.000Z")
        );
        let p = Period::parse("2026-01-01:2026-02-13").unwrap();
        assert_eq!(p.until, "2026-02-14T00:00:00.000Z");
        assert!(p.contains("2026-02-13T23:59:59.999Z"));
        assert!(!p.contains("2026-02-14T00:00:00.000Z"));
        assert!(!p.contains("2025-12-31T23:59:59.999Z"));
    }

    #[test]
    fn bad_periods_are_refused_with_the_reason() {
        for text in
            ["2026-Q5", "2026-13", "26", "2026-02-30:2026-03-01", "2026-03-01:2026-02-01", "", "Q1-2026"]
        {
            let e = Period::parse(text).unwrap_err().to_string();
            assert!(e.contains(&format!("{text:?}")), "{e}");
        }
    }
}

//! `audit export`: the entries of a time range as JSON lines (verbatim, hashes intact) or CSV.
use std::io::{self, BufRead, BufReader, Write};
use std::path::PathBuf;
use std::time::SystemTime;

use serde_json::Value;

use super::clock::TimestampFormatter;
use super::segment::open_reader;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

/// CSV columns, in order; nested objects are written as compact JSON.
pub const CSV_COLUMNS: [&str; 18] = [
    "sequence",
    "timestamp",
    "action",
    "effect",
    "matchedRule",
    "reason",
    "agentId",
    "sessionId",
    "userId",
    "requestDetails",
    "details",
    "evaluationDurationMs",
    "kernelSeq",
    "repeats",
    "policyHash",
    "flags",
    "hash",
    "prevHash",
];

/// One CSV cell (RFC 4180 quoting). Text a spreadsheet would run as a formula gets a leading `'`.
fn csv_cell(value: &Value) -> String {
    let text = match value {
        Value::Null => return String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let text = if value.is_string() && text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// Writes the entries of `files` (in order) timed in `since..until` to `out`, stopping at sequence
/// `before` (the first damaged entry, under `--verify`); returns how many.
pub fn export(
    files: &[PathBuf],
    since: Option<SystemTime>,
    until: Option<SystemTime>,
    before: Option<u64>,
    format: ExportFormat,
    out: &mut dyn Write,
) -> io::Result<u64> {
    // Timestamps are fixed-width RFC 3339 UTC, so text order is time order.
    let mut stamps = TimestampFormatter::default();
    let since = since.map(|t| stamps.format(t));
    let until = until.map(|t| stamps.format(t));
    if format == ExportFormat::Csv {
        writeln!(out, "{}", CSV_COLUMNS.join(","))?;
    }
    let mut count = 0;
    let mut line = Vec::new();
    'files: for path in files {
        let mut reader = BufReader::new(open_reader(path, |_| {})?);
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            let Ok(entry) = serde_json::from_slice::<Value>(&line) else { continue };
            if before.is_some_and(|before| entry["sequence"].as_u64().is_none_or(|s| s >= before)) {
                break 'files;
            }
            let stamp = entry["timestamp"].as_str().unwrap_or_default();
            if since.as_deref().is_some_and(|s| stamp < s) || until.as_deref().is_some_and(|u| stamp >= u) {
                continue;
            }
            match format {
                ExportFormat::Jsonl => out.write_all(&line)?,
                ExportFormat::Csv => {
                    let cells: Vec<String> = CSV_COLUMNS.iter().map(|c| csv_cell(&entry[*c])).collect();
                    writeln!(out, "{}", cells.join(","))?;
                }
            }
            count += 1;
        }
    }
    out.flush()?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_quote_and_defuse_formulas() {
        assert_eq!(csv_cell(&Value::from("a,b")), "\"a,b\"");
        assert_eq!(csv_cell(&Value::from("say \"hi\"")), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell(&Value::from("=cmd()")), "'=cmd()");
        assert_eq!(csv_cell(&Value::from(42)), "42");
        assert_eq!(csv_cell(&serde_json::json!({"a": 1})), "\"{\"\"a\"\":1}\"");
        assert_eq!(csv_cell(&Value::Null), "");
    }
}

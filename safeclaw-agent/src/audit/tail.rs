//! `audit tail`: one readable line per entry (colored on a terminal) or the raw JSON, filtered, and
//! following the active segment across rotation.
use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::chain::{unseal, Digest};
use super::segment::{open_reader, LogName};

use crate::policy::compiled::Effect;

/// Which entries to show.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub effect: Option<Effect>,
    pub agent: Option<String>,
    /// A pattern on `action` where `*` matches any run of characters (`file.*`).
    pub action: Option<String>,
    /// Only the entries of this agent tool call: the call, its result and the kernel events linked to it.
    pub tool_use: Option<String>,
    /// Entries from this sequence on are not shown (the first damaged one, under `--verify`).
    pub before_sequence: Option<u64>,
}

impl Filter {
    pub fn matches(&self, entry: &Value) -> bool {
        if let (Some(before), Some(sequence)) = (self.before_sequence, entry["sequence"].as_u64()) {
            if sequence >= before {
                return false;
            }
        }
        if let Some(id) = &self.tool_use {
            if entry["requestDetails"]["toolUseId"].as_str() != Some(id.as_str()) {
                return false;
            }
        }
        if let Some(effect) = self.effect {
            if entry["effect"].as_str() != Some(effect.as_str()) {
                return false;
            }
        }
        if let Some(agent) = &self.agent {
            if entry["agentId"].as_str() != Some(agent.as_str()) {
                return false;
            }
        }
        match &self.action {
            Some(pattern) => glob_match(pattern, entry["action"].as_str().unwrap_or_default()),
            None => true,
        }
    }
}

/// `*`-only glob: each `*` matches any run of characters.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// How entries are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Json,
    Text { color: bool },
}

/// Replaces control characters (which could drive the auditor's terminal) with `\u{..}` escapes.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| if c.is_control() { c.escape_unicode().to_string() } else { c.to_string() })
            .collect(),
    )
}

fn text(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => sanitize(s),
        Value::Null => Cow::Borrowed(""),
        other => Cow::Owned(sanitize(&other.to_string()).into_owned()),
    }
}

/// The target of an attempt: path (with mode), argv, or address.
fn target(details: &Value) -> String {
    if let Some(argv) = details["argv"].as_array() {
        return argv.iter().map(|a| text(a).into_owned()).collect::<Vec<_>>().join(" ");
    }
    if let Some(address) = details["address"].as_str() {
        return format!("{}:{} {}", sanitize(address), details["port"], text(&details["protocol"]));
    }
    match (details["path"].as_str(), details["mode"].as_str()) {
        (Some(path), Some(mode)) => format!("{} ({mode})", sanitize(path)),
        (Some(path), None) => sanitize(path).into_owned(),
        _ => String::new(),
    }
}

/// One line for `entry` (without newline).
pub fn render(entry: &Value, color: bool) -> String {
    let paint = |code: &str, s: &str| if color { format!("\x1b[{code}m{s}\x1b[0m") } else { s.to_owned() };
    let effect = entry["effect"].as_str().unwrap_or("");
    let verdict = match effect {
        "deny" => paint("1;31", "DENY "),
        "allow" => paint("32", "ALLOW"),
        "audit" => paint("33", "AUDIT"),
        _ => paint("2", "  -  "),
    };
    let mut line = format!(
        "{} #{:<8} {verdict} {:<16}",
        text(&entry["timestamp"]),
        entry["sequence"].as_u64().unwrap_or_default(),
        text(&entry["action"])
    );
    if let Some(details) = entry.get("requestDetails") {
        line.push(' ');
        line.push_str(&target(details));
        line.push_str(&format!("  pid {} {}", details["pid"], text(&details["comm"])));
    }
    if let Some(details) = entry.get("details").and_then(Value::as_object) {
        for (key, value) in details {
            if key != "signature" {
                line.push_str(&format!(" {key}={}", text(value)));
            }
        }
    }
    for (label, key) in [("rule", "matchedRule"), ("agent", "agentId")] {
        if let Some(value) = entry.get(key).filter(|v| !v.is_null()) {
            line.push_str(&paint("2", &format!("  {label} {}", text(value))));
        }
    }
    line
}

/// Prints entries once each, in `style`, remembering how far it got so that nothing is shown twice
/// when a rotated segment is read again.
struct Printer<'a> {
    filter: &'a Filter,
    style: Style,
    out: &'a mut dyn Write,
    /// Sequence after the last entry seen (shown or filtered out).
    next: Option<u64>,
    /// Under `--verify` while following: the hash of the last entry read, which the next must link to.
    chain: Option<Digest>,
}

impl Printer<'_> {
    /// Handles one line (newline excluded); unreadable lines are shown as such.
    fn line(&mut self, line: &[u8]) -> io::Result<()> {
        if let Some(previous) = self.chain {
            self.chain = Some(linked_hash(line, previous)?);
        }
        let Ok(entry) = serde_json::from_slice::<Value>(line) else {
            return writeln!(self.out, "(unreadable line: {})", sanitize(&String::from_utf8_lossy(line)));
        };
        if let Some(sequence) = entry["sequence"].as_u64() {
            if self.next.is_some_and(|next| sequence < next) {
                return Ok(());
            }
            self.next = Some(sequence + 1);
        }
        if !self.filter.matches(&entry) {
            return Ok(());
        }
        match self.style {
            Style::Json => {
                self.out.write_all(line)?;
                self.out.write_all(b"\n")
            }
            Style::Text { color } => writeln!(self.out, "{}", render(&entry, color)),
        }
    }

    /// Prints every complete line available now; keeps a trailing partial line in `line`.
    fn drain(&mut self, reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<()> {
        while reader.read_until(b'\n', line)? > 0 && line.last() == Some(&b'\n') {
            self.line(&line[..line.len() - 1])?;
            line.clear();
        }
        self.out.flush()
    }

    /// After a rotation: the rotated segments holding entries not seen yet (several rotations may have
    /// happened while we slept).
    fn catch_up(&mut self, active: &Path) -> io::Result<()> {
        let rotated: Vec<_> =
            LogName::of_active(active).list()?.into_iter().filter(|s| s.first_seq.is_some()).collect();
        for (i, segment) in rotated.iter().enumerate() {
            // A segment ends where the next one starts: skip those seen to the end.
            let following = rotated.get(i + 1).and_then(|s| s.first_seq);
            if let (Some(next), Some(following)) = (self.next, following) {
                if following <= next {
                    continue;
                }
            }
            match open_reader(&segment.path, |_| {}) {
                Ok(reader) => self.drain(&mut BufReader::new(reader), &mut Vec::new())?,
                // Compression replaced it meanwhile: its compressed copy holds the same entries.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let compressed = LogName::of_active(active)
                        .list()?
                        .into_iter()
                        .find(|s| s.first_seq == segment.first_seq);
                    if let Some(compressed) = compressed {
                        self.drain(
                            &mut BufReader::new(open_reader(&compressed.path, |_| {})?),
                            &mut Vec::new(),
                        )?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The hash of `line` if its bytes hash to the hash it claims and its `prevHash` is `previous`: one link
/// of the chain `audit verify` checks whole. An error stops `tail -f --verify` at the first broken link.
fn linked_hash(line: &[u8], previous: Digest) -> io::Result<Digest> {
    let broken = |why: &str| {
        let sequence = super::scan::common(line).map_or_else(|_| "?".to_owned(), |c| c.sequence.to_string());
        io::Error::other(format!("the chain breaks at entry {sequence}: {why}; nothing after it is shown"))
    };
    let (body, claimed) = unseal(line).ok_or_else(|| broken("not a sealed entry"))?;
    if body.digest() != claimed {
        return Err(broken("its content does not match its hash"));
    }
    let common = super::scan::common(line).map_err(|e| broken(&e))?;
    if Digest::parse(common.prev_hash) != Some(previous) {
        return Err(broken("its prevHash is not the previous entry's hash"));
    }
    Ok(claimed)
}

/// Bytes read back from the end of the active segment to find the last entries.
const TAIL_WINDOW: u64 = 4 << 20;

/// Prints the last `count` matching entries of `active`, then, with `follow`, every new one, following
/// rotations.
pub fn run(
    active: &Path,
    filter: &Filter,
    count: usize,
    follow: bool,
    style: Style,
    verify_follow: bool,
    out: &mut dyn Write,
) -> io::Result<()> {
    let mut file = File::open(active)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL_WINDOW);
    file.seek(SeekFrom::Start(start))?;
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    if start > 0 {
        reader.read_until(b'\n', &mut line)?;
    }
    let mut last = std::collections::VecDeque::with_capacity(count);
    let mut next = None;
    let mut last_hash = None;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 || line.last() != Some(&b'\n') {
            break;
        }
        last_hash = unseal(&line[..line.len() - 1]).map(|(_, hash)| hash);
        let entry = serde_json::from_slice::<Value>(&line).ok();
        if let Some(sequence) = entry.as_ref().and_then(|e| e["sequence"].as_u64()) {
            next = Some(sequence + 1);
        }
        if entry.is_none_or(|e| filter.matches(&e)) && count > 0 {
            if last.len() == count {
                last.pop_front();
            }
            last.push_back(line[..line.len() - 1].to_vec());
        }
    }
    let mut printer = Printer { filter, style, out, next: None, chain: None };
    for entry in &last {
        printer.line(entry)?;
    }
    printer.next = next;
    if verify_follow {
        printer.chain = Some(last_hash.unwrap_or(super::chain::GENESIS));
    }
    printer.out.flush()?;
    if !follow {
        return Ok(());
    }
    // `line` may hold the start of an entry still being written.
    loop {
        printer.drain(&mut reader, &mut line)?;
        std::thread::sleep(Duration::from_millis(200));
        // The name is opened, not stat'ed, and the opened file is the one compared and then read: a
        // rotation that renames it in between cannot make a checked name vanish before it is opened.
        // Between a rotation's rename and the new file's creation the name is absent: wait a poll.
        let now = match File::open(active) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let (ours, theirs) = (reader.get_ref().metadata()?, now.metadata()?);
        // Rotated (a new file under the name) or truncated: finish the old file, read any segment
        // rotated out since, then go on in the active one. The active file is opened before the
        // segments are listed: opened after, it could be one rotation newer than the list, and the
        // segment between them would never be read.
        if theirs.ino() != ours.ino() || theirs.len() < reader.stream_position()? {
            printer.drain(&mut reader, &mut line)?;
            printer.catch_up(active)?;
            reader = BufReader::new(now);
            line.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn following_with_verify_checks_each_link() {
        let sealed = |sequence: u64, previous: Digest| {
            let mut line = Vec::new();
            let body = format!(r#"{{"sequence":{sequence},"action":"file.read","prevHash":"{previous}"}}"#);
            let hash = super::super::chain::seal(body.as_bytes(), &mut line);
            line.pop();
            (line, hash)
        };
        let (first, first_hash) = sealed(0, super::super::chain::GENESIS);
        let (second, second_hash) = sealed(1, first_hash);
        assert_eq!(linked_hash(&first, super::super::chain::GENESIS).unwrap(), first_hash);
        assert_eq!(linked_hash(&second, first_hash).unwrap(), second_hash);
        let e = linked_hash(&second, second_hash).unwrap_err().to_string();
        assert!(e.contains("entry 1") && e.contains("prevHash"), "{e}");
        let changed = String::from_utf8(second).unwrap().replace("file.read", "file.wrte");
        let e = linked_hash(changed.as_bytes(), first_hash).unwrap_err().to_string();
        assert!(e.contains("does not match its hash"), "{e}");
    }

    /// Sends what `run` prints to the test, which reads it as it comes.
    struct Sent(std::sync::mpsc::Sender<Vec<u8>>);

    impl Write for Sent {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.send(buf.to_vec()).map_err(io::Error::other)?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn following_waits_out_an_active_name_that_is_briefly_absent() {
        let dir = tempfile::tempdir().unwrap();
        let active = dir.path().join("audit.jsonl");
        let entries = |range: std::ops::Range<u64>| -> String {
            range.map(|k| format!("{{\"sequence\":{k},\"action\":\"file.read\"}}\n")).collect()
        };
        std::fs::write(&active, entries(0..2)).unwrap();
        let (sender, received) = std::sync::mpsc::channel();
        let followed = active.clone();
        std::thread::spawn(move || {
            run(&followed, &Filter::default(), 1, true, Style::Json, false, &mut Sent(sender))
        });
        let mut printed = String::new();
        let read_until = |sequence: u64, printed: &mut String| {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while !printed.contains(&format!("\"sequence\":{sequence},")) {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let bytes = received.recv_timeout(left).unwrap_or_else(|e| panic!("{e}; printed: {printed}"));
                printed.push_str(&String::from_utf8(bytes).unwrap());
            }
        };
        read_until(1, &mut printed);
        // A rotation: the active segment gets its last entry, is renamed, and its successor is created
        // only after tail has polled (at least twice) with no file under the active name.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&active)
            .unwrap()
            .write_all(entries(2..3).as_bytes())
            .unwrap();
        std::fs::rename(&active, LogName::of_active(&active).rotated(0)).unwrap();
        std::thread::sleep(Duration::from_millis(600));
        std::fs::write(&active, entries(3..5)).unwrap();
        read_until(4, &mut printed);
        let sequences: Vec<u64> = printed
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["sequence"].as_u64().unwrap())
            .collect();
        assert_eq!(sequences, [1, 2, 3, 4], "{printed}");
    }

    #[test]
    fn globs_match_like_shell_stars() {
        assert!(glob_match("file.*", "file.read"));
        assert!(glob_match("*.connect", "network.connect"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("file.*", "process.exec"));
        assert!(!glob_match("file.read", "file.readx"));
        assert!(!glob_match("a*ab", "ab"));
    }

    #[test]
    fn filters_by_effect_agent_and_action() {
        let entry = serde_json::json!({"action": "file.write", "effect": "deny", "agentId": "a1"});
        assert!(Filter {
            effect: Some(Effect::Deny),
            agent: Some("a1".into()),
            action: Some("file.*".into()),
            tool_use: None,
            before_sequence: None,
        }
        .matches(&entry));
        assert!(!Filter { effect: Some(Effect::Allow), ..Filter::default() }.matches(&entry));
        assert!(!Filter { agent: Some("a2".into()), ..Filter::default() }.matches(&entry));
        let linked =
            serde_json::json!({"action": "process.exec", "requestDetails": {"toolUseId": "toolu_1"}});
        assert!(Filter { tool_use: Some("toolu_1".into()), ..Filter::default() }.matches(&linked));
        assert!(!Filter { tool_use: Some("toolu_1".into()), ..Filter::default() }.matches(&entry));
        let numbered = serde_json::json!({"sequence": 5, "action": "file.read"});
        assert!(Filter { before_sequence: Some(6), ..Filter::default() }.matches(&numbered));
        assert!(!Filter { before_sequence: Some(5), ..Filter::default() }.matches(&numbered));
    }

    #[test]
    fn renders_one_line_without_terminal_escapes_from_data() {
        let entry = serde_json::json!({
            "sequence": 7, "timestamp": "2026-02-13T10:45:23.102Z", "action": "file.write", "effect": "deny",
            "matchedRule": "block-etc", "requestDetails": {"path": "/etc/\u{1b}[2Jx", "mode": "rw", "pid": 5, "comm": "sh"}
        });
        let plain = render(&entry, false);
        assert!(!plain.contains('\x1b'), "{plain}");
        assert!(
            plain.contains("DENY")
                && plain.contains("/etc/\\u{1b}[2Jx (rw)")
                && plain.contains("rule block-etc"),
            "{plain}"
        );
        let colored = render(&entry, true);
        assert!(colored.contains("\x1b[1;31mDENY"), "{colored}");
    }
}

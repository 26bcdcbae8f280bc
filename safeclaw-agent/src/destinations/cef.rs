//! ArcSight Common Event Format (CEF:0) of one audit entry: header and extension escaping as the CEF
//! specification prescribes, the standard keys where they fit, and labelled custom strings that tie every
//! SIEM line back to its chain entry.
use serde_json::Value;

use crate::audit::clock;

pub const VENDOR: &str = "Authensor";
pub const PRODUCT: &str = "SafeClaw";

/// Longest value written for any key; longer ones are cut with `CUT_MARKER` and the count of bytes cut.
pub const MAX_VALUE_BYTES: usize = 1023;
/// Ends a value that was cut: `…[cut 1234 bytes]`.
pub const CUT_MARKER: &str = "…[cut ";

/// CEF severity (0 to 10) of an entry: from its effect for attempts, from its kind otherwise.
pub fn severity(entry: &Value) -> u8 {
    match (entry["effect"].as_str(), entry["action"].as_str().unwrap_or_default()) {
        (Some("deny"), _) => 7,
        (Some("audit"), _) => 5,
        (Some(_), _) => 3,
        (None, "audit.tamper_detected") => 10,
        (None, "audit.gap" | "kernel.lockdown_on") => 8,
        (None, "destination.failing" | "policy.reload_rejected" | "audit.write_recovered") => 6,
        (None, _) => 1,
    }
}

/// The CEF line for `entry` (no newline); `host` is the reporting host's name.
pub fn format(entry: &Value, host: &str) -> String {
    let action = entry["action"].as_str().unwrap_or("unknown");
    let effect = entry["effect"].as_str();
    let name = match effect {
        Some(effect) => format!("{action} {effect}"),
        None => action.to_owned(),
    };
    let mut out = String::with_capacity(512);
    out.push_str("CEF:0|");
    for field in [VENDOR, PRODUCT, env!("CARGO_PKG_VERSION"), action, &name] {
        escape_header(field, &mut out);
        out.push('|');
    }
    out.push_str(&severity(entry).to_string());
    out.push('|');
    let mut ext = Extension { out: &mut out, first: true };
    if let Some(rt) = entry["timestamp"].as_str().and_then(clock::parse) {
        let millis = rt.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        ext.push("rt", &millis.to_string());
    }
    ext.push("dvchost", host);
    ext.opt("externalId", entry["sequence"].as_u64().map(|s| s.to_string()).as_deref());
    ext.push("cat", action);
    if let Some(effect) = effect {
        ext.push("act", effect);
        ext.push("outcome", if effect == "deny" { "failure" } else { "success" });
    }
    ext.opt("suser", entry["agentId"].as_str());
    ext.opt("duser", entry["userId"].as_str());
    ext.opt("msg", entry["reason"].as_str());
    let details = &entry["requestDetails"];
    if let Some(path) = details["path"].as_str() {
        ext.push("filePath", path);
        ext.push("fname", path.rsplit('/').next().unwrap_or(path));
    }
    if let Some(argv) = details["argv"].as_array() {
        let joined: Vec<&str> = argv.iter().filter_map(Value::as_str).collect();
        ext.push("flexString1Label", "argv");
        ext.push("flexString1", &joined.join(" "));
    }
    ext.opt("dst", details["address"].as_str());
    ext.opt("dpt", details["port"].as_u64().map(|p| p.to_string()).as_deref());
    ext.opt("proto", details["protocol"].as_str().map(str::to_ascii_uppercase).as_deref());
    ext.opt("sproc", details["comm"].as_str());
    ext.opt("spid", details["pid"].as_u64().map(|p| p.to_string()).as_deref());
    ext.opt("suid", details["uid"].as_u64().map(|u| u.to_string()).as_deref());
    if let Some(other) = entry.get("details").filter(|d| d.as_object().is_some_and(|o| !o.is_empty())) {
        ext.push("flexString2Label", "details");
        ext.push("flexString2", &other.to_string());
    }
    for (n, key) in
        ["agentId", "sessionId", "matchedRule", "policyHash", "hash", "prevHash"].iter().enumerate()
    {
        if let Some(value) = entry[*key].as_str() {
            ext.push(&format!("cs{}Label", n + 1), key);
            ext.push(&format!("cs{}", n + 1), value);
        }
    }
    out
}

struct Extension<'a> {
    out: &'a mut String,
    first: bool,
}

impl Extension<'_> {
    fn push(&mut self, key: &str, value: &str) {
        if !self.first {
            self.out.push(' ');
        }
        self.first = false;
        self.out.push_str(key);
        self.out.push('=');
        escape_value(&cut(value), self.out);
    }

    fn opt(&mut self, key: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.push(key, value);
        }
    }
}

/// `value`, or its first bytes (at a character boundary) and the cut marker when it is too long.
pub fn cut(value: &str) -> std::borrow::Cow<'_, str> {
    if value.len() <= MAX_VALUE_BYTES {
        return value.into();
    }
    let mut keep = MAX_VALUE_BYTES - 32;
    while !value.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{CUT_MARKER}{} bytes]", &value[..keep], value.len() - keep).into()
}

/// Header fields: `\` and `|` escaped with a backslash; line breaks (not allowed there) become spaces.
fn escape_header(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
}

/// Extension values: `\` and `=` escaped with a backslash, line breaks written as `\n` and `\r`.
fn escape_value(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_header_and_extension_as_the_spec_says() {
        let entry = serde_json::json!({
            "sequence": 12, "timestamp": "2026-02-13T10:45:23.102Z", "action": "file.write", "effect": "deny",
            "reason": "a=b\\c\nd|e", "matchedRule": "r|1", "agentId": "bot",
            "requestDetails": {"path": "/tmp/x=y", "mode": "w", "pid": 7, "comm": "sh", "uid": 0},
            "hash": "sha256:aa", "prevHash": "sha256:bb"
        });
        let line = format(&entry, "host1");
        assert!(line.starts_with("CEF:0|Authensor|SafeClaw|"), "{line}");
        assert!(
            line.contains("|file.write|file.write deny|7|rt=1770979523102 dvchost=host1 externalId=12 "),
            "{line}"
        );
        assert!(line.contains(" msg=a\\=b\\\\c\\nd|e "), "{line}");
        assert!(line.contains(" filePath=/tmp/x\\=y fname=x\\=y "), "{line}");
        assert!(line.contains(" cs1Label=agentId cs1=bot cs3Label=matchedRule cs3=r|1 "), "{line}");
        assert!(line.ends_with("cs5Label=hash cs5=sha256:aa cs6Label=prevHash cs6=sha256:bb"), "{line}");
        let mut header = String::new();
        escape_header("a|b\\c", &mut header);
        assert_eq!(header, "a\\|b\\\\c");
    }

    #[test]
    fn long_values_are_cut_with_a_marker() {
        let long = "é".repeat(2000);
        let cut = cut(&long);
        assert!(cut.len() <= MAX_VALUE_BYTES, "{}", cut.len());
        assert!(cut.contains(CUT_MARKER) && cut.ends_with(" bytes]"), "{cut}");
    }
}

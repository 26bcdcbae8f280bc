//! The audit entry of an agent tool call or result (`tool.call`, `tool.result`): what the model asked
//! for, decided by the daemon, redacted, and with large inputs cut to a bounded size and their hash.
use std::borrow::Cow;
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};

use super::canonical::{write_duration_ms, Object};
use super::chain::Digest;
use super::entry::{FieldSet, Header, Identity};
use super::redact::{Hits, Redactor};
use crate::policy::compiled::Effect;

/// Longest tool input kept in an entry, in bytes (after redaction); the rest is cut with a marker.
pub const MAX_INPUT: usize = 4096;
/// Longest semantic field (command, URL, path) or result summary kept, in bytes.
pub const MAX_FIELD: usize = 2048;

/// One tool call or result the daemon decided on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolRecord {
    pub time: SystemTime,
    /// `tool.call` or `tool.result`.
    pub action: &'static str,
    pub effect: Effect,
    pub matched_rule: Option<String>,
    pub reason: Option<String>,
    pub identity: Identity,
    pub evaluation_ns: u64,
    pub policy_hash: Digest,
    pub details: ToolDetails,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolDetails {
    /// `claude-code` or `codex`, as the hook was installed for.
    pub agent_cli: String,
    pub tool_name: String,
    pub tool_use_id: Option<String>,
    /// The CLI's own session id, as the hook JSON claims it (not the SafeClaw session).
    pub cli_session_id: Option<String>,
    /// The tool input as compact JSON.
    pub input: String,
    pub semantic: Option<Semantic>,
    pub result: Option<ResultSummary>,
    /// The hook process, as the kernel names it.
    pub pid: u32,
    pub uid: u32,
    pub cgroup: u64,
}

/// What a known tool does, in the terms of the rest of the trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Semantic {
    /// `shell.execute`: Bash.
    Shell { command: String },
    /// `http.request`: WebFetch.
    Http { url: String },
    /// `file.read` (Read) or `file.write` (Write, Edit, MultiEdit, NotebookEdit).
    File { write: bool, path: String },
    /// `mcp.call`: `mcp__SERVER__TOOL`.
    Mcp { server: String, tool: String },
}

impl Semantic {
    pub fn action(&self) -> &'static str {
        match self {
            Semantic::Shell { .. } => "shell.execute",
            Semantic::Http { .. } => "http.request",
            Semantic::File { write: false, .. } => "file.read",
            Semantic::File { write: true, .. } => "file.write",
            Semantic::Mcp { .. } => "mcp.call",
        }
    }
}

/// A bounded summary of what a tool returned (the hook cuts it before sending).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResultSummary {
    /// `ok`, `error` or `interrupted`.
    pub status: String,
    /// The start of the output.
    pub text: String,
    /// Size of the whole output in bytes.
    pub bytes: u64,
}

/// `text` redacted, then cut to `max` bytes (at a character boundary) with a marker naming the full
/// size and the sha256 of the redacted text, which is also returned.
fn bounded<'a>(
    text: &'a str,
    max: usize,
    redactor: &Redactor,
    hits: &mut Hits,
) -> (Cow<'a, str>, Option<Digest>) {
    let redacted = redactor.redact(text, hits);
    if redacted.len() <= max {
        return (redacted, None);
    }
    let digest = Digest(Sha256::digest(redacted.as_bytes()).into());
    let mut end = max;
    while !redacted.is_char_boundary(end) {
        end -= 1;
    }
    let mut hex = Vec::new();
    digest.write_text(&mut hex);
    let cut = format!(
        "{}…[cut: {} bytes in all, {}]",
        &redacted[..end],
        redacted.len(),
        String::from_utf8_lossy(&hex)
    );
    (Cow::Owned(cut), Some(digest))
}

/// Appends the canonical body of a tool entry; secrets in the input, command, URL, path and result
/// are masked first.
pub(crate) fn write_tool(
    out: &mut Vec<u8>,
    header: &Header<'_>,
    record: &ToolRecord,
    fields: FieldSet,
    redactor: &Redactor,
) {
    let mut hits = Hits::default();
    let d = &record.details;
    let (input, input_digest) = bounded(&d.input, MAX_INPUT, redactor, &mut hits);
    let semantic = d.semantic.as_ref().map(|s| match s {
        Semantic::Shell { command } => ("command", bounded(command, MAX_FIELD, redactor, &mut hits).0),
        Semantic::Http { url } => ("url", bounded(url, MAX_FIELD, redactor, &mut hits).0),
        Semantic::File { path, .. } => ("path", bounded(path, MAX_FIELD, redactor, &mut hits).0),
        Semantic::Mcp { server, .. } => ("mcpServer", Cow::Borrowed(server.as_str())),
    });
    let result = d.result.as_ref().map(|r| (r, bounded(&r.text, MAX_FIELD, redactor, &mut hits).0));
    let id = &record.identity;
    let mut obj = Object::begin(out);
    obj.str("action", record.action);
    if fields.has(FieldSet::AGENT_ID) {
        obj.opt_str("agentId", id.agent_id.as_deref());
    }
    if fields.has(FieldSet::EFFECT) {
        obj.str("effect", record.effect.as_str());
    }
    if fields.has(FieldSet::EVALUATION_DURATION) {
        write_duration_ms(obj.key("evaluationDurationMs"), record.evaluation_ns);
    }
    if fields.has(FieldSet::MATCHED_RULE) {
        obj.opt_str("matchedRule", record.matched_rule.as_deref());
    }
    if fields.has(FieldSet::POLICY_HASH) {
        let out = obj.key("policyHash");
        out.push(b'"');
        record.policy_hash.write_text(out);
        out.push(b'"');
    }
    let prev = obj.key("prevHash");
    prev.push(b'"');
    header.prev_hash.write_text(prev);
    prev.push(b'"');
    if fields.has(FieldSet::REASON) {
        obj.opt_str("reason", record.reason.as_deref());
    }
    if fields.has(FieldSet::REQUEST_DETAILS) && !hits.is_empty() {
        obj.str_array("redacted", redactor.names(hits));
    }
    if fields.has(FieldSet::REQUEST_DETAILS) {
        obj.object("requestDetails", |o| {
            o.str("agentCli", &d.agent_cli);
            o.u64("cgroup", d.cgroup);
            o.opt_str("cliSessionId", d.cli_session_id.as_deref());
            if let Some(("command", text)) = &semantic {
                o.str("command", text);
            }
            o.str("input", &input);
            o.u64("inputBytes", d.input.len() as u64);
            if let Some(digest) = &input_digest {
                let out = o.key("inputSha256");
                out.push(b'"');
                digest.write_text(out);
                out.push(b'"');
            }
            if let Some(("mcpServer", server)) = &semantic {
                o.str("mcpServer", server);
            }
            if let Some(Semantic::Mcp { tool, .. }) = &d.semantic {
                o.str("mcpTool", tool);
            }
            if let Some(("path", text)) = &semantic {
                o.str("path", text);
            }
            o.u64("pid", u64::from(d.pid));
            if let Some((summary, text)) = &result {
                o.object("result", |r| {
                    r.u64("bytes", summary.bytes);
                    r.str("status", &summary.status);
                    r.str("text", text);
                });
            }
            if let Some(semantic) = &d.semantic {
                o.str("semanticAction", semantic.action());
            }
            o.str("toolName", &d.tool_name);
            o.opt_str("toolUseId", d.tool_use_id.as_deref());
            o.u64("uid", u64::from(d.uid));
            if let Some(("url", text)) = &semantic {
                o.str("url", text);
            }
        });
    }
    obj.u64("sequence", header.sequence);
    if fields.has(FieldSet::SESSION_ID) {
        obj.opt_str("sessionId", id.session_id.as_deref());
    }
    let out = obj.key("timestamp");
    out.push(b'"');
    out.extend_from_slice(header.timestamp);
    out.push(b'"');
    if fields.has(FieldSet::USER_ID) {
        obj.opt_str("userId", id.user_id.as_deref());
    }
    obj.end();
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn record(input: String, semantic: Option<Semantic>) -> ToolRecord {
        ToolRecord {
            time: UNIX_EPOCH,
            action: "tool.call",
            effect: Effect::Deny,
            matched_rule: Some("no-rm".into()),
            reason: Some("no".into()),
            identity: Identity {
                agent_id: Some("claude".into()),
                session_id: Some("sess_a".into()),
                user_id: None,
            },
            evaluation_ns: 12_000,
            policy_hash: Digest::of(b"p"),
            details: ToolDetails {
                agent_cli: "claude-code".into(),
                tool_name: "Bash".into(),
                tool_use_id: Some("toolu_1".into()),
                cli_session_id: None,
                input,
                semantic,
                result: Some(ResultSummary { status: "ok".into(), text: "done".into(), bytes: 4 }),
                pid: 5,
                uid: 1000,
                cgroup: 77,
            },
        }
    }

    fn body(record: &ToolRecord) -> (Vec<u8>, serde_json::Value) {
        let header =
            Header { sequence: 9, prev_hash: Digest::of(b"prev"), timestamp: b"2026-02-13T10:45:23.102Z" };
        let mut out = Vec::new();
        write_tool(&mut out, &header, record, FieldSet::ALL, &Redactor::builtin());
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        (out, value)
    }

    #[test]
    fn tool_body_is_canonical_and_redacted() {
        let command = "curl -H 'Authorization: Bearer abcdefghijklmnop' https://x".to_owned();
        let input = serde_json::json!({ "command": command }).to_string();
        let (out, value) = body(&record(input, Some(Semantic::Shell { command })));
        assert_eq!(serde_json::to_vec(&value).unwrap(), out, "keys sorted, compact");
        let details = &value["requestDetails"];
        assert_eq!(details["semanticAction"], "shell.execute");
        assert!(details["command"].as_str().unwrap().contains("Bearer [REDACTED]"), "{details}");
        assert!(!out.windows(8).any(|w| w == b"abcdefgh"), "the token is nowhere in the entry");
        assert_eq!(value["redacted"], serde_json::json!(["bearer-token"]));
        assert_eq!(details["toolUseId"], "toolu_1");
        assert_eq!(details["result"]["status"], "ok");
        assert!(value.get("kernelSeq").is_none());
        for semantic in [
            Semantic::Http { url: "https://a".into() },
            Semantic::File { write: true, path: "/x".into() },
            Semantic::Mcp { server: "github".into(), tool: "create_issue".into() },
        ] {
            let (out, value) = body(&record("{}".into(), Some(semantic)));
            assert_eq!(serde_json::to_vec(&value).unwrap(), out);
        }
    }

    #[test]
    fn large_inputs_are_cut_with_their_hash() {
        let input = "é".repeat(MAX_INPUT);
        let (_, value) = body(&record(input.clone(), None));
        let details = &value["requestDetails"];
        let kept = details["input"].as_str().unwrap();
        assert!(kept.len() < MAX_INPUT + 200 && kept.contains("…[cut: 8192 bytes in all, sha256:"), "{kept}");
        let expected =
            format!("sha256:{}", crate::audit::chain::hex_string(&Sha256::digest(input.as_bytes())));
        assert_eq!(details["inputSha256"], expected);
        assert_eq!(details["inputBytes"], 8192);
    }
}

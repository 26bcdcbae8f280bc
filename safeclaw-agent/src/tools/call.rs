//! A tool call as a hook receives it on stdin from Claude Code or Codex, and what a known tool means.
use serde::{Deserialize, Serialize};

use crate::audit::tool_entry::{ResultSummary, Semantic, MAX_FIELD};
use crate::policy::ToolPhase;

/// Largest hook input read from stdin; a larger one is denied unread (fail closed).
pub const MAX_HOOK_INPUT: usize = 512 * 1024;
/// Longest tool-use id kept; ids are short tokens such as `toolu_01…` or `call_…`.
const MAX_TOOL_USE_ID: usize = 128;

/// Which agent CLI runs the hook: it decides the answer's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AgentCli {
    ClaudeCode,
    Codex,
}

impl AgentCli {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentCli::ClaudeCode => "claude-code",
            AgentCli::Codex => "codex",
        }
    }
}

/// The hook event, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HookEvent {
    PreToolUse,
    PostToolUse,
}

impl HookEvent {
    pub fn phase(self) -> ToolPhase {
        match self {
            HookEvent::PreToolUse => ToolPhase::Call,
            HookEvent::PostToolUse => ToolPhase::Result,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HookEvent::PreToolUse => "PreToolUse",
            HookEvent::PostToolUse => "PostToolUse",
        }
    }
}

/// The members of the hook JSON SafeClaw reads; the CLIs send more, which is ignored.
#[derive(Debug, Deserialize)]
struct RawHookInput {
    hook_event_name: Option<String>,
    tool_name: String,
    #[serde(default)]
    tool_input: serde_json::Value,
    tool_use_id: Option<String>,
    session_id: Option<String>,
    tool_response: Option<serde_json::Value>,
}

/// What the hook sends the daemon about one tool call. Nothing in it identifies the caller: the
/// daemon takes that from the kernel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolCall {
    pub cli: AgentCli,
    pub phase: ToolPhase,
    pub tool_name: String,
    pub tool_use_id: Option<String>,
    pub cli_session_id: Option<String>,
    pub input: serde_json::Value,
    pub result: Option<ResultSummary>,
}

/// Parses the hook's stdin. The event named in the JSON must be the one the hook was installed for.
pub fn parse(cli: AgentCli, event: HookEvent, stdin: &[u8]) -> Result<ToolCall, String> {
    let raw: RawHookInput =
        serde_json::from_slice(stdin).map_err(|e| format!("the hook input is not the expected JSON: {e}"))?;
    if let Some(name) = &raw.hook_event_name {
        if name != event.name() {
            return Err(format!("the hook input is a {name} event, but this hook handles {}", event.name()));
        }
    }
    if raw.tool_name.is_empty() || raw.tool_name.len() > 256 {
        return Err("the hook input's tool_name is empty or longer than 256 bytes".to_owned());
    }
    let tool_use_id = raw.tool_use_id.filter(|id| valid_id(id));
    let result = match event {
        HookEvent::PostToolUse => Some(summarize(raw.tool_response.as_ref())),
        HookEvent::PreToolUse => None,
    };
    Ok(ToolCall {
        cli,
        phase: event.phase(),
        tool_name: raw.tool_name,
        tool_use_id,
        cli_session_id: raw.session_id.filter(|id| valid_id(id)),
        input: raw.tool_input,
        result,
    })
}

/// Ids are recorded and matched as given, so only short printable tokens are kept.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_TOOL_USE_ID
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// A bounded summary of a tool response: Claude sends an object (`stdout`, `stderr`, `interrupted`,
/// `is_error`…), Codex a string.
fn summarize(response: Option<&serde_json::Value>) -> ResultSummary {
    let (status, text) = match response {
        None | Some(serde_json::Value::Null) => ("ok", String::new()),
        Some(serde_json::Value::String(text)) => ("ok", text.clone()),
        Some(serde_json::Value::Object(map)) => {
            let flag = |key: &str| map.get(key).and_then(serde_json::Value::as_bool).unwrap_or(false);
            let status = if flag("interrupted") {
                "interrupted"
            } else if flag("is_error") || map.get("error").is_some_and(|e| !e.is_null()) {
                "error"
            } else {
                "ok"
            };
            let text = match (map.get("stdout"), map.get("stderr")) {
                (Some(out), err) => {
                    let mut text = crate::policy::member_text(out);
                    if let Some(err) = err.map(crate::policy::member_text).filter(|e| !e.is_empty()) {
                        text.push_str("\n[stderr] ");
                        text.push_str(&err);
                    }
                    text
                }
                _ => serde_json::Value::Object(map.clone()).to_string(),
            };
            (status, text)
        }
        Some(other) => ("ok", other.to_string()),
    };
    let bytes = text.len() as u64;
    let mut end = text.len().min(MAX_FIELD);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    ResultSummary { status: status.to_owned(), text: text[..end].to_owned(), bytes }
}

/// The semantic action of a known tool, when its input says it unambiguously.
pub fn semantic(tool: &str, input: &serde_json::Value) -> Option<Semantic> {
    let member = |name: &str| input.get(name).map(crate::policy::member_text).filter(|t| !t.is_empty());
    match tool {
        "Bash" | "exec_command" | "shell" => {
            member("command").or_else(|| member("cmd")).map(|command| Semantic::Shell { command })
        }
        "WebFetch" => member("url").map(|url| Semantic::Http { url }),
        "Read" => member("file_path").map(|path| Semantic::File { write: false, path }),
        "Write" | "Edit" | "MultiEdit" => {
            member("file_path").map(|path| Semantic::File { write: true, path })
        }
        "NotebookEdit" => member("notebook_path").map(|path| Semantic::File { write: true, path }),
        _ => {
            let rest = tool.strip_prefix("mcp__")?;
            // `mcp__a__b__c` could be server `a` with tool `b__c` or server `a__b` with tool `c`.
            let (server, tool) = rest.split_once("__")?;
            (!server.is_empty() && !tool.is_empty() && !tool.contains("__"))
                .then(|| Semantic::Mcp { server: server.to_owned(), tool: tool.to_owned() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_claude_and_codex_inputs() {
        let claude = br#"{"session_id":"abc","transcript_path":"/t","cwd":"/p","permission_mode":"default","hook_event_name":"PreToolUse","tool_name":"Bash","tool_input":{"command":"ls","description":"list"},"tool_use_id":"toolu_01X"}"#;
        let call = parse(AgentCli::ClaudeCode, HookEvent::PreToolUse, claude).unwrap();
        assert_eq!(call.tool_name, "Bash");
        assert_eq!(call.tool_use_id.as_deref(), Some("toolu_01X"));
        assert_eq!(call.result, None);
        let codex = br#"{"session_id":"s","turn_id":"t","model":"m","hook_event_name":"PostToolUse","tool_name":"Bash","tool_input":{"command":"cat x"},"tool_use_id":"call_1","tool_response":"hello"}"#;
        let call = parse(AgentCli::Codex, HookEvent::PostToolUse, codex).unwrap();
        assert_eq!(
            call.result.unwrap(),
            ResultSummary { status: "ok".into(), text: "hello".into(), bytes: 5 }
        );
        let wrong = parse(AgentCli::Codex, HookEvent::PreToolUse, codex).unwrap_err();
        assert!(wrong.contains("PostToolUse event"), "{wrong}");
        assert!(parse(AgentCli::Codex, HookEvent::PreToolUse, b"{").is_err());
        assert!(parse(AgentCli::Codex, HookEvent::PreToolUse, b"{\"tool_name\":\"\"}").is_err());
        let odd = br#"{"tool_name":"Bash","tool_use_id":"a b\nc"}"#;
        assert_eq!(parse(AgentCli::Codex, HookEvent::PreToolUse, odd).unwrap().tool_use_id, None);
    }

    #[test]
    fn summarizes_claude_results_with_status() {
        let response =
            serde_json::json!({"stdout": "x".repeat(MAX_FIELD + 10), "stderr": "", "interrupted": false});
        let summary = summarize(Some(&response));
        assert_eq!(
            (summary.status.as_str(), summary.text.len(), summary.bytes),
            ("ok", MAX_FIELD, MAX_FIELD as u64 + 10)
        );
        let failed = summarize(Some(
            &serde_json::json!({"stdout": "", "stderr": "cat: x: Permission denied", "is_error": true}),
        ));
        assert_eq!(failed.status, "error");
        assert!(failed.text.contains("Permission denied"));
        assert_eq!(summarize(Some(&serde_json::json!({"interrupted": true}))).status, "interrupted");
    }

    #[test]
    fn known_tools_get_their_semantic_action() {
        use serde_json::json;
        assert_eq!(
            semantic("Bash", &json!({"command": "ls -l"})),
            Some(Semantic::Shell { command: "ls -l".into() })
        );
        assert_eq!(
            semantic("WebFetch", &json!({"url": "https://a/b", "prompt": "p"})),
            Some(Semantic::Http { url: "https://a/b".into() })
        );
        assert_eq!(
            semantic("Read", &json!({"file_path": "/etc/x"})),
            Some(Semantic::File { write: false, path: "/etc/x".into() })
        );
        assert_eq!(semantic("Edit", &json!({"file_path": "/x"})).map(|s| s.action()), Some("file.write"));
        assert_eq!(
            semantic("mcp__github__create_issue", &json!({})),
            Some(Semantic::Mcp { server: "github".into(), tool: "create_issue".into() })
        );
        assert_eq!(semantic("mcp__a__b__c", &json!({})), None, "ambiguous split");
        assert_eq!(semantic("Bash", &json!({})), None);
        assert_eq!(semantic("Glob", &json!({"pattern": "*"})), None);
    }
}

//! `safeclaw-agent hook CLI EVENT`: the command an agent CLI runs for each tool call. Reads the hook
//! JSON, asks the daemon, and answers in that CLI's format; whatever fails, a tool call is denied.
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::call::{self, AgentCli, HookEvent, MAX_HOOK_INPUT};
use super::protocol::HookAnswer;
use crate::identity::protocol;

/// How long the daemon may take to answer; past it the call is denied.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(clap::Args, Debug)]
pub struct HookArgs {
    #[arg(value_enum)]
    pub cli: AgentCli,
    #[arg(value_enum)]
    pub event: HookEvent,
    /// The daemon's tool socket [default: $SAFECLAW_TOOL_SOCKET, else /run/safeclaw-tools/tool.sock].
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

pub fn run(args: HookArgs) -> anyhow::Result<ExitCode> {
    let mut stdin = Vec::new();
    let read = std::io::stdin().lock().take(MAX_HOOK_INPUT as u64 + 1).read_to_end(&mut stdin);
    let outcome = match read {
        Err(e) => Err(format!("cannot read the hook input: {e}")),
        Ok(_) if stdin.len() > MAX_HOOK_INPUT => {
            Err(format!("the tool call is larger than {MAX_HOOK_INPUT} bytes, more than SafeClaw checks"))
        }
        Ok(_) => call::parse(args.cli, args.event, &stdin).and_then(|call| {
            let socket = super::server::socket_path(args.socket.as_deref());
            ask(&socket, &call)
        }),
    };
    let output = match outcome {
        Ok(answer) => respond(args.event, &answer),
        Err(why) => fail_closed(args.event, &why),
    };
    if let Some(json) = output {
        println!("{json}");
    }
    let _ = std::io::stdout().flush();
    Ok(ExitCode::SUCCESS)
}

fn ask(socket: &Path, call: &call::ToolCall) -> Result<HookAnswer, String> {
    let unreachable =
        |e: std::io::Error| format!("the SafeClaw daemon cannot be reached on {}: {e}", socket.display());
    let mut stream = UnixStream::connect(socket).map_err(unreachable)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(unreachable)?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT)).map_err(unreachable)?;
    let line = protocol::encode(call).map_err(|e| format!("the tool call cannot be sent: {e}"))?;
    stream.write_all(&line).map_err(unreachable)?;
    let mut answer = Vec::new();
    BufReader::new(&stream)
        .take(protocol::MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut answer)
        .map_err(|e| format!("the SafeClaw daemon did not answer: {e}"))?;
    if answer.pop() != Some(b'\n') {
        return Err("the SafeClaw daemon closed the connection without an answer".to_owned());
    }
    protocol::decode(&answer).map_err(|e| format!("the SafeClaw daemon's answer is malformed: {e}"))
}

/// The text the model reads for a tool call the policy denied.
pub fn deny_reason(rule: Option<&str>, reason: Option<&str>, sequence: u64) -> String {
    let by = match rule {
        Some(rule) => format!("rule `{rule}`"),
        None => "the policy default (no rule allows it)".to_owned(),
    };
    let why = reason.map(|r| format!(": {r}")).unwrap_or_default();
    format!(
        "SafeClaw policy denied this tool call by {by}{why}. Audit entry #{sequence}. This is a policy decision, not an error: do not retry it in another form; ask the user if it is needed."
    )
}

/// The CLI's answer (stdout) for a decision; `None` lets the call go on as the CLI would anyway.
pub fn respond(event: HookEvent, answer: &HookAnswer) -> Option<String> {
    match (event, answer) {
        (HookEvent::PreToolUse, HookAnswer::Decided { effect, rule, reason, sequence, .. })
            if effect == "deny" =>
        {
            Some(pre_deny(&deny_reason(rule.as_deref(), reason.as_deref(), *sequence)))
        }
        (HookEvent::PreToolUse, HookAnswer::Decided { .. }) => None,
        (HookEvent::PostToolUse, HookAnswer::Decided { effect, rule, reason, sequence, kernel_denials }) => {
            let mut out = serde_json::Map::new();
            if effect == "deny" {
                out.insert("decision".into(), "block".into());
                out.insert(
                    "reason".into(),
                    deny_reason(rule.as_deref(), reason.as_deref(), *sequence).into(),
                );
            }
            if !kernel_denials.is_empty() {
                let items: Vec<String> = kernel_denials
                    .iter()
                    .map(|d| {
                        let rule = d
                            .rule
                            .as_deref()
                            .map_or("the policy default".to_owned(), |r| format!("rule `{r}`"));
                        format!("{} {} by {rule} (audit entry #{})", d.action, d.target, d.sequence)
                    })
                    .collect();
                let context = format!(
                    "SafeClaw: the kernel denied what this tool tried: {}. An EPERM or 'Operation not permitted' here is that policy decision, not a transient error: do not retry it in another form; ask the user if it is needed.",
                    items.join("; ")
                );
                out.insert(
                    "hookSpecificOutput".into(),
                    serde_json::json!({"hookEventName": "PostToolUse", "additionalContext": context}),
                );
            }
            (!out.is_empty()).then(|| serde_json::Value::Object(out).to_string())
        }
        (event, HookAnswer::Refused { reason, sequence }) => {
            let entry = sequence.map(|s| format!(" (audit entry #{s})")).unwrap_or_default();
            fail_closed(event, &format!("the SafeClaw daemon refused the hook: {reason}{entry}"))
        }
    }
}

/// A tool call SafeClaw could not check is denied (a result, already run, is flagged to the model).
fn fail_closed(event: HookEvent, why: &str) -> Option<String> {
    let reason = format!("SafeClaw could not check this tool call, so it is denied: {why}.");
    match event {
        HookEvent::PreToolUse => Some(pre_deny(&reason)),
        HookEvent::PostToolUse => {
            Some(serde_json::json!({"decision": "block", "reason": reason}).to_string())
        }
    }
}

/// Both CLIs read this form; unlike exit code 2 it does not show the hook's command line to the model.
fn pre_deny(reason: &str) -> String {
    serde_json::json!({
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": "deny",
            "permissionDecisionReason": reason,
        }
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::super::protocol::KernelDenial;
    use super::*;

    #[test]
    fn denies_name_rule_and_entry_and_allows_say_nothing() {
        let deny = HookAnswer::Decided {
            effect: "deny".into(),
            rule: Some("no-rm-rf".into()),
            reason: Some("destructive".into()),
            sequence: 42,
            kernel_denials: vec![],
        };
        let out: serde_json::Value =
            serde_json::from_str(&respond(HookEvent::PreToolUse, &deny).unwrap()).unwrap();
        assert_eq!(out["hookSpecificOutput"]["permissionDecision"], "deny");
        let reason = out["hookSpecificOutput"]["permissionDecisionReason"].as_str().unwrap();
        assert!(reason.contains("rule `no-rm-rf`: destructive") && reason.contains("#42"), "{reason}");
        let allow = HookAnswer::Decided {
            effect: "allow".into(),
            rule: None,
            reason: None,
            sequence: 1,
            kernel_denials: vec![],
        };
        assert_eq!(respond(HookEvent::PreToolUse, &allow), None);
        assert_eq!(respond(HookEvent::PostToolUse, &allow), None);
    }

    #[test]
    fn kernel_denials_reach_the_model_after_the_tool() {
        let answer = HookAnswer::Decided {
            effect: "allow".into(),
            rule: None,
            reason: None,
            sequence: 9,
            kernel_denials: vec![KernelDenial {
                sequence: 7,
                action: "file.read".into(),
                target: "/root/.ssh/id_rsa".into(),
                rule: Some("no-ssh".into()),
            }],
        };
        let out: serde_json::Value =
            serde_json::from_str(&respond(HookEvent::PostToolUse, &answer).unwrap()).unwrap();
        let context = out["hookSpecificOutput"]["additionalContext"].as_str().unwrap();
        assert!(
            context.contains("file.read /root/.ssh/id_rsa by rule `no-ssh` (audit entry #7)"),
            "{context}"
        );
        assert!(out.get("decision").is_none());
    }

    #[test]
    fn an_unreachable_daemon_denies() {
        let call = call::parse(
            AgentCli::ClaudeCode,
            HookEvent::PreToolUse,
            br#"{"tool_name":"Bash","tool_input":{"command":"ls"}}"#,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let why = ask(&dir.path().join("none.sock"), &call).unwrap_err();
        assert!(why.contains("cannot be reached"), "{why}");
        let out: serde_json::Value =
            serde_json::from_str(&fail_closed(HookEvent::PreToolUse, &why).unwrap()).unwrap();
        assert_eq!(out["hookSpecificOutput"]["permissionDecision"], "deny");
        let refused = HookAnswer::Refused { reason: "outside".into(), sequence: Some(3) };
        let out = respond(HookEvent::PostToolUse, &refused).unwrap();
        assert!(out.contains("\"decision\":\"block\"") && out.contains("#3"), "{out}");
    }
}

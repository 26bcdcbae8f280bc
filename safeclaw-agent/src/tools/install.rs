//! `safeclaw-agent hooks install`: merges SafeClaw's PreToolUse and PostToolUse hooks into an agent
//! CLI's settings, leaving every other setting as it was; running it again replaces only its own.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use super::call::{AgentCli, HookEvent};

#[derive(clap::Subcommand, Debug)]
pub enum HooksCommand {
    /// Add SafeClaw's tool-call hooks to Claude Code's or Codex's settings.
    Install(InstallArgs),
}

#[derive(clap::Args, Debug)]
pub struct InstallArgs {
    #[arg(long, value_enum)]
    pub agent: AgentCli,
    /// A project directory: Claude Code's `DIR/.claude/settings.json`, Codex's `DIR/.codex/hooks.json`.
    /// Default: the user's settings (`~/.claude/settings.json`, `$CODEX_HOME/hooks.json`).
    #[arg(long)]
    pub project: Option<PathBuf>,
    /// The tool socket the hooks use, if not the default.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// The safeclaw-agent binary the hooks run [default: this one].
    #[arg(long)]
    pub bin: Option<PathBuf>,
}

pub fn run(cmd: HooksCommand) -> anyhow::Result<ExitCode> {
    let HooksCommand::Install(args) = cmd;
    let bin = match &args.bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe().context("cannot find this binary's path")?,
    };
    let file = settings_file(args.agent, args.project.as_deref())?;
    install(&file, args.agent, &bin, args.socket.as_deref())?;
    println!("installed SafeClaw's PreToolUse and PostToolUse hooks in {}", file.display());
    if args.agent == AgentCli::Codex {
        println!(
            "Codex runs hooks only once they are trusted and skips untrusted ones without a word: trust them in Codex (`/hooks`), or run `codex --dangerously-bypass-hook-trust`{}",
            if args.project.is_some() { "; project hooks also need the project trusted (`--trust`)" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn settings_file(agent: AgentCli, project: Option<&Path>) -> anyhow::Result<PathBuf> {
    let home = || std::env::var_os("HOME").map(PathBuf::from).context("HOME is not set; pass --project");
    Ok(match (agent, project) {
        (AgentCli::ClaudeCode, Some(dir)) => dir.join(".claude/settings.json"),
        (AgentCli::ClaudeCode, None) => home()?.join(".claude/settings.json"),
        (AgentCli::Codex, Some(dir)) => dir.join(".codex/hooks.json"),
        (AgentCli::Codex, None) => match std::env::var_os("CODEX_HOME").filter(|h| !h.is_empty()) {
            Some(codex_home) => PathBuf::from(codex_home).join("hooks.json"),
            None => home()?.join(".codex/hooks.json"),
        },
    })
}

/// The hook command line (quoted for `sh -c`, which both CLIs use).
pub fn command(bin: &Path, agent: AgentCli, event: HookEvent, socket: Option<&Path>) -> String {
    let quote = |text: &str| format!("'{}'", text.replace('\'', r"'\''"));
    let event = match event {
        HookEvent::PreToolUse => "pre-tool-use",
        HookEvent::PostToolUse => "post-tool-use",
    };
    let mut line = format!("{} hook {} {event}", quote(&bin.display().to_string()), agent.as_str());
    if let Some(socket) = socket {
        line.push_str(&format!(" --socket {}", quote(&socket.display().to_string())));
    }
    line
}

/// Whether a hook command is one of ours (any binary path, any socket).
fn is_ours(command: &str, agent: AgentCli, event: &str) -> bool {
    command.contains(&format!(" hook {} {event}", agent.as_str()))
}

/// Merges the hooks into `file` (created with its directory if missing). A file that is not a JSON
/// object is an error naming its line and column, and is left as it was.
pub fn install(file: &Path, agent: AgentCli, bin: &Path, socket: Option<&Path>) -> anyhow::Result<()> {
    let mut settings = match std::fs::read(file) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => serde_json::json!({}),
        Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .with_context(|| format!("{}: not valid JSON; left unchanged", file.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    let root = settings
        .as_object_mut()
        .with_context(|| format!("{}: not a JSON object; left unchanged", file.display()))?;
    let hooks = root.entry("hooks").or_insert_with(|| serde_json::json!({}));
    let hooks = hooks
        .as_object_mut()
        .with_context(|| format!("{}: `hooks` is not an object; left unchanged", file.display()))?;
    for event in [HookEvent::PreToolUse, HookEvent::PostToolUse] {
        let flag = match event {
            HookEvent::PreToolUse => "pre-tool-use",
            HookEvent::PostToolUse => "post-tool-use",
        };
        let groups = hooks.entry(event.name()).or_insert_with(|| serde_json::json!([]));
        let groups = groups.as_array_mut().with_context(|| {
            format!("{}: `hooks.{}` is not a list; left unchanged", file.display(), event.name())
        })?;
        for group in groups.iter_mut() {
            if let Some(list) = group.get_mut("hooks").and_then(serde_json::Value::as_array_mut) {
                list.retain(|h| {
                    !h.get("command")
                        .and_then(serde_json::Value::as_str)
                        .is_some_and(|c| is_ours(c, agent, flag))
                });
            }
        }
        groups.retain(|g| g.get("hooks").and_then(serde_json::Value::as_array).is_none_or(|l| !l.is_empty()));
        groups.push(serde_json::json!({
            "matcher": "*",
            "hooks": [{"type": "command", "command": command(bin, agent, event, socket), "timeout": 30}],
        }));
    }
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut text = serde_json::to_string_pretty(&settings)?;
    text.push('\n');
    let temp = dir
        .join(format!(".{}.safeclaw-tmp", file.file_name().and_then(|n| n.to_str()).unwrap_or("settings")));
    std::fs::write(&temp, text).with_context(|| format!("cannot write {}", temp.display()))?;
    if let Ok(meta) = std::fs::metadata(file) {
        let _ = std::fs::set_permissions(&temp, meta.permissions());
    }
    std::fs::rename(&temp, file).with_context(|| format!("cannot replace {}", file.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_without_touching_other_settings_and_replaces_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".claude/settings.json");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let theirs = serde_json::json!({
            "model": "x",
            "permissions": {"allow": ["Bash(ls)"]},
            "hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "their-guard"}]}],
                      "Stop": [{"hooks": [{"type": "command", "command": "notify"}]}]}
        });
        std::fs::write(&file, theirs.to_string()).unwrap();
        let bin = Path::new("/opt/safe claw/safeclaw-agent");
        for _ in 0..2 {
            install(&file, AgentCli::ClaudeCode, bin, Some(Path::new("/run/t.sock"))).unwrap();
        }
        let merged: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(merged["model"], "x");
        assert_eq!(merged["permissions"], theirs["permissions"]);
        assert_eq!(merged["hooks"]["Stop"], theirs["hooks"]["Stop"]);
        let pre = merged["hooks"]["PreToolUse"].as_array().unwrap();
        assert_eq!(pre.len(), 2, "theirs kept, ours once: {pre:#?}");
        assert_eq!(pre[0]["hooks"][0]["command"], "their-guard");
        assert_eq!(
            pre[1]["hooks"][0]["command"],
            "'/opt/safe claw/safeclaw-agent' hook claude-code pre-tool-use --socket '/run/t.sock'"
        );
        assert_eq!(merged["hooks"]["PostToolUse"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn broken_settings_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hooks.json");
        std::fs::write(&file, "{\"hooks\": [1,").unwrap();
        let e = format!("{:#}", install(&file, AgentCli::Codex, Path::new("/b"), None).unwrap_err());
        assert!(e.contains("not valid JSON") && e.contains("line 1"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "{\"hooks\": [1,");
        std::fs::write(&file, "{\"hooks\": {\"PreToolUse\": 3}}").unwrap();
        assert!(install(&file, AgentCli::Codex, Path::new("/b"), None).is_err());
    }
}

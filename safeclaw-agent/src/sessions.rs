//! `safeclaw-agent sessions`: the live agent sessions, as the daemon knows them.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::identity::client::DaemonConnection;
use crate::identity::{self, SessionInfo};

#[derive(clap::Args, Debug)]
pub struct SessionsArgs {
    /// Print a JSON array of session records instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The daemon's socket [default: $SAFECLAW_SOCKET, else /run/safeclaw/agent.sock].
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

pub fn run(args: SessionsArgs) -> anyhow::Result<ExitCode> {
    let socket = identity::socket_path(args.socket.as_deref());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let sessions = runtime.block_on(async {
        let mut daemon = DaemonConnection::connect(&socket).await?;
        daemon.list().await
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&sessions)?);
    } else {
        print!("{}", table(&sessions));
    }
    Ok(ExitCode::SUCCESS)
}

const HEADER: [&str; 7] = ["AGENT", "SESSION", "USER", "PID", "CGROUP", "STARTED", "COMMAND"];

/// One row a session, columns padded to the widest cell; the command comes last and is not padded.
pub fn table(sessions: &[SessionInfo]) -> String {
    if sessions.is_empty() {
        return "no live sessions\n".to_string();
    }
    let rows: Vec<[String; 7]> = sessions
        .iter()
        .map(|s| {
            [
                s.agent_id.to_string(),
                s.session_id.to_string(),
                s.user_id.to_string(),
                s.launcher_pid.to_string(),
                s.cgroup_path.display().to_string(),
                s.started_at.to_string(),
                s.argv.join(" "),
            ]
        })
        .collect();
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(HEADER.map(str::to_string)).chain(rows) {
        let (last, padded) = row.split_last().unwrap_or((&row[0], &[]));
        for (cell, width) in padded.iter().zip(widths) {
            out.push_str(&format!("{cell:<width$}  "));
        }
        out.push_str(last);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_says_when_empty() {
        assert_eq!(table(&[]), "no live sessions\n");
        let session: SessionInfo = serde_json::from_value(serde_json::json!({
            "agentId": "claude", "sessionId": "sess_abc", "userId": "alice", "uid": 1000, "gid": 1000,
            "cgroupId": 7, "cgroupPath": "/sys/fs/cgroup/agents/claude/sess_abc",
            "argv": ["claude", "-p", "hi"], "startedAt": "2026-02-13T10:45:23.102Z", "launcherPid": 4242
        }))
        .unwrap();
        let text = table(&[session]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("AGENT   SESSION   USER   PID   CGROUP"), "{}", lines[0]);
        assert!(lines[1].starts_with("claude  sess_abc  alice  4242  /sys/fs/cgroup/agents/claude/sess_abc"));
        assert!(lines[1].ends_with("2026-02-13T10:45:23.102Z  claude -p hi"), "{}", lines[1]);
        assert_eq!(lines[0].find("COMMAND"), lines[1].find("claude -p"));
    }
}

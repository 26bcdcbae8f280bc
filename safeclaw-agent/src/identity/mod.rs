//! Who an agent process is: the session records the launcher registers and the daemon looks up by cgroup id.
pub mod client;
pub mod ids;
pub mod protocol;
pub mod registry;
pub mod server;
pub mod session_cgroup;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use ids::{AgentId, IdError, SessionId, Timestamp, UserId};
pub use registry::Registry;

/// Where the daemon listens for launchers when neither `--socket` nor `SAFECLAW_SOCKET` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/safeclaw/agent.sock";
/// Environment variable that overrides [`DEFAULT_SOCKET`] (a `--socket` flag overrides both).
pub const SOCKET_ENV: &str = "SAFECLAW_SOCKET";

/// The socket to use: the flag, else `SAFECLAW_SOCKET`, else [`DEFAULT_SOCKET`].
pub fn socket_path(flag: Option<&Path>) -> PathBuf {
    match (flag, std::env::var_os(SOCKET_ENV)) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(env)) if !env.is_empty() => PathBuf::from(env),
        _ => PathBuf::from(DEFAULT_SOCKET),
    }
}

/// One agent session: which agent, for which human, in which cgroup, running what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionInfo {
    pub agent_id: AgentId,
    pub session_id: SessionId,
    /// The human the agent runs for.
    pub user_id: UserId,
    /// Credentials the agent process runs with (0 when launched with `--as-root`).
    pub uid: u32,
    pub gid: u32,
    /// Inode number of the session cgroup: the id kernel events carry.
    pub cgroup_id: u64,
    pub cgroup_path: PathBuf,
    /// The command line, each argument converted lossily to UTF-8.
    pub argv: Vec<String>,
    pub started_at: Timestamp,
    /// The launcher process, which stays outside the cgroup and forwards signals to the agent.
    pub launcher_pid: u32,
}

/// How a session ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SessionExit {
    /// The agent exited with this code.
    Exited(i32),
    /// The agent was killed by this signal number.
    Signaled(i32),
    /// The command could not be started (the reason says why).
    NotStarted(String),
    /// The launcher's connection closed without an end report; the daemon killed what was left.
    LauncherLost,
}

impl SessionExit {
    /// The status a shell would report: the code, or 128 + the signal number.
    pub fn shell_status(&self) -> Option<u8> {
        match self {
            SessionExit::Exited(code) => u8::try_from(*code).ok(),
            SessionExit::Signaled(signal) => u8::try_from(128 + signal).ok(),
            SessionExit::NotStarted(_) | SessionExit::LauncherLost => None,
        }
    }
}

impl From<std::process::ExitStatus> for SessionExit {
    fn from(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt as _;
        match (status.code(), status.signal()) {
            (Some(code), _) => SessionExit::Exited(code),
            (None, Some(signal)) => SessionExit::Signaled(signal),
            // waitpid reports stops only when asked (WUNTRACED); a wait result is an exit or a signal.
            (None, None) => SessionExit::NotStarted(format!("unexpected wait status {status}")),
        }
    }
}

impl fmt::Display for SessionExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionExit::Exited(code) => write!(f, "exited with code {code}"),
            SessionExit::Signaled(signal) => match nix::sys::signal::Signal::try_from(*signal) {
                Ok(name) => write!(f, "killed by signal {signal} ({name})"),
                Err(_) => write!(f, "killed by signal {signal}"),
            },
            SessionExit::NotStarted(reason) => write!(f, "not started: {reason}"),
            SessionExit::LauncherLost => f.write_str("launcher lost; the daemon ended the session"),
        }
    }
}

/// Who asked the daemon for something over its socket (always root: the socket refuses others).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requester {
    pub pid: Option<i32>,
    /// The requester's command line, for the audit entry.
    pub command: String,
}

impl Requester {
    /// The process `pid` (if known) with its command line as `/proc` shows it now (empty once gone).
    pub fn of_pid(pid: Option<i32>) -> Requester {
        let command = pid
            .and_then(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
            .map(|raw| {
                let words: Vec<String> = raw
                    .split(|&b| b == 0)
                    .filter(|w| !w.is_empty())
                    .map(|w| String::from_utf8_lossy(w).into_owned())
                    .collect();
                words.join(" ")
            })
            .unwrap_or_default();
        Requester { pid, command }
    }
}

impl fmt::Display for Requester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "pid {pid} ({})", self.command),
            None => f.write_str("an unknown process"),
        }
    }
}

/// What the socket server asks of the daemon's event loop. Each becomes an audit entry; requests
/// that carry `done` are answered only once the daemon has acted on them.
#[derive(Debug)]
pub enum SessionEvent {
    /// The daemon must make the kernel decide this session by its agent's profile before `done`:
    /// the launcher starts the agent only after that.
    Started {
        info: Arc<SessionInfo>,
        done: oneshot::Sender<Result<(), String>>,
    },
    Ended {
        session: Arc<SessionInfo>,
        exit: SessionExit,
    },
    /// `safeclaw-agent policy reload`: the new policy's hash, or why it was refused.
    Reload {
        by: Requester,
        done: oneshot::Sender<Result<String, String>>,
    },
    /// `safeclaw-agent stop`: end every session, detach, unpin and exit; or why the daemon would not.
    Stop {
        by: Requester,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// A peer the socket refused outright (not root, or inside the agent cgroup), for the audit trail.
    Refused {
        by: Requester,
        uid: u32,
        /// The request's kind (`list`, `stop`, …), `malformed`, or `none` if it sent nothing.
        request: &'static str,
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_status_follows_the_shell_convention() {
        assert_eq!(SessionExit::Exited(3).shell_status(), Some(3));
        assert_eq!(SessionExit::Signaled(15).shell_status(), Some(143));
        assert_eq!(SessionExit::LauncherLost.shell_status(), None);
        assert_eq!(SessionExit::Signaled(15).to_string(), "killed by signal 15 (SIGTERM)");
    }

    #[test]
    fn exit_wire_form_is_small_and_tagged() {
        let json = |exit: &SessionExit| serde_json::to_string(exit).unwrap();
        assert_eq!(json(&SessionExit::Exited(0)), r#"{"exited":0}"#);
        assert_eq!(json(&SessionExit::Signaled(9)), r#"{"signaled":9}"#);
        assert_eq!(json(&SessionExit::LauncherLost), r#""launcherLost""#);
        assert!(serde_json::from_str::<SessionExit>(r#"{"exploded":1}"#).is_err());
    }
}

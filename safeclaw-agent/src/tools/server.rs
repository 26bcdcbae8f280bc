//! The daemon's tool socket: any local process may connect (the hook runs as the agent's user), and
//! the daemon learns who asks from the kernel — the peer's pid, its cgroup, the session registered
//! for that cgroup — never from what the request says.
use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::call::ToolCall;
use super::protocol::HookAnswer;
use crate::identity::protocol;
use crate::identity::{Registry, SessionInfo};

/// Where hooks reach the daemon when neither `--tool-socket` nor `SAFECLAW_TOOL_SOCKET` says otherwise.
/// Not beside the launcher socket, whose directory is root-only.
pub const DEFAULT_TOOL_SOCKET: &str = "/run/safeclaw-tools/tool.sock";
pub const TOOL_SOCKET_ENV: &str = "SAFECLAW_TOOL_SOCKET";
/// A hook must send its request within this time.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The socket to use: the flag, else `SAFECLAW_TOOL_SOCKET`, else [`DEFAULT_TOOL_SOCKET`].
pub fn socket_path(flag: Option<&Path>) -> PathBuf {
    match (flag, std::env::var_os(TOOL_SOCKET_ENV)) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(env)) if !env.is_empty() => PathBuf::from(env),
        _ => PathBuf::from(DEFAULT_TOOL_SOCKET),
    }
}

/// Who called, as the kernel says.
#[derive(Clone, Debug)]
pub struct Caller {
    pub pid: u32,
    pub uid: u32,
    /// The caller's cgroup id (0 if unknown).
    pub cgroup_id: u64,
    /// The live session whose cgroup holds the caller, or why there is none.
    pub session: Result<Arc<SessionInfo>, String>,
    /// The hook and its ancestors inside the session (the CLI itself): their kernel events are not
    /// the tool's.
    pub own_pids: Vec<u32>,
}

/// A tool call for the daemon's event loop, answered on `done` once recorded.
#[derive(Debug)]
pub struct ToolEvent {
    pub call: ToolCall,
    pub caller: Caller,
    pub done: oneshot::Sender<HookAnswer>,
}

/// Listens on `path`, open to every local user: its directory is created root-owned 0755 if missing
/// and must not be writable by others; a stale socket is replaced.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
    let meta = std::fs::metadata(dir)?;
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(std::io::Error::other(format!(
            "{} must be owned by root and writable by root only (anyone could replace the socket)",
            dir.display()
        )));
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::other(format!("{} exists and is not a socket", path.display())));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::other(format!("another daemon is listening on {}", path.display())));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// Serves hooks until dropped. `agent_cgroup` is the daemon's agent cgroup directory.
pub async fn serve(
    listener: UnixListener,
    agent_cgroup: PathBuf,
    registry: Arc<Registry>,
    events: mpsc::Sender<ToolEvent>,
) {
    let shared = Arc::new((agent_cgroup, registry, events));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(handle(stream, Arc::clone(&shared)));
            }
            Err(e) => {
                tracing::error!("tool socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(stream: UnixStream, shared: Arc<(PathBuf, Arc<Registry>, mpsc::Sender<ToolEvent>)>) {
    let (agent_cgroup, registry, events) = &*shared;
    // Identify first, before reading anything the caller says.
    let peer = stream.peer_cred();
    let (read, mut writer) = stream.into_split();
    let mut reader = BufReader::new(read);
    let answer = match peer {
        Ok(peer) => {
            let pid = peer.pid().and_then(|p| u32::try_from(p).ok()).unwrap_or(0);
            let caller = identify(pid, peer.uid(), agent_cgroup, registry);
            match tokio::time::timeout(REQUEST_TIMEOUT, protocol::read_line(&mut reader)).await {
                Ok(Ok(Some(line))) => match protocol::decode::<ToolCall>(&line) {
                    Ok(call) => {
                        let (done, answer) = oneshot::channel();
                        match events.send(ToolEvent { call, caller, done }).await {
                            Ok(()) => answer.await.unwrap_or_else(|_| shutting_down()),
                            Err(_) => shutting_down(),
                        }
                    }
                    Err(e) => {
                        HookAnswer::Refused { reason: format!("malformed request: {e}"), sequence: None }
                    }
                },
                Ok(Err(e)) => HookAnswer::Refused { reason: e.to_string(), sequence: None },
                Ok(Ok(None)) | Err(_) => return,
            }
        }
        Err(e) => HookAnswer::Refused { reason: format!("cannot identify the caller: {e}"), sequence: None },
    };
    if let Ok(line) = protocol::encode(&answer) {
        let _ = writer.write_all(&line).await;
    }
}

fn shutting_down() -> HookAnswer {
    HookAnswer::Refused { reason: "the SafeClaw daemon is shutting down".into(), sequence: None }
}

/// The caller's cgroup path (cgroup2), from `/proc/PID/cgroup`.
fn cgroup_of(pid: u32, mount: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let relative = text.lines().find_map(|line| line.strip_prefix("0::"))?;
    Some(mount.join(relative.trim_start_matches('/')))
}

/// The session of process `pid`: its cgroup or an ancestor of it below the agent cgroup must be a
/// live session's cgroup.
pub fn identify(pid: u32, uid: u32, agent_cgroup: &Path, registry: &Registry) -> Caller {
    let mut caller = Caller { pid, uid, cgroup_id: 0, session: Err(String::new()), own_pids: vec![pid] };
    let mount = match crate::cgroup::find_mount() {
        Ok(mount) => mount.path,
        Err(e) => {
            caller.session = Err(format!("cannot find the cgroup2 mount: {e}"));
            return caller;
        }
    };
    let Some(cgroup) = (pid != 0).then(|| cgroup_of(pid, &mount)).flatten() else {
        caller.session = Err(format!("cannot read the cgroup of pid {pid}"));
        return caller;
    };
    caller.cgroup_id = std::fs::metadata(&cgroup).map(|m| m.ino()).unwrap_or(0);
    if !cgroup.starts_with(agent_cgroup) {
        caller.session = Err(format!("pid {pid} runs outside the agent cgroup, in {}", cgroup.display()));
        return caller;
    }
    let ids: Vec<u64> = cgroup
        .ancestors()
        .take_while(|dir| dir.starts_with(agent_cgroup) && *dir != agent_cgroup)
        .filter_map(|dir| std::fs::metadata(dir).ok().map(|m| m.ino()))
        .collect();
    let live = registry.live();
    caller.session = match registry.find(ids) {
        Some(session) if live.iter().any(|s| s.cgroup_id == session.cgroup_id) => Ok(session),
        Some(session) => Err(format!("session {} has ended", session.session_id)),
        None => Err(format!("pid {pid} is in the agent cgroup but in no registered session")),
    };
    if let Ok(session) = &caller.session {
        caller.own_pids = own_pids(pid, &session.cgroup_path, &mount);
    }
    caller
}

/// `pid` and its ancestors while they stay inside `session` (the shell that runs the hook and the
/// agent CLI itself).
fn own_pids(pid: u32, session: &Path, mount: &Path) -> Vec<u32> {
    let mut pids = vec![pid];
    let mut current = pid;
    while pids.len() < 16 {
        let parent = std::fs::read_to_string(format!("/proc/{current}/status")).ok().and_then(|status| {
            status.lines().find_map(|l| l.strip_prefix("PPid:")).and_then(|p| p.trim().parse::<u32>().ok())
        });
        match parent {
            Some(parent)
                if parent > 1 && cgroup_of(parent, mount).is_some_and(|c| c.starts_with(session)) =>
            {
                pids.push(parent);
                current = parent;
            }
            _ => break,
        }
    }
    pids
}

//! The daemon's root-only socket for launchers: registers sessions under the agent cgroup, answers
//! listings, and reports each session's start and end to the daemon.
use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt as _, BufReader};
use tokio::net::unix::{OwnedWriteHalf, UCred};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::protocol::{self, ProtocolError, Request, Response};
use super::{session_cgroup, Registry, Requester, SessionEvent, SessionExit, SessionInfo};

/// A connection without a session must send its next request within this time.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot prepare socket directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("socket directory {path} is owned by uid {uid}, not root: refusing to listen there")]
    DirOwner { path: PathBuf, uid: u32 },
    #[error("{0} exists and is not a socket: refusing to replace it")]
    NotSocket(PathBuf),
    #[error("another daemon is already listening on {0}")]
    InUse(PathBuf),
    #[error("cannot listen on {path}: {source}")]
    Bind { path: PathBuf, source: std::io::Error },
}

/// Listens on `path`: its directory is made root-owned 0700 (created if missing), a stale socket from
/// a previous run is replaced, the socket is 0600. Call from inside the tokio runtime.
pub fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let dir_err = |source| ServerError::Dir { path: dir.to_path_buf(), source };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(dir_err)?;
    let meta = std::fs::metadata(dir).map_err(dir_err)?;
    if meta.uid() != 0 {
        return Err(ServerError::DirOwner { path: dir.to_path_buf(), uid: meta.uid() });
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(dir_err)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => return Err(ServerError::NotSocket(path.to_path_buf())),
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServerError::InUse(path.to_path_buf()));
            }
            std::fs::remove_file(path)
                .map_err(|source| ServerError::Bind { path: path.to_path_buf(), source })?;
        }
        Err(_) => {}
    }
    let bind_err = |source| ServerError::Bind { path: path.to_path_buf(), source };
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}

/// What every connection handler shares.
struct Shared {
    agent_cgroup: PathBuf,
    registry: Arc<Registry>,
    events: mpsc::Sender<SessionEvent>,
}

/// Accepts launchers until the future is dropped. Sessions must lie in `<agent_cgroup>/<agent>/<session>`;
/// each start and end goes to `events` before the launcher gets its answer.
pub async fn serve(
    listener: UnixListener,
    agent_cgroup: PathBuf,
    registry: Arc<Registry>,
    events: mpsc::Sender<SessionEvent>,
) {
    let shared = Arc::new(Shared { agent_cgroup, registry, events });
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(handle(stream, Arc::clone(&shared)));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::error!("launcher socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(stream: UnixStream, shared: Arc<Shared>) {
    let peer = stream.peer_cred();
    let (read, mut writer) = stream.into_split();
    let mut reader = BufReader::new(read);
    let peer = match peer {
        Ok(peer) if peer.uid() == 0 => peer,
        Ok(peer) => {
            tracing::warn!("launcher socket: refused uid {} (pid {:?})", peer.uid(), peer.pid());
            // Take the request before refusing, so the client reads the refusal instead of a broken pipe.
            let _ = tokio::time::timeout(IDLE_TIMEOUT, protocol::read_line(&mut reader)).await;
            let _ = reply(&mut writer, Response::Error("only root may use this socket".into())).await;
            return;
        }
        Err(e) => {
            tracing::warn!("launcher socket: cannot read peer credentials: {e}");
            return;
        }
    };
    let mut session: Option<Arc<SessionInfo>> = None;
    loop {
        let next = protocol::read_line(&mut reader);
        let line = match session {
            // A session's connection stays quiet until the agent ends.
            Some(_) => next.await,
            None => match tokio::time::timeout(IDLE_TIMEOUT, next).await {
                Ok(line) => line,
                Err(_) => break,
            },
        };
        let response = match line {
            Ok(Some(line)) => match protocol::decode::<Request>(&line) {
                Ok(request) => shared.answer(request, &mut session, &peer).await,
                Err(e) => Response::Error(e.to_string()),
            },
            Ok(None) => break,
            Err(e @ ProtocolError::TooLong) => {
                let _ = reply(&mut writer, Response::Error(e.to_string())).await;
                break;
            }
            Err(_) => break,
        };
        if reply(&mut writer, response).await.is_err() {
            break;
        }
    }
    if let Some(info) = session {
        shared.launcher_lost(info).await;
    }
}

async fn reply(writer: &mut OwnedWriteHalf, response: Response) -> Result<(), ProtocolError> {
    let line = match protocol::encode(&response) {
        Ok(line) => line,
        Err(e) => protocol::encode(&Response::Error(format!("answer too large to send: {e}")))?,
    };
    writer.write_all(&line).await?;
    Ok(())
}

impl Shared {
    async fn answer(
        &self,
        request: Request,
        session: &mut Option<Arc<SessionInfo>>,
        peer: &UCred,
    ) -> Response {
        match (request, session.as_ref()) {
            (Request::List, _) => {
                Response::Sessions(self.registry.live().iter().map(|s| (**s).clone()).collect())
            }
            (Request::Start(_), Some(current)) => {
                Response::Error(format!("this connection already carries session {}", current.session_id))
            }
            (Request::Start(info), None) => match self.start(info, peer).await {
                Ok(info) => {
                    *session = Some(info);
                    Response::Ok
                }
                Err(message) => Response::Error(message),
            },
            (Request::End { session_id, exit }, Some(current)) if session_id == current.session_id => {
                self.end(Arc::clone(current), exit).await;
                *session = None;
                Response::Ok
            }
            (Request::End { session_id, .. }, Some(current)) => Response::Error(format!(
                "session {session_id} is not this connection's session ({})",
                current.session_id
            )),
            (Request::End { session_id, .. }, None) => {
                Response::Error(format!("session {session_id} was not started on this connection"))
            }
            (Request::Reload | Request::Stop, Some(current)) => Response::Error(format!(
                "this connection carries session {}; control requests need a connection of their own",
                current.session_id
            )),
            (Request::Reload, None) => {
                match self.control(peer, |by, done| SessionEvent::Reload { by, done }).await {
                    Ok(Ok(policy_hash)) => Response::Reloaded { policy_hash },
                    Ok(Err(refused)) => Response::Error(refused),
                    Err(e) => Response::Error(e),
                }
            }
            (Request::Stop, None) => {
                match self.control(peer, |by, done| SessionEvent::Stop { by, done }).await {
                    Ok(()) => Response::Ok,
                    Err(e) => Response::Error(e),
                }
            }
        }
    }

    /// Forwards a control request to the daemon and waits for its answer. Refused to processes inside
    /// the agent cgroup: an agent must not reload or stop what confines it, even as root.
    async fn control<T>(
        &self,
        peer: &UCred,
        request: impl FnOnce(Requester, oneshot::Sender<T>) -> SessionEvent,
    ) -> Result<T, String> {
        let by = requester(peer);
        if let Some(pid) = peer.pid() {
            if in_cgroup(pid, &self.agent_cgroup)? {
                tracing::warn!("refused a control request from {by}, which runs inside the agent cgroup");
                return Err("processes inside the agent cgroup may not control the daemon".into());
            }
        }
        let (done, answer) = oneshot::channel();
        self.events.send(request(by, done)).await.map_err(|_| "the daemon is shutting down".to_string())?;
        answer.await.map_err(|_| "the daemon is shutting down".to_string())
    }

    /// Checks a launcher's claims against the kernel's view, then registers the session.
    async fn start(&self, info: SessionInfo, peer: &UCred) -> Result<Arc<SessionInfo>, String> {
        if peer.pid() != i32::try_from(info.launcher_pid).ok() {
            return Err(format!(
                "launcherPid {} is not the connecting process ({:?})",
                info.launcher_pid,
                peer.pid()
            ));
        }
        let expected = session_cgroup::path_of(&self.agent_cgroup, &info.agent_id, &info.session_id);
        if info.cgroup_path != expected {
            return Err(format!(
                "cgroup {} is not where this daemon enforces; expected {}",
                info.cgroup_path.display(),
                expected.display()
            ));
        }
        let meta = tokio::fs::metadata(&expected)
            .await
            .map_err(|e| format!("cannot stat cgroup {}: {e}", expected.display()))?;
        if !meta.is_dir() || meta.ino() != info.cgroup_id {
            return Err(format!(
                "cgroup {} has id {}, not {}",
                expected.display(),
                meta.ino(),
                info.cgroup_id
            ));
        }
        let procs = session_cgroup::procs(&expected).map_err(|e| e.to_string())?;
        if !procs.is_empty() {
            return Err(format!("cgroup {} already holds processes {procs:?}", expected.display()));
        }
        let info = self.registry.insert(info).map_err(|e| e.to_string())?;
        let (done, enforced) = oneshot::channel();
        let started = SessionEvent::Started { info: Arc::clone(&info), done };
        let outcome = match self.events.send(started).await {
            Ok(()) => enforced.await.unwrap_or_else(|_| Err("the daemon is shutting down".into())),
            Err(_) => Err("the daemon is shutting down".into()),
        };
        if let Err(e) = outcome {
            self.registry.end(info.cgroup_id);
            return Err(e);
        }
        tracing::info!(
            "session {} started: agent {} for {} in {}",
            info.session_id,
            info.agent_id,
            info.user_id,
            info.cgroup_path.display()
        );
        Ok(info)
    }

    async fn end(&self, info: Arc<SessionInfo>, exit: SessionExit) {
        tracing::info!("session {} ended: {exit}", info.session_id);
        self.registry.end(info.cgroup_id);
        if self.events.send(SessionEvent::Ended { session: info, exit }).await.is_err() {
            tracing::warn!("session end not reported: the daemon's event channel is closed");
        }
    }

    /// The launcher vanished without reporting the end: nothing supervises the agent any more, so it
    /// is killed and its cgroup removed before the session is reported ended.
    async fn launcher_lost(&self, info: Arc<SessionInfo>) {
        tracing::warn!("session {}: launcher {} lost; ending the agent", info.session_id, info.launcher_pid);
        let path = info.cgroup_path.clone();
        match tokio::task::spawn_blocking(move || session_cgroup::remove(&path)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("session {}: {e}", info.session_id),
            Err(e) => tracing::error!("session {}: cleanup task failed: {e}", info.session_id),
        }
        self.end(info, SessionExit::LauncherLost).await;
    }
}

/// Names a peer for the audit trail by its pid and command line.
fn requester(peer: &UCred) -> Requester {
    let command = peer
        .pid()
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
    Requester { pid: peer.pid(), command }
}

/// Whether process `pid` sits in `cgroup` or below it (by its cgroup2 path). A process whose cgroup
/// cannot be read is treated as inside: control is refused on doubt.
fn in_cgroup(pid: i32, cgroup: &Path) -> Result<bool, String> {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| format!("cannot read the cgroup of pid {pid}: {e}"))?;
    let Some(relative) = own.lines().find_map(|line| line.strip_prefix("0::")) else {
        return Ok(true);
    };
    let mount = crate::cgroup::find_mount().map_err(|e| e.to_string())?;
    let path = mount.path.join(relative.trim_start_matches('/'));
    Ok(path.starts_with(cgroup))
}

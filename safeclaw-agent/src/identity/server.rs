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
        Ok(peer) => peer,
        Err(e) => {
            tracing::warn!("launcher socket: cannot read peer credentials: {e}");
            return;
        }
    };
    if let Some(reason) = shared.refusal(&peer) {
        // Take the request before refusing, so the client reads the refusal instead of a broken pipe.
        let request = tokio::time::timeout(IDLE_TIMEOUT, protocol::read_line(&mut reader)).await;
        let request = match request {
            Ok(Ok(Some(line))) => match protocol::decode::<Request>(&line) {
                Ok(request) => request.kind(),
                Err(_) => "malformed",
            },
            _ => "none",
        };
        let by = requester(&peer);
        tracing::warn!(
            "launcher socket: refused a {request} request from {by} (uid {}): {reason}",
            peer.uid()
        );
        let _ = reply(&mut writer, Response::Error(reason.clone())).await;
        let refused = SessionEvent::Refused { by, uid: peer.uid(), request, reason };
        if shared.events.send(refused).await.is_err() {
            tracing::warn!("refusal not recorded: the daemon's event channel is closed");
        }
        return;
    }
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
    /// Why this peer may not use the socket at all, if it may not: it is not root, or it runs inside
    /// the agent cgroup (whatever path it reached the socket by: the check is on the process, not on
    /// the name it connected to). A peer whose cgroup cannot be read is refused: refused on doubt.
    fn refusal(&self, peer: &UCred) -> Option<String> {
        if peer.uid() != 0 {
            return Some("only root may use this socket".into());
        }
        let Some(pid) = peer.pid() else {
            return Some("the connecting process is unknown (no pid in its credentials)".into());
        };
        match crate::cgroup::process_is_in(pid, &self.agent_cgroup) {
            Ok(false) => None,
            Ok(true) => Some("processes inside the agent cgroup may not use this socket".into()),
            Err(e) => Some(format!("refused on doubt: {e}")),
        }
    }

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
                    Ok(Ok(())) => Response::Ok,
                    Ok(Err(refused)) | Err(refused) => Response::Error(refused),
                }
            }
        }
    }

    /// Forwards a control request to the daemon and waits for its answer (the peer is root and
    /// outside the agent cgroup: `refusal` let it in).
    async fn control<T>(
        &self,
        peer: &UCred,
        request: impl FnOnce(Requester, oneshot::Sender<T>) -> SessionEvent,
    ) -> Result<T, String> {
        let (done, answer) = oneshot::channel();
        let by = requester(peer);
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
    Requester::of_pid(peer.pid())
}

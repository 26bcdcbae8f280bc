//! The launcher's and the `sessions` command's end of the daemon socket.
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::protocol::{self, ProtocolError, Request, Response};
use super::{SessionExit, SessionId, SessionInfo};

/// How long the daemon may take to accept a connection or answer a request.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a reload or stop may take: compiling and installing a large policy takes seconds (a
/// 10,000-rule policy took 10–13 s in the emulated test VM), and stopping drains and commits the ring.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no SafeClaw daemon is listening on {path} ({source}); start `safeclaw-agent run` first (it needs root)")]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("the daemon socket {0} is root-only: run this with sudo")]
    NotPermitted(PathBuf),
    #[error("the daemon at {0} did not answer within {1:?}")]
    Timeout(PathBuf, Duration),
    #[error("the daemon at {0} closed the connection")]
    Closed(PathBuf),
    #[error("the daemon refused: {0}")]
    Refused(String),
    #[error("unexpected answer from the daemon: {0:?}")]
    Unexpected(Response),
    #[error("talking to the daemon: {0}")]
    Protocol(#[from] ProtocolError),
}

pub struct DaemonConnection {
    path: PathBuf,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl DaemonConnection {
    pub async fn connect(path: &Path) -> Result<Self, ClientError> {
        let stream = tokio::time::timeout(REPLY_TIMEOUT, UnixStream::connect(path))
            .await
            .map_err(|_| ClientError::Timeout(path.to_path_buf(), REPLY_TIMEOUT))?
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::PermissionDenied => ClientError::NotPermitted(path.to_path_buf()),
                _ => ClientError::Connect { path: path.to_path_buf(), source },
            })?;
        let (read, writer) = stream.into_split();
        Ok(DaemonConnection { path: path.to_path_buf(), reader: BufReader::new(read), writer })
    }

    /// Registers a session; only an acknowledgement means the daemon is enforcing on it.
    pub async fn start(&mut self, session: &SessionInfo) -> Result<(), ClientError> {
        self.expect_ok(&Request::Start(session.clone()), REPLY_TIMEOUT).await
    }

    /// Reports the end of this connection's session (after its cgroup was emptied).
    pub async fn end(&mut self, session_id: &SessionId, exit: &SessionExit) -> Result<(), ClientError> {
        self.expect_ok(&Request::End { session_id: session_id.clone(), exit: exit.clone() }, REPLY_TIMEOUT)
            .await
    }

    pub async fn list(&mut self) -> Result<Vec<SessionInfo>, ClientError> {
        match self.call(&Request::List, REPLY_TIMEOUT).await? {
            Response::Sessions(sessions) => Ok(sessions),
            other => Err(ClientError::Unexpected(other)),
        }
    }

    /// Asks the daemon to reload its policy file; the hash of the policy now enforcing.
    pub async fn reload(&mut self) -> Result<String, ClientError> {
        match self.call(&Request::Reload, CONTROL_TIMEOUT).await? {
            Response::Reloaded { policy_hash } => Ok(policy_hash),
            other => Err(ClientError::Unexpected(other)),
        }
    }

    /// Asks the daemon to detach its programs, remove its pins and exit.
    pub async fn stop(&mut self) -> Result<(), ClientError> {
        self.expect_ok(&Request::Stop, CONTROL_TIMEOUT).await
    }

    /// Resolves when the daemon closes the connection or sends anything unasked: either way it can
    /// no longer be trusted to be enforcing. Cancel-safe (nothing is consumed).
    pub async fn lost(&mut self) {
        let _ = self.reader.fill_buf().await;
    }

    async fn expect_ok(&mut self, request: &Request, timeout: Duration) -> Result<(), ClientError> {
        match self.call(request, timeout).await? {
            Response::Ok => Ok(()),
            other => Err(ClientError::Unexpected(other)),
        }
    }

    async fn call(&mut self, request: &Request, timeout: Duration) -> Result<Response, ClientError> {
        let line = protocol::encode(request)?;
        let exchange = async {
            self.writer.write_all(&line).await.map_err(ProtocolError::Io)?;
            protocol::read_line(&mut self.reader).await
        };
        let answer = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout(self.path.clone(), timeout))??
            .ok_or_else(|| ClientError::Closed(self.path.clone()))?;
        match protocol::decode(&answer)? {
            Response::Error(message) => Err(ClientError::Refused(message)),
            response => Ok(response),
        }
    }
}

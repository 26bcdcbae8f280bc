//! The launcher ↔ daemon wire protocol: versioned, size-limited, line-delimited JSON.
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncReadExt as _};

use super::{SessionExit, SessionId, SessionInfo};

/// The protocol version this build speaks; a message with another version is refused.
pub const VERSION: u32 = 1;
/// Longest accepted message line in bytes, newline excluded (a long argv fits; a runaway peer does not).
pub const MAX_LINE: usize = 1 << 20;

/// What a launcher or the `sessions` command asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Request {
    /// Register a session whose cgroup exists and is still empty; the connection then stays open until `End`.
    Start(SessionInfo),
    /// The session on this connection is over and its cgroup is empty.
    #[serde(rename_all = "camelCase")]
    End { session_id: SessionId, exit: SessionExit },
    /// The live sessions.
    List,
    /// Reload the policy file now (as SIGHUP does).
    Reload,
    /// Detach the programs, remove the pins and stop the daemon.
    Stop,
}

impl Request {
    /// The request's name, for logs and the audit trail (never its content).
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Start(_) => "start",
            Request::End { .. } => "end",
            Request::List => "list",
            Request::Reload => "reload",
            Request::Stop => "stop",
        }
    }
}

/// The daemon's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Response {
    Ok,
    Sessions(Vec<SessionInfo>),
    /// The policy a reload installed, by hash (`sha256:...`).
    #[serde(rename_all = "camelCase")]
    Reloaded {
        policy_hash: String,
    },
    Error(String),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<T> {
    version: u32,
    body: T,
}

/// Only the version, read before the body so a newer peer gets "unsupported version", not a field error.
#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("message longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("unsupported protocol version {0} (this build speaks version {VERSION})")]
    Version(u32),
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
}

/// One message as a line: `{"version":1,"body":...}\n`.
pub fn encode<T: Serialize>(body: &T) -> Result<Vec<u8>, ProtocolError> {
    let mut line = serde_json::to_vec(&Envelope { version: VERSION, body })?;
    if line.len() > MAX_LINE {
        return Err(ProtocolError::TooLong);
    }
    line.push(b'\n');
    Ok(line)
}

/// Parses one line (without its newline).
pub fn decode<T: DeserializeOwned>(line: &[u8]) -> Result<T, ProtocolError> {
    let VersionOnly { version } = serde_json::from_slice(line)?;
    if version != VERSION {
        return Err(ProtocolError::Version(version));
    }
    let envelope: Envelope<T> = serde_json::from_slice(line)?;
    Ok(envelope.body)
}

/// Reads the next line, without its newline; `None` at a clean end of stream. A line over [`MAX_LINE`]
/// is an error and leaves the stream unusable (the rest of that line is not consumed).
pub async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<Option<Vec<u8>>, ProtocolError> {
    let mut line = Vec::new();
    let limit = MAX_LINE as u64 + 1;
    reader.take(limit).read_until(b'\n', &mut line).await?;
    match line.last() {
        None => Ok(None),
        Some(b'\n') => {
            line.pop();
            Ok(Some(line))
        }
        Some(_) if line.len() > MAX_LINE => Err(ProtocolError::TooLong),
        Some(_) => Err(ProtocolError::Io(std::io::ErrorKind::UnexpectedEof.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session_json() -> serde_json::Value {
        serde_json::json!({
            "agentId": "claude", "sessionId": "sess_abc", "userId": "alice", "uid": 1000, "gid": 1000,
            "cgroupId": 1234, "cgroupPath": "/sys/fs/cgroup/agents/claude/sess_abc",
            "argv": ["claude", "-p", "hi"], "startedAt": "2026-02-13T10:45:23.102Z", "launcherPid": 42
        })
    }

    fn decode_json(value: serde_json::Value) -> Result<Request, ProtocolError> {
        decode(&serde_json::to_vec(&value).unwrap())
    }

    #[test]
    fn round_trips_every_request() {
        let info: SessionInfo = serde_json::from_value(session_json()).unwrap();
        let requests = [
            Request::Start(info.clone()),
            Request::End { session_id: info.session_id.clone(), exit: SessionExit::Signaled(15) },
            Request::List,
            Request::Reload,
            Request::Stop,
        ];
        for request in requests {
            let line = encode(&request).unwrap();
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(decode::<Request>(&line[..line.len() - 1]).unwrap(), request);
        }
        let line = encode(&Request::List).unwrap();
        assert_eq!(line, b"{\"version\":1,\"body\":\"list\"}\n");
    }

    #[test]
    fn refuses_bad_input_with_a_reason() {
        let start =
            |session: serde_json::Value| serde_json::json!({"version": 1, "body": {"start": session}});
        let mut extra = session_json();
        extra["shell"] = "/bin/sh".into();
        let mut bad_agent = session_json();
        bad_agent["agentId"] = "../etc".into();
        let mut bad_session = session_json();
        bad_session["sessionId"] = "sess_a/b".into();
        let mut wrong_type = session_json();
        wrong_type["uid"] = "root".into();
        let mut missing = session_json();
        missing.as_object_mut().unwrap().remove("cgroupId");
        let cases = [
            (start(extra), "unknown field `shell`"),
            (start(bad_agent), "cgroup name \"../etc\" is not allowed"),
            (start(bad_session), "session id"),
            (start(wrong_type), "invalid type"),
            (start(missing), "missing field `cgroupId`"),
            (serde_json::json!({"version": 2, "body": "list"}), "unsupported protocol version 2"),
            (serde_json::json!({"body": "list"}), "missing field `version`"),
            (serde_json::json!({"version": 1, "body": "list", "x": 1}), "unknown field `x`"),
            (serde_json::json!({"version": 1, "body": "reboot"}), "unknown variant `reboot`"),
            (
                serde_json::json!({"version": 1, "body": {"end": {"sessionId": "sess_a"}}}),
                "missing field `exit`",
            ),
        ];
        for (value, expected) in cases {
            let err = decode_json(value.clone()).unwrap_err().to_string();
            assert!(err.contains(expected), "{value}: {err}");
        }
        for garbage in [&b""[..], b"{", b"\xff\xfe", b"[1,2]", b"null"] {
            assert!(decode::<Request>(garbage).is_err(), "{garbage:?} accepted");
        }
    }

    #[tokio::test]
    async fn reads_lines_up_to_the_limit() {
        let mut input: &[u8] = b"one\ntwo\n";
        assert_eq!(read_line(&mut input).await.unwrap(), Some(b"one".to_vec()));
        assert_eq!(read_line(&mut input).await.unwrap(), Some(b"two".to_vec()));
        assert_eq!(read_line(&mut input).await.unwrap(), None);

        let mut just_fits = vec![b'x'; MAX_LINE];
        just_fits.push(b'\n');
        assert_eq!(read_line(&mut &just_fits[..]).await.unwrap().map(|l| l.len()), Some(MAX_LINE));
        let too_long = vec![b'x'; MAX_LINE + 2];
        assert!(matches!(read_line(&mut &too_long[..]).await, Err(ProtocolError::TooLong)));
        assert!(matches!(read_line(&mut &b"cut off"[..]).await, Err(ProtocolError::Io(_))));
    }
}

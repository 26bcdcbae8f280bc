//! The validated names a session carries: agent, session, user, and its start time.
use std::fmt;

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum IdError {
    #[error(transparent)]
    Agent(#[from] crate::cgroup::CgroupError),
    #[error(
        "session id {id:?} is not allowed: expected `sess_` followed by 1 to 64 letters, digits, '_' or '-'"
    )]
    Session { id: String },
    #[error("user id {id:?} is not allowed: expected 1 to 256 printable characters")]
    User { id: String },
    #[error("start time {text:?} is not an RFC 3339 time")]
    Timestamp { text: String },
    #[error("cannot read random bytes for a session id: {0}")]
    Random(getrandom::Error),
}

/// An agent's name; it names the agent's cgroup directory, so it obeys `cgroup::validate_name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgentId(String);

impl AgentId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AgentId {
    type Error = IdError;
    fn try_from(name: String) -> Result<Self, IdError> {
        crate::cgroup::validate_name(&name)?;
        Ok(AgentId(name))
    }
}

/// `sess_` and 1 to 64 of `[A-Za-z0-9_-]`; it names the session's cgroup directory.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(String);

const SESSION_PREFIX: &str = "sess_";
const GENERATED_LEN: usize = 16;
/// RFC 4648 base32, lower case: 5 bits a character, so 16 characters hold 80 random bits.
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

impl SessionId {
    /// A fresh id: `sess_` and 16 random base32 characters.
    pub fn generate() -> Result<Self, IdError> {
        let mut random = [0u8; GENERATED_LEN];
        getrandom::fill(&mut random).map_err(IdError::Random)?;
        let suffix: String = random.iter().map(|b| char::from(BASE32[usize::from(b & 31)])).collect();
        Ok(SessionId(format!("{SESSION_PREFIX}{suffix}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SessionId {
    type Error = IdError;
    fn try_from(id: String) -> Result<Self, IdError> {
        let valid = id.strip_prefix(SESSION_PREFIX).is_some_and(|rest| {
            (1..=64).contains(&rest.len())
                && rest.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        });
        if valid {
            Ok(SessionId(id))
        } else {
            Err(IdError::Session { id })
        }
    }
}

/// The human a session runs for (a login name).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserId {
    type Error = IdError;
    fn try_from(id: String) -> Result<Self, IdError> {
        if (1..=256).contains(&id.len()) && !id.chars().any(char::is_control) {
            Ok(UserId(id))
        } else {
            Err(IdError::User { id })
        }
    }
}

/// An RFC 3339 time; the launcher writes UTC with milliseconds (`2026-02-13T10:45:23.102Z`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Timestamp(String);

impl Timestamp {
    pub fn now() -> Self {
        let now = OffsetDateTime::now_utc();
        let text = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            now.millisecond()
        );
        Timestamp(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Timestamp {
    type Error = IdError;
    fn try_from(text: String) -> Result<Self, IdError> {
        match OffsetDateTime::parse(&text, &Rfc3339) {
            Ok(_) => Ok(Timestamp(text)),
            Err(_) => Err(IdError::Timestamp { text }),
        }
    }
}

macro_rules! text_conversions {
    ($($name:ident),*) => {$(
        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}
text_conversions!(AgentId, SessionId, UserId, Timestamp);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_follow_the_pattern() {
        for good in ["sess_a", "sess_xyz789", "sess_A-b_9", &format!("sess_{}", "x".repeat(64))] {
            SessionId::try_from(good.to_string()).unwrap();
        }
        for bad in ["", "sess_", "sess", "xyz", "sess_a/b", "sess_..", "sess_a b", "SESS_a", "sess_é"] {
            assert!(SessionId::try_from(bad.to_string()).is_err(), "{bad:?} accepted");
        }
        assert!(SessionId::try_from(format!("sess_{}", "x".repeat(65))).is_err());
    }

    #[test]
    fn generated_session_ids_are_valid_and_distinct() {
        let a = SessionId::generate().unwrap();
        let b = SessionId::generate().unwrap();
        assert_ne!(a, b);
        for id in [&a, &b] {
            let suffix = id.as_str().strip_prefix("sess_").unwrap();
            assert_eq!(suffix.len(), 16);
            assert!(suffix.bytes().all(|c| BASE32.contains(&c)), "{id}");
            assert_eq!(SessionId::try_from(id.to_string()).unwrap(), *id);
        }
    }

    #[test]
    fn agent_ids_are_cgroup_names() {
        AgentId::try_from("claude-code".to_string()).unwrap();
        for bad in ["", "a/b", "..", "../etc", ".x"] {
            assert!(AgentId::try_from(bad.to_string()).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn user_ids_refuse_empty_and_control_characters() {
        UserId::try_from("support-lead@company.com".to_string()).unwrap();
        for bad in [String::new(), "a\nb".to_string(), "x".repeat(257)] {
            assert!(UserId::try_from(bad.clone()).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        let now = Timestamp::now();
        let text = now.as_str();
        assert_eq!(text.len(), 24, "{text}");
        assert!(text.ends_with('Z'));
        assert_eq!(Timestamp::try_from(text.to_string()).unwrap(), now);
        Timestamp::try_from("2026-02-13T11:45:23+01:00".to_string()).unwrap();
        assert!(Timestamp::try_from("yesterday".to_string()).is_err());
        assert!(Timestamp::try_from("2026-02-30T00:00:00Z".to_string()).is_err());
    }
}

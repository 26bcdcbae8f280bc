//! A destination's durable cursor and status, one root-only JSON file in the state directory, replaced
//! atomically (fsynced) each time the cursor moves.
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::audit::durable;

/// What `audit destinations` shows of one destination; `delivered` is the cursor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The destination's kind and where it sends, without secrets (`syslog tcp cef 10.0.0.5:6514`).
    pub target: String,
    /// Entries `0 .. delivered` have been delivered (so `delivered - 1` is the last one).
    pub delivered: u64,
    /// When a batch was last delivered (RFC 3339).
    pub last_success: Option<String>,
    pub last_error: Option<String>,
    pub last_error_time: Option<String>,
    /// Set while deliveries fail: since when.
    pub failing_since: Option<String>,
    /// The receiver refused a batch in a way retrying will not fix (e.g. HTTP 400): delivery waits for
    /// an operator, retrying slowly, and never skips the batch.
    #[serde(default)]
    pub stuck: bool,
    /// Entries retention deleted before they could be delivered (counted, and named in `lastError`).
    #[serde(default)]
    pub lost_to_retention: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct StatusError {
    pub path: PathBuf,
    pub reason: String,
}

impl Status {
    /// The saved status, or `None` when the destination never ran.
    pub fn load(path: &Path) -> Result<Option<Status>, StatusError> {
        let error = |reason: String| StatusError { path: path.to_owned(), reason };
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| error(e.to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(error(e.to_string())),
        }
    }

    /// Replaces the file (mode 0600; its directory 0700): a crash leaves the old or the new cursor.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        durable::create_private_dir(durable::parent_of(path))?;
        let mut bytes = serde_json::to_vec(self).map_err(io::Error::other)?;
        bytes.push(b'\n');
        durable::write_atomic(path, &bytes, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_a_missing_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("destinations/syslog-1.json");
        assert_eq!(Status::load(&path).unwrap(), None);
        let status = Status { target: "syslog tcp json h:1".into(), delivered: 42, ..Status::default() };
        status.save(&path).unwrap();
        assert_eq!(Status::load(&path).unwrap(), Some(status));
        std::fs::write(&path, "{").unwrap();
        assert!(Status::load(&path).unwrap_err().to_string().contains("syslog-1.json"));
    }
}

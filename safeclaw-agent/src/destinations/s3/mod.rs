//! The S3 destination (and `rotation.archiveTo: s3://…`): each sealed rotated segment, and the signed
//! head as it moves, put object-locked at `<prefix><logId>/<file>`, each upload checked by the store's
//! SHA-256 and read back through HeadObject before the cursor moves past it.
pub mod against;
pub mod client;
pub mod credentials;
pub mod sigv4;

use std::io::Read;
use std::path::Path;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::config::S3Config;
use super::engine::{Archive, SendError, Sent, Transport};
use crate::audit::reader::ChainEntry;
use crate::audit::segment::Compression;
use crate::audit::signing::HeadFile;
use client::{rfc3339, Client, Lock};

/// Largest object one PUT may store on S3.
const MAX_SINGLE_PUT: u64 = 5 << 30;

/// Name of the head object put when the signed head covers `size` entries.
pub fn head_object_name(size: u64) -> String {
    format!("head-{size:020}.json")
}

/// `prefix` with its placeholders filled for `time` (UTC), `host` and `log_id`, then `<logId>/`.
pub fn key_prefix(template: &str, time: OffsetDateTime, host: &str, log_id: &str) -> String {
    let filled = template
        .replace("{{year}}", &format!("{:04}", time.year()))
        .replace("{{month}}", &format!("{:02}", time.month() as u8))
        .replace("{{day}}", &format!("{:02}", time.day()))
        .replace("{{host}}", host)
        .replace("{{logId}}", log_id);
    format!("{filled}{log_id}/")
}

pub struct S3Transport {
    config: S3Config,
    client: Client,
    host: String,
    compression: Compression,
    head_interval: Duration,
}

impl S3Transport {
    /// `compression` is what rotated segments get (a segment is sealed once compressed);
    /// `head_interval` how often a moving head is put (the checkpoint interval).
    pub fn new(config: S3Config, compression: Compression, head_interval: Duration) -> Result<Self, String> {
        config.lock()?;
        let client = Client::new(
            &config.bucket.0,
            config.endpoint.as_ref().map(|e| e.0.as_str()),
            config.region.as_ref().map(|r| r.0.as_str()),
        )?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_owned();
        Ok(S3Transport { config, client, host, compression, head_interval })
    }

    fn lock(&self) -> Option<Lock<'static>> {
        let (mode, days) = self.config.lock().ok()??;
        let until = OffsetDateTime::from(SystemTime::now()) + time::Duration::days(i64::from(days));
        Some(Lock { mode: mode.header(), until: rfc3339(until) })
    }

    fn key(&self, log_id: &str, name: &str) -> String {
        let now = OffsetDateTime::from(SystemTime::now());
        format!("{}{name}", key_prefix(self.config.prefix(), now, &self.host, log_id))
    }

    /// Puts `length` bytes read by `open` under `key` and confirms them: the store's SHA-256 equals
    /// ours (from the put's answer or a HeadObject), and the lock asked for is on the stored version.
    fn put_checked(
        &self,
        key: &str,
        length: u64,
        sha256: [u8; 32],
        open: &mut dyn FnMut() -> std::io::Result<Box<dyn Read>>,
    ) -> Result<(), SendError> {
        let lock = self.lock();
        let mut body = open().map_err(|e| SendError::retry(format!("{key}: {e}")))?;
        let put = self.client.put(key, &mut body, length, &sha256, lock.as_ref())?;
        let stored = self.client.head(key, put.version_id.as_deref())?;
        let ours = base64::engine::general_purpose::STANDARD.encode(sha256);
        match stored.checksum_sha256.as_ref().or(put.checksum_sha256.as_ref()) {
            Some(theirs) if *theirs == ours => {}
            Some(theirs) => {
                return Err(SendError::retry(format!("{key}: stored SHA-256 {theirs} is not ours {ours}")))
            }
            None => {
                // The store keeps no checksum: read the object back.
                let mut back = Sha256::new();
                self.client.get_to(key, put.version_id.as_deref(), &mut back)?;
                if back.finalize().as_slice() != sha256 {
                    return Err(SendError::retry(format!("{key}: the object read back differs from ours")));
                }
            }
        }
        if let Some(lock) = &lock {
            let locked = stored.lock_mode.as_deref() == Some(lock.mode)
                && stored.retain_until.as_deref().is_some_and(|until| until_at_least(until, &lock.until));
            if !locked {
                return Err(SendError::Refused {
                    reason: format!(
                        "{key}: stored without the object lock asked for ({} until {}): is object lock \
                         enabled on the bucket?",
                        lock.mode, lock.until
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Whether the store's retain-until (RFC 3339, perhaps with fractions or an offset) is no earlier than
/// ours (`YYYY-MM-DDTHH:MM:SSZ`).
fn until_at_least(stored: &str, ours: &str) -> bool {
    let parse = |text: &str| OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok();
    matches!((parse(stored), parse(ours)), (Some(s), Some(o)) if s >= o)
}

fn sha256_of(path: &Path) -> std::io::Result<([u8; 32], u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let length = std::io::copy(&mut file, &mut hasher)?;
    Ok((hasher.finalize().into(), length))
}

impl Archive for S3Transport {
    fn upload_segment(&mut self, log_id: &str, segment: &Path) -> Result<(), SendError> {
        let name = segment.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let (sha256, length) = sha256_of(segment).map_err(|e| SendError::retry(format!("{name}: {e}")))?;
        if length > MAX_SINGLE_PUT {
            return Err(SendError::Refused {
                reason: format!(
                    "{name}: {length} bytes is more than one S3 PUT takes (5 GiB): lower rotation.maxSize"
                ),
            });
        }
        let key = self.key(log_id, &name);
        let path = segment.to_owned();
        self.put_checked(&key, length, sha256, &mut || {
            std::fs::File::open(&path).map(|f| Box::new(f) as Box<dyn Read>)
        })
    }

    fn upload_head(&mut self, head: &HeadFile, bytes: Vec<u8>) -> Result<(), SendError> {
        let sha256: [u8; 32] = Sha256::digest(&bytes).into();
        let key = self.key(&head.log_id, &head_object_name(head.size));
        self.put_checked(&key, bytes.len() as u64, sha256, &mut || {
            Ok(Box::new(std::io::Cursor::new(bytes.clone())) as Box<dyn Read>)
        })
    }

    fn compression(&self) -> Compression {
        self.compression
    }

    fn head_interval(&self) -> Duration {
        self.head_interval
    }
}

impl Transport for S3Transport {
    fn target(&self) -> String {
        let lock = match self.config.lock() {
            Ok(Some((mode, days))) => format!(" {} {days}d", mode.header()),
            _ => " unlocked".into(),
        };
        format!("{}/{}{lock}", self.client.target(), self.config.prefix())
    }

    fn batch_size(&self) -> usize {
        1
    }

    fn send(&mut self, _batch: &[ChainEntry]) -> Result<Sent, SendError> {
        Err(SendError::Refused { reason: "s3 takes sealed segments, not entries".into() })
    }

    fn archive(&mut self) -> Option<&mut dyn Archive> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_template_is_filled_and_ends_in_the_log_id() {
        let time = time::macros::datetime!(2026-03-04 05:06:07 UTC);
        assert_eq!(
            key_prefix("safeclaw/{{year}}/{{month}}/{{day}}/{{host}}/", time, "h1", "L"),
            "safeclaw/2026/03/04/h1/L/"
        );
        assert_eq!(key_prefix("", time, "h1", "L"), "L/");
        assert!(until_at_least("2033-01-01T00:00:00.000Z", "2033-01-01T00:00:00Z"));
        assert!(!until_at_least("2032-12-31T23:59:59Z", "2033-01-01T00:00:00Z"));
    }
}

//! Config types of the remote destinations (`audit.destinations` entries of type syslog and webhook).
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigPath, EnvString, FlushInterval, WebhookUrl};

/// `type: syslog`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SyslogConfig {
    /// Names the destination's cursor and status [default: `syslog-<n>`, n counting syslog entries from 1].
    pub name: Option<DestinationName>,
    pub host: EnvString,
    pub port: u16,
    #[serde(default)]
    pub format: SyslogFormat,
    #[serde(default)]
    pub protocol: SyslogProtocol,
    /// For `protocol: tls`: the CA that signed the receiver's certificate, and an optional client identity.
    pub tls: Option<TlsFiles>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogFormat {
    /// The entry exactly as written (a SIEM can re-verify the chain).
    #[default]
    Json,
    /// ArcSight Common Event Format, version 0.
    Cef,
}

/// How syslog messages travel: TCP with octet counting (RFC 6587) unless said otherwise.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogProtocol {
    /// RFC 5426: one datagram per entry, no delivery guarantee.
    Udp,
    #[default]
    Tcp,
    /// RFC 5425.
    Tls,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsFiles {
    /// PEM file of the CA(s) trusted for the receiver's certificate.
    pub ca_file: ConfigPath,
    /// PEM client certificate chain and key, for receivers that authenticate senders.
    pub cert_file: Option<ConfigPath>,
    pub key_file: Option<ConfigPath>,
    /// Name checked in the receiver's certificate [default: host].
    pub server_name: Option<EnvString>,
}

/// `type: webhook`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebhookConfig {
    pub name: Option<DestinationName>,
    pub url: WebhookUrl,
    /// Entries per POST, 1 to 10,000 [default 100].
    pub batch_size: Option<BatchSize>,
    /// Longest wait before a partial batch is sent [default 5s].
    pub flush_interval: Option<FlushInterval>,
    /// HMAC-SHA256 key for the signature header (use `${ENV}` to keep it out of the file).
    pub secret: Option<Secret>,
    /// PEM CA file for an `https://` receiver with a private CA [default: the Mozilla roots].
    pub ca_file: Option<ConfigPath>,
    /// Longest wait for the receiver's answer, 1 s to 10 min [default 30s].
    pub timeout: Option<RequestTimeout>,
}

impl WebhookConfig {
    pub fn batch_size(&self) -> usize {
        self.batch_size.map_or(100, |b| b.0)
    }

    pub fn flush_interval(&self) -> Duration {
        self.flush_interval.map_or(Duration::from_secs(5), |f| f.0)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout.map_or(Duration::from_secs(30), |t| t.0)
    }
}

/// A destination's name: letters, digits, `-` and `_` (it names a file in the state directory).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct DestinationName(pub String);

impl TryFrom<String> for DestinationName {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        let valid = (1..=64).contains(&name.len())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if valid {
            Ok(DestinationName(name))
        } else {
            Err(format!("destination name {name:?} must be 1 to 64 letters, digits, '-' or '_'"))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u64")]
pub struct BatchSize(pub usize);

impl TryFrom<u64> for BatchSize {
    type Error = String;
    fn try_from(size: u64) -> Result<Self, String> {
        match usize::try_from(size) {
            Ok(size) if (1..=10_000).contains(&size) => Ok(BatchSize(size)),
            _ => Err(format!("batchSize {size} must be between 1 and 10000")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct RequestTimeout(pub Duration);

impl TryFrom<String> for RequestTimeout {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let duration = crate::config::parse_duration(&text)?;
        if (Duration::from_secs(1)..=Duration::from_secs(600)).contains(&duration) {
            Ok(RequestTimeout(duration))
        } else {
            Err(format!("timeout {text:?} must be between 1s and 10m"))
        }
    }
}

/// A secret with `${ENV}` expanded; never printed (`Debug` shows a placeholder).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Secret(pub String);

impl TryFrom<String> for Secret {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let value = crate::config::expand_env(&text)?;
        if value.is_empty() {
            return Err("secret is empty".into());
        }
        Ok(Secret(value))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where a destination keeps its cursor and status: `<state dir>/destinations/<name>.json`.
pub fn status_path(state_dir: &std::path::Path, name: &str) -> PathBuf {
    state_dir.join("destinations").join(format!("{name}.json"))
}

/// `type: s3`: sealed segments and signed heads, object-locked, in a bucket of any S3-compatible store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct S3Config {
    /// Names the destination's cursor and status [default: `s3-<n>`].
    pub name: Option<DestinationName>,
    pub bucket: EnvString,
    /// Key prefix, with `{{year}}`, `{{month}}`, `{{day}}` (UTC, at upload), `{{host}}` and `{{logId}}`.
    pub prefix: Option<S3Prefix>,
    /// Put every object with an object-lock retention (`retentionMode`, `retentionDays`).
    #[serde(default)]
    pub object_lock: bool,
    pub retention_mode: Option<S3RetentionMode>,
    pub retention_days: Option<RetentionDays>,
    /// Endpoint URL of an S3-compatible store [default: `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, else
    /// AWS's regional endpoint].
    pub endpoint: Option<EnvString>,
    /// Signing region [default: `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's, else us-east-1].
    pub region: Option<EnvString>,
}

impl S3Config {
    /// The bucket-relative prefix template (empty when unset).
    pub fn prefix(&self) -> &str {
        self.prefix.as_ref().map_or("", |p| p.0.as_str())
    }

    /// The lock every object gets, or why the settings are incomplete.
    pub fn lock(&self) -> Result<Option<(S3RetentionMode, u32)>, String> {
        match (self.object_lock, self.retention_mode, self.retention_days) {
            (false, None, None) => Ok(None),
            (true, Some(mode), Some(days)) => Ok(Some((mode, days.0))),
            (true, _, _) => Err(format!(
                "s3 bucket {}: objectLock needs retentionMode (COMPLIANCE or GOVERNANCE) and retentionDays",
                self.bucket
            )),
            (false, _, _) => Err(format!(
                "s3 bucket {}: retentionMode and retentionDays need objectLock: true",
                self.bucket
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum S3RetentionMode {
    /// No one, the root account included, can delete or shorten it before retain-until.
    Compliance,
    /// Users with `s3:BypassGovernanceRetention` can.
    Governance,
}

impl S3RetentionMode {
    pub fn header(self) -> &'static str {
        match self {
            S3RetentionMode::Compliance => "COMPLIANCE",
            S3RetentionMode::Governance => "GOVERNANCE",
        }
    }
}

/// `retentionDays`: 1 to 36,500.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u64")]
pub struct RetentionDays(pub u32);

impl TryFrom<u64> for RetentionDays {
    type Error = String;
    fn try_from(days: u64) -> Result<Self, String> {
        match u32::try_from(days) {
            Ok(days) if (1..=36_500).contains(&days) => Ok(RetentionDays(days)),
            _ => Err(format!("retentionDays {days} must be between 1 and 36500")),
        }
    }
}

/// Placeholders a `prefix` may use.
pub const PREFIX_PLACEHOLDERS: [&str; 5] = ["year", "month", "day", "host", "logId"];

/// A key prefix template; `${ENV}` expanded, placeholders checked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct S3Prefix(pub String);

impl TryFrom<String> for S3Prefix {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let text = crate::config::expand_env(&text)?;
        let mut rest = text.as_str();
        while let Some(open) = rest.find("{{") {
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or_else(|| format!("prefix {text:?}: unclosed {{{{"))?;
            let name = &after[..close];
            if !PREFIX_PLACEHOLDERS.contains(&name) {
                return Err(format!(
                    "prefix {text:?}: unknown placeholder {{{{{name}}}}}; known: {}",
                    PREFIX_PLACEHOLDERS.join(", ")
                ));
            }
            rest = &after[close + 2..];
        }
        if text.starts_with('/') {
            return Err(format!("prefix {text:?} must not start with '/'"));
        }
        Ok(S3Prefix(text))
    }
}

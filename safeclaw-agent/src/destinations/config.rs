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

//! The agent's config file (`/etc/safeclaw/config.yaml`, or `--config`): its `audit:` section, with
//! `${ENV}` expansion in strings and errors that name file, line and cause.
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::audit::entry::FieldSet;
use crate::audit::redact::{RedactError, Redactor};
use crate::audit::retention::{RetentionFramework, RetentionRule};
use crate::audit::segment::Compression;
use crate::audit::writer::{FailureMode, WriterOptions};
use crate::destinations::config::{S3Config, SyslogConfig, WebhookConfig};

/// Largest config file read (a config is a few KiB; this bounds a mistaken path to a huge file).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Untrusted(#[from] crate::trust::TrustError),
    /// `line` and `column` are 1-based; `None` when the YAML parser could not tell.
    #[error("{path}{}: {message}", at(*.line, *.column))]
    Invalid { path: PathBuf, line: Option<usize>, column: Option<usize>, message: String },
}

fn at(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

/// The whole file. Sections other modules own join here as they are built.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub audit: AuditConfig,
    /// Directory relative paths are resolved against (the config file's).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuditConfig {
    /// Always on; present so that the seed's configs parse, and refused when `false`.
    #[serde(default)]
    pub enabled: Enabled,
    /// Always on; present so that the seed's configs parse, and refused when `false`.
    #[serde(default)]
    pub hash_chain: HashChain,
    #[serde(default)]
    pub format: Format,
    /// Optional fields to write; all when absent.
    pub fields: Option<Vec<FieldName>>,
    pub retention: Option<RetentionConfig>,
    #[serde(default)]
    pub rotation: RotationConfig,
    #[serde(default)]
    pub destinations: Vec<Destination>,
    pub key_file: Option<ConfigPath>,
    pub head_file: Option<ConfigPath>,
    /// Longest wait for an entry's fsync (group commit), 1 ms to 1 s.
    pub commit_interval: Option<CommitInterval>,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    #[serde(default)]
    pub on_write_failure: OnWriteFailure,
    #[serde(default)]
    pub redaction: RedactionConfig,
    /// Memory for entries while the log cannot be written.
    pub max_buffered: Option<Size>,
    /// Window within which identical allowed opens become one entry with a count; `0ms` turns it off.
    pub repeat_window: Option<RepeatWindow>,
}

fn enabled() -> bool {
    true
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: Enabled,
            hash_chain: HashChain,
            format: Format::Jsonl,
            fields: None,
            retention: None,
            rotation: RotationConfig::default(),
            destinations: Vec::new(),
            key_file: None,
            head_file: None,
            commit_interval: None,
            checkpoint: CheckpointConfig::default(),
            on_write_failure: OnWriteFailure::FailClosed,
            redaction: RedactionConfig::default(),
            max_buffered: None,
            repeat_window: None,
        }
    }
}

/// `audit.enabled`, which can only be `true`: the kernel denies any action whose event it cannot put on
/// the ring, so a daemon that read events without recording them would make that guarantee a lie, and
/// a trail with agent actions missing is no evidence for the frameworks it exists for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "bool")]
pub struct Enabled;

impl TryFrom<bool> for Enabled {
    type Error = &'static str;
    fn try_from(on: bool) -> Result<Self, Self::Error> {
        on.then_some(Enabled).ok_or(
            "enabled: false is not supported: SafeClaw records every action it enforces (the kernel \
             denies what it cannot record). To record less, list fields in audit.fields or add audit.redaction \
             patterns; to stop enforcing, stop the daemon",
        )
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "bool")]
pub struct HashChain;

impl TryFrom<bool> for HashChain {
    type Error = &'static str;
    fn try_from(on: bool) -> Result<Self, Self::Error> {
        on.then_some(HashChain)
            .ok_or("hashChain: false is not supported: the hash chain is what makes the trail tamper-evident")
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Jsonl,
}

/// A name from `audit.fields`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldName(pub FieldSet);

impl TryFrom<String> for FieldName {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        FieldSet::by_name(&name).map(FieldName).ok_or_else(|| {
            let known: Vec<&str> = FieldSet::NAMES.iter().map(|(n, _)| *n).collect();
            format!("unknown audit field {name:?}; known fields: {}", known.join(", "))
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    pub default: Option<RetentionPeriod>,
    /// Per compliance framework (`hipaa: "6y"`); the longest period of all applies.
    #[serde(default)]
    pub overrides: std::collections::BTreeMap<RetentionFramework, RetentionPeriod>,
}

/// A retention period: a duration of at least one day, `forever`, or `matched` (no minimum of its own:
/// GDPR's "only as long as necessary" defers to the other settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetentionPeriod {
    Keep { period: Duration, text: String },
    Forever,
    Matched,
}

impl TryFrom<String> for RetentionPeriod {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        match text.as_str() {
            "forever" => return Ok(RetentionPeriod::Forever),
            "matched" => return Ok(RetentionPeriod::Matched),
            _ => {}
        }
        let period = parse_duration(&text)?;
        if period < Duration::from_secs(86_400) {
            return Err(format!("retention {text:?} is under one day (units: d, w, mo, y; `m` is minutes)"));
        }
        Ok(RetentionPeriod::Keep { period, text })
    }
}

impl RetentionConfig {
    /// The rule the writer applies: the longest of `default` and the overrides; `None` keeps everything.
    pub fn rule(&self) -> Option<RetentionRule> {
        let periods: Vec<&RetentionPeriod> = self.default.iter().chain(self.overrides.values()).collect();
        if periods.iter().any(|p| **p == RetentionPeriod::Forever) {
            return None;
        }
        periods
            .into_iter()
            .filter_map(|p| match p {
                RetentionPeriod::Keep { period, text } => {
                    Some(RetentionRule { keep: *period, label: text.clone() })
                }
                RetentionPeriod::Forever | RetentionPeriod::Matched => None,
            })
            .max_by_key(|r| r.keep)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RotationConfig {
    pub max_size: Option<SegmentSize>,
    #[serde(default)]
    pub compress: CompressSetting,
    /// Where rotated segments are archived (`s3://` only is delivered; see `crate::destinations`).
    pub archive_to: Option<ArchiveTarget>,
}

/// `rotation.maxSize`: 4 KiB to 1 TiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSize(pub u64);

impl TryFrom<String> for SegmentSize {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let bytes = parse_size(&text)?;
        if !(4096..=1 << 40).contains(&bytes) {
            return Err(format!("rotation size {text:?} must be between 4KiB and 1TiB"));
        }
        Ok(SegmentSize(bytes))
    }
}

/// A size such as `500MB` or `64MiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl TryFrom<String> for Size {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        parse_size(&text).map(Size)
    }
}

/// `compress: true | false | zstd | gzip` (`true` means zstd).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "serde_yaml::Value")]
pub struct CompressSetting(pub Compression);

impl TryFrom<serde_yaml::Value> for CompressSetting {
    type Error = String;
    fn try_from(value: serde_yaml::Value) -> Result<Self, String> {
        let compression = match &value {
            serde_yaml::Value::Bool(true) => Compression::Zstd,
            serde_yaml::Value::Bool(false) => Compression::None,
            serde_yaml::Value::String(s) if s == "zstd" => Compression::Zstd,
            serde_yaml::Value::String(s) if s == "gzip" => Compression::Gzip,
            serde_yaml::Value::String(s) if s == "none" => Compression::None,
            other => return Err(format!("compress must be true, false, zstd, gzip or none, not {other:?}")),
        };
        Ok(CompressSetting(compression))
    }
}

/// `archiveTo`: `s3://bucket/prefix` or an absolute directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveTarget(pub String);

impl TryFrom<String> for ArchiveTarget {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let text = expand_env(&text)?;
        if text.strip_prefix("s3://").is_some_and(|rest| !rest.is_empty()) || text.starts_with('/') {
            Ok(ArchiveTarget(text))
        } else {
            Err(format!("archiveTo {text:?} must be s3://BUCKET/PREFIX or an absolute directory"))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInterval(pub Duration);

impl TryFrom<String> for CommitInterval {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        duration_between(&text, "commitInterval", Duration::from_millis(1), Duration::from_secs(1))
            .map(CommitInterval)
    }
}

/// `repeatWindow`: how long identical allowed opens and connects are counted into one entry, 0 (off) to 10 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepeatWindow(pub Duration);

impl RepeatWindow {
    /// Default: long enough to fold a build's rereads of a file, short enough that the entry follows soon.
    pub const DEFAULT: RepeatWindow = RepeatWindow(Duration::from_secs(1));

    /// The kernel's `Scope::repeat_window_ms`.
    pub fn millis(self) -> u32 {
        u32::try_from(self.0.as_millis()).unwrap_or(u32::MAX)
    }
}

impl TryFrom<String> for RepeatWindow {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        duration_between(&text, "repeatWindow", Duration::ZERO, Duration::from_secs(10)).map(RepeatWindow)
    }
}

/// A webhook's `flushInterval`, up to one hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushInterval(pub Duration);

impl TryFrom<String> for FlushInterval {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        duration_between(&text, "flushInterval", Duration::from_millis(1), Duration::from_secs(3600))
            .map(FlushInterval)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Entries between checkpoints, 1 to 1,000,000.
    pub every: Option<CheckpointEvery>,
    /// Longest time between checkpoints, 1 s to 1 day.
    pub interval: Option<CheckpointInterval>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u64")]
pub struct CheckpointEvery(pub u64);

impl TryFrom<u64> for CheckpointEvery {
    type Error = String;
    fn try_from(every: u64) -> Result<Self, String> {
        if (1..=1_000_000).contains(&every) {
            Ok(CheckpointEvery(every))
        } else {
            Err(format!("checkpoint.every {every} must be between 1 and 1000000"))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointInterval(pub Duration);

impl TryFrom<String> for CheckpointInterval {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        duration_between(&text, "checkpoint.interval", Duration::from_secs(1), Duration::from_secs(86_400))
            .map(CheckpointInterval)
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OnWriteFailure {
    #[default]
    FailClosed,
    EnforceAndCount,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionConfig {
    /// Use the built-in patterns (API keys, tokens, `KEY=value`, `Bearer …`).
    #[serde(default = "enabled")]
    pub builtin: bool,
    #[serde(default)]
    pub patterns: Vec<RedactionPattern>,
}

impl Default for RedactionConfig {
    fn default() -> Self {
        RedactionConfig { builtin: true, patterns: Vec::new() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionPattern {
    pub name: String,
    /// A `regex` crate expression; a group named `secret` limits masking to that group.
    pub pattern: String,
}

/// Where entries go: the file (the chain itself), and remote destinations fed from it
/// (`crate::destinations`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Destination {
    File { path: ConfigPath },
    Syslog(SyslogConfig),
    Webhook(WebhookConfig),
    S3(S3Config),
}

/// A string with `${NAME}` replaced by the environment variable (`$$` for a literal `$`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvString(pub String);

impl TryFrom<String> for EnvString {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        expand_env(&text).map(EnvString)
    }
}

impl fmt::Display for EnvString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A path with `${ENV}` expanded; relative ones are taken from the config file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigPath(pub PathBuf);

impl TryFrom<String> for ConfigPath {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let expanded = expand_env(&text)?;
        if expanded.is_empty() {
            return Err("empty path".into());
        }
        Ok(ConfigPath(PathBuf::from(expanded)))
    }
}

/// An `http(s)://` URL (with `${ENV}` expanded); `Debug` shows only its scheme and host, since webhook
/// URLs often embed tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(pub String);

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({})", crate::destinations::webhook::redact_url(&self.0))
    }
}

impl TryFrom<String> for WebhookUrl {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let url = expand_env(&text)?;
        let host = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
        match host {
            Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(WebhookUrl(url)),
            // Never echo the expanded value: webhook URLs often embed tokens.
            _ => Err(format!("webhook url {text:?} does not expand to an http:// or https:// URL")),
        }
    }
}

/// Replaces `${NAME}` with the value of environment variable NAME; `$$` is a literal `$`.
pub fn expand_env(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').ok_or_else(|| format!("unclosed ${{ in {text:?}"))?;
            let name = &inner[..end];
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("invalid environment variable name {name:?} in {text:?}"));
            }
            let value = std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?;
            out.push_str(&value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `100ms`, `5s`, `10m` (minutes), `2h`, `3d`, `2w`, `6mo` (31 days), `7y` (366 days): calendar units
/// round up, so that retention never deletes early.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let count: u64 =
        digits.parse().map_err(|_| format!("{text:?} is not a duration like 100ms, 5s, 3d or 7y"))?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        "mo" => 31 * 86_400_000,
        "y" => 366 * 86_400_000,
        _ => return Err(format!("{text:?}: unknown duration unit {unit:?} (ms, s, m, h, d, w, mo, y)")),
    };
    let ms = count
        .checked_mul(unit_ms)
        .filter(|ms| *ms <= 1000 * 366 * 86_400_000)
        .ok_or_else(|| format!("{text:?} is too long"))?;
    Ok(Duration::from_millis(ms))
}

/// A duration from `min` to `max`; `what` names the setting in the error.
fn duration_between(text: &str, what: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if (min..=max).contains(&duration) {
        Ok(duration)
    } else {
        Err(format!("{what} {text:?} must be between {min:?} and {max:?}"))
    }
}

/// `500MB` (decimal units), `64MiB` (binary), or plain bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let count: u64 = digits.parse().map_err(|_| format!("{text:?} is not a size like 500MB or 64MiB"))?;
    let unit_bytes: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "{text:?}: unknown size unit {unit:?} (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            ))
        }
    };
    count.checked_mul(unit_bytes).ok_or_else(|| format!("{text:?} is too large"))
}

/// Values converted from a string by `TryFrom<String>` inside the scalar's own visitor, so that serde_yaml
/// places a refusal at the value itself, not at the map or list holding it.
macro_rules! from_placed_string {
    ($($type:ty),* $(,)?) => {$(
        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                crate::policy::schema::scalar(deserializer, stringify!($type), |text| <$type>::try_from(text.to_owned()))
            }
        }
    )*};
}
from_placed_string!(
    FieldName,
    RetentionFramework,
    RetentionPeriod,
    SegmentSize,
    Size,
    ArchiveTarget,
    CommitInterval,
    RepeatWindow,
    FlushInterval,
    CheckpointInterval,
    EnvString,
    ConfigPath,
    WebhookUrl
);

impl Config {
    /// Reads `path`; with `None`, the default file if it exists, else the defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let default = Path::new(crate::cli::DEFAULT_CONFIG);
        match path {
            Some(path) => Self::read(path),
            None if default.exists() => Self::read(default),
            None => Ok(Config { base_dir: PathBuf::from("/"), ..Config::default() }),
        }
    }

    /// As [`Config::load`], for the daemon: the file is read through no link and only if nobody but
    /// root can change it or a directory above it (see `trust`).
    pub fn load_trusted(path: Option<&Path>) -> Result<Self, ConfigError> {
        let default = Path::new(crate::cli::DEFAULT_CONFIG);
        let path = match path {
            Some(path) => path,
            None if default.exists() => default,
            None => return Self::load(None),
        };
        let bytes = crate::trust::read(&crate::trust::resolve_at_startup(path), MAX_CONFIG_BYTES)?;
        let text = String::from_utf8(bytes).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            line: None,
            column: None,
            message: format!("not UTF-8 text (invalid byte at offset {})", e.utf8_error().valid_up_to()),
        })?;
        Self::parse(&text, path)
    }

    fn read(path: &Path) -> Result<Self, ConfigError> {
        let io_err = |source| ConfigError::Io { path: path.to_owned(), source };
        let size = std::fs::metadata(path).map_err(io_err)?.len();
        if size > MAX_CONFIG_BYTES {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                line: None,
                column: None,
                message: format!("{size} bytes is too large for a config file (limit {MAX_CONFIG_BYTES})"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(io_err)?;
        Self::parse(&text, path)
    }

    /// Parses config text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |e: serde_yaml::Error| {
            let location = e.location();
            let mut message = e.to_string();
            if let Some(l) = &location {
                let suffix = format!(" at line {} column {}", l.line(), l.column());
                if let Some(stripped) = message.strip_suffix(&suffix) {
                    message = stripped.to_owned();
                }
            }
            // serde_yaml places errors inside lists at the list's first line; an unset variable can be
            // placed exactly, at its own `${NAME}`.
            let (line, column) = match unset_variable_position(text, &message) {
                Some((line, column)) => (Some(line), Some(column)),
                None => (location.as_ref().map(|l| l.line()), location.as_ref().map(|l| l.column())),
            };
            ConfigError::Invalid {
                path: path.to_owned(),
                line,
                column,
                message: crate::yaml_guard::elide(&message).into_owned(),
            }
        };
        let mut config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            crate::yaml_guard::check_depth(text).map_err(|deep| ConfigError::Invalid {
                path: path.to_owned(),
                line: Some(deep.line),
                column: Some(deep.column),
                message: deep.to_string(),
            })?;
            serde_yaml::from_str(text).map_err(invalid)?
        };
        config.base_dir = crate::audit::durable::parent_of(path).to_owned();
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let files = self.audit.destinations.iter().filter(|d| matches!(d, Destination::File { .. })).count();
        if files > 1 {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                line: None,
                column: None,
                message: format!("audit.destinations: {files} file destinations; one is supported"),
            });
        }
        crate::destinations::validate(self).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            line: None,
            column: None,
            message,
        })?;
        self.audit.redactor().map(drop).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            line: None,
            column: None,
            message: format!("audit.redaction: {e}"),
        })
    }

    /// `path`, taken from the config file's directory when relative.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.base_dir.join(path)
        }
    }

    /// The active log file: `override_path` (the daemon's `--audit-log`), else the file destination, else
    /// `/var/log/safeclaw/audit.jsonl`.
    pub fn audit_log_path(&self, override_path: Option<&Path>) -> PathBuf {
        if let Some(path) = override_path {
            return path.to_owned();
        }
        self.audit
            .destinations
            .iter()
            .find_map(|d| match d {
                Destination::File { path } => Some(self.resolve(&path.0)),
                _ => None,
            })
            .unwrap_or_else(|| PathBuf::from(crate::audit::DEFAULT_LOG))
    }

    pub fn key_path(&self) -> PathBuf {
        self.audit
            .key_file
            .as_ref()
            .map_or_else(|| PathBuf::from(crate::audit::DEFAULT_KEY), |p| self.resolve(&p.0))
    }

    pub fn head_path(&self) -> PathBuf {
        self.audit
            .head_file
            .as_ref()
            .map_or_else(|| PathBuf::from(crate::audit::DEFAULT_HEAD), |p| self.resolve(&p.0))
    }

    /// How long the kernel counts identical allowed opens into one entry (zero: never).
    pub fn repeat_window(&self) -> RepeatWindow {
        self.audit.repeat_window.unwrap_or(RepeatWindow::DEFAULT)
    }

    /// Writer options for this config; `log_override` is the daemon's `--audit-log`.
    pub fn writer_options(&self, log_override: Option<&Path>) -> Result<WriterOptions, RedactError> {
        let a = &self.audit;
        let mut opts = WriterOptions::new(&self.audit_log_path(log_override));
        opts.key_path = self.key_path();
        opts.head_path = self.head_path();
        if let Some(fields) = &a.fields {
            opts.fields = fields.iter().fold(FieldSet::NONE, |set, f| set.with(f.0));
        }
        opts.redactor = a.redactor()?;
        if let Some(interval) = a.commit_interval {
            opts.commit_interval = interval.0;
        }
        if let Some(every) = a.checkpoint.every {
            opts.checkpoint_every = every.0;
        }
        if let Some(interval) = a.checkpoint.interval {
            opts.checkpoint_interval = interval.0;
        }
        opts.max_segment_bytes = a.rotation.max_size.map(|s| s.0);
        opts.compression = a.rotation.compress.0;
        opts.retention = a.retention.as_ref().and_then(RetentionConfig::rule);
        opts.archived = crate::destinations::archived_through(self);
        opts.on_failure = match a.on_write_failure {
            OnWriteFailure::FailClosed => FailureMode::FailClosed,
            OnWriteFailure::EnforceAndCount => FailureMode::EnforceAndCount,
        };
        if let Some(max) = a.max_buffered {
            opts.max_buffered_bytes = usize::try_from(max.0).unwrap_or(usize::MAX);
        }
        Ok(opts)
    }
}

/// 1-based line and column of the first `${NAME}` in `text`, when `message` says NAME is not set.
fn unset_variable_position(text: &str, message: &str) -> Option<(usize, usize)> {
    let name = message.split("environment variable ").nth(1)?.split(' ').next()?;
    let needle = format!("${{{name}}}");
    text.lines().enumerate().find_map(|(n, line)| line.find(&needle).map(|at| (n + 1, at + 1)))
}

impl AuditConfig {
    pub fn redactor(&self) -> Result<Redactor, RedactError> {
        let extra: Vec<(String, String)> =
            self.redaction.patterns.iter().map(|p| (p.name.clone(), p.pattern.clone())).collect();
        Redactor::new(self.redaction.builtin, &extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed's example config, verbatim in structure.
    const SEED: &str = r#"
audit:
  enabled: true
  hashChain: true
  format: "jsonl"
  fields:
    - timestamp
    - action
    - effect
    - matchedRule
    - reason
    - agentId
    - sessionId
    - userId
    - requestDetails
    - evaluationDurationMs
    - hash
    - prevHash
    - sequence
  retention:
    default: "3y"
    overrides:
      hipaa: "6y"
      financial: "7y"
      gdpr: "matched"
  rotation:
    maxSize: "500MB"
    compress: true
    archiveTo: "s3://audit-archive/"
  destinations:
    - type: file
      path: "logs/audit.jsonl"
    - type: syslog
      host: "siem.internal.company.com"
      port: 514
      format: "cef"
    - type: webhook
      url: "${SAFECLAW_TEST_WEBHOOK}"
      batchSize: 100
      flushInterval: "5s"
    - type: s3
      bucket: "compliance-audit-logs"
      prefix: "safeclaw/{{year}}/{{month}}/"
      objectLock: true
      retentionMode: "COMPLIANCE"
      retentionDays: 2555
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/safeclaw/config.yaml"))
    }

    fn error(text: &str) -> String {
        parse(text).err().map(|e| e.to_string()).unwrap_or_else(|| panic!("accepted: {text}"))
    }

    #[test]
    fn seed_config_parses() {
        std::env::set_var("SAFECLAW_TEST_WEBHOOK", "https://hooks.example/abc");
        let config = parse(SEED).unwrap();
        assert_eq!(config.audit_log_path(None), PathBuf::from("/etc/safeclaw/logs/audit.jsonl"));
        let opts = config.writer_options(None).unwrap();
        assert_eq!(opts.max_segment_bytes, Some(500_000_000));
        assert_eq!(opts.compression, Compression::Zstd);
        let rule = opts.retention.unwrap();
        assert_eq!(rule.label, "7y");
        assert!(!opts.fields.has(FieldSet::POLICY_HASH));
        assert!(opts.fields.has(FieldSet::REQUEST_DETAILS));
        let webhook = config.audit.destinations.iter().find_map(|d| match d {
            Destination::Webhook(webhook) => Some(webhook.url.0.clone()),
            _ => None,
        });
        assert_eq!(webhook.as_deref(), Some("https://hooks.example/abc"));
    }

    #[test]
    fn empty_file_means_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.audit.enabled, Enabled);
        assert_eq!(config.audit_log_path(None), PathBuf::from(crate::audit::DEFAULT_LOG));
        assert_eq!(config.audit_log_path(Some(Path::new("/x.jsonl"))), PathBuf::from("/x.jsonl"));
    }

    #[test]
    fn errors_name_file_line_and_cause() {
        let e = error("audit:\n  rotation:\n    maxSize: lots\n");
        assert!(e.starts_with("/etc/safeclaw/config.yaml:3:"), "{e}");
        assert!(e.contains("\"lots\""), "{e}");
        // At the bad value, not at the list or map holding it.
        let e = error("audit:\n  fields:\n    - timestamp\n    - colour\n");
        assert!(e.starts_with("/etc/safeclaw/config.yaml:4:7:"), "{e}");
        assert!(e.contains("unknown audit field \"colour\""), "{e}");
        let e = error("audit:\n  enabled: false\n");
        assert!(e.contains(":2:") && e.contains("enabled: false is not supported"), "{e}");
        let e = error("audit:\n  hashChain: false\n");
        assert!(e.contains(":2:") && e.contains("tamper-evident"), "{e}");
        let e = error("audit:\n  enabled: true\n  bogus: 1\n");
        assert!(e.contains(":3:") && e.contains("unknown field `bogus`"), "{e}");
        let e = error("audit:\n  retention:\n    default: 6m\n");
        assert!(e.contains("under one day"), "{e}");
        let e = error("audit:\n  destinations:\n    - type: ftp\n      path: x\n");
        assert!(e.contains(":3:") && e.contains("ftp"), "{e}");
        let e = error("audit:\n  destinations:\n    - type: syslog\n      host: h\n      port: 99999\n");
        assert!(e.contains(":5:"), "{e}");
        let e = error("audit: [unclosed\n");
        assert!(e.starts_with("/etc/safeclaw/config.yaml:"), "{e}");
        let e = error("audit:\n  redaction:\n    patterns:\n      - name: bad\n        pattern: \"(\"\n");
        assert!(e.contains("audit.redaction") && e.contains("\"bad\""), "{e}");
        let e = error("audit:\n  commitInterval: 5s\n");
        assert!(e.contains("commitInterval \"5s\" must be between 1ms and 1s"), "{e}");
    }

    #[test]
    fn the_daemon_reads_no_config_through_a_link_or_one_others_can_write() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("config.yaml");
        std::fs::write(&real, "audit: {}\n").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o644)).unwrap();
        Config::load_trusted(Some(&real)).unwrap();
        let link = dir.path().join("link.yaml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = Config::load_trusted(Some(&link)).unwrap_err().to_string();
        assert!(e.ends_with("link.yaml is a symbolic link: the daemon does not follow links to its policy or config (name the file itself, or a path without links)"), "{e}");
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = Config::load_trusted(Some(&real)).unwrap_err().to_string();
        assert!(e.contains("config.yaml is writable by its group or by others (mode 0666)"), "{e}");
    }

    #[test]
    fn bad_values_are_placed_at_their_own_line() {
        let e = error("audit:\n  rotation:\n    compress: true\n    maxSize: lots\n");
        assert!(e.starts_with("/etc/safeclaw/config.yaml:4:14:"), "{e}");
        let e = error("audit:\n  checkpoint:\n    every: 10\n    interval: 1ms\n");
        assert!(e.starts_with("/etc/safeclaw/config.yaml:4:15:") && e.contains("1ms"), "{e}");
        let e = error(
            "audit:\n  retention:\n    default: 3y\n    overrides:\n      hipaa: 6y\n      hippa: 7y\n",
        );
        assert!(e.starts_with("/etc/safeclaw/config.yaml:6:"), "{e}");
        assert!(e.contains("unknown retention framework \"hippa\"") && e.contains("gdpr, hipaa"), "{e}");
    }

    #[test]
    fn deep_nesting_and_huge_values_are_refused_briefly() {
        let deep = format!("audit:\n  fields: {}{}\n", "[".repeat(160_000), "]".repeat(160_000));
        let e = error(&deep);
        assert!(e.starts_with("/etc/safeclaw/config.yaml:2:") && e.contains("deeper than 64"), "{e}");
        let huge = format!("audit:\n  fields:\n    - {}\n", "x".repeat(900_000));
        let e = error(&huge);
        assert!(e.starts_with("/etc/safeclaw/config.yaml:3:7:") && e.len() < 1024, "{e}");
    }

    #[test]
    fn unset_environment_variables_are_errors() {
        let e = error(
            "audit:\n  destinations:\n    - type: file\n      path: \"${SAFECLAW_TEST_SURELY_UNSET}/a\"\n",
        );
        assert!(e.contains(":4:14:") && e.contains("SAFECLAW_TEST_SURELY_UNSET is not set"), "{e}");
        let e = error(
            "audit:\n  destinations:\n    - type: webhook\n      batchSize: 10\n      url: \"${SAFECLAW_TEST_UNSET_HOOK}\"\n",
        );
        assert!(e.contains(":5:13:") && e.contains("SAFECLAW_TEST_UNSET_HOOK is not set"), "{e}");
    }

    #[test]
    fn env_expansion_rules() {
        std::env::set_var("SAFECLAW_TEST_DIR", "/srv");
        assert_eq!(expand_env("${SAFECLAW_TEST_DIR}/a$$b$c").unwrap(), "/srv/a$b$c");
        assert!(expand_env("${A-B}").is_err());
        assert!(expand_env("${OPEN").is_err());
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("3d"), Ok(Duration::from_secs(3 * 86_400)));
        assert_eq!(parse_duration("1y"), Ok(Duration::from_secs(366 * 86_400)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("99999999999999y").is_err());
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999TB").is_err());
    }

    #[test]
    fn unknown_retention_frameworks_are_refused_with_their_line() {
        let e = parse("audit:\n  retention:\n    default: 3y\n    overrides:\n      hipa: 6y\n").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("hipa") && text.contains(":5:"), "{text}");
    }

    #[test]
    fn forever_anywhere_keeps_everything() {
        let config =
            parse("audit:\n  retention:\n    default: 3y\n    overrides:\n      legal: forever\n").unwrap();
        assert_eq!(config.audit.retention.unwrap().rule(), None);
    }
}

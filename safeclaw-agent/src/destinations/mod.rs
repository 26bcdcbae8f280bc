//! Remote audit destinations (syslog, webhook, s3): the evidence leaves the host. The local chain is the
//! queue; each destination reads it back from its own durable cursor (see `engine`).
pub mod cef;
pub mod cli;
pub mod config;
pub mod engine;
pub mod s3;
pub mod status;
pub mod syslog;
pub mod webhook;

use std::path::{Path, PathBuf};

use crate::config::{Config, Destination};
use engine::{Deliveries, LogSource, Transport};

/// Each remote destination of `config` with its name: its own `name`, else `<type>-<n>` counting the
/// destinations of that type from 1; then `rotation.archiveTo: s3://…` as `archive`, unless an s3
/// destination has that bucket (that destination is the archive then).
pub fn named(config: &Config) -> Vec<(String, Destination)> {
    let mut counts = std::collections::HashMap::new();
    let mut out = Vec::new();
    for destination in &config.audit.destinations {
        let (kind, explicit) = match destination {
            Destination::File { .. } => continue,
            Destination::Syslog(s) => ("syslog", s.name.as_ref()),
            Destination::Webhook(w) => ("webhook", w.name.as_ref()),
            Destination::S3(s) => ("s3", s.name.as_ref()),
        };
        let n = counts.entry(kind).and_modify(|n| *n += 1).or_insert(1);
        out.push((
            explicit.map_or_else(|| format!("{kind}-{n}"), |name| name.0.clone()),
            destination.clone(),
        ));
    }
    if let Some((bucket, prefix)) = archive_bucket(config) {
        let taken = out.iter().any(|(_, d)| matches!(d, Destination::S3(s) if s.bucket.0 == bucket));
        if !taken {
            let archive = config::S3Config {
                name: None,
                bucket: crate::config::EnvString(bucket),
                prefix: Some(config::S3Prefix(prefix)),
                object_lock: false,
                retention_mode: None,
                retention_days: None,
                endpoint: None,
                region: None,
            };
            out.push((ARCHIVE.to_owned(), Destination::S3(archive)));
        }
    }
    out
}

/// Name of the destination `rotation.archiveTo: s3://…` makes when no s3 destination has its bucket.
pub const ARCHIVE: &str = "archive";

/// Bucket and key prefix of `rotation.archiveTo: s3://BUCKET/PREFIX`.
fn archive_bucket(config: &Config) -> Option<(String, String)> {
    let rest = config.audit.rotation.archive_to.as_ref()?.0.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    Some((bucket.to_owned(), prefix.to_owned()))
}

/// The destination whose cursor retention waits for: the one archiving rotated segments, if any.
pub fn archive_name(config: &Config) -> Option<String> {
    let (bucket, _) = archive_bucket(config)?;
    named(config)
        .into_iter()
        .find(|(_, d)| matches!(d, Destination::S3(s) if s.bucket.0 == bucket))
        .map(|(name, _)| name)
}

/// For the writer: how far the archive's cursor has reached, read from its status file.
pub fn archived_through(config: &Config) -> Option<crate::audit::writer::ArchivedThrough> {
    let name = archive_name(config)?;
    Some(std::sync::Arc::new(move |state_dir: &Path| {
        status::Status::load(&config::status_path(state_dir, &name)).ok().flatten().map_or(0, |s| s.delivered)
    }))
}

/// Two destinations sharing a name would share a cursor: refused; so are incomplete lock settings.
pub fn validate(config: &Config) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for (name, destination) in named(config) {
        if !seen.insert(name.clone()) {
            return Err(format!("audit.destinations: two destinations are named {name:?}"));
        }
        if let Destination::S3(s3) = destination {
            s3.lock()?;
        }
    }
    Ok(())
}

/// Builds the transports of every remote destination (reading TLS files, checking S3 settings).
pub fn build(config: &Config) -> anyhow::Result<Vec<engine::Destination>> {
    let mut built = Vec::new();
    for (name, destination) in named(config) {
        let transport: Box<dyn Transport> = match &destination {
            Destination::Syslog(s) => Box::new(syslog::SyslogTransport::new(resolved_syslog(config, s))?),
            Destination::Webhook(w) => Box::new(webhook::WebhookTransport::new(resolved_webhook(config, w))?),
            Destination::S3(s) => {
                let head_interval = config.writer_options(None)?.checkpoint_interval;
                let compression = config.audit.rotation.compress.0;
                Box::new(
                    s3::S3Transport::new(s.clone(), compression, head_interval)
                        .map_err(|e| anyhow::anyhow!("destination {name}: {e}"))?,
                )
            }
            Destination::File { .. } => continue,
        };
        built.push(engine::Destination { name, transport });
    }
    Ok(built)
}

fn resolved_syslog(config: &Config, syslog: &config::SyslogConfig) -> config::SyslogConfig {
    let mut syslog = syslog.clone();
    if let Some(tls) = &mut syslog.tls {
        for path in
            [Some(&mut tls.ca_file), tls.cert_file.as_mut(), tls.key_file.as_mut()].into_iter().flatten()
        {
            path.0 = config.resolve(&path.0);
        }
    }
    syslog
}

fn resolved_webhook(config: &Config, webhook: &config::WebhookConfig) -> config::WebhookConfig {
    let mut webhook = webhook.clone();
    if let Some(ca) = &mut webhook.ca_file {
        ca.0 = config.resolve(&ca.0);
    }
    webhook
}

/// Where cursors live: `destinations/` beside the signed head (the state directory).
pub fn state_dir(head: &Path) -> PathBuf {
    crate::audit::durable::parent_of(head).to_owned()
}

/// Each configured destination's name and status file, for the metrics endpoint.
pub fn status_files(config: &Config, head: &Path) -> Vec<(String, PathBuf)> {
    let dir = state_dir(head);
    named(config)
        .into_iter()
        .map(|(name, _)| {
            let path = config::status_path(&dir, &name);
            (name, path)
        })
        .collect()
}

/// Starts delivery for every destination of `config`, reading the log at `active` with its head at
/// `head`; says which configured destinations this build does not deliver to.
pub fn start(config: &Config, active: &Path, head: &Path) -> anyhow::Result<Deliveries> {
    let destinations = build(config)?;
    if archive_bucket(config).is_none() && config.audit.rotation.archive_to.is_some() {
        tracing::warn!(
            "rotation.archiveTo to a directory is not applied by this build: rotated segments stay local"
        );
    }
    let source = LogSource { active: active.to_owned(), head: head.to_owned() };
    Ok(Deliveries::start(destinations, &source, &state_dir(head))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(text, Path::new("/etc/safeclaw/config.yaml"))
    }

    #[test]
    fn readme_config_with_every_destination_parses() {
        let readme = include_str!("../../../README.md");
        let start =
            readme.find("```yaml\naudit:\n  rotation").expect("README shows the destinations config") + 8;
        let end = start + readme[start..].find("```").unwrap();
        std::env::set_var("COMPLIANCE_WEBHOOK", "https://hooks.example/t/abc");
        std::env::set_var("COMPLIANCE_WEBHOOK_SECRET", "k");
        std::env::set_var("S3_ENDPOINT", "https://s3.eu-central-1.amazonaws.com");
        let config = parse(&readme[start..end]).unwrap();
        let names: Vec<String> = named(&config).into_iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["syslog-1", "webhook-1", "s3-1"]);
    }

    #[test]
    fn archive_to_s3_is_the_s3_destination_of_its_bucket_or_its_own() {
        let own = parse("audit:\n  rotation: {archiveTo: \"s3://arch/logs/\"}\n").unwrap();
        assert_eq!(archive_name(&own).as_deref(), Some(ARCHIVE));
        let shared = parse(
            "audit:\n  rotation: {archiveTo: \"s3://vault/x/\"}\n  destinations:\n    - {type: s3, name: v, bucket: vault}\n",
        )
        .unwrap();
        assert_eq!(archive_name(&shared).as_deref(), Some("v"));
        assert_eq!(named(&shared).len(), 1);
        let directory = parse("audit:\n  rotation: {archiveTo: /srv/archive}\n").unwrap();
        assert_eq!(archive_name(&directory), None);
        let half =
            "audit:\n  destinations:\n    - {type: s3, bucket: b, objectLock: true, retentionDays: 3}\n";
        let error = parse(half).unwrap_err().to_string();
        assert!(error.contains("objectLock needs retentionMode"), "{error}");
        let placeholder = "audit:\n  destinations:\n    - {type: s3, bucket: b, prefix: \"{{week}}/\"}\n";
        let error = parse(placeholder).unwrap_err().to_string();
        assert!(error.contains("unknown placeholder {{week}}"), "{error}");
    }

    #[test]
    fn names_are_unique_and_tls_files_are_checked_before_starting() {
        let twice = "audit:\n  destinations:\n    - {type: syslog, name: a, host: h, port: 1}\n    - {type: webhook, name: a, url: \"http://h/\"}\n";
        let error = parse(twice).unwrap_err().to_string();
        assert!(error.contains("two destinations are named \"a\""), "{error}");
        let tls = "audit:\n  destinations:\n    - type: syslog\n      host: h\n      port: 1\n      protocol: tls\n      tls: {caFile: /nonexistent/ca.pem}\n";
        let error = build(&parse(tls).unwrap()).err().unwrap().to_string();
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
        let no_ca = "audit:\n  destinations:\n    - {type: syslog, host: h, port: 1, protocol: tls}\n";
        let error = build(&parse(no_ca).unwrap()).err().unwrap().to_string();
        assert!(error.contains("needs tls.caFile"), "{error}");
    }
}

//! `safeclaw-agent audit destinations` (each destination's cursor, lag, last success and last error) and
//! `safeclaw-agent audit deliver` (delivery without the daemon, e.g. for a log written elsewhere).
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context;
use serde::Serialize;

use super::config::status_path;
use super::engine::LogSource;
use super::status::Status;
use crate::audit::reader::ChainReader;
use crate::config::Config;

#[derive(clap::Args, Debug)]
pub struct LogArgs {
    /// Config file [default: /etc/safeclaw/config.yaml when it exists].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Active log file [default: the configured log].
    #[arg(long)]
    pub audit_log: Option<PathBuf>,
    /// Directory of the signed head and the cursors, as given to `run --state-dir` [default: the
    /// configured head file's directory].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

impl LogArgs {
    fn resolve(&self) -> anyhow::Result<(Config, LogSource)> {
        let config = Config::load(self.config.as_deref())?;
        let active = config.audit_log_path(self.audit_log.as_deref());
        let head = match &self.state_dir {
            Some(dir) => dir.join("audit.head"),
            None => config.head_path(),
        };
        Ok((config, LogSource { active, head }))
    }
}

#[derive(clap::Args, Debug)]
pub struct DestinationsArgs {
    #[command(flatten)]
    pub log: LogArgs,
    /// One JSON object per destination instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One line of `audit destinations`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    name: String,
    #[serde(flatten)]
    status: Status,
    /// Entries durable locally and not delivered yet.
    lag_entries: u64,
    /// Age of the oldest undelivered entry, in seconds.
    lag_seconds: Option<u64>,
}

pub fn run_status(args: DestinationsArgs) -> anyhow::Result<ExitCode> {
    let (config, source) = args.log.resolve()?;
    let end = source.durable_end().map_err(anyhow::Error::msg)?;
    let state_dir = super::state_dir(&source.head);
    let mut reader = ChainReader::new(&source.active);
    let mut rows = Vec::new();
    for (name, _) in super::named(&config) {
        let status = Status::load(&status_path(&state_dir, &name))?.unwrap_or_default();
        let lag_entries = end.saturating_sub(status.delivered);
        let lag_seconds = if lag_entries == 0 {
            Some(0)
        } else {
            reader.read(status.delivered, end, 1).ok().and_then(|entries| {
                let entry = entries.first()?;
                let value: serde_json::Value = serde_json::from_slice(&entry.line).ok()?;
                let written = crate::audit::clock::parse(value["timestamp"].as_str()?)?;
                Some(SystemTime::now().duration_since(written).map_or(0, |d| d.as_secs()))
            })
        };
        rows.push(Row { name, status, lag_entries, lag_seconds });
    }
    if rows.is_empty() {
        println!("no remote audit destinations are configured");
        return Ok(ExitCode::SUCCESS);
    }
    for row in &rows {
        if args.json {
            println!("{}", serde_json::to_string(row)?);
            continue;
        }
        let s = &row.status;
        let lag_time = row.lag_seconds.map_or("?".into(), |s| format!("{s}s"));
        println!("{} ({})", row.name, if s.target.is_empty() { "never started" } else { &s.target });
        println!("  cursor: {} delivered; lag {} entries, {lag_time}", s.delivered, row.lag_entries);
        println!("  last success: {}", s.last_success.as_deref().unwrap_or("never"));
        if let Some(error) = &s.last_error {
            let state = match (&s.failing_since, s.stuck) {
                (Some(_), true) => "STUCK (the receiver refuses the batch; retried, never skipped)",
                (Some(_), false) => "FAILING",
                (None, _) => "recovered",
            };
            println!("  last error: {error} at {} [{state}]", s.last_error_time.as_deref().unwrap_or("?"));
        }
        if s.lost_to_retention > 0 {
            println!("  entries deleted by retention before delivery: {}", s.lost_to_retention);
        }
    }
    let failing = rows.iter().any(|r| r.status.failing_since.is_some());
    Ok(if failing { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

#[derive(clap::Args, Debug)]
pub struct DeliverArgs {
    #[command(flatten)]
    pub log: LogArgs,
}

/// Delivers until SIGINT or SIGTERM, as the daemon does.
pub fn run_deliver(args: DeliverArgs) -> anyhow::Result<ExitCode> {
    let (config, source) = args.log.resolve()?;
    let deliveries = super::start(&config, &source.active, &source.head)?;
    if deliveries.is_empty() {
        anyhow::bail!("no remote audit destinations are configured");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        anyhow::Ok(())
    })?;
    deliveries.stop();
    Ok(ExitCode::SUCCESS)
}

//! `safeclaw-agent audit …` subcommands: verify, tail, export, pubkey, rotate-key, destinations, deliver,
//! report (in `crate::report`).
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use std::os::unix::fs::DirBuilderExt;

use anyhow::{bail, Context};

use super::export::{export, ExportFormat};
use super::signing::{AuditKey, PublicKey};
use super::tail::{Filter, Style};
use super::verify::{log_files, verify, Acceptance, KeySource, Report, VerifyOptions};
use super::writer::{pending_key_path, AuditWriter};
use crate::config::Config;
use crate::policy::compiled::Effect;

#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Verify an audit log: every hash, link, sequence number, checkpoint signature and the signed head.
    /// Exits 1 naming the first damaged entry.
    Verify(VerifyArgs),
    /// Show entries as they are written, one line each.
    Tail(TailArgs),
    /// Write the entries of a time range as JSON lines or CSV.
    Export(ExportArgs),
    /// Print the public key auditors check signatures with (reads the root-only key).
    Pubkey(ConfigArg),
    /// Change the signing key: a new key is created, and the log records its public key in an entry the
    /// old key signs. Run it with the daemon stopped; give auditors the new key afterwards.
    RotateKey(ConfigArg),
    /// Show each remote destination's cursor, lag, last success and last error (exits 1 if one fails).
    Destinations(crate::destinations::cli::DestinationsArgs),
    /// Deliver the log to the configured remote destinations until SIGTERM, without the daemon.
    Deliver(crate::destinations::cli::DeliverArgs),
    /// A compliance report for a framework and period (PDF, HTML, JSON, or a .zip evidence pack),
    /// computed while the chain is verified; `report verify PACK.zip` checks a pack.
    Report(crate::report::cli::ReportArgs),
}

#[derive(clap::Args, Debug)]
pub struct ConfigArg {
    /// Config file [default: /etc/safeclaw/config.yaml when it exists].
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Segment files, or a directory holding them [default: the configured log].
    pub paths: Vec<PathBuf>,
    /// Trusted public key: `ed25519:<hex>` or a file holding it [default: the configured key's].
    #[arg(long)]
    pub pubkey: Option<String>,
    /// Verify from this sequence on, trusting its link to the entries before.
    #[arg(long)]
    pub from: Option<u64>,
    /// Signed head file [default: the configured one, when verifying the configured log].
    #[arg(long)]
    pub head: Option<PathBuf>,
    /// Accept a recorded incident after looking into it: `head_missing@SEQ` or `tamper_detected@SEQ`
    /// (the entry's sequence), or `no-head` to verify files without a head file (a tail cut after the
    /// last checkpoint cannot be seen then). Repeatable.
    #[arg(long, value_name = "INCIDENT")]
    pub accept: Vec<String>,
    /// Print one JSON document (schema in docs/cli.md) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Compare the host's log and head with the copy an s3 destination stored (`s3://BUCKET/PREFIX`,
    /// PREFIX being the part of the destination's prefix before any placeholder); names the first
    /// difference.
    #[arg(long, value_name = "S3_URL", conflicts_with_all = ["from", "accept", "json"])]
    pub against: Option<String>,
    /// S3 endpoint URL for --against [default: the configured s3 destination's for that bucket, else
    /// AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else AWS].
    #[arg(long, requires = "against")]
    pub endpoint: Option<String>,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(clap::Args, Debug)]
pub struct TailArgs {
    /// Active log file [default: the configured log].
    pub path: Option<PathBuf>,
    /// Keep printing new entries, across rotation.
    #[arg(short, long)]
    pub follow: bool,
    /// How many existing entries to show first.
    #[arg(short = 'n', long, default_value_t = 10)]
    pub lines: usize,
    #[arg(long, value_parser = parse_effect)]
    pub effect: Option<Effect>,
    /// Only entries of this agentId.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only actions matching this pattern (`*` is a wildcard, e.g. 'file.*').
    #[arg(long)]
    pub action: Option<String>,
    /// Only the entries of this agent tool call (its tool.call, tool.result and the kernel's entries
    /// linked to it).
    #[arg(long)]
    pub tool_use: Option<String>,
    /// Print the raw JSON entries.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub check: VerifyFirst,
    #[command(flatten)]
    pub config: ConfigArg,
}

/// `--verify` of tail and export: check the chain before showing entries, and stop at the first
/// broken link (exit 1). Without it, they say on standard error that what they show is unverified.
#[derive(clap::Args, Debug)]
pub struct VerifyFirst {
    /// Verify the chain (as `audit verify` does) and show only the entries before the first damage;
    /// while following, check each new entry's hash and link and stop at the first broken one.
    #[arg(long)]
    pub verify: bool,
    /// Trusted public key for --verify: `ed25519:<hex>` or a file holding it [default: the configured key's].
    #[arg(long, requires = "verify")]
    pub pubkey: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Segment files, or a directory holding them [default: the configured log].
    pub paths: Vec<PathBuf>,
    /// First time included (RFC 3339, or a date).
    #[arg(long)]
    pub since: Option<String>,
    /// First time excluded (RFC 3339, or a date).
    #[arg(long)]
    pub until: Option<String>,
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: ExportFormat,
    /// Output file [default: standard output].
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub check: VerifyFirst,
    #[command(flatten)]
    pub config: ConfigArg,
}

fn parse_effect(text: &str) -> Result<Effect, String> {
    match text {
        "allow" => Ok(Effect::Allow),
        "deny" => Ok(Effect::Deny),
        "audit" => Ok(Effect::Audit),
        _ => Err(format!("{text:?}: expected allow, deny or audit")),
    }
}

pub fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Verify(args) => run_verify(args),
        AuditCommand::Tail(args) => run_tail(args),
        AuditCommand::Export(args) => run_export(args),
        AuditCommand::RotateKey(args) => run_rotate_key(&args),
        AuditCommand::Destinations(args) => crate::destinations::cli::run_status(args),
        AuditCommand::Deliver(args) => crate::destinations::cli::run_deliver(args),
        AuditCommand::Report(args) => crate::report::cli::run(args),
        AuditCommand::Pubkey(args) => {
            let config = load_config(&args)?;
            let key = AuditKey::load(&config.key_path())
                .context("the key is created when the daemon first starts; run this as root on its host")?;
            println!("{}", key.public().to_text());
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) fn load_config(arg: &ConfigArg) -> anyhow::Result<Config> {
    Ok(Config::load(arg.config.as_deref())?)
}

/// The files named on the command line (a directory stands for its segment files), or the configured log.
pub(crate) fn resolve_files(paths: &[PathBuf], config: &Config) -> anyhow::Result<Vec<PathBuf>> {
    if paths.is_empty() {
        let active = config.audit_log_path(None);
        let files = log_files(&active).with_context(|| format!("listing {}", active.display()))?;
        if files.is_empty() {
            bail!("no audit log at {}", active.display());
        }
        return Ok(files);
    }
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            files.extend(segment_files_in(path)?);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// Log files in `dir`: `*.jsonl`, `*.jsonl.zst`, `*.jsonl.gz`.
fn segment_files_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for dirent in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = dirent?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if [".jsonl", ".jsonl.zst", ".jsonl.gz"].iter().any(|ext| name.ends_with(ext)) && path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        bail!("{}: no audit log files (*.jsonl, *.jsonl.zst, *.jsonl.gz)", dir.display());
    }
    Ok(files)
}

pub(crate) fn trusted_key(arg: Option<&str>, config: &Config) -> anyhow::Result<Option<PublicKey>> {
    if let Some(text) = arg {
        if let Some(key) = PublicKey::parse(text) {
            return Ok(Some(key));
        }
        let contents = std::fs::read_to_string(text)
            .with_context(|| format!("--pubkey {text}: neither a key nor a readable file"))?;
        return PublicKey::parse(&contents)
            .map(Some)
            .with_context(|| format!("{text}: not an `ed25519:<hex>` public key"));
    }
    Ok(AuditKey::load(&config.key_path()).ok().map(|k| k.public()))
}

/// `--accept no-head`: verify without a head file.
const ACCEPT_NO_HEAD: &str = "no-head";

fn run_verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    if let Some(url) = &args.against {
        return run_verify_against(&args, url, &config);
    }
    let files = resolve_files(&args.paths, &config)?;
    let head_path = args.head.clone().or_else(|| args.paths.is_empty().then(|| config.head_path()));
    let no_head = args.accept.iter().any(|a| a == ACCEPT_NO_HEAD);
    let accept = args
        .accept
        .iter()
        .filter(|a| *a != ACCEPT_NO_HEAD)
        .map(|a| a.parse::<Acceptance>().map_err(|e| anyhow::anyhow!("--accept {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if head_path.is_none() && !no_head {
        println!(
            "FAILED at the log: no head file to check: a tail cut after the last checkpoint would not show; \
             pass --head FILE, or --accept no-head"
        );
        return Ok(ExitCode::from(1));
    }
    let opts = VerifyOptions {
        trusted_key: trusted_key(args.pubkey.as_deref(), &config)?,
        head_path,
        from: args.from,
        accept,
    };
    let total: u64 = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    let bar = progress_bar(total);
    let counter = bar.clone();
    let report = verify(&files, &opts, Arc::new(move |n| counter.inc(n)));
    bar.finish_and_clear();
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            println!("FAILED at the log: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    if args.json {
        println!("{}", report_json(&report));
    } else {
        print_report(&report);
    }
    if no_head && report.ok() && !args.json {
        println!(
            "no head file checked (--accept no-head): a tail cut after the last checkpoint would not show"
        );
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `audit verify --against s3://…`: exit 0 when the host's copy and the bucket's agree, 1 naming the
/// first difference.
fn run_verify_against(args: &VerifyArgs, url: &str, config: &Config) -> anyhow::Result<ExitCode> {
    use crate::destinations::s3::{against, client::Client};
    let (bucket, prefix) = against::parse_url(url)?;
    let configured = crate::destinations::named(config).into_iter().find_map(|(_, d)| match d {
        crate::config::Destination::S3(s) if s.bucket.0 == bucket => Some(s),
        _ => None,
    });
    let endpoint =
        args.endpoint.clone().or_else(|| configured.as_ref().and_then(|s| s.endpoint.clone()).map(|e| e.0));
    let region = configured.as_ref().and_then(|s| s.region.clone()).map(|r| r.0);
    let client = Client::new(&bucket, endpoint.as_deref(), region.as_deref()).map_err(anyhow::Error::msg)?;
    let active = match args.paths.as_slice() {
        [] => config.audit_log_path(None),
        [one] => one.clone(),
        _ => bail!("--against takes the active log file (or none for the configured log)"),
    };
    let head = args.head.clone().unwrap_or_else(|| config.head_path());
    let key = trusted_key(args.pubkey.as_deref(), config)?;
    let scratch = tempfile_dir()?;
    let result = against::compare(&client, &prefix, &active, &head, key.as_ref(), scratch.path());
    let comparison = match result {
        Ok(comparison) => comparison,
        Err(e) => {
            println!("FAILED: {e:#}");
            return Ok(ExitCode::from(1));
        }
    };
    if let Some((_, difference)) = &comparison.difference {
        println!("DIFFERENT from {url}: {difference}");
        return Ok(ExitCode::from(1));
    }
    println!(
        "OK: {} segments ({} entries) equal the bucket's copy at {url}; the host's head reaches the bucket's newest          head ({})",
        comparison.segments,
        comparison.entries_compared,
        comparison.bucket_head.map_or("none".into(), |s| format!("{s} entries"))
    );
    if key.is_none() {
        println!("no trusted key: signatures in the bucket were checked against the key the log names");
    }
    Ok(ExitCode::SUCCESS)
}

/// A private directory for downloads, removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> anyhow::Result<ScratchDir> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let name = format!("safeclaw-against-{}", crate::audit::chain::hex_string(&random));
    let dir = std::env::temp_dir().join(name);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    Ok(ScratchDir(dir))
}

fn run_rotate_key(args: &ConfigArg) -> anyhow::Result<ExitCode> {
    let config = load_config(args)?;
    let opts = config.writer_options(None)?;
    let key_path = opts.key_path.clone();
    let old = AuditKey::load(&key_path).context("rotating keys needs the current key")?;
    let pending = pending_key_path(&key_path);
    let mut writer = AuditWriter::open(opts).context("opening the audit log (is the daemon stopped?)")?;
    // A pending key from an interrupted rotation is used again rather than replaced.
    let new = AuditKey::load_or_create(&pending)?;
    let recorded = writer.rotate_key()?;
    writer.close()?;
    anyhow::ensure!(recorded == new.public(), "the log recorded another key than the one created");
    println!("old key: {}", old.public().to_text());
    println!("new key: {}", recorded.to_text());
    println!("give auditors the new key; the log records it, signed by the old key");
    Ok(ExitCode::SUCCESS)
}

/// A byte progress bar on standard error, shown for logs over 64 MiB when it is a terminal.
fn progress_bar(total: u64) -> indicatif::ProgressBar {
    if total < 64 << 20 || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("verifying {bar:40} {bytes}/{total_bytes} ({eta} left)")
    {
        bar.set_style(style);
    }
    bar
}

fn print_report(report: &Report) {
    let range = match (report.first_sequence, report.last_sequence) {
        (Some(first), Some(last)) => format!(" (sequence {first}..={last})"),
        _ => String::new(),
    };
    let key = match report.key_source {
        Some(KeySource::Trusted) => "trusted key",
        Some(KeySource::Embedded) => {
            "the key named in the log itself (pass --pubkey to also rule out a regenerated log)"
        }
        None => "no key",
    };
    match &report.failure {
        None => println!(
            "OK: {} entries{range} in {} files; {} checkpoints checked against {key}; signed through entry {}",
            report.entries,
            report.files,
            report.checkpoints,
            report.signed_through.map_or("-".into(), |s| s.to_string())
        ),
        Some(failure) => {
            let at = failure.sequence.map_or("the log".into(), |s| format!("entry {s}"));
            let place = failure
                .location
                .as_ref()
                .map_or(String::new(), |l| format!(" ({} line {})", l.file.display(), l.line));
            println!("FAILED at {at}{place}: {}", failure.damage);
            println!("{} entries checked before it{range}", report.entries);
        }
    }
    if report.gaps > 0 {
        println!(
            "recorded gaps: {} ({} kernel events could not be recorded; each was denied)",
            report.gaps, report.lost_kernel_events
        );
    }
    for accepted in &report.accepted {
        println!("accepted by the operator: {:?} at entry {}", accepted.incident, accepted.sequence);
    }
    if report.partial_line_bytes > 0 {
        println!(
            "ignored: {} bytes after the last complete line (an interrupted write; the writer cuts it at restart)",
            report.partial_line_bytes
        );
    }
    if report.retention_deletions > 0 {
        println!("segments deleted by retention (signed entries): {}", report.retention_deletions);
    }
}

/// `audit verify --json`: the report with stable camelCase names; `failure` is null for a sound log.
fn report_json(report: &Report) -> serde_json::Value {
    let failure = report.failure.as_ref().map(|failure| {
        serde_json::json!({
            "sequence": failure.sequence,
            "file": failure.location.as_ref().map(|l| l.file.display().to_string()),
            "line": failure.location.as_ref().map(|l| l.line),
            "kind": damage_kind(&failure.damage),
            "message": failure.damage.to_string(),
        })
    });
    serde_json::json!({
        "ok": report.ok(),
        "entries": report.entries,
        "firstSequence": report.first_sequence,
        "lastSequence": report.last_sequence,
        "files": report.files,
        "checkpoints": report.checkpoints,
        "signedThrough": report.signed_through,
        "keySource": match report.key_source {
            Some(KeySource::Trusted) => Some("trusted"),
            Some(KeySource::Embedded) => Some("embedded"),
            None => None,
        },
        "gaps": report.gaps,
        "lostKernelEvents": report.lost_kernel_events,
        "retentionDeletions": report.retention_deletions,
        "failure": failure,
    })
}

/// The damage's variant in kebab case (`ContentChanged` is `content-changed`): a name scripts can match.
fn damage_kind(damage: &super::verify::Damage) -> String {
    let debug = format!("{damage:?}");
    let variant = debug.split(|c: char| !c.is_ascii_alphanumeric()).next().unwrap_or_default();
    let mut kind = String::new();
    for (i, c) in variant.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            kind.push('-');
        }
        kind.push(c.to_ascii_lowercase());
    }
    kind
}

/// Under `--verify`: the sequence of the first damaged entry (`Some(0)` when it has none), after saying
/// what is wrong on standard error; `None` for a sound log. Without it, the unverified note.
fn damage_before_showing(
    check: &VerifyFirst,
    files: &[PathBuf],
    config: &Config,
) -> anyhow::Result<Option<u64>> {
    if !check.verify {
        eprintln!(
            "safeclaw-agent: showing entries as read, NOT verified (pass --verify, or run `audit verify`)"
        );
        return Ok(None);
    }
    let opts =
        VerifyOptions { trusted_key: trusted_key(check.pubkey.as_deref(), config)?, ..Default::default() };
    let report = verify(files, &opts, Arc::new(|_| {}))?;
    match &report.failure {
        None => Ok(None),
        // A tail the writer has not signed yet is not damage: its entries are chained, not yet signed.
        Some(failure) if matches!(failure.damage, super::verify::Damage::UnsignedTail { .. }) => {
            eprintln!("safeclaw-agent: verified; {}", failure.damage);
            Ok(None)
        }
        Some(failure) => {
            let at = failure.sequence.unwrap_or(0);
            eprintln!(
                "safeclaw-agent: verification FAILED at entry {at}: {}; showing only the entries before it",
                failure.damage
            );
            Ok(Some(at))
        }
    }
}

fn run_tail(args: TailArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    let active = args.path.clone().unwrap_or_else(|| config.audit_log_path(None));
    let segments = if args.check.verify {
        log_files(&active).with_context(|| format!("listing {}", active.display()))?
    } else {
        Vec::new()
    };
    let damaged = damage_before_showing(&args.check, &segments, &config)?;
    let filter = Filter {
        effect: args.effect,
        agent: args.agent,
        action: args.action,
        before_sequence: damaged,
        tool_use: args.tool_use,
    };
    let stdout = std::io::stdout();
    let color = stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let style = if args.json { Style::Json } else { Style::Text { color } };
    let mut out = stdout.lock();
    let follow = args.follow && damaged.is_none();
    super::tail::run(&active, &filter, args.lines, follow, style, args.check.verify, &mut out)
        .with_context(|| format!("tailing {}", active.display()))?;
    Ok(if damaged.is_some() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn run_export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    let files = resolve_files(&args.paths, &config)?;
    let files = super::verify::order_by_first_sequence(&files)?;
    let time = |text: &Option<String>, flag: &str| -> anyhow::Result<_> {
        text.as_deref()
            .map(|t| {
                super::clock::parse(t)
                    .with_context(|| format!("{flag} {t:?}: expected RFC 3339 or YYYY-MM-DD"))
            })
            .transpose()
    };
    let (since, until) = (time(&args.since, "--since")?, time(&args.until, "--until")?);
    let damaged = damage_before_showing(&args.check, &files, &config)?;
    let count = match &args.output {
        Some(path) => {
            let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
            export(&files, since, until, damaged, args.format, &mut std::io::BufWriter::new(file))?
        }
        None => export(&files, since, until, damaged, args.format, &mut std::io::stdout().lock())?,
    };
    eprintln!("exported {count} entries");
    Ok(if damaged.is_some() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

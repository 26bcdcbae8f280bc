//! `safeclaw-agent audit report …`: a framework's report for a period as PDF, HTML, JSON or an evidence
//! pack, and `audit report verify PACK.zip`.
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};

use super::aggregate::{Aggregator, ReportData, Request, Spill, Verdict};
use super::catalogue::Framework;
use super::period::Period;
use crate::audit::cli::{load_config, resolve_files, trusted_key, ConfigArg};
use crate::audit::signing::{AuditKey, HeadFile};
use crate::audit::verify::{verify_visiting, VerifyOptions};

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub command: Option<ReportCommand>,
    #[arg(long, required = true)]
    pub framework: Option<Framework>,
    /// 2026-Q1, 2026-02, 2026, or 2026-01-01:2026-02-13 (both days included), in UTC.
    #[arg(long, required = true)]
    pub period: Option<String>,
    /// Report file: .pdf, .html, .json, or .zip for the evidence pack.
    #[arg(long, short, required = true)]
    pub output: Option<PathBuf>,
    /// List every access under rules tagged phi or hipaa.
    #[arg(long)]
    pub include_phi_access: bool,
    /// List every checkpoint of the period in the chain verification section.
    #[arg(long)]
    pub include_chain_verification: bool,
    /// Only attempts and sessions of this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// Segment files, or a directory holding them [default: the configured log].
    pub paths: Vec<PathBuf>,
    /// Trusted public key: `ed25519:<hex>` or a file holding it [default: the configured key's].
    #[arg(long)]
    pub pubkey: Option<String>,
    /// Signed head file [default: the configured one, when reporting on the configured log].
    #[arg(long)]
    pub head: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(clap::Subcommand, Debug)]
pub enum ReportCommand {
    /// Check an evidence pack without the host: signature, every file's hash, and the chain.
    Verify {
        pack: PathBuf,
        /// The log's public key as the auditor holds it [default: the key the pack names].
        #[arg(long)]
        pubkey: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Pdf,
    Html,
    Json,
    Pack,
}

impl Output {
    fn of(path: &Path) -> anyhow::Result<Output> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("pdf") => Ok(Output::Pdf),
            Some("html" | "htm") => Ok(Output::Html),
            Some("json") => Ok(Output::Json),
            Some("zip") => Ok(Output::Pack),
            _ => bail!("--output {}: name a .pdf, .html, .json or .zip file", path.display()),
        }
    }
}

/// Verifies `files` and computes the report in the same pass.
pub fn compute(
    files: &[PathBuf],
    opts: &VerifyOptions,
    request: Request,
    spill: Spill<'_>,
) -> anyhow::Result<ReportData> {
    let mut aggregator = Aggregator::new(request, spill);
    let report = verify_visiting(files, opts, Arc::new(|_| {}), &mut aggregator)?;
    let head = opts.head_path.as_deref().and_then(|p| HeadFile::read(p).ok().flatten());
    let names = files
        .iter()
        .map(|f| f.file_name().map_or_else(|| f.display().to_string(), |n| n.to_string_lossy().into_owned()))
        .collect();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "unknown".into(), |h| h.trim().to_string());
    Ok(aggregator.finish(&report, head.as_ref(), host, names)?)
}

pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    if let Some(ReportCommand::Verify { pack, pubkey }) = args.command {
        let trusted = pubkey
            .as_deref()
            .map(|k| trusted_key(Some(k), &crate::config::Config::default()))
            .transpose()?
            .flatten();
        return match super::pack::verify(&pack, trusted) {
            Ok(checked) => {
                println!(
                    "OK: {} files match manifest.json, signed by {}; {}; report verdict {:?}",
                    checked.files,
                    if checked.key_trusted {
                        "the trusted key"
                    } else {
                        "the key the pack names (pass --pubkey to check it is the log's)"
                    },
                    checked.chain,
                    checked.verdict
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                println!("FAILED: {e:#}");
                Ok(ExitCode::from(1))
            }
        };
    }
    let (Some(framework), Some(period), Some(output)) = (args.framework, args.period, args.output) else {
        bail!("--framework, --period and --output are required");
    };
    let period = Period::parse(&period)?;
    let kind = Output::of(&output)?;
    let config = load_config(&args.config)?;
    let files = resolve_files(&args.paths, &config)?;
    let head_path = args.head.clone().or_else(|| args.paths.is_empty().then(|| config.head_path()));
    let request = Request {
        framework,
        period,
        agent: args.agent,
        include_phi_access: args.include_phi_access,
        include_chain_verification: args.include_chain_verification,
    };
    let data = if kind == Output::Pack {
        let key = AuditKey::load(&config.key_path()).context(
            "the evidence pack's manifest is signed with the log's key: run this as root on the log's host, or \
             point --config at a config whose keyFile is that key",
        )?;
        if let Some(given) = trusted_key(args.pubkey.as_deref(), &config)? {
            if given != key.public() {
                bail!("--pubkey is not the public key of the configured signing key");
            }
        }
        super::pack::write(&files, head_path.as_deref(), &key, request, &output)?
    } else {
        let opts = VerifyOptions {
            trusted_key: trusted_key(args.pubkey.as_deref(), &config)?,
            head_path,
            ..Default::default()
        };
        let data = compute(&files, &opts, request, Spill::default())?;
        let document = super::document::Document::of(&data);
        let bytes = match kind {
            Output::Pdf => super::pdf::render(&document)?,
            Output::Html => super::html::render(&document).into_bytes(),
            _ => serde_json::to_vec_pretty(&data)?,
        };
        std::fs::write(&output, bytes).with_context(|| format!("writing {}", output.display()))?;
        data
    };
    let v = &data.verification;
    match &v.failure {
        None => println!(
            "{}: chain PASSED ({} entries); {} attempts, {} denied in {}",
            output.display(),
            v.entries_checked,
            data.activity.attempts,
            data.denials.total,
            data.scope.period.as_ref().map_or("", |p| p.label.as_str())
        ),
        Some(failure) => println!("{}: chain {failure}", output.display()),
    }
    Ok(if v.verdict == Verdict::Passed { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

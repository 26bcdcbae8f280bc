//! `safeclaw-agent config check [FILE]`: validates a config as the daemon would read it (including the
//! destinations' TLS files), without starting anything.
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Config;

#[derive(clap::Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate a config file; errors name file, line and cause [default: /etc/safeclaw/config.yaml].
    Check { file: Option<PathBuf> },
}

pub fn run(cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    let ConfigCommand::Check { file } = cmd;
    let path = file.unwrap_or_else(|| PathBuf::from(crate::cli::DEFAULT_CONFIG));
    let config = Config::load(Some(&path))?;
    config.writer_options(None)?;
    let built = crate::destinations::build(&config)?;
    let names: Vec<String> =
        built.into_iter().map(|d| format!("{} ({})", d.name, d.transport.target())).collect();
    println!("OK: {}: audit log {}", path.display(), config.audit_log_path(None).display());
    for name in names {
        println!("  destination {name}");
    }
    if let Some(name) = crate::destinations::archive_name(&config) {
        println!("  rotation.archiveTo: by destination {name}; retention deletes only what it stored");
    } else if config.audit.rotation.archive_to.is_some() {
        println!("  rotation.archiveTo: a directory, which this build does not archive to");
    }
    Ok(ExitCode::SUCCESS)
}

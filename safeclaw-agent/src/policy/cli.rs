//! `safeclaw-agent policy …` subcommands.
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum PolicyCommand {
    /// Validate a policy file.
    Check { file: std::path::PathBuf },
}

pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Check { file } => {
            anyhow::bail!("policy check {}: not implemented yet", file.display())
        }
    }
}

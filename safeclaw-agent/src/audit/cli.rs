//! `safeclaw-agent audit …` subcommands.
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Verify an audit log.
    Verify { paths: Vec<std::path::PathBuf> },
}

pub fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Verify { .. } => anyhow::bail!("audit verify: not implemented yet"),
    }
}

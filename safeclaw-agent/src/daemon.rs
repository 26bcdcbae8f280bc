//! `safeclaw-agent run`: the enforcement daemon.
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Name of the agent cgroup under the cgroup2 root (created if missing).
    #[arg(long, default_value = "agents")]
    pub cgroup: String,
    /// Policy file.
    #[arg(long, default_value = crate::cli::DEFAULT_POLICY)]
    pub policy: PathBuf,
    /// Audit log file.
    #[arg(long)]
    pub audit_log: Option<PathBuf>,
}

pub fn run(_args: RunArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("run: not implemented yet")
}

//! `safeclaw-agent doctor`: checks each prerequisite for enforcement.
use std::process::ExitCode;

pub fn run() -> anyhow::Result<ExitCode> {
    anyhow::bail!("doctor: not implemented yet")
}

//! Command-line surface: one subcommand per responsibility, each parsed here and run by its module.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "safeclaw-agent",
    version,
    about = "Kernel-enforced policy and a tamper-evident audit trail for AI agents"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Load the BPF LSM programs, enforce the policy on the agent cgroup and write the audit log.
    Run(crate::daemon::RunArgs),
    /// Check each prerequisite for enforcement and say how to fix what fails.
    Doctor(crate::doctor::DoctorArgs),
    /// Check, test and explain policies.
    #[command(subcommand)]
    Policy(crate::policy::cli::PolicyCommand),
    /// Verify, follow and export the audit trail.
    #[command(subcommand)]
    Audit(crate::audit::cli::AuditCommand),
    /// Run an agent command in its own session cgroup, as its user, registered with the daemon.
    Exec(crate::launcher::ExecArgs),
    /// List the live agent sessions.
    Sessions(crate::sessions::SessionsArgs),
    /// Stop the daemon deliberately: audited, then every program detached and unpinned.
    Stop(crate::control::StopArgs),
    /// Validate the agent's config file.
    #[command(subcommand)]
    Config(crate::config_cli::ConfigCommand),
    /// Run by Claude Code or Codex for each tool call: asks the daemon and answers in the CLI's format.
    Hook(crate::tools::hook::HookArgs),
    /// Install the tool-call hooks into an agent CLI's settings.
    #[command(subcommand)]
    Hooks(crate::tools::install::HooksCommand),
    /// Write a starting /etc/safeclaw/ (policy.yaml and config.yaml) and print the next steps.
    Init(crate::init::InitArgs),
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    Completions(crate::cli_docs::CompletionsArgs),
    /// Write the man pages (used by packaging).
    #[command(hide = true)]
    Manpages(crate::cli_docs::ManpagesArgs),
}

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => crate::daemon::run(args),
        Command::Doctor(args) => crate::doctor::run(args),
        Command::Policy(cmd) => crate::policy::cli::run(cmd),
        Command::Audit(cmd) => crate::audit::cli::run(cmd),
        Command::Exec(args) => crate::launcher::run(args),
        Command::Sessions(args) => crate::sessions::run(args),
        Command::Stop(args) => crate::control::stop(args),
        Command::Config(cmd) => crate::config_cli::run(cmd),
        Command::Hook(args) => crate::tools::hook::run(args),
        Command::Hooks(cmd) => crate::tools::install::run(cmd),
        Command::Init(args) => crate::init::run(args),
        Command::Completions(args) => crate::cli_docs::completions(args),
        Command::Manpages(args) => crate::cli_docs::manpages(args),
    }
}

/// Default policy file when `--policy` is not given.
pub const DEFAULT_POLICY: &str = "/etc/safeclaw/policy.yaml";
/// Default config file when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/safeclaw/config.yaml";

pub fn default_policy() -> PathBuf {
    PathBuf::from(DEFAULT_POLICY)
}

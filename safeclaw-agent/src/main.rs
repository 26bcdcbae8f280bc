//! `safeclaw-agent`: entry point; parses the command line and hands off to the subcommand.
use clap::Parser as _;
use safeclaw_agent::cli;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SAFECLAW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("safeclaw-agent: error: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}

//! `safeclaw-agent stop` and `safeclaw-agent policy reload`: asking the running daemon, over its
//! root-only socket, to unload deliberately or to load its policy file again.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use crate::identity;
use crate::identity::client::{ClientError, DaemonConnection};

#[derive(clap::Args, Debug)]
pub struct StopArgs {
    /// The daemon's socket [default: $SAFECLAW_SOCKET, else /run/safeclaw/agent.sock].
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

/// Stops the daemon: it writes the stop (and who asked) to the audit log, detaches every program
/// and removes its pins, so nothing enforces afterwards.
pub fn stop(args: StopArgs) -> anyhow::Result<ExitCode> {
    call(args.socket.as_deref(), |mut daemon| async move { daemon.stop().await })?;
    println!("safeclaw daemon stopped: programs detached and unpinned");
    Ok(ExitCode::SUCCESS)
}

/// Reloads the daemon's policy file; a refused policy leaves the old one enforcing (exit 1).
pub fn reload(socket: Option<&Path>) -> anyhow::Result<ExitCode> {
    match call(socket, |mut daemon| async move { daemon.reload().await }) {
        Ok(hash) => {
            println!("policy reloaded: {hash} is enforcing");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => match e.downcast_ref::<ClientError>() {
            Some(ClientError::Refused(reason)) => {
                eprintln!("reload refused, the previous policy is still enforcing:\n{reason}");
                Ok(ExitCode::from(1))
            }
            _ => Err(e),
        },
    }
}

fn call<T, F>(socket: Option<&Path>, request: impl FnOnce(DaemonConnection) -> F) -> anyhow::Result<T>
where
    F: std::future::Future<Output = Result<T, ClientError>>,
{
    let socket = identity::socket_path(socket);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(async { request(DaemonConnection::connect(&socket).await?).await })?)
}

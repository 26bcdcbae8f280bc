//! `run --ebpf-log LEVEL`: the eBPF programs' aya-log records, forwarded to the daemon's tracing log.
//! The level is fixed at load (the programs' read-only `AYA_LOG_LEVEL`); without the flag it is 0 and
//! the verifier prunes every logging branch, so the programs pay nothing for diagnostics.
use aya::Ebpf;
use tokio::io::unix::AsyncFd;

/// The global the eBPF side (aya-log-ebpf) compares each record's level against.
pub const LEVEL_GLOBAL: &str = "AYA_LOG_LEVEL";

/// The least important eBPF records to forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum EbpfLogLevel {
    Error = 1,
    Warn = 2,
    Info = 3,
    /// Denials and the bounds and table misses behind them.
    Debug = 4,
    /// Every in-scope decision too.
    Trace = 5,
}

/// The value of `AYA_LOG_LEVEL` for `level` (0: nothing is logged).
pub fn level_byte(level: Option<EbpfLogLevel>) -> u8 {
    level.map_or(0, |level| level as u8)
}

/// Hands each record to tracing under the target `ebpf`, at its own level except that debug and
/// trace records come out at info: asking for them with `--ebpf-log` is the filter, and the
/// daemon's default `SAFECLAW_LOG=info` must not drop them again.
struct ToTracing;

impl log::Log for ToTracing {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let origin = record.module_path().unwrap_or("ebpf");
        match record.level() {
            log::Level::Error => tracing::error!(target: "ebpf", "{origin}: {}", record.args()),
            log::Level::Warn => tracing::warn!(target: "ebpf", "{origin}: {}", record.args()),
            _ => tracing::info!(target: "ebpf", "{origin}: {}", record.args()),
        }
    }

    fn flush(&self) {}
}

/// Starts forwarding the records of `ebpf`'s programs on the current tokio runtime, for as long as
/// it runs. Takes the object's log ring, so it is called once, after the programs are loaded.
pub fn forward(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let logger = aya_log::EbpfLogger::init_with_logger(ebpf, ToTracing)
        .context("cannot read the eBPF programs' log ring")?;
    // SAFETY: the logger owns its ring map's fd and keeps it open, unchanged, for as long as it
    // lives, which is as long as the AsyncFd holding it.
    let mut logger = unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
        .map_err(std::io::Error::from)
        .context("cannot poll the eBPF programs' log ring")?;
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = logger.readable_mut().await else {
                tracing::warn!("the eBPF log ring can no longer be polled; eBPF diagnostics stop");
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
    Ok(())
}

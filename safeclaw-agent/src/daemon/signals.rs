//! The daemon's stop and reload signals (SIGTERM, SIGINT, SIGHUP), read from a signalfd with their
//! sender, so that one from inside an agent session — by `kill`, or as SIGIO through a file's
//! F_SETOWN/F_SETSIG, which names no sender at all — is refused instead of obeyed.
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use tokio::io::unix::AsyncFd;

use crate::identity::Requester;

/// The signals the daemon acts on.
const HANDLED: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];

/// Blocks the handled signals in the calling thread, and so in every thread it creates later: from
/// then on they wait in the kernel for the signalfd. Call before the runtime starts its threads.
pub fn block() -> anyhow::Result<()> {
    handled().thread_block().context("cannot block SIGTERM, SIGINT and SIGHUP")
}

fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for signal in HANDLED {
        set.add(signal);
    }
    set
}

/// What a signal asks of the daemon, once its sender is known to be outside every agent session.
#[derive(Debug, PartialEq, Eq)]
pub enum Asked {
    /// SIGTERM or SIGINT: end the sessions and stop. The text says who sent it.
    Stop(String),
    /// SIGHUP: reload the policy.
    Reload(String),
    /// Not obeyed: the signal, its sender's pid (0: none named) and why.
    Refused { signal: u32, sender_pid: u32, reason: String },
}

/// The handled signals as they arrive (they must be blocked first: [`block`]).
pub struct DaemonSignals {
    fd: AsyncFd<SignalFd>,
    agents: PathBuf,
}

impl DaemonSignals {
    pub fn new(agents: &Path) -> anyhow::Result<Self> {
        let fd = SignalFd::with_flags(&handled(), SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .context("cannot create a signalfd")?;
        // SAFETY: the SignalFd owns its descriptor and keeps it open, unchanged, for as long as it lives.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("cannot poll the signalfd: {e}"))?;
        Ok(DaemonSignals { fd, agents: agents.to_path_buf() })
    }

    /// The next signal and what it asks.
    pub async fn next(&mut self) -> anyhow::Result<Asked> {
        loop {
            let mut ready = self.fd.readable().await.context("cannot poll the signalfd")?;
            match ready.get_inner().read_signal().context("cannot read the signalfd")? {
                Some(info) => return Ok(judge(&info, &self.agents)),
                None => ready.clear_ready(),
            }
        }
    }
}

/// A signal is obeyed only when a process outside the agent cgroup sent it, or the kernel did on
/// behalf of a terminal (Ctrl-C in the daemon's own terminal). Everything else is refused on doubt.
fn judge(info: &libc::signalfd_siginfo, agents: &Path) -> Asked {
    let signo = info.ssi_signo;
    let name = Signal::try_from(signo as i32).map_or_else(|_| format!("signal {signo}"), |s| s.to_string());
    let refused = |sender_pid: u32, reason: String| Asked::Refused { signal: signo, sender_pid, reason };
    let sender = match info.ssi_code {
        libc::SI_KERNEL => Ok(format!("{name} from the kernel (a terminal)")),
        libc::SI_USER | libc::SI_TKILL | libc::SI_QUEUE => match i32::try_from(info.ssi_pid) {
            Ok(0) | Err(_) => Err((
                0,
                format!(
                    "{name} from a process the daemon cannot see (another pid namespace): refused on doubt"
                ),
            )),
            Ok(pid) => match crate::cgroup::process_is_in(pid, agents) {
                Ok(false) => Ok(format!("{name} from {}", Requester::of_pid(Some(pid)))),
                Ok(true) => Err((
                    info.ssi_pid,
                    format!("{name} from {}, inside the agent cgroup", Requester::of_pid(Some(pid))),
                )),
                Err(e) => Err((
                    info.ssi_pid,
                    format!("{name} from pid {pid}, which cannot be placed ({e}): refused on doubt"),
                )),
            },
        },
        code if code > 0 => Err((
            0,
            format!(
                "{name} delivered as SIGIO (si_code {code}) by a file's owner setting (F_SETOWN/F_SETSIG), \
                 not sent by a process"
            ),
        )),
        code => Err((
            info.ssi_pid,
            format!("{name} with si_code {code}, not sent by a process: refused on doubt"),
        )),
    };
    match sender {
        Ok(who) if signo == Signal::SIGHUP as u32 => Asked::Reload(who),
        Ok(who) => Asked::Stop(who),
        Err((pid, reason)) => refused(pid, reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(signo: Signal, code: i32, pid: u32) -> libc::signalfd_siginfo {
        // SAFETY: signalfd_siginfo is plain old data; all-zero is a valid value.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        info.ssi_signo = signo as u32;
        info.ssi_code = code;
        info.ssi_pid = pid;
        info
    }

    #[test]
    fn only_signals_sent_from_outside_the_agent_cgroup_are_obeyed() {
        let own_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let own = own_cgroup.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        let mount = crate::cgroup::find_mount().unwrap();
        let inside = mount.path.join(own.trim_start_matches('/'));
        let elsewhere = mount.path.join("safeclaw-no-such-agents");
        let me = std::process::id();

        assert!(matches!(judge(&info(Signal::SIGTERM, libc::SI_USER, me), &elsewhere), Asked::Stop(_)));
        assert!(matches!(judge(&info(Signal::SIGHUP, libc::SI_QUEUE, me), &elsewhere), Asked::Reload(_)));
        assert!(matches!(judge(&info(Signal::SIGINT, libc::SI_KERNEL, 0), &inside), Asked::Stop(_)));
        let refused = |asked: Asked| match asked {
            Asked::Refused { reason, .. } => reason,
            other => panic!("obeyed: {other:?}"),
        };
        let reason = refused(judge(&info(Signal::SIGTERM, libc::SI_TKILL, me), &inside));
        assert!(reason.contains("inside the agent cgroup"), "{reason}");
        // SIGIO's codes are POLL_IN (1) and up, with no sender.
        let reason = refused(judge(&info(Signal::SIGTERM, 1, 0), &elsewhere));
        assert!(reason.contains("F_SETOWN/F_SETSIG"), "{reason}");
        let reason = refused(judge(&info(Signal::SIGTERM, libc::SI_USER, 0), &elsewhere));
        assert!(reason.contains("cannot see"), "{reason}");
        let reason = refused(judge(&info(Signal::SIGTERM, libc::SI_USER, 0x3fff_fff0), &elsewhere));
        assert!(reason.contains("refused on doubt"), "a vanished sender: {reason}");
    }
}

//! Child processes that never outlive xtask, and the Ctrl-C / SIGTERM flag that ends waits early.
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn note_interrupt(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turns SIGINT, SIGTERM and SIGHUP into a flag, so xtask can stop its VMs and clean up before it exits.
/// Children in xtask's own process group (cargo, the agent) still get a terminal's Ctrl-C themselves.
pub fn stop_on_interrupt() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(signal, note_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t) };
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// A child in its own process group that the kernel kills if xtask dies (even by SIGKILL), and that
/// dropping kills with its whole group: no QEMU or virtiofsd survives any exit path.
pub struct Tethered {
    child: Child,
    name: &'static str,
}

impl Tethered {
    pub fn spawn(name: &'static str, command: &mut Command) -> anyhow::Result<Self> {
        command.process_group(0);
        // SAFETY: prctl and getppid are async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // xtask may have died before the prctl took effect; then init adopted us.
                if libc::getppid() == 1 {
                    return Err(std::io::Error::other("xtask exited while starting its child"));
                }
                Ok(())
            })
        };
        let child =
            command.spawn().with_context(|| format!("cannot start {name} ({:?})", command.get_program()))?;
        Ok(Self { child, name })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Whether the process has exited (and been reaped).
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    pub fn kill(&mut self) {
        if self.has_exited() {
            return;
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: plain syscall; the group id is the child's pid (process_group(0)) and the child
            // is not reaped yet, so the id cannot have been reused.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

impl Drop for Tethered {
    fn drop(&mut self) {
        self.kill();
    }
}

//! The agent's process: forked straight into its session cgroup (clone3 with CLONE_INTO_CGROUP), so it
//! never runs outside it and no migration is needed, in a session of its own with no descriptor of
//! the launcher's beyond stdin, stdout, stderr and those asked for, then waited for.
//!
//! Moving a task by writing `cgroup.procs` takes the cgroup threadgroup lock for writing, which waits
//! for an RCU grace period: 8–20 ms per launch measured on the development host, most of what the
//! launcher cost. Forking into the cgroup only takes that lock for reading.
use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::ExitStatus;

use nix::fcntl::OFlag;
use nix::sys::signal::SigSet;
use nix::sys::stat::Mode;

/// `CLONE_INTO_CGROUP` from linux/sched.h (libc declares it as an `int`, which cannot hold it).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The account the agent drops to before exec.
pub struct Ids<'a> {
    pub uid: u32,
    pub gid: u32,
    pub groups: &'a [u32],
}

/// What the agent runs: all of it converted before the fork, because the child may not allocate.
pub struct Launch<'a> {
    pub program: &'a Path,
    /// argv, argv[0] first.
    pub argv: Vec<&'a OsStr>,
    /// The environment, `NAME=value`.
    pub env: Vec<Vec<u8>>,
    /// The session cgroup's directory.
    pub cgroup: &'a Path,
    /// `None`: the agent keeps root.
    pub ids: Option<Ids<'a>>,
    /// The signal mask the agent starts with.
    pub mask: SigSet,
    /// Descriptors above 2 the agent keeps (`--keep-fd`), sorted and without duplicates; every other
    /// one above 2 is closed at exec.
    pub keep_fds: &'a [libc::c_int],
}

/// A started agent, reaped at most once.
pub struct AgentProcess {
    pid: libc::pid_t,
    status: Option<ExitStatus>,
}

impl AgentProcess {
    pub fn id(&self) -> u32 {
        self.pid.unsigned_abs()
    }

    /// The exit status if the agent has ended (and reaps it), `None` while it runs.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.reap(libc::WNOHANG)
    }

    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.reap(0)? {
                return Ok(status);
            }
        }
    }

    fn reap(&mut self, flags: libc::c_int) -> std::io::Result<Option<ExitStatus>> {
        if self.status.is_some() {
            return Ok(self.status);
        }
        let mut raw = 0;
        loop {
            // SAFETY: waitpid writes only the status word it is given.
            match unsafe { libc::waitpid(self.pid, &mut raw, flags) } {
                0 => return Ok(None),
                -1 => {
                    let error = std::io::Error::last_os_error();
                    if error.kind() != std::io::ErrorKind::Interrupted {
                        return Err(error);
                    }
                }
                _ => {
                    self.status = Some(ExitStatus::from_raw(raw));
                    return Ok(self.status);
                }
            }
        }
    }
}

fn c_string(bytes: &[u8]) -> std::io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "an argument or variable contains a NUL byte")
    })
}

/// Starts the agent inside `launch.cgroup`. An error means nothing runs: a failed fork, or a child that
/// could not drop privileges or exec (its errno is passed back over a close-on-exec pipe).
pub fn spawn(launch: &Launch) -> std::io::Result<AgentProcess> {
    let program = c_string(launch.program.as_os_str().as_bytes())?;
    let argv = launch.argv.iter().map(|a| c_string(a.as_bytes())).collect::<std::io::Result<Vec<_>>>()?;
    let env = launch.env.iter().map(|v| c_string(v)).collect::<std::io::Result<Vec<_>>>()?;
    let argv_ptrs: Vec<*const libc::c_char> =
        argv.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
    let env_ptrs: Vec<*const libc::c_char> =
        env.iter().map(|v| v.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
    let cgroup: OwnedFd = nix::fcntl::open(
        launch.cgroup,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let (report_read, report_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let args = libc::clone_args {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        // SAFETY: all-zero is a valid clone_args (no pidfd, tid, stack, tls or set_tid).
        ..unsafe { std::mem::zeroed() }
    };
    // SAFETY: clone3 without CLONE_VM and with no stack forks like fork(2); `args` outlives the call.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    if pid == 0 {
        // SAFETY: in the child of a fork; everything it uses was prepared above.
        unsafe { exec_child(&program, &argv_ptrs, &env_ptrs, launch, report_write.as_raw_fd()) }
    }
    if pid < 0 {
        let error = std::io::Error::last_os_error();
        return Err(match error.raw_os_error() {
            Some(libc::ENOSYS | libc::E2BIG) => std::io::Error::other(format!(
                "{error}: starting a process inside a cgroup needs clone3 with CLONE_INTO_CGROUP (Linux 5.7 or newer)"
            )),
            _ => error,
        });
    }
    drop(report_write);
    let mut agent = AgentProcess { pid: pid as libc::pid_t, status: None };
    let mut errno = [0u8; 4];
    let read = loop {
        match nix::unistd::read(&report_read, &mut errno) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    match read {
        // The pipe closed on exec: the agent runs.
        Ok(0) => Ok(agent),
        Ok(_) => {
            agent.wait()?;
            Err(std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno)))
        }
        Err(e) => {
            // Whether it runs is unknown: end it rather than leave it unsupervised.
            // SAFETY: kill only sends a signal to our own child.
            unsafe { libc::kill(agent.pid, libc::SIGKILL) };
            agent.wait()?;
            Err(e.into())
        }
    }
}

/// In the forked child: restore the signal mask and SIGPIPE, leave the caller's session (so the agent
/// has no controlling terminal to push input into with TIOCSTI, nor the caller's process group to
/// signal), mark every descriptor above 2 but the kept ones close-on-exec, drop to the user, exec.
/// Only raw system calls: the child of a raw clone3 must not touch glibc state (a glibc `setuid`
/// would signal the parent's other threads to change their ids too).
unsafe fn exec_child(
    program: &CString,
    argv: &[*const libc::c_char],
    env: &[*const libc::c_char],
    launch: &Launch,
    report: libc::c_int,
) -> ! {
    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL);
    let failed = 'setup: {
        let masked = libc::pthread_sigmask(libc::SIG_SETMASK, launch.mask.as_ref(), std::ptr::null_mut());
        if masked != 0 {
            break 'setup masked;
        }
        // Rust ignores SIGPIPE; the agent gets the default, as std's Command gives it.
        if libc::signal(libc::SIGPIPE, libc::SIG_DFL) == libc::SIG_ERR {
            break 'setup errno();
        }
        if libc::setsid() == -1 {
            break 'setup errno();
        }
        if let Err(failed) = close_on_exec_all_but(launch.keep_fds) {
            break 'setup failed;
        }
        if let Some(ids) = &launch.ids {
            if libc::syscall(libc::SYS_setgroups, ids.groups.len(), ids.groups.as_ptr()) != 0
                || libc::syscall(libc::SYS_setresgid, ids.gid, ids.gid, ids.gid) != 0
                || libc::syscall(libc::SYS_setresuid, ids.uid, ids.uid, ids.uid) != 0
            {
                break 'setup errno();
            }
        }
        libc::execve(program.as_ptr(), argv.as_ptr(), env.as_ptr());
        errno()
    };
    let bytes = failed.to_ne_bytes();
    libc::write(report, bytes.as_ptr().cast(), bytes.len());
    libc::_exit(127)
}

/// Marks every descriptor above 2 close-on-exec except `keep` (sorted), and clears the flag on those:
/// the report pipe stays open until the exec itself, and nothing else of the launcher's reaches the
/// agent. `close_range` with CLOSE_RANGE_CLOEXEC (Linux 5.11) is one call per gap, whatever the
/// descriptor table's size. Raw system calls only (see `exec_child`).
unsafe fn close_on_exec_all_but(keep: &[libc::c_int]) -> Result<(), libc::c_int> {
    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL);
    let mut first: libc::c_uint = 3;
    for &fd in keep.iter().chain(std::iter::once(&-1)) {
        let last = if fd < 0 { libc::c_uint::MAX } else { fd as libc::c_uint - 1 };
        if first <= last && libc::syscall(libc::SYS_close_range, first, last, libc::CLOSE_RANGE_CLOEXEC) != 0
        {
            return Err(errno());
        }
        if fd >= 0 {
            if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                return Err(errno());
            }
            first = fd as libc::c_uint + 1;
        }
    }
    Ok(())
}

//! The micro operations (open allowed/denied, fork+exec+wait, loopback connect), each timed in a forked child.
use std::ffi::CString;
use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::os::fd::FromRawFd as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _};

/// The audit login uid every measured process gets, so that auditd's rule (`-F auid=`) selects exactly
/// the measured processes, as SafeClaw's cgroup does.
pub const BENCH_AUID: u32 = 1000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Op {
    OpenAllowed,
    OpenDenied,
    Exec,
    Connect,
}

impl Op {
    pub const ALL: [Op; 4] = [Op::OpenAllowed, Op::OpenDenied, Op::Exec, Op::Connect];

    pub fn label(self) -> &'static str {
        match self {
            Op::OpenAllowed => "open()+close(), allowed file",
            Op::OpenDenied => "open() of a denied file",
            Op::Exec => "fork+exec+wait of a static binary",
            Op::Connect => "connect() to a loopback listener",
        }
    }
}

/// Files and the listener the operations use, set up once per boot. The operations name the files
/// relative to `dir`: in the VM `/` is virtiofs without caching, and every walk from it would add a FUSE
/// round trip to the host (the tools still see and decide the full path).
pub struct Fixture {
    pub dir: PathBuf,
    allowed: CString,
    denied: CString,
    binary: CString,
    port: u16,
    /// Where a measured process runs, if the guest has two CPUs or more.
    pub placement: Option<Placement>,
}

/// A measured process on one CPU and the loopback listener on another. Left to the scheduler, the two
/// ends of a connect (and the measured process and whatever else wakes) land on either vCPU from one
/// block to the next: in one guest, an inside connect block was 15-35 % slower than the outside one in
/// 11 of 12 pairs unpinned, and 0.5-7 % pinned (docs/benchmarks.md, session 20).
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    pub measured: usize,
    pub listener: usize,
}

impl Placement {
    /// The first and the last CPU this process may run on, if they differ.
    fn of_this_process() -> anyhow::Result<Option<Placement>> {
        // SAFETY: sched_getaffinity fills a cpu_set_t of the size it is given.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
            bail!("sched_getaffinity: {}", std::io::Error::last_os_error());
        }
        let allowed: Vec<usize> =
            (0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect();
        Ok(match (allowed.first(), allowed.last()) {
            (Some(&measured), Some(&listener)) if measured != listener => {
                Some(Placement { measured, listener })
            }
            _ => None,
        })
    }
}

/// Binds the calling thread to `cpu`.
fn pin_to(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET marks one CPU below CPU_SETSIZE.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; the set is of the size given.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        bail!("binding to CPU {cpu}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

impl Fixture {
    /// `dir` must be a workspace directory of policies/default.yaml (`~/projects/...`).
    pub fn create(dir: &Path) -> anyhow::Result<Fixture> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(dir.join("allowed.txt"), "x")?;
        // default.yaml denies `**/.env`; fapolicyd and the generated policies name it too.
        std::fs::write(dir.join(".env"), "SECRET=1")?;
        let binary = dir.join("busybox");
        std::fs::copy("/bin/busybox", &binary).context("copying /bin/busybox (package busybox-static)")?;
        let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback listener")?;
        // A backlog past any run's connects: on one vCPU the accepting thread may not run during a run,
        // and a full backlog drops SYNs (a 1 s retransmit would then be measured).
        // SAFETY: listen(2) again on our own bound socket only raises its backlog.
        if unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), 65_535) } != 0 {
            bail!("listen: {}", std::io::Error::last_os_error());
        }
        let port = listener.local_addr()?.port();
        let placement = Placement::of_this_process()?;
        let listener_cpu = placement.map(|p| p.listener);
        let (pinned_tx, pinned) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = pinned_tx.send(listener_cpu.map_or(Ok(()), pin_to));
            for stream in listener.incoming() {
                drop(stream);
            }
        });
        pinned.recv().context("the listener thread ended")?.context("pinning the loopback listener")?;
        Ok(Fixture {
            allowed: c"allowed.txt".into(),
            denied: c".env".into(),
            binary: c"./busybox".into(),
            dir: dir.to_owned(),
            port,
            placement,
        })
    }

    pub fn allowed_path(&self) -> String {
        self.dir.join("allowed.txt").display().to_string()
    }

    pub fn denied_path(&self) -> String {
        self.dir.join(".env").display().to_string()
    }

    pub fn binary_path(&self) -> String {
        self.dir.join("busybox").display().to_string()
    }
}

/// What a measured child does, `iterations` times.
#[derive(Clone, Copy)]
pub enum Work<'a> {
    Op(Op),
    /// open()+close() of `names` in turn, from `first`, wrapping around.
    OpenEach {
        names: &'a [CString],
        first: usize,
    },
}

/// Creates `count` allowed files under `dir/distinct` and returns their names relative to `dir`.
pub fn distinct_files(fixture: &Fixture, count: u32) -> anyhow::Result<Vec<CString>> {
    let sub = fixture.dir.join("distinct");
    std::fs::create_dir_all(&sub).with_context(|| format!("cannot create {}", sub.display()))?;
    (0..count)
        .map(|i| {
            let name = format!("distinct/f{i:06}");
            std::fs::write(fixture.dir.join(&name), "x")?;
            Ok(CString::new(name)?)
        })
        .collect()
}

/// One timed run: mean ns per operation and how many of them failed (a denial, for the denied open).
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub ns: f64,
    pub failures: u64,
}

/// Runs `iterations` of `op` in a forked child with the bench login uid, first moved into `cgroup` if given.
/// Only the denied open may fail.
/// The child runs on the fixture's measured CPU.
pub fn measure(fixture: &Fixture, op: Op, iterations: u32, cgroup: Option<&Path>) -> anyhow::Result<Timing> {
    let cpu = fixture.placement.map(|p| p.measured);
    measure_in_child(fixture, Work::Op(op), iterations, cgroup, op != Op::OpenDenied, cpu, None)
}

/// [`measure`], with `before` called on the child's pid once it is set up (in its cgroup) and before
/// it starts: a profiler attaches there, so that it samples the operations alone.
pub fn measure_after(
    fixture: &Fixture,
    op: Op,
    iterations: u32,
    cgroup: &Path,
    before: &mut dyn FnMut(u32) -> anyhow::Result<()>,
) -> anyhow::Result<Timing> {
    let cpu = fixture.placement.map(|p| p.measured);
    measure_in_child(fixture, Work::Op(op), iterations, Some(cgroup), op != Op::OpenDenied, cpu, Some(before))
}

/// [`measure`] of any work, counting failures instead of failing. The child runs wherever the scheduler
/// puts it: a burst's processes spread over every CPU, as an agent's build would.
pub fn measure_lenient(
    fixture: &Fixture,
    work: Work,
    iterations: u32,
    cgroup: Option<&Path>,
) -> anyhow::Result<Timing> {
    measure_in_child(fixture, work, iterations, cgroup, false, None, None)
}

fn measure_in_child(
    fixture: &Fixture,
    work: Work,
    iterations: u32,
    cgroup: Option<&Path>,
    strict: bool,
    cpu: Option<usize>,
    before: Option<&mut dyn FnMut(u32) -> anyhow::Result<()>>,
) -> anyhow::Result<Timing> {
    let procs = cgroup.map(|c| c.join("cgroup.procs"));
    let mut fds = [0i32; 2];
    let mut go = [-1i32; 2];
    // SAFETY: pipe(2) into 2-element arrays.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0
        || (before.is_some() && unsafe { libc::pipe(go.as_mut_ptr()) } != 0)
    {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    // SAFETY: the child only makes system calls and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: the write end belongs to the child now.
        let mut out = unsafe { std::fs::File::from_raw_fd(fds[1]) };
        if go[1] >= 0 {
            // SAFETY: the go pipe's write end is the parent's; the child keeps only the read end.
            unsafe { libc::close(go[1]) };
        }
        let code = match child(fixture, work, iterations, procs.as_deref(), strict, cpu, go[0]) {
            Ok(t) => write!(out, "{} {}", t.ns, t.failures).map_or(1, |()| 0),
            Err(e) => {
                let _ = write!(out, "error: {e:#}");
                1
            }
        };
        // SAFETY: leave without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    // SAFETY: closing our copy of the write end; the read end is ours.
    unsafe { libc::close(fds[1]) };
    let mut reader = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let mut before_failed = None;
    if let Some(before) = before {
        // SAFETY: the go pipe's ends are ours; the byte (or the closed end) starts the child either way.
        unsafe { libc::close(go[0]) };
        let mut start = unsafe { std::fs::File::from_raw_fd(go[1]) };
        before_failed = before(pid as u32).err();
        let _ = start.write_all(b"g");
    }
    let mut text = String::new();
    reader.read_to_string(&mut text)?;
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{} child failed: {text}", work.label());
    }
    if let Some(error) = before_failed {
        return Err(error);
    }
    let (ns, failures) = text.split_once(' ').with_context(|| format!("child said {text:?}"))?;
    Ok(Timing { ns: ns.parse()?, failures: failures.parse()? })
}

/// Gives the calling process the bench login uid (auditd selects on it).
pub fn set_login_uid() -> anyhow::Result<()> {
    std::fs::write("/proc/self/loginuid", BENCH_AUID.to_string()).context("writing /proc/self/loginuid")
}

impl Work<'_> {
    fn label(self) -> &'static str {
        match self {
            Work::Op(op) => op.label(),
            Work::OpenEach { .. } => "open()+close() of distinct files",
        }
    }
}

fn child(
    fixture: &Fixture,
    work: Work,
    iterations: u32,
    procs: Option<&Path>,
    strict: bool,
    cpu: Option<usize>,
    go: i32,
) -> anyhow::Result<Timing> {
    set_login_uid()?;
    if let Some(cpu) = cpu {
        pin_to(cpu)?;
    }
    std::env::set_current_dir(&fixture.dir)?;
    if let Some(procs) = procs {
        std::fs::write(procs, std::process::id().to_string())
            .with_context(|| format!("entering {}", procs.display()))?;
    }
    if go >= 0 {
        // SAFETY: the read end of the go pipe belongs to the child.
        let mut start = unsafe { std::fs::File::from_raw_fd(go) };
        let mut byte = [0u8; 1];
        let _ = start.read(&mut byte);
    }
    let mut failures = 0u64;
    let start = Instant::now();
    for i in 0..iterations as usize {
        let ok = match work {
            Work::Op(Op::OpenAllowed) => open_close(&fixture.allowed),
            Work::Op(Op::OpenDenied) => open_close(&fixture.denied),
            Work::Op(Op::Exec) => fork_exec_wait(&fixture.binary),
            Work::Op(Op::Connect) => connect_close(fixture.port),
            Work::OpenEach { names, first } => {
                names.get((first + i) % names.len().max(1)).is_some_and(open_close)
            }
        };
        if !ok {
            failures += 1;
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(iterations);
    if strict && failures > 0 {
        bail!("{failures} of {iterations} failed (last error: {})", std::io::Error::last_os_error());
    }
    Ok(Timing { ns, failures })
}

fn open_close(path: &CString) -> bool {
    // SAFETY: open/close of a NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
    if fd < 0 {
        return false;
    }
    unsafe { libc::close(fd) };
    true
}

fn fork_exec_wait(binary: &CString) -> bool {
    let argv = [c"busybox".as_ptr(), c"true".as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    // SAFETY: the child only calls execve and _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe {
            libc::execve(binary.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(127);
        }
    }
    if pid < 0 {
        return false;
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

fn connect_close(port: u16) -> bool {
    // SAFETY: a socket, a connect to a stack sockaddr_in, a close.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return false;
        }
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be() },
            sin_zero: [0; 8],
        };
        let ok = libc::connect(
            fd,
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) == 0;
        libc::close(fd);
        ok
    }
}

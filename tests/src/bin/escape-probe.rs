//! Escape attempts the escape suite (tests/tests/escape*.rs) runs from inside an agent session, one
//! syscall technique per subcommand. Prints the outcome on stdout: `ok`, or the errno's name (`EPERM`),
//! so that the test asserts the exact error, not merely a failure.
use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt as _;
use std::process::ExitCode;

#[path = "../probe/changes.rs"]
mod changes;

const USAGE: &str =
    "usage: escape-probe open PATH | opath-reopen PATH | openat2 DIR NAME | io-uring-open PATH \
| link SRC DST | rename SRC DST | execveat PATH | execveat-fd PATH | fexecve PATH | memfd-exec PATH | udp-sendto ADDR PORT \
| tcp-connect ADDR PORT | udp-sendto-unspec IPV4 PORT | raw-socket inet|inet6|packet | ptrace PID | unshare-bind SRC DST \
| many-open PATH COUNT | tiocsti TEXT | sigio PID SIGNAL | unix-connect PATH | unix-dgram-sendto PATH \
| unix-dgram-connect PATH | tcp-listen ADDR PORT | tcp-listen-unbound inet|inet6 | udp-bind ADDR PORT \
| open-deep DIR COMPONENT DEPTH NAME | clone3-into CGROUP_DIR | receive-and-write SOCKET";

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let args: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
    let outcome = match args.as_slice() {
        [cmd, rest @ ..] if changes::handles(cmd) => changes::run(cmd, rest),
        [cmd, path] if *cmd == "open" => open(path, libc::O_RDONLY),
        [cmd, path] if *cmd == "opath-reopen" => opath_reopen(path),
        [cmd, dir, component, depth, name] if *cmd == "open-deep" => {
            open_deep(dir, component, parse(depth), name)
        }
        [cmd, dir, name] if *cmd == "openat2" => openat2_beneath(dir, name),
        [cmd, path] if *cmd == "io-uring-open" => io_uring::open(&cstring(path)),
        [cmd, src, dst] if *cmd == "link" => {
            check(unsafe { libc::link(cstring(src).as_ptr(), cstring(dst).as_ptr()) })
        }
        [cmd, src, dst] if *cmd == "rename" => {
            check(unsafe { libc::rename(cstring(src).as_ptr(), cstring(dst).as_ptr()) })
        }
        [cmd, path] if *cmd == "execveat" => exec::execveat_path(path),
        [cmd, path] if *cmd == "execveat-fd" => exec::execveat_opath(path),
        [cmd, path] if *cmd == "fexecve" => exec::fexecve(path),
        [cmd, path] if *cmd == "memfd-exec" => exec::memfd(path),
        [cmd, addr, port] if *cmd == "udp-sendto" => net::udp_sendto(&parse(addr), parse(port)),
        [cmd, addr, port] if *cmd == "tcp-connect" => net::tcp_connect(&parse(addr), parse(port)),
        [cmd, addr, port, count] if *cmd == "tcp-connect-repeat" => {
            (0..parse::<u32>(count)).try_for_each(|_| net::tcp_connect(&parse(addr), parse(port)))
        }
        [cmd, addr, port] if *cmd == "udp-sendto-unspec" => net::udp_sendto_unspec(&parse(addr), parse(port)),
        [cmd, family] if *cmd == "raw-socket" => net::raw_socket(family),
        [cmd, addr, port] if *cmd == "tcp-listen" => net::tcp_listen(&parse(addr), parse(port)),
        [cmd, family] if *cmd == "tcp-listen-unbound" => net::tcp_listen_unbound(family),
        [cmd, addr, port] if *cmd == "udp-bind" => net::udp_bind(&parse(addr), parse(port)),
        [cmd, path] if *cmd == "unix-connect" => {
            std::os::unix::net::UnixStream::connect(path).map(drop).map_err(errno_of)
        }
        [cmd, path] if *cmd == "unix-dgram-sendto" => std::os::unix::net::UnixDatagram::unbound()
            .and_then(|socket| socket.send_to(b"x", path))
            .map(drop)
            .map_err(errno_of),
        [cmd, path] if *cmd == "unix-dgram-connect" => std::os::unix::net::UnixDatagram::unbound()
            .and_then(|socket| socket.connect(path))
            .map_err(errno_of),
        [cmd, pid] if *cmd == "ptrace" => {
            let pid: libc::pid_t = parse(pid);
            // SAFETY: PTRACE_ATTACH with no address or data.
            check(unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) } as i32)
        }
        [cmd, src, dst] if *cmd == "unshare-bind" => unshare_bind(src, dst),
        [cmd, path, count] if *cmd == "many-open" => many_open(path, parse(count)),
        [cmd, text] if *cmd == "tiocsti" => tiocsti(text.as_bytes()),
        [cmd, pid, signal] if *cmd == "sigio" => sigio(parse(pid), parse(signal)),
        [cmd, dir] if *cmd == "clone3-into" => cgroup::clone3_into(dir),
        [cmd, socket] if *cmd == "receive-and-write" => cgroup::receive_and_write(socket),
        _ => {
            eprintln!("{USAGE} | {}", changes::USAGE);
            return ExitCode::from(2);
        }
    };
    println!("{}", outcome.map_or_else(errno_name, |()| "ok".to_string()));
    ExitCode::SUCCESS
}

type Outcome = Result<(), i32>;

fn cstring(s: &OsStr) -> CString {
    CString::new(s.as_bytes()).unwrap_or_else(|_| fail("argument contains a NUL byte"))
}

fn parse<T: std::str::FromStr>(s: &OsStr) -> T {
    s.to_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| fail(&format!("cannot parse {s:?}")))
}

fn fail(message: &str) -> ! {
    eprintln!("escape-probe: {message}");
    std::process::exit(2)
}

fn errno_of(error: std::io::Error) -> i32 {
    error.raw_os_error().unwrap_or(0)
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A syscall's return value as an outcome (negative: the errno).
fn check(ret: i32) -> Outcome {
    if ret < 0 {
        Err(last_errno())
    } else {
        Ok(())
    }
}

fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EACCES => "EACCES",
        libc::EXDEV => "EXDEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSYS => "ENOSYS",
        libc::EBADF => "EBADF",
        libc::ESRCH => "ESRCH",
        libc::ENOEXEC => "ENOEXEC",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENODATA => "ENODATA",
        _ => return format!("errno {errno}"),
    };
    name.to_string()
}

fn open(path: &OsStr, flags: i32) -> Outcome {
    // SAFETY: a valid C string.
    let fd = unsafe { libc::open(cstring(path).as_ptr(), flags) };
    check(fd)
}

/// Opens `name` in the directory `depth` levels of `component` below `dir`, reached by changing
/// directory one level at a time: the whole path may be longer than PATH_MAX, which no single path
/// argument can be.
fn open_deep(dir: &OsStr, component: &OsStr, depth: usize, name: &OsStr) -> Outcome {
    // SAFETY: valid C strings.
    check(unsafe { libc::chdir(cstring(dir).as_ptr()) })?;
    for _ in 0..depth {
        // SAFETY: as above.
        check(unsafe { libc::chdir(cstring(component).as_ptr()) })?;
    }
    open(name, libc::O_RDONLY)
}

/// An O_PATH descriptor needs no read permission and opens nothing; reopening it through
/// /proc/self/fd is the real open.
fn opath_reopen(path: &OsStr) -> Outcome {
    // SAFETY: a valid C string.
    let fd = unsafe { libc::open(cstring(path).as_ptr(), libc::O_PATH) };
    check(fd)?;
    open(OsStr::new(&format!("/proc/self/fd/{fd}")), libc::O_RDONLY)
}

/// openat2 relative to a directory descriptor, confined beneath it and refusing symlinks.
fn openat2_beneath(dir: &OsStr, name: &OsStr) -> Outcome {
    // SAFETY: a valid C string.
    let dirfd = unsafe { libc::open(cstring(dir).as_ptr(), libc::O_PATH | libc::O_DIRECTORY) };
    check(dirfd)?;
    // SAFETY: all-zero is a valid open_how (the struct is non-exhaustive).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = libc::O_RDONLY as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 with a valid descriptor, C string and open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            cstring(name).as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    check(fd as i32)
}

/// In a private mount namespace (which root may create), bind-mounts `src` over `dst`, so that the
/// file would be reachable under `dst`'s name.
fn unshare_bind(src: &OsStr, dst: &OsStr) -> Outcome {
    // SAFETY: plain unshare.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } < 0 {
        fail(&format!("unshare(CLONE_NEWNS) failed: errno {}", last_errno()));
    }
    // SAFETY: valid C strings; no filesystem type or data for a bind mount.
    check(unsafe {
        libc::mount(
            cstring(src).as_ptr(),
            cstring(dst).as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    })
}

/// Forks `count` children that each open `path` at the same moment (released together through a
/// pipe), and prints how many got each outcome.
fn many_open(path: &OsStr, count: u32) -> Outcome {
    let path = cstring(path);
    let mut release = [0i32; 2];
    // SAFETY: a two-int array for pipe().
    check(unsafe { libc::pipe(release.as_mut_ptr()) })?;
    let mut children = Vec::new();
    for _ in 0..count {
        // SAFETY: the child only calls async-signal-safe functions before _exit.
        match unsafe { libc::fork() } {
            -1 => return Err(last_errno()),
            0 => unsafe {
                libc::close(release[1]);
                let mut byte = 0u8;
                libc::read(release[0], (&mut byte as *mut u8).cast(), 1);
                let fd = libc::open(path.as_ptr(), libc::O_RDONLY);
                let code = if fd >= 0 { 0 } else { *libc::__errno_location() };
                libc::_exit(code);
            },
            pid => children.push(pid),
        }
    }
    // Closing the write end gives every child EOF at once.
    // SAFETY: closing our own descriptors.
    unsafe {
        libc::close(release[0]);
        libc::close(release[1]);
    }
    let mut outcomes = std::collections::BTreeMap::<String, u32>::new();
    for pid in children {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        check(unsafe { libc::waitpid(pid, &mut status, 0) })?;
        let outcome = if !libc::WIFEXITED(status) {
            "killed".to_string()
        } else {
            match libc::WEXITSTATUS(status) {
                0 => "ok".to_string(),
                errno => errno_name(errno),
            }
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    let summary: Vec<String> = outcomes.iter().map(|(k, n)| format!("{k}x{n}")).collect();
    println!("{}", summary.join(" "));
    std::process::exit(0)
}

/// Leaving the cgroup without opening a `cgroup.procs` for writing.
mod cgroup {
    use super::{check, cstring, errno_of, last_errno, Outcome};
    use std::ffi::OsStr;
    use std::io::Write as _;
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

    /// clone3 with a child started in the cgroup `dir` (opened read-only, which needs no write), which
    /// exits at once: `ok` if it was created.
    pub fn clone3_into(dir: &OsStr) -> Outcome {
        // SAFETY: a valid C string.
        let fd = unsafe {
            libc::open(cstring(dir).as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC)
        };
        check(fd)?;
        let args = libc::clone_args {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: fd as u64,
            // SAFETY: all-zero is a valid clone_args (no pidfd, tid, stack, tls or set_tid).
            ..unsafe { std::mem::zeroed() }
        };
        // SAFETY: clone3 with no new stack is a fork; the child only calls _exit.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const libc::clone_args,
                std::mem::size_of::<libc::clone_args>(),
            )
        };
        match pid {
            // SAFETY: the child of a fork exits without running anything of the parent's.
            0 => unsafe { libc::_exit(0) },
            -1 => Err(last_errno()),
            pid => {
                let mut status = 0;
                // SAFETY: waiting for our own child.
                check(unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) })
            }
        }
    }

    /// Receives one descriptor over the unix socket at `socket` and writes this process's pid to it:
    /// `EBADF` if no descriptor arrived (the kernel refused it: MSG_CTRUNC).
    pub fn receive_and_write(socket: &OsStr) -> Outcome {
        let stream = std::os::unix::net::UnixStream::connect(socket).map_err(errno_of)?;
        let mut byte = [0u8; 1];
        let mut control = [0u64; 8];
        let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
        // SAFETY: a zeroed msghdr, then pointed at buffers that outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: as above.
        let received = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        check(received as i32)?;
        // SAFETY: CMSG_FIRSTHDR on the msghdr the kernel filled.
        let header = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        // SAFETY: the header is inside `control` when not null.
        if header.is_null() || unsafe { (*header).cmsg_type } != libc::SCM_RIGHTS {
            return Err(libc::EBADF);
        }
        // SAFETY: an SCM_RIGHTS message carries at least one int.
        let fd = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(header) as *const i32) };
        // SAFETY: the descriptor was just received and is ours.
        let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        file.write_all(std::process::id().to_string().as_bytes()).map_err(errno_of)
    }
}

mod exec {
    use super::*;

    /// argv and envp for the exec'd copy of `echo`: on success it prints `EXECUTED`.
    fn argv() -> [*const libc::c_char; 3] {
        [c"echo".as_ptr(), c"EXECUTED".as_ptr(), std::ptr::null()]
    }
    const ENVP: [*const libc::c_char; 1] = [std::ptr::null()];

    fn execveat(dirfd: i32, path: &std::ffi::CStr, flags: i32) -> Outcome {
        // SAFETY: NULL-terminated argv/envp of static C strings; returns only on failure.
        let ret = unsafe {
            libc::syscall(libc::SYS_execveat, dirfd, path.as_ptr(), argv().as_ptr(), ENVP.as_ptr(), flags)
        };
        check(ret as i32)
    }

    pub fn execveat_path(path: &OsStr) -> Outcome {
        execveat(libc::AT_FDCWD, &cstring(path), 0)
    }

    /// execveat(fd, "", AT_EMPTY_PATH) on an O_PATH descriptor: no path in the exec call at all.
    pub fn execveat_opath(path: &OsStr) -> Outcome {
        // SAFETY: a valid C string.
        let fd = unsafe { libc::open(cstring(path).as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        check(fd)?;
        execveat(fd, c"", libc::AT_EMPTY_PATH)
    }

    pub fn fexecve(path: &OsStr) -> Outcome {
        // SAFETY: a valid C string.
        let fd = unsafe { libc::open(cstring(path).as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        check(fd)?;
        // SAFETY: as execveat.
        check(unsafe { libc::fexecve(fd, argv().as_ptr(), ENVP.as_ptr()) })
    }

    /// Copies the binary into an anonymous memory file and executes that: the exec'd file has no
    /// path on any filesystem.
    pub fn memfd(path: &OsStr) -> Outcome {
        let bytes = std::fs::read(path).map_err(|e| e.raw_os_error().unwrap_or(0))?;
        // SAFETY: a static C string name; flags valid.
        let fd = unsafe { libc::memfd_create(c"agent-copy".as_ptr(), 0) };
        check(fd)?;
        // SAFETY: writing our buffer to our descriptor.
        let written = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if written != bytes.len() as isize {
            return Err(last_errno());
        }
        // SAFETY: as execveat.
        check(unsafe { libc::fexecve(fd, argv().as_ptr(), ENVP.as_ptr()) })
    }
}

mod net {
    use super::*;

    fn inet6(addr: &std::net::Ipv6Addr, port: u16) -> libc::sockaddr_in6 {
        // SAFETY: all-zero is a valid sockaddr_in6.
        let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        sa.sin6_family = libc::AF_INET6 as u16;
        sa.sin6_port = port.to_be();
        sa.sin6_addr.s6_addr = addr.octets();
        sa
    }

    fn inet4(addr: &std::net::Ipv4Addr, port: u16) -> libc::sockaddr_in {
        // SAFETY: all-zero is a valid sockaddr_in.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sa.sin_family = libc::AF_INET as u16;
        sa.sin_port = port.to_be();
        sa.sin_addr.s_addr = u32::from_ne_bytes(addr.octets());
        sa
    }

    /// A socket of `kind` for `addr`, and the address as the kernel takes it.
    fn socket_for(addr: &std::net::IpAddr, port: u16, kind: i32) -> Result<(i32, Vec<u8>), i32> {
        let (family, bytes) = match addr {
            std::net::IpAddr::V4(v4) => (libc::AF_INET, as_bytes(&inet4(v4, port))),
            std::net::IpAddr::V6(v6) => (libc::AF_INET6, as_bytes(&inet6(v6, port))),
        };
        // SAFETY: plain socket().
        let fd = unsafe { libc::socket(family, kind, 0) };
        check(fd)?;
        Ok((fd, bytes))
    }

    fn as_bytes<T>(value: &T) -> Vec<u8> {
        // SAFETY: reading a plain C struct's bytes.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
            .to_vec()
    }

    pub fn udp_sendto(addr: &std::net::IpAddr, port: u16) -> Outcome {
        let (fd, sa) = socket_for(addr, port, libc::SOCK_DGRAM)?;
        // SAFETY: sendto with our buffer and a sockaddr of the length given.
        let sent = unsafe {
            libc::sendto(fd, b"x".as_ptr().cast(), 1, 0, sa.as_ptr().cast(), sa.len() as libc::socklen_t)
        };
        check(sent as i32)
    }

    /// An IPv4 UDP socket given a `sockaddr_in` whose family is `AF_UNSPEC`: the kernel sends to its
    /// address as IPv4.
    pub fn udp_sendto_unspec(addr: &std::net::Ipv4Addr, port: u16) -> Outcome {
        let mut sa = inet4(addr, port);
        sa.sin_family = libc::AF_UNSPEC as u16;
        // SAFETY: plain socket().
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        check(fd)?;
        let sa = as_bytes(&sa);
        // SAFETY: sendto with our buffer and a sockaddr of the length given.
        let sent = unsafe {
            libc::sendto(fd, b"x".as_ptr().cast(), 1, 0, sa.as_ptr().cast(), sa.len() as libc::socklen_t)
        };
        check(sent as i32)
    }

    /// A raw ICMP socket (IPv4 or IPv6), or a packet socket for every protocol.
    pub fn raw_socket(family: &OsStr) -> Outcome {
        let (family, protocol) = match family.to_str() {
            Some("inet") => (libc::AF_INET, libc::IPPROTO_ICMP),
            Some("inet6") => (libc::AF_INET6, libc::IPPROTO_ICMPV6),
            Some("packet") => (libc::AF_PACKET, i32::from((libc::ETH_P_ALL as u16).to_be())),
            _ => fail("raw-socket takes inet, inet6 or packet"),
        };
        // SAFETY: plain socket().
        check(unsafe { libc::socket(family, libc::SOCK_RAW, protocol) })
    }

    /// bind, then listen: EPERM from listen is SafeClaw's (bind of a TCP socket is not decided).
    pub fn tcp_listen(addr: &std::net::IpAddr, port: u16) -> Outcome {
        let (fd, sa) = socket_for(addr, port, libc::SOCK_STREAM)?;
        // SAFETY: bind with a sockaddr of the length given, then listen.
        check(unsafe { libc::bind(fd, sa.as_ptr().cast(), sa.len() as libc::socklen_t) })?;
        check(unsafe { libc::listen(fd, 8) })
    }

    /// listen without bind: the kernel binds the any-address and a port of its choosing.
    pub fn tcp_listen_unbound(family: &OsStr) -> Outcome {
        let family = match family.to_str() {
            Some("inet") => libc::AF_INET,
            Some("inet6") => libc::AF_INET6,
            _ => fail("tcp-listen-unbound takes inet or inet6"),
        };
        // SAFETY: plain socket() and listen().
        let fd = unsafe { libc::socket(family, libc::SOCK_STREAM, 0) };
        check(fd)?;
        check(unsafe { libc::listen(fd, 8) })
    }

    pub fn udp_bind(addr: &std::net::IpAddr, port: u16) -> Outcome {
        let (fd, sa) = socket_for(addr, port, libc::SOCK_DGRAM)?;
        // SAFETY: bind with a sockaddr of the length given.
        check(unsafe { libc::bind(fd, sa.as_ptr().cast(), sa.len() as libc::socklen_t) })
    }

    pub fn tcp_connect(addr: &std::net::IpAddr, port: u16) -> Outcome {
        let (fd, sa) = socket_for(addr, port, libc::SOCK_STREAM)?;
        // SAFETY: connect with a sockaddr of the length given, then close of our own socket.
        let connected = check(unsafe { libc::connect(fd, sa.as_ptr().cast(), sa.len() as libc::socklen_t) });
        unsafe { libc::close(fd) };
        connected
    }
}

mod io_uring {
    //! One IORING_OP_OPENAT through a minimal io_uring, forced onto an io-wq worker thread
    //! (IOSQE_ASYNC), so the open runs in a kernel thread rather than in the syscall itself.
    use super::*;

    #[repr(C)]
    #[derive(Default)]
    struct SqOffsets {
        head: u32,
        tail: u32,
        ring_mask: u32,
        ring_entries: u32,
        flags: u32,
        dropped: u32,
        array: u32,
        resv1: u32,
        user_addr: u64,
    }

    #[repr(C)]
    #[derive(Default)]
    struct CqOffsets {
        head: u32,
        tail: u32,
        ring_mask: u32,
        ring_entries: u32,
        overflow: u32,
        cqes: u32,
        flags: u32,
        resv1: u32,
        user_addr: u64,
    }

    #[repr(C)]
    #[derive(Default)]
    struct Params {
        sq_entries: u32,
        cq_entries: u32,
        flags: u32,
        sq_thread_cpu: u32,
        sq_thread_idle: u32,
        features: u32,
        wq_fd: u32,
        resv: [u32; 3],
        sq_off: SqOffsets,
        cq_off: CqOffsets,
    }

    #[repr(C)]
    struct Sqe {
        opcode: u8,
        flags: u8,
        ioprio: u16,
        fd: i32,
        off: u64,
        addr: u64,
        len: u32,
        open_flags: u32,
        user_data: u64,
        buf_index: u16,
        personality: u16,
        splice_fd_in: i32,
        addr3: u64,
        pad: u64,
    }

    #[repr(C)]
    struct Cqe {
        user_data: u64,
        res: i32,
        flags: u32,
    }

    const IORING_OP_OPENAT: u8 = 18;
    const IOSQE_ASYNC: u8 = 1 << 4;
    const IORING_ENTER_GETEVENTS: u32 = 1;
    const IORING_OFF_SQ_RING: i64 = 0;
    const IORING_OFF_CQ_RING: i64 = 0x800_0000;
    const IORING_OFF_SQES: i64 = 0x1000_0000;

    fn map(fd: i32, len: usize, offset: i64) -> Result<*mut u8, i32> {
        // SAFETY: a fresh shared mapping of the ring descriptor.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            Err(last_errno())
        } else {
            Ok(ptr.cast())
        }
    }

    pub fn open(path: &std::ffi::CStr) -> Outcome {
        let mut params = Params::default();
        // SAFETY: io_uring_setup with a zeroed params struct of the kernel's layout.
        let ring =
            unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, &mut params as *mut Params) } as i32;
        check(ring)?;
        let sq = map(ring, (params.sq_off.array + params.sq_entries * 4) as usize, IORING_OFF_SQ_RING)?;
        let cq = map(
            ring,
            (params.cq_off.cqes as usize) + params.cq_entries as usize * std::mem::size_of::<Cqe>(),
            IORING_OFF_CQ_RING,
        )?;
        let sqes = map(ring, params.sq_entries as usize * std::mem::size_of::<Sqe>(), IORING_OFF_SQES)?;
        // SAFETY: offsets and sizes come from the kernel's params for these mappings; one entry is
        // submitted and one completion read, with the ring's own barriers (atomics) on head and tail.
        unsafe {
            sqes.cast::<Sqe>().write(Sqe {
                opcode: IORING_OP_OPENAT,
                flags: IOSQE_ASYNC,
                ioprio: 0,
                fd: libc::AT_FDCWD,
                off: 0,
                addr: path.as_ptr() as u64,
                len: 0,
                open_flags: libc::O_RDONLY as u32,
                user_data: 1,
                buf_index: 0,
                personality: 0,
                splice_fd_in: 0,
                addr3: 0,
                pad: 0,
            });
            let mask = *sq.add(params.sq_off.ring_mask as usize).cast::<u32>();
            let tail = &*sq.add(params.sq_off.tail as usize).cast::<std::sync::atomic::AtomicU32>();
            let t = tail.load(std::sync::atomic::Ordering::Acquire);
            *sq.add(params.sq_off.array as usize).cast::<u32>().add((t & mask) as usize) = 0;
            tail.store(t.wrapping_add(1), std::sync::atomic::Ordering::Release);
            let entered = libc::syscall(
                libc::SYS_io_uring_enter,
                ring,
                1u32,
                1u32,
                IORING_ENTER_GETEVENTS,
                std::ptr::null::<u8>(),
                0usize,
            );
            check(entered as i32)?;
            let cq_mask = *cq.add(params.cq_off.ring_mask as usize).cast::<u32>();
            let head = &*cq.add(params.cq_off.head as usize).cast::<std::sync::atomic::AtomicU32>();
            let h = head.load(std::sync::atomic::Ordering::Acquire);
            let cqe = &*cq.add(params.cq_off.cqes as usize).cast::<Cqe>().add((h & cq_mask) as usize);
            let res = cqe.res;
            head.store(h.wrapping_add(1), std::sync::atomic::Ordering::Release);
            if res < 0 {
                Err(-res)
            } else {
                Ok(())
            }
        }
    }
}

/// Pushes `text` into the input queue of the terminal on stdin, byte by byte (TIOCSTI): were it the
/// caller's terminal, the caller's shell would read it as typed.
fn tiocsti(text: &[u8]) -> Outcome {
    for byte in text {
        // SAFETY: TIOCSTI reads one byte from the pointer.
        check(unsafe { libc::ioctl(0, libc::TIOCSTI, byte as *const u8) })?;
    }
    Ok(())
}

/// Makes the kernel send `signal` to `pid` as SIGIO: a pipe owned by `pid` (F_SETOWN), with `signal`
/// as its I/O signal (F_SETSIG) and O_ASYNC, then written to. `ok` means every step was accepted; the
/// signal itself is sent (or refused) by the kernel, unseen by the caller.
fn sigio(pid: libc::pid_t, signal: libc::c_int) -> Outcome {
    /// From linux/fcntl.h; the libc crate does not declare it.
    const F_SETSIG: libc::c_int = 10;
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into the array.
    check(unsafe { libc::pipe(fds.as_mut_ptr()) })?;
    let [read, write] = fds;
    // SAFETY: fcntl on our own pipe's read end.
    unsafe {
        check(libc::fcntl(read, libc::F_SETOWN, pid))?;
        check(libc::fcntl(read, F_SETSIG, signal))?;
        check(libc::fcntl(read, libc::F_SETFL, libc::O_ASYNC | libc::O_NONBLOCK))?;
        check(libc::write(write, b"x".as_ptr().cast(), 1) as i32)?;
    }
    // Give the kernel's delivery its moment before the process (and its file) goes away.
    std::thread::sleep(std::time::Duration::from_millis(200));
    Ok(())
}

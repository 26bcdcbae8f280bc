//! Makes the syscalls the agreement test asks for, one per stdin line, and prints what the kernel
//! answered: `ok` or the errno. Lines: `r|w|rw|x PATH` (open for read, write, both; execute) and
//! `tcp|udp ADDRESS PORT` (connect), `listen-tcp|listen-udp ADDRESS PORT` (TCP listen, UDP bind),
//! `r-times PATH N` (N opens for reading as fast as they go; answers `OK DENIED`, the counts of opens
//! that succeeded and of those refused with EPERM), `r-cycle SECONDS PATH...` (opens for reading of
//! each PATH in turn for SECONDS; the same answer). Runs inside the agent cgroup.
use std::io::{BufRead as _, Write as _};
use std::net::{IpAddr, SocketAddr};

fn main() -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split('\t').collect();
        if let ["r-times", path, times] = words.as_slice() {
            let (ok, denied) = open_times(path, times.parse()?)?;
            writeln!(out, "{ok} {denied}")?;
            continue;
        }
        if let ["r-cycle", seconds, paths @ ..] = words.as_slice() {
            let (ok, denied) = open_cycle(paths, std::time::Duration::from_secs(seconds.parse()?))?;
            writeln!(out, "{ok} {denied}")?;
            continue;
        }
        let outcome = match words.as_slice() {
            ["r", path] => open(path, libc::O_RDONLY),
            ["w", path] => open(path, libc::O_WRONLY),
            ["rw", path] => open(path, libc::O_RDWR),
            ["x", path] => exec(path),
            [protocol @ ("tcp" | "udp"), address, port] => connect(protocol, address.parse()?, port.parse()?),
            ["listen-tcp", address, port] => {
                std::net::TcpListener::bind(SocketAddr::new(address.parse()?, port.parse()?)).map(drop)
            }
            ["listen-udp", address, port] => {
                std::net::UdpSocket::bind(SocketAddr::new(address.parse()?, port.parse()?)).map(drop)
            }
            _ => anyhow::bail!("bad probe line {line:?}"),
        };
        match outcome {
            Ok(()) => writeln!(out, "ok")?,
            Err(e) => writeln!(out, "{}", e.raw_os_error().unwrap_or(-1))?,
        }
    }
    Ok(())
}

fn open(path: &str, flags: libc::c_int) -> std::io::Result<()> {
    let path = std::ffi::CString::new(path)?;
    // SAFETY: a NUL-terminated path and plain flags; the descriptor is closed right away.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is ours and open.
    unsafe { libc::close(fd) };
    Ok(())
}

/// Opens `path` for reading `times` times: how many succeeded and how many failed with EPERM (any
/// other error ends the run).
fn open_times(path: &str, times: u64) -> std::io::Result<(u64, u64)> {
    let (mut ok, mut denied) = (0, 0);
    for _ in 0..times {
        match open(path, libc::O_RDONLY) {
            Ok(()) => ok += 1,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => denied += 1,
            Err(e) => return Err(e),
        }
    }
    Ok((ok, denied))
}

/// Opens each of `paths` for reading in turn until `time` has passed: how many succeeded and how many
/// failed with EPERM (any other error ends the run).
fn open_cycle(paths: &[&str], time: std::time::Duration) -> std::io::Result<(u64, u64)> {
    let deadline = std::time::Instant::now() + time;
    let (mut ok, mut denied) = (0, 0);
    while std::time::Instant::now() < deadline {
        for path in paths {
            match open(path, libc::O_RDONLY) {
                Ok(()) => ok += 1,
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => denied += 1,
                Err(e) => return Err(e),
            }
        }
    }
    Ok((ok, denied))
}

/// The exec's own error (the program, a copy of `true`, exits 0 when it runs).
fn exec(path: &str) -> std::io::Result<()> {
    let status = std::process::Command::new(path).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("{path}: {status}")))
    }
}

fn connect(protocol: &str, address: IpAddr, port: u16) -> std::io::Result<()> {
    let target = SocketAddr::new(address, port);
    if protocol == "udp" {
        let local: SocketAddr =
            if address.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().map_err(std::io::Error::other)?;
        return std::net::UdpSocket::bind(local)?.connect(target);
    }
    std::net::TcpStream::connect_timeout(&target, std::time::Duration::from_secs(5)).map(drop)
}

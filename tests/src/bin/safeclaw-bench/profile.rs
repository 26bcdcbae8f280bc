//! A sampled CPU profile of one process (`perf record -e cpu-clock`): the daemon during the burst, or
//! a measured child during its open loop, reduced to the symbols that took the most samples.
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// Samples per second: low, so that sampling barely slows the daemon whose throughput is measured.
pub const DAEMON_FREQUENCY: u32 = 200;

/// A running `perf record` attached to one process, writing `data`.
pub struct Recording {
    perf: Child,
    data: String,
}

/// How long `perf record` may take to attach and start sampling (it synthesizes the events of every
/// process and BPF program first, seconds under TCG).
const ATTACH_TIMEOUT: Duration = Duration::from_secs(120);

/// How `finish` groups the samples.
#[derive(Clone, Copy)]
pub enum Sort {
    /// By object and symbol, symbols under 0.5 % left out.
    ObjectAndSymbol,
    /// By symbol alone, every symbol.
    Symbol,
}

/// Share of the samples and the symbol (with its object), most first.
pub type Top = Vec<(f64, String)>;

impl Recording {
    /// Samples `pid` `frequency` times a second until it exits. Returns once perf has acknowledged that
    /// its events are enabled, so that work started after the return is sampled from its first instant:
    /// perf starts with its events disabled and enables them on a command on its control fifo.
    pub fn attach(pid: u32, frequency: u32) -> anyhow::Result<Recording> {
        let data = format!("/tmp/safeclaw-bench-{pid}.perf");
        let control = format!("/tmp/safeclaw-bench-{pid}.perf-control");
        let ack = format!("/tmp/safeclaw-bench-{pid}.perf-ack");
        for fifo in [&control, &ack] {
            let _ = std::fs::remove_file(fifo);
            nix::unistd::mkfifo(fifo.as_str(), nix::sys::stat::Mode::from_bits_truncate(0o600))
                .with_context(|| format!("mkfifo {fifo}"))?;
        }
        let child = Command::new("perf")
            .args(["record", "-q", "-e", "cpu-clock", "-F", &frequency.to_string(), "-o", &data, "-D", "-1"])
            .arg(format!("--control=fifo:{control},{ack}"))
            .arg("-p")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run perf")?;
        let mut recording = Recording { perf: child, data };
        let enabled = recording.enable(&control, &ack);
        for fifo in [&control, &ack] {
            let _ = std::fs::remove_file(fifo);
        }
        if let Err(err) = enabled {
            let _ = recording.perf.kill();
            let mut stderr = String::new();
            if let Some(mut pipe) = recording.perf.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            let _ = recording.perf.wait();
            let _ = std::fs::remove_file(&recording.data);
            return Err(err.context(format!("perf record did not start sampling: {}", stderr.trim())));
        }
        Ok(recording)
    }

    /// Sends `enable` on perf's control fifo and waits for its `ack`.
    fn enable(&mut self, control: &str, ack: &str) -> anyhow::Result<()> {
        use std::io::{Read as _, Write as _};
        use std::os::unix::fs::OpenOptionsExt as _;
        // Read and write ends both: opening a fifo for one direction alone blocks until perf opens it.
        let open = |path: &str| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .with_context(|| format!("opening {path}"))
        };
        // The command stays in the fifo only while a descriptor is open on it: this one is held until
        // perf answers.
        let mut control = open(control)?;
        control.write_all(b"enable\n").context("writing to perf's control fifo")?;
        let mut ack = open(ack)?;
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        let mut answer = Vec::new();
        loop {
            let mut buffer = [0u8; 16];
            match ack.read(&mut buffer) {
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err).context("reading perf's ack fifo"),
            }
            if answer.starts_with(b"ack") {
                return Ok(());
            }
            if let Some(status) = self.perf.try_wait()? {
                bail!("perf record exited with {status}");
            }
            if Instant::now() > deadline {
                bail!("no ack within {} s", ATTACH_TIMEOUT.as_secs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for `perf record` to end (it does when the profiled process exits; at most a minute) and
    /// returns the `limit` symbols with the most samples.
    pub fn finish(mut self, limit: usize, sort: Sort) -> anyhow::Result<Top> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.perf.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.perf.kill();
                bail!("perf record did not end within 60 s of the profiled process's exit");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let (keys, limit_percent) = match sort {
            Sort::ObjectAndSymbol => ("dso,sym", "0.5"),
            Sort::Symbol => ("sym", "0"),
        };
        let report = crate::peers::run(
            "perf",
            &[
                "report",
                "-i",
                &self.data,
                "--stdio",
                "--no-children",
                "--sort",
                keys,
                "--percent-limit",
                limit_percent,
            ],
        );
        let _ = std::fs::remove_file(&self.data);
        let report = report?;
        Ok(parse(&report).into_iter().take(limit).collect())
    }
}

/// The `NN.NN%  object  [k] symbol` lines of `perf report --stdio`.
fn parse(report: &str) -> Top {
    report
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| {
            let (share, rest) = line.trim().split_once('%')?;
            Some((share.trim().parse().ok()?, rest.split_whitespace().collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn report_lines_become_shares_and_symbols() {
        let report = "# Samples: 10\n#\n    52.62%  safeclaw-agent  [k] clear_page_erms\n     1.5%  libc.so.6  [.] memcpy\n\n";
        let top = super::parse(report);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0], (52.62, "safeclaw-agent [k] clear_page_erms".to_string()));
        assert_eq!(top[1].1, "libc.so.6 [.] memcpy");
    }
}

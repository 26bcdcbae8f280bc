//! A sampled CPU profile of the daemon during the burst (`perf record -e cpu-clock`), reduced to the
//! symbols that took the most samples.
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// Samples per second: low, so that sampling barely slows the daemon whose throughput is measured.
const FREQUENCY: &str = "200";
const DATA: &str = "/tmp/safeclaw-bench-burst.perf";

/// A running `perf record` attached to one process.
pub struct Recording(Child);

/// Share of the samples and the symbol (with its object), most first.
pub type Top = Vec<(f64, String)>;

impl Recording {
    pub fn attach(pid: u32) -> anyhow::Result<Recording> {
        let child = Command::new("perf")
            .args(["record", "-q", "-e", "cpu-clock", "-F", FREQUENCY, "-o", DATA, "-p"])
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run perf")?;
        Ok(Recording(child))
    }

    /// Waits for `perf record` to end (it does when the profiled process exits; at most a minute) and
    /// returns the `limit` symbols with the most samples.
    pub fn finish(mut self, limit: usize) -> anyhow::Result<Top> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.0.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.0.kill();
                bail!("perf record did not end within 60 s of the daemon's exit");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let report = crate::peers::run(
            "perf",
            &[
                "report",
                "-i",
                DATA,
                "--stdio",
                "--no-children",
                "--sort",
                "dso,sym",
                "--percent-limit",
                "0.5",
            ],
        )?;
        let _ = std::fs::remove_file(DATA);
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

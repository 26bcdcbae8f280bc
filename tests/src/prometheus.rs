//! A real Prometheus (Debian's package, installed by `xtask/setup.sh`) scraping one target on
//! loopback, and reads through its HTTP query API. Shared by the VM metrics test and the native one
//! in safeclaw-agent (which includes this file by path): std and serde_json only.
use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PROMETHEUS: &str = "/usr/bin/prometheus";

/// A plain HTTP GET; the body of a 200 answer, else the status line or the error.
pub fn get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|e| e.to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no HTTP header")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(head.lines().next().unwrap_or_default().to_owned());
    }
    Ok(body.to_owned())
}

/// A loopback port nobody listens on (at the time of asking).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Prometheus scraping `target` every second, with its storage and log under a directory of the
/// caller's; stopped by its pid when dropped.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus and waits (bounded) until it answers `/-/ready`; the reason, with its own
    /// log, when it cannot.
    pub fn start(target: SocketAddr, dir: &Path) -> Result<Prometheus, String> {
        if !Path::new(PROMETHEUS).is_file() {
            return Err(format!(
                "{PROMETHEUS} is missing: `xtask/setup.sh` installs Debian's prometheus package"
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: safeclaw\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .map_err(|e| format!("{}: {e}", config.display()))?;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = dir.join("prometheus.log");
        let log_file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start {PROMETHEUS}: {e}"))?;
        let mut prometheus = Prometheus { child, addr, log };
        let started = Instant::now();
        while get(addr, "/-/ready").is_err() {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                return Err(format!("prometheus exited with {status}: {}", prometheus.log_text()));
            }
            if started.elapsed() > Duration::from_secs(180) {
                return Err(format!("prometheus was not ready after 180 s: {}", prometheus.log_text()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(prometheus)
    }

    /// Prometheus's own log (its stderr), for failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The instant query `expr` (URL-encoded by the caller): each series' (action, effect) labels
    /// (empty when absent) and value; empty when Prometheus has no answer yet.
    pub fn query(&self, expr: &str) -> BTreeMap<(String, String), u64> {
        let Ok(body) = get(self.addr, &format!("/api/v1/query?query={expr}")) else { return BTreeMap::new() };
        let Ok(answer) = serde_json::from_str::<serde_json::Value>(&body) else { return BTreeMap::new() };
        let mut series = BTreeMap::new();
        for result in answer["data"]["result"].as_array().into_iter().flatten() {
            let label = |key: &str| result["metric"][key].as_str().unwrap_or_default().to_owned();
            let value = result["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()).unwrap_or(-1.0);
            series.insert((label("action"), label("effect")), value as u64);
        }
        series
    }

    /// The value of a query with one series, if Prometheus has it.
    pub fn scalar(&self, expr: &str) -> Option<u64> {
        self.query(expr).into_values().next()
    }

    /// Polls (bounded by `within`) until each query in `expected` answers what it maps to; what
    /// Prometheus last answered, for the caller's assertion.
    pub fn wait_for(
        &self,
        expected: &BTreeMap<String, BTreeMap<(String, String), u64>>,
        within: Duration,
    ) -> BTreeMap<String, BTreeMap<(String, String), u64>> {
        let started = Instant::now();
        loop {
            let seen: BTreeMap<_, _> = expected.keys().map(|name| (name.clone(), self.query(name))).collect();
            if &seen == expected || started.elapsed() > within {
                return seen;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

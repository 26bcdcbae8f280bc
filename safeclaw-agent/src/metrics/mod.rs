//! The daemon's Prometheus endpoint (`run --metrics ADDR`, off by default): counters taken from the
//! audit entries as the daemon writes them, so that they always equal what the log says, served in
//! Prometheus's text format on a loopback address or a unix socket.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::audit::tail::{Filter, Style};

pub mod histogram;

/// Where the endpoint listens: a loopback TCP address, or a unix socket (`unix:/PATH`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricsAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::str::FromStr for MetricsAddr {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            return if path.starts_with('/') {
                Ok(MetricsAddr::Unix(PathBuf::from(path)))
            } else {
                Err(format!(
                    "{text:?}: a unix socket needs an absolute path (unix:/run/safeclaw/metrics.sock)"
                ))
            };
        }
        let addr: SocketAddr = text
            .parse()
            .map_err(|_| format!("{text:?}: expected 127.0.0.1:PORT, [::1]:PORT or unix:/PATH"))?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{addr}: metrics are served on loopback or a unix socket only (they name agents and \
                 actions); put an authenticating proxy in front to expose them"
            ));
        }
        Ok(MetricsAddr::Tcp(addr))
    }
}

/// What the entries written since the endpoint started say.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Attempts by (action, effect).
    pub decisions: BTreeMap<(String, String), u64>,
    pub entries: u64,
    pub gaps: u64,
    /// Kernel events that never reached the ring buffer (it was full, or their CPU had no free scratch
    /// slot); the kernel denied each.
    pub lost_kernel_events: u64,
    pub kernel_seq_resets: u64,
    pub lockdowns: u64,
    /// Times the agents were paused because the event ring was half full.
    pub agent_pauses: u64,
    pub policy_loads: u64,
    pub policy_reloads_rejected: u64,
    pub sessions_started: u64,
    pub sessions_ended: u64,
    pub write_recoveries: u64,
    /// Entries lost while the log could not be written (from `audit.write_recovered`).
    pub entries_dropped: u64,
    pub tamper_detected: u64,
    /// One past the highest sequence number seen: where a destination's cursor is measured from.
    pub next_sequence: Option<u64>,
}

impl Counts {
    /// Counts one audit entry.
    pub fn add(&mut self, entry: &Value) {
        self.entries += 1;
        if let Some(sequence) = entry["sequence"].as_u64() {
            self.next_sequence = Some(self.next_sequence.unwrap_or(0).max(sequence + 1));
        }
        let action = entry["action"].as_str().unwrap_or_default();
        let detail = |name: &str| entry["details"][name].as_u64().unwrap_or(0);
        match action {
            "audit.gap" => {
                self.gaps += 1;
                self.lost_kernel_events += detail("count");
            }
            "audit.kernel_seq_reset" => self.kernel_seq_resets += 1,
            "kernel.lockdown_on" => self.lockdowns += 1,
            "daemon.agents_paused" => self.agent_pauses += 1,
            "policy.load" => self.policy_loads += 1,
            "policy.reload_rejected" => self.policy_reloads_rejected += 1,
            "session.start" => self.sessions_started += 1,
            "session.end" => self.sessions_ended += 1,
            "audit.write_recovered" => {
                self.write_recoveries += 1;
                self.entries_dropped += detail("dropped");
            }
            "audit.tamper_detected" => self.tamper_detected += 1,
            _ => {
                if let Some(effect) = entry["effect"].as_str() {
                    *self.decisions.entry((action.to_owned(), effect.to_owned())).or_default() += 1;
                }
            }
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of these counts and `rss_bytes`.
    pub fn render(&self, rss_bytes: Option<u64>) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
        };
        metric(
            "safeclaw_audit_entries_total",
            "counter",
            "Audit entries written (rate() gives entries per second).",
            self.entries,
        );
        metric(
            "safeclaw_gaps_total",
            "counter",
            "audit.gap entries: runs of kernel events that could not be recorded.",
            self.gaps,
        );
        metric(
            "safeclaw_ring_full_denials_total",
            "counter",
            "Kernel events that never reached the ring buffer (full, or no free scratch slot); each was denied.",
            self.lost_kernel_events,
        );
        metric(
            "safeclaw_agent_pauses_total",
            "counter",
            "Times the agents were paused (cgroup frozen) because the event ring was half full.",
            self.agent_pauses,
        );
        metric(
            "safeclaw_kernel_seq_resets_total",
            "counter",
            "Kernel sequence resets (a new kernel session).",
            self.kernel_seq_resets,
        );
        metric(
            "safeclaw_lockdowns_total",
            "counter",
            "Lockdowns: every agent action denied while the log could not be written.",
            self.lockdowns,
        );
        metric(
            "safeclaw_policy_loads_total",
            "counter",
            "Policies loaded (the first and every accepted reload).",
            self.policy_loads,
        );
        metric(
            "safeclaw_policy_reloads_rejected_total",
            "counter",
            "Reloads refused; the previous policy kept enforcing.",
            self.policy_reloads_rejected,
        );
        metric(
            "safeclaw_write_recoveries_total",
            "counter",
            "Times the log became writable again after failing.",
            self.write_recoveries,
        );
        metric(
            "safeclaw_entries_dropped_total",
            "counter",
            "Entries lost while the log could not be written.",
            self.entries_dropped,
        );
        metric(
            "safeclaw_tamper_detected_total",
            "counter",
            "Damage the writer found in its own log on start.",
            self.tamper_detected,
        );
        metric(
            "safeclaw_sessions_live",
            "gauge",
            "Agent sessions started and not yet ended.",
            self.sessions_started.saturating_sub(self.sessions_ended),
        );
        if let Some(rss) = rss_bytes {
            metric("safeclaw_resident_memory_bytes", "gauge", "The daemon's resident memory.", rss);
        }
        out.push_str("# HELP safeclaw_decisions_total Agent attempts recorded, by action and effect.\n");
        out.push_str("# TYPE safeclaw_decisions_total counter\n");
        for ((action, effect), count) in &self.decisions {
            let _ = writeln!(
                out,
                "safeclaw_decisions_total{{action=\"{}\",effect=\"{}\"}} {count}",
                label(action),
                label(effect)
            );
        }
        out
    }
}

/// A label value with `\`, `"` and newlines escaped, as the text format requires.
fn label(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Resident memory of this process, from /proc/self/statm.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok()??;
    Some(pages * u64::try_from(page).ok()?)
}

/// Counts shared between the log follower and the endpoint, and the remote destinations' cursor files.
#[derive(Clone, Default)]
pub struct Metrics {
    counts: Arc<Mutex<Counts>>,
    /// (destination name, its status file): lag is read from the cursor at each scrape.
    destinations: Arc<Vec<(String, PathBuf)>>,
}

impl Metrics {
    /// Follows `active` (across rotation) from its current end on a thread of its own, counting each
    /// entry as it is written.
    pub fn follow(active: &Path) -> Metrics {
        let metrics = Metrics::default();
        let sink = metrics.clone();
        let active = active.to_owned();
        let spawned = std::thread::Builder::new().name("metrics-follow".into()).spawn(move || {
            let mut lines = LineCounter { metrics: sink, partial: Vec::new() };
            loop {
                let outcome = crate::audit::tail::run(
                    &active,
                    &Filter::default(),
                    0,
                    true,
                    Style::Json,
                    false,
                    &mut lines,
                );
                if let Err(e) = outcome {
                    tracing::warn!("metrics: cannot follow {}: {e}; retrying", active.display());
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        if let Err(e) = spawned {
            tracing::error!("metrics: cannot start the log follower: {e}");
        }
        metrics
    }

    pub fn counts(&self) -> Counts {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Also reports each remote destination's lag, from its status file (`crate::destinations`).
    pub fn with_destinations(mut self, status_files: Vec<(String, PathBuf)>) -> Metrics {
        self.destinations = Arc::new(status_files);
        self
    }

    /// One scrape: the counts, memory, destination lag, and the writer's latency histograms.
    pub fn render(&self) -> String {
        let counts = self.counts();
        let mut out = counts.render(resident_bytes());
        if let (Some(end), false) = (counts.next_sequence, self.destinations.is_empty()) {
            out.push_str("# HELP safeclaw_destination_lag_entries Entries written and not yet delivered.\n");
            out.push_str("# TYPE safeclaw_destination_lag_entries gauge\n");
            let mut failing = String::new();
            for (name, path) in self.destinations.iter() {
                // A destination whose cursor cannot be read has delivered nothing we can vouch for.
                let status =
                    crate::destinations::status::Status::load(path).ok().flatten().unwrap_or_default();
                let name = label(name);
                let _ = writeln!(
                    out,
                    "safeclaw_destination_lag_entries{{destination=\"{name}\"}} {}",
                    end.saturating_sub(status.delivered)
                );
                let _ = writeln!(
                    failing,
                    "safeclaw_destination_failing{{destination=\"{name}\"}} {}",
                    u8::from(status.failing_since.is_some())
                );
            }
            out.push_str("# HELP safeclaw_destination_failing 1 while deliveries to the destination fail.\n");
            out.push_str("# TYPE safeclaw_destination_failing gauge\n");
            out.push_str(&failing);
        }
        histogram::APPEND.render(
            "safeclaw_audit_append_seconds",
            "Time to seal one attempt into the chain in memory (hash and serialise).",
            &mut out,
        );
        histogram::COMMIT.render(
            "safeclaw_audit_commit_seconds",
            "Time of one group commit: write, fsync and the signed head file.",
            &mut out,
        );
        out
    }
}

/// Takes the raw JSON lines `audit tail --json` would print and counts them.
struct LineCounter {
    metrics: Metrics,
    partial: Vec<u8>,
}

impl io::Write for LineCounter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.partial.extend_from_slice(bytes);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            if let (Ok(entry), Ok(mut counts)) =
                (serde_json::from_slice::<Value>(&line), self.metrics.counts.lock())
            {
                counts.add(&entry);
            }
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A bound endpoint; `local_addr` is the TCP address (port 0 picks one).
pub enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, PathBuf),
}

impl Listener {
    pub async fn bind(addr: &MetricsAddr) -> io::Result<Listener> {
        match addr {
            MetricsAddr::Tcp(addr) => Ok(Listener::Tcp(tokio::net::TcpListener::bind(addr).await?)),
            MetricsAddr::Unix(path) => {
                let listener = tokio::net::UnixListener::bind(path)?;
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
                Ok(Listener::Unix(listener, path.clone()))
            }
        }
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(listener) => listener.local_addr().ok(),
            Listener::Unix(..) => None,
        }
    }

    /// Answers scrapes until the runtime ends; a unix socket is removed then.
    pub async fn serve(self, metrics: Metrics) {
        loop {
            let accepted = match &self {
                Listener::Tcp(listener) => {
                    listener.accept().await.map(|(s, _)| Box::new(s) as Box<dyn Stream>)
                }
                Listener::Unix(listener, _) => {
                    listener.accept().await.map(|(s, _)| Box::new(s) as Box<dyn Stream>)
                }
            };
            match accepted {
                Ok(stream) => {
                    tokio::spawn(answer(stream, metrics.clone()));
                }
                Err(e) => {
                    tracing::warn!("metrics: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Largest request read; a scrape is one short GET.
const MAX_REQUEST: usize = 8 << 10;

/// One HTTP/1.x exchange: `GET /metrics` gets the counts, anything else a 404, then the connection closes.
async fn answer(mut stream: Box<dyn Stream>, metrics: Metrics) {
    let mut request = Vec::with_capacity(1024);
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        io::Result::Ok(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return;
    }
    let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
    let (status, body) = if line.starts_with(b"GET /metrics ") || line == b"GET /metrics" {
        ("200 OK", metrics.render())
    } else {
        ("404 Not Found", "only GET /metrics is served\n".to_owned())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_loopback_or_unix_only() {
        assert_eq!("127.0.0.1:9464".parse(), Ok(MetricsAddr::Tcp("127.0.0.1:9464".parse().unwrap())));
        assert!("[::1]:9464".parse::<MetricsAddr>().is_ok());
        assert_eq!("unix:/run/safeclaw/m.sock".parse(), Ok(MetricsAddr::Unix("/run/safeclaw/m.sock".into())));
        let e = "0.0.0.0:9464".parse::<MetricsAddr>().unwrap_err();
        assert!(e.contains("loopback or a unix socket only"), "{e}");
        assert!("unix:relative.sock".parse::<MetricsAddr>().is_err());
        assert!("localhost:80".parse::<MetricsAddr>().is_err());
    }

    #[test]
    fn counts_and_renders_what_the_entries_say() {
        let mut counts = Counts::default();
        for entry in [
            serde_json::json!({"action": "file.read", "effect": "deny"}),
            serde_json::json!({"action": "file.read", "effect": "deny"}),
            serde_json::json!({"action": "process.exec", "effect": "allow"}),
            serde_json::json!({"action": "audit.gap", "details": {"count": 4}}),
            serde_json::json!({"action": "kernel.lockdown_on"}),
            serde_json::json!({"action": "daemon.agents_paused"}),
            serde_json::json!({"action": "session.start"}),
            serde_json::json!({"action": "policy.reload_rejected"}),
        ] {
            counts.add(&entry);
        }
        assert_eq!(counts.entries, 8);
        assert_eq!((counts.gaps, counts.lost_kernel_events, counts.lockdowns), (1, 4, 1));
        let text = counts.render(Some(4096));
        for line in [
            "safeclaw_decisions_total{action=\"file.read\",effect=\"deny\"} 2",
            "safeclaw_decisions_total{action=\"process.exec\",effect=\"allow\"} 1",
            "safeclaw_ring_full_denials_total 4",
            "safeclaw_agent_pauses_total 1",
            "safeclaw_sessions_live 1",
            "safeclaw_policy_reloads_rejected_total 1",
            "safeclaw_resident_memory_bytes 4096",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}

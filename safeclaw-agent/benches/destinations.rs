//! Delivery rate of each remote destination on loopback (a real rsyslog, the tests' Python webhook
//! receiver, moto's S3 server with object lock), and the writer's append rate while every destination
//! delivers against file-only. Results: docs/benchmarks.md.
//!
//! `cargo bench -p safeclaw-agent --bench destinations [-- NAME…]` (needs rsyslog, rsyslog-gnutls,
//! python3 and moto, as installed by xtask/setup.sh); NAMEs pick the cases whose name contains one
//! (`udp-cef`, `s3`, `append`, …). Each measurement runs `REPEATS` times with fresh servers, interleaved.
#[path = "../tests/destinations_support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use safeclaw_agent::config::Config;
use support::moto::{Moto, BUCKET};
use support::rsyslog::Rsyslog;
use support::webhook::HookServer;
use support::{wait_for, Workspace};

const ENTRIES: u64 = 200_000;
const REPEATS: usize = 3;
/// Rounds of the append comparison: its spread on a shared machine is wide.
const APPEND_REPEATS: usize = 7;
/// The destinations on in the append comparison: one of each kind.
const ALL_ON: [&str; 5] = ["udp-cef", "tcp-cef", "tls-cef", "hook-1000", "s3"];

/// Fresh receivers for one measurement; dropping them stops them and frees what they received.
struct Servers {
    rsyslog: Rsyslog,
    hooks: HookServer,
    moto: Moto,
    _dir: tempfile::TempDir,
}

impl Servers {
    fn start() -> Servers {
        let dir = tempfile::tempdir().unwrap();
        let hooks = HookServer::start(dir.path());
        let moto = Moto::start().expect("moto_server is not installed: run xtask/setup.sh");
        Servers { rsyslog: Rsyslog::start(), hooks, moto, _dir: dir }
    }

    fn syslog(&self, name: &str, protocol: &str, format: &str) -> String {
        let (port, tls) = match protocol {
            "udp" => (self.rsyslog.udp, String::new()),
            "tcp" => (self.rsyslog.tcp, String::new()),
            _ => (
                self.rsyslog.tls,
                format!(
                    "      tls:\n        caFile: {}\n        serverName: localhost\n",
                    self.rsyslog.ca().display()
                ),
            ),
        };
        format!(
            "    - type: syslog\n      name: {name}\n      host: 127.0.0.1\n      port: {port}\n      protocol: {protocol}\n      format: {format}\n{tls}"
        )
    }

    fn webhook(&self, name: &str, batch: u32) -> String {
        format!(
            "    - type: webhook\n      name: {name}\n      url: http://127.0.0.1:{}/hook\n      batchSize: {batch}\n      flushInterval: 100ms\n      secret: s3cret\n",
            self.hooks.port
        )
    }

    fn s3(&self, name: &str) -> String {
        format!(
            "    - type: s3\n      name: {name}\n      bucket: {BUCKET}\n      prefix: \"bench/{{{{host}}}}/\"\n      objectLock: true\n      retentionMode: COMPLIANCE\n      retentionDays: 7\n      endpoint: \"{}\"\n",
            self.moto.endpoint()
        )
    }

    /// The configured destination `name` of kind `case`.
    fn destination(&self, case: &str, name: &str) -> String {
        match case {
            "udp-cef" => self.syslog(name, "udp", "cef"),
            "tcp-cef" => self.syslog(name, "tcp", "cef"),
            "tls-cef" => self.syslog(name, "tls", "cef"),
            "tcp-json" => self.syslog(name, "tcp", "json"),
            "tls-json" => self.syslog(name, "tls", "json"),
            "hook-100" => self.webhook(name, 100),
            "hook-1000" => self.webhook(name, 1000),
            "s3" => self.s3(name),
            _ => unreachable!("{case}"),
        }
    }

    /// Asserts the bucket holds `segments` segment objects and the head covering `end`, all locked.
    fn assert_stored(&self, segments: usize, end: u64) {
        let head = safeclaw_agent::destinations::s3::head_object_name(end);
        let found = self.moto.python(&format!(
            r#"
keys = all_keys('{BUCKET}')
assert all(s3.head_object(Bucket='{BUCKET}', Key=k)['ObjectLockMode'] == 'COMPLIANCE' for k in keys)
print(sum(1 for k in keys if '/head-' not in k), any(k.endswith('/{head}') for k in keys))
"#
        ));
        assert_eq!(found.trim(), format!("{segments} True"), "segment objects and final head");
    }
}

/// Writes the config for `destinations` (rotated segments zstd-compressed as the writer does; the S3
/// head put at most once a second).
fn config(workspace: &Workspace, destinations: &str) -> Config {
    let path = workspace.dir.path().join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "audit:\n  checkpoint:\n    interval: 1s\n  rotation:\n    compress: zstd\n  destinations:\n{destinations}"
        ),
    )
    .unwrap();
    Config::load(Some(&path)).unwrap()
}

fn start(workspace: &Workspace, config: &Config) -> safeclaw_agent::destinations::engine::Deliveries {
    safeclaw_agent::destinations::start(config, &workspace.active(), &workspace.state().join("audit.head"))
        .unwrap()
}

/// Entries per second until destination `name` (kind `case`) has delivered the whole log: every
/// entry, or for S3 every sealed segment (the head goes first), stored and confirmed locked.
fn delivery_rate(workspace: &Workspace, case: &str, name: &str) -> f64 {
    let servers = Servers::start();
    let config = config(workspace, &servers.destination(case, name));
    let end = if case == "s3" { workspace.sealed_end() } else { workspace.durable_end() };
    let start_time = Instant::now();
    let deliveries = start(workspace, &config);
    wait_for(name, Duration::from_secs(900), || workspace.status(name).delivered == end);
    let elapsed = start_time.elapsed();
    deliveries.stop();
    if case == "s3" {
        servers.assert_stored(workspace.rotated(), workspace.durable_end());
    }
    end as f64 / elapsed.as_secs_f64()
}

/// CPU seconds (user and system) this process has used so far: the writer and the delivery threads,
/// not the receivers, which are other processes.
fn cpu_seconds() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes the struct it is given.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Seconds to append `ENTRIES` attempts (commit every 500, as the daemon's bursts do) to a new log,
/// with every destination delivering from it when `servers` is given; and this process's CPU seconds
/// meanwhile.
fn append_seconds(servers: Option<&Servers>) -> (f64, f64) {
    let workspace = Workspace::new();
    let cpu_start = cpu_seconds();
    let deliveries = servers.map(|s| {
        let all = ALL_ON.map(|case| s.destination(case, case)).concat();
        start(&workspace, &config(&workspace, &all))
    });
    let start_time = Instant::now();
    workspace.write_in_background(ENTRIES, Duration::ZERO).join().unwrap();
    let seconds = start_time.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_start;
    if let Some(deliveries) = deliveries {
        deliveries.stop();
        let cursors: Vec<String> =
            ALL_ON.map(|name| format!("{name} {}", workspace.status(name).delivered)).to_vec();
        println!("    delivered when the writer finished: {}", cursors.join(", "));
    }
    (seconds, cpu)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split(' ')
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `median (min–max)` of `values`.
fn summary(values: &mut [f64]) -> String {
    values.sort_by(f64::total_cmp);
    format!("{:.0} ({:.0}–{:.0})", values[values.len() / 2], values[0], values[values.len() - 1])
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benchmarks; this one has no cheap form.
    }
    let picked: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wanted = |case: &str| picked.is_empty() || picked.iter().any(|p| case.contains(p.as_str()));
    let cases: Vec<&str> =
        ["udp-cef", "tcp-cef", "tls-cef", "tcp-json", "tls-json", "hook-100", "hook-1000", "s3"]
            .into_iter()
            .filter(|c| wanted(c))
            .collect();
    let workspace = Workspace::new();
    if !cases.is_empty() {
        workspace.write_in_background(ENTRIES, Duration::ZERO).join().unwrap();
        println!(
            "log: {} entries, {} sealed in {} rotated segments (4 MiB each before zstd)",
            workspace.durable_end(),
            workspace.sealed_end(),
            workspace.rotated()
        );
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..REPEATS {
        println!("round {round}, load {}", load());
        for (i, case) in cases.iter().enumerate() {
            let rate = delivery_rate(&workspace, case, &format!("{case}-{round}"));
            println!("  {case}: {rate:.0} entries/s (load {})", load());
            rates[i].push(rate);
        }
    }
    for (case, rates) in cases.iter().zip(&mut rates) {
        println!("| {case} | {} entries/s |", summary(rates));
    }
    if !wanted("append") {
        return;
    }
    let (mut file_only, mut all_on, mut ratios, mut cpu_alone, mut cpu_busy) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..APPEND_REPEATS {
        let servers = Servers::start();
        // Alternate which goes first, so a load change between the two does not always favour one.
        let ((alone, alone_cpu), (busy, busy_cpu)) = if round % 2 == 0 {
            let alone = append_seconds(None);
            (alone, append_seconds(Some(&servers)))
        } else {
            let busy = append_seconds(Some(&servers));
            (append_seconds(None), busy)
        };
        println!(
            "  append round {round}: file only {:.0}/s ({alone_cpu:.1} s CPU), all destinations {:.0}/s ({busy_cpu:.1} s CPU), {:.1} %, load {}",
            ENTRIES as f64 / alone,
            ENTRIES as f64 / busy,
            100.0 * alone / busy,
            load()
        );
        file_only.push(ENTRIES as f64 / alone);
        all_on.push(ENTRIES as f64 / busy);
        ratios.push(100.0 * alone / busy);
        cpu_alone.push(1e6 * alone_cpu / ENTRIES as f64);
        cpu_busy.push(1e6 * busy_cpu / ENTRIES as f64);
    }
    println!(
        "append: file only {} entries/s; all destinations on {} entries/s; ratio {} %; CPU of this process per entry: file only {} µs, all on {} µs",
        summary(&mut file_only),
        summary(&mut all_on),
        summary(&mut ratios),
        summary(&mut cpu_alone),
        summary(&mut cpu_busy)
    );
}

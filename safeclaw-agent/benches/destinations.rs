//! Delivery rate of each remote destination on loopback (a real rsyslog and a Python http.server), and
//! the writer's append rate while destinations deliver against file-only. Results: docs/benchmarks.md.
//!
//! `cargo bench -p safeclaw-agent --bench destinations` (needs rsyslog, rsyslog-gnutls and python3, as
//! installed by xtask/setup.sh).
#[path = "../tests/destinations_support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use safeclaw_agent::config::Config;
use support::rsyslog::Rsyslog;
use support::webhook::HookServer;
use support::{wait_for, Workspace};

const ENTRIES: u64 = 200_000;

/// Delivers the workspace's log to the one destination `yaml` describes (named `name`), returning
/// entries per second until every entry was confirmed delivered.
fn delivery_rate(workspace: &Workspace, name: &str, yaml: &str) -> f64 {
    let config_path = workspace.config(yaml);
    let config = Config::load(Some(&config_path)).unwrap();
    let end = workspace.durable_end();
    let start = Instant::now();
    let deliveries = safeclaw_agent::destinations::start(
        &config,
        &workspace.active(),
        &workspace.state().join("audit.head"),
    )
    .unwrap();
    wait_for(name, Duration::from_secs(600), || workspace.status(name).delivered == end);
    let elapsed = start.elapsed();
    deliveries.stop();
    end as f64 / elapsed.as_secs_f64()
}

/// Seconds to append `ENTRIES` attempts (commit every 500, as the daemon's bursts do).
fn append_seconds(workspace: &Workspace) -> f64 {
    let start = Instant::now();
    workspace.write_in_background(ENTRIES, Duration::ZERO).join().unwrap();
    start.elapsed().as_secs_f64()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benchmarks; this one has no cheap form.
    }
    let rsyslog = Rsyslog::start();
    let workspace = Workspace::new();
    workspace.write_in_background(ENTRIES, Duration::ZERO).join().unwrap();
    let hooks = HookServer::start(workspace.dir.path());
    let ca = rsyslog.ca();
    let syslog = |name: &str, port: u16, protocol: &str, format: &str| {
        let tls = match protocol {
            "tls" => format!("      tls:\n        caFile: {}\n        serverName: localhost\n", ca.display()),
            _ => String::new(),
        };
        format!(
            "    - type: syslog\n      name: {name}\n      host: 127.0.0.1\n      port: {port}\n      protocol: {protocol}\n      format: {format}\n{tls}"
        )
    };
    let webhook = |name: &str, batch: u32| {
        format!(
            "    - type: webhook\n      name: {name}\n      url: http://127.0.0.1:{}/hook\n      batchSize: {batch}\n      flushInterval: 100ms\n      secret: s3cret\n",
            hooks.port
        )
    };
    let cases = [
        ("syslog UDP, CEF", "udp-cef", syslog("udp-cef", rsyslog.udp, "udp", "cef")),
        ("syslog TCP, CEF", "tcp-cef", syslog("tcp-cef", rsyslog.tcp, "tcp", "cef")),
        ("syslog TCP, JSON", "tcp-json", syslog("tcp-json", rsyslog.tcp, "tcp", "json")),
        ("syslog TLS, JSON", "tls-json", syslog("tls-json", rsyslog.tls, "tls", "json")),
        ("webhook, batches of 100", "hook-100", webhook("hook-100", 100)),
        ("webhook, batches of 1000", "hook-1000", webhook("hook-1000", 1000)),
    ];
    println!("{ENTRIES} entries (plus the writer's own), each destination alone:");
    for (label, name, yaml) in &cases {
        let rate = delivery_rate(&workspace, name, yaml);
        println!("| {label} | {rate:.0} entries/s |");
    }
    let alone = Workspace::new();
    let file_only = append_seconds(&alone);
    let busy = Workspace::new();
    let config_path =
        busy.config(&format!("{}{}", syslog("tcp", rsyslog.tcp, "tcp", "cef"), webhook("hook", 1000)));
    let config = Config::load(Some(Path::new(&config_path))).unwrap();
    let deliveries =
        safeclaw_agent::destinations::start(&config, &busy.active(), &busy.state().join("audit.head"))
            .unwrap();
    let with_destinations = append_seconds(&busy);
    deliveries.stop();
    println!(
        "append: file only {:.0} entries/s; with syslog TCP CEF and webhook delivering {:.0} entries/s ({:.0} %)",
        ENTRIES as f64 / file_only,
        ENTRIES as f64 / with_destinations,
        100.0 * file_only / with_destinations
    );
}

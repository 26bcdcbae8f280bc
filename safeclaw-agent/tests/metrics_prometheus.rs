//! `run --metrics`: a real Prometheus (Debian's package) scrapes the endpoint while entries are written,
//! and the counters read back through its query API equal the counts of the log itself.
//!
//! Native, not in the VM: what a real session cannot produce on demand (ring-full gaps, lockdowns,
//! refused reloads, a failing destination's lag, the commit histogram's buckets) is written here
//! with the real writer, log follower and endpoint. Decisions by action and effect from a real
//! session are checked in the VM (tests/tests/metrics.rs).
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use safeclaw_agent::audit::synthetic::record;
use safeclaw_agent::audit::{AuditWriter, Lifecycle, WriterOptions};
use safeclaw_agent::metrics::{Listener, Metrics, MetricsAddr};
use serde_json::Value;

/// The VM tests' Prometheus helper, shared by path (this crate cannot depend on theirs).
#[path = "../../tests/src/prometheus.rs"]
mod prometheus;
use prometheus::{get, Prometheus};

/// What the log holds from line `from` on, counted here independently of the agent's own counting.
fn log_counts(active: &Path, from: usize) -> BTreeMap<String, BTreeMap<(String, String), u64>> {
    let text = std::fs::read_to_string(active).unwrap();
    let mut counts: BTreeMap<String, BTreeMap<(String, String), u64>> = BTreeMap::new();
    let mut bump = |metric: &str, key: (String, String), by: u64| {
        *counts.entry(metric.to_owned()).or_default().entry(key).or_default() += by;
    };
    let none = || (String::new(), String::new());
    for line in text.lines().skip(from) {
        let entry: Value = serde_json::from_str(line).unwrap();
        let action = entry["action"].as_str().unwrap().to_owned();
        bump("safeclaw_audit_entries_total", none(), 1);
        match action.as_str() {
            "audit.gap" => {
                bump("safeclaw_ring_full_denials_total", none(), entry["details"]["count"].as_u64().unwrap())
            }
            "kernel.lockdown_on" => bump("safeclaw_lockdowns_total", none(), 1),
            "policy.reload_rejected" => bump("safeclaw_policy_reloads_rejected_total", none(), 1),
            _ => {}
        }
    }
    counts
}

#[test]
fn prometheus_reads_back_the_counts_the_log_holds() {
    let dir = tempfile::tempdir().unwrap();
    let active = dir.path().join("log/audit.jsonl");
    let mut opts = WriterOptions::new(&active).with_state_dir(&dir.path().join("state"));
    opts.gap_wait = Duration::ZERO;
    let mut writer = AuditWriter::open(opts).unwrap();
    writer.log(&Lifecycle::KernelSessionStart);
    writer.commit().unwrap();
    let before = std::fs::read_to_string(&active).unwrap().lines().count();

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    // A destination that has delivered entries 0..10 and is failing.
    let status_file = dir.path().join("state/destinations/siem.json");
    let status = safeclaw_agent::destinations::status::Status {
        delivered: 10,
        failing_since: Some("2026-01-01T00:00:00.000Z".into()),
        ..Default::default()
    };
    status.save(&status_file).unwrap();
    let metrics = Metrics::follow(&active).with_destinations(vec![("siem".into(), status_file)]);
    let listener =
        runtime.block_on(Listener::bind(&MetricsAddr::Tcp("127.0.0.1:0".parse().unwrap()))).unwrap();
    let endpoint = listener.local_addr().unwrap();
    runtime.spawn(listener.serve(metrics.clone()));
    assert!(get(endpoint, "/other").unwrap_err().contains("404"));
    // The follower has read the log's end (and counted nothing) once the endpoint answers with zero.
    let started = Instant::now();
    while !get(endpoint, "/metrics").is_ok_and(|body| body.contains("safeclaw_audit_entries_total 0")) {
        assert!(started.elapsed() < Duration::from_secs(10), "the endpoint never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));

    let prometheus = Prometheus::start(endpoint, &dir.path().join("prometheus"))
        .unwrap_or_else(|reason| panic!("Prometheus could not start: {reason}"));

    // A session's worth of attempts, with a hole in the kernel sequence (9 events the ring could not
    // take), a lockdown and a refused reload.
    for kernel_seq in (0..=120).chain(130..=200) {
        writer.append(&record(kernel_seq));
        if kernel_seq % 50 == 0 {
            writer.commit().unwrap();
        }
    }
    writer.tick().unwrap();
    writer.log(&Lifecycle::LockdownOn { reason: "test".into() });
    writer.log(&Lifecycle::LockdownOff);
    writer.log(&Lifecycle::PolicyReloadRejected { source: "p.yaml".into(), error: "bad".into() });
    writer.commit().unwrap();
    let expected = log_counts(&active, before);
    assert_eq!(
        expected["safeclaw_ring_full_denials_total"][&(String::new(), String::new())],
        9,
        "{expected:?}"
    );

    let seen = prometheus.wait_for(&expected, Duration::from_secs(90));
    assert_eq!(seen, expected, "what Prometheus scraped differs from the log");

    // The writer's commit histogram (this process's writer) and the destination's lag, through Prometheus.
    let written = std::fs::read_to_string(&active).unwrap().lines().count() as u64;
    let scalar = |name: &str| prometheus.scalar(name);
    let started = Instant::now();
    while scalar("safeclaw_destination_lag_entries") != Some(written - 10) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "lag {:?}, expected {}",
            scalar("safeclaw_destination_lag_entries"),
            written - 10
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(scalar("safeclaw_destination_failing"), Some(1));
    assert!(scalar("safeclaw_audit_commit_seconds_count").is_some_and(|n| n >= 5), "every commit is timed");
    let under_5s = scalar("safeclaw_audit_commit_seconds_bucket%7Ble%3D%225%22%7D");
    assert_eq!(under_5s, scalar("safeclaw_audit_commit_seconds_count"));
    writer.close().unwrap();
}

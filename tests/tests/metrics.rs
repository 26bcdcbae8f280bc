//! `run --metrics` on a real kernel: Debian's Prometheus scrapes the daemon while a real agent
//! session (`safeclaw-agent exec`) opens files it may and may not read, and the decisions read back
//! through Prometheus's query API equal the audit log's own count of them by action and effect.
use std::collections::BTreeMap;
use std::time::Duration;

use safeclaw_integration::prometheus::{free_port, get, Prometheus};
use safeclaw_integration::{read_entries, Daemon, RunAs};

const NAME: &str = "safeclaw-it-metrics";

const POLICY: &str = r#"
version: 1
default: allow
rules:
  - name: secret-read
    action: file.read
    effect: deny
    paths: [/tmp/safeclaw-it-metrics/files/secret-*.txt]
  - name: forbidden-binary
    action: process.exec
    effect: deny
    binary: [/tmp/safeclaw-it-metrics/files/forbidden.sh]
"#;

/// Decisions (action, effect) in the log, counted here independently of the agent's own counting.
fn decisions_in(entries: &[serde_json::Value]) -> BTreeMap<(String, String), u64> {
    let mut counts = BTreeMap::new();
    for entry in entries {
        let action = entry["action"].as_str().unwrap_or_default();
        // Lifecycle entries (daemon.*, session.*, policy.*, audit.*, kernel.*) carry no decision.
        let lifecycle =
            ["daemon.", "session.", "policy.", "audit.", "kernel."].iter().any(|p| action.starts_with(p));
        if let (false, Some(effect)) = (lifecycle, entry["effect"].as_str()) {
            *counts.entry((action.to_owned(), effect.to_owned())).or_default() += 1;
        }
    }
    counts
}

#[test]
fn prometheus_scrapes_the_decisions_a_session_made() {
    let port = free_port();
    let endpoint = format!("127.0.0.1:{port}");
    let daemon = Daemon::start_with(NAME, POLICY, &["--metrics", &endpoint]);
    let endpoint = endpoint.parse().unwrap();
    let metrics = get(endpoint, "/metrics").expect("the daemon serves /metrics once it enforces");
    assert!(metrics.contains("safeclaw_audit_entries_total"), "{metrics}");

    // Prometheus's storage on the guest's tmpfs (the host's tree is read-only in the VM).
    let prometheus = Prometheus::start(endpoint, &daemon.work().join("prometheus"))
        .unwrap_or_else(|reason| panic!("Prometheus could not start: {reason}"));

    let files = daemon.files_dir();
    for name in ["public-1.txt", "public-2.txt", "secret-1.txt", "secret-2.txt"] {
        std::fs::write(files.join(name), "x").unwrap();
    }
    std::fs::write(files.join("forbidden.sh"), "#!/bin/sh\necho ran\n").unwrap();
    safeclaw_integration::give_to_nobody(&files.join("forbidden.sh"), 0o755);
    let f = |name: &str| files.join(name).display().to_string();
    // Each read in its own process, so that one denial does not end the script.
    let script = format!(
        "for f in {p1} {s1} {p2} {s2} {p1}; do cat $f >/dev/null 2>&1; done; {x} >/dev/null 2>&1; exit 0",
        p1 = f("public-1.txt"),
        p2 = f("public-2.txt"),
        s1 = f("secret-1.txt"),
        s2 = f("secret-2.txt"),
        x = f("forbidden.sh"),
    );
    let out = daemon.session("metrics", RunAs::Nobody, &["/bin/sh", "-c", &script]);
    assert!(out.status.success(), "the session did not complete: {out:?}");

    // The log is written in group commits: wait (bounded) until the session's end and its three
    // denials are in it and nothing more arrives.
    let deny = |decisions: &BTreeMap<(String, String), u64>, action: &str| {
        decisions.get(&(action.to_owned(), "deny".to_owned())).copied().unwrap_or(0)
    };
    let started = std::time::Instant::now();
    let mut entries = read_entries(&daemon.audit_log);
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let now = read_entries(&daemon.audit_log);
        let decisions = decisions_in(&now);
        let complete = now.iter().any(|e| e["action"] == "session.end")
            && deny(&decisions, "file.read") >= 2
            && deny(&decisions, "process.exec") >= 1;
        if (complete && now.len() == entries.len()) || started.elapsed() > Duration::from_secs(60) {
            entries = now;
            break;
        }
        entries = now;
    }
    let decisions = decisions_in(&entries);
    assert_eq!(deny(&decisions, "file.read"), 2, "both secret reads denied: {decisions:?}");
    assert_eq!(deny(&decisions, "process.exec"), 1, "the forbidden exec denied: {decisions:?}");
    assert!(
        decisions.keys().any(|(_, effect)| effect == "allow"),
        "the session's allowed attempts are in the log too: {decisions:?}"
    );
    assert!(entries.iter().any(|e| e["action"] == "session.end"), "the session's end is logged");
    let decided: u64 = decisions.values().sum();

    let expected = BTreeMap::from([
        ("safeclaw_decisions_total".to_owned(), decisions),
        ("safeclaw_sessions_live".to_owned(), BTreeMap::from([((String::new(), String::new()), 0)])),
    ]);
    let seen = prometheus.wait_for(&expected, Duration::from_secs(120));
    assert_eq!(
        seen,
        expected,
        "what Prometheus scraped differs from the log; its log: {}",
        prometheus.log_text()
    );
    // The daemon's own writer timed each decision's append (a histogram only the real daemon fills).
    let appends = prometheus.scalar("safeclaw_audit_append_seconds_count");
    assert!(
        appends.is_some_and(|n| n >= decided),
        "every append is timed: {appends:?} for {decided} decisions"
    );

    drop(prometheus);
    let (status, _) = daemon.stop();
    assert!(status.success(), "daemon exit: {status}");
}

//! The audit trail survives kill -9 of the daemon: enforcement goes on while it is dead (pinned links),
//! a restarted daemon records what the kernel queued meanwhile, and in the end the log verifies, its
//! kernel sequence numbers have no gap and every attempt the agent made has exactly one entry.
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use safeclaw_integration::{agent_bin, denied, entries_for, Daemon};

const NAME: &str = "safeclaw-it-durable";

const POLICY: &str = r#"
version: 1
default: allow
rules:
  - name: secret-read
    action: file.read
    effect: deny
    paths: [/tmp/safeclaw-it-durable/files/secret.txt]
"#;

/// Opens `public`, then `secret` read-only and read-write, in turn until `stop` exists, then writes how
/// many opens of each succeeded and failed with EPERM (anything else is an error). The opens of
/// `public` are identical, so most are counted as repeats rather than recorded one by one; the two
/// denials of `secret` alternate, so no two consecutive kernel sequences are the same attempt.
const AGENT: &str = r#"
import errno, os, sys
public, secret, stop, counts = sys.argv[1:5]
n = {k + s: 0 for k in ("public", "secret", "secret_rw") for s in ("_ok", "_denied")}
while not os.path.exists(stop):
    for name, path, flags in (("public", public, os.O_RDONLY), ("secret", secret, os.O_RDONLY),
                              ("secret_rw", secret, os.O_RDWR)):
        try:
            os.close(os.open(path, flags))
            n[name + "_ok"] += 1
        except PermissionError:
            n[name + "_denied"] += 1
with open(counts, "w") as f:
    f.write(" ".join(f"{k}={v}" for k, v in n.items()))
"#;

#[test]
fn kill_9_loses_no_event_and_records_none_twice() {
    let mut daemon = Daemon::start(NAME, POLICY);
    let files = daemon.work().join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("secret.txt"), "s3cret").unwrap();
    std::fs::write(files.join("public.txt"), "hello").unwrap();
    let (public, secret) = (files.join("public.txt"), files.join("secret.txt"));
    let (stop, counts) = (daemon.work().join("stop"), daemon.work().join("counts"));
    std::fs::create_dir_all(&daemon.cgroup).unwrap();
    let mut agent = Command::new("sh")
        .arg("-c")
        .arg(format!("echo $$ > {}/cgroup.procs && exec python3 -c \"$0\" \"$@\"", daemon.cgroup.display()))
        .arg(AGENT)
        .args([&public, &secret, &stop, &counts])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();

    for run in 1..=2 {
        // Kill it mid-stream, once it has committed its start and caught up with the ring.
        wait_for_starts(&daemon.audit_log, run);
        std::thread::sleep(Duration::from_millis(700));
        daemon.kill();
        // Dead daemon: the pinned programs still deny, and the event of this attempt waits in the ring.
        let read = daemon.sh(&format!("exec cat {}", secret.display()));
        assert!(denied(&read), "secret read with the daemon dead: {read:?}");
        std::thread::sleep(Duration::from_millis(300));
        daemon = daemon.restart();
    }
    wait_for_starts(&daemon.audit_log, 3);
    std::thread::sleep(Duration::from_millis(700));
    std::fs::write(&stop, "").unwrap();
    assert!(agent.wait().unwrap().success(), "the agent failed");
    let log = daemon.audit_log.clone();
    let head = daemon.work().join("state/audit.head");
    let (status, entries) = daemon.stop();
    assert!(status.success(), "daemon exit: {status}");

    let verify = Command::new(agent_bin())
        .args(["audit", "verify"])
        .arg(&log)
        .arg("--head")
        .arg(&head)
        .output()
        .unwrap();
    assert!(verify.status.success(), "audit verify: {verify:?}");

    // One kernel session, numbered 0.. without a hole, each number once.
    let sessions = entries.iter().filter(|e| e["action"] == "kernel.session_start").count();
    assert_eq!(sessions, 1);
    for unexpected in ["audit.gap", "audit.kernel_seq_reset"] {
        let found: Vec<_> = entries.iter().filter(|e| e["action"] == unexpected).collect();
        assert!(found.is_empty(), "{found:#?}");
    }
    let seqs: Vec<u64> = entries.iter().filter_map(|e| e["kernelSeq"].as_u64()).collect();
    let distinct: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(distinct.len(), seqs.len(), "a kernel event was recorded twice");
    assert_eq!(distinct.last().copied(), Some(seqs.len() as u64 - 1), "kernel sequence numbers have a hole");
    let restarts = entries.iter().filter(|e| e["action"] == "daemon.start").count();
    assert_eq!(restarts, 3);

    // Every attempt the agent counted is in exactly one entry, with the effect it saw.
    let counted = parse_counts(&counts);
    // A restarted daemon hands over from the old programs in one scope update (epochs): no attempt
    // is decided, and recorded, by two attached programs.
    let doubled = doubled_attempts(&entries);
    assert!(doubled.is_empty(), "attempts recorded twice across the restarts: {doubled:#?}");
    eprintln!("{} entries, kernel sequences 0..={}, agent: {counted:?}", entries.len(), seqs.len() - 1);
    // An entry with `repeats` stands for that many identical attempts after a recorded one.
    let entries_of = |action: &str, path: &Path, effect: &str| {
        entries_for(&entries, action, &path.display().to_string())
            .into_iter()
            .filter(|e| e["effect"] == effect)
            .map(|e| e["repeats"]["count"].as_u64().unwrap_or(1))
            .sum::<u64>()
    };
    assert!(counted.public_ok > 100, "the agent made too few attempts to mean anything: {counted:?}");
    assert_eq!(counted.public_denied + counted.secret_ok + counted.secret_rw_ok, 0, "{counted:?}");
    assert_eq!(entries_of("file.read", &public, "allow"), counted.public_ok);
    assert_eq!(entries_of("file.read", &public, "deny"), 0);
    // The agent's denied reads, plus the two `cat`s while the daemon was dead.
    assert_eq!(entries_of("file.read", &secret, "deny"), counted.secret_denied + 2);
    assert_eq!(entries_of("file.write", &secret, "deny"), counted.secret_rw_denied);
}

/// Pairs of entries one kernel sequence apart for the same thread, path and effect within a few
/// milliseconds (emulated CPUs are slow): one attempt that two attached programs both recorded (the
/// agent's recorded attempts alternate, so it never makes one twice in a row), as (millisecond of day,
/// path).
fn doubled_attempts(entries: &[serde_json::Value]) -> Vec<(u64, String)> {
    let mut by_seq: Vec<&serde_json::Value> = entries.iter().filter(|e| e["kernelSeq"].is_u64()).collect();
    by_seq.sort_by_key(|e| e["kernelSeq"].as_u64());
    by_seq
        .windows(2)
        .filter(|w| {
            let same = |k: &str| w[0]["requestDetails"][k] == w[1]["requestDetails"][k];
            let close = millisecond(w[1]).abs_diff(millisecond(w[0])) <= 20;
            same("path")
                && same("tid")
                && close
                && w[0]["effect"] == w[1]["effect"]
                && w[0]["action"] == w[1]["action"]
        })
        .map(|w| (millisecond(w[0]), w[0]["requestDetails"]["path"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// An entry's time of day in milliseconds (`…THH:MM:SS.mmmZ`).
fn millisecond(entry: &serde_json::Value) -> u64 {
    let stamp = entry["timestamp"].as_str().unwrap();
    let clock = &stamp[stamp.find('T').unwrap() + 1..stamp.len() - 1];
    let parts: Vec<f64> = clock.split(':').map(|p| p.parse().unwrap()).collect();
    ((parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]) * 1000.0).round() as u64
}

/// Waits (bounded) until the log holds `n` durable `daemon.start` entries.
fn wait_for_starts(log: &Path, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.matches(r#""action":"daemon.start""#).count() >= n {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "daemon start {n} was not recorded within 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[derive(Debug, Default)]
struct Counts {
    public_ok: u64,
    public_denied: u64,
    secret_ok: u64,
    secret_denied: u64,
    secret_rw_ok: u64,
    secret_rw_denied: u64,
}

fn parse_counts(path: &Path) -> Counts {
    let text = std::fs::read_to_string(path).unwrap();
    let mut counts = Counts::default();
    for pair in text.split_whitespace() {
        let (key, value) = pair.split_once('=').unwrap();
        let value: u64 = value.parse().unwrap();
        match key {
            "public_ok" => counts.public_ok = value,
            "public_denied" => counts.public_denied = value,
            "secret_ok" => counts.secret_ok = value,
            "secret_denied" => counts.secret_denied = value,
            "secret_rw_ok" => counts.secret_rw_ok = value,
            "secret_rw_denied" => counts.secret_rw_denied = value,
            other => panic!("unknown count {other}"),
        }
    }
    counts
}

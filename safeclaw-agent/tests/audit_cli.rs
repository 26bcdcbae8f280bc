//! The `safeclaw-agent audit` subcommands, run as a user would: verify, pubkey, tail (and -f across
//! rotation), export, and config errors.
mod audit_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use audit_support::TestLog;
use safeclaw_agent::audit::synthetic::record;
use safeclaw_agent::audit::{AuditWriter, Lifecycle};

const CONFIG: &str = "audit:\n  keyFile: state/audit.key\n  headFile: state/audit.head\n  destinations:\n    - type: file\n      path: log/audit.jsonl\n";

fn configured_log(actions: u64) -> (TestLog, String) {
    let log = TestLog::build(actions, |_| {});
    let config = log.dir.path().join("config.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    (log, config.to_string_lossy().into_owned())
}

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_safeclaw-agent")).args(args).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn verify_reports_ok_then_the_first_bad_entry() {
    let (log, config) = configured_log(30);
    let output = agent(&["audit", "verify", "--config", &config]);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout(&output).starts_with(&format!("OK: {} entries", log.lines().len())),
        "{}",
        stdout(&output)
    );
    let mut lines = log.lines();
    lines[20] = lines[20].replacen("agent", "agenT", 1);
    log.set_lines(&lines);
    let output = agent(&["audit", "verify", "--config", &config]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(
        text.contains("FAILED at entry 20") && text.contains("line 21") && text.contains("content changed"),
        "{text}"
    );
}

#[test]
fn pubkey_prints_the_key_verify_accepts_for_a_copied_directory() {
    let (log, config) = configured_log(10);
    let output = agent(&["audit", "pubkey", "--config", &config]);
    assert!(output.status.success(), "{output:?}");
    let key = stdout(&output).trim().to_owned();
    assert_eq!(key, log.key().to_text());
    let dir = log.dir.path().join("log");
    // A copied directory without the head file: refused unless the auditor accepts verifying without it.
    let output = agent(&["audit", "verify", dir.to_str().unwrap(), "--pubkey", &key]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(stdout(&output).contains("--accept no-head"), "{}", stdout(&output));
    let output = agent(&["audit", "verify", dir.to_str().unwrap(), "--pubkey", &key, "--accept", "no-head"]);
    assert!(output.status.success(), "{}", stdout(&output));
    let head = log.head();
    let output = agent(&[
        "audit",
        "verify",
        dir.to_str().unwrap(),
        "--pubkey",
        &key,
        "--head",
        head.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stdout(&output));
    let other = "ed25519:0000000000000000000000000000000000000000000000000000000000000000";
    let output = agent(&["audit", "verify", dir.to_str().unwrap(), "--pubkey", other]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
}

#[test]
fn tail_filters_and_prints_plain_lines_off_a_terminal() {
    let (_log, config) = configured_log(60);
    let output = agent(&["audit", "tail", "--config", &config, "-n", "3", "--effect", "deny"]);
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines.iter().all(|l| l.contains("DENY") && !l.contains('\x1b')), "{text}");
    let output = agent(&["audit", "tail", "--config", &config, "-n", "2", "--json", "--action", "process.*"]);
    let text = stdout(&output);
    let entries: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|e| e["action"] == "process.exec"));
}

#[test]
fn tail_follow_survives_rotation() {
    let (log, config) = configured_log(5);
    let mut child = Command::new(env!("CARGO_BIN_EXE_safeclaw-agent"))
        .args(["audit", "tail", "--config", &config, "-f", "-n", "1", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let reader = BufReader::new(child.stdout.take().unwrap());
    let (sender, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    // The existing last entry shows that tail is running before anything new is written.
    let first = received.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(first.contains("audit.checkpoint"), "{first}");
    let mut opts = log.options();
    opts.max_segment_bytes = Some(8 << 10);
    let mut writer = AuditWriter::open(opts).unwrap();
    writer.log(&Lifecycle::KernelSessionStart);
    for k in 0..120 {
        writer.append(&record(k));
        if k % 10 == 9 {
            writer.commit().unwrap();
            std::thread::sleep(Duration::from_millis(30));
        }
    }
    writer.close().unwrap();
    assert!(log.files().len() > 2, "the writer rotated");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while Instant::now() < deadline && seen.last() != Some(&119) {
        if let Ok(line) = received.recv_timeout(Duration::from_millis(200)) {
            if let Some(k) = serde_json::from_str::<serde_json::Value>(&line).unwrap()["kernelSeq"].as_u64() {
                seen.push(k);
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(seen, (0..120).collect::<Vec<_>>(), "every entry once, in order, across rotations");
}

#[test]
fn export_writes_jsonl_and_csv_for_a_time_range() {
    let (log, config) = configured_log(25);
    let total = log.lines().len();
    let output =
        agent(&["audit", "export", "--config", &config, "--since", "2000-01-01", "--format", "jsonl"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout(&output), log.lines().iter().map(|l| format!("{l}\n")).collect::<String>());
    let output = agent(&["audit", "export", "--config", &config, "--format", "csv"]);
    let text = stdout(&output);
    assert!(text.starts_with("sequence,timestamp,action,effect,"), "{text}");
    assert_eq!(text.lines().count(), total + 1);
    let output = agent(&["audit", "export", "--config", &config, "--until", "2000-01-01"]);
    assert_eq!(stdout(&output), "");
    let output = agent(&["audit", "export", "--config", &config, "--since", "last tuesday"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--since"), "{output:?}");
}

#[test]
fn a_bad_config_is_named_with_its_line() {
    let (log, _) = configured_log(1);
    let config = log.dir.path().join("bad.yaml");
    std::fs::write(&config, "audit:\n  rotation:\n    maxSize: huge\n").unwrap();
    let output = agent(&["audit", "verify", "--config", config.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.yaml:3:") && stderr.contains("\"huge\""), "{stderr}");
}

#[test]
fn a_restart_without_the_head_fails_verify_until_accepted() {
    let (log, config) = configured_log(20);
    std::fs::remove_file(log.head()).unwrap();
    let writer = AuditWriter::open(log.options()).unwrap();
    writer.close().unwrap();
    let at = log.lines().iter().position(|l| l.contains("audit.head_missing")).unwrap();
    let output = agent(&["audit", "verify", "--config", &config]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains(&format!("FAILED at entry {at}")), "{}", stdout(&output));
    let accept = format!("head_missing@{at}");
    let output = agent(&["audit", "verify", "--config", &config, "--accept", &accept]);
    assert!(output.status.success(), "{}", stdout(&output));
    assert!(stdout(&output).contains("accepted by the operator"), "{}", stdout(&output));
    let output = agent(&["audit", "verify", "--config", &config, "--accept", "head_missing@1"]);
    assert_eq!(output.status.code(), Some(1), "accepting another entry does not accept this one");
}

#[test]
fn rotate_key_records_the_new_key_signed_by_the_old() {
    let (log, config) = configured_log(20);
    let old = log.key().to_text();
    let output = agent(&["audit", "rotate-key", "--config", &config]);
    assert!(output.status.success(), "{output:?}");
    let new = log.key().to_text();
    assert_ne!(old, new);
    assert!(stdout(&output).contains(&new), "{}", stdout(&output));
    let mut writer = AuditWriter::open(log.options()).unwrap();
    writer.append(&record(20));
    writer.close().unwrap();
    // Trusting the old key (the log's first) verifies through the rotation; the head is the new key's.
    let output = agent(&["audit", "verify", "--config", &config, "--pubkey", &old]);
    assert!(output.status.success(), "{}", stdout(&output));
    let output = agent(&["audit", "verify", "--config", &config, "--pubkey", &new]);
    assert_eq!(output.status.code(), Some(1), "the new key did not start the log: {}", stdout(&output));
}

#[test]
fn a_second_writer_and_a_rotation_beside_a_running_writer_are_refused() {
    let (log, config) = configured_log(5);
    let writer = AuditWriter::open(log.options()).unwrap();
    assert!(AuditWriter::open(log.options()).is_err());
    let output = agent(&["audit", "rotate-key", "--config", &config]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("another audit writer"), "{output:?}");
    writer.close().unwrap();
}

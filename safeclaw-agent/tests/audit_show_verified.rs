//! `audit tail` and `audit export` say when what they show is unverified, and with `--verify` check the
//! chain first and stop before the first damaged entry (exit 1).
mod audit_support;

use std::process::{Command, Output};

use audit_support::TestLog;

const CONFIG: &str = "audit:\n  keyFile: state/audit.key\n  headFile: state/audit.head\n  destinations:\n    - type: file\n      path: log/audit.jsonl\n";

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_safeclaw-agent")).args(args).output().unwrap()
}

fn sequences(output: &Output) -> Vec<u64> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["sequence"].as_u64().unwrap())
        .collect()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn tail_and_export_stop_before_the_first_damaged_entry_under_verify() {
    let log = TestLog::build(30, |_| {});
    let config = log.dir.path().join("config.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let config = config.to_str().unwrap();
    let total = log.lines().len() as u64;

    let unverified = agent(&["audit", "tail", "-n", "1000", "--json", "--config", config]);
    assert!(unverified.status.success(), "{unverified:?}");
    assert!(stderr(&unverified).contains("NOT verified"), "{}", stderr(&unverified));
    assert_eq!(sequences(&unverified).len() as u64, total);

    let verified = agent(&["audit", "tail", "-n", "1000", "--json", "--verify", "--config", config]);
    assert!(verified.status.success(), "{verified:?}");
    assert!(!stderr(&verified).contains("NOT verified"), "{}", stderr(&verified));
    assert_eq!(sequences(&verified), (0..total).collect::<Vec<_>>());

    let mut lines = log.lines();
    lines[20] = lines[20].replacen("agent", "agenT", 1);
    log.set_lines(&lines);

    let tail = agent(&["audit", "tail", "-n", "1000", "--json", "--verify", "--config", config]);
    assert_eq!(tail.status.code(), Some(1), "{tail:?}");
    assert!(stderr(&tail).contains("verification FAILED at entry 20"), "{}", stderr(&tail));
    assert_eq!(sequences(&tail), (0..20).collect::<Vec<_>>());

    let export = agent(&["audit", "export", "--verify", "--config", config]);
    assert_eq!(export.status.code(), Some(1), "{export:?}");
    assert_eq!(sequences(&export), (0..20).collect::<Vec<_>>());

    let export = agent(&["audit", "export", "--config", config]);
    assert!(export.status.success(), "{export:?}");
    assert!(stderr(&export).contains("NOT verified"), "{}", stderr(&export));
    assert_eq!(sequences(&export).len() as u64, total);
}

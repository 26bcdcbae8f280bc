//! Runs the Python verifier printed in docs/audit-format.md against logs the writer produced: the spec
//! is enough for an independent verifier, and the spec's example stays correct.
mod audit_support;

use std::process::Command;

use audit_support::{edit, field, TestLog};

/// The ```python block of the format document.
fn verifier_source() -> String {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/audit-format.md")).unwrap();
    let start =
        doc.find("```python\n").expect("docs/audit-format.md has a python block") + "```python\n".len();
    let end = start + doc[start..].find("```").unwrap();
    doc[start..end].to_owned()
}

/// Runs the verifier on the log's directory; returns (success, stdout + stderr).
fn run_python(log: &TestLog, with_head: bool) -> (bool, String) {
    let script = log.dir.path().join("verify.py");
    std::fs::write(&script, verifier_source()).unwrap();
    let head = if with_head { log.head() } else { "-".into() };
    let output = Command::new("python3")
        .arg(&script)
        .arg(log.key().to_text())
        .arg(log.active().parent().unwrap())
        .arg(head)
        .output()
        .expect("python3 must be installed (xtask/setup.sh installs it)");
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[test]
fn python_verifier_accepts_an_intact_rotated_log() {
    let log = TestLog::build(300, |o| o.max_segment_bytes = Some(16 << 10));
    assert!(log.files().len() > 2);
    let (ok, output) = run_python(&log, true);
    assert!(ok, "{output}");
    assert_eq!(output.trim(), format!("OK: {} entries", log.verify().entries));
}

#[test]
fn python_verifier_rejects_a_relinked_edit() {
    let log = TestLog::build(40, |_| {});
    let mut lines = log.lines();
    lines[12] = edit(&lines[12], "reason", "edited".into());
    for i in 13..lines.len() {
        let prev = field(&lines[i - 1], "hash");
        lines[i] = edit(&lines[i], "prevHash", prev);
    }
    log.set_lines(&lines);
    let (ok, output) = run_python(&log, false);
    assert!(!ok && output.contains("FAILED at entry") && output.contains("bad signature"), "{output}");
}

#[test]
fn python_verifier_rejects_a_cut_tail_with_the_head_file() {
    let log = TestLog::build(40, |_| {});
    let mut lines = log.lines();
    let checkpoint = audit_support::find(&lines, "audit.checkpoint", 20);
    lines.truncate(checkpoint + 1);
    log.set_lines(&lines);
    assert!(run_python(&log, false).0, "without the head the cut is invisible to a chain check");
    let (ok, output) = run_python(&log, true);
    assert!(!ok && output.contains("signed head covers"), "{output}");
}

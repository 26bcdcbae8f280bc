//! Helpers shared by the audit integration tests: building logs with the real writer, verifying them,
//! and editing lines the way an attacker with write access (but without the key) would.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use safeclaw_agent::audit::chain::{seal, HASH_SUFFIX_LEN};
use safeclaw_agent::audit::signing::AuditKey;
use safeclaw_agent::audit::synthetic::record;
use safeclaw_agent::audit::verify::{log_files, verify, Report, VerifyOptions};
use safeclaw_agent::audit::{AuditWriter, Lifecycle, WriterOptions};

pub struct TestLog {
    pub dir: tempfile::TempDir,
}

impl TestLog {
    pub fn options(&self) -> WriterOptions {
        let mut opts = WriterOptions::new(&self.dir.path().join("log/audit.jsonl"))
            .with_state_dir(&self.dir.path().join("state"));
        opts.checkpoint_every = 10;
        opts
    }

    /// A closed log of `actions` attempts with a checkpoint every 10 entries; `tweak` adjusts the options.
    pub fn build(actions: u64, tweak: impl FnOnce(&mut WriterOptions)) -> TestLog {
        let log = TestLog { dir: tempfile::tempdir().unwrap() };
        let mut opts = log.options();
        tweak(&mut opts);
        let mut writer = AuditWriter::open(opts).unwrap();
        writer.log(&Lifecycle::KernelSessionStart);
        for k in 0..actions {
            writer.append(&record(k));
            if k % 7 == 6 {
                writer.commit().unwrap();
            }
        }
        writer.close().unwrap();
        log
    }

    pub fn active(&self) -> PathBuf {
        self.dir.path().join("log/audit.jsonl")
    }

    pub fn head(&self) -> PathBuf {
        self.dir.path().join("state/audit.head")
    }

    pub fn files(&self) -> Vec<PathBuf> {
        log_files(&self.active()).unwrap()
    }

    pub fn key(&self) -> safeclaw_agent::audit::signing::PublicKey {
        AuditKey::load(&self.dir.path().join("state/audit.key")).unwrap().public()
    }

    /// Verifies with the trusted key and the head file.
    pub fn verify(&self) -> Report {
        self.verify_with(VerifyOptions {
            trusted_key: Some(self.key()),
            head_path: Some(self.head()),
            from: None,
            ..Default::default()
        })
    }

    pub fn verify_with(&self, opts: VerifyOptions) -> Report {
        verify(&self.files(), &opts, Arc::new(|_| {})).unwrap()
    }

    pub fn lines(&self) -> Vec<String> {
        read_lines(&self.active())
    }

    pub fn set_lines(&self, lines: &[String]) {
        write_lines(&self.active(), lines);
    }
}

pub fn read_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
}

pub fn write_lines(path: &Path, lines: &[String]) {
    fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

/// Recomputes a line's own hash after its body was edited.
pub fn reseal(line: &str) -> String {
    let body = format!("{}}}", &line[..line.len() - HASH_SUFFIX_LEN]);
    let mut out = Vec::new();
    seal(body.as_bytes(), &mut out);
    out.pop();
    String::from_utf8(out).unwrap()
}

/// Sets a top-level field of a line and reseals it.
pub fn edit(line: &str, field: &str, value: serde_json::Value) -> String {
    let mut entry: serde_json::Value = serde_json::from_str(line).unwrap();
    entry[field] = value;
    entry.as_object_mut().unwrap().remove("hash");
    let mut out = Vec::new();
    seal(&serde_json::to_vec(&entry).unwrap(), &mut out);
    out.pop();
    String::from_utf8(out).unwrap()
}

pub fn field(line: &str, name: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(line).unwrap()[name].clone()
}

/// Index of the first line whose action is `action`, at or after `from`.
pub fn find(lines: &[String], action: &str, from: usize) -> usize {
    (from..lines.len()).find(|&i| field(&lines[i], "action") == action).unwrap()
}

//! Crash test: a child process appends synthetic kernel events with the real writer and is killed with
//! SIGKILL again and again; afterwards the chain must verify with no sequence gap and every event exactly
//! once. The child resumes from the last durable kernel sequence, as the daemon does with events still in
//! the ring buffer. Runs without the libtest harness: this binary is also the child.
mod audit_support;

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

use safeclaw_agent::audit::synthetic::record;
use safeclaw_agent::audit::{AuditWriter, Lifecycle, WriterOptions};

const CHILD_ENV: &str = "SAFECLAW_AUDIT_CRASH_CHILD";
const EVENTS: u64 = 20_000;
const KILLS: u64 = 12;

fn options(dir: &Path) -> WriterOptions {
    let mut opts = WriterOptions::new(&dir.join("log/audit.jsonl")).with_state_dir(&dir.join("state"));
    opts.checkpoint_every = 50;
    opts.max_segment_bytes = Some(64 << 10);
    opts.commit_interval = Duration::from_millis(20);
    opts
}

/// The child: append events from where the durable log stops until all are written.
fn child(dir: &Path) -> ExitCode {
    let mut writer = match AuditWriter::open(options(dir)) {
        Ok(writer) => writer,
        Err(e) => {
            eprintln!("child: open: {e}");
            return ExitCode::FAILURE;
        }
    };
    writer.log(&Lifecycle::DaemonStart { version: "crash-test".into() });
    let start = match writer.recovered().last_kernel_seq {
        Some(last) => last + 1,
        None => {
            writer.log(&Lifecycle::KernelSessionStart);
            0
        }
    };
    for k in start..EVENTS {
        writer.append(&record(k));
        if k % 64 == 63 {
            if let Err(e) = writer.tick() {
                eprintln!("child: commit: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    match writer.close() {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("child: close: {e}");
            ExitCode::FAILURE
        }
    }
}

fn crash_kill9_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let spawn = || Command::new(&exe).env(CHILD_ENV, dir.path()).spawn().unwrap();
    for round in 0..KILLS {
        let mut child = spawn();
        std::thread::sleep(Duration::from_millis(150 + (round * 53) % 250));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let status = spawn().wait().unwrap();
    assert!(status.success(), "the last child must finish: {status}");

    let log = audit_support::TestLog { dir };
    let report = log.verify();
    assert_eq!(report.failure, None, "{report:?}");
    assert_eq!(report.gaps, 0);
    let mut kernel_seqs = Vec::new();
    let mut starts = 0;
    for path in log.files() {
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut safeclaw_agent::audit::segment::open_reader(&path, |_| {}).unwrap(),
            &mut text,
        )
        .unwrap();
        for line in text.lines() {
            let entry: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(k) = entry["kernelSeq"].as_u64() {
                kernel_seqs.push(k);
            }
            if entry["action"] == "daemon.start" {
                starts += 1;
            }
        }
    }
    assert!(starts >= 3, "kills must interrupt real work: {starts} runs got as far as writing");
    assert_eq!(kernel_seqs.len() as u64, EVENTS, "every event exactly once");
    assert!(kernel_seqs.iter().copied().eq(0..EVENTS), "events in order, none lost or repeated");
}

fn main() -> ExitCode {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        return child(Path::new(&dir));
    }
    crash_kill9_loses_nothing();
    println!("test crash_kill9_loses_nothing ... ok");
    println!("1 passed, 0 failed");
    ExitCode::SUCCESS
}

//! `run --ebpf-log debug` on a real kernel: the programs' aya-log records of a denied open reach the
//! daemon's log, and without the flag none do; loaded with logging off, the verifier prunes every
//! logging branch, so the programs the kernel runs are smaller than with it on.
use std::time::{Duration, Instant};

use aya::programs::Lsm;
use safeclaw_agent::kernel::ebpf_log::EbpfLogLevel;
use safeclaw_agent::kernel::loader;
use safeclaw_integration::{entries_for, require_bpf_lsm, Daemon, RunAs};

const POLICY: &str = r#"
version: 1
default: allow
rules:
  - name: secret-read
    action: file.read
    effect: deny
    paths: ["/tmp/safeclaw-it-ebpf-log*/files/secret.txt"]
"#;

/// Starts a daemon with `extra_args`, has a session read a denied file, waits (bounded) until its
/// denial is audited and, when `expect_record`, until an eBPF record reaches the daemon's log; then
/// stops the daemon and returns what it logged.
fn denied_open_logs(name: &str, extra_args: &[&str], expect_record: bool) -> String {
    let daemon = Daemon::start_with(name, POLICY, extra_args);
    let files = daemon.files_dir();
    let secret = files.join("secret.txt");
    std::fs::write(&secret, "s3cret").unwrap();
    safeclaw_integration::give_to_nobody(&secret, 0o600);
    let out = daemon.session("ebpf-log", RunAs::Nobody, &["/bin/cat", &secret.display().to_string()]);
    assert!(!out.status.success(), "the secret read was allowed: {out:?}");
    let started = Instant::now();
    loop {
        let audited = !entries_for(
            &safeclaw_integration::read_entries(&daemon.audit_log),
            "file.read",
            &secret.display().to_string(),
        )
        .is_empty();
        let logged = daemon.log_text().contains(EBPF_RECORD);
        if audited && (logged || !expect_record) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "audited: {audited}, eBPF record logged: {logged}; the daemon's log:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = daemon.log_text();
    let (status, _) = daemon.stop();
    assert!(status.success(), "daemon exit: {status}");
    log
}

/// What starts the message of every forwarded record in the daemon's log: the module of the eBPF
/// crate that logged it (the tracing target `ebpf` before it may be wrapped in colour codes).
const EBPF_RECORD: &str = "safeclaw::diag: ";

#[test]
fn ebpf_debug_log_shows_a_denial_only_when_asked_for() {
    let log = denied_open_logs("safeclaw-it-ebpf-log", &["--ebpf-log", "debug"], true);
    // The denied read (rule 0, the policy's only rule) as the program decided it.
    let expected = format!("{EBPF_RECORD}deny: action {} rule 0 ", safeclaw_common::action::FILE_READ);
    let denial = log.lines().find(|l| l.contains(&expected));
    assert!(denial.is_some(), "no eBPF denial record in the daemon's log:\n{log}");

    let log = denied_open_logs("safeclaw-it-ebpf-log-off", &[], false);
    assert!(!log.contains(EBPF_RECORD), "eBPF records without --ebpf-log:\n{log}");
    assert!(log.contains("enforcing"), "the daemon's log was captured:\n{log}");
}

/// The size of each program as the kernel will run it (after the verifier's dead-code removal),
/// loaded (not attached) with eBPF logging at `level`.
fn translated_sizes(level: Option<EbpfLogLevel>) -> Vec<(&'static str, u32)> {
    let kernel = loader::open(None, level).unwrap();
    loader::PROGRAMS
        .into_iter()
        .map(|name| {
            let program: &Lsm = kernel.ebpf.program(name).unwrap().try_into().unwrap();
            (name, program.info().unwrap().size_translated().unwrap())
        })
        .collect()
}

#[test]
fn logging_off_is_pruned_from_the_programs() {
    require_bpf_lsm();
    let off = translated_sizes(None);
    let on = translated_sizes(Some(EbpfLogLevel::Trace));
    let (file_open_off, file_open_on) = (off[0], on[0]);
    assert_eq!(file_open_off.0, "file_open");
    assert!(
        file_open_off.1 < file_open_on.1,
        "file_open is no smaller with logging off ({} B) than on ({} B): the level check was not folded",
        file_open_off.1,
        file_open_on.1
    );
    let total = |sizes: &[(&str, u32)]| sizes.iter().map(|(_, size)| u64::from(*size)).sum::<u64>();
    assert!(total(&off) < total(&on), "off {off:?}\non {on:?}");
}

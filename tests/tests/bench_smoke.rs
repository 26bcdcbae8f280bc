//! The benchmark harness (`cargo xtask bench`) runs end to end with tiny sizes, and each tool it compares
//! was really active: SafeClaw logged and denied, auditd recorded without loss, fapolicyd decided and denied.
use std::collections::HashMap;
use std::io::{BufRead as _, Read as _, Write as _};
use std::process::{Command, ExitStatus, Stdio};

/// Runs `safeclaw-bench --quick`; its stderr (progress and the daemons' logs) is passed on to the
/// console as it comes, past libtest's capture, so that a bench that stalls shows where.
fn run_bench() -> (ExitStatus, String, String) {
    let mut bench = Command::new(env!("CARGO_BIN_EXE_safeclaw-bench"))
        .arg("--quick")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run safeclaw-bench");
    let stderr_pipe = bench.stderr.take().expect("stderr is piped");
    let echo = std::thread::spawn(move || {
        let mut collected = String::new();
        for line in std::io::BufReader::new(stderr_pipe).lines() {
            let line = match line {
                Ok(line) => line,
                Err(err) if err.kind() == std::io::ErrorKind::InvalidData => format!("(not UTF-8: {err})"),
                // A pipe that fails to read will not recover: what was collected is the bench's stderr.
                Err(_) => break,
            };
            let _ = writeln!(std::io::stderr(), "bench: {line}");
            collected.push_str(&line);
            collected.push('\n');
        }
        collected
    });
    let mut stdout = String::new();
    bench
        .stdout
        .take()
        .expect("stdout is piped")
        .read_to_string(&mut stdout)
        .expect("reading the bench's stdout");
    let status = bench.wait().expect("waiting for safeclaw-bench");
    let stderr = echo.join().expect("the stderr echo thread panicked");
    (status, stdout, stderr)
}

#[test]
fn the_bench_runs_end_to_end_and_every_tool_it_measures_was_active() {
    safeclaw_integration::require_bpf_lsm();
    let (status, stdout, stderr) = run_bench();
    assert!(status.success(), "safeclaw-bench --quick failed ({status}):\n{stderr}");
    assert!(stdout.contains("safeclaw-bench: complete"), "no complete result table:\n{stdout}");
    let evidence: HashMap<&str, u64> = stderr
        .lines()
        .find_map(|line| line.strip_prefix("safeclaw-bench: evidence "))
        .unwrap_or_else(|| panic!("no evidence line:\n{stderr}"))
        .split_whitespace()
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some((key, value.parse().ok()?))
        })
        .collect();
    let get = |key: &str| *evidence.get(key).unwrap_or_else(|| panic!("evidence lacks {key}: {evidence:?}"));
    assert!(get("safeclaw_inside_entries") > 0, "{evidence:?}");
    assert!(get("safeclaw_inside_denied") > 0, "SafeClaw denied nothing: {evidence:?}");
    assert_eq!(
        get("safeclaw_outside_entries"),
        0,
        "SafeClaw logged a process outside its cgroup: {evidence:?}"
    );
    assert!(get("auditd_records") > 0, "auditd recorded nothing: {evidence:?}");
    assert_eq!(get("auditd_lost"), 0, "{evidence:?}");
    assert!(get("fapolicyd_denied_opens") > 0, "fapolicyd denied nothing: {evidence:?}");
    assert!(get("fapolicyd_decisions") > get("fapolicyd_denied_opens"), "{evidence:?}");
    // The timed phases run without bpf_stats; the extra phase that reads them must have counted runs.
    let file_open_runs = stdout
        .lines()
        .find_map(|line| line.strip_prefix("| file_open | "))
        .and_then(|rest| rest.split(" |").next())
        .and_then(|runs| runs.replace(',', "").parse::<u64>().ok());
    assert!(file_open_runs.is_some_and(|runs| runs > 0), "no bpf_stats row for file_open:\n{stdout}");
    // SafeClaw's targets are judged on baseline and SafeClaw blocks run in pairs.
    let paired = stdout
        .split("#### SafeClaw against the baseline, in pairs")
        .nth(1)
        .unwrap_or_else(|| panic!("no paired table:\n{stdout}"));
    assert!(paired.contains("Pairs run: 1."), "the quick bench runs one pair:\n{paired}");
    for side in ["outside the agent cgroup", "inside, full audit log"] {
        let row = format!("| connect() to a loopback listener | {side} | ");
        assert!(paired.contains(&row), "no paired connect row {side}:\n{paired}");
    }
    // The kernel profile of the open loop sampled all three loops.
    let measured: Vec<f64> = stdout
        .lines()
        .find_map(|line| line.strip_prefix("| whole open()+close() (measured) | "))
        .unwrap_or_else(|| panic!("no kernel profile of the open loop:\n{stdout}"))
        .split(" | ")
        .take(3)
        .filter_map(|ns| ns.trim().parse().ok())
        .collect();
    assert!(measured.len() == 3 && measured.iter().all(|&ns| ns > 0.0), "profile row: {measured:?}");
    assert!(
        stdout.contains("BPF map pages mapped into the daemon (the event ring) | "),
        "no ring share of the burst's RSS:\n{stdout}"
    );
}

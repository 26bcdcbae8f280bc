//! Webhook destinations against a real HTTP server on loopback (Python's http.server, programmed by
//! the test to stall, drop connections, and answer 500, 429, 400 and 200): every entry arrives in signed
//! batches, in order, through a server restart and a SIGKILL of the delivering process; a refused batch
//! makes the destination stuck without skipping it; URLs and secrets never reach the logs.
mod destinations_support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use destinations_support::webhook::HookServer;
use destinations_support::{assert_complete_in_order, wait_for, Deliverer, Workspace};
use hmac::{Hmac, Mac};

const TOKEN: &str = "tok-4c8a1f-secret-path";
const SECRET: &str = "hmac-key-9d2e";

fn config(workspace: &Workspace, port: u16, batch: usize) -> PathBuf {
    std::env::set_var("SAFECLAW_TEST_HOOK_TOKEN", TOKEN);
    std::env::set_var("SAFECLAW_TEST_HOOK_SECRET", SECRET);
    workspace.config(&format!(
        "    - type: webhook\n      name: hook\n      url: \"http://127.0.0.1:{port}/hook/${{SAFECLAW_TEST_HOOK_TOKEN}}?k=1\"\n\
         \x20     batchSize: {batch}\n      flushInterval: 200ms\n      timeout: 2s\n      secret: \"${{SAFECLAW_TEST_HOOK_SECRET}}\"\n"
    ))
}

/// Sequences of every received batch in order, checking each batch's signature, idempotency key and
/// that its entries are the log's lines byte for byte.
fn received_sequences(
    server: &HookServer,
    entries: &[safeclaw_agent::audit::reader::ChainEntry],
) -> Vec<u64> {
    let mut sequences = Vec::new();
    for batch in server.batches() {
        let body = batch["body"].as_str().unwrap();
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(batch["signature"], format!("sha256={expected}"));
        assert_eq!(batch["path"], format!("/hook/{TOKEN}?k=1"));
        let value: serde_json::Value = serde_json::from_str(body).unwrap();
        let (first, last) = (value["first"].as_u64().unwrap(), value["last"].as_u64().unwrap());
        assert_eq!(batch["idempotencyKey"], format!("{first}-{last}"));
        let lines: Vec<&str> =
            body.lines().filter(|l| l.starts_with("{\"")).map(|l| l.trim_end_matches(',')).collect();
        let listed = value["entries"].as_array().unwrap();
        assert_eq!(listed.len() as u64, last - first + 1);
        assert_eq!(value["count"].as_u64().unwrap(), last - first + 1);
        for (n, line) in lines.iter().skip(1).enumerate() {
            let sequence = first + n as u64;
            assert_eq!(
                line.as_bytes(),
                &entries[sequence as usize].line[..],
                "entry {sequence} changed on the way"
            );
            sequences.push(sequence);
        }
    }
    sequences
}

#[test]
fn every_entry_arrives_signed_through_errors_restarts_and_kill9() {
    let workspace = Workspace::new();
    let mut server = HookServer::start(workspace.dir.path());
    let config = config(&workspace, server.port, 1000);
    let writer = workspace.write_in_background(110_000, Duration::from_millis(5));
    let mut deliverer = Deliverer::start(&workspace, &config);
    let progress = || workspace.status("hook").delivered;
    wait_for("10,000 entries", Duration::from_secs(600), || progress() > 10_000);
    // Every kind of trouble in turn, then normal service.
    server.control(&["500", "429", "stall", "drop", "503", "408"], "200");
    wait_for("the server's errors to be retried through", Duration::from_secs(600), || {
        let status = workspace.status("hook");
        status.delivered > 30_000 && status.last_error.is_some()
    });
    server.kill9_and_restart();
    wait_for("60,000 entries", Duration::from_secs(600), || progress() > 60_000);
    deliverer.kill9_and_restart();
    writer.join().unwrap();
    let end = workspace.durable_end();
    wait_for("every entry", Duration::from_secs(600), || progress() == end);
    deliverer.stop();

    let entries = workspace.entries();
    let sequences = received_sequences(&server, &entries);
    assert_complete_in_order(&sequences, end);
    // Re-sent entries are at most the batch in flight at each interruption (server kill, sender kill).
    let duplicates = sequences.len() as u64 - end;
    assert!(duplicates <= 2 * 1000, "{duplicates} entries received twice");
    let status = workspace.status("hook");
    assert!(status.failing_since.is_none() && !status.stuck, "{status:?}");
    let error = status.last_error.unwrap();
    let output = deliverer.output();
    for text in [&output, &error, &status.target] {
        assert!(!text.contains(TOKEN) && !text.contains(SECRET), "a secret leaked: {text}");
    }
    assert!(output.contains("audit destination failing"), "{output}");
}

#[test]
fn a_refused_batch_is_stuck_and_reported_never_skipped() {
    let workspace = Workspace::new();
    let server = HookServer::start(workspace.dir.path());
    server.control(&[], "400");
    let config = config(&workspace, server.port, 100);
    workspace.write_in_background(1000, Duration::ZERO).join().unwrap();
    let end = workspace.durable_end();
    let mut deliverer = Deliverer::start(&workspace, &config);
    wait_for("the destination to be stuck", Duration::from_secs(30), || workspace.status("hook").stuck);
    let status = workspace.status("hook");
    assert_eq!(status.delivered, 0);
    assert!(status.last_error.as_deref().is_some_and(|e| e.contains("HTTP 400")), "{status:?}");
    let shown = Command::new(env!("CARGO_BIN_EXE_safeclaw-agent"))
        .args(["audit", "destinations", "--json", "--config"])
        .arg(&config)
        .arg("--audit-log")
        .arg(workspace.active())
        .arg("--state-dir")
        .arg(workspace.state())
        .output()
        .unwrap();
    assert_eq!(shown.status.code(), Some(1), "a failing destination makes the command fail");
    let row: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(row["name"], "hook");
    assert_eq!(row["stuck"], true);
    assert_eq!(row["lagEntries"], end);
    assert!(row["lagSeconds"].as_u64().is_some(), "{row}");
    // The receiver is fixed: delivery resumes at the refused batch, which the next retry sends first.
    server.control(&[], "200");
    wait_for("delivery after the fix", Duration::from_secs(90), || workspace.status("hook").delivered == end);
    deliverer.stop();
    let sequences = received_sequences(&server, &workspace.entries());
    assert_eq!(sequences.first(), Some(&0));
    assert_complete_in_order(&sequences, end);
}

#[test]
fn config_check_validates_without_starting_and_names_an_unset_variable() {
    let workspace = Workspace::new();
    let good = config(&workspace, 1, 10);
    let checked = Command::new(env!("CARGO_BIN_EXE_safeclaw-agent"))
        .args(["config", "check"])
        .arg(&good)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{stdout} {}", String::from_utf8_lossy(&checked.stderr));
    assert!(stdout.contains("destination hook (webhook http://127.0.0.1:1/…)"), "{stdout}");
    assert!(!stdout.contains(TOKEN), "{stdout}");
    let bad: PathBuf = workspace.dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "audit:\n  destinations:\n    - type: webhook\n      url: \"${SAFECLAW_TEST_NEVER_SET}\"\n",
    )
    .unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_safeclaw-agent"))
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("bad.yaml:4:13:") && stderr.contains("SAFECLAW_TEST_NEVER_SET is not set"),
        "{stderr}"
    );
}

//! The scripted demo `cargo xtask run` shows (tests/demo/session.sh), run as it runs there: every outcome
//! as the default policy promises, its agent launched with `safeclaw-agent exec`, so that every
//! attempt entry names the agent, the session and the user, and the daemon's `--metrics` endpoint
//! counting as many decisions as the log holds attempts.
use std::path::{Path, PathBuf};
use std::process::Command;

fn harness_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is unset: run this test with `cargo xtask test`"))
}

#[test]
fn the_demo_runs_its_agent_through_exec_and_every_entry_names_it() {
    safeclaw_integration::require_bpf_lsm();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the checkout");
    let out = PathBuf::from(harness_var("SAFECLAW_TEST_OUT")).join("demo");
    std::fs::create_dir_all(&out).expect("creating the demo's output directory");
    let output = Command::new("sh")
        .arg("tests/demo/session.sh")
        .env("OUT", &out)
        .current_dir(root)
        .output()
        .expect("running tests/demo/session.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the demo failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("without agentId, sessionId and userId"), "{stdout}");
    let metrics =
        stdout.lines().find(|l| l.starts_with("demo: metrics endpoint counted")).expect("no metrics line");
    let numbers: Vec<&str> = metrics.split(' ').filter(|w| w.parse::<u64>().is_ok()).collect();
    assert!(numbers.len() == 2 && numbers[0] == numbers[1] && numbers[0] != "0", "{metrics}");

    let log = std::fs::read_to_string(out.join("audit.jsonl")).expect("reading the demo's audit log");
    let attempts: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("an audit entry"))
        .filter(|entry| {
            let action = entry["action"].as_str().unwrap_or_default();
            ["file.", "process.", "network."].iter().any(|prefix| action.starts_with(prefix))
        })
        .collect();
    assert!(attempts.len() >= 7, "only {} attempt entries", attempts.len());
    for entry in &attempts {
        assert_eq!(entry["agentId"], "demo", "{entry}");
        assert!(entry["sessionId"].as_str().is_some_and(|s| s.starts_with("sess_")), "{entry}");
        assert_eq!(entry["userId"], "root", "{entry}");
    }
    let denied = attempts.iter().filter(|entry| entry["effect"] == "deny").count();
    assert!(denied >= 4, "{denied} denials; the demo makes four denied attempts");
}

//! `--json` of doctor, policy check/explain/test and audit verify, run as a script would: one JSON
//! document on standard output with the field names docs/cli.md lists, and the documented exit codes.
mod audit_support;

use std::path::Path;
use std::process::{Command, Output};

use audit_support::TestLog;
use serde_json::Value;

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_safeclaw-agent")).args(args).output().unwrap()
}

/// The one JSON document `args` print, and the exit code.
fn json(args: &[&str]) -> (Value, i32) {
    let output = agent(args);
    let text = String::from_utf8_lossy(&output.stdout);
    let document: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{args:?} printed no single JSON document ({e}): {text}\n{output:?}"));
    (document, output.status.code().unwrap_or(-1))
}

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path).to_string_lossy().into_owned()
}

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value.as_object().expect("an object").keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

#[test]
fn policy_check_json_of_a_good_and_a_bad_policy() {
    let (doc, code) =
        json(&["policy", "check", &repo("policies/default.yaml"), "--json", "--home", "/home/u"]);
    assert_eq!(code, 0);
    assert_eq!(
        keys(&doc),
        ["file", "files", "ok", "policyHash", "profiles", "unresolvedHostNames", "warnings"]
    );
    assert_eq!(doc["ok"], true);
    assert!(doc["policyHash"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(doc["profiles"][0]["agent"], Value::Null);
    assert!(doc["profiles"][0]["rules"].as_u64().unwrap() > 0);

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "version: 1\nrules:\n  - name: a\n    action: file.read\n    effect: alow\n")
        .unwrap();
    let (doc, code) = json(&["policy", "check", bad.to_str().unwrap(), "--json"]);
    assert_eq!(code, 1);
    assert_eq!(doc["ok"], false);
    let error = &doc["errors"][0];
    assert_eq!(keys(error), ["column", "file", "level", "line", "message"]);
    assert_eq!((error["level"].as_str(), error["line"].as_u64()), (Some("error"), Some(5)));
    assert!(error["message"].as_str().unwrap().contains("alow"), "{error}");
}

#[test]
fn policy_explain_json_names_the_deciding_rule() {
    let (doc, code) = json(&[
        "policy",
        "explain",
        &repo("policies/default.yaml"),
        "--action",
        "file.read",
        "--path",
        "/home/u/.ssh/id_rsa",
        "--home",
        "/home/u",
        "--json",
    ]);
    assert_eq!(code, 0);
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["decision"]["effect"], "deny");
    assert!(doc["decision"]["rule"].is_string(), "{doc}");
    assert!(doc["decision"]["definedAt"].as_str().unwrap().contains("default.yaml:"), "{doc}");
    let steps = doc["checks"][0]["steps"].as_array().unwrap();
    assert_eq!(steps.last().unwrap()["verdict"], "hit");
    assert_eq!(keys(&steps[0]), ["name", "rule", "verdict", "why"]);
}

#[test]
fn policy_test_json_lists_each_case() {
    let policy = repo("policies/default.yaml");
    let cases = repo("policies/tests/default.cases.yaml");
    let (doc, code) = json(&["policy", "test", &policy, "--cases", &cases, "--json"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!((doc["ok"].as_bool(), doc["failed"].as_u64()), (Some(true), Some(0)));
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len() as u64, doc["passed"].as_u64().unwrap());
    assert_eq!(keys(&cases[0]), ["at", "name", "ok", "why"]);

    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.cases.yaml");
    std::fs::write(
        &wrong,
        "home: /home/u\ncases:\n  - {name: key, action: file.read, path: ~/.ssh/id_rsa, expect: allow}\n",
    )
    .unwrap();
    let (doc, code) = json(&["policy", "test", &policy, "--cases", wrong.to_str().unwrap(), "--json"]);
    assert_eq!(code, 1);
    assert_eq!((doc["ok"].as_bool(), doc["failed"].as_u64()), (Some(false), Some(1)));
    assert!(doc["cases"][0]["why"].as_str().unwrap().contains("expected allow, got deny"), "{doc}");
    assert!(doc["cases"][0]["at"].as_str().unwrap().ends_with("wrong.cases.yaml:3:6"), "{doc}");
}

#[test]
fn audit_verify_json_reports_ok_then_the_damage() {
    let log = TestLog::build(20, |_| {});
    let head = log.head();
    let active = log.active();
    let args = ["audit", "verify", "--json", "--head", head.to_str().unwrap(), active.to_str().unwrap()];
    let (doc, code) = json(&args);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(
        keys(&doc),
        [
            "checkpoints",
            "entries",
            "failure",
            "files",
            "firstSequence",
            "gaps",
            "keySource",
            "lastSequence",
            "lostKernelEvents",
            "ok",
            "retentionDeletions",
            "signedThrough"
        ]
    );
    assert_eq!((doc["ok"].as_bool(), doc["failure"].is_null()), (Some(true), true));
    assert_eq!(doc["entries"].as_u64(), Some(log.lines().len() as u64));

    let mut lines = log.lines();
    lines[7] = lines[7].replacen("agent", "agenT", 1);
    log.set_lines(&lines);
    let (doc, code) = json(&args);
    assert_eq!(code, 1);
    assert_eq!(doc["ok"], false);
    let failure = &doc["failure"];
    assert_eq!((failure["sequence"].as_u64(), failure["line"].as_u64()), (Some(7), Some(8)), "{doc}");
    assert_eq!(failure["kind"], "content-changed");
}

#[test]
fn doctor_json_exit_code_follows_its_checks() {
    let (doc, code) = json(&["doctor", "--json"]);
    let checks = doc["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 6, "{doc}");
    let all_ok = checks.iter().all(|c| c["ok"] == true);
    assert_eq!(doc["ok"], all_ok);
    assert_eq!(code, if all_ok { 0 } else { 1 });
    for check in checks {
        assert_eq!(keys(check), ["detail", "fix", "name", "ok"]);
        assert_eq!(check["fix"].is_null(), check["ok"] == true, "{check}");
    }
}

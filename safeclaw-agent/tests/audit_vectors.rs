//! The conformance suite: every log in `tests/vectors/` (honest ones and tampered ones) is verified by our
//! verifier (library and `audit verify`) and by the Python verifier printed in docs/audit-format.md; all
//! three must give the verdict and name the entry that the vector's `case.json` records.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use safeclaw_agent::audit::signing::PublicKey;
use safeclaw_agent::audit::verify::{verify, VerifyOptions};

/// What a verifier said: `None` verified; `Some(None)` failed for the log as a whole; `Some(Some(n))`
/// failed naming entry n.
type Verdict = Option<Option<u64>>;

struct Case {
    dir: PathBuf,
    public_key: String,
    head: Option<PathBuf>,
    accept: Vec<String>,
    expected: Verdict,
}

fn cases() -> Vec<Case> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/vectors exists")
        .map(|d| d.expect("dir entry").path())
        .filter(|p| p.join("case.json").exists())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|dir| {
            let case: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
            let expected = match case["verdict"].as_str() {
                Some("ok") => None,
                Some("failed") => Some(case["entry"].as_u64()),
                other => panic!("{}: verdict {other:?}", dir.display()),
            };
            Case {
                public_key: case["publicKey"].as_str().unwrap().to_owned(),
                head: case["head"].as_str().map(|h| dir.join(h)),
                accept: case["accept"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_owned())
                    .collect(),
                expected,
                dir,
            }
        })
        .collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("log")).unwrap().map(|d| d.unwrap().path()).collect()
}

fn ours(case: &Case) -> Verdict {
    let opts = VerifyOptions {
        trusted_key: Some(PublicKey::parse(&case.public_key).unwrap()),
        head_path: case.head.clone(),
        from: None,
        accept: case.accept.iter().map(|a| a.parse().unwrap()).collect(),
    };
    let report = verify(&segment_files(&case.dir), &opts, Arc::new(|_| {})).unwrap();
    report.failure.map(|f| f.sequence)
}

/// Reads "FAILED at entry N", "FAILED at the log" or "OK" from a verifier's output.
fn verdict_of(success: bool, output: &str) -> Verdict {
    if success {
        assert!(output.contains("OK"), "{output}");
        return None;
    }
    let rest = output.split("FAILED at ").nth(1).unwrap_or_else(|| panic!("no verdict in {output:?}"));
    Some(
        rest.strip_prefix("entry ")
            .map(|n| n.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()),
    )
}

fn cli(case: &Case) -> Verdict {
    let mut command = Command::new(env!("CARGO_BIN_EXE_safeclaw-agent"));
    command.args(["audit", "verify"]).arg(case.dir.join("log")).args(["--pubkey", &case.public_key]);
    match &case.head {
        Some(head) => command.arg("--head").arg(head),
        None => command.args(["--accept", "no-head"]),
    };
    for accept in &case.accept {
        command.args(["--accept", accept]);
    }
    let output = command.output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.code() == Some(0) || output.status.code() == Some(1), "{output:?}");
    verdict_of(output.status.success(), &text)
}

/// The ```python block of the format document, so that the spec's verifier and this suite cannot drift.
fn python_source() -> String {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/audit-format.md")).unwrap();
    let start = doc.find("```python\n").expect("a python block") + "```python\n".len();
    let end = start + doc[start..].find("```").unwrap();
    doc[start..end].to_owned()
}

fn python(script: &Path, case: &Case) -> Verdict {
    let head = case.head.as_ref().map_or("-".into(), |h| h.to_string_lossy().into_owned());
    let output = Command::new("python3")
        .arg(script)
        .arg(&case.public_key)
        .arg(case.dir.join("log"))
        .arg(head)
        .args(&case.accept)
        .output()
        .expect("python3 is installed by xtask/setup.sh");
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!text.contains("Traceback"), "{}: the sample verifier crashed: {text}", case.dir.display());
    verdict_of(output.status.success(), &text)
}

#[test]
fn every_vector_gets_its_verdict_from_all_three_verifiers() {
    let cases = cases();
    assert!(cases.len() >= 20, "only {} vectors", cases.len());
    assert!(cases.iter().any(|c| c.expected.is_none()) && cases.iter().any(|c| c.expected.is_some()));
    let work = tempfile::tempdir().unwrap();
    let script = work.path().join("verify.py");
    std::fs::write(&script, python_source()).unwrap();
    let mut wrong = Vec::new();
    for case in &cases {
        let name = case.dir.file_name().unwrap().to_string_lossy().into_owned();
        for (verifier, verdict) in
            [("ours", ours(case)), ("cli", cli(case)), ("python", python(&script, case))]
        {
            if verdict != case.expected {
                wrong.push(format!("{name}: {verifier} says {verdict:?}, expected {:?}", case.expected));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

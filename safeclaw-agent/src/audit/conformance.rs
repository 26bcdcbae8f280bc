//! Runs the conformance vectors (the committed `tests/vectors/` or a set `vectors::generate` just made)
//! through our verifier (library and `audit verify`) and the Python verifier printed in
//! docs/audit-format.md; each must give the verdict and name the entry the vector's `case.json` records.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use super::signing::PublicKey;
use super::verify::{verify, VerifyOptions};

/// What a verifier said: `None` verified; `Some(None)` failed for the log as a whole; `Some(Some(n))`
/// failed naming entry n.
pub type Verdict = Option<Option<u64>>;

/// One vector: a directory with `log/`, maybe `audit.head`, and `case.json`.
pub struct Case {
    pub dir: PathBuf,
    pub public_key: String,
    pub head: Option<PathBuf>,
    pub accept: Vec<String>,
    pub expected: Verdict,
}

impl Case {
    /// The vector's directory name.
    pub fn name(&self) -> String {
        self.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }
}

/// The vectors under `root`, in name order.
pub fn cases(root: &Path) -> Vec<Case> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|d| d.expect("dir entry").path())
        .filter(|p| p.join("case.json").exists())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|dir| {
            let case: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).expect("case.json"))
                    .expect("case.json is JSON");
            let expected = match case["verdict"].as_str() {
                Some("ok") => None,
                Some("failed") => Some(case["entry"].as_u64()),
                other => panic!("{}: verdict {other:?}", dir.display()),
            };
            Case {
                public_key: case["publicKey"].as_str().expect("publicKey").to_owned(),
                head: case["head"].as_str().map(|h| dir.join(h)),
                accept: case["accept"]
                    .as_array()
                    .expect("accept")
                    .iter()
                    .map(|a| a.as_str().expect("accept item").to_owned())
                    .collect(),
                expected,
                dir,
            }
        })
        .collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("log")).expect("log dir").map(|d| d.expect("dir entry").path()).collect()
}

fn ours(case: &Case) -> Verdict {
    let opts = VerifyOptions {
        trusted_key: Some(PublicKey::parse(&case.public_key).expect("publicKey")),
        head_path: case.head.clone(),
        from: None,
        accept: case.accept.iter().map(|a| a.parse().expect("accept item")).collect(),
    };
    let report = verify(&segment_files(&case.dir), &opts, Arc::new(|_| {})).expect("verify runs");
    report.failure.map(|f| f.sequence)
}

/// Reads "FAILED at entry N", "FAILED at the log" or "OK" from a verifier's output.
fn verdict_of(success: bool, output: &str) -> Verdict {
    if success {
        assert!(output.contains("OK"), "{output}");
        return None;
    }
    let rest = output.split("FAILED at ").nth(1).unwrap_or_else(|| panic!("no verdict in {output:?}"));
    Some(rest.strip_prefix("entry ").map(|n| {
        n.split(|c: char| !c.is_ascii_digit()).next().and_then(|d| d.parse().ok()).expect("an entry number")
    }))
}

/// The verdict of `agent_bin audit verify` on `case`, and what it printed.
fn cli(agent_bin: &Path, case: &Case) -> (Verdict, String) {
    let mut command = Command::new(agent_bin);
    command.args(["audit", "verify"]).arg(case.dir.join("log")).args(["--pubkey", &case.public_key]);
    match &case.head {
        Some(head) => command.arg("--head").arg(head),
        None => command.args(["--accept", "no-head"]),
    };
    for accept in &case.accept {
        command.args(["--accept", accept]);
    }
    let output = command.output().expect("audit verify runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.code() == Some(0) || output.status.code() == Some(1), "{output:?}");
    (verdict_of(output.status.success(), &text), text)
}

/// The ```python block of the format document, so that the spec's verifier and the suite cannot drift.
fn python_source() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/audit-format.md"))
        .expect("docs/audit-format.md");
    let start = doc.find("```python\n").expect("a python block") + "```python\n".len();
    let end = start + doc[start..].find("```").expect("the end of the python block");
    doc[start..end].to_owned()
}

/// Runs the sample, unchanged and as its own `__main__`, once per line of arguments read from stdin,
/// all in one interpreter: under emulation each new python3 spent seconds importing `cryptography`.
/// Answers each line with `{"ok": exited 0, "output": what it printed}`.
const PYTHON_DRIVER: &str = r#"
import contextlib, io, json, sys
sample = compile(open(sys.argv[1]).read(), sys.argv[1], "exec")
for line in sys.stdin:
    sys.argv = ["verify.py"] + json.loads(line)
    printed, ok = io.StringIO(), True
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        try:
            exec(sample, {"__name__": "__main__"})
        except SystemExit as end:
            ok = end.code in (None, 0)
            if isinstance(end.code, str):
                print(end.code)
    print(json.dumps({"ok": ok, "output": printed.getvalue()}), flush=True)
"#;

/// The Python sample's verdict on every case, in order.
fn python(script: &Path, cases: &[Case]) -> Vec<Verdict> {
    use std::io::{BufRead as _, Write as _};
    let mut driver = Command::new("python3")
        .arg("-c")
        .arg(PYTHON_DRIVER)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is installed by xtask/setup.sh");
    let mut to_driver = driver.stdin.take().expect("piped stdin");
    let mut from_driver = std::io::BufReader::new(driver.stdout.take().expect("piped stdout"));
    let verdicts = cases
        .iter()
        .map(|case| {
            let head = case.head.as_ref().map_or("-".into(), |h| h.to_string_lossy().into_owned());
            let mut args =
                vec![case.public_key.clone(), case.dir.join("log").to_string_lossy().into_owned(), head];
            args.extend(case.accept.iter().cloned());
            writeln!(to_driver, "{}", serde_json::Value::from(args)).expect("write to the Python driver");
            let mut answer = String::new();
            from_driver.read_line(&mut answer).expect("read from the Python driver");
            let answer: serde_json::Value = serde_json::from_str(&answer).unwrap_or_else(|e| {
                panic!("{}: the Python driver answered {answer:?}: {e}", case.dir.display())
            });
            let text = answer["output"].as_str().unwrap_or_default();
            assert!(
                !text.contains("Traceback"),
                "{}: the sample verifier crashed: {text}",
                case.dir.display()
            );
            verdict_of(answer["ok"] == true, text)
        })
        .collect();
    drop(to_driver);
    let status = driver.wait().expect("wait for the Python driver");
    assert!(status.success(), "the Python driver failed: {status}");
    verdicts
}

/// Every verdict (ours, `agent_bin audit verify`, the Python sample) that differs from its case's, one
/// line each; empty when all three agree with every case.
pub fn disagreements(cases: &[Case], agent_bin: &Path) -> Vec<String> {
    let work = tempfile::tempdir().expect("temporary directory");
    let script = work.path().join("verify.py");
    std::fs::write(&script, python_source()).expect("write the sample verifier");
    let mut wrong = Vec::new();
    for (case, python) in cases.iter().zip(python(&script, cases)) {
        let (cli_verdict, cli_output) = cli(agent_bin, case);
        let before = wrong.len();
        for (verifier, verdict) in [("ours", ours(case)), ("cli", cli_verdict), ("python", python)] {
            if verdict != case.expected {
                wrong.push(format!(
                    "{}: {verifier} says {verdict:?}, expected {:?}",
                    case.name(),
                    case.expected
                ));
            }
        }
        if wrong.len() > before {
            // Why, in the words of `audit verify`: a disagreement is otherwise only a number.
            wrong.push(format!("{}: audit verify printed: {}", case.name(), cli_output.trim()));
        }
    }
    wrong
}

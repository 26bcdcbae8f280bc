//! The shipped policies (policies/*.yaml): they load, compile within the kernel limits, pass their
//! cases files through the CLI, and their kernel tables agree with the evaluator on paths built
//! from the policies' own glob fragments.

use std::path::{Path, PathBuf};
use std::process::Command;

use safeclaw_agent::policy::compiled::Request;
use safeclaw_agent::policy::{compile_all, load_file, CompileContext, Evaluator};

const HOME: &str = "/home/alice";

fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

fn shipped() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(policies_dir())
        .expect("policies/ exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_three_policies_are_shipped() {
    let names: Vec<String> =
        shipped().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for expected in ["audit-only.yaml", "default.yaml", "strict.yaml"] {
        assert!(names.contains(&expected.to_owned()), "{expected} missing from {names:?}");
    }
}

#[test]
fn shipped_policies_compile_without_warnings() {
    for file in shipped() {
        let policy = load_file(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let set = compile_all(&policy, &CompileContext::new(HOME)).unwrap_or_else(|e| panic!("{e}"));
        let warnings: Vec<String> = set.warnings.iter().map(ToString::to_string).collect();
        assert!(warnings.is_empty(), "{}:\n{}", file.display(), warnings.join("\n"));
    }
}

#[test]
fn shipped_policies_pass_their_cases() {
    for file in shipped() {
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        let cases = policies_dir().join("tests").join(format!("{stem}.cases.yaml"));
        assert!(cases.exists(), "{} has no cases file {}", file.display(), cases.display());
        let output = Command::new(env!("CARGO_BIN_EXE_safeclaw-agent"))
            .args(["policy", "test"])
            .arg(&file)
            .arg("--cases")
            .arg(&cases)
            .output()
            .expect("runs the CLI");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{}:\n{stdout}\n{}",
            file.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    }
}

/// Paths made of the literal pieces of the policy's globs, with wildcards filled in several ways.
fn fragment_paths(text: &str) -> Vec<Vec<u8>> {
    let mut pieces: Vec<String> = Vec::new();
    for line in text.lines() {
        for raw in line.split(['[', ']', ',', '"', ' ', '{', '}']) {
            for piece in raw.split('/') {
                let piece = piece.trim_matches(|c: char| c == '*' || c == '?' || c == '~');
                if !piece.is_empty() && piece.len() < 40 && !piece.contains(':') {
                    pieces.push(piece.to_owned());
                }
            }
        }
    }
    pieces.sort();
    pieces.dedup();
    pieces.extend(
        ["x.pem", "key.pem", "id_rsa", ".env", ".env.example", "a", "home", "alice", "bob", "root"]
            .map(String::from),
    );
    let mut paths = vec![b"/".to_vec(), b"pipe:[7]".to_vec(), b"@abstract".to_vec()];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    for _ in 0..20_000 {
        let depth = 1 + next(6);
        let mut path = String::new();
        if next(3) == 0 {
            path.push_str(HOME);
        }
        for _ in 0..depth {
            path.push('/');
            path.push_str(&pieces[next(pieces.len())]);
            if next(5) == 0 {
                path.push_str(&pieces[next(pieces.len())]);
            }
        }
        paths.push(path.into_bytes());
    }
    paths
}

#[test]
fn shipped_tables_agree_with_the_evaluator_on_policy_fragments() {
    let ctx = CompileContext::new(HOME);
    for file in shipped() {
        let text = std::fs::read_to_string(&file).unwrap();
        let policy = load_file(&file).unwrap();
        let set = compile_all(&policy, &ctx).unwrap();
        let evaluator = Evaluator::new(&policy, None, &ctx).unwrap();
        for path in fragment_paths(&text) {
            for request in [
                Request::FileOpen { path: &path, read: true, write: false },
                Request::FileOpen { path: &path, read: true, write: true },
                Request::Exec { path: &path },
                Request::ConnectUnix { path: &path },
            ] {
                assert_eq!(
                    set.base.tables.decide(&request),
                    evaluator.evaluate(&request),
                    "{}: {request:?} ({})",
                    file.display(),
                    String::from_utf8_lossy(&path)
                );
            }
        }
    }
}

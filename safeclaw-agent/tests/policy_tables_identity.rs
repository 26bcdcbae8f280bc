//! What a policy compiles to is pinned byte for byte: the kernel tables, rule records (with the file,
//! line and column of each rule) and warnings of the shipped policies and of a generated 2,000-rule
//! one hash to the values the single-threaded compiler produced. Speed-ups of loading and compiling
//! (one YAML pass for depth and positions, automata built on threads) must keep them.

use safeclaw_agent::policy::{compile_all, load_str, CompileContext};
use sha2::{Digest as _, Sha256};

/// sha256 of the `Debug` text of the loaded policy and of its compiled set.
fn digest(name: &str, text: &str) -> String {
    let policy = load_str(name, text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let set = compile_all(&policy, &CompileContext::new("/home/alice")).unwrap_or_else(|e| panic!("{e}"));
    let mut hasher = Sha256::new();
    hasher.update(format!("{policy:?}"));
    hasher.update(format!("{set:?}"));
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn shipped(file: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The bench's mix (file reads, execs, network rules), `**` rules, a rule that can never decide
/// (a warning) and an agent profile.
fn generated() -> String {
    let mut yaml = String::from("version: 1\ndefault: deny\nrules:\n");
    for i in 0..2000 {
        let rule = match i % 5 {
            0 => format!("    action: file.read\n    paths: [/srv/d{i}/*.csv]\n"),
            1 => format!("    action: process.exec\n    binary: [/opt/t{i}/*]\n"),
            2 => format!("    action: file.write\n    paths: [\"~/p{i}/out/**\"]\n"),
            _ => format!(
                "    action: network.connect\n    cidrs: [10.{}.{}.0/24]\n    ports: [443, \"8000-8100\"]\n",
                i / 256 % 256,
                i % 256
            ),
        };
        yaml.push_str(&format!("  - name: generated-{i}\n    effect: allow\n{rule}"));
    }
    yaml.push_str(
        "  - name: secrets\n    action: file.*\n    effect: deny\n    paths: [\"**/.env\", \"**/*.pem\"]\n\
         \x20 - name: never-decides\n    action: file.read\n    effect: deny\n    paths: [/srv/d0/a.csv]\n\
         agents:\n  claude:\n    rules:\n      - name: claude-tmp\n        action: file.*\n        effect: allow\n        paths: [\"/tmp/**\"]\n",
    );
    yaml
}

#[test]
fn compiled_tables_are_unchanged() {
    // A deliberate change to the tables, rule records or warnings updates these (and says why).
    let cases = [
        (
            "default.yaml",
            shipped("default.yaml"),
            "23a7c438c362eb2085ceb83803cc9ff0ffaf84a02589b9a3e006c79be28f2334",
        ),
        (
            "strict.yaml",
            shipped("strict.yaml"),
            "ef0df23c941546a8d946dfac053aaf1628064e854bb78acd85b8f3e54c5115c3",
        ),
        (
            "audit-only.yaml",
            shipped("audit-only.yaml"),
            "d4720e09d6f0839de437c759f108d50793981a16bec292285677c74c12d6ee9c",
        ),
        ("generated.yaml", generated(), "a275f550c5d82b4eea4496c208dd969ef072d2bf37dfb3570fbb7e4bda40e121"),
    ];
    let mut wrong = Vec::new();
    for (name, text, expected) in &cases {
        let got = digest(name, text);
        println!("{name}: {got}");
        if got != *expected {
            wrong.push(format!("{name}: {got}, expected {expected}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

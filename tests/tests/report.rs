//! `audit report` over a log written in the VM by real agent sessions (`safeclaw-agent exec`): allows,
//! denies and a policy reload; every framework in every format, the PDF read back with poppler and every
//! page rendered, the evidence pack checked and then changed by one byte, and a tampered copy of the log
//! reported FAILED on page one with exit 1.
use std::path::Path;
use std::process::{Command, Output};

use safeclaw_integration::{agent_bin, Daemon, RunAs};

const NAME: &str = "safeclaw-it-report";

/// Default allow; the secret's read is denied by a rule tagged with one control of each framework.
fn policy(secret: &Path, generation: u32) -> String {
    format!(
        r#"
version: 1
default: allow
rules:
  - name: secret-read
    action: file.read
    effect: deny
    severity: high
    reason: "generation {generation}: the secret is not for agents"
    tags: [soc2:CC6.1, hipaa:164.312(a)(1), iso27001:A.8.3, pci-dss:7.2.1]
    paths: [{}]
"#,
        secret.display()
    )
}

fn agent(args: &[&str]) -> Output {
    Command::new(agent_bin()).args(args).output().expect("cannot run safeclaw-agent")
}

/// A poppler tool (poppler-utils, installed by xtask/setup.sh); missing is a failure, not a skip.
fn poppler(tool: &str, args: &[&str]) -> Output {
    Command::new(tool).args(args).output().unwrap_or_else(|e| panic!("{tool} cannot run: {e}"))
}

fn pdf_text(pdf: &Path, first_page_only: bool) -> String {
    let pdf = pdf.to_str().unwrap();
    let args: &[&str] =
        if first_page_only { &["-layout", "-f", "1", "-l", "1", pdf, "-"] } else { &["-layout", pdf, "-"] };
    let output = poppler("pdftotext", args);
    assert!(output.status.success(), "pdftotext {pdf}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn page_count(pdf: &Path) -> usize {
    let output = poppler("pdfinfo", &[pdf.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("Pages:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("pdfinfo {pdf:?}: {text}"))
}

#[test]
fn reports_over_a_vm_written_log_say_what_the_log_says() {
    let daemon = Daemon::start(NAME, "version: 1\ndefault: allow\n");
    let files = daemon.files_dir();
    let (public, secret) = (files.join("public.txt"), files.join("secret.txt"));
    std::fs::write(&public, "hello").unwrap();
    std::fs::write(&secret, "s3cret").unwrap();
    let policy_file = daemon.work().join("policy.yaml");
    let read_both = format!("cat {} {}", public.display(), secret.display());

    // Generation 1, then a reload to generation 2, each with a session that reads both files.
    for generation in 1..=2 {
        std::fs::write(&policy_file, policy(&secret, generation)).unwrap();
        let reload = daemon.agent_command(&["policy", "reload"]);
        assert!(reload.status.success(), "reload to generation {generation}: {reload:?}");
        let session = daemon.session("claude", RunAs::Nobody, &["sh", "-c", &read_both]);
        let stdout = String::from_utf8_lossy(&session.stdout);
        let stderr = String::from_utf8_lossy(&session.stderr);
        assert!(stdout.contains("hello") && !stdout.contains("s3cret"), "{session:?}");
        assert!(
            stderr.contains("Permission denied") || stderr.contains("Operation not permitted"),
            "{stderr}"
        );
    }
    let work = daemon.work().to_path_buf();
    let (status, entries) = daemon.stop();
    assert!(status.success(), "daemon exit: {status}");

    let attempts = entries.iter().filter(|e| e.get("kernelSeq").is_some()).count();
    let denials: Vec<_> =
        entries.iter().filter(|e| e.get("kernelSeq").is_some() && e["effect"] == "deny").collect();
    assert!(denials.iter().any(|e| e["requestDetails"]["path"] == secret.to_str().unwrap()), "{denials:#?}");
    let policies: std::collections::BTreeSet<&str> =
        entries.iter().filter_map(|e| e["policyHash"].as_str()).collect();
    assert!(policies.len() >= 2, "two policy generations decided: {policies:?}");

    let config = work.join("config.yaml");
    std::fs::write(
        &config,
        "audit:\n  keyFile: state/audit.key\n  headFile: state/audit.head\n  destinations:\n    - type: file\n      path: log/audit.jsonl\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let day = |e: &serde_json::Value| {
        e["timestamp"].as_str().expect("every entry has a timestamp")[..10].to_owned()
    };
    let period = format!("{}:{}", day(&entries[0]), day(entries.last().unwrap()));
    let out = work.join("reports");
    std::fs::create_dir_all(&out).unwrap();
    let report = |framework: &str, file: &Path, extra: &[&str]| {
        let mut args =
            vec!["audit", "report", "--config", config, "--framework", framework, "--period", &period];
        args.extend(["--output", file.to_str().unwrap()]);
        args.extend(extra);
        agent(&args)
    };

    for (framework, title, control) in [
        ("soc2", "SOC 2", "CC6.1"),
        ("hipaa", "HIPAA Security Rule", "164.312(a)(1)"),
        ("iso27001", "ISO/IEC 27001", "A.8.3"),
        ("pci-dss", "PCI DSS", "7.2.1"),
    ] {
        for ext in ["pdf", "html", "json", "zip"] {
            let file = out.join(format!("{framework}.{ext}"));
            let output = report(framework, &file, &[]);
            assert!(output.status.success(), "{framework} {ext}: {output:?}");
        }
        let pdf = out.join(format!("{framework}.pdf"));
        let first_page = pdf_text(&pdf, true);
        assert!(first_page.contains(&format!("{title} compliance report")), "{first_page}");
        assert!(first_page.contains("Chain verification: PASSED"), "{first_page}");
        let counts = format!("Attempts in the period: {attempts}; denied: {}", denials.len());
        assert!(first_page.contains(&counts), "{counts} not on page one:\n{first_page}");
        let text = pdf_text(&pdf, false);
        assert!(text.contains(secret.to_str().unwrap()), "{framework}: the denial of the secret is missing");
        assert!(text.contains(control), "{framework}: control {control} missing");

        let pages = page_count(&pdf);
        let prefix = out.join(format!("{framework}-page"));
        let render =
            poppler("pdftoppm", &["-png", "-r", "30", pdf.to_str().unwrap(), prefix.to_str().unwrap()]);
        assert!(render.status.success(), "pdftoppm: {render:?}");
        let rendered = std::fs::read_dir(&out)
            .unwrap()
            .filter(|e| {
                e.as_ref().unwrap().file_name().to_string_lossy().starts_with(&format!("{framework}-page"))
            })
            .count();
        assert_eq!(rendered, pages, "{framework}: every page renders");

        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join(format!("{framework}.json"))).unwrap()).unwrap();
        assert_eq!(json["verification"]["verdict"], "PASSED");
        assert_eq!(json["activity"]["attempts"], attempts as u64);
        assert_eq!(json["denials"]["total"], denials.len() as u64);
        let html = std::fs::read_to_string(out.join(format!("{framework}.html"))).unwrap();
        assert!(html.contains("Chain verification: PASSED") && html.contains(control));

        // The pack verifies as written, and not after one byte of its segment data changed.
        let pack = out.join(format!("{framework}.zip"));
        let output = agent(&["audit", "report", "verify", pack.to_str().unwrap()]);
        assert!(output.status.success(), "{framework} pack: {output:?}");
        let mut bytes = std::fs::read(&pack).unwrap();
        let needle = b"\"action\":\"file.";
        let at = bytes.windows(needle.len()).position(|w| w == needle).expect("a file entry in the pack");
        bytes[at + 12] ^= 0x01;
        let changed = out.join(format!("{framework}-changed.zip"));
        std::fs::write(&changed, &bytes).unwrap();
        let output = agent(&["audit", "report", "verify", changed.to_str().unwrap()]);
        assert!(!output.status.success(), "{framework}: a changed pack verified: {output:?}");
        assert!(String::from_utf8_lossy(&output.stdout).contains("FAILED"), "{output:?}");
    }

    // A copy of the log with one denial's path changed: FAILED on page one, exit 1.
    let pubkey = agent(&["audit", "pubkey", "--config", config]);
    assert!(pubkey.status.success(), "{pubkey:?}");
    let pubkey = String::from_utf8_lossy(&pubkey.stdout).trim().to_owned();
    let tampered_dir = work.join("tampered");
    std::fs::create_dir_all(&tampered_dir).unwrap();
    let log = std::fs::read_to_string(work.join("log/audit.jsonl")).unwrap();
    let needle = format!("\"path\":\"{}\"", secret.display());
    assert!(log.contains(&needle), "the log names the secret");
    let tampered_log = tampered_dir.join("audit.jsonl");
    std::fs::write(&tampered_log, log.replacen(&needle, &needle.replace("secret", "secreT"), 1)).unwrap();
    let pdf = out.join("tampered.pdf");
    let output = agent(&[
        "audit",
        "report",
        tampered_log.to_str().unwrap(),
        "--pubkey",
        &pubkey,
        "--head",
        work.join("state/audit.head").to_str().unwrap(),
        "--framework",
        "soc2",
        "--period",
        &period,
        "--output",
        pdf.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let first_page = pdf_text(&pdf, true);
    assert!(first_page.contains("Chain verification: FAILED"), "{first_page}");
}

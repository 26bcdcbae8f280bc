//! `safeclaw-agent audit report` over a log written by the project's writer (allows, denies, a policy
//! reload and a rejected one): every framework as PDF, HTML, JSON and evidence pack; the PDF read back
//! with poppler; the pack checked, then changed by one byte; a tampered log reported FAILED.
mod audit_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use audit_support::TestLog;
use safeclaw_agent::audit::synthetic::record;
use safeclaw_agent::audit::{AuditWriter, Digest, Lifecycle};

const CONFIG: &str = "audit:\n  keyFile: state/audit.key\n  headFile: state/audit.head\n  destinations:\n    - type: file\n      path: log/audit.jsonl\n";
const ATTEMPTS: u64 = 400;

/// A log with a policy load, a reload, a rejected reload, attempts under both policies, and a stop.
fn build_log() -> (TestLog, PathBuf) {
    let log = TestLog { dir: tempfile::tempdir().unwrap() };
    let mut writer = AuditWriter::open(log.options()).unwrap();
    writer.log(&Lifecycle::DaemonStart { version: "test".into() });
    writer.log(&Lifecycle::KernelSessionStart);
    let load = |hash: &[u8]| Lifecycle::PolicyLoad {
        policy_hash: Digest::of(hash),
        source: "/etc/safeclaw/policy.yaml".into(),
        rules: 7,
    };
    writer.log(&load(b"synthetic policy"));
    for k in 0..ATTEMPTS {
        if k == ATTEMPTS / 2 {
            writer.log(&Lifecycle::PolicyReloadRejected {
                source: "/etc/safeclaw/policy.yaml".into(),
                error: "policy.yaml:3:5: unknown action".into(),
            });
            writer.log(&load(b"second policy"));
        }
        writer.append(&record(k));
        if k % 50 == 49 {
            writer.commit().unwrap();
        }
    }
    writer.log(&Lifecycle::DaemonStop { reason: "test over".into() });
    writer.close().unwrap();
    let config = log.dir.path().join("config.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    (log, config)
}

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_safeclaw-agent")).args(args).output().unwrap()
}

/// A poppler tool; missing in CI is a failure, not a skip.
fn poppler(tool: &str, args: &[&str]) -> Output {
    match Command::new(tool).args(args).output() {
        Ok(output) => output,
        Err(e) => panic!("{tool} (poppler-utils, installed by xtask/setup.sh) cannot run: {e}"),
    }
}

fn pdf_text(pdf: &Path, pages: Option<(u32, u32)>) -> String {
    let mut args = vec!["-layout".to_string()];
    if let Some((first, last)) = pages {
        args.extend(["-f".into(), first.to_string(), "-l".into(), last.to_string()]);
    }
    args.extend([pdf.to_string_lossy().into_owned(), "-".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = poppler("pdftotext", &args);
    assert!(output.status.success(), "pdftotext {pdf:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn page_count(pdf: &Path) -> u32 {
    let output = poppler("pdfinfo", &[pdf.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Pages:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("pdfinfo {pdf:?}: {text}"))
}

/// A period around today, so that the synthetic entries (stamped now) are inside it.
fn period() -> String {
    let today = time::OffsetDateTime::now_utc().date();
    let day = |d: time::Date| format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day());
    format!("{}:{}", day(today.previous_day().unwrap()), day(today.next_day().unwrap()))
}

/// Counts the log itself says: attempts and denials.
fn log_counts(log: &TestLog) -> (u64, u64, String) {
    let (mut attempts, mut denials, mut denied_path) = (0, 0, String::new());
    for line in log.lines() {
        let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
        if entry.get("kernelSeq").is_some() {
            attempts += 1;
            if entry["effect"] == "deny" {
                denials += 1;
                if denied_path.is_empty() {
                    if let Some(path) = entry["requestDetails"]["path"].as_str() {
                        denied_path = path.to_string();
                    }
                }
            }
        }
    }
    (attempts, denials, denied_path)
}

fn report(config: &Path, framework: &str, output: &Path, extra: &[&str]) -> Output {
    let period = period();
    let mut args = vec!["audit", "report", "--config", config.to_str().unwrap(), "--framework", framework];
    args.extend(["--period", &period, "--output", output.to_str().unwrap()]);
    args.extend(extra);
    agent(&args)
}

#[test]
fn every_framework_in_every_format_says_what_the_log_says() {
    let (log, config) = build_log();
    let (attempts, denials, denied_path) = log_counts(&log);
    assert_eq!(attempts, ATTEMPTS);
    assert!(denials > 0 && !denied_path.is_empty());
    let out = log.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    for (framework, name, control) in [
        ("soc2", "SOC 2", "CC6.1"),
        ("hipaa", "HIPAA Security Rule", "164.312(a)(1)"),
        ("iso27001", "ISO/IEC 27001", "A.8.3"),
        ("pci-dss", "PCI DSS", "7.2.1"),
    ] {
        let extra: &[&str] = if framework == "hipaa" { &["--include-phi-access"] } else { &[] };
        for ext in ["pdf", "html", "json", "zip"] {
            let file = out.join(format!("{framework}.{ext}"));
            let output = report(&config, framework, &file, extra);
            assert!(output.status.success(), "{framework} {ext}: {output:?}");
            assert!(file.metadata().unwrap().len() > 0);
        }
        let pdf = out.join(format!("{framework}.pdf"));
        let first_page = pdf_text(&pdf, Some((1, 1)));
        assert!(first_page.contains(&format!("{name} compliance report")), "{first_page}");
        assert!(first_page.contains("Chain verification: PASSED"), "{first_page}");
        assert!(
            first_page.contains(&format!("Attempts in the period: {attempts}; denied: {denials}")),
            "{first_page}"
        );
        let text = pdf_text(&pdf, None);
        assert!(text.contains(&denied_path), "{framework}: no denial of {denied_path} in the PDF");
        assert!(text.contains(control), "{framework}: control {control} missing");
        assert!(text.contains("no rule names"), "{framework}: unnamed controls missing");
        assert!(text.contains("unknown action"), "{framework}: the rejected reload is missing");
        assert!(
            text.contains(&Digest::of(b"second policy").to_string()[..30]),
            "the reloaded policy is missing"
        );
        let pages = page_count(&pdf);
        assert!(pages >= 8, "{framework}: a title page and seven sections, got {pages} pages");
        assert!(text.contains(&format!("page {pages} of {pages}")), "{framework}: no page numbers");
        // Long tables break across pages and repeat their heading.
        assert!(text.matches("Sequence").count() > 3, "{framework}: table headings not repeated");
        let prefix = out.join(format!("{framework}-page"));
        let render =
            poppler("pdftoppm", &["-png", "-r", "40", pdf.to_str().unwrap(), prefix.to_str().unwrap()]);
        assert!(render.status.success(), "pdftoppm: {render:?}");
        let rendered = std::fs::read_dir(&out)
            .unwrap()
            .filter(|e| {
                e.as_ref().unwrap().file_name().to_string_lossy().starts_with(&format!("{framework}-page"))
            })
            .count();
        assert_eq!(rendered as u32, pages);

        // `REPORT_PAGE1_PNG=docs/report-page1.png` keeps the picture of page one the docs show.
        if let (Some(png), "soc2") = (std::env::var_os("REPORT_PAGE1_PNG"), framework) {
            let png = PathBuf::from(png);
            let stem = png.with_extension("");
            let args = [
                "-png",
                "-r",
                "70",
                "-f",
                "1",
                "-l",
                "1",
                "-singlefile",
                pdf.to_str().unwrap(),
                stem.to_str().unwrap(),
            ];
            assert!(poppler("pdftoppm", &args).status.success());
        }
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join(format!("{framework}.json"))).unwrap()).unwrap();
        assert_eq!(json["verification"]["verdict"], "PASSED");
        assert_eq!(json["activity"]["attempts"], attempts);
        assert_eq!(json["denials"]["total"], denials);
        assert_eq!(json["scope"]["policies"].as_array().unwrap().len(), 2);
        assert!(json["controls"]["named"].as_array().unwrap().iter().any(|c| c["id"] == control));
        if framework == "hipaa" {
            assert_eq!(json["phiAccess"]["total"], denials, "the denials' rule is tagged phi");
        }
        let html = std::fs::read_to_string(out.join(format!("{framework}.html"))).unwrap();
        assert!(html.contains("Chain verification: PASSED") && html.contains(control));

        let pack = out.join(format!("{framework}.zip"));
        let output =
            agent(&["audit", "report", "verify", pack.to_str().unwrap(), "--pubkey", &log.key().to_text()]);
        assert!(output.status.success(), "{framework} pack: {output:?}");
        assert!(String::from_utf8_lossy(&output.stdout).starts_with("OK: "), "{output:?}");
    }
}

/// Flips one byte of `pack` at `offset` into a copy, and returns what `report verify` says of it.
fn verify_changed(pack: &Path, offset: usize) -> (bool, String) {
    let mut bytes = std::fs::read(pack).unwrap();
    bytes[offset] ^= 0x01;
    let changed = pack.with_file_name(format!("changed-{offset}.zip"));
    std::fs::write(&changed, &bytes).unwrap();
    let output = agent(&["audit", "report", "verify", changed.to_str().unwrap()]);
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn a_pack_changed_by_one_byte_fails_naming_the_file() {
    let (log, config) = build_log();
    let pack = log.dir.path().join("iso.zip");
    let output = report(&config, "iso27001", &pack, &["--include-chain-verification"]);
    assert!(output.status.success(), "{output:?}");
    let bytes = std::fs::read(&pack).unwrap();
    let find = |needle: &[u8]| bytes.windows(needle.len()).position(|w| w == needle).unwrap();
    // In a segment's data, in the report's data, and in the zip's central directory at the end.
    let segment = find(b"\"action\":\"policy.reload_rejected\"") + 12;
    let (ok, text) = verify_changed(&pack, segment);
    assert!(!ok && text.contains("segments/audit.jsonl"), "{text}");
    let report_json = find(b"\"format\": \"safeclaw-report/1\"") + 12;
    let (ok, text) = verify_changed(&pack, report_json);
    assert!(!ok && text.contains("report.json"), "{text}");
    let (ok, text) = verify_changed(&pack, bytes.len() - 30);
    assert!(!ok && text.contains("FAILED"), "{text}");
    // Every byte of a small region round the manifest: each change fails.
    let manifest = find(b"\"files\"");
    for offset in manifest..manifest + 8 {
        let (ok, text) = verify_changed(&pack, offset);
        assert!(!ok && text.contains("manifest"), "offset {offset}: {text}");
    }
    let (ok, text) = verify_changed(&pack, 10);
    assert!(!ok, "a local header byte: {text}");
}

#[test]
fn a_tampered_log_is_reported_failed_on_page_one_with_exit_1() {
    let (log, config) = build_log();
    let mut lines = log.lines();
    lines[100] = lines[100].replacen("agent", "agenT", 1);
    log.set_lines(&lines);
    let pdf = log.dir.path().join("tampered.pdf");
    let output = report(&config, "soc2", &pdf, &[]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let first_page = pdf_text(&pdf, Some((1, 1)));
    assert!(first_page.contains("Chain verification: FAILED"), "{first_page}");
    assert!(first_page.contains("FAILED at entry 100"), "{first_page}");
}

#[test]
fn bad_periods_outputs_and_frameworks_are_refused() {
    let (log, config) = build_log();
    let out = log.dir.path().join("r.txt");
    let output = report(&config, "soc2", &out, &[]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains(".pdf, .html, .json or .zip"), "{output:?}");
    let output = report(&config, "gdpr", &log.dir.path().join("r.pdf"), &[]);
    assert!(
        !output.status.success() && String::from_utf8_lossy(&output.stderr).contains("gdpr"),
        "{output:?}"
    );
    let c = config.to_str().unwrap();
    let bad = log.dir.path().join("r.pdf");
    let output = agent(&[
        "audit",
        "report",
        "--config",
        c,
        "--framework",
        "soc2",
        "--period",
        "2026-Q5",
        "--output",
        bad.to_str().unwrap(),
    ]);
    assert!(
        !output.status.success() && String::from_utf8_lossy(&output.stderr).contains("2026-Q5"),
        "{output:?}"
    );
    assert!(!bad.exists());
}

//! The tamper suite: every damage class the audit trail must catch, each asserting the sequence number
//! and kind of damage that verification reports.
mod audit_support;

use std::time::Duration;

use audit_support::{edit, field, find, reseal, TestLog};
use safeclaw_agent::audit::retention::RetentionRule;
use safeclaw_agent::audit::signing::AuditKey;
use safeclaw_agent::audit::synthetic::record;
use safeclaw_agent::audit::verify::{Damage, Failure, VerifyOptions};
use safeclaw_agent::audit::{AuditWriter, Lifecycle};

/// Index of the first attempt (not a lifecycle entry) at or after `from`.
fn attempt(lines: &[String], from: usize) -> usize {
    (from..lines.len()).find(|&i| field(&lines[i], "kernelSeq").is_u64()).unwrap()
}

fn failure(log: &TestLog) -> Failure {
    let report = log.verify();
    match report.failure {
        Some(failure) => failure,
        None => panic!("damage not detected: {report:?}"),
    }
}

#[test]
fn an_intact_log_verifies() {
    let log = TestLog::build(50, |_| {});
    let report = log.verify();
    assert_eq!(report.failure, None, "{report:?}");
    assert_eq!(report.entries, log.lines().len() as u64);
    assert_eq!(report.signed_through, report.last_sequence);
}

#[test]
fn a_changed_byte_in_the_middle_is_found() {
    let log = TestLog::build(50, |_| {});
    let mut lines = log.lines();
    lines[20] = lines[20].replacen("agent", "agenT", 1);
    log.set_lines(&lines);
    let f = failure(&log);
    assert_eq!((f.sequence, f.damage), (Some(20), Damage::ContentChanged));
    assert_eq!(f.location.unwrap().line, 21);
}

#[test]
fn a_changed_byte_in_the_last_entry_is_found() {
    let log = TestLog::build(50, |_| {});
    let mut lines = log.lines();
    let last = lines.len() - 1;
    lines[last] = lines[last].replacen("shutdown", "shutdowN", 1);
    log.set_lines(&lines);
    let f = failure(&log);
    assert_eq!((f.sequence, f.damage), (Some(last as u64), Damage::ContentChanged));
}

#[test]
fn a_rewritten_and_rehashed_last_entry_is_found() {
    // The seed's verifier accepts this one. The final checkpoint's signature covers everything it says.
    let log = TestLog::build(50, |_| {});
    let mut lines = log.lines();
    let last = lines.len() - 1;
    lines[last] = edit(&lines[last], "timestamp", "2030-01-01T00:00:00.000Z".into());
    log.set_lines(&lines);
    let f = failure(&log);
    assert_eq!(f.sequence, Some(last as u64));
    assert!(matches!(f.damage, Damage::Relinked { .. }), "{f:?}");
}

#[test]
fn a_rewritten_last_attempt_after_a_crash_is_found_by_the_head() {
    // No final checkpoint (the daemon died): the head file signed at the last commit covers the tail.
    let log = TestLog { dir: tempfile::tempdir().unwrap() };
    let mut writer = AuditWriter::open(log.options()).unwrap();
    for k in 0..13 {
        writer.append(&record(k));
    }
    writer.commit().unwrap();
    drop(writer);
    let mut lines = log.lines();
    let last = lines.len() - 1;
    assert!(field(&lines[last], "kernelSeq").is_u64());
    lines[last] = edit(&lines[last], "reason", "edited".into());
    log.set_lines(&lines);
    let f = failure(&log);
    assert_eq!(f.sequence, Some(last as u64));
    assert_eq!(f.damage, Damage::HeadMismatch { signed_size: last as u64 + 1 });
}

#[test]
fn an_entry_rehashed_without_relinking_is_named() {
    let log = TestLog::build(50, |_| {});
    let mut lines = log.lines();
    let edited = attempt(&lines, 15);
    lines[edited] = edit(&lines[edited], "reason", "edited".into());
    log.set_lines(&lines);
    let f = failure(&log);
    assert_eq!((f.sequence, f.damage), (Some(edited as u64), Damage::Rehashed));
}

#[test]
fn a_deleted_entry_is_found() {
    let log = TestLog::build(50, |_| {});
    let mut lines = log.lines();
    lines.remove(30);
    log.set_lines(&lines);
    let f = failure(&log);
    assert_eq!((f.sequence, f.damage), (Some(30), Damage::Deleted { expected: 30, found: 31 }));
}

#[test]
fn a_duplicated_entry_is_an_insertion() {
    let log = TestLog::build(50, |_| {});
    let mut lines = log.lines();
    lines.insert(26, lines[25].clone());
    log.set_lines(&lines);
    let f = failure(&log);
    assert_eq!((f.sequence, f.damage), (Some(25), Damage::Inserted { expected: 26, found: 25 }));
}

#[test]
fn a_forged_entry_inserted_with_a_valid_link_is_found() {
    let log = TestLog::build(50, |_| {});
    let mut lines = log.lines();
    let forged = edit(&lines[33], "reason", "forged".into());
    lines.insert(33, forged);
    log.set_lines(&lines);
    let f = failure(&log);
    assert_eq!((f.sequence, f.damage), (Some(33), Damage::Inserted { expected: 34, found: 33 }));
}

#[test]
fn reordered_entries_are_found() {
    let log = TestLog::build(50, |_| {});
    let mut lines = log.lines();
    lines.swap(12, 13);
    log.set_lines(&lines);
    let f = failure(&log);
    assert_eq!((f.sequence, f.damage), (Some(12), Damage::Reordered { expected: 12, found: 13 }));
}

#[test]
fn tail_truncation_is_found_by_the_head() {
    let log = TestLog::build(50, |_| {});
    let mut lines = log.lines();
    let total = lines.len() as u64;
    // Cut right after a checkpoint, so that what remains looks like a log that simply stopped there.
    let checkpoint = find(&lines, "audit.checkpoint", 30);
    lines.truncate(checkpoint + 1);
    log.set_lines(&lines);
    let f = failure(&log);
    let kept = checkpoint as u64 + 1;
    assert_eq!(
        (f.sequence, f.damage),
        (Some(kept), Damage::Truncated { signed_size: total, found_size: kept })
    );
}

#[test]
fn an_edit_relinked_through_the_chain_is_caught_by_the_next_checkpoint() {
    // The seed's verifier accepts this one: every hash and link is recomputed after the edit.
    let log = TestLog::build(50, |_| {});
    let mut lines = log.lines();
    let edited = attempt(&lines, 21);
    lines[edited] = edit(&lines[edited], "reason", "edited".into());
    for i in edited + 1..lines.len() {
        let prev = field(&lines[i - 1], "hash");
        lines[i] = edit(&lines[i], "prevHash", prev);
    }
    log.set_lines(&lines);
    let f = failure(&log);
    let checkpoint = find(&log.lines(), "audit.checkpoint", edited) as u64;
    assert_eq!(f.sequence, Some(checkpoint));
    let Damage::Relinked { from, to } = f.damage else { panic!("{f:?}") };
    assert!((from..=to).contains(&(edited as u64)), "{from}..={to}");
    assert_eq!(to, checkpoint - 1);
}

#[test]
fn a_wholly_regenerated_log_is_refused() {
    let original = TestLog::build(30, |_| {});
    let forged = TestLog::build(30, |_| {});
    std::fs::copy(forged.active(), original.active()).unwrap();
    let f = failure(&original);
    assert_eq!(f.sequence, Some(0));
    assert!(matches!(f.damage, Damage::WrongKey { .. }), "{f:?}");
    // Without a trusted key, the head file (signed by the real key, naming the real log) still refuses it.
    let report = original.verify_with(VerifyOptions {
        trusted_key: None,
        head_path: Some(original.head()),
        from: None,
        ..Default::default()
    });
    assert!(matches!(report.failure.map(|f| f.damage), Some(Damage::BadHead { .. })));
}

#[test]
fn re_signing_old_entries_with_a_newer_key_is_refused() {
    // CVE-2023-31439: the attacker has a fresh key, edits an old entry and re-signs every checkpoint.
    let log = TestLog::build(40, |_| {});
    let attacker_dir = tempfile::tempdir().unwrap();
    let attacker = AuditKey::load_or_create(&attacker_dir.path().join("k")).unwrap();
    let attacker_id = attacker.public().key_id().to_string();
    let mut lines = log.lines();
    lines[5] = edit(&lines[5], "reason", "edited".into());
    for i in 6..lines.len() {
        let prev = field(&lines[i - 1], "hash");
        lines[i] = edit(&lines[i], "prevHash", prev);
        if field(&lines[i], "action") == "audit.checkpoint" {
            let mut details = field(&lines[i], "details");
            details["keyId"] = attacker_id.clone().into();
            lines[i] = edit(&lines[i], "details", details);
        }
    }
    log.set_lines(&lines);
    let f = failure(&log);
    assert_eq!(f.sequence, Some(find(&lines, "audit.checkpoint", 5) as u64));
    assert!(matches!(f.damage, Damage::WrongKey { ref key } if *key == attacker_id), "{f:?}");
}

#[test]
fn a_missing_middle_segment_is_found() {
    let log = TestLog::build(300, |o| o.max_segment_bytes = Some(8 << 10));
    let files = log.files();
    assert!(files.len() >= 4, "{files:?}");
    let removed = &files[1];
    std::fs::remove_file(removed).unwrap();
    let f = failure(&log);
    assert!(matches!(f.damage, Damage::MissingSegment { .. }), "{f:?}");
    let Damage::MissingSegment { expected, found } = f.damage else { unreachable!() };
    assert_eq!(f.sequence, Some(expected));
    assert_eq!(&*f.location.unwrap().file, files[2].as_path());
    assert!(found > expected);
}

#[test]
fn a_missing_first_segment_without_a_retention_entry_is_found() {
    let log = TestLog::build(300, |o| o.max_segment_bytes = Some(8 << 10));
    std::fs::remove_file(&log.files()[0]).unwrap();
    let f = failure(&log);
    assert_eq!(f.sequence, Some(0));
    assert!(matches!(f.damage, Damage::MissingHistory { .. }), "{f:?}");
}

#[test]
fn a_corrupt_line_is_named_by_file_and_line() {
    let log = TestLog::build(20, |_| {});
    let mut lines = log.lines();
    lines[7] = "{not json".into();
    log.set_lines(&lines);
    let f = failure(&log);
    assert_eq!(f.sequence, Some(7));
    assert!(matches!(f.damage, Damage::Malformed { .. }), "{f:?}");
    assert_eq!(f.location.unwrap().line, 8);
}

#[test]
fn damage_deep_in_a_log_of_many_chunks_is_named_by_its_line() {
    // Over 3 MiB: verification reads 1 MiB chunks and parses them on several threads, then checks them
    // in file order; the line number must count across chunks.
    let log = TestLog::build(6_000, |_| {});
    assert!(std::fs::metadata(log.active()).unwrap().len() > 3 << 20);
    assert_eq!(log.verify().failure, None);
    let mut lines = log.lines();
    let target = attempt(&lines, 5_500);
    lines[target] = lines[target].replacen("agent", "agenT", 1);
    log.set_lines(&lines);
    let f = failure(&log);
    assert_eq!((f.sequence, f.damage), (Some(target as u64), Damage::ContentChanged));
    assert_eq!(f.location.unwrap().line, target as u64 + 1);
}

#[test]
fn entries_appended_after_the_last_signature_are_found() {
    let log = TestLog::build(20, |_| {});
    let mut lines = log.lines();
    let last = lines.len() - 1;
    let mut extra = edit(&lines[last - 1], "sequence", (last as u64 + 1).into());
    extra = edit(&extra, "prevHash", field(&lines[last], "hash"));
    lines.push(reseal(&extra));
    log.set_lines(&lines);
    let f = failure(&log);
    let appended = last as u64 + 1;
    assert_eq!(
        (f.sequence, f.damage),
        (Some(appended), Damage::UnsignedTail { from: appended, to: appended })
    );
}

#[test]
fn from_skips_what_was_verified_before() {
    let log = TestLog::build(40, |_| {});
    let mut lines = log.lines();
    lines[3] = lines[3].replacen("agent", "agenT", 1);
    log.set_lines(&lines);
    let opts = VerifyOptions {
        trusted_key: Some(log.key()),
        head_path: Some(log.head()),
        from: Some(10),
        ..Default::default()
    };
    let report = log.verify_with(opts);
    assert_eq!(report.failure, None, "{report:?}");
    assert_eq!(report.first_sequence, Some(10));
}

#[test]
fn retention_deletes_whole_old_segments_and_what_remains_verifies() {
    let log = TestLog::build(300, |o| o.max_segment_bytes = Some(8 << 10));
    let before = log.files();
    // A zero period: every rotated segment is already past it.
    let mut opts = log.options();
    opts.retention = Some(RetentionRule { keep: Duration::ZERO, label: "0d".into() });
    let mut writer = AuditWriter::open(opts).unwrap();
    writer.log(&Lifecycle::DaemonStart { version: "test".into() });
    writer.tick().unwrap();
    writer.close().unwrap();
    assert_eq!(log.files(), [log.active()], "only the active segment is left");
    let lines = log.lines();
    let deletions: Vec<&String> =
        lines.iter().filter(|l| field(l, "action") == "audit.retention_delete").collect();
    assert_eq!(deletions.len(), before.len() - 1);
    assert_eq!(field(deletions[0], "details")["firstSequence"], 0);
    let report = log.verify();
    assert_eq!(report.failure, None, "{report:?}");
    assert_eq!(report.retention_deletions, deletions.len() as u64);
}

#[test]
fn a_rewritten_retention_entry_is_found() {
    let log = TestLog::build(300, |o| o.max_segment_bytes = Some(8 << 10));
    let mut opts = log.options();
    opts.retention = Some(RetentionRule { keep: Duration::ZERO, label: "0d".into() });
    let mut writer = AuditWriter::open(opts).unwrap();
    writer.tick().unwrap();
    writer.close().unwrap();
    // Claim a different last hash for the deleted entries, and rehash the entry.
    let mut lines = log.lines();
    let at = find(&lines, "audit.retention_delete", 0);
    let mut details = field(&lines[at], "details");
    details["lastHash"] = field(&lines[at], "prevHash");
    lines[at] = edit(&lines[at], "details", details);
    log.set_lines(&lines);
    let f = failure(&log);
    assert_eq!(
        (f.sequence, f.damage),
        (Some(field(&lines[at], "sequence").as_u64().unwrap()), Damage::Rehashed)
    );
}

#[test]
fn a_log_being_written_verifies() {
    let log = TestLog::build(10, |_| {});
    // Few checkpoints: Ed25519 in an unoptimized test build costs milliseconds per signature.
    let mut opts = log.options();
    opts.checkpoint_every = 100_000;
    let mut writer = AuditWriter::open(opts).unwrap();
    writer.log(&Lifecycle::KernelSessionStart);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_writer = stop.clone();
    let busy = std::thread::spawn(move || {
        let mut k = 0;
        while !stop_writer.load(std::sync::atomic::Ordering::Relaxed) {
            for _ in 0..50 {
                writer.append(&record(k));
                k += 1;
            }
            writer.commit().unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        writer.close().unwrap();
    });
    std::thread::sleep(Duration::from_millis(300));
    let report = log.verify();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    busy.join().unwrap();
    assert_eq!(report.failure, None, "{report:?}");
    assert_eq!(report.signed_through, report.last_sequence);
    assert_eq!(log.verify().failure, None);
}

#[test]
fn a_segment_cut_inside_a_line_is_malformed_unless_it_is_the_last() {
    let log = TestLog::build(60, |o| {
        o.max_segment_bytes = Some(8 << 10);
        o.compression = safeclaw_agent::audit::segment::Compression::None;
    });
    let files = log.files();
    assert!(files.len() > 2);
    // The last segment: bytes after its last newline are an interrupted write, reported and ignored.
    let active = log.active();
    let mut text = std::fs::read(&active).unwrap();
    text.extend_from_slice(br#"{"action":"file.read","seq"#);
    std::fs::write(&active, &text).unwrap();
    let report = log.verify();
    assert_eq!(report.failure, None, "{report:?}");
    assert_eq!(report.partial_line_bytes, 26);
    // An earlier segment ending inside a line is damage, named at the entry due next.
    let middle = &files[1];
    let mut text = std::fs::read(middle).unwrap();
    text.pop();
    std::fs::write(middle, &text).unwrap();
    let f = failure(&log);
    assert!(matches!(f.damage, Damage::Malformed { .. }), "{f:?}");
}

#[test]
fn an_undecodable_segment_is_a_failure_not_an_error() {
    let log = TestLog::build(60, |o| o.max_segment_bytes = Some(8 << 10));
    let files = log.files();
    let zst = files.iter().find(|f| f.to_string_lossy().ends_with(".zst")).unwrap();
    let mut data = std::fs::read(zst).unwrap();
    let keep = data.len() / 2;
    data.truncate(keep);
    std::fs::write(zst, &data).unwrap();
    let f = failure(&log);
    assert!(matches!(f.damage, Damage::Unreadable { .. } | Damage::Malformed { .. }), "{f:?}");
}

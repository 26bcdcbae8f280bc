//! Writes the conformance vectors in `tests/vectors/`: logs the writer produced through each of its paths
//! (restart, rotation with both codecs, three retention rounds, a clock step, a key rotation, a lost
//! head) and the same logs tampered with, each with the verdict and the entry a verifier must name.
//! Each log starts from a base: nothing (the committed vectors) or a copy of a log the daemon wrote (the
//! VM test `vectors_vm`). `audit::conformance` runs our verifier and the Python one in
//! docs/audit-format.md on them. Regenerate the committed ones with
//! `cargo test -p safeclaw-agent --lib regenerate_vectors -- --ignored`.
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::chain::seal;
use super::retention::RetentionRule;
use super::segment::{self, open_reader, Compression, LogName};
use super::signing::{AuditKey, HeadStatement};
use super::synthetic::record;
use super::writer::pending_key_path;
use super::{AuditWriter, Lifecycle, WriterOptions};

/// A log being built in a temporary directory: `log/` and `state/`.
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    /// An empty log.
    fn fresh() -> Self {
        Work { dir: tempfile::tempdir().expect("temporary directory") }
    }

    /// A copy of the log in `base` (its `log/` files, and its `state/` key and head), or an empty log.
    fn new(base: Option<&Path>) -> Self {
        let work = Work::fresh();
        if let Some(base) = base {
            copy_files(&base.join("log"), &work.dir.path().join("log"), |_| true);
            copy_files(&base.join("state"), &work.dir.path().join("state"), |name| {
                name == "audit.key" || name == "audit.head"
            });
        }
        work
    }

    fn options(&self) -> WriterOptions {
        let mut opts = WriterOptions::new(&self.active()).with_state_dir(&self.dir.path().join("state"));
        opts.checkpoint_every = 10;
        opts.compression = Compression::None;
        opts
    }

    fn active(&self) -> PathBuf {
        self.dir.path().join("log/audit.jsonl")
    }

    fn head(&self) -> PathBuf {
        self.dir.path().join("state/audit.head")
    }

    fn key(&self) -> AuditKey {
        AuditKey::load(&self.dir.path().join("state/audit.key")).expect("key")
    }

    /// Appends `count` attempts starting at kernel sequence `from`, committing now and then.
    fn write(&self, opts: WriterOptions, from: u64, count: u64, close: bool) {
        let mut writer = AuditWriter::open(opts).expect("open");
        if from == 0 {
            writer.log(&Lifecycle::KernelSessionStart);
        }
        for k in from..from + count {
            writer.append(&record(k));
            if k % 7 == 6 {
                writer.commit().expect("commit");
            }
        }
        if close {
            writer.close().expect("close");
        } else {
            // Killed after its last commit: no shutdown checkpoint, the head file signs the tail.
            writer.commit().expect("commit");
        }
    }

    fn lines(&self) -> Vec<String> {
        fs::read_to_string(self.active()).expect("log").lines().map(str::to_owned).collect()
    }

    fn set_lines(&self, lines: &[String]) {
        fs::write(self.active(), lines.iter().map(|l| format!("{l}\n")).collect::<String>()).expect("write");
    }

    fn rotated(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = LogName::of_active(&self.active())
            .list()
            .expect("list")
            .into_iter()
            .filter(|s| s.first_seq.is_some())
            .map(|s| s.path)
            .collect();
        files.sort();
        files
    }
}

/// Copies the regular files of `from` that `wanted` names into `to` (created), keeping their modes.
fn copy_files(from: &Path, to: &Path, wanted: impl Fn(&str) -> bool) {
    fs::create_dir_all(to).expect("directory");
    for dirent in fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let dirent = dirent.expect("entry");
        let name = dirent.file_name().to_string_lossy().into_owned();
        if dirent.file_type().expect("file type").is_file() && wanted(&name) {
            fs::copy(dirent.path(), to.join(&name)).expect("copy");
        }
    }
}

/// Where a vector goes.
#[cfg(test)]
fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors")
}

/// What a verifier must say of a vector.
struct Expect<'a> {
    description: String,
    with_head: bool,
    accept: &'a [String],
    /// `None`: verifies; `Some(entry)`: fails naming that entry (`None` inside: the log as a whole).
    failure: Option<Option<u64>>,
}

fn save(out: &Path, name: &str, work: &Work, public_key: &str, expect: Expect<'_>) {
    let target = out.join(name);
    let _ = fs::remove_dir_all(&target);
    fs::create_dir_all(target.join("log")).expect("vector dir");
    for dirent in fs::read_dir(work.dir.path().join("log")).expect("log dir") {
        let path = dirent.expect("entry").path();
        fs::copy(&path, target.join("log").join(path.file_name().expect("name"))).expect("copy");
    }
    if expect.with_head && work.head().exists() {
        fs::copy(work.head(), target.join("audit.head")).expect("head");
    }
    let case = json!({
        "description": expect.description,
        "publicKey": public_key,
        "head": if expect.with_head { Value::from("audit.head") } else { Value::Null },
        "accept": expect.accept,
        "verdict": if expect.failure.is_some() { "failed" } else { "ok" },
        "entry": expect.failure.flatten(),
    });
    let text = serde_json::to_string_pretty(&case).expect("json") + "\n";
    fs::write(target.join("case.json"), text).expect("case");
}

fn reseal_value(entry: &Value) -> String {
    let mut entry = entry.clone();
    if let Some(object) = entry.as_object_mut() {
        object.remove("hash");
    }
    // serde_json's map is ordered by key: the canonical member order.
    let mut out = Vec::new();
    seal(&serde_json::to_vec(&entry).expect("json"), &mut out);
    out.pop();
    String::from_utf8(out).expect("utf-8")
}

/// Replaces the body of `line` (everything before its hash member) by `body` + `}` and reseals it.
fn reseal_text(body: &str) -> String {
    let mut out = Vec::new();
    seal(body.as_bytes(), &mut out);
    out.pop();
    String::from_utf8(out).expect("utf-8")
}

fn parse(line: &str) -> Value {
    serde_json::from_str(line).expect("entry")
}

fn sequence(line: &str) -> u64 {
    parse(line)["sequence"].as_u64().expect("sequence")
}

fn index_of(lines: &[String], action: &str) -> usize {
    lines.iter().position(|l| parse(l)["action"] == action).expect("action present")
}

fn decompressed(path: &Path) -> Vec<u8> {
    let mut data = Vec::new();
    open_reader(path, |_| {}).expect("open").read_to_end(&mut data).expect("read");
    data
}

fn ok(description: &str) -> Expect<'static> {
    Expect { description: description.into(), with_head: true, accept: &[], failure: None }
}

fn fails(description: impl Into<String>, entry: Option<u64>) -> Expect<'static> {
    Expect { description: description.into(), with_head: true, accept: &[], failure: Some(entry) }
}

#[test]
#[ignore = "rewrites tests/vectors in the source tree: run by hand to regenerate them; CI runs \
            `the_committed_vectors_are_what_the_generator_makes` instead"]
fn regenerate_vectors() {
    generate(&vectors_dir(), None);
}

/// Writes every vector into `out` (one directory each), each log continuing a copy of the log in
/// `base` (a directory holding `log/audit.jsonl` and `state/audit.key` and `audit.head`, as the
/// daemon's `--audit-log` and `--state-dir` leave them; the base must be closed, its writer stopped), or
/// starting empty. Writes only in `out` and the temporary directory.
pub fn generate(out: &Path, base: Option<&Path>) {
    honest_paths(out, base);
    last_checkpoint_malleability(out, base);
    restart_incidents(out, base);
    chain_damage(out, base);
}

/// Generates every vector afresh (new keys, new times) and compares each case with the committed one:
/// the same cases, verdicts and named entries. `tests/audit_vectors.rs` then checks that the verifiers
/// say what the committed cases record.
#[test]
fn the_committed_vectors_are_what_the_generator_makes() {
    let fresh = tempfile::tempdir().expect("temp dir");
    generate(fresh.path(), None);
    let cases = |root: &Path| -> std::collections::BTreeMap<String, Value> {
        fs::read_dir(root)
            .expect("vectors dir")
            .map(|d| d.expect("dir entry").path())
            .filter(|p| p.join("case.json").exists())
            .map(|p| {
                let mut case: Value =
                    serde_json::from_slice(&fs::read(p.join("case.json")).expect("case")).expect("json");
                // Keys are made afresh each run.
                case.as_object_mut().expect("case object").remove("publicKey");
                (p.file_name().expect("name").to_string_lossy().into_owned(), case)
            })
            .collect()
    };
    assert_eq!(cases(fresh.path()), cases(&vectors_dir()), "tests/vectors is stale: regenerate it");
}

fn honest_paths(out: &Path, base: Option<&Path>) {
    let w = Work::new(base);
    w.write(w.options(), 0, 40, true);
    let key = w.key().public().to_text();
    save(out, "honest-one-segment", &w, &key, ok("one segment, closed"));

    // Rotated zstd segments, a kill after a commit, a restart, and a partial line the crash left.
    let w = Work::new(base);
    let rotating = |w: &Work, compression| {
        let mut o = w.options();
        o.max_segment_bytes = Some(4 << 10);
        o.compression = compression;
        o
    };
    w.write(rotating(&w, Compression::Zstd), 0, 40, false);
    w.write(rotating(&w, Compression::Zstd), 40, 40, true);
    let key = w.key().public().to_text();
    assert!(w.rotated().len() > 3);
    save(out, "honest-rotated-zstd-restart", &w, &key, ok("rotated zstd segments across a restart"));
    fs::OpenOptions::new()
        .append(true)
        .open(w.active())
        .and_then(|mut f| std::io::Write::write_all(&mut f, br#"{"action":"file.read","agentId":"#))
        .expect("append");
    save(
        out,
        "honest-partial-last-line",
        &w,
        &key,
        ok("a write interrupted by a crash: bytes after the last newline"),
    );

    // Names do not order segments: swap two names; and one recompressed with gzip under its .zst name.
    let w = Work::new(base);
    w.write(rotating(&w, Compression::Zstd), 0, 60, true);
    let key = w.key().public().to_text();
    let rotated = w.rotated();
    let plain = rotated[1].with_extension("");
    fs::write(&plain, decompressed(&rotated[1])).expect("plain");
    fs::remove_file(&rotated[1]).expect("remove");
    let gz = segment::compress(&plain, Compression::Gzip).expect("gzip");
    fs::rename(gz, &rotated[1]).expect("rename");
    save(out, "honest-recompressed-other-codec", &w, &key, ok("a .zst segment holding gzip data"));
    let temp = rotated[0].with_extension("swap");
    fs::rename(&rotated[0], &temp).expect("swap");
    fs::rename(&rotated[2], &rotated[0]).expect("swap");
    fs::rename(&temp, &rotated[2]).expect("swap");
    save(
        out,
        "honest-misnamed-segments",
        &w,
        &key,
        ok("segment names out of order: order comes from content"),
    );
    fs::write(rotated[3].with_extension(""), decompressed(&rotated[3])).expect("copy");
    save(out, "honest-duplicated-segment", &w, &key, ok("a plain copy beside its compressed segment"));
    let mut changed = decompressed(&rotated[3]);
    let at = changed.iter().position(|&b| b == b'\n').expect("line") + 20;
    changed[at] ^= 1;
    fs::write(rotated[3].with_extension(""), &changed).expect("copy");
    let first = sequence(String::from_utf8_lossy(&changed).lines().next().expect("line"));
    save(
        out,
        "duplicated-segment-differing",
        &w,
        &key,
        fails("two files start at the same entry and differ", Some(first)),
    );

    let w = Work::new(base);
    w.write(rotating(&w, Compression::Gzip), 0, 40, true);
    let key = w.key().public().to_text();
    save(out, "honest-gzip", &w, &key, ok("rotated gzip segments"));

    // Three retention rounds: the segments holding the first rounds' retention entries are deleted too.
    let w = Work::new(base);
    let mut o = rotating(&w, Compression::None);
    o.retention = Some(RetentionRule { keep: Duration::ZERO, label: "0d".into() });
    let mut writer = AuditWriter::open(o).expect("open");
    writer.log(&Lifecycle::KernelSessionStart);
    for k in 0..200 {
        writer.append(&record(k));
        if k % 7 == 6 {
            writer.commit().expect("commit");
        }
    }
    writer.close().expect("close");
    let key = w.key().public().to_text();
    let lines = w.lines();
    let first = sequence(&lines[0]);
    let rounds = lines.iter().filter(|l| parse(l)["action"] == "audit.retention_delete").count();
    assert!(first > 100 && rounds >= 1, "first {first}, {rounds} deletions in the active segment");
    save(out, "honest-retention-rounds", &w, &key, ok("many retention rounds, coverage carried forward"));

    let w = Work::new(base);
    w.write(rotating(&w, Compression::Zstd), 0, 60, true);
    let key = w.key().public().to_text();
    fs::remove_file(&w.rotated()[0]).expect("remove");
    save(
        out,
        "first-segment-removed",
        &w,
        &key,
        fails("the first segment removed, no retention entry", Some(0)),
    );

    // The wall clock stepped back before a checkpoint.
    let w = Work::new(base);
    let mut writer = AuditWriter::open(w.options()).expect("open");
    writer.log(&Lifecycle::KernelSessionStart);
    for k in 0..25 {
        writer.append(&record(k));
        if k == 12 {
            writer.set_last_checkpoint_time("2099-01-01T00:00:00.000Z");
        }
    }
    writer.close().expect("close");
    assert!(w.lines().iter().any(|l| parse(l)["action"] == "audit.clock_step"));
    let key = w.key().public().to_text();
    save(
        out,
        "honest-clock-step",
        &w,
        &key,
        ok("a checkpoint dated before the previous one, after a clock_step entry"),
    );

    // A key rotation: the old key signs the entry naming the new one.
    let w = Work::new(base);
    w.write(w.options(), 0, 15, true);
    let old = w.key().public().to_text();
    let pending = pending_key_path(&w.dir.path().join("state/audit.key"));
    AuditKey::create(&pending).expect("new key");
    let mut writer = AuditWriter::open(w.options()).expect("open");
    writer.rotate_key().expect("rotate");
    writer.close().expect("close");
    w.write(w.options(), 15, 15, true);
    save(out, "honest-key-rotation", &w, &old, ok("a key rotation; the trusted key is the log's first"));
}

/// Rewrites a line as an attacker without the key would.
type Forgery = Box<dyn Fn(&str) -> String>;

fn last_checkpoint_malleability(out: &Path, base: Option<&Path>) {
    let w = Work::new(base);
    w.write(w.options(), 0, 30, true);
    let key = w.key().public().to_text();
    let lines = w.lines();
    let last = lines.len() - 1;
    let seq = sequence(&lines[last]);
    let no_head = |description: &str| Expect {
        description: description.into(),
        with_head: false,
        accept: &[],
        failure: Some(Some(seq)),
    };
    let variants: [(&str, &str, Forgery); 5] =
        [
            (
                "last-checkpoint-extra-member",
                "an extra member in the last checkpoint",
                Box::new(|l: &str| {
                    let mut v = parse(l);
                    v["details"]["note"] = json!("x");
                    reseal_value(&v)
                }),
            ),
            (
                "last-checkpoint-forged-attempt-fields",
                "effect, agentId and requestDetails.path added to the last checkpoint",
                Box::new(|l: &str| {
                    let mut v = parse(l);
                    v["effect"] = json!("allow");
                    v["agentId"] = json!("someone-else");
                    v["requestDetails"] = json!({"path": "/etc/shadow"});
                    reseal_value(&v)
                }),
            ),
            (
                "last-checkpoint-reordered-members",
                "members of the last checkpoint reordered",
                Box::new(|l: &str| {
                    let body = l[..l.len() - 82]
                        .replacen("\"action\":\"audit.checkpoint\",", "", 1)
                        .replacen("},\"prevHash\"", "},\"action\":\"audit.checkpoint\",\"prevHash\"", 1);
                    reseal_text(&format!("{body}}}"))
                }),
            ),
            (
                "last-checkpoint-reescaped",
                "a member of the last checkpoint re-escaped (\\u0073hutdown)",
                Box::new(|l: &str| {
                    reseal_text(&format!(
                        "{}}}",
                        l[..l.len() - 82].replacen("\"shutdown\"", "\"\\u0073hutdown\"", 1)
                    ))
                }),
            ),
            (
                "last-checkpoint-uppercase-hex",
                "the last checkpoint's signature in upper-case hex",
                Box::new(|l: &str| {
                    let mut v = parse(l);
                    let signature = v["details"]["signature"].as_str().expect("signature").to_owned();
                    v["details"]["signature"] = json!(format!("ed25519:{}", signature[8..].to_uppercase()));
                    reseal_value(&v)
                }),
            ),
        ];
    for (name, description, change) in variants {
        let mut changed = lines.clone();
        changed[last] = change(&lines[last]);
        assert_ne!(changed[last], lines[last]);
        w.set_lines(&changed);
        save(out, name, &w, &key, no_head(description));
    }
    w.set_lines(&lines);
    save(
        out,
        "honest-no-head",
        &w,
        &key,
        Expect { description: "no head file given".into(), with_head: false, accept: &[], failure: None },
    );
    // A head file named but absent.
    let target = out.join("head-file-missing");
    save(out, "head-file-missing", &w, &key, fails("the head file named does not exist", None));
    let _ = fs::remove_file(target.join("audit.head"));

    // A re-signed last checkpoint dated before the previous one, with no clock_step entry.
    let mut changed = lines.clone();
    let mut v = parse(&lines[last]);
    v["timestamp"] = json!("2000-01-01T00:00:00.000Z");
    let signing = w.key();
    let public = signing.public();
    let statement = HeadStatement {
        log_id: v["details"]["logId"].as_str().expect("logId"),
        key_id: public.key_id(),
        size: seq,
        head: super::chain::Digest::parse(v["prevHash"].as_str().expect("prevHash")).expect("digest"),
        time: "2000-01-01T00:00:00.000Z",
        reason: "shutdown",
    };
    let signature = signing.sign(&statement);
    v["details"]["signature"] = json!(signature);
    changed[last] = reseal_value(&v);
    w.set_lines(&changed);
    save(
        out,
        "checkpoint-time-regressed",
        &w,
        &key,
        Expect {
            description: "a checkpoint dated before the previous one, no clock_step".into(),
            with_head: false,
            accept: &[],
            failure: Some(Some(seq)),
        },
    );
}

fn restart_incidents(out: &Path, base: Option<&Path>) {
    // Truncate and continue: cut after a checkpoint, delete the head, restart.
    let w = Work::new(base);
    w.write(w.options(), 0, 30, true);
    let key = w.key().public().to_text();
    let mut lines = w.lines();
    let cut = lines.iter().position(|l| parse(l)["action"] == "audit.checkpoint").expect("checkpoint") + 1;
    lines.truncate(cut);
    w.set_lines(&lines);
    fs::remove_file(w.head()).expect("head");
    w.write(w.options(), 30, 5, true);
    let at = sequence(&w.lines()[index_of(&w.lines(), "audit.head_missing")]);
    save(
        out,
        "truncate-and-continue",
        &w,
        &key,
        fails("cut after a checkpoint, head deleted, daemon restarted", Some(at)),
    );
    let accept = [format!("head_missing@{at}")];
    save(
        out,
        "head-missing-accepted",
        &w,
        &key,
        Expect {
            description: "the same, head_missing accepted by the operator".into(),
            with_head: true,
            accept: &accept,
            failure: None,
        },
    );

    // Cut with the head file kept: the writer records tamper_detected.
    let w = Work::new(base);
    w.write(w.options(), 0, 30, true);
    let key = w.key().public().to_text();
    let mut lines = w.lines();
    lines.truncate(lines.len() - 5);
    w.set_lines(&lines);
    w.write(w.options(), 30, 5, true);
    let at = sequence(&w.lines()[index_of(&w.lines(), "audit.tamper_detected")]);
    save(
        out,
        "tamper-detected",
        &w,
        &key,
        fails("cut while stopped, head kept: the writer recorded tamper_detected", Some(at)),
    );
}

fn chain_damage(out: &Path, base: Option<&Path>) {
    let w = Work::new(base);
    w.write(w.options(), 0, 30, true);
    let key = w.key().public().to_text();
    let lines = w.lines();
    // The first attempt from entry 12 on (entry 12 itself in a log that starts empty).
    let at = (12..lines.len()).find(|&i| parse(&lines[i])["agentId"].is_string()).expect("an attempt");
    let seq = sequence(&lines[at]);
    let damaged = |name: &str, description: String, change: &dyn Fn(&mut Vec<String>)| {
        let mut changed = lines.clone();
        change(&mut changed);
        assert_ne!(changed, lines, "{name} changes the log");
        w.set_lines(&changed);
        save(out, name, &w, &key, fails(description, Some(seq)));
    };
    damaged("float-sequence", format!("\"sequence\": {seq}.0, rehashed"), &|l| {
        l[at] = reseal_text(&format!(
            "{}}}",
            l[at][..l[at].len() - 82].replacen(
                &format!("\"sequence\":{seq}"),
                &format!("\"sequence\":{seq}.0"),
                1
            )
        ));
    });
    damaged("uppercase-prev-hash", "an upper-case prevHash, rehashed".into(), &|l| {
        let mut v = parse(&l[at]);
        v["prevHash"] =
            json!(format!("sha256:{}", v["prevHash"].as_str().expect("prev")[7..].to_uppercase()));
        l[at] = reseal_value(&v);
    });
    damaged("deleted-entry", format!("entry {seq} deleted"), &|l| {
        l.remove(at);
    });
    damaged("edited-entry", format!("a byte changed in entry {seq}"), &|l| {
        l[at] = l[at].replacen("agent", "agenT", 1);
    });
    // Another key's log put in place of this one.
    let other = Work::fresh();
    other.write(other.options(), 0, 30, true);
    save(out, "regenerated-log", &other, &key, fails("a whole log written with another key", Some(0)));
    w.set_lines(&lines);
}

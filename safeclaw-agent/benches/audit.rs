//! Audit trail benchmarks: append throughput (hashing, redaction, checkpoint signing and fsync group
//! commit included) and verification throughput. Results: docs/benchmarks.md.
//!
//! `SAFECLAW_AUDIT_GENERATE=DIR:ENTRIES cargo bench --bench audit` writes a log of ENTRIES attempts into
//! DIR (key and head in DIR/state) and exits, for measuring verification memory on large logs.
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use safeclaw_agent::audit::segment::Compression;
use safeclaw_agent::audit::signing::AuditKey;
use safeclaw_agent::audit::synthetic::record;
use safeclaw_agent::audit::verify::{log_files, verify, VerifyOptions};
use safeclaw_agent::audit::{ActionRecord, AuditWriter, Lifecycle, WriterOptions};

/// Production defaults (100 ms group commit, checkpoint every 10,000 entries or 60 s) with rotation at
/// 256 MiB, uncompressed so that compression threads do not compete for the two cores.
fn options(dir: &Path) -> WriterOptions {
    let mut opts = WriterOptions::new(&dir.join("log/audit.jsonl")).with_state_dir(&dir.join("state"));
    opts.max_segment_bytes = Some(256 << 20);
    opts.compression = Compression::None;
    opts
}

/// Records differ in path, argv, address and effect; 64 are reused with fresh kernel sequence numbers.
fn record_pool() -> Vec<ActionRecord> {
    (0..64).map(record).collect()
}

/// Appends `count` attempts the way the daemon does: `append` per event, `tick` after each (commits when
/// the oldest buffered entry has waited 100 ms).
fn append_all(writer: &mut AuditWriter, pool: &mut [ActionRecord], first_kernel_seq: u64, count: u64) {
    for k in first_kernel_seq..first_kernel_seq + count {
        let rec = &mut pool[(k % 64) as usize];
        rec.kernel_seq = k;
        writer.append(rec);
        if let Err(e) = writer.tick() {
            panic!("audit write failed during the benchmark: {e}");
        }
    }
}

fn bench_append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut writer = AuditWriter::open(options(dir.path())).expect("open writer");
    writer.log(&Lifecycle::KernelSessionStart);
    let mut pool = record_pool();
    let mut next = 0u64;
    let mut group = c.benchmark_group("audit");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    group.bench_function("append_hash_sign_fsync", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            append_all(&mut writer, &mut pool, next, iters);
            writer.commit().expect("commit");
            next += iters;
            start.elapsed()
        })
    });
    group.finish();
    writer.close().expect("close");
}

fn bench_verify(c: &mut Criterion) {
    const ENTRIES: u64 = 300_000;
    let dir = tempfile::tempdir().expect("temp dir");
    generate(dir.path(), ENTRIES);
    let files = log_files(&dir.path().join("log/audit.jsonl")).expect("list");
    let key = AuditKey::load(&dir.path().join("state/audit.key")).expect("key").public();
    let opts = VerifyOptions {
        trusted_key: Some(key),
        head_path: Some(dir.path().join("state/audit.head")),
        from: None,
        ..Default::default()
    };
    let entries = verify(&files, &opts, Arc::new(|_| {})).expect("verify").entries;
    let mut group = c.benchmark_group("audit");
    group.throughput(Throughput::Elements(entries));
    group.sample_size(10);
    group.bench_function("verify", |b| {
        b.iter(|| {
            let report = verify(&files, &opts, Arc::new(|_| {})).expect("verify");
            assert!(report.ok(), "{report:?}");
        })
    });
    group.finish();
}

fn generate(dir: &Path, entries: u64) {
    let mut writer = AuditWriter::open(options(dir)).expect("open writer");
    writer.log(&Lifecycle::KernelSessionStart);
    append_all(&mut writer, &mut record_pool(), 0, entries);
    writer.close().expect("close");
}

criterion_group!(benches, bench_append, bench_verify);

fn main() {
    if let Ok(spec) = std::env::var("SAFECLAW_AUDIT_GENERATE") {
        let (dir, entries) = spec.rsplit_once(':').expect("SAFECLAW_AUDIT_GENERATE=DIR:ENTRIES");
        let entries: u64 = entries.parse().expect("ENTRIES is a number");
        let start = Instant::now();
        generate(Path::new(dir), entries);
        eprintln!("wrote {entries} entries to {dir} in {:.1?}", start.elapsed());
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

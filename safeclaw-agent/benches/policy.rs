//! Policy benchmarks (docs/benchmarks.md, "Policy"): the userspace evaluator per decision with
//! 1,000 rules (criterion's mean, then p50/p99 over single decisions), the kernel-table walk for
//! comparison, and loading + compiling the 10,000 rules `cargo xtask bench` reloads, with the map
//! memory they take.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use safeclaw_agent::policy::compiled::Request;
use safeclaw_agent::policy::{compile_all, load_str, CompileContext, Evaluator};

const HOME: &str = "/home/user";

/// A policy of `n` rules shaped like a large real one: project directories read, written and
/// run, network services by CIDR and port, and `floating` rules of `**` globs (secrets).
fn policy_text(n: usize, floating: usize) -> String {
    let mut text = String::from("version: 1\ndefault: deny\nrules:\n");
    for i in 0..floating {
        text.push_str(&format!(
            "  - name: secret-{i}\n    action: file.*\n    effect: deny\n    paths: [\"**/.secret{i}\", \"**/*.key{i}\"]\n    reason: secrets\n    severity: high\n    tags: [soc2:CC6.1]\n"
        ));
    }
    for i in 0..n - floating {
        let rule = match i % 4 {
            0 => format!("action: file.read\n    effect: allow\n    paths: [/home/user/projects/p{i}/**, /srv/data/set{i}/*.csv]"),
            1 => format!("action: file.write\n    effect: audit\n    paths: [/home/user/projects/p{i}/out/**]"),
            2 => format!("action: process.exec\n    effect: allow\n    binary: [/opt/tools/t{i}/bin/*]"),
            _ => format!(
                "action: network.connect\n    effect: allow\n    cidrs: [10.{}.{}.0/24]\n    ports: [443, \"{}-{}\"]\n    protocol: tcp",
                i / 256 % 256,
                i % 256,
                8000 + i % 1000,
                8100 + i % 1000
            ),
        };
        text.push_str(&format!("  - name: rule-{i}\n    {rule}\n    reason: generated rule {i}\n    tags: [soc2:CC6.1, hipaa:164.312(b)]\n"));
    }
    text
}

/// Requests hitting early, late and no rules, of every kind.
fn requests(n: usize) -> Vec<(u8, Vec<u8>, [u8; 16], u16)> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |m: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % m as u64) as usize
    };
    (0..4096)
        .map(|_| {
            let i = next(n);
            let kind = next(5) as u8;
            let path = match next(6) {
                0 => format!("/home/user/projects/p{i}/src/module/file.rs"),
                1 => format!("/home/user/projects/p{i}/out/target/debug/deps/lib.rlib"),
                2 => format!("/opt/tools/t{i}/bin/tool"),
                3 => format!("/home/user/projects/p{i}/.secret{}", next(20)),
                4 => format!("/srv/data/set{i}/table.csv"),
                _ => "/usr/lib/x86_64-linux-gnu/libc.so.6".to_owned(),
            };
            let addr = Ipv4Addr::new(10, (i / 256 % 256) as u8, (i % 256) as u8, 7).to_ipv6_mapped().octets();
            let port = [443, 8050, 22][next(3)];
            (kind, path.into_bytes(), addr, port)
        })
        .collect()
}

fn request(kind: u8, path: &[u8], addr: [u8; 16], port: u16) -> Request<'_> {
    match kind {
        0 => Request::FileOpen { path, read: true, write: false },
        1 => Request::FileOpen { path, read: false, write: true },
        2 => Request::FileOpen { path, read: true, write: true },
        3 => Request::Exec { path },
        _ => Request::ConnectInet { protocol: 6, addr, port },
    }
}

/// p50 and p99 of single decisions, each timed on its own (timer cost subtracted).
fn percentiles(mut decide: impl FnMut(usize) -> u8, count: usize) -> (Duration, Duration) {
    let mut empty: Vec<u64> = (0..10_000)
        .map(|_| {
            let start = Instant::now();
            black_box(());
            start.elapsed().as_nanos() as u64
        })
        .collect();
    empty.sort_unstable();
    let overhead = empty[empty.len() / 2];
    let mut samples: Vec<u64> = (0..200_000)
        .map(|i| {
            let start = Instant::now();
            black_box(decide(i % count));
            (start.elapsed().as_nanos() as u64).saturating_sub(overhead)
        })
        .collect();
    samples.sort_unstable();
    let at =
        |q: f64| Duration::from_nanos(samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)]);
    (at(0.50), at(0.99))
}

fn evaluator_1000_rules(c: &mut Criterion) {
    let ctx = CompileContext::new(HOME);
    let policy = load_str("bench.yaml", &policy_text(1000, 20)).expect("bench policy loads");
    let evaluator = Evaluator::new(&policy, None, &ctx).expect("evaluator");
    let compiled = compile_all(&policy, &ctx).expect("bench policy compiles");
    let requests = requests(1000);
    let decide_eval = |i: usize| {
        let (kind, path, addr, port) = &requests[i];
        evaluator.evaluate(&request(*kind, path, *addr, *port)).effect as u8
    };
    let decide_tables = |i: usize| {
        let (kind, path, addr, port) = &requests[i];
        compiled.base.tables.decide(&request(*kind, path, *addr, *port)).effect as u8
    };
    let mut group = c.benchmark_group("policy decision, 1000 rules");
    let mut i = 0;
    group.bench_function("evaluator", |b| {
        b.iter(|| {
            i = (i + 1) % requests.len();
            decide_eval(i)
        })
    });
    group.bench_function("kernel tables (CompiledPolicy::decide)", |b| {
        b.iter(|| {
            i = (i + 1) % requests.len();
            decide_tables(i)
        })
    });
    group.finish();
    let (p50, p99) = percentiles(decide_eval, requests.len());
    println!("evaluator, 1000 rules, single decisions: p50 {p50:?}, p99 {p99:?}");
    let (p50, p99) = percentiles(decide_tables, requests.len());
    println!("kernel tables, 1000 rules, single decisions: p50 {p50:?}, p99 {p99:?}");
}

/// The 10,000-rule policy `cargo xtask bench` reloads (`generated_policy` in
/// tests/src/bin/safeclaw-bench/safeclaw.rs, fixture directory `/tmp/bench`): file reads, execs and
/// three network rules in five, which fit `MAX_DFA_TRANSITIONS` (`policy_text(10_000, 0)` no longer
/// does).
fn reload_policy_text(rules: usize) -> String {
    let mut yaml = String::from("version: 1\ndefault: deny\nrules:\n");
    for i in 0..rules - 5 {
        let rule = match i % 5 {
            0 => format!("    action: file.read\n    paths: [/srv/d{i}/*.csv]\n"),
            1 => format!("    action: process.exec\n    binary: [/opt/t{i}/*]\n"),
            _ => format!(
                "    action: network.connect\n    cidrs: [10.{}.{}.0/24]\n    ports: [443]\n",
                i / 256 % 256,
                i % 256
            ),
        };
        yaml.push_str(&format!("  - name: generated-{i}\n    effect: allow\n{rule}"));
    }
    yaml.push_str(
        "  - name: bench-secret\n    action: file.*\n    effect: deny\n    paths: [/tmp/bench/.env]\n\
         \x20 - name: bench-workspace\n    action: file.*\n    effect: allow\n    paths: [/tmp/bench/**]\n\
         \x20 - name: bench-binary\n    action: process.exec\n    effect: allow\n    binary: [/tmp/bench/busybox]\n\
         \x20 - name: system-read\n    action: file.read\n    effect: allow\n    paths: [\"/{usr,lib,lib64,bin,sbin,etc}/**\"]\n\
         \x20 - name: loopback\n    action: network.connect\n    effect: allow\n    cidrs: [127.0.0.0/8]\n",
    );
    yaml
}

fn compile_10000_rules(c: &mut Criterion) {
    let ctx = CompileContext::new(HOME);
    let anchored = reload_policy_text(10_000);
    let floating = policy_text(10_000, 10);
    let policy = load_str("bench.yaml", &anchored).expect("loads");
    let set = compile_all(&policy, &ctx).expect("the bench's 10,000 rules fit the kernel tables");
    let stats = set.base.stats;
    println!(
        "10,000 rules, {} bytes of YAML: DFA states {:?}, {} transitions, {} prefixes, {} port intervals, {} KiB of map values",
        anchored.len(),
        stats.dfa_states,
        stats.dfa_transitions(),
        stats.net_prefixes,
        stats.port_intervals,
        stats.map_bytes() / 1024
    );
    let refused = load_str("bench.yaml", &floating).map(|p| compile_all(&p, &ctx));
    if let Ok(Err(error)) = &refused {
        println!("10,000 rules with 10 floating globs: refused: {}", error.diagnostics[0].message);
    }
    let mut group = c.benchmark_group("policy compile, 10000 rules");
    group.sample_size(10);
    group.bench_function("load (parse + validate)", |b| {
        b.iter(|| load_str("bench.yaml", black_box(&anchored)))
    });
    group.bench_function("compile (all tables)", |b| {
        b.iter_batched(|| policy.clone(), |policy| compile_all(&policy, &ctx), BatchSize::LargeInput)
    });
    group.bench_function("load + compile (a reload before its map writes)", |b| {
        b.iter(|| load_str("bench.yaml", black_box(&anchored)).map(|p| compile_all(&p, &ctx).is_ok()))
    });
    group.bench_function("load + compile, 10 floating globs (refused at the DFA limit)", |b| {
        b.iter(|| load_str("bench.yaml", black_box(&floating)).map(|p| compile_all(&p, &ctx).is_err()))
    });
    group.finish();
}

criterion_group!(benches, evaluator_1000_rules, compile_10000_rules);
criterion_main!(benches);

//! The Markdown tables: medians (min–max) per configuration, ratios to the same boot's baseline, the
//! evidence that each tool was active, and PASS/MISS against the targets of issues 6 and 16.
use std::collections::BTreeMap;

use crate::burst::{Burst, PROCESSES};
use crate::ops::{Op, Placement, Timing};
use crate::paired::{self, Pairs, Side};
use crate::safeclaw::Policy;
use crate::{Config, Env, Results, Sizes};

/// Adds the run counts and run times (`bpftool prog show`, kernel.bpf_stats_enabled) of the loaded programs.
pub fn add_bpf_stats(totals: &mut BTreeMap<String, (u64, u64)>) -> anyhow::Result<()> {
    let text = crate::peers::run("bpftool", &["--json", "prog", "show"])?;
    let programs: serde_json::Value = serde_json::from_str(&text)?;
    for program in programs.as_array().into_iter().flatten() {
        let Some(name) = program["name"].as_str() else { continue };
        let slot = totals.entry(name.to_owned()).or_default();
        slot.0 += program["run_cnt"].as_u64().unwrap_or(0);
        slot.1 += program["run_time_ns"].as_u64().unwrap_or(0);
    }
    Ok(())
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "**MISS**"
    }
}

/// Thousands separators for counts.
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The ratio target of SafeClaw's cost for an operation (issues 6 and 16), if it has one, judged on
/// the pairs (`print_pairs`): the phases' rows are minutes from the baseline's.
fn target(side: Side, op: Op) -> Option<f64> {
    match (side, op) {
        (Side::Outside, _) => Some(1.05),
        (Side::Inside, Op::OpenAllowed) => Some(1.5),
        (Side::Inside, Op::Connect) => Some(1.15),
        (Side::Inside, Op::Exec) => Some(1.10),
        (Side::Inside, Op::OpenDenied) => None,
    }
}

pub fn print(
    sizes: &Sizes,
    configs: &[Config],
    results: &Results,
    pairs: &Pairs,
    bursts: &[Burst],
    placement: Option<Placement>,
) -> anyhow::Result<()> {
    let release = nix::sys::utsname::uname()?.release().to_string_lossy().into_owned();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "Guest kernel {release}, {cpus} vCPU(s). {} rounds; each round runs baseline, SafeClaw, auditd and \
         fapolicyd as phases in rotated order, and the configurations within a phase in rotated order (one \
         SafeClaw daemon per round, its policy switched by SIGHUP reload), then the real workloads of the \
         phase. Per round and configuration: {} open()+close(), {} denied opens, {} fork+exec+wait, {} \
         connects. Medians over rounds (min–max); ratios to the baseline of this boot. SafeClaw's audit log \
         and auditd's log are on the guest's tmpfs (the VM has no disk). kernel.bpf_stats_enabled is 0 in \
         every timed phase. These phases are minutes apart from the baseline's, so SafeClaw's targets are \
         judged on the paired measurement after these tables.\n",
        sizes.rounds,
        sizes.open_iterations,
        sizes.denied_iterations,
        sizes.exec_iterations,
        sizes.connect_iterations
    );
    match placement {
        Some(p) => println!(
            "Each measured process runs bound to CPU {}, the loopback listener to CPU {}; the daemons, the \
             real workloads and the burst's processes run where the scheduler puts them.\n",
            p.measured, p.listener
        ),
        None => println!("One CPU: the measured processes and the loopback listener share it.\n"),
    }
    let ns = |c: usize, o: usize| results.micro[c][o].iter().map(|t: &Timing| t.ns).collect::<Vec<_>>();
    for (o, &op) in Op::ALL.iter().enumerate() {
        let baseline = median(&ns(0, o));
        println!("#### {}\n", op.label());
        println!("| configuration | ns per operation | ratio | failed (denied) |");
        println!("|---|---|---|---|");
        for (c, config) in configs.iter().enumerate() {
            let values = ns(c, o);
            let (lo, hi) = min_max(&values);
            let ratio = median(&values) / baseline;
            let failed: u64 = results.micro[c][o].iter().map(|t| t.failures).sum();
            let attempts = u64::from(sizes.iterations(op)) * results.micro[c][o].len() as u64;
            println!(
                "| {} | {:.0} ({:.0}–{:.0}) | {ratio:.3} | {} of {} |",
                config.label(),
                median(&values),
                lo,
                hi,
                count(failed),
                count(attempts)
            );
        }
        println!();
    }

    print_pairs(pairs, sizes);

    println!("#### Evidence that each tool was active\n");
    println!("| configuration | logged while measured (median per round) | denied opens of `.env` |");
    println!("|---|---|---|");
    let o_denied = Op::ALL.iter().position(|&o| o == Op::OpenDenied).unwrap_or(1);
    for (c, config) in configs.iter().enumerate() {
        let logged = median(&results.logged[c].iter().map(|&n| n as f64).collect::<Vec<_>>());
        let what = match config.env {
            Env::SafeClaw => format!("{} audit entries", count(logged as u64)),
            Env::Auditd => format!(
                "{} SYSCALL records, kernel lost counter {}",
                count(logged as u64),
                results.auditd_lost
            ),
            Env::Fapolicyd => format!(
                "{} allowed + {} denied decisions over all its phases (shutdown report)",
                count(results.fapolicyd.allowed),
                count(results.fapolicyd.denied)
            ),
            Env::Baseline => "nothing".into(),
        };
        let denied: u64 = results.micro[c][o_denied].iter().map(|t| t.failures).sum();
        println!("| {} | {what} | {} |", config.label(), count(denied));
    }
    let per_round: u64 = Op::ALL.iter().map(|&op| u64::from(sizes.iterations(op))).sum();
    println!("\nAttempts per configuration and round: {}.\n", count(per_round));

    println!("#### Added cost per logged open, against the peers\n");
    println!(
        "SafeClaw adds less to an open than the emulator's speed drifts between the rounds' phases, minutes \
         apart: its added cost is the median over the pairs of each pair's inside block minus its baseline \
         block (the rounds' difference of medians beside it). auditd and fapolicyd add tens of times that \
         drift: theirs is their rounds' median minus the baseline's.\n"
    );
    let o_open = 0;
    let base = median(&ns(0, o_open));
    let from_rounds = |env: Env| {
        configs
            .iter()
            .position(|c| {
                c.env == env && (env != Env::SafeClaw || (c.inside && c.policy == Some(Policy::Default)))
            })
            .map_or(f64::NAN, |c| median(&ns(c, o_open)) - base)
    };
    let ours = median(&pairs.added_ns(Side::Inside, o_open));
    println!(
        "| tool | added ns per open | times SafeClaw's added cost | target | result |\n|---|---|---|---|---|"
    );
    println!(
        "| SafeClaw (inside, default.yaml, full audit), in pairs | {ours:.0} (rounds: {:.0}) | 1 | | |",
        from_rounds(Env::SafeClaw)
    );
    for (env, goal) in [(Env::Fapolicyd, 100.0), (Env::Auditd, 30.0)] {
        let theirs = from_rounds(env);
        let times = theirs / ours.max(1.0);
        println!("| {} | {theirs:.0} | {times:.1} | ≥ {goal:.0} | {} |", env.label(), verdict(times >= goal));
    }
    println!();

    println!("#### Real workloads inside the agent cgroup (wall time, median of {} runs)\n", sizes.rounds);
    println!(
        "| workload | baseline s | SafeClaw | auditd | fapolicyd | entries SafeClaw / auditd | target SafeClaw ≤ 1.05 |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (w, &workload) in sizes.workloads.iter().enumerate() {
        let m = |e: usize| median(&results.real[e][w]);
        let logged =
            |e: usize| median(&results.real_logged[e][w].iter().map(|&n| n as f64).collect::<Vec<_>>());
        let base = m(0);
        let ratio = m(1) / base;
        println!(
            "| {} | {base:.2} | {ratio:.3} | {:.3} | {:.3} | {} / {} | {} |",
            workload.label(),
            m(2) / base,
            m(3) / base,
            count(logged(1) as u64),
            count(logged(2) as u64),
            verdict(ratio <= 1.05)
        );
    }
    println!(
        "\nFalse denials under default.yaml during the real workloads: {} ({}){}. fapolicyd writes no entry for \
         an allowed access; its decisions are counted in the evidence table. Real workloads ran once per round, \
         after one unmeasured warm-up run each; their binaries and libraries come from the virtiofs root (a \
         FUSE round trip per uncached lookup), which weighs on every configuration alike.\n",
        results.real_denials.len(),
        verdict(results.real_denials.is_empty()),
        if results.real_denials.is_empty() {
            String::new()
        } else {
            format!(": {}", results.real_denials.iter().take(10).cloned().collect::<Vec<_>>().join("; "))
        }
    );

    println!("#### Launcher\n");
    let (launched, plain) = (median(&results.launcher.0), median(&results.launcher.1));
    let added_ms = (launched - plain) * 1000.0;
    println!("| | median ms | target | result |\n|---|---|---|---|");
    println!("| `/bin/true` | {:.1} | | |", plain * 1000.0);
    println!("| `safeclaw-agent exec --as-root --agent bench -- /bin/true` | {:.1} | | |", launched * 1000.0);
    println!("| added by the launcher | {added_ms:.1} | < 20 | {} |", verdict(added_ms < 20.0));
    println!();

    println!(
        "#### Policy reload (SIGHUP → `policy.load` entry, the new tables written into the idle slot)\n"
    );
    println!("| into | reloads | median s (min–max) | target | result |\n|---|---|---|---|---|");
    for (policy, seconds) in &results.reloads {
        let (lo, hi) = min_max(seconds);
        let (goal, result) = match policy {
            Policy::Rules(10_000) => ("≤ 2", verdict(median(seconds) <= 2.0)),
            _ => ("", ""),
        };
        println!(
            "| {} | {} | {:.2} ({lo:.2}–{hi:.2}) | {goal} | {result} |",
            policy.label(),
            seconds.len(),
            median(seconds)
        );
    }
    println!();

    for burst in bursts {
        print_burst(burst);
    }

    println!(
        "#### SafeClaw's programs (kernel bpf_stats, from one more SafeClaw phase run with them on; the timed \
         rounds ran with kernel.bpf_stats_enabled=0, as production hosts do)\n"
    );
    println!("| program | runs | ns per run |\n|---|---|---|");
    for (name, (runs, time)) in &results.bpf_stats {
        if *runs > 0 {
            println!("| {name} | {} | {:.0} |", count(*runs), *time as f64 / *runs as f64);
        }
    }
    println!();
    Ok(())
}

/// The paired measurement: each operation's median pair ratio, outside and inside, against its target.
fn print_pairs(pairs: &Pairs, sizes: &Sizes) {
    println!("#### SafeClaw against the baseline, in pairs\n");
    println!(
        "Each pair is one block of every operation with nothing attached and, with the daemon running on \
         policies/default.yaml, one block outside its cgroup and one inside, seconds apart: the daemon is \
         started and stopped between the halves, and which half (and which side) comes first alternates \
         from pair to pair, so a drift of the emulator's speed falls on both halves alike. A block runs \
         {} opens, {} denied opens, {} execs and {} connects; it starts {} s after the daemon's start or \
         stop, and each operation once the audit log has been unchanged for {} ms. Pairs were added \
         until the 95 % confidence interval of each median pair ratio (order statistics) was within ±{:.3} \
         of it, at most the bench's cap. Pairs run: {}.\n",
        sizes.pair_iterations[0],
        sizes.pair_iterations[1],
        sizes.pair_iterations[2],
        sizes.pair_iterations[3],
        paired::SETTLE.as_secs(),
        paired::QUIET.as_millis(),
        paired::PRECISION,
        pairs.len()
    );
    println!("| operation | side | baseline ns (median) | SafeClaw ns (median) | median pair ratio (95 % CI) | target | result |");
    println!("|---|---|---|---|---|---|---|");
    for (o, &op) in Op::ALL.iter().enumerate() {
        for (side, label) in
            [(Side::Outside, "outside the agent cgroup"), (Side::Inside, "inside, full audit log")]
        {
            let ratios = pairs.ratios(side, o);
            let ratio = median(&ratios);
            let interval = match paired::median_interval(&ratios) {
                Some((lo, hi)) => format!("{lo:.3}–{hi:.3}"),
                None => "too few pairs".to_owned(),
            };
            let (goal, result) = match target(side, op) {
                Some(goal) => (format!("≤ {goal:.2}"), verdict(ratio <= goal)),
                None => ("".into(), ""),
            };
            println!(
                "| {} | {label} | {:.0} | {:.0} | {ratio:.3} ({interval}) | {goal} | {result} |",
                op.label(),
                median(&pairs.baseline.iter().map(|b| b[o]).collect::<Vec<_>>()),
                median(&pairs.blocks(side).iter().map(|b| b[o]).collect::<Vec<_>>()),
            );
        }
    }
    println!();
}

/// The tables of one audit burst: throughput, accounting, memory and the daemon's profile.
fn print_burst(burst: &Burst) {
    println!(
        "#### Audit burst: {} opens of {} from {PROCESSES} processes inside the agent cgroup\n",
        count(burst.attempts),
        burst.target.label()
    );
    println!("| | value | target | result |\n|---|---|---|---|");
    println!(
    "| attempts durably recorded (first open → daemon exit after SIGTERM, all fdatasync'ed; {} entries, repeats counted) | {} in {:.1} s = {} /s | ≥ 100,000 /s | {} |",
    count(burst.entries),
    count(burst.recorded),
    burst.durable_seconds,
    count(burst.events_per_second() as u64),
    verdict(burst.events_per_second() >= 100_000.0)
);
    println!(
        "| attempts / recorded / failed (denied) / `audit.gap` events | {} / {} / {} / {} | | |",
        count(burst.attempts),
        count(burst.recorded),
        count(burst.failed),
        count(burst.gap_events)
    );
    println!(
        "| opens denied because the ring buffer was full | {} | 0 | {} |",
        count(burst.failed),
        verdict(burst.failed == 0)
    );
    println!(
        "| agents paused because the ring was half full (`daemon.agents_paused`): times / total | {} / {:.1} s | | |",
        count(burst.pauses),
        burst.paused_ms as f64 / 1000.0
    );
    println!(
        "| kernelSeq holes not covered by `audit.gap` | {} | 0 | {} |",
        burst.unexplained_seq_holes,
        verdict(burst.unexplained_seq_holes == 0)
    );
    println!(
        "| attempts neither recorded nor denied | {} | 0 | {} |",
        burst.unaccounted(),
        verdict(burst.unaccounted() == 0)
    );
    println!(
        "| daemon RSS at idle | {:.1} MB | < 64 MB | {} |",
        burst.idle_rss_kb as f64 / 1024.0,
        verdict(burst.idle_rss_kb < 64 * 1024)
    );
    println!(
        "| daemon peak RSS (VmHWM) after the burst | {:.1} MB | < 64 MB | {} |",
        burst.peak_rss_kb as f64 / 1024.0,
        verdict(burst.peak_rss_kb < 64 * 1024)
    );
    println!(
        "| of the RSS after the burst: BPF map pages mapped into the daemon (the event ring) | {:.1} MB | | |",
        burst.mapped_bpf_rss_kb as f64 / 1024.0
    );
    let mb = |kb: u64| kb as f64 / 1024.0;
    let (idle, after) = (burst.idle_split, burst.after_split);
    println!(
        "| RSS at idle → after the burst: anon (heap, stacks) / file-backed (binary, libraries, mapped BPF \
         maps: the ring {:.1} → {:.1} MB) / shmem | {:.1} / {:.1} / {:.1} → {:.1} / {:.1} / {:.1} MB | | |",
        mb(burst.idle_mapped_bpf_rss_kb),
        mb(burst.mapped_bpf_rss_kb),
        mb(idle.anon),
        mb(idle.file),
        mb(idle.shmem),
        mb(after.anon),
        mb(after.file),
        mb(after.shmem)
    );
    println!(
        "| BPF map memory (memlock of the daemon's map fds) | {:.1} MB | | |",
        burst.bpf_map_bytes as f64 / 1048576.0
    );
    println!();

    println!("#### Where the daemon spent its CPU during the burst (perf record -e cpu-clock, 200 Hz)\n");
    match &burst.profile {
        Ok(top) => {
            println!("| share of samples | object and symbol |\n|---|---|");
            for (share, symbol) in top {
                println!("| {share:.1}% | `{}` |", symbol.replace('|', "\\|"));
            }
        }
        Err(why) => println!("No profile: {why}."),
    }
    println!();
}

/// One line on stderr with what proves each tool was active, for the smoke test to check.
pub fn print_evidence_summary(configs: &[Config], results: &Results) {
    let total = |env: Env, inside: bool, op: Option<Op>| -> u64 {
        configs
            .iter()
            .enumerate()
            .filter(|(_, c)| c.env == env && c.inside == inside)
            .map(|(i, _)| match op {
                Some(op) => {
                    let o = Op::ALL.iter().position(|&x| x == op).unwrap_or(0);
                    results.micro[i][o].iter().map(|t| t.failures).sum::<u64>()
                }
                None => results.logged[i].iter().sum(),
            })
            .sum()
    };
    eprintln!(
        "safeclaw-bench: evidence safeclaw_inside_entries={} safeclaw_inside_denied={} safeclaw_outside_entries={} \
         auditd_records={} auditd_lost={} fapolicyd_denied_opens={} fapolicyd_decisions={} false_denials={}",
        total(Env::SafeClaw, true, None),
        total(Env::SafeClaw, true, Some(Op::OpenDenied)),
        total(Env::SafeClaw, false, None),
        total(Env::Auditd, false, None),
        results.auditd_lost,
        total(Env::Fapolicyd, false, Some(Op::OpenDenied)),
        results.fapolicyd.allowed + results.fapolicyd.denied,
        results.real_denials.len()
    );
}

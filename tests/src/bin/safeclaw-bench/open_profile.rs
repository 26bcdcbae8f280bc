//! Where an allowed open's time goes in the kernel: a `perf` profile of the open loop with nothing
//! attached, then with the daemon running, outside and inside its cgroup, as ns per open by symbol.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::ops::{self, Fixture, Op};
use crate::profile::{Recording, Sort, Top};
use crate::safeclaw::{self, Policy};

/// Samples per second: one sample is then 0.5 ms of the loop, a few ns per open over 100,000 opens.
const FREQUENCY: u32 = 2_000;

/// Symbols in the table: those whose cost changed the most.
const ROWS: usize = 24;

/// One profiled loop: its measured ns per open and the symbols' shares of its samples.
pub struct Loop {
    pub ns_per_open: f64,
    pub shares: Top,
}

/// The three loops, in the order baseline, outside, inside.
pub struct OpenProfile {
    pub opens: u32,
    pub loops: [Loop; 3],
}

/// Profiles `opens` allowed opens of `fixture` with nothing attached, then with the daemon running on
/// policies/default.yaml, from `cgroup` (outside the agent cgroup) and from inside it.
pub fn run(fixture: &Fixture, opens: u32, cgroup: &Path) -> anyhow::Result<OpenProfile> {
    let baseline = profiled(fixture, opens, cgroup)?;
    let daemon = safeclaw::start(Policy::Default, fixture)?;
    std::thread::sleep(Duration::from_millis(500));
    let outside = profiled(fixture, opens, cgroup);
    let inside = profiled(fixture, opens, &daemon.cgroup);
    let status = daemon.terminate();
    if !status.success() {
        bail!("safeclaw-agent exited with {status} after the profiled opens");
    }
    Ok(OpenProfile { opens, loops: [baseline, outside?, inside?] })
}

fn profiled(fixture: &Fixture, opens: u32, cgroup: &Path) -> anyhow::Result<Loop> {
    let mut recording = None;
    let timing = ops::measure_after(fixture, Op::OpenAllowed, opens, cgroup, &mut |pid| {
        recording = Some(Recording::attach(pid, FREQUENCY)?);
        Ok(())
    })?;
    let shares = recording.context("perf record was not started")?.finish(usize::MAX, Sort::Symbol)?;
    if shares.is_empty() {
        bail!("perf recorded no samples of {opens} opens");
    }
    Ok(Loop { ns_per_open: timing.ns, shares })
}

/// A symbol as rows of different runs name it: a BPF program's tag (`bpf_prog_<tag>_file_open`) and
/// the `[k]`/`[.]` marker left out.
fn row_name(symbol: &str) -> String {
    let symbol = symbol.rsplit(' ').next().unwrap_or(symbol);
    match symbol.strip_prefix("bpf_prog_").and_then(|rest| rest.split_once('_')) {
        Some((_tag, name)) => format!("bpf_prog_…_{name}"),
        None => symbol.to_owned(),
    }
}

impl OpenProfile {
    /// ns per open of each symbol in each loop: its share of the loop's samples times the loop's time.
    fn by_symbol(&self) -> BTreeMap<String, [f64; 3]> {
        let mut rows: BTreeMap<String, [f64; 3]> = BTreeMap::new();
        for (i, run) in self.loops.iter().enumerate() {
            for (share, symbol) in &run.shares {
                rows.entry(row_name(symbol)).or_default()[i] += share / 100.0 * run.ns_per_open;
            }
        }
        rows
    }
}

pub fn print(profile: &OpenProfile) {
    println!(
        "#### Where an allowed open's time goes (perf record -e cpu-clock, {FREQUENCY} Hz, of {} open()+close() \
         per loop; each symbol's share of its loop's samples times the loop's ns per open)\n",
        profile.opens
    );
    println!(
        "Rows: the {ROWS} symbols whose cost changed most from the baseline, inside or outside; the daemon \
         ran on policies/default.yaml, started after the baseline loop.\n"
    );
    println!("| symbol | baseline ns | outside ns | inside ns | inside − baseline |");
    println!("|---|---|---|---|---|");
    let [base, outside, inside] = &profile.loops;
    println!(
        "| whole open()+close() (measured) | {:.0} | {:.0} | {:.0} | {:+.0} |",
        base.ns_per_open,
        outside.ns_per_open,
        inside.ns_per_open,
        inside.ns_per_open - base.ns_per_open
    );
    let mut rows: Vec<_> = profile.by_symbol().into_iter().collect();
    let change = |ns: &[f64; 3]| (ns[2] - ns[0]).abs().max((ns[1] - ns[0]).abs());
    rows.sort_by(|a, b| change(&b.1).total_cmp(&change(&a.1)));
    for (symbol, ns) in rows.iter().take(ROWS) {
        println!("| {symbol} | {:.0} | {:.0} | {:.0} | {:+.0} |", ns[0], ns[1], ns[2], ns[2] - ns[0]);
    }
    println!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_programs_are_named_without_their_tag() {
        assert_eq!(row_name("[k] bpf_prog_80c32b3616606424_file_open"), "bpf_prog_…_file_open");
        assert_eq!(row_name("[k] bpf_prog_c36426ae34ca043b_inode_permission"), "bpf_prog_…_inode_permission");
        assert_eq!(row_name("[k] d_path"), "d_path");
    }

    #[test]
    fn each_symbol_costs_its_share_of_its_loop() {
        let run = |ns, shares: &[(f64, &str)]| Loop {
            ns_per_open: ns,
            shares: shares.iter().map(|(s, n)| (*s, n.to_string())).collect(),
        };
        let profile = OpenProfile {
            opens: 10,
            loops: [
                run(1000.0, &[(50.0, "[k] path_openat")]),
                run(2000.0, &[(25.0, "[k] path_openat"), (10.0, "[k] bpf_prog_aa_file_open")]),
                run(4000.0, &[(10.0, "[k] path_openat"), (5.0, "[k] bpf_prog_bb_file_open")]),
            ],
        };
        let rows = profile.by_symbol();
        assert_eq!(rows["path_openat"], [500.0, 500.0, 400.0]);
        assert_eq!(rows["bpf_prog_…_file_open"], [0.0, 200.0, 200.0]);
    }
}

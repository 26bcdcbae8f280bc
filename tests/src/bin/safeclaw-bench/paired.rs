//! SafeClaw's cost measured in pairs: a block of every operation with nothing attached, and blocks with
//! the daemon running (the measured process outside the agent cgroup, then inside it, the order
//! alternating), seconds apart: the daemon is started and stopped between them and which half comes
//! first alternates, so the emulator's drifts over minutes, which separate the rounds' phases, fall on
//! both halves of a pair alike. Pairs are added until the 95 % confidence interval of every median pair
//! ratio is within `PRECISION` of it, or the cap. The cap is low because each pair attaches and detaches
//! every program once: under TCG a detach while another vCPU ran a hooked function once left that vCPU
//! executing a stale `int3` of the kernel's text patching (guest panic, `Oops: int3` in
//! `bpf_lsm_inode_permission`), after 29 cycles in one boot.
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::ops::{self, Fixture, Op};
use crate::safeclaw::{self, Policy};
use crate::Sizes;

/// Half-width of the confidence interval at which no more pairs are run: half the 5 % the target
/// allows, so the interval itself says on which side of the target the cost lies.
pub const PRECISION: f64 = 0.025;

/// After a daemon starts or stops, before a block: its start-up work and the programs' attach or
/// detach settle: a block 0.5 s after a start ran up to 15 % slower than one 3 s after it, likely
/// because patching the kernel's text discards the emulator's (TCG's) translations of that code.
pub const SETTLE: Duration = Duration::from_secs(3);
/// How long the audit log must stay unchanged before an operation's loop starts: the daemon has then
/// written what the previous operation gave it, and that work is not charged to the next one.
pub const QUIET: Duration = Duration::from_millis(200);
/// The longest wait for a quiet log; a daemon still writing after that is measured as it is.
const QUIET_MAX: Duration = Duration::from_secs(10);

/// Where the measured process runs while the daemon does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Outside,
    Inside,
}

/// Mean ns per operation of each block, in `Op::ALL` order.
#[derive(Default)]
pub struct Pairs {
    pub baseline: Vec<[f64; 4]>,
    pub outside: Vec<[f64; 4]>,
    pub inside: Vec<[f64; 4]>,
}

impl Pairs {
    pub fn len(&self) -> usize {
        self.baseline.len()
    }

    /// The blocks measured on `side`.
    pub fn blocks(&self, side: Side) -> &[[f64; 4]] {
        match side {
            Side::Outside => &self.outside,
            Side::Inside => &self.inside,
        }
    }

    /// `side` over baseline of each pair, for operation `o`.
    pub fn ratios(&self, side: Side, o: usize) -> Vec<f64> {
        self.baseline.iter().zip(self.blocks(side)).map(|(base, with)| with[o] / base[o]).collect()
    }

    /// `side` minus baseline of each pair, in ns per operation, for operation `o`.
    pub fn added_ns(&self, side: Side, o: usize) -> Vec<f64> {
        self.baseline.iter().zip(self.blocks(side)).map(|(base, with)| with[o] - base[o]).collect()
    }

    fn precise(&self) -> bool {
        [Side::Outside, Side::Inside].into_iter().all(|side| {
            (0..Op::ALL.len()).all(|o| {
                median_interval(&self.ratios(side, o)).is_some_and(|(lo, hi)| (hi - lo) / 2.0 <= PRECISION)
            })
        })
    }
}

/// Runs pairs with policies/default.yaml, `cgroup` being outside the agent cgroup, until they are
/// precise or `sizes.max_pairs` ran, and at least `sizes.min_pairs`.
pub fn run(fixture: &Fixture, sizes: &Sizes, cgroup: &Path) -> anyhow::Result<Pairs> {
    let mut pairs = Pairs::default();
    while pairs.len() < sizes.min_pairs || (pairs.len() < sizes.max_pairs && !pairs.precise()) {
        let outside_first = pairs.len() % 2 == 1;
        let mut baseline = None;
        if !outside_first {
            baseline = Some(block(fixture, sizes, cgroup, None)?);
        }
        let daemon = safeclaw::start(Policy::Default, fixture)?;
        std::thread::sleep(SETTLE);
        let log = Some(daemon.audit_log.as_path());
        let (outside, inside) = if outside_first {
            let outside = block(fixture, sizes, cgroup, log)?;
            (outside, block(fixture, sizes, &daemon.cgroup, log)?)
        } else {
            let inside = block(fixture, sizes, &daemon.cgroup, log)?;
            (block(fixture, sizes, cgroup, log)?, inside)
        };
        let status = daemon.terminate();
        if !status.success() {
            bail!("safeclaw-agent exited with {status} after a measured block");
        }
        std::thread::sleep(SETTLE);
        let baseline = match baseline {
            Some(measured) => measured,
            None => block(fixture, sizes, cgroup, None)?,
        };
        pairs.baseline.push(baseline);
        pairs.outside.push(outside);
        pairs.inside.push(inside);
        eprintln!("safeclaw-bench: pair {} done", pairs.len());
    }
    Ok(pairs)
}

/// Every operation once, at the pairs' sizes, each started once the daemon writing `log` (if any) is
/// quiet; without a daemon, after the shortest such wait.
fn block(fixture: &Fixture, sizes: &Sizes, cgroup: &Path, log: Option<&Path>) -> anyhow::Result<[f64; 4]> {
    let mut ns = [0.0; 4];
    for (slot, &op) in ns.iter_mut().zip(Op::ALL.iter()) {
        match log {
            Some(log) => wait_quiet(log),
            None => std::thread::sleep(QUIET),
        }
        *slot = ops::measure(fixture, op, sizes.pair_iterations(op), Some(cgroup))?.ns;
    }
    Ok(ns)
}

/// Returns once `log`'s length has not changed for `QUIET`, or after `QUIET_MAX`.
fn wait_quiet(log: &Path) {
    let started = Instant::now();
    let length = || std::fs::metadata(log).map_or(0, |m| m.len());
    let (mut last, mut since) = (length(), Instant::now());
    while since.elapsed() < QUIET && started.elapsed() < QUIET_MAX {
        std::thread::sleep(QUIET / 4);
        let now = length();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
}

/// The distribution-free 95 % confidence interval of the median of `values`: the order statistics
/// `k` and `n + 1 - k`, with `k` the largest for which P(Binomial(n, ½) < k) ≤ 2.5 %. `None` below
/// six values, where no such `k` exists.
pub fn median_interval(values: &[f64]) -> Option<(f64, f64)> {
    let n = values.len();
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    // P(X <= j) for X ~ Binomial(n, 1/2), accumulated term by term.
    let mut term = 0.5f64.powi(i32::try_from(n).ok()?);
    let mut below = 0.0;
    let mut k = 0;
    for j in 0..n {
        below += term;
        if below > 0.025 {
            break;
        }
        // P(X < j + 2) is next; j + 1 qualifies as k.
        k = j + 1;
        term *= (n - j) as f64 / (j + 1) as f64;
    }
    (k >= 1).then(|| (sorted[k - 1], sorted[n - k]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_interval_uses_the_binomial_order_statistics() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        // n = 20: P(X <= 5) = 0.0207, P(X <= 6) = 0.0577, so k = 6: the 6th and 15th values.
        assert_eq!(median_interval(&values), Some((6.0, 15.0)));
        let values: Vec<f64> = (1..=6).map(f64::from).collect();
        // n = 6: P(X <= 0) = 0.0156, P(X <= 1) = 0.109, so k = 1: the whole range.
        assert_eq!(median_interval(&values), Some((1.0, 6.0)));
        assert_eq!(median_interval(&[1.0, 2.0, 3.0, 4.0, 5.0]), None);
    }
}

//! Recording the repeats the kernel counted instead of recording them one by one (`REPEATS`): once
//! an attempt's window has closed, its count becomes one entry (docs/audit-format.md). The kernel's
//! entry is deleted only once that entry is durable, so a daemon killed in between leaves the count
//! for the next one, which records it unless the log already holds it.
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use aya::Ebpf;
use safeclaw_common::RepeatCount;

use crate::audit::writer::Durable;
use crate::config::RepeatWindow;
use crate::kernel::events::{self, KernelEvent};
use crate::kernel::maps;

/// Time after a window closes before its count is read: an open that found the window open has long
/// added to it by then (a program runs for microseconds).
const MARGIN: Duration = Duration::from_millis(500);
/// How often closed windows are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// A closed window to record: the first attempt's event at the time of the latest repeat.
pub struct ClosedRepeat {
    /// The kernel's key of the entry (`REPEATS`).
    pub digest: u64,
    pub event: KernelEvent,
    pub count: RepeatCount,
}

pub struct RepeatSweeper {
    window: Duration,
    next_sweep: Instant,
    /// Recorded, not yet durable: the entry sequence each waits for.
    awaiting: HashMap<u64, u64>,
    /// First attempts (kernel sequences) whose counts a previous daemon made durable and died before
    /// it deleted their kernel entries: those windows are only deleted.
    recorded_before: HashSet<u64>,
}

impl RepeatSweeper {
    /// `recorded_before`: when adopting the kernel session of a daemon that died, the first attempts
    /// whose counted repeats its log already holds (`Recovered::repeats_recorded`); empty otherwise.
    pub fn new(window: RepeatWindow, recorded_before: HashSet<u64>) -> Self {
        RepeatSweeper {
            window: window.0,
            next_sweep: Instant::now() + SWEEP_INTERVAL,
            awaiting: HashMap::new(),
            recorded_before,
        }
    }

    /// The counted repeats to record now: windows closed (all of them with `all`, once the programs
    /// are detached) whose first attempt is recorded (`recorded_through`, a kernel sequence) and that
    /// are not already recorded. Windows with nothing repeated are only forgotten.
    pub fn closed(&mut self, ebpf: &mut Ebpf, recorded_through: Option<u64>, all: bool) -> Vec<ClosedRepeat> {
        let now = Instant::now();
        if !all && (self.window.is_zero() || now < self.next_sweep) {
            return Vec::new();
        }
        self.next_sweep = now + SWEEP_INTERVAL;
        let Some(boot_ns) = boot_ns() else { return Vec::new() };
        let closed = maps::closed_repeats(
            ebpf,
            boot_ns,
            duration_ns(self.window),
            duration_ns(MARGIN),
            recorded_through,
            all,
        );
        let closed = match closed {
            Ok(closed) => closed,
            Err(e) => {
                tracing::error!("cannot read the counted repeats: {e}");
                return Vec::new();
            }
        };
        for digest in closed.unrepeated {
            forget(ebpf, digest);
        }
        let mut to_record = Vec::new();
        for (digest, entry) in closed.repeated {
            if self.awaiting.contains_key(&digest) {
                continue;
            }
            if self.recorded_before.remove(&entry.count.kernel_seq) {
                // Durable before the previous daemon died, which had not deleted it yet.
                forget(ebpf, digest);
                continue;
            }
            let count = entry.count;
            match events::decode_repeated(&entry.key, &count) {
                Ok(event) => to_record.push(ClosedRepeat { digest, event, count }),
                Err(e) => tracing::error!("undecodable counted repeat ({} repeats): {e}", count.repeats),
            }
        }
        to_record
    }

    /// The count of the kernel's entry under `digest` is in the audit entry with `sequence`.
    pub fn recorded(&mut self, digest: u64, sequence: u64) {
        self.awaiting.insert(digest, sequence);
    }

    /// Deletes the kernel's entries whose count is durable now.
    pub fn release(&mut self, ebpf: &mut Ebpf, durable: Durable) {
        let Some(through) = durable.sequence else { return };
        self.awaiting.retain(|&digest, sequence| {
            if *sequence > through {
                return true;
            }
            forget(ebpf, digest);
            false
        });
    }
}

fn forget(ebpf: &mut Ebpf, digest: u64) {
    if let Err(e) = maps::remove_repeat(ebpf, digest) {
        tracing::error!("cannot delete a recorded repeat count: {e}");
    }
}

fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// `CLOCK_BOOTTIME` in nanoseconds, the clock of the kernel's `bpf_ktime_get_boot_ns`.
fn boot_ns() -> Option<u64> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
    Some(now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64)
}

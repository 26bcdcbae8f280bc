//! Latency histograms the audit writer feeds as it works (append, commit with fsync), lock-free so that
//! observing costs the hot path two atomic adds, rendered in Prometheus's histogram format.
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in nanoseconds: 1 µs to 5 s, roughly ×2.5 apart.
const BOUNDS_NS: [u64; 14] = [
    1_000,
    5_000,
    10_000,
    50_000,
    100_000,
    500_000,
    1_000_000,
    5_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
    500_000_000,
    1_000_000_000,
    5_000_000_000,
];

/// Counts per bucket (not cumulative; the last one is above every bound), their sum and number.
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS_NS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

/// Time the writer takes to seal one entry into memory (hash and serialise).
pub static APPEND: Histogram = Histogram::new();
/// Time one group commit takes: write, fsync and the signed head file.
pub static COMMIT: Histogram = Histogram::new();

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    pub const fn new() -> Self {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BOUNDS_NS.len() + 1],
            sum_ns: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NS.iter().position(|&bound| ns <= bound).unwrap_or(BOUNDS_NS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the histogram `name` in the text exposition format: cumulative `le` buckets in seconds,
    /// `_sum` and `_count`.
    pub fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} histogram\n");
        let mut cumulative = 0;
        for (bound, bucket) in BOUNDS_NS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", *bound as f64 / 1e9);
        }
        cumulative += self.buckets[BOUNDS_NS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {}", self.count.load(Ordering::Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_bounded_in_seconds() {
        let histogram = Histogram::new();
        for micros in [0, 3, 3, 700, 20_000_000] {
            histogram.observe(Duration::from_micros(micros));
        }
        let mut out = String::new();
        histogram.render("x_seconds", "test", &mut out);
        for line in [
            "# TYPE x_seconds histogram",
            "x_seconds_bucket{le=\"0.000001\"} 1",
            "x_seconds_bucket{le=\"0.000005\"} 3",
            "x_seconds_bucket{le=\"0.001\"} 4",
            "x_seconds_bucket{le=\"5\"} 4",
            "x_seconds_bucket{le=\"+Inf\"} 5",
            "x_seconds_count 5",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
        let sum: f64 = out.lines().find_map(|l| l.strip_prefix("x_seconds_sum ")).unwrap().parse().unwrap();
        assert!((sum - 20.000706).abs() < 1e-9, "{sum}");
    }
}

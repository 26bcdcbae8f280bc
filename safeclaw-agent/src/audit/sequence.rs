//! Which kernel sequence numbers have arrived. Events of different CPUs reach the ring out of sequence
//! order, so a missing number is reported lost only once it has stayed missing for a while; late
//! arrivals fill the hole instead.
use std::collections::{BTreeSet, HashSet, VecDeque};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

/// How long a missing number may stay missing once a later one arrived (the default of
/// `WriterOptions::gap_wait`).
pub const HOLE_WAIT: Duration = Duration::from_secs(2);
/// How far the newest number may run ahead of a missing one before that is reported lost regardless of
/// time (bounds the memory held for out-of-order arrivals).
pub const MAX_SPAN: u64 = 1 << 16;
/// Lost ranges remembered so that a straggler is recognised as late, not as a counter reset.
const REMEMBERED_LOST: usize = 64;
/// Recorded counts of repeats remembered: twice as many as the kernel's `REPEATS` map holds windows,
/// all of which a daemon may have recorded and not yet deleted when it died.
const REMEMBERED_REPEATS: usize = 2 * safeclaw_common::MAX_REPEATS as usize;

/// What an arriving number means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// New: record it.
    New,
    /// Recorded before a restart (its ring record was durable but not yet released): skip it.
    AlreadyRecorded,
    /// Already reported lost; record it anyway (it did happen).
    Late,
    /// Below everything accounted for and not a straggler: the kernel counter was reset. Record it after
    /// saying so.
    Reset { expected: u64 },
}

/// What the log's tail says about the current kernel session, for a restarted writer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionTail {
    /// Kernel sequences recorded, in log order (the newest `TAIL_CAPACITY` of them).
    pub recorded: VecDeque<u64>,
    /// Ranges reported lost (the newest `REMEMBERED_LOST`).
    pub lost: VecDeque<RangeInclusive<u64>>,
    /// The first attempts whose counted repeats were recorded (`repeats.ofKernelSeq`), the newest
    /// `REMEMBERED_REPEATS`: a window the kernel still holds after a restart may already be in the log.
    pub repeats_of: VecDeque<u64>,
    /// Whether the tail reaches back to the session's start (nothing of the session is missing from it).
    pub complete: bool,
    /// Whether it reaches back to the start of its segment (the session began in an earlier one).
    pub starts_segment: bool,
}

/// Entries of the tail kept: more than the ring buffer can hold unreleased, and more than `MAX_SPAN`.
pub const TAIL_CAPACITY: usize = 1 << 18;

impl SessionTail {
    pub fn start_session(&mut self) {
        *self = SessionTail { complete: true, ..SessionTail::default() };
    }

    /// A segment start: what came before is in another segment.
    pub fn start_segment(&mut self) {
        *self = SessionTail { starts_segment: true, ..SessionTail::default() };
    }

    pub fn record(&mut self, seq: u64) {
        if self.recorded.len() == TAIL_CAPACITY {
            self.recorded.pop_front();
            self.complete = false;
            self.starts_segment = false;
        }
        self.recorded.push_back(seq);
    }

    pub fn lose(&mut self, range: RangeInclusive<u64>) {
        remember(&mut self.lost, range);
    }

    pub fn record_repeats(&mut self, of_kernel_seq: u64) {
        if self.repeats_of.len() == REMEMBERED_REPEATS {
            self.repeats_of.pop_front();
        }
        self.repeats_of.push_back(of_kernel_seq);
    }

    /// Whether the tail starts at a segment start with fewer entries than a restart may need.
    pub fn wants_earlier(&self) -> bool {
        !self.complete && self.starts_segment && self.recorded.len() < TAIL_CAPACITY
    }

    /// Puts the tail of the previous segment in front of this one.
    pub fn follow(&mut self, earlier: SessionTail) {
        let mine = std::mem::replace(self, earlier);
        for seq in mine.recorded {
            self.record(seq);
        }
        for range in mine.lost {
            self.lose(range);
        }
        for seq in mine.repeats_of {
            self.record_repeats(seq);
        }
    }
}

fn remember(lost: &mut VecDeque<RangeInclusive<u64>>, range: RangeInclusive<u64>) {
    if lost.len() == REMEMBERED_LOST {
        lost.pop_front();
    }
    lost.push_back(range);
}

/// The arrival state of one kernel session.
#[derive(Debug, Default)]
pub struct KernelSeqs {
    /// How long a hole may stay open.
    wait: Duration,
    /// Every number below is recorded or reported lost; `None` until the first arrival says where the
    /// session stands.
    low: Option<u64>,
    /// Recorded numbers above `low`.
    above: BTreeSet<u64>,
    /// When each number of `above` arrived, in arrival order (entries below `low` are stale).
    arrivals: VecDeque<(u64, Instant)>,
    lost: VecDeque<RangeInclusive<u64>>,
    /// Numbers recorded before a restart whose ring records come again first.
    replayable: HashSet<u64>,
}

impl KernelSeqs {
    /// A new kernel session: numbering starts at 0. Holes may stay open for `wait`.
    pub fn session_start(wait: Duration) -> Self {
        KernelSeqs { wait, low: Some(0), ..KernelSeqs::default() }
    }

    /// The state a restarted writer continues from: numbers missing from the tail but above what it
    /// must already have reported lost are still open holes, and the tail's numbers may come again.
    pub fn resume(tail: &SessionTail, last_kernel_seq: Option<u64>, wait: Duration) -> Self {
        let highest = tail.recorded.iter().copied().chain(tail.lost.iter().map(|r| *r.end())).max();
        let Some(highest) = highest else {
            let low = if tail.complete { Some(0) } else { last_kernel_seq.map(|k| k + 1) };
            return KernelSeqs { wait, low, ..KernelSeqs::default() };
        };
        let oldest = tail.recorded.iter().copied().chain(tail.lost.iter().map(|r| *r.start())).min();
        let base = if tail.complete { 0 } else { oldest.unwrap_or(highest) };
        // Holes further behind than MAX_SPAN were reported lost before the restart.
        let mut low = base.max(highest.saturating_sub(MAX_SPAN));
        let recorded: BTreeSet<u64> = tail.recorded.iter().copied().collect();
        let now = Instant::now();
        loop {
            if recorded.contains(&low) {
                low += 1;
            } else if let Some(range) = tail.lost.iter().find(|r| r.contains(&low)) {
                low = *range.end() + 1;
            } else {
                break;
            }
        }
        let arrivals = recorded.range(low..).map(|&s| (s, now)).collect();
        // Reported lost counts as accounted for; these are within MAX_SPAN of `highest`.
        let lost_above = tail.lost.iter().flat_map(|r| low.max(*r.start())..=*r.end());
        let above = recorded.range(low..).copied().chain(lost_above).collect();
        KernelSeqs {
            wait,
            low: Some(low),
            arrivals,
            above,
            lost: tail.lost.clone(),
            replayable: tail.recorded.iter().copied().collect(),
        }
    }

    /// Accounts for `seq`; `now` is asked only when it arrives ahead of a hole.
    pub fn arrive(&mut self, seq: u64, now: impl FnOnce() -> Instant) -> Arrival {
        if !self.replayable.is_empty() {
            if self.replayable.contains(&seq) {
                return Arrival::AlreadyRecorded;
            }
            // Replayed records come first in the ring: after the first new one there are no more.
            self.replayable = HashSet::new();
        }
        let Some(low) = self.low else {
            self.low = Some(seq + 1);
            return Arrival::New;
        };
        if seq == low {
            self.low = Some(low + 1);
            self.absorb();
            return Arrival::New;
        }
        if seq > low {
            if self.above.insert(seq) {
                self.arrivals.push_back((seq, now()));
            }
            return Arrival::New;
        }
        if self.lost.iter().any(|r| r.contains(&seq)) {
            return Arrival::Late;
        }
        *self = KernelSeqs { wait: self.wait, low: Some(seq + 1), ..KernelSeqs::default() };
        Arrival::Reset { expected: low }
    }

    fn absorb(&mut self) {
        let Some(mut low) = self.low else { return };
        while self.above.first() == Some(&low) {
            self.above.pop_first();
            low += 1;
        }
        self.low = Some(low);
        while self.arrivals.front().is_some_and(|(s, _)| *s < low) {
            self.arrivals.pop_front();
        }
    }

    /// The oldest hole, if the newest number is `MAX_SPAN` ahead of it or (given `now`) it has waited
    /// long enough: it is now reported lost. Call until `None`.
    pub fn expire(&mut self, now: Option<Instant>) -> Option<RangeInclusive<u64>> {
        let low = self.low?;
        let highest = *self.above.last()?;
        let waited = now.is_some_and(|now| {
            self.arrivals.front().is_some_and(|(_, t)| now.saturating_duration_since(*t) >= self.wait)
        });
        if waited || highest - low >= MAX_SPAN {
            self.declare_oldest()
        } else {
            None
        }
    }

    /// Every hole, reported lost now (the ring is drained for good). Call until `None`.
    pub fn expire_all(&mut self) -> Option<RangeInclusive<u64>> {
        self.declare_oldest()
    }

    /// Every hole, then the numbers after the highest recorded up to `next` (exclusive): the kernel
    /// issued all of those, and none will come any more (its programs are detached and the ring is
    /// drained), so the last ones were denied for want of room. Call until `None`.
    pub fn expire_all_below(&mut self, next: u64) -> Option<RangeInclusive<u64>> {
        if let Some(lost) = self.declare_oldest() {
            return Some(lost);
        }
        let low = self.low?;
        if low >= next {
            return None;
        }
        let lost = low..=next - 1;
        remember(&mut self.lost, lost.clone());
        self.low = Some(next);
        Some(lost)
    }

    fn declare_oldest(&mut self) -> Option<RangeInclusive<u64>> {
        let low = self.low?;
        let next = *self.above.first()?;
        let lost = low..=next - 1;
        remember(&mut self.lost, lost.clone());
        self.low = Some(next);
        self.absorb();
        Some(lost)
    }

    /// When the oldest hole will have waited long enough.
    pub fn deadline(&self) -> Option<Instant> {
        self.arrivals.front().map(|(_, t)| *t + self.wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_followed_tail_puts_the_earlier_segments_counted_repeats_first() {
        let mut earlier = SessionTail::default();
        earlier.start_session();
        earlier.record(0);
        earlier.record_repeats(0);
        let mut tail = SessionTail::default();
        tail.start_segment();
        tail.record(1);
        tail.record_repeats(1);
        tail.follow(earlier);
        assert_eq!(tail.repeats_of, [0, 1]);
        assert!(tail.complete);
        tail.start_session();
        assert!(tail.repeats_of.is_empty(), "a new kernel session's windows are all new");
    }

    fn arrive_all(seqs: &mut KernelSeqs, order: &[u64], at: Instant) -> Vec<Arrival> {
        order.iter().map(|&s| seqs.arrive(s, || at)).collect()
    }

    #[test]
    fn out_of_order_arrivals_fill_their_holes() {
        let start = Instant::now();
        let mut seqs = KernelSeqs::session_start(HOLE_WAIT);
        let arrivals = arrive_all(&mut seqs, &[0, 2, 1, 5, 3, 4, 6], start);
        assert!(arrivals.iter().all(|a| *a == Arrival::New), "{arrivals:?}");
        assert_eq!(seqs.expire(Some(start + HOLE_WAIT * 10)), None);
        assert_eq!(seqs.expire_all(), None);
        assert_eq!(seqs.deadline(), None);
    }

    #[test]
    fn a_hole_is_lost_only_after_the_wait() {
        let start = Instant::now();
        let mut seqs = KernelSeqs::session_start(HOLE_WAIT);
        arrive_all(&mut seqs, &[0, 1, 4, 5], start);
        assert_eq!(seqs.expire(Some(start + HOLE_WAIT / 2)), None);
        assert_eq!(seqs.deadline(), Some(start + HOLE_WAIT));
        assert_eq!(seqs.expire(Some(start + HOLE_WAIT)), Some(2..=3));
        assert_eq!(seqs.expire(Some(start + HOLE_WAIT)), None);
        // A straggler after the report is late, not a reset.
        assert_eq!(seqs.arrive(3, || start), Arrival::Late);
        assert_eq!(seqs.arrive(6, || start), Arrival::New);
    }

    #[test]
    fn a_hole_far_behind_the_newest_number_is_lost_at_once() {
        let start = Instant::now();
        let mut seqs = KernelSeqs::session_start(HOLE_WAIT);
        seqs.arrive(1, || start);
        assert_eq!(seqs.expire(Some(start)), None);
        seqs.arrive(MAX_SPAN, || start);
        assert_eq!(seqs.expire(Some(start)), Some(0..=0));
        assert_eq!(seqs.expire(None), None);
        assert_eq!(seqs.expire_all(), Some(2..=MAX_SPAN - 1));
    }

    #[test]
    fn going_back_below_everything_is_a_reset() {
        let start = Instant::now();
        let mut seqs = KernelSeqs::session_start(HOLE_WAIT);
        arrive_all(&mut seqs, &[0, 1, 2, 3], start);
        assert_eq!(seqs.arrive(0, || start), Arrival::Reset { expected: 4 });
        assert_eq!(seqs.arrive(1, || start), Arrival::New);
        assert_eq!(seqs.expire_all(), None);
    }

    #[test]
    fn expire_all_reports_every_remaining_hole() {
        let start = Instant::now();
        let mut seqs = KernelSeqs::session_start(HOLE_WAIT);
        arrive_all(&mut seqs, &[1, 3], start);
        assert_eq!(seqs.expire_all(), Some(0..=0));
        assert_eq!(seqs.expire_all(), Some(2..=2));
        assert_eq!(seqs.expire_all(), None);
    }

    #[test]
    fn expire_all_below_reports_the_holes_then_the_numbers_after_the_last_recorded() {
        let start = Instant::now();
        let mut seqs = KernelSeqs::session_start(HOLE_WAIT);
        arrive_all(&mut seqs, &[0, 2], start);
        assert_eq!(seqs.expire_all_below(6), Some(1..=1));
        assert_eq!(seqs.expire_all_below(6), Some(3..=5));
        assert_eq!(seqs.expire_all_below(6), None);
        // Nothing recorded at all: everything the kernel issued was lost.
        let mut seqs = KernelSeqs::session_start(HOLE_WAIT);
        assert_eq!(seqs.expire_all_below(3), Some(0..=2));
        // Everything issued was recorded.
        let mut seqs = KernelSeqs::session_start(HOLE_WAIT);
        arrive_all(&mut seqs, &[0, 1, 2], start);
        assert_eq!(seqs.expire_all_below(3), None);
    }

    #[test]
    fn a_resumed_session_skips_replayed_records_and_keeps_open_holes() {
        let mut tail = SessionTail::default();
        tail.start_session();
        for s in [0, 1, 2, 4, 5] {
            tail.record(s);
        }
        let mut seqs = KernelSeqs::resume(&tail, Some(5), HOLE_WAIT);
        let start = Instant::now();
        // The ring gives back 4 and 5 (durable, not released), then 3 (the open hole) and 6.
        assert_eq!(arrive_all(&mut seqs, &[4, 5], start), [Arrival::AlreadyRecorded; 2]);
        assert_eq!(arrive_all(&mut seqs, &[3, 6], start), [Arrival::New; 2]);
        assert_eq!(seqs.expire_all(), None);
    }

    #[test]
    fn a_resumed_session_still_reports_a_hole_that_stays_open() {
        let mut tail = SessionTail::default();
        tail.start_session();
        for s in [0, 2] {
            tail.record(s);
        }
        tail.lose(3..=3);
        tail.record(4);
        let mut seqs = KernelSeqs::resume(&tail, Some(4), HOLE_WAIT);
        assert_eq!(seqs.arrive(5, Instant::now), Arrival::New);
        assert_eq!(seqs.expire_all(), Some(1..=1));
        assert_eq!(seqs.expire_all(), None);
    }

    #[test]
    fn an_empty_tail_continues_after_the_last_number() {
        let seqs = KernelSeqs::resume(&SessionTail::default(), Some(9), HOLE_WAIT);
        let mut seqs = seqs;
        assert_eq!(seqs.arrive(10, Instant::now), Arrival::New);
        assert_eq!(seqs.arrive(3, Instant::now), Arrival::Reset { expected: 11 });
    }
}

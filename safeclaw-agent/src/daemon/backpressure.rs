//! Pausing the agents while the event ring is half full: a fast agent waits in the cgroup freezer
//! until the daemon has recorded its attempts, instead of being denied because the ring had no room.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The agents are paused once this fraction (1/n) of the ring is in use. The other half takes what
/// they produce before the freeze reaches them: a task is stopped only when its current syscall
/// returns, and 4 MiB of the 8 MiB ring is about 25,000 events.
const PAUSE_AT_ONE_IN: u64 = 2;
/// They run again once no more than this fraction (1/n) is in use, so that a paused burst resumes in
/// long runs rather than one freeze per few records.
const RESUME_AT_ONE_IN: u64 = 8;

/// What `new` or `observe` did to the agent cgroup.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    Paused {
        used: u64,
        size: u64,
    },
    Resumed {
        paused: Duration,
    },
    /// A pause left by a daemon that died was lifted: at start, or once the ring had drained if the
    /// thaw at start failed. How long it lasted is not known.
    LeftoverResumed,
}

/// Whose pause holds the agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pause {
    /// This daemon's, since then.
    Ours(Instant),
    /// A daemon that died left it, and the thaw at start failed: lifted once the ring has drained, and
    /// recorded as the lift of a leftover pause whenever that happens.
    LeftByPreviousDaemon,
}

/// The freezer of the agent cgroup as the ring's fill level drives it.
pub struct Backpressure {
    freeze_file: PathBuf,
    paused: Option<Pause>,
    /// Whether the last write to `cgroup.freeze` failed and was logged: repeated failures are not.
    failing: bool,
}

impl Backpressure {
    /// Also lifts a pause that a daemon killed while its ring was full left behind (the change to
    /// record, if it did): the agent cgroup's own `cgroup.freeze` belongs to the daemon (operators
    /// freeze a session's cgroup, which this leaves alone).
    pub fn new(agents: &Path) -> (Self, Option<Change>) {
        let mut backpressure =
            Backpressure { freeze_file: agents.join("cgroup.freeze"), paused: None, failing: false };
        let mut lifted = None;
        match std::fs::read_to_string(&backpressure.freeze_file) {
            Ok(value) if value.trim() == "1" => {
                tracing::warn!(
                    "{} was frozen at start (a previous daemon paused the agents and died): thawing",
                    backpressure.freeze_file.display()
                );
                if backpressure.write(false) {
                    lifted = Some(Change::LeftoverResumed);
                } else {
                    // Kept as a pause, so that the thaw is tried again once the ring has drained
                    // instead of never.
                    backpressure.paused = Some(Pause::LeftByPreviousDaemon);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot read {}: {e}", backpressure.freeze_file.display()),
        }
        (backpressure, lifted)
    }

    /// Pauses or resumes the agents for `used` bytes of a `size`-byte ring in use. A write that fails
    /// changes nothing and is tried again at the next call; meanwhile a full ring still denies.
    pub fn observe(&mut self, used: u64, size: u64) -> Option<Change> {
        match self.paused {
            None if used >= size / PAUSE_AT_ONE_IN => self.write(true).then(|| {
                self.paused = Some(Pause::Ours(Instant::now()));
                Change::Paused { used, size }
            }),
            Some(pause) if used <= size / RESUME_AT_ONE_IN => self.write(false).then(|| {
                self.paused = None;
                match pause {
                    Pause::Ours(since) => Change::Resumed { paused: since.elapsed() },
                    Pause::LeftByPreviousDaemon => Change::LeftoverResumed,
                }
            }),
            _ => None,
        }
    }

    /// After a deliberate stop, which freezes, kills and thaws the cgroup itself: a pause the stop
    /// lifted is over. One it could not lift (its freeze or thaw failed) is kept, and lifted as usual
    /// once the ring has drained.
    pub fn after_stop(&mut self) {
        if std::fs::read_to_string(&self.freeze_file).is_ok_and(|value| value.trim() == "0") {
            self.paused = None;
        }
    }

    /// Writes `frozen` to `cgroup.freeze`; whether the write took.
    fn write(&mut self, frozen: bool) -> bool {
        match std::fs::write(&self.freeze_file, if frozen { "1" } else { "0" }) {
            Ok(()) => {
                self.failing = false;
                true
            }
            Err(e) => {
                if !self.failing {
                    let what = if frozen { "pause" } else { "resume" };
                    tracing::error!("cannot {what} the agents ({}): {e}", self.freeze_file.display());
                }
                self.failing = true;
                false
            }
        }
    }
}

impl Drop for Backpressure {
    /// A daemon that ends while the agents are paused resumes them: whatever outlives it runs under
    /// the pinned programs, which deny what the ring cannot take, as with no daemon at all.
    fn drop(&mut self) {
        if self.paused.is_some() {
            self.write(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: u64 = 8 << 20;

    /// A running cgroup's `cgroup.freeze` in a temporary directory, and agents paused there.
    fn paused() -> (tempfile::TempDir, Backpressure) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.freeze"), "0\n").unwrap();
        let (mut backpressure, _) = Backpressure::new(dir.path());
        assert!(backpressure.observe(SIZE, SIZE).is_some());
        (dir, backpressure)
    }

    fn freeze_value(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("cgroup.freeze")).unwrap()
    }

    #[test]
    fn pauses_at_half_full_and_resumes_only_below_an_eighth() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.freeze"), "0\n").unwrap();
        let (mut backpressure, lifted) = Backpressure::new(dir.path());
        assert_eq!(lifted, None);
        assert_eq!(backpressure.observe(SIZE / 2 - 1, SIZE), None);
        assert_eq!(freeze_value(dir.path()), "0\n", "untouched below half");
        assert_eq!(backpressure.observe(SIZE / 2, SIZE), Some(Change::Paused { used: SIZE / 2, size: SIZE }));
        assert_eq!(freeze_value(dir.path()), "1");
        assert_eq!(backpressure.observe(SIZE, SIZE), None, "already paused");
        assert_eq!(backpressure.observe(SIZE / 8 + 1, SIZE), None, "still more than an eighth in use");
        assert_eq!(freeze_value(dir.path()), "1");
        assert!(matches!(backpressure.observe(SIZE / 8, SIZE), Some(Change::Resumed { .. })));
        assert_eq!(freeze_value(dir.path()), "0");
        assert_eq!(backpressure.observe(SIZE / 8, SIZE), None, "already running");
    }

    #[test]
    fn a_pause_left_by_a_dead_daemon_is_lifted_at_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.freeze"), "1\n").unwrap();
        let (mut backpressure, lifted) = Backpressure::new(dir.path());
        assert_eq!(lifted, Some(Change::LeftoverResumed));
        assert_eq!(freeze_value(dir.path()), "0");
        assert_eq!(backpressure.observe(0, SIZE), None, "nothing left to resume");
    }

    #[test]
    fn a_leftover_pause_whose_thaw_failed_at_start_is_recorded_as_leftover_when_lifted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.freeze"), "1\n").unwrap();
        // What `new` leaves when its thaw fails (a write that fails on a file that reads "1" cannot be
        // arranged in a temporary directory).
        let mut backpressure = Backpressure {
            freeze_file: dir.path().join("cgroup.freeze"),
            paused: Some(Pause::LeftByPreviousDaemon),
            failing: true,
        };
        assert_eq!(backpressure.observe(SIZE, SIZE), None, "still paused while the ring is full");
        assert_eq!(backpressure.observe(SIZE / 8, SIZE), Some(Change::LeftoverResumed));
        assert_eq!(freeze_value(dir.path()), "0");
        assert!(matches!(backpressure.observe(SIZE / 2, SIZE), Some(Change::Paused { .. })));
        assert!(matches!(backpressure.observe(0, SIZE), Some(Change::Resumed { .. })), "a pause of its own");
    }

    #[test]
    fn ending_while_paused_resumes_the_agents() {
        let (dir, backpressure) = paused();
        drop(backpressure);
        assert_eq!(freeze_value(dir.path()), "0");
    }

    #[test]
    fn a_stop_ends_a_pause_only_if_it_thawed_the_cgroup() {
        let (dir, mut backpressure) = paused();
        // The stop's thaw failed: still paused, and resumed once the ring drains.
        backpressure.after_stop();
        assert!(matches!(backpressure.observe(0, SIZE), Some(Change::Resumed { .. })));
        assert!(backpressure.observe(SIZE, SIZE).is_some());
        // The stop thawed it: nothing left to resume.
        std::fs::write(dir.path().join("cgroup.freeze"), "0\n").unwrap();
        backpressure.after_stop();
        assert_eq!(backpressure.observe(0, SIZE), None);
    }

    #[test]
    fn a_failed_write_changes_nothing_and_is_tried_again() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let (mut backpressure, _) = Backpressure::new(&gone);
        assert_eq!(backpressure.observe(SIZE, SIZE), None, "no cgroup.freeze to write");
        assert_eq!(backpressure.observe(SIZE, SIZE), None);
        std::fs::create_dir(&gone).unwrap();
        assert!(matches!(backpressure.observe(SIZE, SIZE), Some(Change::Paused { .. })), "tried again");
        assert_eq!(freeze_value(&gone), "1");
    }
}

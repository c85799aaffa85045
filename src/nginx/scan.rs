//! When the supervisor looks for an nginx master's workers, and when the set it found counts
//! as complete. Pure: the shell's scan task reads `/proc`, hands the result and the time to
//! [`WorkerScan::scanned`], and sleeps until the time it names (or reports, or stops).
//!
//! A scan confirms something bounded (a start, a reload, a respawn after a worker death); it
//! is not a liveness poll, which the pidfds do. nginx forks its workers one by one (slowly on
//! a loaded machine), so a scan that sees new workers goes on until the set has settled.
//! Each scan is its own short task rather than a slot of the supervisor's `TimerTable`:
//! several run at once (a new master starting during an upgrade, a respawn, a reload).

use std::collections::HashSet;
use std::time::{Duration, Instant};

/// What the scan confirms, and so how long it looks and what it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkersFound {
    /// A fresh master's first workers: nginx serves.
    Ready,
    /// Workers of a new generation after HUP (the old ones are `known`).
    ReloadConfirmed,
    /// A worker died: its replacement, so that its pidfd is watched too.
    Rescan,
}

// How often /proc is read while waiting: I/O retry mechanics, they decide nothing but how
// soon a change is seen. 5 ms first (nginx forks in milliseconds), backing off to 200 ms for
// a slow start (a huge config) that need not be watched at the fast rate for long.
const FIRST_POLL: Duration = Duration::from_millis(5);
const RESCAN_POLL: Duration = Duration::from_millis(20);
const MAX_POLL: Duration = Duration::from_millis(200);
const SETTLE_POLL: Duration = Duration::from_millis(5);

/// How long a fresh master may take to start its workers: as long as it lives (its exit ends
/// the scan), bounded only so that no task outlives a master stuck before its workers.
pub const READY_FOR: Duration = Duration::from_secs(3600);
/// How long a master may take to respawn a dead worker before we stop looking (the worker's
/// pidfd then goes unwatched until the next scan; health does not depend on it).
pub const RESCAN_FOR: Duration = Duration::from_secs(3);
/// How long to wait for the number of workers the config asks for before settling for two
/// scans in a row that agree (the count may be wrong: `auto`, or a reload that changed it);
/// twice this after the first new worker, the set is taken as it is.
pub const SETTLE_FOR: Duration = Duration::from_secs(1);

/// What the shell does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Read /proc again at this time.
    ScanAt(Instant),
    /// The workers: report them.
    Found(Vec<i32>),
    /// Nothing new in time, or the master is gone: report nothing.
    GiveUp,
}

#[derive(Debug, Clone)]
enum Phase {
    /// No new worker yet; `every` backs off up to [`MAX_POLL`].
    Looking { every: Duration, give_up: Instant },
    /// New workers seen: waiting for the set to be complete.
    Settling { last: Vec<i32>, give_up: Instant },
}

#[derive(Debug, Clone)]
pub struct WorkerScan {
    why: WorkersFound,
    /// Workers already known: only others are news.
    known: HashSet<i32>,
    /// `worker_processes` of the config, when known.
    expected: Option<usize>,
    phase: Phase,
}

impl WorkerScan {
    /// A scan starting at `now`; a reload confirmation looks for `reload_timeout` (after that
    /// the policy has answered the reload already).
    pub fn new(
        why: WorkersFound,
        now: Instant,
        known: HashSet<i32>,
        expected: Option<usize>,
        reload_timeout: Duration,
    ) -> Self {
        let (every, looks_for) = match why {
            WorkersFound::Ready => (FIRST_POLL, READY_FOR),
            WorkersFound::ReloadConfirmed => (FIRST_POLL, reload_timeout),
            WorkersFound::Rescan => (RESCAN_POLL, RESCAN_FOR),
        };
        WorkerScan { why, known, expected, phase: Phase::Looking { every, give_up: now + looks_for } }
    }

    pub fn why(&self) -> WorkersFound {
        self.why
    }

    /// The workers of the master at `now` (`master_alive`: its /proc entry still exists).
    pub fn scanned(&mut self, now: Instant, pids: Vec<i32>, master_alive: bool) -> Step {
        match &mut self.phase {
            Phase::Looking { every, give_up } => {
                if pids.iter().any(|pid| !self.known.contains(pid)) {
                    if self.complete(&pids) {
                        return Step::Found(pids);
                    }
                    self.phase = Phase::Settling { last: pids, give_up: now + SETTLE_FOR };
                    return Step::ScanAt(now + SETTLE_POLL);
                }
                if !master_alive {
                    return Step::GiveUp;
                }
                let next = now + *every;
                *every = (*every * 2).min(MAX_POLL);
                if next >= *give_up { Step::GiveUp } else { Step::ScanAt(next) }
            }
            Phase::Settling { last, give_up } => {
                let stable = pids == *last;
                let (give_up, expected) = (*give_up, self.expected);
                *last = pids.clone();
                let settled = stable && (expected.is_none() || now >= give_up);
                if settled || now >= give_up + SETTLE_FOR || self.complete(&pids) {
                    Step::Found(pids)
                } else {
                    Step::ScanAt(now + SETTLE_POLL)
                }
            }
        }
    }

    /// As many workers as the config asks for; after a reload the old ones do not count.
    fn complete(&self, pids: &[i32]) -> bool {
        let counted = match self.why {
            WorkersFound::ReloadConfirmed => pids.iter().filter(|pid| !self.known.contains(pid)).count(),
            WorkersFound::Ready | WorkersFound::Rescan => pids.len(),
        };
        self.expected.is_some_and(|wanted| counted >= wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELOAD_TIMEOUT: Duration = Duration::from_secs(5);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn scan(why: WorkersFound, known: &[i32], expected: Option<usize>) -> (WorkerScan, Instant) {
        let now = Instant::now();
        (WorkerScan::new(why, now, known.iter().copied().collect(), expected, RELOAD_TIMEOUT), now)
    }

    #[test]
    fn a_fresh_master_is_looked_at_every_5ms_backing_off_to_200ms() {
        let (mut scan, start) = scan(WorkersFound::Ready, &[], Some(2));
        let mut now = start;
        let mut waits = Vec::new();
        for _ in 0..8 {
            let Step::ScanAt(next) = scan.scanned(now, vec![], true) else { panic!("still looking") };
            waits.push((next - now).as_millis());
            now = next;
        }
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 200, 200]);
    }

    #[test]
    fn the_full_count_is_found_at_once_and_a_partial_one_is_scanned_again() {
        let (mut scan, now) = scan(WorkersFound::Ready, &[], Some(2));
        assert_eq!(scan.scanned(now, vec![10, 11], true), Step::Found(vec![10, 11]));
        let (mut scan, now) = self::scan(WorkersFound::Ready, &[], Some(2));
        assert_eq!(scan.scanned(now, vec![10], true), Step::ScanAt(now + SETTLE_POLL), "nginx forks one by one");
        assert_eq!(scan.scanned(now + ms(5), vec![10], true), Step::ScanAt(now + ms(10)), "stable but short");
        assert_eq!(scan.scanned(now + ms(10), vec![10, 11], true), Step::Found(vec![10, 11]));
    }

    #[test]
    fn without_a_known_count_two_agreeing_scans_settle_it() {
        let (mut scan, now) = scan(WorkersFound::Ready, &[], None);
        assert_eq!(scan.scanned(now, vec![10], true), Step::ScanAt(now + ms(5)));
        assert_eq!(scan.scanned(now + ms(5), vec![10, 11], true), Step::ScanAt(now + ms(10)));
        assert_eq!(scan.scanned(now + ms(10), vec![10, 11], true), Step::Found(vec![10, 11]));
    }

    #[test]
    fn a_count_never_reached_settles_on_a_stable_set_after_1s_and_on_anything_after_2s() {
        // `worker_processes 4` but the machine starts 3 (or the count changed with a reload).
        let (mut scan, start) = scan(WorkersFound::Ready, &[], Some(4));
        assert!(matches!(scan.scanned(start, vec![10, 11, 12], true), Step::ScanAt(_)));
        assert!(matches!(scan.scanned(start + SETTLE_FOR - ms(1), vec![10, 11, 12], true), Step::ScanAt(_)));
        assert_eq!(scan.scanned(start + SETTLE_FOR, vec![10, 11, 12], true), Step::Found(vec![10, 11, 12]));
        // A set that keeps changing is taken as it is after twice SETTLE_FOR.
        let (mut scan, start) = self::scan(WorkersFound::Ready, &[], Some(4));
        scan.scanned(start, vec![10], true);
        assert!(matches!(scan.scanned(start + SETTLE_FOR, vec![11], true), Step::ScanAt(_)));
        assert_eq!(scan.scanned(start + 2 * SETTLE_FOR, vec![12], true), Step::Found(vec![12]));
    }

    #[test]
    fn after_a_reload_only_new_workers_count() {
        let (mut scan, now) = scan(WorkersFound::ReloadConfirmed, &[1, 2], Some(2));
        assert!(matches!(scan.scanned(now, vec![1, 2], true), Step::ScanAt(_)), "the old ones are no news");
        assert!(matches!(scan.scanned(now, vec![1, 2, 3], true), Step::ScanAt(_)), "one new of two");
        assert_eq!(scan.scanned(now + ms(5), vec![1, 2, 3, 4], true), Step::Found(vec![1, 2, 3, 4]));
    }

    #[test]
    fn a_scan_gives_up_at_its_bound_or_when_the_master_is_gone() {
        let (mut scan, start) = scan(WorkersFound::ReloadConfirmed, &[1], Some(1));
        let mut now = start;
        while let Step::ScanAt(next) = scan.scanned(now, vec![1], true) {
            assert!(next < start + RELOAD_TIMEOUT);
            now = next;
        }
        assert!(now + MAX_POLL >= start + RELOAD_TIMEOUT, "looked until reload_timeout");
        let (mut scan, start) = self::scan(WorkersFound::Rescan, &[1], Some(2));
        assert_eq!(scan.scanned(start, vec![1], true), Step::ScanAt(start + RESCAN_POLL));
        assert_eq!(scan.scanned(start + RESCAN_FOR - ms(10), vec![1], true), Step::GiveUp, "respawn bound");
        let (mut scan, start) = self::scan(WorkersFound::Ready, &[], None);
        assert_eq!(scan.scanned(start, vec![], false), Step::GiveUp);
    }
}

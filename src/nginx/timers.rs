//! The supervisor shell's own named deadlines, in one table (`crate::timers`, as quinn-proto
//! keeps its connection timers): the shell sleeps until `next` and handles what `expired`
//! hands back. The policy keeps the deadlines it decides on (restart,
//! reload, upgrade, each master's stop escalation) itself, and each worker scan its own
//! (`scan.rs`). Pure: the time is passed in, so any clock will do.

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// A watched nginx config file changed: test and reload once the writes have settled.
    ConfigDebounce,
    /// The nginx binary was replaced: upgrade once the rename has settled.
    BinaryDebounce,
    /// The next health probe is due.
    Probe,
}

impl crate::timers::TimerName for Timer {
    const ALL: &'static [Timer] = &[Timer::ConfigDebounce, Timer::BinaryDebounce, Timer::Probe];
}

/// The supervisor shell's table (see [`crate::timers::TimerTable`]).
pub type TimerTable<I> = crate::timers::TimerTable<Timer, I>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_the_earliest_and_expired_stops_what_is_due() {
        let mut timers = TimerTable::new();
        assert_eq!(timers.next(), None);
        timers.set(Timer::Probe, 30u64);
        timers.set(Timer::ConfigDebounce, 10);
        timers.set(Timer::BinaryDebounce, 20);
        assert_eq!(timers.next(), Some(10));
        assert_eq!(timers.expired(9), vec![]);
        assert_eq!(timers.expired(20), vec![Timer::ConfigDebounce, Timer::BinaryDebounce]);
        assert!(!timers.is_set(Timer::ConfigDebounce) && timers.is_set(Timer::Probe));
        assert_eq!(timers.next(), Some(30));
        assert_eq!(timers.expired(100), vec![Timer::Probe]);
        assert_eq!(timers.next(), None);
    }

    #[test]
    fn set_moves_a_deadline_and_stop_clears_it() {
        let mut timers = TimerTable::new();
        // Every write of a burst pushes the debounce out: one change, one reload.
        timers.set(Timer::ConfigDebounce, 10u64);
        timers.set(Timer::ConfigDebounce, 15);
        assert_eq!(timers.expired(12), vec![]);
        assert_eq!(timers.expired(15), vec![Timer::ConfigDebounce]);
        timers.set(Timer::Probe, 5);
        timers.stop(Timer::Probe);
        assert_eq!(timers.next(), None);
    }
}

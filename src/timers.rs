//! A table of named deadlines, as quinn-proto keeps its connection timers: one slot per
//! timer name, `next` for when to come back, and `fire` / `expired` for what is due. The
//! nginx supervisor shell (`nginx::timers::Timer`) and each VRRP router
//! (`vrrp::router::Timer`) keep theirs in one. Pure: the time is passed in, so any clock will
//! do (tests use integers or a simulated `Instant`).

/// The names of a table's timers: a fieldless enum listing each variant once in `ALL`, in the
/// order `expired` reports them.
pub trait TimerName: Copy + Eq + std::fmt::Debug + 'static {
    const ALL: &'static [Self];

    fn slot(self) -> usize {
        Self::ALL.iter().position(|&name| name == self).expect("every timer is listed in ALL")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerTable<T, I> {
    deadlines: Vec<Option<I>>,
    names: std::marker::PhantomData<T>,
}

impl<T: TimerName, I: Copy + Ord> Default for TimerTable<T, I> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: TimerName, I: Copy + Ord> TimerTable<T, I> {
    pub fn new() -> Self {
        TimerTable { deadlines: vec![None; T::ALL.len()], names: std::marker::PhantomData }
    }

    /// Sets (or moves) `timer` to `at`.
    pub fn set(&mut self, timer: T, at: I) {
        self.deadlines[timer.slot()] = Some(at);
    }

    pub fn stop(&mut self, timer: T) {
        self.deadlines[timer.slot()] = None;
    }

    pub fn get(&self, timer: T) -> Option<I> {
        self.deadlines[timer.slot()]
    }

    pub fn is_set(&self, timer: T) -> bool {
        self.get(timer).is_some()
    }

    /// Stops `timer` and says when it was set for.
    pub fn take(&mut self, timer: T) -> Option<I> {
        self.deadlines[timer.slot()].take()
    }

    /// Whether `timer` is due at `now`; if so it is stopped (a periodic one is set again by
    /// whoever handles it). Checked one by one, a handler may stop or move the later ones.
    pub fn fire(&mut self, timer: T, now: I) -> bool {
        let due = self.get(timer).is_some_and(|at| at <= now);
        if due {
            self.stop(timer);
        }
        due
    }

    /// The earliest deadline set.
    pub fn next(&self) -> Option<I> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// The timers due at `now`, in `ALL` order; they are stopped.
    pub fn expired(&mut self, now: I) -> Vec<T> {
        T::ALL.iter().copied().filter(|&timer| self.fire(timer, now)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Name {
        First,
        Second,
    }

    impl TimerName for Name {
        const ALL: &'static [Name] = &[Name::First, Name::Second];
    }

    #[test]
    fn fire_stops_only_what_is_due_and_a_handler_can_cancel_a_later_one() {
        let mut timers = TimerTable::<Name, u64>::new();
        timers.set(Name::First, 10);
        timers.set(Name::Second, 10);
        assert!(!timers.fire(Name::First, 9));
        assert!(timers.fire(Name::First, 10));
        assert!(!timers.is_set(Name::First));
        // The handler of First stopped Second: it does not fire.
        timers.stop(Name::Second);
        assert!(!timers.fire(Name::Second, 10));
        timers.set(Name::Second, 20);
        assert_eq!(timers.take(Name::Second), Some(20));
        assert_eq!(timers.next(), None);
    }
}

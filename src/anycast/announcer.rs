//! The pure core of one `[[anycast]]` table: when its addresses and routes should be in the
//! kernel. No I/O and no clock: the shell passes the time in and carries out the actions.
//!
//! - The addresses are kept on their interface from [`Input::Start`] to [`Input::Shutdown`],
//!   whatever nginx does: a withdrawn node still answers the connections it has.
//! - The routes (the announcement) follow nginx's health: added when it is
//!   [`Health::Healthy`], removed at once when it is [`Health::Unhealthy`], and kept for
//!   `restart_grace` when it is [`Health::Restarting`] with a restart within that grace
//!   ([`Health::restarts_within`]: the master crashed and is restarted in place), removed only
//!   if nginx is not healthy again by then; a restart backed off past the grace withdraws at once.
//! - [`Input::Drain`] (a planned stop) withdraws the routes for good and ends `drain` later
//!   ([`Deadline::DrainEnd`]), when [`Announcer::drained`] says nginx may be stopped.

use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::nginx::policy::Health;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The addresses as configured (kept on the interface).
    pub addresses: Vec<IpNet>,
    pub restart_grace: Duration,
    pub drain: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// nginx-ha started (after the stale routes and addresses were removed).
    Start,
    Health(Health),
    /// A route of ours to this prefix disappeared from the table (not by our doing, as far as
    /// the core can tell: it re-adds it only while it means to announce).
    RouteRemoved(IpNet),
    /// One of the addresses disappeared from the interface.
    AddressRemoved(IpNet),
    /// The kernel dropped notifications: whatever should be present is added again.
    Resync,
    TimerFired,
    /// Planned stop: withdraw, and let nginx serve for `drain` more.
    Drain,
    /// Remove everything (routes first, then the addresses).
    Shutdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    AddAddress(IpNet),
    RemoveAddress(IpNet),
    /// The route to the prefix (`IpNet::trunc` of an address).
    AddRoute(IpNet),
    RemoveRoute(IpNet),
}

/// The named timers the core may be waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// nginx was Restarting: withdraw unless it is healthy again by then.
    RestartGrace,
    /// A planned stop may go on: nginx has served the drain time after the withdrawal.
    DrainEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Running,
    Draining { until: Instant },
    Drained,
    Stopped,
}

#[derive(Debug, Clone)]
pub struct Announcer {
    settings: Settings,
    phase: Phase,
    health: Health,
    announced: bool,
    grace_until: Option<Instant>,
}

impl Announcer {
    pub fn new(settings: Settings) -> Announcer {
        Announcer { settings, phase: Phase::Idle, health: Health::Unhealthy, announced: false, grace_until: None }
    }

    /// Whether the routes are meant to be in the table now.
    pub fn announced(&self) -> bool {
        self.announced
    }

    /// Whether a drain has ended (or none is needed any more): nginx may be stopped.
    pub fn drained(&self) -> bool {
        matches!(self.phase, Phase::Drained | Phase::Stopped)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// New timings (a reload); the addresses stay as they are. A grace or drain under way
    /// keeps the deadline it had.
    pub fn set_timings(&mut self, restart_grace: Duration, drain: Duration) {
        self.settings.restart_grace = restart_grace;
        self.settings.drain = drain;
    }

    pub fn next_deadline(&self) -> Option<(Instant, Deadline)> {
        let grace = self.grace_until.map(|at| (at, Deadline::RestartGrace));
        let drain = match self.phase {
            Phase::Draining { until } => Some((until, Deadline::DrainEnd)),
            _ => None,
        };
        [grace, drain].into_iter().flatten().min_by_key(|(at, _)| *at)
    }

    fn routes(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.settings.addresses.iter().map(IpNet::trunc)
    }

    fn announce(&mut self, actions: &mut Vec<Action>) {
        if !self.announced {
            self.announced = true;
            actions.extend(self.routes().map(Action::AddRoute));
        }
    }

    fn withdraw(&mut self, actions: &mut Vec<Action>) {
        self.grace_until = None;
        if self.announced {
            self.announced = false;
            actions.extend(self.routes().map(Action::RemoveRoute));
        }
    }

    /// Whether the addresses are meant to be held now (from start to shutdown).
    pub fn holds_addresses(&self) -> bool {
        !matches!(self.phase, Phase::Idle | Phase::Stopped)
    }

    /// Feeds one input at `now`; returns what to do, in order.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        match input {
            Input::Start => {
                if self.phase == Phase::Idle {
                    self.phase = Phase::Running;
                    actions.extend(self.settings.addresses.iter().copied().map(Action::AddAddress));
                    self.follow_health(now, &mut actions);
                }
            }
            Input::Health(health) => {
                self.health = health;
                self.follow_health(now, &mut actions);
            }
            Input::RouteRemoved(prefix) => {
                if self.announced && self.routes().any(|route| route == prefix) {
                    actions.push(Action::AddRoute(prefix));
                }
            }
            Input::AddressRemoved(address) => {
                if self.holds_addresses() && self.settings.addresses.contains(&address) {
                    actions.push(Action::AddAddress(address));
                }
            }
            Input::Resync => {
                if self.holds_addresses() {
                    actions.extend(self.settings.addresses.iter().copied().map(Action::AddAddress));
                }
                if self.announced {
                    actions.extend(self.routes().map(Action::AddRoute));
                }
            }
            Input::TimerFired => {
                if self.grace_until.is_some_and(|at| at <= now) {
                    self.grace_until = None;
                    if self.health != Health::Healthy {
                        self.withdraw(&mut actions);
                    }
                }
                if let Phase::Draining { until } = self.phase
                    && until <= now
                {
                    self.phase = Phase::Drained;
                }
            }
            Input::Drain => {
                if self.phase == Phase::Running {
                    self.withdraw(&mut actions);
                    self.phase = Phase::Draining { until: now + self.settings.drain };
                } else if self.phase == Phase::Idle {
                    self.phase = Phase::Drained;
                }
            }
            Input::Shutdown => {
                self.withdraw(&mut actions);
                if self.holds_addresses() {
                    actions.extend(self.settings.addresses.iter().copied().map(Action::RemoveAddress));
                }
                self.phase = Phase::Stopped;
            }
        }
        actions
    }

    fn follow_health(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self.phase != Phase::Running {
            return;
        }
        match self.health {
            Health::Healthy => {
                self.grace_until = None;
                self.announce(actions);
            }
            // The same rule as the VRRP routers': kept through a restart within the grace.
            health if self.announced && health.restarts_within(self.settings.restart_grace) => {
                if self.grace_until.is_none() {
                    self.grace_until = Some(now + self.settings.restart_grace);
                }
            }
            Health::Restarting { .. } | Health::Unhealthy => self.withdraw(actions),
        }
    }
}

#[cfg(test)]
mod tests;

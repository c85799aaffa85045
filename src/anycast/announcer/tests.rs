use std::time::{Duration, Instant};

use super::*;

/// The first crash in a row: restarted at once.
const RESTARTING: Health = Health::Restarting { restart_in: Duration::ZERO };

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A simulated clock and one announcer for 198.19.10.1/32 and 198.19.20.1/24.
struct Sim {
    now: Instant,
    announcer: Announcer,
}

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

impl Sim {
    fn new(grace_ms: u64, drain_ms: u64) -> Sim {
        let settings = Settings {
            addresses: vec![net("198.19.10.1/32"), net("198.19.20.1/24")],
            restart_grace: ms(grace_ms),
            drain: ms(drain_ms),
        };
        Sim { now: Instant::now(), announcer: Announcer::new(settings) }
    }

    fn feed(&mut self, input: Input) -> Vec<Action> {
        self.announcer.handle(input, self.now)
    }

    /// Advances the clock by `ms`, firing every deadline on the way as the shell would.
    fn advance(&mut self, n: u64) -> Vec<Action> {
        let end = self.now + ms(n);
        let mut actions = Vec::new();
        while let Some((at, _)) = self.announcer.next_deadline().filter(|(at, _)| *at <= end) {
            self.now = at;
            actions.extend(self.feed(Input::TimerFired));
        }
        self.now = end;
        actions
    }

    fn healthy_and_announced() -> Sim {
        let mut sim = Sim::new(300, 5000);
        sim.feed(Input::Start);
        sim.feed(Input::Health(Health::Healthy));
        assert!(sim.announcer.announced());
        sim
    }
}

fn add_routes() -> Vec<Action> {
    vec![Action::AddRoute(net("198.19.10.1/32")), Action::AddRoute(net("198.19.20.0/24"))]
}

fn remove_routes() -> Vec<Action> {
    vec![Action::RemoveRoute(net("198.19.10.1/32")), Action::RemoveRoute(net("198.19.20.0/24"))]
}

#[test]
fn start_adds_the_addresses_and_announces_only_once_nginx_is_healthy() {
    let mut sim = Sim::new(300, 5000);
    assert_eq!(
        sim.feed(Input::Start),
        [Action::AddAddress(net("198.19.10.1/32")), Action::AddAddress(net("198.19.20.1/24"))]
    );
    assert!(!sim.announcer.announced());
    assert_eq!(sim.feed(Input::Health(Health::Healthy)), add_routes(), "the route is to the prefix");
    assert_eq!(sim.feed(Input::Health(Health::Healthy)), [], "announced once");
}

#[test]
fn health_before_start_waits_for_start() {
    let mut sim = Sim::new(300, 5000);
    assert_eq!(sim.feed(Input::Health(Health::Healthy)), []);
    let actions = sim.feed(Input::Start);
    assert_eq!(&actions[2..], add_routes());
}

#[test]
fn unhealthy_withdraws_at_once_and_keeps_the_addresses() {
    let mut sim = Sim::healthy_and_announced();
    assert_eq!(sim.feed(Input::Health(Health::Unhealthy)), remove_routes());
    assert!(!sim.announcer.announced());
    assert_eq!(sim.announcer.next_deadline(), None);
    assert_eq!(sim.feed(Input::Health(Health::Healthy)), add_routes(), "announced again once healthy");
}

#[test]
fn a_restart_healthy_within_the_grace_keeps_the_route() {
    let mut sim = Sim::healthy_and_announced();
    assert_eq!(sim.feed(Input::Health(RESTARTING)), []);
    let (at, name) = sim.announcer.next_deadline().unwrap();
    assert_eq!((at - sim.now, name), (ms(300), Deadline::RestartGrace));
    assert_eq!(sim.advance(299), []);
    assert_eq!(sim.feed(Input::Health(Health::Healthy)), []);
    assert_eq!(sim.announcer.next_deadline(), None, "the grace is over");
    assert_eq!(sim.advance(1000), []);
    assert!(sim.announcer.announced());
}

#[test]
fn a_restart_not_healthy_by_the_end_of_the_grace_withdraws() {
    let mut sim = Sim::healthy_and_announced();
    sim.feed(Input::Health(RESTARTING));
    assert_eq!(sim.advance(299), []);
    assert_eq!(sim.advance(1), remove_routes());
    assert!(!sim.announcer.announced());
    // Restarting repeated does not restart the grace while not announced.
    assert_eq!(sim.feed(Input::Health(RESTARTING)), []);
    assert_eq!(sim.announcer.next_deadline(), None);
}

#[test]
fn a_restart_that_fails_within_the_grace_withdraws_at_once() {
    let mut sim = Sim::healthy_and_announced();
    sim.feed(Input::Health(RESTARTING));
    sim.advance(100);
    assert_eq!(sim.feed(Input::Health(Health::Unhealthy)), remove_routes());
    assert_eq!(sim.announcer.next_deadline(), None);
}

#[test]
fn the_grace_does_not_restart_on_a_repeated_restarting() {
    let mut sim = Sim::healthy_and_announced();
    sim.feed(Input::Health(RESTARTING));
    sim.advance(200);
    sim.feed(Input::Health(RESTARTING));
    assert_eq!(sim.advance(100), remove_routes());
}

#[test]
fn a_restart_backed_off_past_the_grace_withdraws_at_once_and_one_within_keeps_the_route() {
    // A restart 200 ms after a crash is within the 300 ms grace; the third crash in a row
    // restarts after 400 ms: a crash loop, withdrawn at once as the VRRP routers give up the VIPs.
    let mut sim = Sim::healthy_and_announced();
    assert_eq!(sim.feed(Input::Health(Health::Restarting { restart_in: ms(200) })), []);
    assert_eq!(sim.feed(Input::Health(Health::Healthy)), []);
    assert_eq!(sim.feed(Input::Health(Health::Restarting { restart_in: ms(300) })), remove_routes(), "not within");
    assert_eq!(sim.announcer.next_deadline(), None);
    assert_eq!(sim.feed(Input::Health(Health::Healthy)), add_routes());
    assert_eq!(sim.feed(Input::Health(Health::Restarting { restart_in: ms(400) })), remove_routes());
}

#[test]
fn a_zero_grace_withdraws_on_restarting() {
    let mut sim = Sim::new(0, 5000);
    sim.feed(Input::Start);
    sim.feed(Input::Health(Health::Healthy));
    assert_eq!(sim.feed(Input::Health(RESTARTING)), remove_routes());
}

#[test]
fn restarting_when_never_announced_announces_nothing() {
    let mut sim = Sim::new(300, 5000);
    sim.feed(Input::Start);
    assert_eq!(sim.feed(Input::Health(RESTARTING)), []);
    assert_eq!(sim.announcer.next_deadline(), None);
}

#[test]
fn a_route_removed_behind_our_back_is_put_back_only_while_announced() {
    let mut sim = Sim::healthy_and_announced();
    assert_eq!(sim.feed(Input::RouteRemoved(net("198.19.20.0/24"))), [Action::AddRoute(net("198.19.20.0/24"))]);
    assert_eq!(sim.feed(Input::RouteRemoved(net("198.19.99.0/24"))), [], "not ours");
    sim.feed(Input::Health(Health::Unhealthy));
    assert_eq!(sim.feed(Input::RouteRemoved(net("198.19.10.1/32"))), [], "our own withdrawal");
}

#[test]
fn an_address_removed_behind_our_back_is_put_back_until_shutdown() {
    let mut sim = Sim::healthy_and_announced();
    sim.feed(Input::Health(Health::Unhealthy));
    let address = net("198.19.10.1/32");
    assert_eq!(sim.feed(Input::AddressRemoved(address)), [Action::AddAddress(address)]);
    sim.feed(Input::Shutdown);
    assert_eq!(sim.feed(Input::AddressRemoved(address)), []);
}

#[test]
fn resync_adds_what_should_be_present() {
    let mut sim = Sim::healthy_and_announced();
    let actions = sim.feed(Input::Resync);
    assert_eq!(actions.len(), 4);
    sim.feed(Input::Health(Health::Unhealthy));
    assert_eq!(sim.feed(Input::Resync).len(), 2, "the addresses only");
}

#[test]
fn drain_withdraws_first_and_ends_after_the_drain_time() {
    let mut sim = Sim::healthy_and_announced();
    assert_eq!(sim.feed(Input::Drain), remove_routes());
    assert!(!sim.announcer.drained());
    let (at, name) = sim.announcer.next_deadline().unwrap();
    assert_eq!((at - sim.now, name), (ms(5000), Deadline::DrainEnd));
    // Health no longer matters: a draining node never announces again.
    assert_eq!(sim.feed(Input::Health(Health::Unhealthy)), []);
    assert_eq!(sim.feed(Input::Health(Health::Healthy)), []);
    assert_eq!(sim.feed(Input::RouteRemoved(net("198.19.10.1/32"))), []);
    sim.advance(4999);
    assert!(!sim.announcer.drained());
    sim.advance(1);
    assert!(sim.announcer.drained());
    // The addresses go last, at shutdown.
    assert_eq!(
        sim.feed(Input::Shutdown),
        [Action::RemoveAddress(net("198.19.10.1/32")), Action::RemoveAddress(net("198.19.20.1/24"))]
    );
}

#[test]
fn drain_during_a_restart_grace_cancels_the_grace() {
    let mut sim = Sim::healthy_and_announced();
    sim.feed(Input::Health(RESTARTING));
    assert_eq!(sim.feed(Input::Drain), remove_routes());
    assert_eq!(sim.announcer.next_deadline().map(|(_, name)| name), Some(Deadline::DrainEnd));
}

#[test]
fn shutdown_without_drain_removes_routes_then_addresses() {
    let mut sim = Sim::healthy_and_announced();
    let actions = sim.feed(Input::Shutdown);
    assert_eq!(&actions[..2], remove_routes());
    assert_eq!(actions[2], Action::RemoveAddress(net("198.19.10.1/32")));
    assert!(sim.announcer.drained());
    assert_eq!(sim.feed(Input::Shutdown), [], "idempotent");
    assert_eq!(sim.feed(Input::Health(Health::Healthy)), []);
}

#[test]
fn new_timings_apply_to_the_next_grace() {
    let mut sim = Sim::healthy_and_announced();
    sim.announcer.set_timings(ms(50), ms(10));
    sim.feed(Input::Health(RESTARTING));
    assert_eq!(sim.advance(50), remove_routes());
}

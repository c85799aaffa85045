//! Router tests on a simulated clock. `Sim` wires routers together by handing each one's
//! SendAdvert payloads to the others (zero latency) and jumps from deadline to deadline.
//! Expected times are worked out by hand from RFC 5798 §6.1, e.g. v3 with a 1 s interval:
//! priority 150 → Skew_Time = 106 × 100 / 256 = 41 cs, Master_Down_Interval 3.41 s;
//! priority 100 → 60 cs, 3.60 s.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::*;

const VRID: u8 = 51;
const VIP: &str = "192.0.2.100/24";
const A: &str = "192.0.2.1";
const B: &str = "192.0.2.2";
const C: &str = "192.0.2.3";
const GROUP: IpAddr = IpAddr::V4(MULTICAST_V4);

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// The first crash in a row: restarted at once.
const RESTARTING: Health = Health::Restarting { restart_in: Duration::ZERO };

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

fn config(priority: u8) -> RouterConfig {
    RouterConfig {
        name: format!("vi_{priority}"),
        vrid: VRID,
        priority,
        version: Version::V3,
        advert_interval: secs(1),
        preempt: true,
        preempt_delay: Duration::ZERO,
        auth_pass: None,
        vips: vec![VIP.parse().unwrap()],
        failure_mode: FailureMode::Relinquish,
        codec: CodecOptions::default(),
        unicast_peers: vec![],
        restart_grace: Duration::from_millis(300),
        drain: Duration::ZERO,
    }
}

fn v2(mut config: RouterConfig) -> RouterConfig {
    config.version = Version::V2;
    config
}

fn changed(from: State, to: State, reason: Reason) -> Action {
    Action::StateChanged { from, to, reason }
}

fn sent_priorities(actions: &[Action]) -> Vec<u8> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::SendAdvert { priority, .. } => Some(*priority),
            _ => None,
        })
        .collect()
}

/// Strips payloads so action lists can be compared whole.
fn without_payloads(actions: &[Action]) -> Vec<Action> {
    actions
        .iter()
        .map(|action| match action {
            Action::SendAdvert { dst, priority, .. } => {
                Action::SendAdvert { dst: *dst, priority: *priority, payload: vec![] }
            }
            other => other.clone(),
        })
        .collect()
}

fn send(priority: u8) -> Action {
    Action::SendAdvert { dst: GROUP, priority, payload: vec![] }
}

struct Node {
    router: Router,
    primary: IpAddr,
    /// Off: the node hears nothing and nothing it sends arrives (a partition, or a crash).
    connected: bool,
}

struct Entry {
    at: Duration,
    node: usize,
    action: Action,
}

struct Sim {
    start: Instant,
    now: Instant,
    nodes: Vec<Node>,
    log: Vec<Entry>,
}

impl Sim {
    fn new(nodes: Vec<(RouterConfig, &str)>) -> Sim {
        let start = Instant::now();
        let nodes = nodes
            .into_iter()
            .map(|(config, primary)| Node { router: Router::new(config, start), primary: ip(primary), connected: true })
            .collect();
        Sim { start, now: start, nodes, log: Vec::new() }
    }

    /// Simulated time since the start.
    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// nginx reports healthy, then the router starts.
    fn start(&mut self, node: usize) -> Vec<Action> {
        self.input(node, Input::Health(Health::Healthy));
        let primary = self.nodes[node].primary;
        self.input(node, Input::Startup { primary })
    }

    fn start_all(&mut self) {
        for node in 0..self.nodes.len() {
            self.start(node);
        }
    }

    /// Hands `input` to one node now, delivers what it sends, and returns its actions.
    fn input(&mut self, node: usize, input: Input) -> Vec<Action> {
        let actions = self.nodes[node].router.handle(self.now, input);
        self.deliver(vec![(node, actions.clone())]);
        actions
    }

    /// Logs actions and delivers adverts, round after round until nobody sends any more.
    /// Everything in one round is in flight at once, so simultaneous masters do cross.
    fn deliver(&mut self, mut round: Vec<(usize, Vec<Action>)>) {
        for _ in 0..100 {
            if round.is_empty() {
                return;
            }
            let mut next = Vec::new();
            for (from, actions) in round {
                for action in actions {
                    self.log.push(Entry { at: self.elapsed(), node: from, action: action.clone() });
                    let Action::SendAdvert { dst, payload, .. } = action else {
                        continue;
                    };
                    if !self.nodes[from].connected {
                        continue;
                    }
                    let src = self.nodes[from].primary;
                    for to in 0..self.nodes.len() {
                        let receiver = &mut self.nodes[to];
                        let addressed = dst.is_multicast() || dst == receiver.primary;
                        if to == from || !receiver.connected || !addressed {
                            continue;
                        }
                        let packet = Input::Packet { src, dst, hop_limit: 255, payload: &payload };
                        next.push((to, receiver.router.handle(self.now, packet)));
                    }
                }
            }
            round = next;
        }
        panic!("adverts keep triggering adverts: storm");
    }

    /// Fires timers deadline by deadline up to `at` after the start, then sets the clock there.
    fn run_until(&mut self, at: Duration) {
        let limit = self.start + at;
        while let Some(deadline) = self.nodes.iter().filter_map(|n| n.router.next_deadline()).min() {
            if deadline > limit {
                break;
            }
            assert!(deadline >= self.now, "a deadline in the past");
            self.now = deadline;
            let due: Vec<_> = (self.nodes.iter_mut().enumerate())
                .filter(|(_, node)| node.router.next_deadline() == Some(deadline))
                .map(|(index, node)| (index, node.router.handle(deadline, Input::TimerFired)))
                .collect();
            self.deliver(due);
        }
        self.now = limit;
    }

    fn state(&self, node: usize) -> State {
        self.nodes[node].router.status().state
    }

    fn status(&self, node: usize) -> RouterStatus {
        self.nodes[node].router.status()
    }

    /// (time, new state) of every transition of `node`.
    fn transitions(&self, node: usize) -> Vec<(Duration, State)> {
        self.entries(node)
            .filter_map(|entry| match entry.action {
                Action::StateChanged { to, .. } => Some((entry.at, to)),
                _ => None,
            })
            .collect()
    }

    /// (time, priority) of every advert `node` sent.
    fn adverts(&self, node: usize) -> Vec<(Duration, u8)> {
        self.entries(node)
            .filter_map(|entry| match entry.action {
                Action::SendAdvert { priority, .. } => Some((entry.at, priority)),
                _ => None,
            })
            .collect()
    }

    fn actions_at(&self, node: usize, at: Duration) -> Vec<Action> {
        let actions: Vec<_> = self.entries(node).filter(|e| e.at == at).map(|e| e.action.clone()).collect();
        without_payloads(&actions)
    }

    fn entries(&self, node: usize) -> impl Iterator<Item = &Entry> {
        self.log.iter().filter(move |entry| entry.node == node)
    }

    fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&node| self.state(node) == State::Master).collect()
    }
}

/// A (150) and B (100), both started at 0; A is master from 3.41 s.
fn pair_with_a_master() -> Sim {
    let mut sim = Sim::new(vec![(config(150), A), (config(100), B)]);
    sim.start_all();
    sim.run_until(ms(3410));
    assert_eq!(sim.masters(), [0]);
    sim
}

#[test]
fn startup_election_goes_to_the_higher_priority_after_its_master_down_interval() {
    let mut sim = pair_with_a_master();
    sim.run_until(secs(30));
    assert_eq!(sim.transitions(0), [(ms(0), State::Backup), (ms(3410), State::Master)]);
    assert_eq!(sim.transitions(1), [(ms(0), State::Backup)]);
    assert_eq!(
        sim.actions_at(0, ms(3410)),
        [changed(State::Backup, State::Master, Reason::MasterDown), send(150), Action::AddVips, Action::Announce]
    );
    // One advert per interval, carrying our priority.
    let expected: Vec<_> = (0..27).map(|k| (ms(3410 + k * 1000), 150)).collect();
    assert_eq!(sim.adverts(0), expected);
    assert!(sim.adverts(1).is_empty());
    let backup = sim.status(1);
    assert_eq!(backup.master_address, Some(ip(A)));
    assert_eq!(backup.counters.adverts_received, 27);
    assert_eq!(sim.status(0).master_address, Some(ip(A)));
    assert_eq!(sim.status(0).counters.became_master, 1);
}

#[test]
fn backup_takes_over_exactly_master_down_interval_after_the_last_advert() {
    let mut sim = pair_with_a_master();
    sim.run_until(ms(5410)); // A's advert at 5.41 s is the last B hears
    sim.nodes[0].connected = false;
    sim.run_until(secs(20));
    assert_eq!(sim.transitions(1), [(ms(0), State::Backup), (ms(9010), State::Master)]);
    assert_eq!(
        sim.actions_at(1, ms(9010)),
        [changed(State::Backup, State::Master, Reason::MasterDown), send(100), Action::AddVips, Action::Announce]
    );
}

#[test]
fn a_planned_stop_advertises_priority_zero_and_keeps_the_vips_until_the_peer_took_over() {
    let mut sim = pair_with_a_master();
    sim.run_until(secs(5));
    let actions = sim.input(0, Input::Shutdown);
    assert_eq!(without_payloads(&actions), [send(0)], "the VIPs stay: the peer does not hold them yet");
    assert_eq!(sim.state(0), State::Master);
    sim.run_until(secs(20));
    // B takes over after its skew time, but A may still hold the VIPs: B advertises and
    // claims them; A lets them go and says so with a second priority 0; only then B adds them.
    assert_eq!(sim.transitions(1), [(ms(0), State::Backup), (ms(5600), State::Master)]);
    assert_eq!(
        sim.actions_at(0, ms(5600)),
        [changed(State::Master, State::Init, Reason::HandedOver), Action::RemoveVips, send(0), Action::Stopped]
    );
    assert_eq!(
        sim.actions_at(1, ms(5600)),
        [changed(State::Backup, State::Master, Reason::MasterDown), send(100), Action::AddVips, Action::Announce]
    );
    assert_eq!(sim.status(1).counters.priority_zero_received, 2);
    assert_eq!(sim.status(0).counters.priority_zero_sent, 2);
    assert_eq!(sim.adverts(0).last(), Some(&(ms(5600), 0)), "nothing after the release");
    assert_eq!(sim.nodes[0].router.next_deadline(), None);
}

#[test]
fn with_three_routers_the_old_master_s_release_does_not_start_a_second_takeover() {
    let mut sim = Sim::new(vec![(config(150), A), (config(100), B), (config(50), C)]);
    sim.start_all();
    sim.run_until(secs(5));
    assert_eq!(sim.masters(), [0]);
    sim.input(0, Input::Shutdown);
    sim.run_until(secs(30));
    // B (skew 0.6 s) takes over; C hears B's advert before A's release and stays BACKUP.
    assert_eq!(sim.transitions(1), [(ms(0), State::Backup), (ms(5600), State::Master)]);
    assert_eq!(sim.transitions(2), [(ms(0), State::Backup)]);
    assert_eq!(sim.masters(), [1]);
}

#[test]
fn a_planned_stop_without_a_peer_drops_the_vips_after_master_down() {
    let mut sim = Sim::new(vec![(config(150), A)]);
    sim.start_all();
    sim.run_until(secs(5));
    assert_eq!(sim.masters(), [0]);
    sim.input(0, Input::Shutdown);
    sim.run_until(secs(20));
    // Master_Down_Interval for 150: 3 s + (256 - 150) / 256 s.
    let stopped = sim.entries(0).find(|e| e.action == Action::Stopped).unwrap().at;
    assert_eq!(stopped, secs(5) + ms(3410));
    assert_eq!(sim.state(0), State::Init);
}

/// B (100) alone from 0 (master at 3.60 s, adverts at 3.60 + k), A (150) joins at 10 s.
fn a_joins_running_b(a: RouterConfig) -> Sim {
    let mut sim = Sim::new(vec![(a, A), (config(100), B)]);
    sim.start(1);
    sim.run_until(secs(10));
    assert_eq!(sim.masters(), [1]);
    sim.start(0);
    sim
}

#[test]
fn higher_priority_preempts_a_running_master() {
    let mut sim = a_joins_running_b(config(150));
    sim.run_until(secs(30));
    // A ignores B's lower adverts and its Master_Down timer from 10 s runs out.
    assert_eq!(sim.transitions(0), [(secs(10), State::Backup), (ms(13410), State::Master)]);
    // B yields and says so once at its own priority, once its VIPs are gone; A adds them
    // only then (never two holders) and announces them (clients follow at once).
    assert_eq!(
        sim.actions_at(1, ms(13410)),
        [changed(State::Master, State::Backup, Reason::PreferredPeer), Action::RemoveVips, send(100)]
    );
    assert_eq!(
        sim.actions_at(0, ms(13410)),
        [changed(State::Backup, State::Master, Reason::MasterDown), send(150), Action::AddVips, Action::Announce]
    );
    assert_eq!(sim.status(1).master_address, Some(ip(A)));
}

#[test]
fn a_preempted_master_that_does_not_confirm_loses_the_vips_after_the_claim_wait() {
    // keepalived yields silently: A waits CLAIM_WAIT for a confirmation, then adds the VIPs.
    let t0 = Instant::now();
    let mut a = started(config(150), t0);
    let lower = peer_advert(100);
    for k in 0..4 {
        a.handle(t0 + ms(900 * k), packet_from(B, &lower));
    }
    // Master_Down_Interval for 150 from t0: 3.41 s.
    let actions = a.handle(t0 + ms(3410), Input::TimerFired);
    assert_eq!(without_payloads(&actions), [changed(State::Backup, State::Master, Reason::MasterDown), send(150)]);
    assert_eq!(a.next_deadline(), Some(t0 + ms(3410) + CLAIM_WAIT));
    assert!(a.handle(t0 + ms(3410), Input::VipsMissing).is_empty(), "not ours yet");
    let actions = a.handle(t0 + ms(3410) + CLAIM_WAIT, Input::TimerFired);
    assert_eq!(actions, [Action::AddVips, Action::Announce]);
}

#[test]
fn a_preempted_master_s_periodic_advert_crossing_the_claim_is_no_yield() {
    // A's master-down runs out just as B's periodic advert is due: B's advert crosses A's
    // claim. B still holds the VIPs then; only its yield, after it heard A, hands them over.
    let t0 = Instant::now();
    let mut a = started(config(150), t0);
    let lower = peer_advert(100);
    for k in 0..3 {
        a.handle(t0 + ms(410) + ms(1000 * k), packet_from(B, &lower));
    }
    // Master_Down from t0: 3.41 s, when B's next periodic advert is due too.
    let actions = a.handle(t0 + ms(3410), Input::TimerFired);
    assert_eq!(without_payloads(&actions), [changed(State::Backup, State::Master, Reason::MasterDown), send(150)]);
    assert!(a.handle(t0 + ms(3412), packet_from(B, &lower)).is_empty(), "B's periodic advert, sent before ours");
    let actions = a.handle(t0 + ms(3413), packet_from(B, &lower));
    assert_eq!(actions, [Action::AddVips, Action::Announce], "B's yield");
}

#[test]
fn a_backup_whose_master_vanished_takes_the_vips_at_once() {
    // The master died (no priority 0, no advert for a Master_Down_Interval): nobody holds
    // the VIPs, nothing to wait for.
    let t0 = Instant::now();
    let mut a = started(config(100), t0);
    a.handle(t0, packet_from(B, &peer_advert(200)));
    let actions = a.handle(t0 + ms(3600), Input::TimerFired);
    assert_eq!(
        without_payloads(&actions),
        [changed(State::Backup, State::Master, Reason::MasterDown), send(100), Action::AddVips, Action::Announce]
    );
}

#[test]
fn a_single_priority_zero_from_a_keepalived_master_costs_at_most_the_claim_wait() {
    // keepalived's stop sends priority 0 and removes its VIPs, without a second one: the
    // backup claims and adds the VIPs CLAIM_WAIT after its skew time.
    let t0 = Instant::now();
    let mut a = started(config(100), t0);
    a.handle(t0, packet_from(B, &peer_advert(200)));
    a.handle(t0 + ms(500), packet_from(B, &peer_advert(0)));
    let skew = ms(600);
    let actions = a.handle(t0 + ms(500) + skew, Input::TimerFired);
    assert!(!actions.contains(&Action::AddVips));
    let actions = a.handle(t0 + ms(500) + skew + CLAIM_WAIT, Input::TimerFired);
    assert_eq!(actions, [Action::AddVips, Action::Announce]);
}

#[test]
fn without_preempt_a_higher_priority_backup_leaves_the_master_alone() {
    let mut sim = a_joins_running_b(RouterConfig { preempt: false, ..config(150) });
    sim.run_until(secs(60));
    assert_eq!(sim.transitions(0), [(secs(10), State::Backup)]);
    assert_eq!(sim.masters(), [1]);
    assert_eq!(sim.status(0).master_address, Some(ip(B)));
}

#[test]
fn preempt_delay_accepts_a_lower_master_until_it_has_passed() {
    let mut sim = a_joins_running_b(RouterConfig { preempt_delay: secs(10), ..config(150) });
    sim.run_until(secs(40));
    // B's advert at 19.60 s still falls in the delay (10 s..20 s) and restarts the timer;
    // the one at 20.60 s does not: 19.60 + 3.41.
    assert_eq!(sim.transitions(0), [(secs(10), State::Backup), (ms(23010), State::Master)]);
    assert_eq!(sim.masters(), [0]);
}

#[test]
fn preempt_delay_counts_again_after_a_restart() {
    let mut sim = a_joins_running_b(RouterConfig { preempt_delay: secs(10), ..config(150) });
    sim.run_until(secs(30));
    sim.input(0, Input::Shutdown);
    sim.run_until(secs(40));
    assert_eq!(sim.masters(), [1]);
    sim.start(0);
    sim.run_until(secs(60));
    // B is master from 30.60 s; its advert at 49.60 s is the last A accepts.
    assert_eq!(sim.transitions(0)[3..], [(secs(40), State::Backup), (ms(53010), State::Master)]);
}

#[test]
fn preempt_delay_does_not_apply_again_after_a_fault() {
    let mut sim = a_joins_running_b(RouterConfig { preempt_delay: secs(10), ..config(150) });
    sim.run_until(secs(30));
    sim.input(0, Input::Health(Health::Unhealthy));
    sim.run_until(secs(40));
    sim.input(0, Input::Health(Health::Healthy));
    sim.run_until(secs(60));
    assert_eq!(sim.transitions(0)[3..], [(secs(40), State::Backup), (ms(43410), State::Master)]);
}

#[test]
fn address_owner_takes_over_at_once_and_always_preempts() {
    let mut sim = a_joins_running_b(RouterConfig { preempt: false, ..config(255) });
    assert_eq!(
        sim.actions_at(0, secs(10)),
        [
            changed(State::Init, State::Master, Reason::Startup),
            send(255),
            Action::AddVips,
            Action::Announce,
            // B's last advert as it yields: A announces again.
            send(255),
            Action::Announce
        ]
    );
    assert_eq!(sim.transitions(1).last(), Some(&(secs(10), State::Backup)));
    sim.run_until(secs(30));
    assert_eq!(sim.masters(), [0]);
}

#[test]
fn equal_priorities_tie_break_on_the_higher_primary_address() {
    // Both orders, so that neither node index nor firing order decides.
    for (first, second) in [(A, B), (B, A)] {
        let mut sim = Sim::new(vec![(config(100), first), (config(100), second)]);
        sim.start_all();
        sim.run_until(secs(20));
        let (low, high) = if first == A { (0, 1) } else { (1, 0) };
        // Both time out together, both become master, and the lower address yields.
        assert_eq!(
            sim.transitions(low),
            [(ms(0), State::Backup), (ms(3600), State::Master), (ms(3600), State::Backup)]
        );
        assert_eq!(sim.transitions(high), [(ms(0), State::Backup), (ms(3600), State::Master)]);
        assert_eq!(sim.masters(), [high]);
    }
}

#[test]
fn split_brain_heals_within_one_advert() {
    let mut sim = pair_with_a_master();
    sim.run_until(secs(5));
    sim.nodes[1].connected = false;
    sim.run_until(secs(10));
    // B's last advert from A was at 4.41 s: master at 8.01 s, alongside A.
    assert_eq!(sim.masters(), [0, 1]);
    sim.nodes[1].connected = true;
    sim.run_until(secs(20));
    // B's advert at 10.01 s reaches A, which re-asserts at once; B yields.
    assert_eq!(sim.transitions(1)[1..], [(ms(8010), State::Master), (ms(10010), State::Backup)]);
    assert!(sim.adverts(0).contains(&(ms(10010), 150)));
    // The re-assertion restarted A's advert timer.
    assert!(sim.adverts(0).contains(&(ms(11010), 150)));
    assert!(!sim.adverts(0).contains(&(ms(10410), 150)));
    assert_eq!(sim.masters(), [0]);
}

#[test]
fn v3_backup_adopts_the_masters_advert_interval() {
    let a = RouterConfig { advert_interval: secs(2), ..config(150) };
    let mut sim = Sim::new(vec![(a, A), (config(100), B)]);
    sim.start_all();
    sim.run_until(ms(10820));
    // A: 3 × 200 + 106 × 200 / 256 = 682 cs. B times out first (3.60 s), A preempts it.
    assert_eq!(sim.transitions(0), [(ms(0), State::Backup), (ms(6820), State::Master)]);
    assert_eq!(sim.transitions(1), [(ms(0), State::Backup), (ms(3600), State::Master), (ms(6820), State::Backup)]);
    assert_eq!(sim.status(1).master_advert_interval, secs(2));
    sim.nodes[0].connected = false;
    sim.run_until(secs(30));
    // B with A's interval: 3 × 200 + 156 × 200 / 256 = 721 cs after A's advert at 10.82 s.
    assert_eq!(sim.transitions(1).last(), Some(&(ms(18030), State::Master)));
    assert_eq!(sim.status(1).master_advert_interval, secs(1));
}

#[test]
fn v2_skew_is_independent_of_the_interval_and_a_different_interval_is_dropped() {
    let a = RouterConfig { advert_interval: secs(2), ..v2(config(150)) };
    let mut sim = Sim::new(vec![(a, A), (v2(config(100)), B)]);
    sim.start_all();
    sim.run_until(secs(20));
    // RFC 3768 §6.1: 3 × interval + (256 - priority) / 256 s.
    assert_eq!(sim.transitions(1), [(ms(0), State::Backup), (Duration::from_micros(3_609_375), State::Master)]);
    assert_eq!(sim.transitions(0), [(ms(0), State::Backup), (Duration::from_nanos(6_414_062_500), State::Master)]);
    // Neither accepts the other's adverts: both stay master.
    assert_eq!(sim.masters(), [0, 1]);
    assert!(sim.status(0).counters.interval_errors > 0);
    assert_eq!(sim.status(0).counters.adverts_received, 0);
    let notice = Notice::IntervalMismatch { from: ip(A), advertised: secs(2), ours: secs(1) };
    assert!(sim.entries(1).any(|entry| entry.action == Action::Notice(notice.clone())));
}

#[test]
fn unhealthy_nginx_relinquishes_to_fault_and_comes_back() {
    let mut sim = pair_with_a_master();
    sim.run_until(secs(10));
    let actions = sim.input(0, Input::Health(Health::Unhealthy));
    assert_eq!(
        without_payloads(&actions),
        [changed(State::Master, State::Fault, Reason::NginxUnhealthy), send(0), Action::RemoveVips, send(0)]
    );
    assert_eq!(sim.nodes[0].router.next_deadline(), None);
    sim.run_until(secs(20));
    assert_eq!(sim.transitions(1).last(), Some(&(ms(10600), State::Master)));
    // The second priority 0 said A's VIPs are gone: B adds them at once, no claim.
    assert_eq!(
        sim.actions_at(1, ms(10600)),
        [changed(State::Backup, State::Master, Reason::MasterDown), send(100), Action::AddVips, Action::Announce]
    );
    // FAULT sends nothing and ignores B's adverts.
    assert_eq!(sim.adverts(0).last(), Some(&(secs(10), 0)));
    assert_eq!(sim.status(0).counters.adverts_received, 0);

    let actions = sim.input(0, Input::Health(Health::Healthy));
    assert_eq!(actions, [changed(State::Fault, State::Backup, Reason::NginxHealthy)]);
    sim.run_until(secs(30));
    assert_eq!(sim.transitions(0).last(), Some(&(ms(23410), State::Master)));
    assert_eq!(sim.masters(), [0]);
}

#[test]
fn a_crash_restarted_within_the_grace_keeps_the_vips_and_the_peer_in_backup() {
    let mut sim = pair_with_a_master();
    sim.run_until(secs(10));
    assert!(sim.input(0, Input::Health(RESTARTING)).is_empty());
    assert_eq!(sim.nodes[0].router.next_deadline(), Some(sim.start + secs(10) + ms(300)));
    sim.run_until(secs(10) + ms(150));
    assert!(sim.input(0, Input::Health(Health::Healthy)).is_empty());
    sim.run_until(secs(30));
    assert_eq!(sim.transitions(0).last(), Some(&(ms(3410), State::Master)));
    assert_eq!(sim.transitions(1).last(), Some(&(ms(0), State::Backup)));
    assert!(!sim.entries(0).any(|e| e.action == Action::RemoveVips));
    // Adverts went on through the restart, at full priority.
    assert!(sim.adverts(0).iter().all(|&(_, priority)| priority == 150));
}

#[test]
fn a_crash_not_serving_again_by_the_end_of_the_grace_relinquishes() {
    let mut sim = pair_with_a_master();
    sim.run_until(secs(10));
    sim.input(0, Input::Health(RESTARTING));
    // A second report while restarting does not extend the grace.
    sim.run_until(secs(10) + ms(200));
    sim.input(0, Input::Health(RESTARTING));
    sim.run_until(secs(11));
    let fault = sim.entries(0).find(|e| matches!(e.action, Action::StateChanged { to: State::Fault, .. })).unwrap();
    assert_eq!(fault.at, secs(10) + ms(300));
    assert_eq!(fault.action, changed(State::Master, State::Fault, Reason::RestartGraceOver));
    sim.run_until(secs(20));
    assert_eq!(sim.masters(), [1]);
}

#[test]
fn a_crash_whose_restart_is_backed_off_past_the_grace_acts_at_once() {
    // 300 ms grace. A restart 200 ms after a crash (a longer backoff than the policy's, or a
    // shorter grace's): kept.
    let mut sim = pair_with_a_master();
    sim.run_until(secs(10));
    assert!(sim.input(0, Input::Health(Health::Restarting { restart_in: ms(200) })).is_empty());
    sim.run_until(secs(10) + ms(250));
    assert!(sim.input(0, Input::Health(Health::Healthy)).is_empty());
    // The third after 400 ms: a crash loop, the peer takes over now rather than at the grace's end.
    sim.run_until(secs(12));
    let actions = sim.input(0, Input::Health(Health::Restarting { restart_in: ms(400) }));
    assert_eq!(actions[0], changed(State::Master, State::Fault, Reason::CrashLoop));
    // Equal to the grace is not within it: nothing would be left for nginx to start in.
    let mut sim = pair_with_a_master();
    sim.run_until(secs(10));
    let actions = sim.input(0, Input::Health(Health::Restarting { restart_in: ms(300) }));
    assert_eq!(actions[0], changed(State::Master, State::Fault, Reason::CrashLoop));
    sim.run_until(secs(20));
    assert_eq!(sim.masters(), [1]);
}

#[test]
fn a_hang_or_a_zero_grace_acts_at_once() {
    let mut sim = Sim::new(vec![(RouterConfig { restart_grace: Duration::ZERO, ..config(150) }, A), (config(100), B)]);
    sim.start_all();
    sim.run_until(secs(10));
    assert_eq!(sim.masters(), [0]);
    let actions = sim.input(0, Input::Health(RESTARTING));
    assert_eq!(actions[0], changed(State::Master, State::Fault, Reason::NginxUnhealthy));

    let mut sim = pair_with_a_master();
    sim.run_until(secs(10));
    let actions = sim.input(0, Input::Health(Health::Unhealthy));
    assert_eq!(actions[0], changed(State::Master, State::Fault, Reason::NginxUnhealthy));
}

#[test]
fn tracked_links_down_count_like_nginx_failing() {
    let mut sim = pair_with_a_master();
    let down = |name: &str| Input::TrackedLink { name: name.into(), up: false };
    let up = |name: &str| Input::TrackedLink { name: name.into(), up: true };
    let actions = sim.input(0, down("eth1"));
    assert_eq!(
        without_payloads(&actions),
        [changed(State::Master, State::Fault, Reason::TrackedLinkDown), send(0), Action::RemoveVips, send(0)]
    );
    assert!(sim.input(0, down("eth2")).is_empty());
    assert!(sim.input(0, up("eth1")).is_empty(), "eth2 is still down");
    assert!(sim.input(0, Input::Health(Health::Healthy)).is_empty());
    assert_eq!(sim.input(0, up("eth2")), [changed(State::Fault, State::Backup, Reason::TrackedLinkUp)]);
}

#[test]
fn demoted_master_loses_to_a_preempting_peer_and_wins_back_when_healthy() {
    let a = RouterConfig { failure_mode: FailureMode::Demote { weight: 60 }, ..config(150) };
    let mut sim = Sim::new(vec![(a, A), (config(100), B)]);
    sim.start_all();
    sim.run_until(secs(10));
    assert!(sim.input(0, Input::Health(Health::Unhealthy)).is_empty());
    let status = sim.status(0);
    assert_eq!((status.state, status.priority, status.effective_priority), (State::Master, 150, 90));
    sim.run_until(secs(20));
    // A keeps advertising, now with 90, which B ignores: B's timer from A's advert at
    // 9.41 s runs out at 13.01 s, and A yields to B's 100.
    assert!(sim.adverts(0).contains(&(ms(10410), 90)));
    assert_eq!(sim.transitions(1).last(), Some(&(ms(13010), State::Master)));
    assert_eq!(
        sim.actions_at(0, ms(13010)),
        [changed(State::Master, State::Backup, Reason::PreferredPeer), Action::RemoveVips, send(90)]
    );

    assert!(sim.input(0, Input::Health(Health::Healthy)).is_empty());
    assert_eq!(sim.status(0).effective_priority, 150);
    sim.run_until(secs(30));
    // A's timer was last restarted by B's advert at 19.01 s while A had 90:
    // 3 × 100 + 166 × 100 / 256 = 364 cs.
    assert_eq!(sim.transitions(0).last(), Some(&(ms(22650), State::Master)));
    assert_eq!(sim.masters(), [0]);
}

#[test]
fn restored_owner_preempts_even_without_preempt() {
    let a = RouterConfig { preempt: false, failure_mode: FailureMode::Demote { weight: 200 }, ..config(255) };
    let mut sim = Sim::new(vec![(a, A), (config(100), B)]);
    sim.start(1);
    sim.run_until(secs(10));
    sim.input(0, Input::TrackedLink { name: "eth1".into(), up: false });
    sim.start(0);
    sim.run_until(secs(20));
    assert_eq!(sim.transitions(0), [(secs(10), State::Backup)]);
    sim.input(0, Input::TrackedLink { name: "eth1".into(), up: true });
    sim.run_until(secs(30));
    // Back at 255, A ignores B's adverts from 20.60 s on; its timer from B's advert at
    // 19.60 s (set while at 55: 3 × 100 + 201 × 100 / 256 = 378 cs) runs out.
    assert_eq!(sim.transitions(0).last(), Some(&(ms(23380), State::Master)));
}

#[test]
fn demoted_master_stays_master_when_the_peer_does_not_preempt() {
    let a = RouterConfig { failure_mode: FailureMode::Demote { weight: 60 }, ..config(150) };
    let b = RouterConfig { preempt: false, ..config(100) };
    let mut sim = Sim::new(vec![(a, A), (b, B)]);
    sim.start_all();
    sim.run_until(secs(10));
    sim.input(0, Input::Health(Health::Unhealthy));
    sim.run_until(secs(60));
    assert_eq!(sim.masters(), [0]);
    assert_eq!(sim.adverts(0).last(), Some(&(ms(59410), 90)));
}

#[test]
fn demotion_never_goes_below_one() {
    let a = RouterConfig { failure_mode: FailureMode::Demote { weight: 200 }, ..config(150) };
    let mut sim = Sim::new(vec![(a, A)]);
    sim.start(0);
    sim.input(0, Input::TrackedLink { name: "eth1".into(), up: false });
    assert_eq!(sim.status(0).effective_priority, 1);
    assert_eq!(sim.state(0), State::Backup);
}

#[test]
fn interface_down_faults_without_a_priority_zero_advert() {
    let mut sim = pair_with_a_master();
    sim.run_until(secs(10));
    let actions = sim.input(0, Input::InterfaceLink { up: false });
    assert_eq!(actions, [changed(State::Master, State::Fault, Reason::InterfaceDown), Action::RemoveVips]);
    sim.nodes[0].connected = false;
    sim.run_until(secs(20));
    assert_eq!(sim.transitions(1).last(), Some(&(ms(13010), State::Master)));
    sim.nodes[0].connected = true;
    let actions = sim.input(0, Input::InterfaceLink { up: true });
    assert_eq!(actions, [changed(State::Fault, State::Backup, Reason::InterfaceUp)]);
    sim.run_until(secs(30));
    assert_eq!(sim.transitions(0).last(), Some(&(ms(23410), State::Master)));
}

#[test]
fn shutdown_from_backup_is_silent_and_restart_works() {
    let mut sim = pair_with_a_master();
    sim.run_until(secs(5));
    assert_eq!(sim.input(1, Input::Shutdown), [changed(State::Backup, State::Init, Reason::Shutdown), Action::Stopped]);
    assert_eq!(sim.nodes[1].router.next_deadline(), None);
    let received = sim.status(1).counters.adverts_received;
    sim.run_until(secs(10));
    assert_eq!(sim.status(1).counters.adverts_received, received, "INIT ignores adverts");
    assert_eq!(sim.input(1, Input::Startup { primary: ip(B) }), [changed(State::Init, State::Backup, Reason::Startup)]);
    sim.run_until(secs(20));
    assert_eq!(sim.status(1).master_address, Some(ip(A)));
}

#[test]
fn missing_vips_are_restored_only_by_the_master() {
    let mut sim = pair_with_a_master();
    assert_eq!(sim.input(0, Input::VipsMissing), [Action::AddVips, Action::Announce]);
    assert!(sim.input(1, Input::VipsMissing).is_empty());
}

#[test]
fn new_master_announces_again_one_second_later() {
    let mut sim = pair_with_a_master();
    sim.run_until(secs(30));
    let announced: Vec<_> = sim.entries(0).filter(|e| e.action == Action::Announce).map(|e| e.at).collect();
    assert_eq!(announced, [ms(3410), ms(4410)]);
}

#[test]
fn stays_in_init_until_nginx_is_first_healthy() {
    let t0 = Instant::now();
    let mut router = Router::new(config(255), t0);
    assert!(router.handle(t0, Input::Startup { primary: ip(A) }).is_empty());
    assert!(router.handle(t0, Input::Health(Health::Unhealthy)).is_empty());
    assert_eq!(router.next_deadline(), None);
    assert!(router.handle(t0 + secs(60), Input::TimerFired).is_empty());
    let advert = peer_advert(100);
    assert!(router.handle(t0 + secs(60), packet_from(B, &advert)).is_empty());
    assert_eq!(router.status().state, State::Init);
    assert_eq!(router.status().counters, Counters::default());

    let actions = router.handle(t0 + secs(61), Input::Health(Health::Healthy));
    assert_eq!(actions[0], changed(State::Init, State::Master, Reason::NginxHealthy));
}

#[test]
fn health_before_startup_starts_as_backup() {
    let t0 = Instant::now();
    let mut router = Router::new(config(100), t0);
    assert!(router.handle(t0, Input::Health(Health::Healthy)).is_empty());
    assert_eq!(router.next_deadline(), None);
    let actions = router.handle(t0, Input::Startup { primary: ip(A) });
    assert_eq!(actions, [changed(State::Init, State::Backup, Reason::Startup)]);
    assert_eq!(router.next_deadline(), Some(t0 + ms(3600)));
    assert_eq!(router.status().master_advert_interval, secs(1));
}

#[test]
fn interface_down_before_the_first_healthy_report_stays_init_then_faults() {
    let t0 = Instant::now();
    let mut router = Router::new(config(100), t0);
    router.handle(t0, Input::Startup { primary: ip(A) });
    assert!(router.handle(t0, Input::InterfaceLink { up: false }).is_empty());
    assert_eq!(
        router.handle(t0, Input::Health(Health::Healthy)),
        [changed(State::Init, State::Fault, Reason::NginxHealthy)]
    );
    assert_eq!(
        router.handle(t0, Input::InterfaceLink { up: true }),
        [changed(State::Fault, State::Backup, Reason::InterfaceUp)]
    );
}

/// A started, healthy router at A.
fn started(config: RouterConfig, t0: Instant) -> Router {
    let mut router = Router::new(config, t0);
    router.handle(t0, Input::Health(Health::Healthy));
    router.handle(t0, Input::Startup { primary: ip(A) });
    router
}

fn advert(version: Version, priority: u8) -> Advert {
    Advert { version, vrid: VRID, priority, interval_cs: 100, auth: Auth::None, addresses: vec![ip("192.0.2.100")] }
}

/// An advert from B to the multicast group as a v3 peer would send it.
fn peer_advert(priority: u8) -> Vec<u8> {
    packet::encode(&advert(Version::V3, priority), ip(B), GROUP, &CodecOptions::default())
}

fn packet_from<'a>(src: &str, payload: &'a [u8]) -> Input<'a> {
    Input::Packet { src: ip(src), dst: GROUP, hop_limit: 255, payload }
}

#[test]
fn owner_starts_as_master_and_keeps_its_timers() {
    let t0 = Instant::now();
    let mut router = Router::new(config(255), t0);
    router.handle(t0, Input::Health(Health::Healthy));
    let actions = router.handle(t0, Input::Startup { primary: ip(A) });
    assert_eq!(
        without_payloads(&actions),
        [changed(State::Init, State::Master, Reason::Startup), send(255), Action::AddVips, Action::Announce]
    );
    let Action::SendAdvert { payload, .. } = &actions[1] else { unreachable!() };
    let sent = packet::decode(payload, ip(A), GROUP, &CodecOptions::default()).unwrap();
    assert_eq!(sent, advert(Version::V3, 255));

    assert_eq!(router.next_deadline(), Some(t0 + secs(1)));
    let actions = router.handle(t0 + secs(1), Input::TimerFired);
    assert_eq!(without_payloads(&actions), [Action::Announce, send(255)]);
    assert_eq!(router.next_deadline(), Some(t0 + secs(2)));
    assert!(router.handle(t0 + ms(1500), Input::TimerFired).is_empty(), "nothing due yet");
}

#[test]
fn master_answers_priority_zero_and_lower_priorities_with_an_advert_at_once() {
    let t0 = Instant::now();
    let mut router = started(config(150), t0);
    router.handle(t0 + ms(3410), Input::TimerFired);
    assert_eq!(router.status().state, State::Master);

    let at = t0 + ms(3700);
    let payload = peer_advert(0);
    assert_eq!(without_payloads(&router.handle(at, packet_from(B, &payload))), [send(150)]);
    // Another master (a healed partition): clients may have followed it, so announce too.
    let payload = peer_advert(100);
    assert_eq!(without_payloads(&router.handle(at, packet_from(B, &payload))), [send(150), Action::Announce]);
    // Equal priority from a lower address than ours (192.0.2.1).
    let payload = packet::encode(&advert(Version::V3, 150), ip("192.0.2.0"), GROUP, &CodecOptions::default());
    assert_eq!(without_payloads(&router.handle(at, packet_from("192.0.2.0", &payload))), [send(150), Action::Announce]);
    // The Adver_Timer restarted with the last of them; only the reannouncement is due before.
    assert_eq!(without_payloads(&router.handle(t0 + ms(4410), Input::TimerFired)), [Action::Announce]);
    assert_eq!(router.next_deadline(), Some(at + secs(1)));

    // Equal priority from a higher address wins.
    let later = t0 + ms(4500);
    let payload = packet::encode(&advert(Version::V3, 150), ip(C), GROUP, &CodecOptions::default());
    let actions = router.handle(later, packet_from(C, &payload));
    assert_eq!(
        without_payloads(&actions),
        [changed(State::Master, State::Backup, Reason::PreferredPeer), Action::RemoveVips, send(150)]
    );
    assert_eq!(router.status().master_address, Some(ip(C)));
    assert_eq!(router.next_deadline(), Some(later + ms(3410)));
}

#[test]
fn backup_sets_skew_time_on_priority_zero() {
    let t0 = Instant::now();
    let mut router = started(config(100), t0);
    let advert = peer_advert(120);
    router.handle(t0 + secs(1), packet_from(B, &advert));
    assert_eq!(router.status().master_address, Some(ip(B)));
    let advert = peer_advert(0);
    assert!(router.handle(t0 + secs(2), packet_from(B, &advert)).is_empty());
    assert_eq!(router.next_deadline(), Some(t0 + secs(2) + ms(600)));
    assert_eq!(router.status().master_address, None);
}

/// Feeds one packet to a fresh BACKUP router and says whether it was accepted as a master
/// advert (Master_Down timer restarted), returning the router for its counters.
fn deliver_to_backup(config: RouterConfig, input: Input) -> (bool, Vec<Action>, Router) {
    let t0 = Instant::now();
    let mut router = started(config, t0);
    let before = router.next_deadline();
    let actions = router.handle(t0 + secs(1), input);
    let accepted = router.next_deadline() != before;
    (accepted, actions, router)
}

fn counters_after(config: RouterConfig, input: Input) -> (bool, Vec<Action>, Counters) {
    let (accepted, actions, router) = deliver_to_backup(config, input);
    (accepted, actions, router.status().counters)
}

#[test]
fn accepts_a_valid_advert() {
    let advert = peer_advert(120);
    let (accepted, actions, counters) = counters_after(config(100), packet_from(B, &advert));
    assert!(accepted);
    assert!(actions.is_empty());
    assert_eq!(counters, Counters { adverts_received: 1, ..Counters::default() });
}

#[test]
fn drops_multicast_adverts_whose_ttl_is_not_255() {
    let advert = peer_advert(120);
    let input = Input::Packet { src: ip(B), dst: GROUP, hop_limit: 254, payload: &advert };
    let (accepted, _, counters) = counters_after(config(100), input);
    assert!(!accepted);
    assert_eq!(counters, Counters { ttl_errors: 1, ..Counters::default() });
}

#[test]
fn unicast_adverts_are_accepted_with_any_ttl_from_known_peers_only() {
    let unicast = RouterConfig { unicast_peers: vec![ip(B)], ..config(100) };
    let to_us = |src: &str| packet::encode(&advert(Version::V3, 120), ip(src), ip(A), &CodecOptions::default());
    let from_b = to_us(B);
    let input = Input::Packet { src: ip(B), dst: ip(A), hop_limit: 64, payload: &from_b };
    let (accepted, _, counters) = counters_after(unicast.clone(), input);
    assert!(accepted);
    assert_eq!(counters.adverts_received, 1);

    let from_c = to_us(C);
    let input = Input::Packet { src: ip(C), dst: ip(A), hop_limit: 255, payload: &from_c };
    let (accepted, actions, counters) = counters_after(unicast, input);
    assert!(!accepted);
    assert_eq!(actions, [Action::Notice(Notice::UnknownPeer { from: ip(C) })]);
    assert_eq!(counters, Counters { unknown_peer_errors: 1, ..Counters::default() });
}

#[test]
fn drops_adverts_with_a_bad_checksum() {
    let mut advert = peer_advert(120);
    advert[2] ^= 0x40;
    let (accepted, _, counters) = counters_after(config(100), packet_from(B, &advert));
    assert!(!accepted);
    assert_eq!(counters, Counters { checksum_errors: 1, ..Counters::default() });
}

#[test]
fn drops_other_versions_and_types() {
    let v2_advert = packet::encode(&advert(Version::V2, 120), ip(B), GROUP, &CodecOptions::default());
    let (_, _, counters) = counters_after(config(100), packet_from(B, &v2_advert));
    assert_eq!(counters, Counters { version_errors: 1, ..Counters::default() });

    let mut wrong_type = peer_advert(120);
    wrong_type[0] = 0x32;
    let (_, _, counters) = counters_after(config(100), packet_from(B, &wrong_type));
    assert_eq!(counters, Counters { type_errors: 1, ..Counters::default() });
}

#[test]
fn ignores_other_virtual_routers_silently() {
    let other = Advert { vrid: VRID + 1, ..advert(Version::V3, 120) };
    let payload = packet::encode(&other, ip(B), GROUP, &CodecOptions::default());
    let (accepted, actions, counters) = counters_after(config(100), packet_from(B, &payload));
    assert!(!accepted);
    assert!(actions.is_empty());
    assert_eq!(counters, Counters { other_vrid: 1, ..Counters::default() });
}

#[test]
fn malformed_adverts_count_as_ours_only_with_our_vrid() {
    // v2 has no pseudo-header, so appended zeros keep the checksum valid but break the length.
    let malformed = |vrid: u8| {
        let advert = Advert { vrid, ..advert(Version::V2, 120) };
        let mut payload = packet::encode(&advert, ip(B), GROUP, &CodecOptions::default());
        payload.extend_from_slice(&[0, 0]);
        payload
    };
    let ours = malformed(VRID);
    let (_, _, counters) = counters_after(v2(config(100)), packet_from(B, &ours));
    assert_eq!(counters, Counters { malformed_errors: 1, ..Counters::default() });
    let theirs = malformed(VRID + 1);
    let (_, _, counters) = counters_after(v2(config(100)), packet_from(B, &theirs));
    assert_eq!(counters, Counters { other_vrid: 1, ..Counters::default() });
    let (_, _, counters) = counters_after(config(100), packet_from(B, &[0x31, VRID]));
    assert_eq!(counters, Counters { malformed_errors: 1, ..Counters::default() });
}

#[test]
fn v2_authentication_must_match() {
    let with_pass = RouterConfig { auth_pass: Some(*b"secret\0\0"), ..v2(config(100)) };
    let v2_advert = |auth: Auth| {
        packet::encode(&Advert { auth, ..advert(Version::V2, 120) }, ip(B), GROUP, &CodecOptions::default())
    };
    let rejected = [
        (with_pass.clone(), v2_advert(Auth::None)),
        (with_pass.clone(), v2_advert(Auth::Simple(*b"Secret\0\0"))),
        (v2(config(100)), v2_advert(Auth::Simple(*b"secret\0\0"))),
    ];
    for (config, payload) in rejected {
        let (accepted, actions, counters) = counters_after(config, packet_from(B, &payload));
        assert!(!accepted);
        assert_eq!(actions, [Action::Notice(Notice::AuthMismatch { from: ip(B) })]);
        assert_eq!(counters, Counters { auth_errors: 1, ..Counters::default() });
    }
    let good = v2_advert(Auth::Simple(*b"secret\0\0"));
    let (accepted, _, _) = counters_after(with_pass.clone(), packet_from(B, &good));
    assert!(accepted);

    // Authentication type 2 (IPsec AH). Raising byte 4 by 2 adds 0x0200 to the word at 4..6;
    // lowering the priority in the word at 2..4 by as much keeps the checksum valid.
    let mut ah = v2_advert(Auth::None);
    ah[4] = 2;
    ah[2] -= 2;
    let (_, _, counters) = counters_after(with_pass, packet_from(B, &ah));
    assert_eq!(counters, Counters { auth_errors: 1, ..Counters::default() });
}

#[test]
fn v2_drops_a_different_interval() {
    let slow = Advert { interval_cs: 200, ..advert(Version::V2, 120) };
    let payload = packet::encode(&slow, ip(B), GROUP, &CodecOptions::default());
    let (accepted, actions, counters) = counters_after(v2(config(100)), packet_from(B, &payload));
    assert!(!accepted);
    let notice = Notice::IntervalMismatch { from: ip(B), advertised: secs(2), ours: secs(1) };
    assert_eq!(actions, [Action::Notice(notice)]);
    assert_eq!(counters, Counters { interval_errors: 1, ..Counters::default() });
}

#[test]
fn drops_adverts_of_the_other_address_family() {
    let v6 = Advert { addresses: vec![ip("2001:db8::100")], ..advert(Version::V3, 120) };
    let (peer, group) = (ip("fe80::2"), IpAddr::V6(MULTICAST_V6));
    let payload = packet::encode(&v6, peer, group, &CodecOptions::default());
    let input = Input::Packet { src: peer, dst: group, hop_limit: 255, payload: &payload };
    let (accepted, _, counters) = counters_after(config(100), input);
    assert!(!accepted);
    assert_eq!(counters, Counters { address_family_errors: 1, ..Counters::default() });
}

#[test]
fn ignores_its_own_looped_back_adverts() {
    let own = packet::encode(&advert(Version::V3, 100), ip(A), GROUP, &CodecOptions::default());
    let (accepted, _, counters) = counters_after(config(100), packet_from(A, &own));
    assert!(!accepted);
    assert_eq!(counters, Counters { own_adverts: 1, ..Counters::default() });
}

#[test]
fn a_different_vip_list_is_noticed_but_not_fatal() {
    let other = Advert { addresses: vec![ip("192.0.2.101")], ..advert(Version::V3, 120) };
    let payload = packet::encode(&other, ip(B), GROUP, &CodecOptions::default());
    let (accepted, actions, router) = deliver_to_backup(config(100), packet_from(B, &payload));
    assert!(accepted);
    let notice = Notice::VipMismatch { from: ip(B), advertised: vec![ip("192.0.2.101")] };
    assert_eq!(actions, [Action::Notice(notice)]);
    let status = router.status();
    assert_eq!(status.master_address, Some(ip(B)));
    assert_eq!(status.counters, Counters { adverts_received: 1, vip_mismatches: 1, ..Counters::default() });
}

#[test]
fn v3_unicast_sends_one_advert_per_peer_with_its_own_checksum() {
    let peers = vec![ip(B), ip(C)];
    let owner = RouterConfig { unicast_peers: peers.clone(), ..config(255) };
    let t0 = Instant::now();
    let mut router = Router::new(owner, t0);
    router.handle(t0, Input::Health(Health::Healthy));
    let actions = router.handle(t0, Input::Startup { primary: ip(A) });
    let sent: Vec<_> = actions
        .iter()
        .filter_map(|action| match action {
            Action::SendAdvert { dst, payload, .. } => Some((*dst, payload.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(sent.iter().map(|(dst, _)| *dst).collect::<Vec<_>>(), peers);
    let opts = CodecOptions::default();
    assert!(packet::decode(&sent[0].1, ip(A), ip(B), &opts).is_ok());
    assert!(packet::decode(&sent[1].1, ip(A), ip(C), &opts).is_ok());
    assert!(packet::decode(&sent[0].1, ip(A), ip(C), &opts).is_err());
    assert_eq!(sent_priorities(&actions), [255, 255]);
    assert_eq!(router.status().counters.adverts_sent, 2);
}

#[test]
fn unicast_pair_elects_a_master() {
    let a = RouterConfig { unicast_peers: vec![ip(B)], ..config(150) };
    let b = RouterConfig { unicast_peers: vec![ip(A)], ..config(100) };
    let mut sim = Sim::new(vec![(a, A), (b, B)]);
    sim.start_all();
    sim.run_until(secs(20));
    assert_eq!(sim.transitions(0), [(ms(0), State::Backup), (ms(3410), State::Master)]);
    assert_eq!(sim.status(1).master_address, Some(ip(A)));
    assert_eq!(sim.status(1).counters.adverts_received, 17);
}

#[test]
fn ipv6_pair_elects_a_master() {
    let ipv6 = |priority| RouterConfig { vips: vec!["2001:db8::100/64".parse().unwrap()], ..config(priority) };
    let mut sim = Sim::new(vec![(ipv6(150), "fe80::1"), (ipv6(100), "fe80::2")]);
    sim.start_all();
    sim.run_until(secs(20));
    assert_eq!(sim.transitions(0), [(ms(0), State::Backup), (ms(3410), State::Master)]);
    assert_eq!(sim.status(1).master_address, Some(ip("fe80::1")));
    let first_advert = sim.entries(0).find_map(|entry| match &entry.action {
        Action::SendAdvert { dst, .. } => Some(*dst),
        _ => None,
    });
    assert_eq!(first_advert, Some(IpAddr::V6(MULTICAST_V6)));
}

#[test]
fn primary_address_change_moves_the_advert_source() {
    let t0 = Instant::now();
    let mut router = started(config(255), t0);
    router.handle(t0, Input::PrimaryAddress(ip(C)));
    assert_eq!(router.status().master_address, Some(ip(C)));
    let actions = router.handle(t0 + secs(1), Input::TimerFired);
    let Some(Action::SendAdvert { payload, .. }) = actions.last() else { panic!("no advert") };
    let opts = CodecOptions::default();
    assert!(packet::decode(payload, ip(C), GROUP, &opts).is_ok());
    assert_eq!(packet::decode(payload, ip(A), GROUP, &opts), Err(PacketError::Checksum));
}

#[test]
fn a_peer_advertising_from_our_vip_is_a_peer_not_our_own_loopback() {
    // keepalived's IPv6 configs list a link-local VIP first (RFC 5798 §5.2.9); the engine
    // never makes it our advert source (see engine tests), but a peer may send from it.
    let config = RouterConfig {
        vips: vec!["fe80::100/64".parse().unwrap(), "2001:db8::100/64".parse().unwrap()],
        ..config(255)
    };
    let (own, vip, group) = (ip("fe80::1"), ip("fe80::100"), IpAddr::V6(MULTICAST_V6));
    let t0 = Instant::now();
    let mut router = Router::new(config, t0);
    router.handle(t0, Input::Health(Health::Healthy));
    router.handle(t0, Input::Startup { primary: own });
    assert_eq!(router.status().state, State::Master);
    let actions = router.handle(t0 + secs(1), Input::TimerFired);
    let Some(Action::SendAdvert { payload, .. }) = actions.last() else { panic!("no advert") };
    // The v3 IPv6 checksum covers the source: the advert is still from our own address.
    let opts = CodecOptions::default();
    assert!(packet::decode(payload, own, group, &opts).is_ok());
    assert_eq!(packet::decode(payload, vip, group, &opts), Err(PacketError::Checksum));
    // Another master holding the same VIP is a peer, not our own loopback.
    let peer = packet::encode(
        &Advert { addresses: vec![vip, ip("2001:db8::100")], ..advert(Version::V3, 255) },
        vip,
        group,
        &opts,
    );
    let input = Input::Packet { src: vip, dst: group, hop_limit: 255, payload: &peer };
    router.handle(t0 + secs(1), input);
    assert_eq!(router.status().counters.own_adverts, 0);
    assert_eq!(router.status().counters.adverts_received, 1);
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "invalid VRRP config")]
fn new_refuses_an_invalid_config_in_debug_builds() {
    Router::new(config(0), Instant::now());
}

#[test]
#[should_panic(expected = "not of the VIPs' family")]
fn a_primary_address_of_the_wrong_family_is_a_caller_bug() {
    let t0 = Instant::now();
    Router::new(config(100), t0).handle(t0, Input::Startup { primary: ip("fe80::1") });
}

#[test]
fn states_display_like_keepalived() {
    let names: Vec<_> =
        [State::Init, State::Backup, State::Master, State::Fault].iter().map(State::to_string).collect();
    assert_eq!(names, ["INIT", "BACKUP", "MASTER", "FAULT"]);
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// One received packet: a valid advert that may then be corrupted.
    #[derive(Debug, Clone)]
    struct Arrival {
        after: Duration,
        advert: Advert,
        src: &'static str,
        hop_limit: u8,
        flipped_bit: Option<prop::sample::Index>,
    }

    fn arrival(version: Version) -> impl Strategy<Value = Arrival> {
        let interval_cs = match version {
            Version::V2 => prop_oneof![Just(100u16), Just(200)].boxed(),
            Version::V3 => (1u16..=400).boxed(),
        };
        let auth = match version {
            Version::V2 => prop_oneof![Just(Auth::None), Just(Auth::Simple(*b"secret\0\0"))].boxed(),
            Version::V3 => Just(Auth::None).boxed(),
        };
        let addresses = prop_oneof![Just(vec![ip("192.0.2.100")]), Just(vec![ip("192.0.2.101")])];
        let advert = (prop_oneof![Just(VRID), Just(VRID + 1)], any::<u8>(), interval_cs, auth, addresses).prop_map(
            move |(vrid, priority, interval_cs, auth, addresses)| Advert {
                version,
                vrid,
                priority,
                interval_cs,
                auth,
                addresses,
            },
        );
        (
            0u64..3000,
            advert,
            prop_oneof![Just(A), Just(B), Just(C)],
            prop_oneof![Just(255u8), Just(1)],
            prop::option::weighted(0.2, any::<prop::sample::Index>()),
        )
            .prop_map(|(after_ms, advert, src, hop_limit, flipped_bit)| Arrival {
                after: ms(after_ms),
                advert,
                src,
                hop_limit,
                flipped_bit,
            })
    }

    fn scenario() -> impl Strategy<Value = (RouterConfig, Vec<Arrival>)> {
        (prop_oneof![Just(Version::V2), Just(Version::V3)], 1u8..=255, any::<bool>()).prop_flat_map(
            |(version, priority, unicast)| {
                let config = RouterConfig {
                    version,
                    auth_pass: (version == Version::V2).then_some(*b"secret\0\0"),
                    unicast_peers: if unicast { vec![ip(B)] } else { vec![] },
                    ..config(priority)
                };
                (Just(config), prop::collection::vec(arrival(version), 1..40))
            },
        )
    }

    proptest! {
        /// Whatever arrives, the router keeps running, its timers stay in the future, what it
        /// sends decodes, and every packet is counted exactly once.
        #[test]
        fn random_adverts_keep_the_router_consistent((config, arrivals) in scenario()) {
            let t0 = Instant::now();
            let codec = config.codec;
            let unicast = !config.unicast_peers.is_empty();
            let mut router = started(config, t0);
            let mut now = t0;
            let mut sent = Vec::new();
            for arrival in &arrivals {
                now += arrival.after;
                while let Some(deadline) = router.next_deadline().filter(|&at| at <= now) {
                    sent.extend(router.handle(deadline, Input::TimerFired));
                }
                let dst = if unicast { ip(A) } else { GROUP };
                let mut payload = packet::encode(&arrival.advert, ip(arrival.src), dst, &codec);
                if let Some(bit) = arrival.flipped_bit {
                    let bit = bit.index(payload.len() * 8);
                    payload[bit / 8] ^= 1 << (bit % 8);
                }
                let input = Input::Packet { src: ip(arrival.src), dst, hop_limit: arrival.hop_limit, payload: &payload };
                sent.extend(router.handle(now, input));
                prop_assert!(router.next_deadline().is_some_and(|at| at >= now));
            }

            let status = router.status();
            prop_assert!(matches!(status.state, State::Backup | State::Master));
            let c = status.counters;
            let counted = c.adverts_received + c.own_adverts + c.other_vrid + c.ttl_errors
                + c.version_errors + c.type_errors + c.checksum_errors + c.auth_errors
                + c.interval_errors + c.address_family_errors + c.unknown_peer_errors
                + c.malformed_errors;
            prop_assert_eq!(counted, arrivals.len() as u64);
            for action in sent {
                if let Action::SendAdvert { dst, payload, .. } = action {
                    prop_assert!(packet::decode(&payload, ip(A), dst, &codec).is_ok());
                }
            }
        }
    }
}

/// After a partition heals, whoever hears the other first, the winner announces its VIPs at
/// once: clients that followed the loser's gratuitous ARP come back without waiting for their
/// ARP entries to age out.
#[test]
fn a_healed_partition_makes_the_winner_announce_whichever_advert_crosses_first() {
    // Order 1: the loser's advert reaches the winner first (B advertises at 10.01 s).
    let mut sim = pair_with_a_master();
    sim.run_until(secs(5));
    sim.nodes[1].connected = false;
    sim.run_until(secs(10));
    assert_eq!(sim.masters(), [0, 1]);
    sim.nodes[1].connected = true;
    sim.run_until(ms(10020));
    assert!(sim.actions_at(0, ms(10010)).contains(&Action::Announce), "{:?}", sim.actions_at(0, ms(10010)));
    assert_eq!(sim.masters(), [0]);

    // Order 2: the winner's advert reaches the loser first (A advertises at 9.41 s, before B).
    let mut sim = pair_with_a_master();
    sim.run_until(secs(5));
    sim.nodes[1].connected = false;
    sim.run_until(ms(9400));
    assert_eq!(sim.masters(), [0, 1]);
    sim.nodes[1].connected = true;
    sim.run_until(ms(9420));
    // B yields to A's advert and says so once at its own priority; A announces.
    assert_eq!(
        without_payloads(&sim.actions_at(1, ms(9410))),
        [changed(State::Master, State::Backup, Reason::PreferredPeer), Action::RemoveVips, send(100)]
    );
    assert!(sim.actions_at(0, ms(9410)).contains(&Action::Announce), "{:?}", sim.actions_at(0, ms(9410)));
    assert_eq!(sim.masters(), [0]);
}

#[test]
fn a_restarted_daemon_resumes_master_within_master_down_and_the_peer_stays_backup() {
    let mut sim = pair_with_a_master();
    sim.run_until(secs(10));
    // A's nginx-ha dies at 10 s (its last advert at 9.41 s) and a new one starts at 10.5 s.
    sim.nodes[0].router = Router::new(config(150), sim.now);
    sim.nodes[0].connected = false;
    sim.run_until(ms(10500));
    sim.nodes[0].connected = true;
    assert!(sim.input(0, Input::Resume { elapsed: ms(1090) }).is_empty());
    let primary = sim.nodes[0].primary;
    assert!(sim.input(0, Input::Startup { primary }).is_empty(), "INIT until nginx is healthy");
    // Its VIPs (still on the interface) are not foreign while it may resume.
    assert!(sim.input(0, Input::VipPresent).is_empty());
    let actions = sim.input(0, Input::Health(Health::Healthy));
    assert_eq!(
        without_payloads(&actions)[..3],
        [changed(State::Init, State::Master, Reason::Resumed), send(150), Action::AddVips]
    );
    sim.run_until(secs(30));
    assert_eq!(sim.transitions(1), [(ms(0), State::Backup)], "the peer never left BACKUP");
}

#[test]
fn a_record_older_than_master_down_is_stale_and_its_vips_go() {
    let t0 = Instant::now();
    let mut router = Router::new(config(150), t0);
    let stale = Action::Notice(Notice::StaleVips { elapsed: ms(3100) });
    assert_eq!(router.handle(t0, Input::Resume { elapsed: ms(3100) }), [stale, Action::RemoveVips]);
    // Within the window, but nginx never serves in time: the VIPs go when the window closes.
    let mut router = Router::new(config(150), t0);
    assert!(router.handle(t0, Input::Resume { elapsed: secs(1) }).is_empty());
    router.handle(t0, Input::Startup { primary: ip(A) });
    assert_eq!(router.next_deadline(), Some(t0 + secs(2)));
    let stale = Action::Notice(Notice::StaleVips { elapsed: secs(3) });
    assert_eq!(router.handle(t0 + secs(2), Input::TimerFired), [stale, Action::RemoveVips]);
    let actions = router.handle(t0 + secs(3), Input::Health(Health::Healthy));
    assert_eq!(actions, [changed(State::Init, State::Backup, Reason::NginxHealthy)]);
}

#[test]
fn a_link_back_within_master_down_resumes_master_at_once() {
    let mut sim = pair_with_a_master();
    sim.run_until(secs(10));
    sim.input(0, Input::InterfaceLink { up: false });
    sim.nodes[0].connected = false;
    sim.run_until(secs(12));
    sim.nodes[0].connected = true;
    let actions = sim.input(0, Input::InterfaceLink { up: true });
    assert_eq!(
        without_payloads(&actions)[..3],
        [changed(State::Fault, State::Master, Reason::InterfaceBackInTime), send(150), Action::AddVips]
    );
    sim.run_until(secs(30));
    assert_eq!(sim.transitions(1), [(ms(0), State::Backup)], "the peer never left BACKUP");
}

#[test]
fn a_vip_copy_is_removed_unless_we_are_master() {
    let mut sim = pair_with_a_master();
    let notice = Action::Notice(Notice::ForeignVip { state: State::Backup });
    assert_eq!(sim.input(1, Input::VipPresent), [notice, Action::RemoveVips]);
    assert!(sim.input(0, Input::VipPresent).is_empty());
}

#[test]
fn a_peer_s_repeated_mistake_is_noticed_once_a_minute_and_counted_every_time() {
    let t0 = Instant::now();
    let mut router = started(config(150), t0);
    router.handle(t0 + ms(3410), Input::TimerFired);
    let mismatch = advert(Version::V3, 100);
    let mut other = mismatch.clone();
    other.addresses = vec![ip("192.0.2.99")];
    let payload = packet::encode(&other, ip(B), GROUP, &CodecOptions::default());
    let notices = |actions: Vec<Action>| actions.into_iter().filter(|a| matches!(a, Action::Notice(_))).count();
    assert_eq!(notices(router.handle(t0 + secs(4), packet_from(B, &payload))), 1);
    assert_eq!(notices(router.handle(t0 + secs(5), packet_from(B, &payload))), 0);
    assert_eq!(notices(router.handle(t0 + secs(64), packet_from(B, &payload))), 1);
    assert_eq!(router.status().counters.vip_mismatches, 3);
}

#[test]
fn another_vrid_on_the_link_is_counted_as_such() {
    let t0 = Instant::now();
    let mut router = started(config(150), t0);
    let mut theirs = advert(Version::V3, 100);
    theirs.vrid = VRID + 1;
    let payload = packet::encode(&theirs, ip(B), GROUP, &CodecOptions::default());
    assert!(router.handle(t0 + secs(1), packet_from(B, &payload)).is_empty());
    assert_eq!(router.status().counters.other_vrid, 1);
    assert_eq!(router.status().counters.adverts_received, 0);
}

fn seen(address: &str, priority: u8, age: Duration) -> Option<SeenAdvert> {
    Some(SeenAdvert { address: ip(address), priority, interval: secs(1), age })
}

#[test]
fn the_wire_view_shows_the_master_its_priority_and_the_age_of_its_last_advert() {
    let mut sim = pair_with_a_master();
    sim.run_until(ms(5710)); // A advertised at 5.41 s
    let now = sim.now;
    let backup = sim.nodes[1].router.wire_view(now);
    assert_eq!(backup.master, seen(A, 150, ms(300)));
    assert_eq!(backup.peer, seen(A, 150, ms(300)));
    // The master reports its own last advert; the silent BACKUP has never been heard.
    let master = sim.nodes[0].router.wire_view(now);
    assert_eq!(master, WireView { master: seen(A, 150, ms(300)), peer: None });
    // The age is counted up to the time asked with, nothing else.
    assert_eq!(sim.nodes[1].router.wire_view(now + ms(200)).master, seen(A, 150, ms(500)));
    assert_eq!(sim.status(1).counters.master_changes, 0, "the first master known is no change");
}

#[test]
fn master_changes_count_each_failover_as_each_node_saw_it() {
    let mut sim = pair_with_a_master();
    sim.run_until(ms(5410));
    sim.nodes[0].connected = false;
    sim.run_until(secs(12)); // B took over at 9.01 s
    assert_eq!(sim.masters(), [0, 1]);
    let b = sim.nodes[1].router.wire_view(sim.now);
    assert_eq!(b.master, seen(B, 100, ms(990)), "B's own adverts since 9.01 s");
    assert_eq!(b.peer, seen(A, 150, ms(6590)), "A's last advert heard at 5.41 s");
    assert_eq!(sim.status(1).counters.master_changes, 1);

    // A comes back: B yields to its advert; A never saw another master.
    sim.nodes[0].connected = true;
    sim.run_until(secs(14));
    assert_eq!(sim.masters(), [0]);
    assert_eq!(sim.status(1).counters.master_changes, 2);
    assert_eq!(sim.status(0).counters.master_changes, 0);
    let a = sim.nodes[0].router.wire_view(sim.now);
    assert_eq!(a.peer.map(|p| (p.address, p.priority)), Some((ip(B), 100)), "B's advert before it yielded");
    assert_eq!(sim.nodes[1].router.wire_view(sim.now).master.map(|m| m.address), Some(ip(A)));
}

#[test]
fn a_router_out_of_the_election_still_hears_the_master_uncounted() {
    let t0 = Instant::now();
    let mut router = started(config(100), t0);
    router.handle(t0 + secs(1), Input::Health(Health::Unhealthy));
    assert_eq!(router.status().state, State::Fault);
    let payload = peer_advert(120);
    router.handle(t0 + secs(2), packet_from(B, &payload));
    let view = router.wire_view(t0 + secs(3));
    assert_eq!(view.master, seen(B, 120, secs(1)));
    assert_eq!(view.peer, seen(B, 120, secs(1)));
    assert_eq!(router.status().master_address, None, "FAULT follows no master");
    assert_eq!(router.status().counters.adverts_received, 0);

    // A bad packet teaches nothing.
    let mut bad = peer_advert(200);
    bad[6] ^= 0xff;
    router.handle(t0 + secs(4), packet_from(B, &bad));
    assert_eq!(router.wire_view(t0 + secs(4)).master, seen(B, 120, secs(2)));
}

#[test]
fn the_master_s_priority_zero_ends_it_as_master_but_not_as_peer() {
    let t0 = Instant::now();
    let mut router = started(config(100), t0);
    let payload = peer_advert(120);
    router.handle(t0 + secs(1), packet_from(B, &payload));
    let payload = peer_advert(0);
    router.handle(t0 + secs(2), packet_from(B, &payload));
    let view = router.wire_view(t0 + secs(2));
    assert_eq!(view.master, None);
    assert_eq!(view.peer, seen(B, 0, Duration::ZERO));
    // Taking over after the skew time: this router is the master now, a change.
    router.handle(t0 + secs(2) + ms(600), Input::TimerFired);
    assert_eq!(router.status().state, State::Master);
    assert_eq!(router.wire_view(t0 + secs(3)).master, seen(A, 100, ms(400)));
    assert_eq!(router.status().counters.master_changes, 1);
}

fn draining(config: RouterConfig) -> RouterConfig {
    RouterConfig { drain: secs(60), ..config }
}

#[test]
fn a_preempted_master_hands_its_vips_over_with_a_drain_and_the_new_one_accepts_it() {
    for preempt_delay in [Duration::ZERO, secs(10)] {
        let mut sim =
            Sim::new(vec![(draining(RouterConfig { preempt_delay, ..config(150) }), A), (draining(config(100)), B)]);
        sim.start(1);
        sim.run_until(secs(10));
        sim.start(0);
        sim.run_until(secs(40));
        assert_eq!(sim.masters(), [0]);
        let (&(at, _), _) = (sim.transitions(0).iter().find(|(_, s)| *s == State::Master).unwrap(), ());
        assert_eq!(
            sim.actions_at(1, at),
            [
                changed(State::Master, State::Backup, Reason::PreferredPeer),
                Action::HandOverVips { to: ip(A) },
                send(100)
            ]
        );
        assert_eq!(
            sim.actions_at(0, at),
            [
                changed(State::Backup, State::Master, Reason::MasterDown),
                Action::AcceptDrain { from: ip(B) },
                send(150),
                Action::AddVips,
                Action::Announce
            ],
            "preempt_delay {preempt_delay:?}"
        );
    }
}

#[test]
fn a_planned_stop_hands_the_vips_over_with_a_drain() {
    let mut sim = Sim::new(vec![(draining(config(150)), A), (draining(config(100)), B)]);
    sim.start_all();
    sim.run_until(ms(3410));
    sim.input(0, Input::Shutdown);
    sim.run_until(secs(10));
    assert_eq!(sim.masters(), [1]);
    let handed_over = sim.entries(0).filter(|e| matches!(e.action, Action::HandOverVips { .. })).count();
    assert_eq!(handed_over, 1);
    assert!(sim.entries(0).any(|e| e.action == Action::HandOverVips { to: ip(B) }));
    assert!(!sim.entries(0).any(|e| e.action == Action::RemoveVips));
    assert!(sim.entries(1).any(|e| e.action == Action::AcceptDrain { from: ip(A) }));
}

#[test]
fn a_failing_nginx_relinquishes_without_a_drain_and_the_backup_expects_none() {
    let mut sim = Sim::new(vec![(draining(config(150)), A), (draining(config(100)), B)]);
    sim.start_all();
    sim.run_until(ms(3410));
    sim.input(0, Input::Health(Health::Unhealthy));
    sim.run_until(secs(10));
    assert_eq!(sim.masters(), [1]);
    assert!(sim.entries(0).any(|e| e.action == Action::RemoveVips));
    assert!(!sim.log.iter().any(|e| matches!(e.action, Action::HandOverVips { .. } | Action::AcceptDrain { .. })));
}

#[test]
fn without_drain_ms_nothing_drains() {
    let mut sim = Sim::new(vec![(config(150), A), (config(100), B)]);
    sim.start(1);
    sim.run_until(secs(10));
    sim.start(0);
    sim.input(1, Input::Shutdown);
    sim.run_until(secs(40));
    assert!(!sim.log.iter().any(|e| matches!(e.action, Action::HandOverVips { .. } | Action::AcceptDrain { .. })));
}

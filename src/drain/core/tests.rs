use super::*;

const A: &str = "198.18.0.1";
const B: &str = "198.18.0.2";
const VIP: &str = "198.18.0.100";
const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const WINDOW: Duration = Duration::from_secs(30);

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn flow(port: u16) -> Flow {
    Flow { client: format!("198.18.0.10:{port}").parse().unwrap(), vip: format!("{VIP}:80").parse().unwrap() }
}

fn hand_over() -> Input<'static> {
    Input::Command(Command::HandOver {
        router: 0,
        vrid: 7,
        ifindex: 2,
        mac: MAC_A,
        vips: vec![ip(VIP)],
        to: ip(B),
        window: WINDOW,
        session: 99,
    })
}

fn accept() -> Input<'static> {
    Input::Command(Command::Accept { router: 0, vrid: 7, ifindex: 3, vips: vec![ip(VIP)], from: ip(A), window: WINDOW })
}

fn sent(out: &[Output]) -> Vec<Vec<u8>> {
    out.iter().filter_map(|o| if let Output::Send { bytes, .. } = o { Some(bytes.clone()) } else { None }).collect()
}

fn bodies(out: &[Output]) -> Vec<Body> {
    sent(out).iter().map(|bytes| protocol::decode(bytes).unwrap().body).collect()
}

fn released(out: &[Output]) -> bool {
    out.iter().any(|o| matches!(o, Output::ReleaseLocal { .. }))
}

fn ended(out: &[Output]) -> Option<EndReason> {
    out.iter().find_map(|o| match o {
        Output::Log(LogLine::Ended { why, .. }) => Some(*why),
        _ => None,
    })
}

/// Runs both sides against each other: what one sends, the other receives at once.
struct Pair {
    now: Instant,
    old: Drains,
    new: Drains,
    /// What the new holder forwards now.
    forwarding: BTreeSet<Flow>,
    /// The old holder's connections, as its next listing will report them.
    connections: Vec<Flow>,
    log: Vec<Output>,
}

impl Pair {
    fn new() -> Pair {
        let now = Instant::now();
        let mut pair = Pair {
            now,
            old: Drains::new(),
            new: Drains::new(),
            forwarding: BTreeSet::new(),
            connections: vec![flow(1000), flow(1001)],
            log: Vec::new(),
        };
        let out = pair.new.handle(now, accept());
        pair.deliver_to_old(out);
        pair
    }

    fn old_input(&mut self, input: Input) {
        let out = self.old.handle(self.now, input);
        self.deliver_to_new(out);
    }

    fn deliver_to_new(&mut self, out: Vec<Output>) {
        for output in out {
            match &output {
                Output::Send { to, bytes } => {
                    assert_eq!(*to, ip(B));
                    let reply = self.new.handle(self.now, Input::Datagram { from: ip(A), ttl: TTL, bytes });
                    self.deliver_to_old(reply);
                }
                Output::ListFlows { router, .. } => {
                    let flows = self.connections.clone();
                    let more = self.old.handle(self.now, Input::Listed { router: *router, flows });
                    self.deliver_to_new(more);
                }
                _ => {}
            }
            self.log.push(output);
        }
    }

    fn deliver_to_old(&mut self, out: Vec<Output>) {
        for output in out {
            match &output {
                Output::Send { to, bytes } => {
                    assert_eq!(*to, ip(A));
                    let more = self.old.handle(self.now, Input::Datagram { from: ip(B), ttl: TTL, bytes });
                    self.deliver_to_new(more);
                }
                Output::Forward { flows, mac, .. } => {
                    assert_eq!(*mac, MAC_A);
                    self.forwarding.extend(flows.iter().copied());
                }
                Output::StopForwarding { flows } => flows.iter().for_each(|f| {
                    self.forwarding.remove(f);
                }),
                _ => {}
            }
            self.log.push(output);
        }
    }

    /// Advances both sides to each deadline up to `until`.
    fn run_until(&mut self, until: Instant) {
        loop {
            let next = [self.old.poll_timeout(), self.new.poll_timeout()].into_iter().flatten().min();
            match next {
                Some(at) if at <= until => {
                    self.now = self.now.max(at);
                    self.old_input(Input::Timer);
                    let out = self.new.handle(self.now, Input::Timer);
                    self.deliver_to_old(out);
                }
                _ => break,
            }
        }
        self.now = until;
    }
}

#[test]
fn the_old_holders_flows_are_passed_through_until_it_has_none_left() {
    let mut pair = Pair::new();
    pair.old_input(hand_over());
    // The first listing and its flows went out within the hand-over itself.
    assert_eq!(pair.forwarding, BTreeSet::from([flow(1000), flow(1001)]));
    assert!(pair.old.draining());
    let start = pair.now;
    pair.run_until(start + Duration::from_secs(5));
    assert_eq!(pair.forwarding.len(), 2, "heartbeats and acks keep it going");
    pair.connections = vec![flow(1001)];
    pair.run_until(start + Duration::from_secs(7));
    assert_eq!(pair.forwarding.len(), 2, "the new holder forwards what it was told until the end");
    pair.connections.clear();
    pair.run_until(start + Duration::from_secs(9));
    assert!(pair.forwarding.is_empty());
    assert!(!pair.old.draining() && pair.new.status(pair.now).is_empty());
    assert!(released(&pair.log));
    assert!(pair.log.iter().any(|o| matches!(o, Output::Log(LogLine::Ended { why: EndReason::NoFlowsLeft, .. }))));
    assert!(
        pair.log
            .iter()
            .any(|o| matches!(o, Output::Log(LogLine::ForwardingEnded { why: EndReason::OldHolderDone, .. })))
    );
}

#[test]
fn no_connection_at_the_hand_over_ends_the_drain_at_once() {
    let mut pair = Pair::new();
    pair.connections.clear();
    pair.old_input(hand_over());
    assert!(!pair.old.draining());
    assert!(released(&pair.log));
    assert!(pair.forwarding.is_empty());
    // The new holder took the end alone as the end: no accept left over, nothing dropped.
    assert!(pair.new.status(pair.now).is_empty());
    assert_eq!(pair.new.dropped, 0);
    assert!(!pair.log.iter().any(|o| matches!(o, Output::Log(LogLine::Dropped { .. }))));
}

#[test]
fn connections_opened_in_the_last_moments_are_sent_at_the_next_listing() {
    let mut pair = Pair::new();
    pair.old_input(hand_over());
    pair.connections.push(flow(2000));
    let start = pair.now;
    pair.run_until(start + Duration::from_millis(150));
    assert!(pair.forwarding.contains(&flow(2000)));
}

#[test]
fn the_window_bounds_the_drain_on_both_sides() {
    let mut pair = Pair::new();
    pair.old_input(hand_over());
    let start = pair.now;
    pair.run_until(start + WINDOW + Duration::from_millis(10));
    assert!(!pair.old.draining());
    assert!(pair.forwarding.is_empty());
    assert_eq!(ended(&pair.log), Some(EndReason::WindowOver));
}

#[test]
fn a_killed_old_holder_stops_the_pass_through_within_the_silence_bound() {
    let now = Instant::now();
    let mut new = Drains::new();
    new.handle(now, accept());
    let datagram = protocol::encode_flows(7, 99, 0, MAC_A, Family::V4, &[flow(1000)]).remove(0);
    let out = new.handle(now, Input::Datagram { from: ip(A), ttl: TTL, bytes: &datagram });
    assert!(out.iter().any(|o| matches!(o, Output::Forward { .. })));
    // The old holder dies: nothing more comes.
    assert_eq!(new.poll_timeout(), Some(now + SILENCE));
    let out = new.handle(now + SILENCE, Input::Timer);
    assert_eq!(out[0], Output::StopForwarding { flows: vec![flow(1000)] });
    assert!(matches!(out[1], Output::Log(LogLine::ForwardingEnded { why: EndReason::OldHolderSilent, .. })));
    assert!(new.status(now).is_empty());
}

#[test]
fn a_peer_that_does_not_drain_lets_the_old_holder_release_at_once() {
    // keepalived or drains off: no acknowledgement ever comes.
    let now = Instant::now();
    let mut old = Drains::new();
    let out = old.handle(now, hand_over());
    assert_eq!(out, vec![Output::ListFlows { router: 0, vips: vec![ip(VIP)] }]);
    let out = old.handle(now, Input::Listed { router: 0, flows: vec![flow(1000)] });
    assert_eq!(bodies(&out).len(), 1);
    let mut at = now;
    while !released(&old.handle(at, Input::Timer)) {
        at = old.poll_timeout().unwrap();
        assert!(at <= now + ACK_TIMEOUT, "released only after {:?}", at - now);
    }
    assert!(!old.draining());
}

#[test]
fn taking_the_vips_back_ends_the_old_holders_drain() {
    let mut pair = Pair::new();
    pair.old_input(hand_over());
    pair.old_input(Input::Command(Command::Reclaimed { router: 0 }));
    assert!(!pair.old.draining());
    assert_eq!(ended(&pair.log), Some(EndReason::Reclaimed));
    assert!(pair.forwarding.is_empty(), "told it is done, the new holder stops forwarding too");
}

#[test]
fn giving_the_vips_up_ends_the_new_holders_pass_through() {
    let mut pair = Pair::new();
    pair.old_input(hand_over());
    let out = pair.new.handle(pair.now, Input::Command(Command::Released { router: 0 }));
    pair.deliver_to_old(out);
    assert!(pair.forwarding.is_empty());
}

#[test]
fn hostile_datagrams_open_nothing() {
    let now = Instant::now();
    let mut new = Drains::new();
    let datagram = protocol::encode_flows(7, 99, 0, MAC_A, Family::V4, &[flow(1000)]).remove(0);
    // Nothing was taken over: a drain from anyone is refused.
    let out = new.handle(now, Input::Datagram { from: ip(A), ttl: TTL, bytes: &datagram });
    assert!(!out.iter().any(|o| matches!(o, Output::Forward { .. } | Output::Send { .. })));
    new.handle(now, accept());
    // From another node than the master we took over from.
    let out = new.handle(now, Input::Datagram { from: ip("198.18.0.66"), ttl: TTL, bytes: &datagram });
    assert!(!out.iter().any(|o| matches!(o, Output::Forward { .. })));
    // From off the link (routed: hop limit below 255), or garbage.
    let out = new.handle(now, Input::Datagram { from: ip(A), ttl: 254, bytes: &datagram });
    assert!(!out.iter().any(|o| matches!(o, Output::Forward { .. })));
    let out = new.handle(now, Input::Datagram { from: ip(A), ttl: TTL, bytes: b"NHAD\x01\x01\x07\x04garbage" });
    assert!(!out.iter().any(|o| matches!(o, Output::Forward { .. })));
    // Flows to an address that is not one of our VIPs are never passed through.
    let other = Flow { client: "198.18.0.10:5".parse().unwrap(), vip: "198.18.0.2:22".parse().unwrap() };
    let datagram = protocol::encode_flows(7, 99, 0, MAC_A, Family::V4, &[other, flow(1000)]).remove(0);
    let out = new.handle(now, Input::Datagram { from: ip(A), ttl: TTL, bytes: &datagram });
    let forwarded: Vec<_> = out
        .iter()
        .filter_map(|o| if let Output::Forward { flows, .. } = o { Some(flows.clone()) } else { None })
        .collect();
    assert_eq!(forwarded, vec![vec![flow(1000)]]);
    assert_eq!(new.dropped, 4);
    // Too late: the time to accept a drain after the takeover is over.
    let mut late = Drains::new();
    late.handle(now, accept());
    let out = late.handle(now + ACCEPT_WAIT, Input::Datagram { from: ip(A), ttl: TTL, bytes: &datagram });
    assert!(!out.iter().any(|o| matches!(o, Output::Forward { .. })));
}

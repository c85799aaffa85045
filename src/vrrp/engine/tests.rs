//! Engine tests: several routers behind one engine, on a simulated clock, with the shell's
//! answers (links, addresses) made up by hand.

use std::time::{Duration, Instant};

use super::*;
use crate::net::NetEvent;
use crate::vrrp::packet::{self, Advert, Auth, CodecOptions, MULTICAST_V4, Version};
use crate::vrrp::router::{FailureMode, RouterConfig};

const ETH0: u32 = 2;
const ETH1: u32 = 3;
const GROUP: IpAddr = IpAddr::V4(MULTICAST_V4);

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn spec(name: &str, vrid: u8, priority: u8, interface: &str, vips: &[&str]) -> RouterSpec {
    RouterSpec {
        router: RouterConfig {
            name: name.into(),
            vrid,
            priority,
            version: Version::V3,
            advert_interval: Duration::from_secs(1),
            preempt: true,
            preempt_delay: Duration::ZERO,
            auth_pass: None,
            vips: vips.iter().map(|vip| vip.parse().unwrap()).collect(),
            failure_mode: FailureMode::Relinquish,
            codec: CodecOptions::default(),
            unicast_peers: vec![],
            restart_grace: Duration::ZERO,
            drain: Duration::ZERO,
        },
        interface: interface.into(),
        excluded_vips: vec![],
        track_interfaces: vec![],
        notify: None,
        notify_timeout: Duration::from_secs(5),
    }
}

fn link(index: u32, name: &str) -> LinkInfo {
    LinkInfo { index, name: name.into(), mac: Some([2, 0, 0, 0, 0, index as u8]), up: true }
}

fn address(ifindex: u32, address: &str, proto: Option<u8>) -> AddressInfo {
    AddressInfo::new(ifindex, address.parse().unwrap(), proto)
}

/// The engine after `start`, with every Attach answered from `links` and `addresses`.
fn started(specs: Vec<RouterSpec>, links: &[LinkInfo], addresses: &[AddressInfo], t0: Instant) -> Engine {
    let mut engine = Engine::new(specs, None, Health::Healthy, t0);
    let actions = engine.start(Vec::new());
    answer(&mut engine, t0, actions, links, addresses);
    engine
}

/// Answers Attach and DumpAddresses the way the shell would, and returns every action.
fn answer(
    engine: &mut Engine,
    now: Instant,
    actions: Vec<Action>,
    links: &[LinkInfo],
    addresses: &[AddressInfo],
) -> Vec<Action> {
    let mut queue = std::collections::VecDeque::from(actions);
    let mut all = Vec::new();
    while let Some(action) = queue.pop_front() {
        let event = match &action {
            Action::Attach { router, interface, .. } => Some(match links.iter().find(|l| &l.name == interface) {
                Some(link) => Event::Attached {
                    router: *router,
                    link: link.clone(),
                    addresses: addresses.iter().filter(|a| a.ifindex == link.index).cloned().collect(),
                    tracked: vec![],
                },
                None => {
                    Event::AttachFailed { router: *router, problem: format!("interface {interface}: no such link") }
                }
            }),
            Action::DumpAddresses { ifindex } => Some(Event::Addresses {
                ifindex: *ifindex,
                addresses: addresses.iter().filter(|a| a.ifindex == *ifindex).cloned().collect(),
            }),
            _ => None,
        };
        all.push(action);
        if let Some(event) = event {
            for action in engine.handle(now, event).into_iter().rev() {
                queue.push_front(action);
            }
        }
    }
    all
}

fn state(engine: &Engine, router: usize) -> State {
    engine.reports(Instant::now())[router].state
}

fn advert(vrid: u8, priority: u8, vip: &str) -> Vec<u8> {
    let advert =
        Advert { version: Version::V3, vrid, priority, interval_cs: 100, auth: Auth::None, addresses: vec![ip(vip)] };
    packet::encode(&advert, ip("198.18.0.9"), GROUP, &CodecOptions::default())
}

fn packet(socket: SocketKey, payload: &[u8]) -> Event<'_> {
    Event::Packet { socket, src: ip("198.18.0.9"), dst: GROUP, hop_limit: 255, payload }
}

fn sources(actions: &[Action]) -> Vec<IpAddr> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SetSource { source, .. } => Some(*source),
            _ => None,
        })
        .collect()
}

#[test]
fn every_router_on_a_socket_sees_each_packet_and_counts_it_once() {
    let t0 = Instant::now();
    let specs = vec![
        spec("a", 1, 100, "eth0", &["198.18.1.1/24"]),
        spec("b", 2, 100, "eth0", &["198.18.1.2/24"]),
        spec("c", 1, 100, "eth1", &["198.18.2.1/24"]),
    ];
    let links = [link(ETH0, "eth0"), link(ETH1, "eth1")];
    let addresses = [address(ETH0, "198.18.0.1/24", None), address(ETH1, "198.18.3.1/24", None)];
    let mut engine = started(specs, &links, &addresses, t0);
    assert!((0..3).all(|i| state(&engine, i) == State::Backup));

    let payload = advert(1, 200, "198.18.1.1");
    engine.handle(t0, packet((ETH0, Family::V4), &payload));
    let reports = engine.reports(Instant::now());
    assert_eq!((reports[0].counters.adverts_received, reports[0].counters.other_vrid), (1, 0));
    assert_eq!((reports[1].counters.adverts_received, reports[1].counters.other_vrid), (0, 1));
    // The router on the other interface never saw it, though it has the same VRID.
    assert_eq!((reports[2].counters.adverts_received, reports[2].counters.other_vrid), (0, 0));
}

#[test]
fn a_vip_of_any_router_on_the_link_is_never_the_advert_source() {
    // keepalived's IPv6 configs list a link-local VIP first (RFC 5798 §5.2.9); held by
    // router "b" (or left untagged by keepalived), the kernel lists it before the interface's
    // own link-local, and router "a" must not pick it.
    let t0 = Instant::now();
    let specs = vec![
        spec("a", 1, 100, "eth0", &["2001:db8::1/64"]),
        spec("b", 2, 100, "eth0", &["fe80::100/64", "2001:db8::2/64"]),
    ];
    let links = [link(ETH0, "eth0")];
    let addresses = [address(ETH0, "fe80::100/64", None), address(ETH0, "fe80::1/64", None)];
    let mut engine = Engine::new(specs, None, Health::Healthy, t0);
    let actions = engine.start(Vec::new());
    let actions = answer(&mut engine, t0, actions, &links, &addresses);
    assert_eq!(sources(&actions), vec![ip("fe80::1"), ip("fe80::1")]);

    // An address change on the link: the snapshot after it still picks the node's own.
    let mut actions = engine.handle(t0, Event::Net(NetEvent::AddressAdded(address(ETH0, "fe80::2/64", None))));
    actions.extend(engine.handle(t0, Event::BurstEnd));
    assert_eq!(actions, vec![Action::DumpAddresses { ifindex: ETH0 }]);
    let actions = answer(&mut engine, t0, actions, &links, &addresses);
    assert_eq!(sources(&actions), Vec::<IpAddr>::new(), "unchanged: not set again");
    let moved = [address(ETH0, "fe80::100/64", None), address(ETH0, "fe80::2/64", None)];
    let actions = answer(&mut engine, t0, vec![Action::DumpAddresses { ifindex: ETH0 }], &links, &moved);
    assert_eq!(sources(&actions), vec![ip("fe80::2"), ip("fe80::2")]);
}

#[test]
fn leftover_vips_are_removed_at_start_except_those_a_router_may_resume() {
    let t0 = Instant::now();
    let specs = vec![spec("a", 1, 100, "eth0", &["198.18.1.1/24"]), spec("b", 2, 100, "eth0", &["198.18.1.2/24"])];
    let record = StateRecord { routers: [("a".to_string(), State::Master), ("b".to_string(), State::Backup)].into() };
    let mut engine = Engine::new(specs, Some((record, Duration::from_millis(500))), Health::Healthy, t0);
    let ours = Some(OWNER_PROTO);
    let tagged = vec![
        address(ETH0, "198.18.1.1/24", ours),
        address(ETH0, "198.18.1.2/24", ours),
        address(ETH0, "198.18.9.9/24", ours),
    ];
    let removed: Vec<_> = engine
        .start(tagged)
        .into_iter()
        .filter_map(|a| match a {
            Action::RemoveLeftover { address } => Some(address.address.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(removed, ["198.18.1.2/24", "198.18.9.9/24"]);
}

#[test]
fn a_router_the_previous_daemon_left_master_resumes_master_at_once() {
    let t0 = Instant::now();
    let specs = vec![spec("a", 1, 100, "eth0", &["198.18.1.1/24"])];
    let record = StateRecord { routers: [("a".to_string(), State::Master)].into() };
    let mut engine = Engine::new(specs, Some((record, Duration::from_millis(500))), Health::Healthy, t0);
    let actions = engine.start(vec![address(ETH0, "198.18.1.1/24", Some(OWNER_PROTO))]);
    let links = [link(ETH0, "eth0")];
    let addresses = [address(ETH0, "198.18.0.1/24", None), address(ETH0, "198.18.1.1/24", Some(OWNER_PROTO))];
    let actions = answer(&mut engine, t0 + Duration::from_millis(100), actions, &links, &addresses);
    assert_eq!(state(&engine, 0), State::Master);
    assert!(actions.contains(&Action::Log {
        router: RouterId(0),
        line: LogLine::PreviouslyMaster { elapsed: Duration::from_millis(600) }
    }));
    assert!(!actions.iter().any(|a| matches!(a, Action::RemoveVips { .. } | Action::RemoveLeftover { .. })));
}

#[test]
fn a_vip_removed_behind_our_back_is_put_back_by_a_master_only() {
    let t0 = Instant::now();
    let specs =
        vec![spec("master", 1, 255, "eth0", &["198.18.1.1/24"]), spec("backup", 2, 100, "eth0", &["198.18.1.2/24"])];
    let links = [link(ETH0, "eth0")];
    let mut engine = started(specs, &links, &[address(ETH0, "198.18.0.1/24", None)], t0);
    assert_eq!((state(&engine, 0), state(&engine, 1)), (State::Master, State::Backup));
    let mut actions =
        engine.handle(t0, Event::Net(NetEvent::AddressRemoved(address(ETH0, "198.18.1.1/24", Some(OWNER_PROTO)))));
    actions.extend(engine.handle(t0, Event::Net(NetEvent::AddressRemoved(address(ETH0, "198.18.1.2/24", None)))));
    assert!(actions.is_empty(), "once per burst, at its end");
    let actions = engine.handle(t0, Event::BurstEnd);
    let added: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::AddVips { router, .. } => Some(*router),
            _ => None,
        })
        .collect();
    assert_eq!(added, [RouterId(0)]);
    // A VIP is never a primary: its removal asks for no re-read of the addresses.
    assert!(!actions.iter().any(|a| matches!(a, Action::DumpAddresses { .. })));
}

#[test]
fn an_untagged_copy_of_a_vip_is_removed_from_a_backup_and_a_tagged_event_is_not_looked_at() {
    let t0 = Instant::now();
    let specs = vec![spec("backup", 1, 100, "eth0", &["198.18.1.1/24"])];
    let links = [link(ETH0, "eth0")];
    let own = address(ETH0, "198.18.0.1/24", None);
    let mut engine = started(specs, &links, std::slice::from_ref(&own), t0);

    // Our own add, read late: tagged, so nothing to look at.
    engine.handle(t0, Event::Net(NetEvent::AddressAdded(address(ETH0, "198.18.1.1/24", Some(OWNER_PROTO)))));
    assert!(engine.handle(t0, Event::BurstEnd).is_empty());

    // keepalived or an admin: the address list now decides.
    let copy = address(ETH0, "198.18.1.1/24", None);
    engine.handle(t0, Event::Net(NetEvent::AddressAdded(copy.clone())));
    let actions = engine.handle(t0, Event::BurstEnd);
    assert_eq!(actions, vec![Action::DumpAddresses { ifindex: ETH0 }]);
    // Already gone again when read: nothing to remove.
    let actions = answer(&mut engine, t0, actions.clone(), &links, std::slice::from_ref(&own));
    assert!(!actions.iter().any(|a| matches!(a, Action::RemoveVips { .. })));
    // Still there: removed, and said so.
    let actions = answer(&mut engine, t0, vec![Action::DumpAddresses { ifindex: ETH0 }], &links, &[own, copy]);
    assert!(actions.iter().any(|a| matches!(a, Action::RemoveVips { router: RouterId(0), .. })));
    assert!(actions.iter().any(|a| matches!(a, Action::Log { line: LogLine::Notice(Notice::ForeignVip { .. }), .. })));
}

#[test]
fn an_interface_created_again_is_followed_and_its_old_socket_closed_when_unused() {
    let t0 = Instant::now();
    let specs = vec![spec("a", 1, 100, "eth0", &["198.18.1.1/24"]), spec("b", 2, 100, "eth0", &["198.18.1.2/24"])];
    let old = [link(ETH0, "eth0")];
    let mut engine = started(specs, &old, &[address(ETH0, "198.18.0.1/24", None)], t0);
    // Deleted: down. Created again with index 7.
    engine.handle(t0, Event::Net(NetEvent::LinkChanged { index: ETH0, name: "eth0".into(), up: false }));
    assert!((0..2).all(|i| state(&engine, i) == State::Fault));
    let actions = engine.handle(t0, Event::Net(NetEvent::LinkChanged { index: 7, name: "eth0".into(), up: true }));
    let attaches = actions.iter().filter(|a| matches!(a, Action::Attach { .. })).count();
    assert_eq!(attaches, 2);
    let new = [link(7, "eth0")];
    let actions = answer(&mut engine, t0, actions, &new, &[address(7, "198.18.0.1/24", None)]);
    let closed: Vec<_> = actions.iter().filter(|a| matches!(a, Action::CloseSocket(_))).collect();
    assert_eq!(closed, [&Action::CloseSocket((ETH0, Family::V4))], "once, when the last router moved");
    assert!((0..2).all(|i| state(&engine, i) == State::Backup));
    // Packets on the new socket reach them.
    let payload = advert(1, 200, "198.18.1.1");
    engine.handle(t0, packet((7, Family::V4), &payload));
    assert_eq!(engine.reports(Instant::now())[0].counters.adverts_received, 1);
}

#[test]
fn a_router_whose_interface_is_missing_waits_and_starts_when_it_appears() {
    let t0 = Instant::now();
    let specs = vec![spec("a", 1, 100, "eth1", &["198.18.1.1/24"])];
    let mut engine = started(specs, &[], &[], t0);
    assert_eq!(engine.reports(Instant::now())[0].problem.as_deref(), Some("interface eth1: no such link"));
    // Every burst retries; the same problem is logged once.
    let actions = engine.handle(t0, Event::BurstEnd);
    let actions = answer(&mut engine, t0, actions, &[], &[]);
    assert!(!actions.iter().any(|a| matches!(a, Action::Log { .. })));
    // It appears, without an address yet, then with one.
    let links = [link(ETH1, "eth1")];
    let actions = engine.handle(t0, Event::BurstEnd);
    answer(&mut engine, t0, actions, &links, &[]);
    assert_eq!(
        engine.reports(Instant::now())[0].problem.as_deref(),
        Some("interface eth1 has no IPv4 address to send adverts from")
    );
    let actions = engine.handle(t0, Event::BurstEnd);
    answer(&mut engine, t0, actions, &links, &[address(ETH1, "198.18.0.1/24", None)]);
    assert_eq!(engine.reports(Instant::now())[0].problem, None);
    assert_eq!(state(&engine, 0), State::Backup);
}

#[test]
fn a_master_refreshes_the_record_at_most_every_heartbeat_interval() {
    let t0 = Instant::now();
    let specs = vec![spec("a", 1, 255, "eth0", &["198.18.1.1/24"]), spec("b", 2, 255, "eth0", &["198.18.1.2/24"])];
    let mut engine = Engine::new(specs, None, Health::Healthy, t0);
    let actions = engine.start(Vec::new());
    let actions = answer(&mut engine, t0, actions, &[link(ETH0, "eth0")], &[address(ETH0, "198.18.0.1/24", None)]);
    // Two routers became MASTER at once: two adverts, one heartbeat, a record per change.
    let count = |actions: &[Action], f: fn(&Action) -> bool| actions.iter().filter(|a| f(a)).count();
    assert_eq!(count(&actions, |a| matches!(a, Action::Send { .. })), 2);
    assert_eq!(count(&actions, |a| matches!(a, Action::Heartbeat)), 1);
    assert_eq!(count(&actions, |a| matches!(a, Action::SaveRecord(_))), 2);
    let Some(Action::SaveRecord(record)) = actions.iter().rev().find(|a| matches!(a, Action::SaveRecord(_))) else {
        unreachable!()
    };
    assert!(record.routers.values().all(|s| *s == State::Master));
    let mut heartbeats = 0;
    let mut now = t0;
    for _ in 0..10 {
        now += Duration::from_secs(1);
        let actions = engine.handle_timeout(now);
        heartbeats += count(&actions, |a| matches!(a, Action::Heartbeat));
        assert_eq!(count(&actions, |a| matches!(a, Action::Send { .. })), 2);
    }
    assert_eq!(heartbeats, 10);
}

#[test]
fn a_planned_stop_ends_when_every_started_router_has_handed_over() {
    let t0 = Instant::now();
    let specs =
        vec![spec("master", 1, 255, "eth0", &["198.18.1.1/24"]), spec("waiting", 2, 100, "eth9", &["198.18.1.2/24"])];
    let mut engine = started(specs, &[link(ETH0, "eth0")], &[address(ETH0, "198.18.0.1/24", None)], t0);
    let actions = engine.handle(t0, Event::Shutdown);
    assert!(!actions.contains(&Action::Stopped), "the master keeps its VIPs until the peer holds them");
    assert!(actions.iter().any(|a| matches!(a, Action::Send { priority: 0, .. })));
    // No retries of the waiting router any more.
    assert!(!engine.handle(t0, Event::BurstEnd).iter().any(|a| matches!(a, Action::Attach { .. })));
    // The peer's advert as master arrives: handed over.
    let payload = advert(1, 100, "198.18.1.1");
    let actions = engine.handle(t0 + Duration::from_millis(800), packet((ETH0, Family::V4), &payload));
    assert!(actions.iter().any(|a| matches!(a, Action::RemoveVips { router: RouterId(0), .. })));
    assert_eq!(actions.last(), Some(&Action::Stopped));
}

#[test]
fn a_planned_stop_without_started_routers_ends_at_once() {
    let t0 = Instant::now();
    let mut engine = started(vec![spec("a", 1, 100, "eth9", &["198.18.1.1/24"])], &[], &[], t0);
    assert_eq!(engine.handle(t0, Event::Shutdown), vec![Action::Stopped]);
}

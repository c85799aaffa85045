//! `net` and the VRRP raw socket against the real kernel, each test in its own network
//! namespaces. Needs root.

mod common;

use std::{
    io::Read,
    net::{IpAddr, UdpSocket},
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use common::netns::{Bridge, NetNs, ip_in, join, mac_of, wait_until};
use futures::StreamExt;
use ipnet::IpNet;
use nginx_ha::{
    net::{self, Added, Family, Net, NetError, NetEvent, NetEvents, OWNER_PROTO, Removed},
    vrrp::socket::{Received, VRRP_MULTICAST_V4, VRRP_MULTICAST_V6, VrrpSocket},
};
use socket2::{Domain, Protocol, Socket, Type};

const TIMEOUT: Duration = Duration::from_secs(5);

fn cidr(text: &str) -> IpNet {
    text.parse().unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A namespace with the veth pair `v0`/`v1`, both up (so with carrier), `v0` holding
/// 198.18.0.1/24 and, without waiting for DAD, its IPv6 link-local address.
fn namespace_with_link() -> NetNs {
    let ns = NetNs::new();
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    ns.sysctl("net.ipv6.conf.v0.accept_dad", "0");
    ns.ip(&["addr", "add", "198.18.0.1/24", "dev", "v0"]);
    ns.ip(&["link", "set", "v1", "up"]);
    ns.ip(&["link", "set", "v0", "up"]);
    ns
}

/// A netlink handle in the current namespace, and the index of its `v0`.
async fn net_and_v0() -> (Net, u32) {
    let net = Net::new().await.unwrap();
    let v0 = net.link("v0").await.unwrap().index;
    (net, v0)
}

/// Nodes A (198.18.0.1) and B (198.18.0.2) on one bridge, each through its `eth0`.
fn two_nodes() -> (Bridge, NetNs, NetNs) {
    let (bridge, a, b) = (Bridge::new(), NetNs::new(), NetNs::new());
    bridge.connect(&a, "eth0", "198.18.0.1/24");
    bridge.connect(&b, "eth0", "198.18.0.2/24");
    (bridge, a, b)
}

#[test]
fn adding_and_removing_addresses_is_idempotent() {
    let ns = namespace_with_link();
    let ns_name = ns.name().to_owned();
    ns.run(|| async move {
        let (net, index) = net_and_v0().await;
        for vip in [cidr("198.18.0.100/24"), cidr("fd00:198:18::100/64")] {
            assert_eq!(net.add_address(index, vip, None, OWNER_PROTO).await.unwrap(), Added::New);
            assert_eq!(net.add_address(index, vip, None, OWNER_PROTO).await.unwrap(), Added::AlreadyPresent);
            let listed = net.addresses(index).await.unwrap();
            assert!(listed.iter().any(|a| a.address == vip && a.proto == Some(OWNER_PROTO)), "{listed:?}");
            let shown = ip_in(&ns_name, &["addr", "show", "dev", "v0"]);
            assert!(shown.contains(&format!("{vip} ")), "{shown}");

            assert_eq!(net.del_address(index, vip).await.unwrap(), Removed::Yes);
            assert_eq!(net.del_address(index, vip).await.unwrap(), Removed::WasAbsent);
            assert!(!net.addresses(index).await.unwrap().iter().any(|a| a.address == vip));
            assert!(!ip_in(&ns_name, &["addr", "show", "dev", "v0"]).contains(&format!("{vip} ")));
        }
        // Only an exact match (address and prefix length) is ours to remove.
        assert_eq!(net.del_address(index, cidr("198.18.0.1/32")).await.unwrap(), Removed::WasAbsent);
        match net.add_address(9999, cidr("198.18.0.100/24"), None, OWNER_PROTO).await {
            Err(NetError::NoSuchIndex(9999)) => {}
            other => panic!("expected NoSuchIndex, got {other:?}"),
        }
    });
}

#[test]
fn owner_tag_finds_our_addresses_on_every_interface() {
    let ns = namespace_with_link();
    ns.ip(&["addr", "add", "198.18.0.102/24", "dev", "v0"]); // an operator's, untagged
    ns.run(|| async {
        let (net, v0) = net_and_v0().await;
        let v1 = net.link("v1").await.unwrap().index;
        net.add_address(v0, cidr("198.18.0.100/24"), None, OWNER_PROTO).await.unwrap();
        net.add_address(v1, cidr("fd00:198:18::100/64"), None, OWNER_PROTO).await.unwrap();
        net.add_address(v0, cidr("198.18.0.101/24"), None, 0x42).await.unwrap(); // someone else's

        let mut ours: Vec<_> =
            net.addresses_with_proto(OWNER_PROTO).await.unwrap().into_iter().map(|a| (a.ifindex, a.address)).collect();
        ours.sort();
        let mut expected = vec![(v0, cidr("198.18.0.100/24")), (v1, cidr("fd00:198:18::100/64"))];
        expected.sort();
        assert_eq!(ours, expected);
    });
}

#[test]
fn labels_name_ipv4_aliases_and_bad_ones_are_refused() {
    let ns = namespace_with_link();
    let ns_name = ns.name().to_owned();
    ns.run(|| async move {
        let (net, index) = net_and_v0().await;
        let alias = cidr("198.18.0.107/24");
        net.add_address(index, alias, Some("v0:web"), OWNER_PROTO).await.unwrap();
        let listed = net.addresses(index).await.unwrap();
        let added = listed.iter().find(|a| a.address == alias).expect("alias listed");
        assert_eq!(added.label.as_deref(), Some("v0:web"));
        assert!(ip_in(&ns_name, &["-4", "addr", "show", "dev", "v0"]).contains("v0:web"));

        for (address, label, complaint) in [
            ("198.18.0.108/24", "eth9:1", "start with the interface name"),
            ("198.18.0.108/24", "v0:much-too-long", "15 bytes"),
            ("fd00:198:18::108/64", "v0:v6", "only for IPv4"),
        ] {
            let error = net.add_address(index, cidr(address), Some(label), OWNER_PROTO).await.unwrap_err();
            let message = error.to_string();
            assert!(matches!(error, NetError::InvalidLabel { .. }), "{message}");
            assert!(message.contains(label) && message.contains("v0") && message.contains(complaint), "{message}");
        }
        assert!(!net.addresses(index).await.unwrap().iter().any(|a| a.address.addr() == ip("198.18.0.108")));
    });
}

#[test]
fn link_reports_index_mac_and_state() {
    let ns = namespace_with_link();
    let ns_name = ns.name().to_owned();
    let mac = mac_of(&ns, "v0");
    ns.run(|| async move {
        let net = Net::new().await.unwrap();
        let link = net.link("v0").await.unwrap();
        assert!(link.index > 1 && link.name == "v0" && link.up, "{link:?}");
        let printed = link.mac.map(|m| m.map(|b| format!("{b:02x}")).join(":"));
        assert_eq!(printed.as_deref(), Some(mac.as_str()));

        ip_in(&ns_name, &["link", "set", "v1", "down"]); // v0 loses its carrier
        assert!(!net.link("v0").await.unwrap().up);
        ip_in(&ns_name, &["link", "set", "v1", "up"]);
        assert!(net.link("v0").await.unwrap().up);
        ip_in(&ns_name, &["link", "set", "v0", "down"]);
        assert!(!net.link("v0").await.unwrap().up);

        match net.link("nosuch0").await {
            Err(NetError::NoSuchLink(name)) => assert_eq!(name, "nosuch0"),
            other => panic!("expected NoSuchLink, got {other:?}"),
        }
    });
}

#[test]
fn primary_address_skips_secondaries_and_our_own_vips() {
    let ns = namespace_with_link();
    ns.ip(&["link", "add", "w0", "type", "veth", "peer", "name", "w1"]); // down, no addresses
    ns.run(|| async {
        let (net, index) = net_and_v0().await;
        // A VIP in the interface's subnet is a secondary; one outside it becomes primary.
        net.add_address(index, cidr("198.18.0.100/24"), None, OWNER_PROTO).await.unwrap();
        net.add_address(index, cidr("198.18.9.1/32"), None, OWNER_PROTO).await.unwrap();
        assert_eq!(net.primary_address(index, Family::V4).await.unwrap(), Some(ip("198.18.0.1")));

        let v6 = net.primary_address(index, Family::V6).await.unwrap();
        assert!(matches!(v6, Some(IpAddr::V6(a)) if a.is_unicast_link_local()), "{v6:?}");

        let bare = net.link("w0").await.unwrap().index;
        assert_eq!(net.primary_address(bare, Family::V4).await.unwrap(), None);
        assert_eq!(net.primary_address(bare, Family::V6).await.unwrap(), None);
    });
}

#[test]
fn ipv6_vip_is_usable_at_once() {
    // Duplicate address detection left on, as on a real host.
    let ns = NetNs::new();
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    ns.ip(&["link", "set", "v1", "up"]);
    ns.ip(&["link", "set", "v0", "up"]);
    let ns_name = ns.name().to_owned();
    ns.run(|| async move {
        let (net, index) = net_and_v0().await;
        // The link-local address is still tentative, so not yet a usable source.
        assert_eq!(net.primary_address(index, Family::V6).await.unwrap(), None);

        net.add_address(index, cidr("fd00:198:18::10/64"), None, OWNER_PROTO).await.unwrap();
        UdpSocket::bind("[fd00:198:18::10]:0").expect("the VIP is usable without waiting for DAD");

        // The control: an address added the ordinary way is still tentative.
        ip_in(&ns_name, &["addr", "add", "fd00:198:18::11/64", "dev", "v0"]);
        let error = UdpSocket::bind("[fd00:198:18::11]:0").expect_err("DAD is running");
        assert_eq!(error.raw_os_error(), Some(libc::EADDRNOTAVAIL));

        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while net.primary_address(index, Family::V6).await.unwrap().is_none() {
            assert!(tokio::time::Instant::now() < deadline, "the link-local address never passed DAD");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

async fn expect_event(events: &mut NetEvents, what: &str, wanted: impl Fn(&NetEvent) -> bool) {
    let found = tokio::time::timeout(TIMEOUT, async {
        while let Some(event) = events.next().await {
            if wanted(&event) {
                return;
            }
        }
        panic!("the event stream ended while waiting for {what}");
    });
    found.await.unwrap_or_else(|_| panic!("no event for {what} within {TIMEOUT:?}"));
}

#[test]
fn events_report_address_removal_and_link_changes() {
    let bridge = Bridge::new();
    let a = NetNs::new();
    let port = bridge.connect(&a, "eth0", "198.18.0.1/24");
    let (a_name, bridge_name) = (a.name().to_owned(), bridge.ns.name().to_owned());
    a.run(|| async move {
        let net = Net::new().await.unwrap();
        let eth0 = net.link("eth0").await.unwrap().index;
        let mut events = net::events().unwrap();
        let link_is = |up: bool| move |e: &NetEvent| matches!(e, NetEvent::LinkChanged { index, name, up: u } if *index == eth0 && name == "eth0" && *u == up);

        let vip = cidr("198.18.0.100/24");
        net.add_address(eth0, vip, None, OWNER_PROTO).await.unwrap();
        expect_event(&mut events, "our VIP added", |e| {
            matches!(e, NetEvent::AddressAdded(a) if a.address == vip && a.ifindex == eth0 && a.proto == Some(OWNER_PROTO))
        })
        .await;

        ip_in(&a_name, &["addr", "del", "198.18.0.100/24", "dev", "eth0"]);
        expect_event(&mut events, "the VIP removed by someone else", |e| {
            matches!(e, NetEvent::AddressRemoved(a) if a.address == vip && a.ifindex == eth0)
        })
        .await;

        ip_in(&a_name, &["link", "set", "eth0", "down"]);
        expect_event(&mut events, "eth0 set down", link_is(false)).await;
        ip_in(&a_name, &["link", "set", "eth0", "up"]);
        expect_event(&mut events, "eth0 set up", link_is(true)).await;

        ip_in(&bridge_name, &["link", "set", &port, "down"]);
        expect_event(&mut events, "eth0 losing its carrier", link_is(false)).await;
        assert!(!net.link("eth0").await.unwrap().up);
        ip_in(&bridge_name, &["link", "set", &port, "up"]);
        expect_event(&mut events, "eth0 getting its carrier back", link_is(true)).await;
    });
}

#[test]
fn local_routes_are_added_listed_reported_and_removed() {
    let ns = namespace_with_link();
    let ns_name = ns.name().to_owned();
    ns.run(|| async move {
        let net = Net::new().await.unwrap();
        let lo = net.link("lo").await.unwrap().index;
        let mut events = net::route_events().unwrap();
        let proto = net::ANYCAST_ADDRESS_PROTO;
        for (address, text) in [(cidr("198.19.10.1/32"), "198.19.10.1"), (cidr("fd00:198:19::1/128"), "fd00:198:19::1")] {
            assert_eq!(net.add_local_route(address, lo, proto).await.unwrap(), net::RouteChange::Done);
            assert_eq!(net.add_local_route(address, lo, proto).await.unwrap(), net::RouteChange::AlreadySo);
            let family = if address.addr().is_ipv4() { "-4" } else { "-6" };
            let shown = ip_in(&ns_name, &[family, "-N", "route", "show", "table", "local", text]);
            assert!(shown.starts_with(&format!("2 {text} dev lo ")) && shown.contains(" proto 99 "), "{shown}");
            let ours = net.local_routes_with_proto(proto).await.unwrap();
            assert!(
                ours.iter().any(|r| r.destination == address && r.oif == Some(lo) && r.local && r.table == net::LOCAL_TABLE),
                "{ours:?}"
            );
            // Removed by someone else: the event says which table, type and tag.
            ip_in(&ns_name, &[family, "route", "del", "local", text, "dev", "lo", "table", "local"]);
            expect_event(&mut events, "our local route removed", |e| {
                matches!(e, NetEvent::RouteRemoved(r) if r.destination == address && r.table == net::LOCAL_TABLE && r.local && r.proto == proto && r.oif == Some(lo))
            })
            .await;
            assert_eq!(net.del_local_route(address, lo, proto).await.unwrap(), net::RouteChange::AlreadySo);
            net.add_local_route(address, lo, proto).await.unwrap();
            assert_eq!(net.del_local_route(address, lo, proto).await.unwrap(), net::RouteChange::Done);
            assert!(net.local_routes_with_proto(proto).await.unwrap().is_empty());
        }
    });
}

#[test]
fn announce_repoints_neighbours_to_the_new_master() {
    let (_bridge, a, b) = two_nodes();
    // B still believes the VIPs are at the old master's MAC.
    let old_mac = "02:00:00:00:00:99";
    b.ip(&["neigh", "replace", "198.18.0.100", "lladdr", old_mac, "dev", "eth0", "nud", "stale"]);
    b.ip(&["-6", "neigh", "replace", "fd00:198:18::100", "lladdr", old_mac, "dev", "eth0", "nud", "stale"]);

    let capture = capture_announcements(&b, Duration::from_secs(2));
    let sent = a.run(|| async {
        let net = Net::new().await.unwrap();
        let eth0 = net.link("eth0").await.unwrap();
        for vip in ["198.18.0.100/24", "fd00:198:18::100/64"] {
            net.add_address(eth0.index, cidr(vip), None, OWNER_PROTO).await.unwrap();
        }
        net::announce(&eth0, &[ip("198.18.0.100"), ip("fd00:198:18::100")]).await.unwrap()
    });
    assert_eq!(sent, 2 * net::ANNOUNCE_REPEAT);
    // Each address is announced ANNOUNCE_REPEAT times in one burst, and B sees every frame.
    let (arps, nas) = join(capture);
    assert_eq!((arps, nas), (net::ANNOUNCE_REPEAT, net::ANNOUNCE_REPEAT), "gratuitous ARPs and NAs seen by B");

    let a_mac = mac_of(&a, "eth0");
    for vip in ["198.18.0.100", "fd00:198:18::100"] {
        wait_until(TIMEOUT, &format!("B's neighbour entry for {vip} to show A's MAC"), || {
            b.ip(&["neigh", "show", vip, "dev", "eth0"]).contains(&a_mac)
        });
    }
}

/// Counts, for `wait`, the gratuitous ARPs for 198.18.0.100 and the unsolicited neighbour
/// advertisements for fd00:198:18::100 arriving on `ns`'s eth0. Returns once it listens.
fn capture_announcements(ns: &NetNs, wait: Duration) -> JoinHandle<(usize, usize)> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let capture = ns.enter(move || {
        let all = (libc::ETH_P_ALL as u16).to_be() as i32;
        let socket = socket2::Socket::new(socket2::Domain::PACKET, socket2::Type::DGRAM, Some(all.into())).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        ready_tx.send(()).unwrap();
        let (vip4, vip6) = ([198u8, 18, 0, 100], "fd00:198:18::100".parse::<std::net::Ipv6Addr>().unwrap().octets());
        let (mut arps, mut nas) = (0, 0);
        let deadline = std::time::Instant::now() + wait;
        let mut frame = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
        while std::time::Instant::now() < deadline {
            let Ok(len) = socket.recv(&mut frame) else { continue };
            // SAFETY: recv initialised the first `len` bytes.
            let packet: Vec<u8> = frame[..len].iter().map(|b| unsafe { b.assume_init() }).collect();
            // A datagram packet socket gives the network-layer packet: ARP or IPv6.
            let is_garp =
                packet.len() >= 28 && packet[6..8] == [0, 1] && packet[14..18] == vip4 && packet[24..28] == vip4;
            let is_na = packet.len() >= 64
                && packet[0] >> 4 == 6
                && packet[6] == 58
                && packet[40] == 136
                && packet[48..64] == vip6;
            arps += usize::from(is_garp);
            nas += usize::from(is_na);
        }
        (arps, nas)
    });
    ready_rx.recv_timeout(TIMEOUT).expect("the capture socket did not open");
    capture
}

/// Opens a VRRP socket on `ns`'s eth0; the handle yields the first packet it receives,
/// or `None` after `wait`. Returns once the socket is open (and joined).
fn receive_one(ns: &NetNs, family: Family, multicast: bool, wait: Duration) -> JoinHandle<Option<Received>> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let receiver = ns.spawn(move || async move {
        let index = Net::new().await.unwrap().link("eth0").await.unwrap().index;
        let socket = VrrpSocket::open(index, "eth0", family, multicast).unwrap();
        ready_tx.send(()).unwrap();
        let received = tokio::time::timeout(wait, socket.recv()).await.ok();
        received.map(|r| r.expect("recv"))
    });
    if ready_rx.recv_timeout(TIMEOUT).is_err() {
        join(receiver);
        panic!("the receiving socket did not open");
    }
    receiver
}

/// Sends `payload` to `dst` from `ns`'s eth0, from `source` when given; returns the
/// source address the sender expects the receiver to see (its primary address otherwise).
fn send_one(ns: &NetNs, family: Family, dst: IpAddr, source: Option<IpAddr>, payload: &'static [u8]) -> IpAddr {
    ns.run(move || async move {
        let net = Net::new().await.unwrap();
        let index = net.link("eth0").await.unwrap().index;
        let socket = VrrpSocket::open(index, "eth0", family, true).unwrap();
        let src = match source {
            Some(src) => src,
            None => net.primary_address(index, family).await.unwrap().expect("a primary address"),
        };
        if source.is_some() {
            socket.set_source(src).unwrap();
        }
        socket.send(dst, payload).await.unwrap();
        src
    })
}

/// Captures on `ns` (packet socket) the first VRRP packet of `family` to arrive; the handle
/// yields (TOS or traffic class, TTL or hop limit) from its IP header as it was on the wire,
/// or `None` after `wait`. Returns once the capture is open.
fn capture_vrrp_header(ns: &NetNs, family: Family, wait: Duration) -> JoinHandle<Option<(u8, u8)>> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let capture = ns.enter(move || {
        // SOCK_DGRAM: the kernel strips the link-layer header, the IP header stays.
        let all = i32::from((libc::ETH_P_ALL as u16).to_be());
        let socket = Socket::new(Domain::PACKET, Type::DGRAM, Some(Protocol::from(all))).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        ready_tx.send(()).unwrap();
        let deadline = Instant::now() + wait;
        let mut buffer = [0u8; 2048];
        while Instant::now() < deadline {
            let Ok(length) = (&socket).read(&mut buffer) else { continue };
            let ip = &buffer[..length];
            match family {
                Family::V4 if length >= 20 && ip[0] >> 4 == 4 && ip[9] == 112 => return Some((ip[1], ip[8])),
                Family::V6 if length >= 40 && ip[0] >> 4 == 6 && ip[6] == 112 => {
                    return Some(((ip[0] << 4) | (ip[1] >> 4), ip[7]));
                }
                _ => {}
            }
        }
        None
    });
    if ready_rx.recv_timeout(TIMEOUT).is_err() {
        join(capture);
        panic!("the capture did not open");
    }
    capture
}

#[test]
fn vrrp_adverts_carry_tos_0xc0_and_ttl_255_on_the_wire() {
    let (_bridge, a, b) = two_nodes();
    for (family, dst) in [
        (Family::V4, IpAddr::from(VRRP_MULTICAST_V4)),
        (Family::V4, ip("198.18.0.2")),
        (Family::V6, VRRP_MULTICAST_V6.into()),
    ] {
        let capture = capture_vrrp_header(&b, family, TIMEOUT);
        send_one(&a, family, dst, None, b"advert");
        let header = join(capture).unwrap_or_else(|| panic!("no VRRP packet to {dst} captured on B"));
        // DSCP CS6 (network control) like keepalived; TTL 255 proves the sender is on the link.
        assert_eq!(header, (0xc0, 255), "to {dst}: (TOS / traffic class, TTL / hop limit)");
    }
}

#[test]
fn vrrp_multicast_ipv4_reaches_the_peer() {
    let (_bridge, a, b) = two_nodes();
    let receiver = receive_one(&b, Family::V4, true, TIMEOUT);
    let src = send_one(&a, Family::V4, VRRP_MULTICAST_V4.into(), None, b"advert v4");
    let received = join(receiver).expect("B received the advert");
    assert_eq!(
        received,
        Received { src, dst: VRRP_MULTICAST_V4.into(), hop_limit: 255, payload: b"advert v4".to_vec() }
    );
    assert_eq!(src, ip("198.18.0.1"));
}

#[test]
fn vrrp_multicast_ipv6_reaches_the_peer_from_our_link_local() {
    let (_bridge, a, b) = two_nodes();
    let link_local = a.run(|| async {
        let net = Net::new().await.unwrap();
        let index = net.link("eth0").await.unwrap().index;
        net.primary_address(index, Family::V6).await.unwrap().expect("a link-local address")
    });
    let receiver = receive_one(&b, Family::V6, true, TIMEOUT);
    send_one(&a, Family::V6, VRRP_MULTICAST_V6.into(), Some(link_local), b"advert v6");
    let received = join(receiver).expect("B received the advert");
    assert_eq!(
        received,
        Received { src: link_local, dst: VRRP_MULTICAST_V6.into(), hop_limit: 255, payload: b"advert v6".to_vec() }
    );
}

#[test]
fn vrrp_unicast_ipv4_uses_the_chosen_source() {
    let (_bridge, a, b) = two_nodes();
    a.ip(&["addr", "add", "198.18.0.50/24", "dev", "eth0"]);
    let receiver = receive_one(&b, Family::V4, false, TIMEOUT);
    send_one(&a, Family::V4, ip("198.18.0.2"), Some(ip("198.18.0.50")), b"unicast advert");
    let received = join(receiver).expect("B received the advert");
    assert_eq!(
        received,
        Received { src: ip("198.18.0.50"), dst: ip("198.18.0.2"), hop_limit: 255, payload: b"unicast advert".to_vec() }
    );
}

#[test]
fn vrrp_multicast_does_not_loop_back_to_the_sender() {
    let (_bridge, a, b) = two_nodes();
    for (family, group) in [(Family::V4, IpAddr::from(VRRP_MULTICAST_V4)), (Family::V6, VRRP_MULTICAST_V6.into())] {
        let peer = receive_one(&b, family, true, TIMEOUT);
        let own = a.run(move || async move {
            let index = Net::new().await.unwrap().link("eth0").await.unwrap().index;
            let socket = VrrpSocket::open(index, "eth0", family, true).unwrap();
            socket.send(group, b"advert").await.unwrap();
            tokio::time::timeout(Duration::from_secs(1), socket.recv()).await.ok()
        });
        assert!(own.is_none(), "{family}: the sender received its own advert: {own:?}");
        assert!(join(peer).is_some(), "{family}: the peer did not receive the advert");
    }
}

#[test]
fn handles_can_move_between_tasks() {
    fn shareable<T: Send + Sync>() {}
    fn movable<T: Send>() {}
    shareable::<Net>();
    shareable::<VrrpSocket>();
    movable::<NetEvents>();
}

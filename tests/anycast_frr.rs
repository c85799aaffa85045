//! Anycast through real FRR (Debian 12's frr 8.4: zebra + bgpd, started by the test) with
//! conf/anycast/frr.conf as shipped, next to a node running BIRD with conf/anycast/bird.conf;
//! both run nginx-ha (real nginx) and peer with a BIRD router that puts what it learns in its
//! FIB (ECMP); a client reaches the anycast address through the router.
//!
//! ```text
//!  client 198.18.2.10 ── edge ── 198.18.2.1 router 198.18.1.1 ── fabric ── node1 198.18.1.11 (nginx-ha + FRR)
//!                                                                       └─ node2 198.18.1.12 (nginx-ha + BIRD)
//! ```
//!
//! The FRR node runs `hold = "local-route"`: 198.19.10.1 is a local route in table 255, not an
//! address on lo. An address would give zebra a connected route for the same /32, which beats
//! the route imported from table 110 (zebra redistributes only the selected one), so FRR 8.4
//! would announce nothing; the local route is not seen by zebra at all. The BIRD node keeps
//! the default `hold = "address"`.
//!
//! Skipped (with a message) when FRR is not installed: `apt-get install frr`.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::anycast::{ANYCAST, Upstream, next_hops, node_bird_config};
use common::bird::Bird;
use common::cluster::*;
use common::frr::{self, Frr};
use common::netns::{NetNs, wait_until};

const NODE_FRR: &str = include_str!("../conf/anycast/frr.conf");
const FRR_NODE: &str = "198.18.1.11";
const BIRD_NODE: &str = "198.18.1.12";
const BOTH: [&str; 2] = [FRR_NODE, BIRD_NODE];

struct Fabric {
    // Dropped in field order: the nodes' daemons first, the router and its namespaces last.
    frr: Frr,
    frr_node: Node,
    _bird: Bird,
    bird_node: Node,
    upstream: Upstream,
    _frr_dir: tempfile::TempDir,
}

fn anycast_table(extra: &str) -> String {
    format!("[[anycast]]\nname = \"web\"\naddresses = [\"{ANYCAST}/32\"]\ndrain_ms = 300\n{extra}")
}

impl Fabric {
    fn new() -> Fabric {
        // FRR's daemons run as the frr user: their directory is not under a root-only one.
        let frr_dir = tempfile::Builder::new().prefix("nginx-ha-frr-").tempdir().unwrap();
        let upstream = Upstream::new("nginx-ha-anycast-frr-", &[("node1", FRR_NODE), ("node2", BIRD_NODE)]);

        let frr_node = upstream.node("node1", FRR_NODE, &anycast_table("hold = \"local-route\"\n"));
        // conf/anycast/frr.conf as shipped: its router id and addresses are node1's.
        let frr = Frr::start(&frr_node.ns, frr_dir.path(), "node1", NODE_FRR);

        let bird_node = upstream.node("node2", BIRD_NODE, &anycast_table(""));
        let bird = Bird::start(&bird_node.ns, bird_node.dir.path(), "node2", &node_bird_config(BIRD_NODE));

        frr.wait_established("198.18.1.1");
        bird.wait_established("upstream");
        Fabric { frr, frr_node, _bird: bird, bird_node, upstream, _frr_dir: frr_dir }
    }

    fn wait_next_hops(&self, expected: &[&str]) -> Duration {
        self.upstream.wait_next_hops(expected, || self.dump())
    }

    /// zebra's view of the anycast prefix in its main RIB: (protocol, selected) per entry.
    fn zebra_entries(&self) -> Vec<(String, bool)> {
        let rib = self.frr.json(&format!("show ip route {ANYCAST}/32 json"));
        rib[format!("{ANYCAST}/32")]
            .as_array()
            .into_iter()
            .flatten()
            .map(|entry| {
                (entry["protocol"].as_str().unwrap_or("?").to_string(), entry["selected"].as_bool().unwrap_or(false))
            })
            .collect()
    }

    /// The prefixes in bgpd's table (what it would announce).
    fn bgp_prefixes(&self) -> Vec<String> {
        let table = self.frr.json("show bgp ipv4 unicast json");
        table["routes"].as_object().map(|routes| routes.keys().cloned().collect()).unwrap_or_default()
    }

    fn announced(&self) -> Option<bool> {
        self.frr_node.status()?["anycast"][0]["announced"].as_bool()
    }

    /// Waits until the client has been answered by both nodes (ECMP on ports at the router).
    fn wait_served_by_both(&self) {
        let mut served = BTreeSet::new();
        wait_until(PATIENCE, "the client served by node1 and node2", || {
            served.extend(self.upstream.client.get(ANYCAST));
            served.len() == 2
        });
    }

    fn dump(&self) -> String {
        format!(
            "{}\nnode1 table local:\n{}\nnode1 zebra:\n{}",
            self.upstream.dump(),
            self.frr_node.ns.ip(&["route", "show", "table", "local"]),
            self.frr.vtysh(&[
                "show ip route",
                "show ip route table 110",
                "show bgp ipv4 unicast",
                &format!("show bgp ipv4 unicast {ANYCAST}/32"),
                "show bgp ipv4 unicast summary"
            ])
        )
    }
}

fn table_route(ns: &NetNs) -> bool {
    ns.ip(&["route", "show", "table", "110"]).contains(&format!("{ANYCAST} dev lo proto 110 scope link"))
}

/// Our local route for `address`: `local ADDRESS dev lo proto 99 scope host` in table 255.
/// Numeric (`ip -N`: type 2 = local, scope 254 = host), as iproute2 names protocol 99 "openr".
fn local_route(ns: &NetNs, address: &str) -> bool {
    ns.ip(&["-N", "route", "show", "table", "local"]).lines().any(|line| {
        line.starts_with(&format!("2 {address} dev lo ")) && line.contains(" proto 99 ") && line.contains(" scope 254")
    })
}

fn address_on_lo(ns: &NetNs) -> bool {
    ns.ip(&["addr", "show", "dev", "lo"]).contains(&format!("{ANYCAST}/"))
}

#[test]
fn frr_announces_a_local_route_node_and_withdraws_it_when_nginx_hangs_or_stops() {
    if let Some(missing) = frr::missing() {
        eprintln!("skip: FRR is not installed: {missing} (apt-get install frr)");
        return;
    }
    let mut fabric = Fabric::new();
    // Both nodes announce: the router has the prefix through FRR and through BIRD (ECMP).
    let took = fabric.wait_next_hops(&BOTH);
    eprintln!("announced through FRR and BIRD after {took:?}");
    assert_eq!(fabric.announced(), Some(true));
    assert_eq!(fabric.bird_node.status().unwrap()["anycast"][0]["announced"], true);
    let ns = &fabric.frr_node.ns;
    // node1 holds the address as a local route, not an address: zebra has no connected
    // route, selects the one imported from table 110, and bgpd announces it.
    assert!(local_route(ns, ANYCAST), "{}", fabric.dump());
    assert!(!address_on_lo(ns), "{}", ns.ip(&["addr", "show", "dev", "lo"]));
    assert!(table_route(ns));
    let entries = fabric.zebra_entries();
    assert!(entries.contains(&("table".into(), true)), "{entries:?}\n{}", fabric.dump());
    assert!(!entries.iter().any(|(protocol, _)| protocol == "connected"), "{entries:?}");
    assert_eq!(fabric.bgp_prefixes(), vec![format!("{ANYCAST}/32")]);
    // The client is served by both, node1 through its local route.
    fabric.wait_served_by_both();

    // node1's nginx hangs: its probe fails, nginx-ha takes the route out of table 110, FRR
    // withdraws it; the local route stays (connections to it go on).
    fabric.frr_node.signal_nginx(libc::SIGSTOP);
    let took = fabric.wait_next_hops(&[BIRD_NODE]);
    eprintln!("hung nginx on the FRR node withdrawn after {took:?}");
    assert_eq!(fabric.announced(), Some(false));
    assert!(!table_route(&fabric.frr_node.ns) && local_route(&fabric.frr_node.ns, ANYCAST));
    for _ in 0..10 {
        assert_eq!(fabric.upstream.client.get(ANYCAST).as_deref(), Some("node2"));
    }
    fabric.frr_node.signal_nginx(libc::SIGCONT);
    let took = fabric.wait_next_hops(&BOTH);
    eprintln!("announced again through FRR {took:?} after SIGCONT");

    // The local route removed behind nginx-ha's back is put back (and the node still serves).
    fabric.frr_node.ns.ip(&["route", "del", "local", ANYCAST, "dev", "lo", "table", "local"]);
    wait_until(PATIENCE, "the local route back in node1's table 255", || local_route(&fabric.frr_node.ns, ANYCAST));
    assert!(fabric.frr_node.log().contains("local route was removed behind our back"), "{}", fabric.frr_node.log());
    fabric.wait_next_hops(&BOTH);
    fabric.wait_served_by_both();

    // A planned stop (SIGTERM): withdrawn through FRR while nginx still serves, then nginx
    // stops and the local route goes with nginx-ha.
    let nginx = fabric.frr_node.nginx_pids();
    let stopping = Instant::now();
    let (status, withdrawn_after, serving_when_withdrawn) = std::thread::scope(|scope| {
        let (router, node) = (&fabric.upstream.router, &mut fabric.frr_node);
        let stopped = scope.spawn(move || node.stop());
        wait_until(PATIENCE, "node1 withdrawn from the router's FIB", || {
            next_hops(router) == BTreeSet::from([BIRD_NODE.to_string()])
        });
        let withdrawn_after = stopping.elapsed();
        let serving = nginx.iter().all(|pid| is_nginx(*pid));
        (stopped.join().unwrap(), withdrawn_after, serving)
    });
    eprintln!(
        "planned stop: withdrawn through FRR after {withdrawn_after:?}, nginx-ha gone after {:?}",
        stopping.elapsed()
    );
    assert!(status.success(), "{status:?}");
    assert!(serving_when_withdrawn, "node1's nginx stopped before FRR withdrew its route");
    assert!(!local_route(&fabric.frr_node.ns, ANYCAST), "{}", fabric.dump());
    assert!(!table_route(&fabric.frr_node.ns));
    assert!(fabric.frr_node.nginx_pids().is_empty(), "nginx stopped with nginx-ha");
    assert!(fabric.bgp_prefixes().is_empty(), "{}", fabric.dump());

    // Restarted: announced again through FRR.
    fabric.frr_node.start();
    let took = fabric.wait_next_hops(&BOTH);
    eprintln!("restarted nginx-ha announced through FRR after {took:?}");
    fabric.wait_served_by_both();

    // A prefix outside frr.conf's prefix list is not announced.
    let ns = &fabric.frr_node.ns;
    ns.ip(&["route", "add", "198.19.11.1/32", "dev", "lo", "table", "110", "proto", "static", "scope", "link"]);
    wait_until(PATIENCE, "198.19.11.1/32 imported by zebra", || {
        fabric.frr.vtysh(&["show ip route 198.19.11.1/32"]).contains("table")
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(!fabric.upstream.router.ip(&["route", "show"]).contains("198.19.11.1"), "{}", fabric.dump());
    ns.ip(&["route", "del", "198.19.11.1/32", "table", "110"]);

    // Killed, with a stale local route tagged as ours left next to the configured one: the
    // next nginx-ha removes the stale one and keeps the configured one.
    fabric.frr_node.kill_daemon();
    let ns = &fabric.frr_node.ns;
    ns.ip(&["route", "add", "local", "198.19.99.1", "dev", "lo", "table", "local", "proto", "99", "scope", "host"]);
    assert!(local_route(ns, "198.19.99.1") && local_route(ns, ANYCAST));
    fabric.frr_node.start();
    wait_until(PATIENCE, "the stale local route removed", || !local_route(&fabric.frr_node.ns, "198.19.99.1"));
    assert!(fabric.frr_node.log().contains("anycast local route left behind"), "{}", fabric.frr_node.log());
    assert!(local_route(&fabric.frr_node.ns, ANYCAST));
    fabric.wait_next_hops(&BOTH);
}

//! Anycast through real BIRD 2: three nodes each run nginx-ha (real nginx) and BIRD with
//! conf/anycast/bird.conf; a router namespace runs BIRD with ECMP into its kernel table; a
//! client namespace reaches the anycast address through the router.
//!
//! ```text
//!  client 198.18.2.10 ── edge ── 198.18.2.1 router 198.18.1.1 ── fabric ── node1..3 198.18.1.11..13
//!                                                                          (198.19.10.1 on lo)
//! ```

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::anycast::{ANYCAST, Upstream, next_hops, node_bird_config};
use common::bird::Bird;
use common::cluster::*;
use common::netns::wait_until;

struct Fabric {
    // Dropped in field order: the nodes first, the router and its namespaces last.
    nodes: Vec<(Node, Bird)>,
    upstream: Upstream,
}

/// The `[[anycast]]` table of every node; a short drain unless `extra` sets one, so that the
/// nodes stop quickly when a test ends.
fn anycast_table(extra: &str) -> String {
    let drain = if extra.contains("drain_ms") { "" } else { "drain_ms = 300\n" };
    format!("[[anycast]]\nname = \"web\"\naddresses = [\"{ANYCAST}/32\"]\n{drain}{extra}\n")
}

impl Fabric {
    fn new(extra: &str) -> Fabric {
        let upstream = Upstream::new("nginx-ha-anycast-", &NODES);
        let nodes: Vec<(Node, Bird)> = NODES
            .iter()
            .map(|&(name, address)| {
                let node = upstream.node(name, address, &anycast_table(extra));
                let bird = Bird::start(&node.ns, node.dir.path(), &node.name, &node_bird_config(address));
                (node, bird)
            })
            .collect();
        for (_, bird) in &nodes {
            bird.wait_established("upstream");
        }
        Fabric { nodes, upstream }
    }

    fn next_hops(&self) -> BTreeSet<String> {
        self.upstream.next_hops()
    }

    fn wait_next_hops(&self, expected: &[&str]) -> Duration {
        self.upstream.wait_next_hops(expected, || self.dump())
    }

    fn node(&self, i: usize) -> &Node {
        &self.nodes[i - 1].0
    }

    fn announced(&self, i: usize) -> Option<bool> {
        self.node(i).status()?["anycast"][0]["announced"].as_bool()
    }

    fn dump(&self) -> String {
        self.upstream.dump()
    }
}

fn hops(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(ToString::to_string).collect()
}

const NODES: [(&str, &str); 3] = [("node1", "198.18.1.11"), ("node2", "198.18.1.12"), ("node3", "198.18.1.13")];
const ALL: [&str; 3] = [NODES[0].1, NODES[1].1, NODES[2].1];

#[test]
fn all_three_nodes_are_next_hops_and_a_hung_nginx_is_withdrawn() {
    let fabric = Fabric::new("");
    fabric.wait_next_hops(&ALL);
    // The route in the node's table is what BIRD learns, tagged as ours; the address is on lo.
    let table = fabric.node(1).ns.ip(&["route", "show", "table", "110"]);
    assert!(table.contains(&format!("{ANYCAST} dev lo proto 110 scope link")), "{table}");
    assert!(fabric.node(1).ns.ip(&["addr", "show", "dev", "lo"]).contains(&format!("{ANYCAST}/32")));
    assert_eq!(fabric.announced(1), Some(true));
    // The client reaches every node through the router (ECMP on ports).
    let mut served = BTreeSet::new();
    wait_until(PATIENCE, "the client served by all three nodes", || {
        served.extend(fabric.upstream.client.get(ANYCAST));
        served.len() == 3
    });

    // node2's nginx hangs: the probe fails and the route is withdrawn, the address stays.
    fabric.node(2).signal_nginx(libc::SIGSTOP);
    let took = fabric.wait_next_hops(&["198.18.1.11", "198.18.1.13"]);
    eprintln!("hung nginx withdrawn from the router's FIB after {took:?}");
    assert_eq!(fabric.announced(2), Some(false), "{}", fabric.dump());
    assert!(fabric.node(2).ns.ip(&["addr", "show", "dev", "lo"]).contains(&format!("{ANYCAST}/32")));
    assert!(!fabric.node(2).ns.ip(&["route", "show", "table", "110"]).contains(ANYCAST));
    for _ in 0..20 {
        let answer = fabric.upstream.client.get(ANYCAST);
        assert!(matches!(answer.as_deref(), Some("node1" | "node3")), "{answer:?}");
    }
    fabric.node(2).signal_nginx(libc::SIGCONT);
    fabric.wait_next_hops(&ALL);
}

#[test]
fn a_route_removed_behind_our_back_is_put_back() {
    let fabric = Fabric::new("");
    fabric.wait_next_hops(&ALL);
    fabric.node(3).ns.ip(&["route", "del", &format!("{ANYCAST}/32"), "table", "110"]);
    wait_until(PATIENCE, "the route back in node3's table 110", || {
        fabric.node(3).ns.ip(&["route", "show", "table", "110"]).contains(ANYCAST)
    });
    assert!(fabric.node(3).log().contains("removed behind our back"), "{}", fabric.node(3).log());
    fabric.wait_next_hops(&ALL);
}

#[test]
fn a_crashed_nginx_restarted_within_the_grace_keeps_the_route() {
    let fabric = Fabric::new("restart_grace_ms = 3000");
    fabric.wait_next_hops(&ALL);
    // The first crash, seconds after the start: restarted at once, within the grace.
    std::thread::sleep(Duration::from_secs(2));
    let master = fabric.node(1).nginx_master().expect("node1's nginx runs");
    signal(master, libc::SIGKILL);
    // Watch the router's FIB for the whole restart: node1 must never leave it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut restarted = false;
    while Instant::now() < deadline {
        let hops = fabric.next_hops();
        assert!(hops.contains("198.18.1.11"), "node1 withdrawn during a restart in place: {hops:?}\n{}", fabric.dump());
        restarted |= fabric.node(1).nginx_master().is_some_and(|pid| pid != master && is_nginx(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(restarted, "nginx was not restarted:\n{}", fabric.node(1).log());
    assert_eq!(fabric.announced(1), Some(true));
}

#[test]
fn a_planned_stop_loses_no_request_and_the_restarted_node_is_announced_again() {
    let mut fabric = Fabric::new("drain_ms = 2000");
    fabric.wait_next_hops(&ALL);
    let poller = fabric.upstream.client.poll(ANYCAST);
    std::thread::sleep(Duration::from_secs(1));
    let nginx = fabric.node(2).nginx_pids();
    let stopping = Instant::now();
    let (router, node) = (&fabric.upstream.router, &mut fabric.nodes[1].0);
    let (stop, withdrawn_after, serving_when_withdrawn) = std::thread::scope(|scope| {
        let stopped = scope.spawn(|| node.stop());
        wait_until(PATIENCE, "node2 withdrawn from the router's FIB", || {
            next_hops(router) == hops(&["198.18.1.11", "198.18.1.13"])
        });
        let withdrawn_after = stopping.elapsed();
        let serving = nginx.iter().all(|pid| is_nginx(*pid));
        (stopped.join().unwrap(), withdrawn_after, serving)
    });
    let stopped_after = stopping.elapsed();
    eprintln!("planned stop: withdrawn after {withdrawn_after:?}, nginx-ha gone after {stopped_after:?}");
    assert!(stop.success(), "{stop:?}");
    assert!(serving_when_withdrawn, "node2's nginx stopped before its route was withdrawn");
    assert!(stopped_after >= Duration::from_secs(2), "nginx-ha stopped after {stopped_after:?}, before drain_ms");
    assert_eq!(fabric.next_hops(), hops(&["198.18.1.11", "198.18.1.13"]));
    std::thread::sleep(Duration::from_millis(500));
    let answers = poller.stop();
    let lost: Vec<_> = answers.iter().filter(|(_, body)| body.is_none()).collect();
    let by_node2 = answers.iter().filter(|(_, body)| body.as_deref() == Some("node2")).count();
    assert!(by_node2 > 0, "node2 served nothing before its stop: the test shows nothing");
    assert!(lost.is_empty(), "{} of {} requests lost during a planned stop: {lost:?}", lost.len(), answers.len());
    // The address went last, with nginx-ha.
    assert!(!fabric.node(2).ns.ip(&["addr", "show", "dev", "lo"]).contains(ANYCAST));
    assert!(fabric.node(2).nginx_pids().is_empty(), "nginx stopped with nginx-ha");

    fabric.nodes[1].0.start();
    fabric.wait_next_hops(&ALL);
}

#[test]
fn a_killed_daemon_leaves_state_that_the_next_one_cleans_up() {
    let mut fabric = Fabric::new("");
    fabric.wait_next_hops(&ALL);
    let node = &mut fabric.nodes[0].0;
    node.kill_daemon();
    // Left behind: the route (nginx still serves, so it is still announced) and the address;
    // and, as if by an earlier config, an anycast address no longer configured. A VIP-tagged
    // address (IFA_PROTO 0x6e) belongs to VRRP and must survive the anycast cleanup.
    node.ns.add_tagged_address("lo", "198.19.99.1/32", nginx_ha::net::ANYCAST_ADDRESS_PROTO);
    node.ns.add_tagged_address("eth0", "198.18.1.200/32", nginx_ha::net::OWNER_PROTO);
    node.ns.ip(&["route", "add", "198.19.99.1/32", "dev", "lo", "table", "111", "proto", "110", "scope", "link"]);
    assert!(node.ns.ip(&["route", "show", "table", "110"]).contains(ANYCAST));
    node.start();
    wait_until(PATIENCE, "the stale anycast address and route removed", || {
        !node.ns.ip(&["addr", "show", "dev", "lo"]).contains("198.19.99.1")
            && !node.ns.ip(&["route", "show", "table", "111"]).contains("198.19.99.1")
    });
    assert!(node.log().contains("left behind by an earlier nginx-ha"), "{}", node.log());
    assert!(node.ns.ip(&["addr", "show", "dev", "eth0"]).contains("198.18.1.200/32"), "the VIP-tagged address stays");
    assert!(
        node.ns.ip(&["addr", "show", "dev", "lo"]).contains(&format!("{ANYCAST}/32")),
        "the configured address stays"
    );
    fabric.wait_next_hops(&ALL);
    assert_eq!(fabric.announced(1), Some(true));
}

#[test]
fn hold_local_route_serves_the_client_without_an_address_on_lo() {
    let mut fabric = Fabric::new("hold = \"local-route\"");
    fabric.wait_next_hops(&ALL);
    let ns = &fabric.node(1).ns;
    // `ip -N`: type 2 = local, scope 254 = host (iproute2 names protocol 99 "openr").
    let local = ns.ip(&["-N", "route", "show", "table", "local"]);
    assert!(
        local.lines().any(|l| l.starts_with(&format!("2 {ANYCAST} dev lo ")) && l.contains(" proto 99 ")),
        "{local}"
    );
    assert!(!ns.ip(&["addr", "show", "dev", "lo"]).contains(ANYCAST), "no address: a local route holds it");
    let mut served = BTreeSet::new();
    wait_until(PATIENCE, "the client served by all three nodes", || {
        served.extend(fabric.upstream.client.get(ANYCAST));
        served.len() == 3
    });
    // A planned stop takes the local route away with nginx-ha.
    assert!(fabric.nodes[0].0.stop().success());
    fabric.wait_next_hops(&["198.18.1.12", "198.18.1.13"]);
    assert!(!fabric.node(1).ns.ip(&["route", "show", "table", "local"]).contains(ANYCAST));
}

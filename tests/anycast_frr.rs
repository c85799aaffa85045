//! Anycast through real FRR (Debian 12's frr 8.4: zebra + bgpd, started by the test) with
//! conf/anycast/frr.conf, next to a node running BIRD with conf/anycast/bird.conf; both run
//! nginx-ha (real nginx) and peer with a BIRD router that puts what it learns in its FIB.
//!
//! ```text
//!  router 198.18.1.1 ── fabric ── node1 198.18.1.11 (nginx-ha + FRR)
//!                              └─ node2 198.18.1.12 (nginx-ha + BIRD)     (198.19.10.1 on lo)
//! ```
//!
//! What it shows, FRR 8.4 being what it is: frr.conf is accepted as is, zebra imports table 110
//! and bgpd redistributes it, filtered, with the node as next hop, and withdraws it when the
//! route leaves table 110; but not while the anycast address is on the node, which is always
//! the case under nginx-ha: zebra makes a connected route of the address, a connected route
//! beats every other (rib_choose_best), and zebra redistributes only the selected route, so
//! the imported one is never announced. See conf/anycast/frr.conf.
//!
//! Skipped (with a message) when FRR is not installed: `apt-get install frr`.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::bird::Bird;
use common::cluster::*;
use common::frr::{self, Frr};
use common::netns::{Bridge, NetNs, wait_until};

const ANYCAST: &str = "198.19.10.1";
const NODE_FRR: &str = include_str!("../conf/anycast/frr.conf");
const NODE_BIRD: &str = include_str!("../conf/anycast/bird.conf");
const FRR_NODE: &str = "198.18.1.11";
const BIRD_NODE: &str = "198.18.1.12";

struct Fabric {
    // Dropped in field order: daemons first, namespaces last.
    frr: Frr,
    frr_node: Node,
    _bird: Bird,
    bird_node: Node,
    router_bird: Bird,
    router: NetNs,
    _frr_dir: tempfile::TempDir,
    _dir: tempfile::TempDir,
    _fabric: Bridge,
}

/// BIRD on the router: a BGP session with each node, everything learnt into its kernel FIB
/// (ECMP).
fn router_config() -> String {
    let mut text = String::from(
        "log stderr all;\nrouter id 198.18.1.1;\nprotocol device {}\n\
         protocol kernel { merge paths on; ipv4 { import none; export all; }; }\n",
    );
    for (name, address) in [("node1", FRR_NODE), ("node2", BIRD_NODE)] {
        text.push_str(&format!(
            "protocol bgp {name} {{ local 198.18.1.1 as 65000; neighbor {address} as 65010; hold time 3; keepalive time 1;\n\
             connect retry time 2; error wait time 1, 10; ipv4 {{ import all; export none; }}; }}\n"
        ));
    }
    text
}

fn anycast_table() -> String {
    format!("[[anycast]]\nname = \"web\"\naddresses = [\"{ANYCAST}/32\"]\ndrain_ms = 300\n")
}

impl Fabric {
    fn new() -> Fabric {
        let fabric = Bridge::new();
        let dir = tempfile::Builder::new().prefix("nginx-ha-anycast-frr-").tempdir().unwrap();
        // FRR's daemons run as the frr user: their directory is not under a root-only one.
        let frr_dir = tempfile::Builder::new().prefix("nginx-ha-frr-").tempdir().unwrap();
        let router = NetNs::new();
        fabric.connect(&router, "eth0", "198.18.1.1/24");
        let router_bird = Bird::start(&router, dir.path(), "router", &router_config());

        let mut frr_node = Node::new(&fabric, "node1", &format!("{FRR_NODE}/24"));
        frr_node.ns.ip(&["route", "add", "default", "via", "198.18.1.1"]);
        frr_node.configure(&anycast_table());
        frr_node.start();
        // conf/anycast/frr.conf as shipped: its router id and addresses are node1's.
        let frr = Frr::start(&frr_node.ns, frr_dir.path(), "node1", NODE_FRR);

        let mut bird_node = Node::new(&fabric, "node2", &format!("{BIRD_NODE}/24"));
        bird_node.ns.ip(&["route", "add", "default", "via", "198.18.1.1"]);
        bird_node.configure(&anycast_table());
        bird_node.start();
        let bird_config = NODE_BIRD.replace("log syslog all;", "log stderr all;").replace("198.18.1.11", BIRD_NODE);
        let bird = Bird::start(&bird_node.ns, bird_node.dir.path(), "node2", &bird_config);

        frr.wait_established("198.18.1.1");
        bird.wait_established("upstream");
        Fabric {
            frr,
            frr_node,
            _bird: bird,
            bird_node,
            router_bird,
            router,
            _frr_dir: frr_dir,
            _dir: dir,
            _fabric: fabric,
        }
    }

    /// The next hops of the anycast prefix in the router's FIB.
    fn next_hops(&self) -> BTreeSet<String> {
        let text = self.router.ip(&["route", "show", &format!("{ANYCAST}/32")]);
        text.split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|pair| pair[0] == "via")
            .map(|pair| pair[1].to_string())
            .collect()
    }

    fn wait_next_hops(&self, expected: &[&str]) -> Duration {
        let expected: BTreeSet<String> = expected.iter().map(ToString::to_string).collect();
        let start = Instant::now();
        while self.next_hops() != expected {
            assert!(
                start.elapsed() < PATIENCE,
                "still waiting for next hops {expected:?} in the router's FIB\n{}",
                self.dump()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        start.elapsed()
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

    fn dump(&self) -> String {
        format!(
            "router FIB: {}\nrouter BIRD:\n{}\nnode1 zebra:\n{}",
            self.router.ip(&["route", "show", &format!("{ANYCAST}/32")]),
            self.router_bird.birdc(&["show", "route", "all"]),
            self.frr.vtysh(&[
                "show ip route",
                "show ip route table 110",
                "show bgp ipv4 unicast",
                &format!("show bgp ipv4 unicast {ANYCAST}/32"),
                "show bgp nexthop",
                "show bgp ipv4 unicast summary"
            ])
        )
    }
}

fn table_route(ns: &NetNs) -> bool {
    ns.ip(&["route", "show", "table", "110"]).contains(&format!("{ANYCAST} dev lo proto 110 scope link"))
}

fn address_on_lo(ns: &NetNs) -> bool {
    ns.ip(&["addr", "show", "dev", "lo"]).contains(&format!("{ANYCAST}/32"))
}

#[test]
fn frr_imports_table_110_but_never_announces_an_address_that_is_on_the_node() {
    if let Some(missing) = frr::missing() {
        eprintln!("skip: FRR is not installed: {missing} (apt-get install frr)");
        return;
    }
    let mut fabric = Fabric::new();
    // The BIRD node announces: the router, its session and its FIB work.
    fabric.wait_next_hops(&[BIRD_NODE]);
    assert_eq!(fabric.bird_node.status().unwrap()["anycast"][0]["announced"], true);

    // node1 is healthy and nginx-ha has done its part: route in table 110, address on lo.
    wait_until(PATIENCE, "node1 announced by nginx-ha", || {
        fabric.frr_node.status().is_some_and(|s| s["anycast"][0]["announced"] == true)
    });
    assert!(table_route(&fabric.frr_node.ns) && address_on_lo(&fabric.frr_node.ns));
    // zebra learnt table 110 and imported the route ("table" type, distance 15) ...
    wait_until(PATIENCE, "the imported table-110 route in zebra's RIB", || {
        fabric.zebra_entries().iter().any(|(protocol, _)| protocol == "table")
    });
    // ... but the connected route of the address on lo is the selected one, and zebra
    // redistributes only selected routes: bgpd gets nothing, the router learns nothing.
    let entries = fabric.zebra_entries();
    assert!(entries.contains(&("connected".into(), true)), "{entries:?}\n{}", fabric.dump());
    assert!(entries.contains(&("table".into(), false)), "{entries:?}\n{}", fabric.dump());
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        assert_eq!(fabric.next_hops(), BTreeSet::from([BIRD_NODE.to_string()]), "{}", fabric.dump());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(fabric.bgp_prefixes().is_empty(), "{}", fabric.dump());
    eprintln!("FRR 8.4 with frr.conf: table-110 route imported, not selected (connected wins), not announced");

    // The rest of frr.conf does work: without the address (nginx-ha killed, so that it does not
    // put it back, and the address deleted by hand: the node then cannot serve it, which is why
    // this is no way to run it), zebra selects the imported route and bgpd announces it with
    // the node as next hop; it goes when the route leaves table 110 and comes back with it.
    fabric.frr_node.kill_daemon();
    let ns = &fabric.frr_node.ns;
    ns.ip(&["addr", "del", &format!("{ANYCAST}/32"), "dev", "lo"]);
    let took = fabric.wait_next_hops(&[FRR_NODE, BIRD_NODE]);
    eprintln!("without the address on lo: announced through FRR after {took:?}");
    assert_eq!(fabric.bgp_prefixes(), vec![format!("{ANYCAST}/32")]);
    // zebra also installs the imported route into the node's main table (proto zebra).
    assert!(ns.ip(&["route", "show", &format!("{ANYCAST}/32")]).contains("proto zebra"), "{}", fabric.dump());
    ns.ip(&["route", "del", &format!("{ANYCAST}/32"), "table", "110"]);
    let took = fabric.wait_next_hops(&[BIRD_NODE]);
    eprintln!("route removed from table 110: withdrawn through FRR after {took:?}");
    ns.ip(&["route", "add", &format!("{ANYCAST}/32"), "dev", "lo", "table", "110", "proto", "110", "scope", "link"]);
    fabric.wait_next_hops(&[FRR_NODE, BIRD_NODE]);
    // A prefix outside the prefix list is not announced.
    ns.ip(&["route", "add", "198.19.11.1/32", "dev", "lo", "table", "110", "proto", "110", "scope", "link"]);
    wait_until(PATIENCE, "198.19.11.1/32 imported by zebra", || {
        fabric.frr.vtysh(&["show ip route 198.19.11.1/32"]).contains("table")
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(!fabric.router.ip(&["route", "show"]).contains("198.19.11.1"), "{}", fabric.dump());
    // node1's nginx-ha is gone; clean what it left (its nginx is stopped by Node's drop).
    ns.ip(&["route", "flush", "table", "110"]);
    fabric.wait_next_hops(&[BIRD_NODE]);
}

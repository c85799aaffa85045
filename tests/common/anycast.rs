//! The lab of the anycast tests (`anycast_bird.rs`, `anycast_frr.rs`): a BGP router running
//! BIRD with ECMP into its FIB, between the nodes' fabric and the client's edge.
//!
//! ```text
//!  client 198.18.2.10 ── edge ── 198.18.2.1 router 198.18.1.1 ── fabric ── nodes 198.18.1.x
//! ```

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::bird::Bird;
use super::cluster::{Client, Node, PATIENCE};
use super::netns::{Bridge, NetNs};

pub const ANYCAST: &str = "198.19.10.1";
pub const NODE_BIRD: &str = include_str!("../../conf/anycast/bird.conf");

pub struct Upstream {
    // Dropped in field order: the client and BIRD first, namespaces last.
    pub client: Client,
    pub router_bird: Bird,
    pub router: NetNs,
    _dir: tempfile::TempDir,
    pub fabric: Bridge,
    _edge: Bridge,
}

impl Upstream {
    /// The router peers with each `(name, address)` of `nodes`; `dir_prefix` names its
    /// temp dir.
    pub fn new(dir_prefix: &str, nodes: &[(&str, &str)]) -> Upstream {
        let fabric = Bridge::new();
        let edge = Bridge::new();
        let dir = tempfile::Builder::new().prefix(dir_prefix).tempdir().unwrap();
        let router = NetNs::new();
        fabric.connect(&router, "eth0", "198.18.1.1/24");
        edge.connect(&router, "eth1", "198.18.2.1/24");
        router.sysctl("net.ipv4.ip_forward", "1");
        router.sysctl("net.ipv4.fib_multipath_hash_policy", "1");
        let router_bird = Bird::start(&router, dir.path(), "router", &router_config(nodes));
        let client = Client::new(&edge, "198.18.2.10/24");
        client.ns.ip(&["route", "add", "198.19.0.0/16", "via", "198.18.2.1"]);
        Upstream { client, router_bird, router, _dir: dir, fabric, _edge: edge }
    }

    /// A node on the fabric at `address`, routed through the router, running nginx-ha with
    /// `tables` as its config's tables.
    pub fn node(&self, name: &str, address: &str, tables: &str) -> Node {
        let mut node = Node::new(&self.fabric, name, &format!("{address}/24"));
        node.ns.ip(&["route", "add", "default", "via", "198.18.1.1"]);
        node.configure(tables);
        node.start();
        node
    }

    /// The next hops of the anycast prefix in the router's FIB.
    pub fn next_hops(&self) -> BTreeSet<String> {
        next_hops(&self.router)
    }

    /// Waits for exactly `expected` as the next hops; `dump` explains a failure.
    pub fn wait_next_hops(&self, expected: &[&str], dump: impl Fn() -> String) -> Duration {
        let expected: BTreeSet<String> = expected.iter().map(ToString::to_string).collect();
        let start = Instant::now();
        while self.next_hops() != expected {
            assert!(
                start.elapsed() < PATIENCE,
                "still waiting for next hops {expected:?} in the router's FIB\n{}",
                dump()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        start.elapsed()
    }

    /// The router's FIB entry and BIRD routes, for a failure message.
    pub fn dump(&self) -> String {
        format!(
            "router FIB: {}\nrouter BIRD:\n{}",
            self.router.ip(&["route", "show", &format!("{ANYCAST}/32")]),
            self.router_bird.birdc(&["show", "route", "all"])
        )
    }
}

/// The next hops of the anycast prefix in `router`'s FIB.
pub fn next_hops(router: &NetNs) -> BTreeSet<String> {
    super::netns::next_hops(router, &format!("{ANYCAST}/32"))
}

/// conf/anycast/bird.conf as shipped (node1's), for the node at `address`, logging to stderr.
pub fn node_bird_config(address: &str) -> String {
    NODE_BIRD.replace("log syslog all;", "log stderr all;").replace("198.18.1.11", address)
}

/// BIRD on the router: a BGP session with each node, everything learnt into its kernel FIB
/// (ECMP).
fn router_config(nodes: &[(&str, &str)]) -> String {
    let mut text = String::from(
        "log stderr all;\nrouter id 198.18.1.1;\nprotocol device {}\n\
         protocol kernel { merge paths on; ipv4 { import none; export all; }; }\n",
    );
    for (name, address) in nodes {
        text.push_str(&format!(
            "protocol bgp {name} {{ local 198.18.1.1 as 65000; neighbor {address} as 65010; hold time 3; keepalive time 1;\n\
             connect retry time 2; error wait time 1, 10; ipv4 {{ import all; export none; }}; }}\n"
        ));
    }
    text
}

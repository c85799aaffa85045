//! Anycast over BGP through the node's BIRD or FRR: nginx-ha keeps each `[[anycast]]`
//! address on its interface while it runs (an address, or with `hold = "local-route"` a local
//! route in table 255, which FRR's zebra does not see as a connected route), and a route to it in a kernel table of its own
//! while nginx is healthy; the routing daemon learns that table and announces (or withdraws)
//! the prefix. nginx-ha itself does not speak BGP.
//!
//! `announcer` is the pure core (health, route events, drain and shutdown in; address and
//! route actions and named deadlines out); `stale` is the pure start-up clean-up decision
//! (what an earlier nginx-ha left behind); `shell` carries their actions out over rtnetlink.

pub mod announcer;
pub mod shell;
pub mod stale;

pub use shell::{AnycastError, AnycastHandle, AnycastSpec, spawn, withdraw_everything};

//! nginx-ha: a supervisor that keeps an nginx pair highly available on its own.
//!
//! Pure cores (`nginx::policy`, `vrrp::engine` over `vrrp::router`s, `vrrp::packet`,
//! `vrrp::spec`, `alias::core`, `anycast::announcer`, with named deadlines in `timers`) take
//! events and time and return actions; the I/O shells around them (`nginx::supervisor`, `vrrp::shell`, `net`,
//! `control`) carry those actions out. `daemon` wires everything together.

pub mod alias;
pub mod anycast;
pub mod config;
pub mod control;
pub mod daemon;
pub mod drain;
pub mod import;
pub mod logging;
pub mod net;
pub mod nginx;
pub mod statefile;
pub mod timers;
pub mod vrrp;

//! Helpers shared by the integration tests; each test binary uses a different subset.
#![allow(dead_code)]

pub mod anycast;
pub mod bird;
pub mod cluster;
pub mod frr;
pub mod keepalived;
pub mod local;
pub mod netns;
pub mod process;

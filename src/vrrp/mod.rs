//! vrrp
pub mod socket;

//! The connection drain: established TCP connections survive a planned VIP move.
pub mod core;
pub mod protocol;

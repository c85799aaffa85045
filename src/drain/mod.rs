//! The connection drain: established TCP connections survive a planned VIP move.
pub mod core;
pub mod kernel;
pub mod shell;

pub use shell::{Accept, DrainError, DrainHandle, HandOver};
pub mod protocol;

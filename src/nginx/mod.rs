//! nginx supervision: the pure policy core and the shell that runs nginx for it.

pub mod conf;
pub mod policy;
pub mod probe;
pub mod process;
pub mod scan;
pub mod stub_status;

pub mod supervisor;
pub mod timers;
pub mod watch;

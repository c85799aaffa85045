//! nginx supervision: the pure policy core and the shell that runs nginx for it.

pub mod policy;

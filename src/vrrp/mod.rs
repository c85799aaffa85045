//! VRRP (RFC 3768 v2, RFC 5798 v3). Pure cores without I/O: `packet` encodes and decodes
//! advertisements, `router` is the state machine of one virtual router, `spec` turns a
//! `[[vrrp]]` table into a router's config (the only place it is checked), `engine` drives
//! every router of the node (packets by socket, addresses, links, resume, planned stop). The
//! shell: `socket` (raw IP protocol 112) and `shell` (the task that carries out the engine's
//! actions: sockets, netlink, the timer, notify hooks).

pub mod engine;
pub mod packet;
pub mod record;
pub mod router;
pub mod shell;
pub mod socket;
pub mod spec;

//! VRRP (RFC 3768 v2, RFC 5798 v3) as pure cores without I/O: `packet` encodes and decodes
//! advertisements, `router` is the state machine of one virtual router.

pub mod packet;
pub mod router;

//! The kernel's network state as nginx-ha needs it: addresses (VIPs, aliases) through
//! rtnetlink, link and address events, and gratuitous ARP / unsolicited neighbour
//! advertisements after a takeover. Everything goes through sockets; nothing runs `ip`.

mod address;
mod announce;
mod events;
mod probe;
mod route;

use std::{fmt, io, net::IpAddr};

use ipnet::IpNet;

pub use address::{Added, AddressInfo, LinkInfo, Net, Removed, select_primary};
pub use announce::{ANNOUNCE_REPEAT, announce};
pub use events::{NetEvent, NetEvents, events, route_events};
pub use probe::{PROBE_DURATION, ProbeOutcome, probe_ipv4};
pub use route::{LOCAL_TABLE, RouteChange, RouteInfo, local_route_destination};

/// The `IFA_PROTO` value marking addresses that nginx-ha added (0x6e, ASCII `n`).
///
/// The kernel (5.18 and later) stores it with the address and reports it back, so after a
/// crash the daemon finds the VIPs it left behind with [`Net::addresses_with_proto`].
/// Values 1..=3 are the kernel's own (loopback, router advertisement, link-local).
pub const OWNER_PROTO: u8 = 0x6e;

/// The `IFA_PROTO` value of the static aliases nginx-ha keeps (0x61, ASCII `a`). Distinct from
/// [`OWNER_PROTO`]: the VRRP start-up clean-up removes addresses tagged 0x6e (VIPs left by a
/// crashed nginx-ha), and an alias must survive it, as it survives a stop.
pub const ALIAS_PROTO: u8 = 0x61;
/// The `IFA_PROTO` value marking the anycast addresses nginx-ha keeps (0x63, ASCII `c`).
///
/// Neither [`OWNER_PROTO`] nor [`ALIAS_PROTO`] (each owner cleans up only its own tag at start): the VRRP shell removes every address tagged [`OWNER_PROTO`] at startup
/// as a stale VIP, while an anycast address in the config is kept across a restart of
/// nginx-ha (connections to it go on). Anycast *routes* carry [`OWNER_PROTO`] as their
/// `rtm_protocol`; VRRP adds no routes, so the two never meet.
pub const ANYCAST_ADDRESS_PROTO: u8 = 0x63;

/// The `rtm_protocol` of the local routes that keep a VIP accepted on its old holder while its
/// connections drain (0x64, ASCII `d`): a start-up finds those a killed nginx-ha left and removes them.
pub const DRAIN_PROTO: u8 = 0x64;

/// Whether an address tag is one of nginx-ha's (VIP or anycast address): such an address is
/// never a node's own, e.g. never the source of VRRP adverts.
pub fn is_ours(proto: u8) -> bool {
    proto == OWNER_PROTO || proto == ANYCAST_ADDRESS_PROTO
}

/// An address family: one VRRP socket and one primary address per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// What went wrong, naming the interface and address concerned. `error` fields keep the
/// kernel's errno (`raw_os_error`) for callers that need to tell causes apart.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot open a netlink socket: {0}")]
    Connect(io::Error),
    #[error("no network interface named {0:?}")]
    NoSuchLink(String),
    #[error("no network interface with index {0}")]
    NoSuchIndex(u32),
    #[error("invalid label {label:?} for {address} on {interface}: {reason}")]
    InvalidLabel { interface: String, address: IpNet, label: String, reason: String },
    #[error("cannot {action} address {address} on {interface}: {error}")]
    Address { action: &'static str, interface: String, address: IpNet, error: io::Error },
    #[error("cannot read {what} from the kernel: {error}")]
    Query { what: String, error: io::Error },
    #[error("cannot {action} route {destination} in table {table}: {error}")]
    Route { action: &'static str, table: u32, destination: IpNet, error: io::Error },
    #[error("cannot announce {address} on {interface}: {error}")]
    Announce { interface: String, address: IpAddr, error: io::Error },
    #[error("cannot probe for {address} on {interface} (RFC 5227 ARP probe): {error}")]
    Probe { interface: String, address: IpAddr, error: io::Error },
}

/// Receive buffer of our netlink sockets: room for the notifications or acks of several
/// thousand address changes (the kernel default, ~200 KiB, holds a few hundred).
const NETLINK_RECEIVE_BUFFER: usize = 8 << 20;

/// Raises a netlink socket's receive buffer to [`NETLINK_RECEIVE_BUFFER`], past
/// `net.core.rmem_max` when we may (root); otherwise as far as that limit allows.
fn enlarge_receive_buffer(socket: &impl std::os::fd::AsFd) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(socket, sockopt::RcvBufForce, &NETLINK_RECEIVE_BUFFER).is_err()
        && let Err(e) = setsockopt(socket, sockopt::RcvBuf, &NETLINK_RECEIVE_BUFFER)
    {
        tracing::debug!("cannot enlarge a netlink receive buffer: {e}");
    }
}

//! Routes in a kernel table of our own (anycast announcements), through the same rtnetlink
//! request socket as the addresses, tagged with [`OWNER_PROTO`](super::OWNER_PROTO) as
//! their protocol so that a later nginx-ha finds the ones an earlier one left behind.

use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::{
    RouteMessageBuilder,
    packet_route::{
        AddressFamily,
        route::{RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType},
    },
};

use super::address::{errno, to_io};
use super::{Net, NetError};

/// One route as the kernel reports it (only what nginx-ha looks at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    pub table: u32,
    pub destination: IpNet,
    /// The output interface, for a route through one.
    pub oif: Option<u32>,
    /// `rtm_protocol`: who added the route.
    pub proto: u8,
    /// `rtm_type` is unicast (the kind BIRD's and FRR's kernel import picks up).
    pub unicast: bool,
    /// `rtm_type` is local (`ip route add local ...`): packets to it are this host's.
    pub local: bool,
}

impl RouteInfo {
    pub(super) fn from_message(message: &RouteMessage) -> Option<RouteInfo> {
        let header = &message.header;
        let mut table = u32::from(header.table);
        let (mut destination, mut oif) = (None, None);
        for attribute in &message.attributes {
            match attribute {
                RouteAttribute::Table(t) => table = *t,
                RouteAttribute::Destination(address) => destination = route_address(address),
                RouteAttribute::Oif(index) => oif = Some(*index),
                _ => {}
            }
        }
        let destination = match (destination, header.address_family) {
            (Some(address), _) => address,
            (None, AddressFamily::Inet) => IpAddr::from([0u8; 4]),
            (None, AddressFamily::Inet6) => IpAddr::from([0u16; 8]),
            (None, _) => return None,
        };
        Some(RouteInfo {
            table,
            destination: IpNet::new(destination, header.destination_prefix_length).ok()?,
            oif,
            proto: u8::from(header.protocol),
            unicast: header.kind == RouteType::Unicast,
            local: header.kind == RouteType::Local,
        })
    }
}

fn route_address(address: &rtnetlink::packet_route::route::RouteAddress) -> Option<IpAddr> {
    use rtnetlink::packet_route::route::RouteAddress;
    match address {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

/// A unicast device route: `DEST dev IFINDEX table TABLE proto PROTO scope link`.
fn device_route(table: u32, destination: IpNet, ifindex: u32, proto: u8) -> Result<RouteMessage, NetError> {
    route_message(table, destination, ifindex, proto, RouteScope::Link, RouteType::Unicast)
}

fn route_message(
    table: u32,
    destination: IpNet,
    ifindex: u32,
    proto: u8,
    scope: RouteScope,
    kind: RouteType,
) -> Result<RouteMessage, NetError> {
    let builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(destination.network(), destination.prefix_len())
        .map_err(|e| NetError::Route { action: "build", table, destination, error: std::io::Error::other(e) })?;
    Ok(builder
        .output_interface(ifindex)
        .table_id(table)
        .protocol(RouteProtocol::from(proto))
        .scope(scope)
        .kind(kind)
        .build())
}

/// The kernel's local table (`RT_TABLE_LOCAL`): the addresses this host accepts as its own.
pub const LOCAL_TABLE: u32 = 255;

/// The destination of the local route that holds `address`: the address itself (/32, /128).
pub fn local_route_destination(address: IpNet) -> IpNet {
    IpNet::from(address.addr())
}

/// A local route: `local ADDR dev IFINDEX table local proto PROTO scope host`, what the kernel
/// adds for an address of the host, without the address (so no connected route either).
fn local_route(destination: IpNet, ifindex: u32, proto: u8) -> Result<RouteMessage, NetError> {
    route_message(LOCAL_TABLE, destination, ifindex, proto, RouteScope::Host, RouteType::Local)
}

/// The drain's local route (see [`Net::add_drain_route`]).
fn drain_route(destination: IpNet, ifindex: u32) -> Result<RouteMessage, NetError> {
    let mut message = local_route(destination, ifindex, super::DRAIN_PROTO)?;
    message.attributes.push(rtnetlink::packet_route::route::RouteAttribute::Priority(DRAIN_ROUTE_METRIC));
    Ok(message)
}

/// The metric of the drain's local routes: not 0, which the kernel's own route of the address has.
const DRAIN_ROUTE_METRIC: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteChange {
    Done,
    /// Added: it was there already; removed: it was absent.
    AlreadySo,
}

/// An add or a removal of one route.
#[derive(Debug, Clone, Copy)]
enum Edit {
    Add,
    Remove,
}

impl Net {
    /// Adds the device route `destination dev ifindex table table proto proto`; present
    /// already is not an error.
    pub async fn add_route(
        &self,
        table: u32,
        destination: IpNet,
        ifindex: u32,
        proto: u8,
    ) -> Result<RouteChange, NetError> {
        self.edit_route(Edit::Add, device_route(table, destination, ifindex, proto)?, table, destination).await
    }

    /// Removes that route again; absent is not an error.
    pub async fn del_route(
        &self,
        table: u32,
        destination: IpNet,
        ifindex: u32,
        proto: u8,
    ) -> Result<RouteChange, NetError> {
        self.edit_route(Edit::Remove, device_route(table, destination, ifindex, proto)?, table, destination).await
    }

    /// Adds the local route `local ADDRESS dev ifindex table local proto proto scope host`
    /// ([`local_route_destination`] of `address`): the host accepts `address` as its own
    /// without it being an address of the interface. Present already is not an error.
    pub async fn add_local_route(&self, address: IpNet, ifindex: u32, proto: u8) -> Result<RouteChange, NetError> {
        let destination = local_route_destination(address);
        self.edit_route(Edit::Add, local_route(destination, ifindex, proto)?, LOCAL_TABLE, destination).await
    }

    /// Removes that local route again; absent is not an error.
    pub async fn del_local_route(&self, address: IpNet, ifindex: u32, proto: u8) -> Result<RouteChange, NetError> {
        let destination = local_route_destination(address);
        self.edit_route(Edit::Remove, local_route(destination, ifindex, proto)?, LOCAL_TABLE, destination).await
    }

    /// Adds `local ADDRESS dev ifindex table local proto DRAIN_PROTO metric 1`: beside the
    /// kernel's own local route of an address still on the interface (metric 0), so that the
    /// host goes on accepting `address` once the address is removed (the connection drain).
    /// Present already is not an error.
    pub async fn add_drain_route(&self, address: IpNet, ifindex: u32) -> Result<RouteChange, NetError> {
        let destination = local_route_destination(address);
        self.edit_route(Edit::Add, drain_route(destination, ifindex)?, LOCAL_TABLE, destination).await
    }

    /// Removes that route again; absent is not an error.
    pub async fn del_drain_route(&self, address: IpNet, ifindex: u32) -> Result<RouteChange, NetError> {
        let destination = local_route_destination(address);
        self.edit_route(Edit::Remove, drain_route(destination, ifindex)?, LOCAL_TABLE, destination).await
    }

    /// Sends `message`; a route that is there already (add) or absent already (remove) is
    /// [`RouteChange::AlreadySo`]. `table` and `destination` name the route in an error.
    async fn edit_route(
        &self,
        edit: Edit,
        message: RouteMessage,
        table: u32,
        destination: IpNet,
    ) -> Result<RouteChange, NetError> {
        let (result, already_so, action) = match edit {
            Edit::Add => (self.handle.route().add(message).execute().await, libc::EEXIST, "add"),
            Edit::Remove => (self.handle.route().del(message).execute().await, libc::ESRCH, "remove"),
        };
        match result {
            Ok(()) => Ok(RouteChange::Done),
            Err(e) if errno(&e) == Some(already_so) => Ok(RouteChange::AlreadySo),
            Err(e) => Err(NetError::Route { action, table, destination, error: to_io(e) }),
        }
    }

    /// The local routes (table 255, type local) whose protocol is `proto`: at startup those
    /// tagged as anycast ones are what an earlier nginx-ha held.
    pub async fn local_routes_with_proto(&self, proto: u8) -> Result<Vec<RouteInfo>, NetError> {
        let routes = self.routes_with_protos(&[proto]).await?;
        Ok(routes.into_iter().filter(|route| route.table == LOCAL_TABLE && route.local).collect())
    }

    /// Every route of both families, in every table, whose protocol is one of `protos` (one
    /// dump of each family): at startup, what an earlier, crashed nginx-ha left behind.
    pub async fn routes_with_protos(&self, protos: &[u8]) -> Result<Vec<RouteInfo>, NetError> {
        let mut routes = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut message = RouteMessage::default();
            message.header.address_family = family;
            let messages: Vec<RouteMessage> =
                self.handle.route().get(message).execute().try_collect().await.map_err(|e| NetError::Query {
                    what: format!("the {} routes", if family == AddressFamily::Inet { "IPv4" } else { "IPv6" }),
                    error: to_io(e),
                })?;
            routes.extend(
                messages.iter().filter_map(RouteInfo::from_message).filter(|route| protos.contains(&route.proto)),
            );
        }
        Ok(routes)
    }
}

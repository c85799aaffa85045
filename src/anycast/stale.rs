//! **Pure**: what an earlier nginx-ha left behind that this one must remove at start. The
//! shell dumps the kernel's routes and addresses once, and carries out the [`Removal`]s.
//!
//! - Routes tagged [`OWNER_PROTO`] in any table are announcements of an nginx-ha that died:
//!   all go (this one announces again once its nginx is healthy).
//! - Addresses tagged [`ANYCAST_ADDRESS_PROTO`] go unless still configured on that interface
//!   with `hold = "address"`: those stay, and the connections to them with them.
//! - Local routes (table 255) tagged [`ANYCAST_ADDRESS_PROTO`] are treated like the
//!   addresses, for `hold = "local-route"`; an address held the other way than configured
//!   (the hold changed) goes.
//!
//! VIPs carry [`OWNER_PROTO`] as their address tag and are the VRRP shell's business.

use ipnet::IpNet;

use crate::config::AnycastHold;
use crate::net::{ANYCAST_ADDRESS_PROTO, AddressInfo, LOCAL_TABLE, OWNER_PROTO, RouteInfo, local_route_destination};

/// Where one configured `[[anycast]]` table holds its addresses.
#[derive(Debug, Clone, Copy)]
pub struct Held<'a> {
    pub ifindex: u32,
    pub hold: AnycastHold,
    pub addresses: &'a [IpNet],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// An announcement: `destination dev oif table table proto OWNER_PROTO`.
    Route { table: u32, destination: IpNet, oif: u32 },
    /// A local route holding an address that is no longer configured that way.
    LocalRoute { destination: IpNet, oif: u32 },
    /// An address that is no longer configured on that interface.
    Address { ifindex: u32, address: IpNet },
}

/// The removals, local routes first, then the announcements, then the addresses. `routes` are
/// those tagged [`OWNER_PROTO`] or [`ANYCAST_ADDRESS_PROTO`], `addresses` those tagged
/// [`ANYCAST_ADDRESS_PROTO`]; anything else is ignored.
pub fn stale(held: &[Held], routes: &[RouteInfo], addresses: &[AddressInfo]) -> Vec<Removal> {
    let local_routes = routes
        .iter()
        .filter(|route| route.proto == ANYCAST_ADDRESS_PROTO && route.table == LOCAL_TABLE && route.local)
        .filter_map(|route| Some((route.destination, route.oif?)))
        .filter(|&(destination, oif)| {
            !held.iter().any(|h| {
                h.hold == AnycastHold::LocalRoute
                    && h.ifindex == oif
                    && h.addresses.iter().any(|a| local_route_destination(*a) == destination)
            })
        })
        .map(|(destination, oif)| Removal::LocalRoute { destination, oif });
    let announcements = announcements(routes);
    let addresses = addresses
        .iter()
        .filter(|a| a.proto == Some(ANYCAST_ADDRESS_PROTO))
        .filter(|a| {
            !held
                .iter()
                .any(|h| h.hold == AnycastHold::Address && h.ifindex == a.ifindex && h.addresses.contains(&a.address))
        })
        .map(|a| Removal::Address { ifindex: a.ifindex, address: a.address });
    local_routes.chain(announcements).chain(addresses).collect()
}

/// Every route tagged [`OWNER_PROTO`] through an interface: what withdrawing everything removes.
pub fn announcements(routes: &[RouteInfo]) -> impl Iterator<Item = Removal> + '_ {
    routes.iter().filter(|route| route.proto == OWNER_PROTO).filter_map(|route| {
        Some(Removal::Route { table: route.table, destination: route.destination, oif: route.oif? })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    fn route(table: u32, destination: &str, oif: Option<u32>, proto: u8, local: bool) -> RouteInfo {
        RouteInfo { table, destination: net(destination), oif, proto, unicast: !local, local }
    }

    fn address(ifindex: u32, address: &str, proto: u8) -> AddressInfo {
        AddressInfo::new(ifindex, net(address), Some(proto))
    }

    #[test]
    fn configured_holds_stay_and_everything_else_of_ours_goes() {
        let by_address = [net("198.18.1.1/32")];
        let by_route = [net("198.18.2.1/32")];
        let held = [
            Held { ifindex: 2, hold: AnycastHold::Address, addresses: &by_address },
            Held { ifindex: 3, hold: AnycastHold::LocalRoute, addresses: &by_route },
        ];
        let routes = [
            route(110, "198.18.1.1/32", Some(2), OWNER_PROTO, false),
            route(110, "198.18.9.9/32", None, OWNER_PROTO, false),
            route(LOCAL_TABLE, "198.18.2.1/32", Some(3), ANYCAST_ADDRESS_PROTO, true),
            // The hold changed to an address: its local route goes.
            route(LOCAL_TABLE, "198.18.1.1/32", Some(2), ANYCAST_ADDRESS_PROTO, true),
            // Someone else's route is not ours to remove.
            route(110, "198.18.3.0/24", Some(2), 4, false),
        ];
        let addresses = [
            address(2, "198.18.1.1/32", ANYCAST_ADDRESS_PROTO),
            // On another interface than configured.
            address(3, "198.18.1.1/32", ANYCAST_ADDRESS_PROTO),
            // Held as a local route now.
            address(3, "198.18.2.1/32", ANYCAST_ADDRESS_PROTO),
            address(2, "198.18.1.7/32", OWNER_PROTO),
        ];
        assert_eq!(
            stale(&held, &routes, &addresses),
            vec![
                Removal::LocalRoute { destination: net("198.18.1.1/32"), oif: 2 },
                Removal::Route { table: 110, destination: net("198.18.1.1/32"), oif: 2 },
                Removal::Address { ifindex: 3, address: net("198.18.1.1/32") },
                Removal::Address { ifindex: 3, address: net("198.18.2.1/32") },
            ]
        );
    }

    #[test]
    fn without_configured_tables_every_leftover_goes() {
        let routes = [route(LOCAL_TABLE, "198.18.2.1/32", Some(3), ANYCAST_ADDRESS_PROTO, true)];
        let addresses = [address(2, "198.18.1.1/32", ANYCAST_ADDRESS_PROTO)];
        assert_eq!(stale(&[], &routes, &addresses).len(), 2);
    }
}

//! Links and addresses through an rtnetlink request socket.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::{
    AddressMessageBuilder, Handle,
    packet_route::{
        address::{AddressAttribute, AddressFlags, AddressMessage},
        link::{LinkAttribute, LinkFlags, LinkMessage},
    },
};

use super::{Family, NetError};

/// Longest interface name or IPv4 label the kernel accepts (IFNAMSIZ - 1).
const MAX_NAME_LEN: usize = 15;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    /// The hardware address; `None` for links without a 6-byte one (tun, IP tunnels).
    pub mac: Option<[u8; 6]>,
    /// Administratively up and operationally up (carrier present): `IFF_UP && IFF_RUNNING`,
    /// the same test keepalived uses.
    pub up: bool,
}

impl LinkInfo {
    pub(super) fn from_message(message: &LinkMessage) -> Option<LinkInfo> {
        let mut name = None;
        let mut mac = None;
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::Address(a) => mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
                _ => {}
            }
        }
        let flags = message.header.flags;
        Some(LinkInfo {
            index: message.header.index,
            name: name?,
            mac,
            up: flags.contains(LinkFlags::Up | LinkFlags::Running),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressInfo {
    pub ifindex: u32,
    pub address: IpNet,
    /// The IPv4 label (`eth0:1`); the kernel reports the interface name when none was set.
    pub label: Option<String>,
    /// `IFA_PROTO`: who added the address ([`OWNER_PROTO`] for nginx-ha's VIPs,
    /// [`ALIAS_PROTO`](super::ALIAS_PROTO) for its static aliases,
    /// [`ANYCAST_ADDRESS_PROTO`](super::ANYCAST_ADDRESS_PROTO) for its anycast addresses).
    pub proto: Option<u8>,
    /// IPv6 duplicate address detection still running (`IFA_F_TENTATIVE`).
    pub tentative: bool,
    /// IPv6 duplicate address detection found another host with this address (`IFA_F_DADFAILED`).
    pub dad_failed: bool,
    /// IPv4: not the first address of its subnet on the link (`IFA_F_SECONDARY`).
    pub secondary: bool,
}

impl AddressInfo {
    /// An address as nginx-ha adds it: no IPv6 DAD state, not secondary.
    pub fn new(ifindex: u32, address: IpNet, proto: Option<u8>) -> AddressInfo {
        AddressInfo { ifindex, address, label: None, proto, tentative: false, dad_failed: false, secondary: false }
    }

    pub(super) fn from_message(message: &AddressMessage) -> Option<AddressInfo> {
        let (mut local, mut peer, mut label, mut proto) = (None, None, None, None);
        for attribute in &message.attributes {
            match attribute {
                AddressAttribute::Local(ip) => local = Some(*ip),
                AddressAttribute::Address(ip) => peer = Some(*ip),
                AddressAttribute::Label(l) => label = Some(l.clone()),
                AddressAttribute::Protocol(p) => proto = Some(u8::from(*p)),
                _ => {}
            }
        }
        // IFA_LOCAL is our end; IFA_ADDRESS differs from it only on point-to-point links
        // and is the only one present for IPv6.
        let address = IpNet::new(local.or(peer)?, message.header.prefix_len).ok()?;
        let flags = address_flags(message);
        Some(AddressInfo {
            ifindex: message.header.index,
            address,
            label,
            proto,
            tentative: flags.contains(AddressFlags::Tentative),
            dad_failed: flags.contains(AddressFlags::Dadfailed),
            secondary: flags.contains(AddressFlags::Secondary),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    New,
    AlreadyPresent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    Yes,
    WasAbsent,
}

/// An rtnetlink request socket in the network namespace of the thread that created it.
#[derive(Debug, Clone)]
pub struct Net {
    pub(super) handle: Handle,
}

impl Net {
    /// Opens the socket and spawns its connection task on the current tokio runtime; the
    /// task ends when the last clone of this `Net` is dropped.
    pub async fn new() -> Result<Net, NetError> {
        let (mut connection, handle, _) = rtnetlink::new_connection().map_err(NetError::Connect)?;
        // Requests are sent concurrently (a takeover adds every VIP at once); their acks
        // must all fit, or netlink drops them and the requests never complete.
        super::enlarge_receive_buffer(rtnetlink::sys::AsyncSocket::socket_ref(connection.socket_mut()));
        tokio::spawn(connection);
        Ok(Net { handle })
    }

    pub async fn link(&self, name: &str) -> Result<LinkInfo, NetError> {
        let request = self.handle.link().get().match_name(name).execute();
        self.one_link(request, || NetError::NoSuchLink(name.to_owned()), || format!("interface {name}")).await
    }

    async fn link_by_index(&self, index: u32) -> Result<LinkInfo, NetError> {
        let request = self.handle.link().get().match_index(index).execute();
        self.one_link(request, || NetError::NoSuchIndex(index), || format!("interface #{index}")).await
    }

    async fn one_link(
        &self,
        request: impl futures::Stream<Item = Result<LinkMessage, rtnetlink::Error>>,
        absent: impl FnOnce() -> NetError,
        what: impl FnOnce() -> String,
    ) -> Result<LinkInfo, NetError> {
        let mut request = std::pin::pin!(request);
        match request.try_next().await {
            Ok(Some(message)) => LinkInfo::from_message(&message).ok_or_else(absent),
            Ok(None) => Err(absent()),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Err(absent()),
            Err(e) => Err(NetError::Query { what: what(), error: to_io(e) }),
        }
    }

    /// Every link in the namespace.
    pub async fn links(&self) -> Result<Vec<LinkInfo>, NetError> {
        let messages: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetError::Query { what: "the interface list".to_owned(), error: to_io(e) })?;
        Ok(messages.iter().filter_map(LinkInfo::from_message).collect())
    }

    /// Every address on every link.
    pub async fn all_addresses(&self) -> Result<Vec<AddressInfo>, NetError> {
        let messages = self.dump_addresses(None).await?;
        Ok(messages.iter().filter_map(AddressInfo::from_message).collect())
    }

    pub async fn addresses(&self, ifindex: u32) -> Result<Vec<AddressInfo>, NetError> {
        let messages = self.dump_addresses(Some(ifindex)).await?;
        Ok(messages.iter().filter_map(AddressInfo::from_message).collect())
    }

    /// All addresses carrying `proto`, on every interface: at startup these are the VIPs a
    /// previous, crashed nginx-ha left behind.
    pub async fn addresses_with_proto(&self, proto: u8) -> Result<Vec<AddressInfo>, NetError> {
        let messages = self.dump_addresses(None).await?;
        Ok(messages.iter().filter_map(AddressInfo::from_message).filter(|info| info.proto == Some(proto)).collect())
    }

    /// The address VRRP adverts are sent from, as [`select_primary`] picks it.
    pub async fn primary_address(&self, ifindex: u32, family: Family) -> Result<Option<IpAddr>, NetError> {
        Ok(select_primary(&self.addresses(ifindex).await?, family, |_| false))
    }

    /// Adds `addr` tagged with `proto`; an address already present (whoever added it) is
    /// not an error. IPv6 addresses skip duplicate address detection (`IFA_F_NODAD`): a VIP
    /// taken over from a failed peer must answer at once, not after a second of DAD.
    /// `label` (IPv4 only) must start with the interface name, like `eth0:1`.
    pub async fn add_address(
        &self,
        ifindex: u32,
        addr: IpNet,
        label: Option<&str>,
        proto: u8,
    ) -> Result<Added, NetError> {
        self.add_address_with(ifindex, addr, label, proto, false).await
    }

    /// [`add_address`](Self::add_address), but with `dad` an IPv6 address goes through the
    /// kernel's duplicate address detection: it stays `tentative` for about a second, then an
    /// `AddressAdded` event reports it usable or `dad_failed` (another host has it).
    pub async fn add_address_with(
        &self,
        ifindex: u32,
        addr: IpNet,
        label: Option<&str>,
        proto: u8,
        dad: bool,
    ) -> Result<Added, NetError> {
        if let Some(label) = label {
            self.check_label(ifindex, addr, label).await?;
        }
        let mut request = self.handle.address().add(ifindex, addr.addr(), addr.prefix_len());
        let attributes = &mut request.message_mut().attributes;
        if let Some(label) = label {
            attributes.push(AddressAttribute::Label(label.to_owned()));
        }
        attributes.push(AddressAttribute::Protocol(proto.into()));
        if addr.addr().is_ipv6() && !dad {
            attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match request.execute().await {
            Ok(()) => Ok(Added::New),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(Added::AlreadyPresent),
            Err(e) => Err(self.address_error("add", ifindex, addr, e).await),
        }
    }

    /// Removes `addr` (address and prefix length must both match); absent is not an error.
    pub async fn del_address(&self, ifindex: u32, addr: IpNet) -> Result<Removed, NetError> {
        let message = match addr.addr() {
            IpAddr::V4(ip) => {
                AddressMessageBuilder::<Ipv4Addr>::new().index(ifindex).address(ip, addr.prefix_len()).build()
            }
            IpAddr::V6(ip) => {
                AddressMessageBuilder::<Ipv6Addr>::new().index(ifindex).address(ip, addr.prefix_len()).build()
            }
        };
        match self.handle.address().del(message).execute().await {
            Ok(()) => Ok(Removed::Yes),
            Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => Ok(Removed::WasAbsent),
            Err(e) => Err(self.address_error("remove", ifindex, addr, e).await),
        }
    }

    async fn dump_addresses(&self, ifindex: Option<u32>) -> Result<Vec<AddressMessage>, NetError> {
        let mut request = self.handle.address().get();
        if let Some(index) = ifindex {
            request = request.set_link_index_filter(index);
        }
        request.execute().try_collect().await.map_err(|e| NetError::Query {
            what: match ifindex {
                Some(index) => format!("the addresses of interface #{index}"),
                None => "the address list".to_owned(),
            },
            error: to_io(e),
        })
    }

    async fn check_label(&self, ifindex: u32, address: IpNet, label: &str) -> Result<(), NetError> {
        let link = self.link_by_index(ifindex).await?;
        let reason = if address.addr().is_ipv6() {
            Some("labels exist only for IPv4 addresses".to_owned())
        } else if label.len() > MAX_NAME_LEN {
            Some(format!("longer than the kernel's limit of {MAX_NAME_LEN} bytes"))
        } else if !label.starts_with(&link.name) {
            Some(format!("the kernel requires it to start with the interface name, like \"{}:1\"", link.name))
        } else {
            None
        };
        match reason {
            Some(reason) => {
                Err(NetError::InvalidLabel { interface: link.name, address, label: label.to_owned(), reason })
            }
            None => Ok(()),
        }
    }

    async fn address_error(&self, action: &'static str, ifindex: u32, address: IpNet, e: rtnetlink::Error) -> NetError {
        if errno(&e) == Some(libc::ENODEV) {
            return NetError::NoSuchIndex(ifindex);
        }
        let interface = match self.link_by_index(ifindex).await {
            Ok(link) => link.name,
            Err(_) => format!("interface #{ifindex}"),
        };
        NetError::Address { action, interface, address, error: to_io(e) }
    }
}

/// The full flag set: the header holds only the low 8 bits, `IFA_FLAGS` all 32.
/// The address VRRP adverts are sent from, among a link's `addresses` in the kernel's order.
/// IPv4: the first primary (non-secondary) address that nginx-ha did not add itself, so a VIP
/// that became primary in its own subnet is never picked. IPv6: the link-local address, once
/// it has passed DAD (`None` while it is tentative; an `AddressAdded` event follows when DAD
/// completes). Never an address `excluded` says is a VIP (one added untagged, by keepalived or
/// an admin): adverts come from the node's own address.
pub fn select_primary(addresses: &[AddressInfo], family: Family, excluded: impl Fn(IpAddr) -> bool) -> Option<IpAddr> {
    addresses.iter().find_map(|info| {
        let ours = info.proto.is_some_and(super::is_ours);
        let usable = match (family, info.address.addr()) {
            (Family::V4, IpAddr::V4(_)) => !info.secondary && !ours,
            (Family::V6, IpAddr::V6(ip)) => ip.is_unicast_link_local() && !info.tentative && !info.dad_failed && !ours,
            _ => false,
        };
        (usable && !excluded(info.address.addr())).then(|| info.address.addr())
    })
}

fn address_flags(message: &AddressMessage) -> AddressFlags {
    message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            AddressAttribute::Flags(flags) => Some(*flags),
            _ => None,
        })
        .unwrap_or_else(|| AddressFlags::from_bits_retain(message.header.flags.bits().into()))
}

pub(super) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(message) => Some(message.raw_code().abs()),
        _ => None,
    }
}

pub(super) fn to_io(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(message) => message.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

//! Gratuitous ARP and unsolicited neighbour advertisements: after a takeover they make the
//! neighbours (routers, clients on the segment) send VIP traffic to our MAC at once.

use std::{
    io::{self, IoSlice},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV6},
    os::fd::AsRawFd,
};

use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrIn6, sendmsg};
use socket2::{Domain, Protocol, Socket, Type};

use super::{LinkInfo, NetError};

const BROADCAST_MAC: [u8; 6] = [0xff; 6];

/// How many times each address is announced per burst: one lost frame must not leave a
/// neighbour pointing at the old master (keepalived repeats 5 times by default).
pub const ANNOUNCE_REPEAT: usize = 3;

/// Sends a burst of announcements on `link`: [`ANNOUNCE_REPEAT`] rounds of a gratuitous ARP
/// request for each IPv4 address and an unsolicited neighbour advertisement to ff02::1 for
/// each IPv6 one (whose source is the address itself, so it must already be on the link).
/// Each round covers every address before the next starts. Every address is tried; the first
/// failure is returned and later ones are logged. Returns the number of packets sent.
pub async fn announce(link: &LinkInfo, addrs: &[IpAddr]) -> Result<usize, NetError> {
    let mut first_error = None;
    let mut sent_count = 0;
    // One socket per family for the whole burst: closing a packet socket waits for an RCU
    // grace period, which at one socket per address made 1000 VIPs take most of a second.
    let mut sockets = AnnounceSockets::default();
    for _round in 0..ANNOUNCE_REPEAT {
        for &address in addrs {
            let sent = match (link.mac, address) {
                (None, _) => Err(io::Error::new(io::ErrorKind::InvalidInput, "the interface has no Ethernet address")),
                (Some(mac), IpAddr::V4(ip)) => {
                    sockets.arp().and_then(|socket| send_gratuitous_arp(socket, link.index, mac, ip))
                }
                (Some(mac), IpAddr::V6(ip)) => {
                    sockets.icmpv6().and_then(|socket| send_unsolicited_na(socket, link.index, mac, ip))
                }
            };
            match sent {
                Ok(()) => sent_count += 1,
                Err(error) => {
                    let error = NetError::Announce { interface: link.name.clone(), address, error };
                    match first_error {
                        None => first_error = Some(error),
                        Some(_) => tracing::warn!("{error}"),
                    }
                }
            }
        }
        // Later rounds repeat only what could be sent; one error per address is enough.
        if first_error.is_some() {
            break;
        }
    }
    first_error.map_or(Ok(sent_count), Err)
}

/// The sockets of one burst, opened on first use.
#[derive(Default)]
struct AnnounceSockets {
    arp: Option<Socket>,
    icmpv6: Option<Socket>,
}

impl AnnounceSockets {
    /// A datagram packet socket: the kernel builds the Ethernet header from the destination
    /// and the link's own MAC. Protocol 0 means it receives nothing.
    fn arp(&mut self) -> io::Result<&Socket> {
        if self.arp.is_none() {
            self.arp = Some(Socket::new(Domain::PACKET, Type::DGRAM, None)?);
        }
        Ok(self.arp.as_ref().expect("just opened"))
    }

    fn icmpv6(&mut self) -> io::Result<&Socket> {
        if self.icmpv6.is_none() {
            let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
            // Receivers drop neighbour discovery packets that may have crossed a router.
            socket.set_multicast_hops_v6(255)?;
            socket.set_multicast_loop_v6(false)?;
            self.icmpv6 = Some(socket);
        }
        Ok(self.icmpv6.as_ref().expect("just opened"))
    }
}

/// An ARP request with sender = target = `ip` (RFC 5227 "ARP announcement"): receivers
/// that have an entry for `ip` update it to `mac`.
fn send_gratuitous_arp(socket: &Socket, ifindex: u32, mac: [u8; 6], ip: Ipv4Addr) -> io::Result<()> {
    send_arp_request(socket, ifindex, mac, ip, ip)
}

/// A broadcast ARP request for `target` from `sender` (0.0.0.0 for an RFC 5227 probe).
pub(super) fn send_arp_request(
    socket: &Socket,
    ifindex: u32,
    mac: [u8; 6],
    sender: Ipv4Addr,
    target: Ipv4Addr,
) -> io::Result<()> {
    let mut packet = [0u8; 28];
    packet[0..2].copy_from_slice(&1u16.to_be_bytes()); // hardware type: Ethernet
    packet[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol type: IPv4
    packet[4] = 6; // hardware address length
    packet[5] = 4; // protocol address length
    packet[6..8].copy_from_slice(&1u16.to_be_bytes()); // operation: request
    packet[8..14].copy_from_slice(&mac);
    packet[14..18].copy_from_slice(&sender.octets());
    // Target hardware address stays zero: unknown, as in any request.
    packet[24..28].copy_from_slice(&target.octets());

    let mut sll_addr = [0u8; 8];
    sll_addr[..6].copy_from_slice(&BROADCAST_MAC);
    let destination = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: (libc::ETH_P_ARP as u16).to_be(),
        sll_ifindex: ifindex as i32,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr,
    };
    // SAFETY: the buffer and the address are valid for the lengths passed.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&raw const destination).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if sent < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// A neighbour advertisement (RFC 4861 4.4) to all nodes, not solicited, with the
/// Override flag and our MAC as target link-layer address: receivers replace the link
/// address they had for `ip`.
fn send_unsolicited_na(socket: &Socket, ifindex: u32, mac: [u8; 6], ip: Ipv6Addr) -> io::Result<()> {
    const NEIGHBOR_ADVERTISEMENT: u8 = 136;
    const OVERRIDE_FLAG: u8 = 0x20;
    const TARGET_LINK_LAYER_ADDRESS: u8 = 2;
    let mut packet = [0u8; 32];
    packet[0] = NEIGHBOR_ADVERTISEMENT;
    // Code 0; checksum (bytes 2..4) left zero for the kernel, which always computes it
    // on raw ICMPv6 sockets.
    packet[4] = OVERRIDE_FLAG;
    packet[8..24].copy_from_slice(&ip.octets());
    packet[24] = TARGET_LINK_LAYER_ADDRESS;
    packet[25] = 1; // option length, in units of 8 bytes
    packet[26..32].copy_from_slice(&mac);

    let all_nodes = SockaddrIn6::from(SocketAddrV6::new(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), 0, 0, ifindex));
    // Sent from the VIP itself, as the kernel does for its own unsolicited advertisements.
    let source = libc::in6_pktinfo { ipi6_addr: libc::in6_addr { s6_addr: ip.octets() }, ipi6_ifindex: ifindex };
    sendmsg(
        socket.as_raw_fd(),
        &[IoSlice::new(&packet)],
        &[ControlMessage::Ipv6PacketInfo(&source)],
        MsgFlags::empty(),
        Some(&all_nodes),
    )?;
    Ok(())
}

//! The raw IP socket VRRP adverts travel on (IP protocol 112), one per interface and family.

use std::{
    io::{self, IoSlice, IoSliceMut, Read},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6},
    os::fd::{AsFd, AsRawFd},
    sync::Mutex,
};

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, SockaddrIn6, recvmsg, sendmsg, setsockopt,
    sockopt::Ipv6RecvPacketInfo,
};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::io::{Interest, unix::AsyncFd};

pub use crate::net::Family;

pub const IPPROTO_VRRP: i32 = 112;
pub const VRRP_MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
pub const VRRP_MULTICAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);

/// RFC 5798: adverts are sent with TTL / hop limit 255 and receivers drop anything else,
/// which proves the sender is on the link.
const HOP_LIMIT: u32 = 255;
/// DSCP CS6 (network control), as keepalived sends.
const TRAFFIC_CLASS: u32 = 0xc0;
/// Large enough for any IP datagram, so nothing is ever truncated.
const RECEIVE_BUFFER: usize = 65536;

#[derive(Debug, thiserror::Error)]
#[error("cannot set up the {family} VRRP socket on {interface}: {step}: {error}")]
pub struct OpenError {
    pub interface: String,
    pub family: Family,
    pub step: &'static str,
    pub error: io::Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub hop_limit: u8,
    /// The VRRP packet, without IP header.
    pub payload: Vec<u8>,
}

pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
    ifindex: u32,
    family: Family,
    source: Mutex<Option<IpAddr>>,
}

impl VrrpSocket {
    /// Opens the socket bound to `ifname`; with `multicast` it also joins the VRRP group
    /// (224.0.0.18 / ff02::12) on that interface. Needs CAP_NET_RAW and a tokio runtime.
    pub fn open(ifindex: u32, ifname: &str, family: Family, multicast: bool) -> Result<Self, OpenError> {
        let failed = |step| move |error| OpenError { interface: ifname.to_owned(), family, step, error };
        let domain = match family {
            Family::V4 => Domain::IPV4,
            Family::V6 => Domain::IPV6,
        };
        let socket = Socket::new(domain, Type::RAW, Some(Protocol::from(IPPROTO_VRRP)))
            .map_err(failed("creating the raw socket"))?;
        socket.bind_device(Some(ifname.as_bytes())).map_err(failed("binding to the interface"))?;
        match family {
            Family::V4 => {
                socket.set_ttl_v4(HOP_LIMIT).map_err(failed("setting IP_TTL"))?;
                socket.set_multicast_ttl_v4(HOP_LIMIT).map_err(failed("setting IP_MULTICAST_TTL"))?;
                socket.set_tos_v4(TRAFFIC_CLASS).map_err(failed("setting IP_TOS"))?;
                socket.set_multicast_loop_v4(false).map_err(failed("setting IP_MULTICAST_LOOP"))?;
                set_multicast_if_v4(&socket, ifindex).map_err(failed("setting IP_MULTICAST_IF"))?;
                if multicast {
                    socket
                        .join_multicast_v4_n(&VRRP_MULTICAST_V4, &InterfaceIndexOrAddress::Index(ifindex))
                        .map_err(failed("joining 224.0.0.18"))?;
                }
            }
            Family::V6 => {
                socket.set_unicast_hops_v6(HOP_LIMIT).map_err(failed("setting IPV6_UNICAST_HOPS"))?;
                socket.set_multicast_hops_v6(HOP_LIMIT).map_err(failed("setting IPV6_MULTICAST_HOPS"))?;
                socket.set_tclass_v6(TRAFFIC_CLASS).map_err(failed("setting IPV6_TCLASS"))?;
                socket.set_multicast_loop_v6(false).map_err(failed("setting IPV6_MULTICAST_LOOP"))?;
                socket.set_multicast_if_v6(ifindex).map_err(failed("setting IPV6_MULTICAST_IF"))?;
                if multicast {
                    socket.join_multicast_v6(&VRRP_MULTICAST_V6, ifindex).map_err(failed("joining ff02::12"))?;
                }
                // The IPv6 header is not delivered: hop limit and destination come as cmsgs.
                socket.set_recv_hoplimit_v6(true).map_err(failed("setting IPV6_RECVHOPLIMIT"))?;
                setsockopt(&socket.as_fd(), Ipv6RecvPacketInfo, &true)
                    .map_err(|e| failed("setting IPV6_RECVPKTINFO")(e.into()))?;
            }
        }
        socket.set_nonblocking(true).map_err(failed("making it non-blocking"))?;
        // SAFETY: the Socket owns its descriptor, which stays open and the same until the
        // AsyncFd (which owns the Socket) is dropped.
        let fd = unsafe { AsyncFd::register(socket) }.map_err(|e| failed("registering it with tokio")(e.into()))?;
        Ok(VrrpSocket { fd, ifindex, family, source: Mutex::new(None) })
    }

    /// Waits for the next VRRP packet that arrived on the interface.
    pub async fn recv(&self) -> io::Result<Received> {
        self.fd.async_io(Interest::READABLE, |socket| read_packet(self.family, socket)).await
    }

    /// A packet that has already arrived, without waiting (None when there is none): for the
    /// shell to take what is queued before it acts on a timer.
    pub fn try_recv(&self) -> io::Result<Option<Received>> {
        match read_packet(self.family, self.fd.get_ref()) {
            Ok(packet) => Ok(Some(packet)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends `payload` (a complete VRRP packet, checksum included) to `dst`; the kernel
    /// adds the IP header.
    pub async fn send(&self, dst: IpAddr, payload: &[u8]) -> io::Result<()> {
        let source = *self.source.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let iov = [IoSlice::new(payload)];
        let ifindex = self.ifindex;
        match (self.family, dst) {
            (Family::V4, IpAddr::V4(dst)) => {
                let dst = SockaddrIn::from(SocketAddrV4::new(dst, 0));
                let info = match source {
                    Some(IpAddr::V4(src)) => Some(libc::in_pktinfo {
                        ipi_ifindex: ifindex as i32,
                        ipi_spec_dst: libc::in_addr { s_addr: u32::from_ne_bytes(src.octets()) },
                        ipi_addr: libc::in_addr { s_addr: 0 },
                    }),
                    _ => None,
                };
                let cmsgs: Vec<_> = info.iter().map(ControlMessage::Ipv4PacketInfo).collect();
                self.send_with(&iov, &cmsgs, &dst).await
            }
            (Family::V6, IpAddr::V6(dst)) => {
                // The scope id matters for link-local and multicast destinations only.
                let dst = SockaddrIn6::from(SocketAddrV6::new(dst, 0, 0, ifindex));
                let info = match source {
                    Some(IpAddr::V6(src)) => Some(libc::in6_pktinfo {
                        ipi6_addr: libc::in6_addr { s6_addr: src.octets() },
                        ipi6_ifindex: ifindex,
                    }),
                    _ => None,
                };
                let cmsgs: Vec<_> = info.iter().map(ControlMessage::Ipv6PacketInfo).collect();
                self.send_with(&iov, &cmsgs, &dst).await
            }
            _ => Err(family_mismatch(self.family, dst)),
        }
    }

    /// Makes `src` (one of our addresses; for IPv6 the link-local) the source of what
    /// `send` sends from now on, instead of the kernel's choice. Done per packet
    /// (IP_PKTINFO / IPV6_PKTINFO) rather than with bind(), because a bound IPv4 raw
    /// socket no longer receives packets sent to the multicast group.
    pub fn set_source(&self, src: IpAddr) -> io::Result<()> {
        if Family::of(src) != self.family {
            return Err(family_mismatch(self.family, src));
        }
        *self.source.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(src);
        Ok(())
    }

    async fn send_with<A: nix::sys::socket::SockaddrLike>(
        &self,
        iov: &[IoSlice<'_>],
        cmsgs: &[ControlMessage<'_>],
        dst: &A,
    ) -> io::Result<()> {
        self.fd
            .async_io(Interest::WRITABLE, |socket| {
                sendmsg(socket.as_raw_fd(), iov, cmsgs, MsgFlags::empty(), Some(dst)).map_err(io::Error::from)
            })
            .await
            .map(drop)
    }
}

/// One packet from the (non-blocking) socket; WouldBlock when none is queued.
fn read_packet(family: Family, socket: &Socket) -> io::Result<Received> {
    let mut buffer = vec![0u8; RECEIVE_BUFFER];
    match family {
        Family::V4 => {
            let length = (&*socket).read(&mut buffer)?;
            buffer.truncate(length);
            strip_ipv4_header(buffer)
        }
        Family::V6 => {
            let (length, src, dst, hop_limit) = recv_ipv6(socket, &mut buffer)?;
            buffer.truncate(length);
            Ok(Received { src, dst, hop_limit, payload: buffer })
        }
    }
}

fn recv_ipv6(socket: &Socket, buffer: &mut [u8]) -> io::Result<(usize, IpAddr, IpAddr, u8)> {
    let mut cmsg_space = nix::cmsg_space!(libc::in6_pktinfo, libc::c_int);
    let mut iov = [IoSliceMut::new(buffer)];
    let message = recvmsg::<SockaddrIn6>(socket.as_raw_fd(), &mut iov, Some(&mut cmsg_space), MsgFlags::empty())?;
    let src = message.address.map(|a| IpAddr::V6(a.ip()));
    let (mut dst, mut hop_limit) = (None, None);
    for cmsg in message.cmsgs()? {
        match cmsg {
            ControlMessageOwned::Ipv6PacketInfo(info) => dst = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr))),
            ControlMessageOwned::Ipv6HopLimit(limit) => hop_limit = u8::try_from(limit).ok(),
            _ => {}
        }
    }
    match (src, dst, hop_limit) {
        (Some(src), Some(dst), Some(hop_limit)) => Ok((message.bytes, src, dst, hop_limit)),
        _ => Err(io::Error::new(io::ErrorKind::InvalidData, "IPv6 packet without source, PKTINFO or HOPLIMIT")),
    }
}

/// Raw IPv4 sockets deliver the IP header; take source, destination and TTL from it.
fn strip_ipv4_header(mut packet: Vec<u8>) -> io::Result<Received> {
    let header_length = match packet.first() {
        Some(&first) if first >> 4 == 4 => usize::from(first & 0x0f) * 4,
        _ => 0,
    };
    if header_length < 20 || packet.len() < header_length {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "malformed IPv4 header"));
    }
    let address = |at: usize| IpAddr::V4(Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3]));
    let (hop_limit, src, dst) = (packet[8], address(12), address(16));
    let payload = packet.split_off(header_length);
    Ok(Received { src, dst, hop_limit, payload })
}

/// IP_MULTICAST_IF by interface index (struct ip_mreqn), which socket2 only offers by address.
fn set_multicast_if_v4(socket: &Socket, ifindex: u32) -> io::Result<()> {
    let request = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: ifindex as i32,
    };
    // SAFETY: `request` is a valid ip_mreqn for the length passed.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            (&raw const request).cast(),
            size_of::<libc::ip_mreqn>() as libc::socklen_t,
        )
    };
    if result < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

fn family_mismatch(family: Family, addr: IpAddr) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{addr} is not an {family} address"))
}

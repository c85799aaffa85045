//! RFC 5227 address conflict detection for IPv4: before an address is added, ARP requests with
//! sender IP 0.0.0.0 ask whether another host already answers for it. (IPv6 needs nothing
//! here: the kernel runs duplicate address detection itself when an address is added without
//! `IFA_F_NODAD`, see [`Net::add_address_with`](super::Net::add_address_with).)

use std::{
    io,
    net::{IpAddr, Ipv4Addr},
    os::fd::AsRawFd,
    time::Duration,
};

use socket2::{Domain, Socket, Type};
use tokio::{io::unix::AsyncFd, time::Instant};

use super::{LinkInfo, NetError, announce::send_arp_request};

/// Probes sent, and the gap between them. RFC 5227 sends 3 probes 1 to 2 s apart and waits
/// 2 s more; nginx-ha shortens this to about a second, because `nginx-ha alias add` waits for
/// it and a neighbour on the same segment answers within milliseconds.
const PROBES: u32 = 3;
const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// How long answers are awaited after the last probe.
const LISTEN_AFTER_LAST: Duration = Duration::from_millis(600);
/// The whole probe: from the first request to the verdict.
pub const PROBE_DURATION: Duration = Duration::from_millis(
    PROBE_INTERVAL.as_millis() as u64 * (PROBES as u64 - 1) + LISTEN_AFTER_LAST.as_millis() as u64,
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// Nobody answered: the address is free on this link.
    Free,
    /// Another host answered for the address (or probed for it at the same time).
    Taken { mac: [u8; 6] },
}

/// Sends [`PROBES`] ARP probes for `ip` on `link` and listens for a host that claims it: an
/// ARP packet whose sender is `ip`, or another host's probe for `ip`, from a MAC other than
/// ours. Takes [`PROBE_DURATION`] when the address is free, less when it is taken.
pub async fn probe_ipv4(link: &LinkInfo, ip: Ipv4Addr) -> Result<ProbeOutcome, NetError> {
    let error = |error| NetError::Probe { interface: link.name.clone(), address: IpAddr::V4(ip), error };
    let mac = link
        .mac
        .ok_or_else(|| error(io::Error::new(io::ErrorKind::InvalidInput, "the interface has no Ethernet address")))?;
    let socket = open(link.index).map_err(error)?;
    let start = Instant::now();
    let end = start + PROBE_INTERVAL * (PROBES - 1) + LISTEN_AFTER_LAST;
    let mut sent = 0;
    let mut buffer = [0u8; 64];
    loop {
        let next_probe = (sent < PROBES).then(|| start + PROBE_INTERVAL * sent);
        tokio::select! {
            () = tokio::time::sleep_until(next_probe.unwrap_or(end)), if next_probe.is_some() => {
                send_arp_request(socket.get_ref(), link.index, mac, Ipv4Addr::UNSPECIFIED, ip).map_err(error)?;
                sent += 1;
            }
            () = tokio::time::sleep_until(end), if next_probe.is_none() => return Ok(ProbeOutcome::Free),
            readable = socket.readable() => {
                let mut guard = readable.map_err(error)?;
                let received = guard.try_io(|inner| {
                    // SAFETY: the buffer is valid for its length.
                    let n = unsafe { libc::recv(inner.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0) };
                    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
                });
                match received {
                    Ok(Ok(n)) => {
                        if let Some(claimant) = claimant(&buffer[..n], ip, mac) {
                            return Ok(ProbeOutcome::Taken { mac: claimant });
                        }
                    }
                    Ok(Err(e)) => return Err(error(e)),
                    Err(_would_block) => {}
                }
            }
        }
    }
}

/// A datagram packet socket receiving the ARP packets of one interface only.
fn open(ifindex: u32) -> io::Result<AsyncFd<Socket>> {
    // Protocol 0 until bound: bound to the interface first, so no other interface's ARP
    // traffic is queued in between.
    let socket = Socket::new(Domain::PACKET, Type::DGRAM, None)?;
    let address = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: (libc::ETH_P_ARP as u16).to_be(),
        sll_ifindex: ifindex as i32,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    // SAFETY: the address is valid for the length passed.
    let bound = unsafe {
        libc::bind(socket.as_raw_fd(), (&raw const address).cast(), size_of::<libc::sockaddr_ll>() as libc::socklen_t)
    };
    if bound < 0 {
        return Err(io::Error::last_os_error());
    }
    socket.set_nonblocking(true)?;
    // SAFETY: the AsyncFd owns the socket, so the fd stays open while it is registered.
    unsafe { AsyncFd::register(socket) }.map_err(io::Error::from)
}

/// The MAC of a host that claims `ip` in this ARP packet (RFC 5227 2.1.1): its sender IP is
/// `ip`, or it is another host's probe for `ip`. Our own packets (sender MAC `ours`) never count.
fn claimant(packet: &[u8], ip: Ipv4Addr, ours: [u8; 6]) -> Option<[u8; 6]> {
    // Ethernet/IPv4 ARP only: hardware type 1, protocol 0x0800, lengths 6 and 4.
    if packet.len() < 28 || packet[0..6] != [0, 1, 8, 0, 6, 4] {
        return None;
    }
    let sender_mac: [u8; 6] = packet[8..14].try_into().ok()?;
    let sender_ip = Ipv4Addr::new(packet[14], packet[15], packet[16], packet[17]);
    let target_ip = Ipv4Addr::new(packet[24], packet[25], packet[26], packet[27]);
    let operation = u16::from_be_bytes([packet[6], packet[7]]);
    let claims = sender_ip == ip || (operation == 1 && sender_ip.is_unspecified() && target_ip == ip);
    (claims && sender_mac != ours).then_some(sender_mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arp(operation: u16, sender_mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
        let mut packet = vec![0, 1, 8, 0, 6, 4];
        packet.extend_from_slice(&operation.to_be_bytes());
        packet.extend_from_slice(&sender_mac);
        packet.extend_from_slice(&sender.octets());
        packet.extend_from_slice(&[0; 6]);
        packet.extend_from_slice(&target.octets());
        packet
    }

    #[test]
    fn a_reply_or_a_rival_probe_claims_the_address() {
        let (ip, ours, theirs) = (Ipv4Addr::new(198, 18, 0, 107), [2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let other = Ipv4Addr::new(198, 18, 0, 2);
        // The owner answers our probe.
        assert_eq!(claimant(&arp(2, theirs, ip, Ipv4Addr::UNSPECIFIED), ip, ours), Some(theirs));
        // The owner announces or asks from it.
        assert_eq!(claimant(&arp(1, theirs, ip, other), ip, ours), Some(theirs));
        // Another host probes for the same address at the same time.
        assert_eq!(claimant(&arp(1, theirs, Ipv4Addr::UNSPECIFIED, ip), ip, ours), Some(theirs));
        // Our own probe, seen on the way out.
        assert_eq!(claimant(&arp(1, ours, Ipv4Addr::UNSPECIFIED, ip), ip, ours), None);
        // Unrelated traffic: someone asking for the address (not claiming it), other addresses.
        assert_eq!(claimant(&arp(1, theirs, other, ip), ip, ours), None);
        assert_eq!(claimant(&arp(2, theirs, other, ip), ip, ours), None);
        assert_eq!(claimant(&arp(2, theirs, ip, other)[..20], ip, ours), None);
    }
}

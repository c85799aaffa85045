//! **Pure** codec of the drain messages two nginx-ha nodes exchange over UDP (`[daemon]
//! drain_port`) while a VIP moves between them: the old holder lists the flows it still
//! serves, the new holder acknowledges, the old holder says when it is done.
//!
//! ```text
//!  0      4   5    6     7      8          12         16
//!  "NHAD" | 1 | kind | vrid | family | session | seq |  body
//!  kind 1 Flows: old holder's MAC (6) | count (2) | count × (client addr, vip addr, client port, vip port)
//!  kind 2 Done:  (no body)
//!  kind 3 Ack:   flows installed (4)
//! ```
//! Addresses are 4 bytes for family 4 and 16 for family 6, all numbers big-endian.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use thiserror::Error;

const MAGIC: &[u8; 4] = b"NHAD";
const VERSION: u8 = 1;
const HEADER: usize = 16;
const FLOWS_HEADER: usize = HEADER + 8;
/// What a datagram may carry at most: fits any link with an MTU of 1280 or more.
pub const MAX_DATAGRAM: usize = 1232;

/// A TCP connection to a VIP, as the old holder's kernel has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    pub client: SocketAddr,
    pub vip: SocketAddr,
}

impl Flow {
    fn family(&self) -> Family {
        if self.vip.is_ipv4() { Family::V4 } else { Family::V6 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn number(self) -> u8 {
        match self {
            Family::V4 => 4,
            Family::V6 => 6,
        }
    }
    fn address_len(self) -> usize {
        match self {
            Family::V4 => 4,
            Family::V6 => 16,
        }
    }
    fn entry_len(self) -> usize {
        2 * self.address_len() + 4
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Old → new holder: these flows are mine, send their packets to `mac`. Also the heartbeat
    /// (then possibly with no flow).
    Flows { mac: [u8; 6], flows: Vec<Flow> },
    /// Old → new holder: the drain is over; forward nothing more.
    Done,
    /// New → old holder: the pass-through is in place, with `installed` flows in all.
    Ack { installed: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub vrid: u8,
    /// The old holder's choice, the same for every message of one drain.
    pub session: u32,
    pub seq: u32,
    pub body: Body,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("shorter than a drain message header")]
    TooShort,
    #[error("not a drain message (no NHAD magic)")]
    Magic,
    #[error("drain protocol version {0}, this nginx-ha speaks 1")]
    Version(u8),
    #[error("unknown drain message kind {0}")]
    Kind(u8),
    #[error("unknown address family {0}")]
    Family(u8),
    #[error("the flow list is cut short or has bytes left over")]
    Length,
}

/// Encodes `flows` (all of one family) into as many Flows datagrams as they need; at least one,
/// so that an empty list still makes a heartbeat.
pub fn encode_flows(
    vrid: u8,
    session: u32,
    first_seq: u32,
    mac: [u8; 6],
    family: Family,
    flows: &[Flow],
) -> Vec<Vec<u8>> {
    debug_assert!(flows.iter().all(|flow| flow.family() == family));
    let per_datagram = (MAX_DATAGRAM - FLOWS_HEADER) / family.entry_len();
    let mut chunks: Vec<&[Flow]> = flows.chunks(per_datagram).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut out = header(1, vrid, family, session, first_seq.wrapping_add(i as u32));
            out.extend_from_slice(&mac);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            for flow in chunk {
                push_address(&mut out, flow.client.ip());
                push_address(&mut out, flow.vip.ip());
                out.extend_from_slice(&flow.client.port().to_be_bytes());
                out.extend_from_slice(&flow.vip.port().to_be_bytes());
            }
            out
        })
        .collect()
}

pub fn encode_done(vrid: u8, family: Family, session: u32, seq: u32) -> Vec<u8> {
    header(2, vrid, family, session, seq)
}

pub fn encode_ack(vrid: u8, family: Family, session: u32, seq: u32, installed: u32) -> Vec<u8> {
    let mut out = header(3, vrid, family, session, seq);
    out.extend_from_slice(&installed.to_be_bytes());
    out
}

fn header(kind: u8, vrid: u8, family: Family, session: u32, seq: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_DATAGRAM);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[VERSION, kind, vrid, family.number()]);
    out.extend_from_slice(&session.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out
}

fn push_address(out: &mut Vec<u8>, address: IpAddr) {
    match address {
        IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
    }
}

pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    if bytes.len() < HEADER {
        return Err(DecodeError::TooShort);
    }
    if &bytes[..4] != MAGIC {
        return Err(DecodeError::Magic);
    }
    if bytes[4] != VERSION {
        return Err(DecodeError::Version(bytes[4]));
    }
    let family = match bytes[7] {
        4 => Family::V4,
        6 => Family::V6,
        other => return Err(DecodeError::Family(other)),
    };
    let vrid = bytes[6];
    let session = u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let seq = u32::from_be_bytes(bytes[12..16].try_into().expect("4 bytes"));
    let rest = &bytes[HEADER..];
    let body = match bytes[5] {
        1 => decode_flows(family, rest)?,
        2 if rest.is_empty() => Body::Done,
        3 if rest.len() == 4 => Body::Ack { installed: u32::from_be_bytes(rest.try_into().expect("4 bytes")) },
        2 | 3 => return Err(DecodeError::Length),
        kind => return Err(DecodeError::Kind(kind)),
    };
    Ok(Message { vrid, session, seq, body })
}

fn decode_flows(family: Family, rest: &[u8]) -> Result<Body, DecodeError> {
    if rest.len() < 8 {
        return Err(DecodeError::Length);
    }
    let mac: [u8; 6] = rest[..6].try_into().expect("6 bytes");
    let count = usize::from(u16::from_be_bytes([rest[6], rest[7]]));
    let entries = &rest[8..];
    if entries.len() != count * family.entry_len() {
        return Err(DecodeError::Length);
    }
    let len = family.address_len();
    let address = |bytes: &[u8]| -> IpAddr {
        match family {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).expect("4 bytes"))),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).expect("16 bytes"))),
        }
    };
    let flows = entries
        .chunks_exact(family.entry_len())
        .map(|entry| {
            let ports = &entry[2 * len..];
            Flow {
                client: SocketAddr::new(address(&entry[..len]), u16::from_be_bytes([ports[0], ports[1]])),
                vip: SocketAddr::new(address(&entry[len..2 * len]), u16::from_be_bytes([ports[2], ports[3]])),
            }
        })
        .collect();
    Ok(Body::Flows { mac, flows })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(client: &str, vip: &str) -> Flow {
        Flow { client: client.parse().unwrap(), vip: vip.parse().unwrap() }
    }

    #[test]
    fn flows_round_trip_and_split_into_datagrams_that_fit() {
        let flows: Vec<Flow> = (0..300).map(|i| v4(&format!("198.18.0.10:{}", 1000 + i), "198.18.0.100:80")).collect();
        let datagrams = encode_flows(7, 42, 10, [2, 0, 0, 0, 0, 1], Family::V4, &flows);
        assert!(datagrams.len() > 1 && datagrams.iter().all(|d| d.len() <= MAX_DATAGRAM));
        let mut decoded = Vec::new();
        for (i, datagram) in datagrams.iter().enumerate() {
            let message = decode(datagram).unwrap();
            assert_eq!((message.vrid, message.session, message.seq), (7, 42, 10 + i as u32));
            let Body::Flows { mac, flows } = message.body else { panic!("not flows") };
            assert_eq!(mac, [2, 0, 0, 0, 0, 1]);
            decoded.extend(flows);
        }
        assert_eq!(decoded, flows);
    }

    #[test]
    fn an_empty_list_is_one_heartbeat_and_v6_round_trips() {
        let datagrams = encode_flows(1, 1, 0, [0; 6], Family::V6, &[]);
        assert_eq!(datagrams.len(), 1);
        assert_eq!(decode(&datagrams[0]).unwrap().body, Body::Flows { mac: [0; 6], flows: vec![] });
        let flow = Flow { client: "[fd00::10]:4000".parse().unwrap(), vip: "[fd00::100]:443".parse().unwrap() };
        let datagrams = encode_flows(1, 1, 0, [0; 6], Family::V6, &[flow]);
        assert_eq!(decode(&datagrams[0]).unwrap().body, Body::Flows { mac: [0; 6], flows: vec![flow] });
    }

    #[test]
    fn done_and_ack_round_trip() {
        assert_eq!(
            decode(&encode_done(3, Family::V4, 9, 5)).unwrap(),
            Message { vrid: 3, session: 9, seq: 5, body: Body::Done }
        );
        assert_eq!(decode(&encode_ack(3, Family::V4, 9, 6, 12)).unwrap().body, Body::Ack { installed: 12 });
    }

    #[test]
    fn garbage_is_refused_with_its_reason() {
        assert_eq!(decode(b"NHAD"), Err(DecodeError::TooShort));
        assert_eq!(decode(&[0u8; 16]), Err(DecodeError::Magic));
        let mut bad = encode_done(1, Family::V4, 1, 1);
        bad[4] = 2;
        assert_eq!(decode(&bad), Err(DecodeError::Version(2)));
        let mut bad = encode_done(1, Family::V4, 1, 1);
        bad[5] = 9;
        assert_eq!(decode(&bad), Err(DecodeError::Kind(9)));
        let mut bad = encode_done(1, Family::V4, 1, 1);
        bad[7] = 5;
        assert_eq!(decode(&bad), Err(DecodeError::Family(5)));
        let mut cut = encode_flows(1, 1, 1, [0; 6], Family::V4, &[v4("198.18.0.10:1", "198.18.0.100:80")])[0].clone();
        cut.pop();
        assert_eq!(decode(&cut), Err(DecodeError::Length));
        let mut long = encode_done(1, Family::V4, 1, 1);
        long.push(0);
        assert_eq!(decode(&long), Err(DecodeError::Length));
    }

    #[test]
    fn any_bytes_decode_or_fail_without_panicking() {
        // A cheap sweep here; the fuzz target covers the rest.
        let seed = encode_flows(
            1,
            1,
            1,
            [0; 6],
            Family::V6,
            &[Flow { client: "[fd00::10]:4000".parse().unwrap(), vip: "[fd00::100]:443".parse().unwrap() }],
        )[0]
        .clone();
        for i in 0..seed.len() {
            for byte in [0u8, 1, 2, 3, 4, 6, 0xff] {
                let mut bytes = seed.clone();
                bytes[i] = byte;
                let _ = decode(&bytes);
                let _ = decode(&bytes[..i]);
            }
        }
    }
}

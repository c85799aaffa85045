//! VRRP advertisement codec for VRRPv2 (RFC 3768 §5) and VRRPv3 (RFC 5798 §5).
//!
//! Works on the VRRP payload only; `split_ipv4_header` strips the IPv4 header that raw IPv4
//! sockets deliver. IPv6 raw sockets deliver the payload alone, with the addresses and hop
//! limit as ancillary data.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use thiserror::Error;

/// IP protocol number of VRRP (RFC 5798 §5.1.1.4).
pub const IPPROTO_VRRP: u8 = 112;
/// IPv4 multicast group of VRRP (RFC 5798 §5.1.1.2).
pub const MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// IPv6 multicast group of VRRP (RFC 5798 §5.1.2.2).
pub const MULTICAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// Adverts are sent with this TTL / hop limit, so one that went through a router has less
/// (RFC 5798 §5.1.1.3).
pub const HOP_LIMIT: u8 = 255;

const HEADER_LEN: usize = 8;
const CHECKSUM_RANGE: std::ops::Range<usize> = 6..8;
/// VRRPv2 always carries 8 bytes of authentication data after the addresses (RFC 3768 §5.1).
const V2_AUTH_LEN: usize = 8;
const TYPE_ADVERTISEMENT: u8 = 1;
const V2_AUTH_NONE: u8 = 0;
const V2_AUTH_SIMPLE: u8 = 1;
/// VRRPv3 Max Adver Int is 12 bits of centiseconds (RFC 5798 §5.2.7).
const V3_MAX_INTERVAL_CS: u16 = 0x0fff;
const IPV4_MIN_HEADER_LEN: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V2,
    V3,
}

impl Version {
    /// The value of the version nibble on the wire.
    pub fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

/// VRRPv2 authentication (RFC 3768 §5.3.6). VRRPv3 has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Auth {
    None,
    /// Simple text password, zero-padded to 8 bytes.
    Simple([u8; 8]),
}

/// One decoded VRRP advertisement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Advert {
    pub version: Version,
    pub vrid: u8,
    pub priority: u8,
    /// v3: Max Adver Int in centiseconds; v2: Adver Int in seconds × 100.
    pub interval_cs: u16,
    /// v2 only; always `Auth::None` for v3.
    pub auth: Auth,
    /// The virtual addresses, all of the family of the packet's source address.
    pub addresses: Vec<IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CodecOptions {
    /// Include the IPv4 pseudo-header in the VRRPv3 checksum, as RFC 5798 §5.2.8 and
    /// keepalived do. `false` selects the variant some vendors use for v3 over IPv4 (checksum
    /// over the VRRP message only). IPv6 always uses the pseudo-header; v2 never does.
    pub v3_pseudo_header_checksum: bool,
}

impl Default for CodecOptions {
    fn default() -> Self {
        CodecOptions { v3_pseudo_header_checksum: true }
    }
}

/// What `split_ipv4_header` learned from the IPv4 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Meta {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub protocol: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum PacketError {
    #[error("packet too short")]
    TooShort,
    #[error("unsupported VRRP version {0} (expected 2 or 3)")]
    Version(u8),
    #[error("unsupported VRRP packet type {0} (only 1, advertisement, exists)")]
    Type(u8),
    #[error("address family mismatch (source and destination differ, or VRRPv2 over IPv6)")]
    AddressFamily,
    #[error("VRRP checksum mismatch")]
    Checksum,
    #[error("address count is zero or does not match the packet length")]
    AddressCount,
    #[error("advertisement interval is zero or out of range")]
    Interval,
    #[error("unsupported VRRPv2 authentication type {0} (expected 0 = none or 1 = simple text)")]
    AuthType(u8),
    #[error("not an IPv4 datagram (IP version {0})")]
    NotIpv4(u8),
    #[error("bad IPv4 header length of {0} bytes")]
    Ipv4HeaderLength(usize),
    #[error("IPv4 total length {0} does not fit the datagram")]
    Ipv4TotalLength(usize),
    #[error("IP protocol {0} is not VRRP ({IPPROTO_VRRP})")]
    Protocol(u8),
}

/// Encodes `advert` as a VRRP payload from `src` to `dst` (both needed for the pseudo-header
/// checksum), checksum included.
///
/// # Panics
///
/// If the advert cannot be represented on the wire: no address or more than 255, an address
/// not of `src`'s family, `src`/`dst` of different families, VRRPv2 over IPv6 or with an
/// interval that is not 1..=255 whole seconds, VRRPv3 with authentication or an interval
/// outside 1..=4095 centiseconds. `RouterSpec::try_from` rules all of these out.
pub fn encode(advert: &Advert, src: IpAddr, dst: IpAddr, opts: &CodecOptions) -> Vec<u8> {
    let endpoints = check_encodable(advert, src, dst)
        .unwrap_or_else(|error| panic!("VRRP advert cannot be encoded: {error}: {advert:?} from {src} to {dst}"));
    let mut payload = Vec::with_capacity(HEADER_LEN + advert.addresses.len() * 16 + V2_AUTH_LEN);
    payload.extend_from_slice(&[
        advert.version.number() << 4 | TYPE_ADVERTISEMENT,
        advert.vrid,
        advert.priority,
        advert.addresses.len() as u8,
    ]);
    match advert.version {
        Version::V2 => {
            let auth_type = match advert.auth {
                Auth::None => V2_AUTH_NONE,
                Auth::Simple(_) => V2_AUTH_SIMPLE,
            };
            payload.extend_from_slice(&[auth_type, (advert.interval_cs / 100) as u8]);
        }
        Version::V3 => payload.extend_from_slice(&advert.interval_cs.to_be_bytes()),
    }
    payload.extend_from_slice(&[0, 0]); // checksum, filled in below
    for address in &advert.addresses {
        match address {
            IpAddr::V4(v4) => payload.extend_from_slice(&v4.octets()),
            IpAddr::V6(v6) => payload.extend_from_slice(&v6.octets()),
        }
    }
    if advert.version == Version::V2 {
        let password = match advert.auth {
            Auth::None => [0; V2_AUTH_LEN],
            Auth::Simple(password) => password,
        };
        payload.extend_from_slice(&password);
    }
    let checksum = checksum(advert.version, endpoints, &payload, opts);
    payload[CHECKSUM_RANGE].copy_from_slice(&checksum.to_be_bytes());
    payload
}

/// Decodes and validates a VRRP payload received from `src` to `dst`.
///
/// Checks, in this order: length, version, type, address families, checksum, address count,
/// interval, v2 authentication type. Reserved bits and v2 authentication data with
/// authentication type 0 are ignored, as RFC 5798 §5.2.7 and RFC 3768 §5.3.10 ask.
pub fn decode(payload: &[u8], src: IpAddr, dst: IpAddr, opts: &CodecOptions) -> Result<Advert, PacketError> {
    if payload.len() < HEADER_LEN {
        return Err(PacketError::TooShort);
    }
    let version = match payload[0] >> 4 {
        2 => Version::V2,
        3 => Version::V3,
        other => return Err(PacketError::Version(other)),
    };
    let kind = payload[0] & 0x0f;
    if kind != TYPE_ADVERTISEMENT {
        return Err(PacketError::Type(kind));
    }
    let endpoints = Endpoints::new(version, src, dst)?;
    // Summing a correct packet including its checksum field yields zero (RFC 1071).
    if checksum(version, endpoints, payload, opts) != 0 {
        return Err(PacketError::Checksum);
    }

    let count = usize::from(payload[3]);
    let address_len = if endpoints.is_ipv4() { 4 } else { 16 };
    let auth_len = if version == Version::V2 { V2_AUTH_LEN } else { 0 };
    let addresses_end = HEADER_LEN + count * address_len;
    if count == 0 || payload.len() != addresses_end + auth_len {
        return Err(PacketError::AddressCount);
    }
    let interval_cs = match version {
        Version::V2 => u16::from(payload[5]) * 100,
        Version::V3 => u16::from_be_bytes([payload[4], payload[5]]) & V3_MAX_INTERVAL_CS,
    };
    if interval_cs == 0 {
        return Err(PacketError::Interval);
    }
    let auth = match version {
        Version::V3 => Auth::None,
        Version::V2 => match payload[4] {
            V2_AUTH_NONE => Auth::None,
            V2_AUTH_SIMPLE => Auth::Simple(payload[addresses_end..].try_into().expect("length checked above")),
            other => return Err(PacketError::AuthType(other)),
        },
    };
    let addresses = payload[HEADER_LEN..addresses_end]
        .chunks_exact(address_len)
        .map(|octets| match <[u8; 4]>::try_from(octets) {
            Ok(v4) => IpAddr::from(v4),
            Err(_) => IpAddr::from(<[u8; 16]>::try_from(octets).expect("16-byte chunks")),
        })
        .collect();

    Ok(Advert { version, vrid: payload[1], priority: payload[2], interval_cs, auth, addresses })
}

/// Splits what an IPv4 raw socket delivers into the header fields VRRP cares about and the
/// VRRP payload. Bytes past the IPv4 total length are not part of the datagram and dropped.
pub fn split_ipv4_header(datagram: &[u8]) -> Result<(Ipv4Meta, &[u8]), PacketError> {
    if datagram.len() < IPV4_MIN_HEADER_LEN {
        return Err(PacketError::TooShort);
    }
    let ip_version = datagram[0] >> 4;
    if ip_version != 4 {
        return Err(PacketError::NotIpv4(ip_version));
    }
    let header_len = usize::from(datagram[0] & 0x0f) * 4;
    if header_len < IPV4_MIN_HEADER_LEN || header_len > datagram.len() {
        return Err(PacketError::Ipv4HeaderLength(header_len));
    }
    let total_len = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    if total_len < header_len || total_len > datagram.len() {
        return Err(PacketError::Ipv4TotalLength(total_len));
    }
    let protocol = datagram[9];
    if protocol != IPPROTO_VRRP {
        return Err(PacketError::Protocol(protocol));
    }
    let address = |at: usize| Ipv4Addr::new(datagram[at], datagram[at + 1], datagram[at + 2], datagram[at + 3]);
    let meta = Ipv4Meta { src: address(12), dst: address(16), ttl: datagram[8], protocol };
    Ok((meta, &datagram[header_len..total_len]))
}

/// The source and destination of a packet, known to share a family VRRP can use them with.
#[derive(Clone, Copy)]
enum Endpoints {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

impl Endpoints {
    fn new(version: Version, src: IpAddr, dst: IpAddr) -> Result<Self, PacketError> {
        match (version, src, dst) {
            (_, IpAddr::V4(src), IpAddr::V4(dst)) => Ok(Endpoints::V4(src, dst)),
            (Version::V3, IpAddr::V6(src), IpAddr::V6(dst)) => Ok(Endpoints::V6(src, dst)),
            _ => Err(PacketError::AddressFamily),
        }
    }

    fn is_ipv4(self) -> bool {
        matches!(self, Endpoints::V4(..))
    }
}

fn check_encodable(advert: &Advert, src: IpAddr, dst: IpAddr) -> Result<Endpoints, PacketError> {
    let endpoints = Endpoints::new(advert.version, src, dst)?;
    if advert.addresses.iter().any(|address| address.is_ipv4() != endpoints.is_ipv4()) {
        return Err(PacketError::AddressFamily);
    }
    if advert.addresses.is_empty() || advert.addresses.len() > usize::from(u8::MAX) {
        return Err(PacketError::AddressCount);
    }
    let interval_ok = match advert.version {
        Version::V2 => advert.interval_cs.is_multiple_of(100) && (1..=255).contains(&(advert.interval_cs / 100)),
        Version::V3 => (1..=V3_MAX_INTERVAL_CS).contains(&advert.interval_cs),
    };
    if !interval_ok {
        return Err(PacketError::Interval);
    }
    if advert.version == Version::V3 && advert.auth != Auth::None {
        return Err(PacketError::AuthType(V2_AUTH_SIMPLE));
    }
    Ok(endpoints)
}

/// The Internet checksum (RFC 1071) of `payload`, preceded by the pseudo-header where the
/// version and options call for one.
fn checksum(version: Version, endpoints: Endpoints, payload: &[u8], opts: &CodecOptions) -> u16 {
    let mut sum = OnesComplementSum::default();
    match (version, endpoints) {
        (Version::V2, _) => {}
        // RFC 5798 §5.2.8 with the IPv4 pseudo-header of RFC 768: src, dst, zero, protocol, length.
        (Version::V3, Endpoints::V4(src, dst)) => {
            if opts.v3_pseudo_header_checksum {
                sum.add(&src.octets());
                sum.add(&dst.octets());
                sum.add(&[0, IPPROTO_VRRP]);
                sum.add(&(payload.len() as u16).to_be_bytes());
            }
        }
        // RFC 2460 §8.1: src, dst, 32-bit upper-layer length, 3 zero bytes, next header.
        (Version::V3, Endpoints::V6(src, dst)) => {
            sum.add(&src.octets());
            sum.add(&dst.octets());
            sum.add(&(payload.len() as u32).to_be_bytes());
            sum.add(&[0, 0, 0, IPPROTO_VRRP]);
        }
    }
    sum.add(payload);
    sum.finish()
}

/// RFC 1071 accumulator; only the last slice added may have an odd length.
#[derive(Default)]
struct OnesComplementSum(u64);

impl OnesComplementSum {
    fn add(&mut self, bytes: &[u8]) {
        for word in bytes.chunks(2) {
            self.0 += u64::from(u16::from_be_bytes([word[0], word.get(1).copied().unwrap_or(0)]));
        }
    }

    fn finish(self) -> u16 {
        let mut sum = self.0;
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4_PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 200, 1));
    const V4_GROUP: IpAddr = IpAddr::V4(MULTICAST_V4);
    const V6_PEER: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));
    const V6_GROUP: IpAddr = IpAddr::V6(MULTICAST_V6);

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn advert(version: Version, address: &str) -> Advert {
        Advert { version, vrid: 51, priority: 100, interval_cs: 100, auth: Auth::None, addresses: vec![ip(address)] }
    }

    fn roundtrip(advert: &Advert, src: IpAddr, dst: IpAddr, opts: &CodecOptions) -> Vec<u8> {
        let payload = encode(advert, src, dst, opts);
        assert_eq!(decode(&payload, src, dst, opts).as_ref(), Ok(advert));
        payload
    }

    /// A valid packet of `version` with `count` IPv4 addresses whose fields are then
    /// patched and the checksum recomputed, to reach the checks behind the checksum.
    fn patched(version: Version, count: usize, patch: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut advert = advert(version, "192.168.200.16");
        advert.addresses = vec![advert.addresses[0]; count.max(1)];
        let mut payload = encode(&advert, V4_PEER, V4_GROUP, &CodecOptions::default());
        patch(&mut payload);
        let endpoints = Endpoints::new(version, V4_PEER, V4_GROUP).unwrap();
        payload[CHECKSUM_RANGE].fill(0);
        let sum = checksum(version, endpoints, &payload, &CodecOptions::default());
        payload[CHECKSUM_RANGE].copy_from_slice(&sum.to_be_bytes());
        payload
    }

    fn decode_v4(payload: &[u8]) -> Result<Advert, PacketError> {
        decode(payload, V4_PEER, V4_GROUP, &CodecOptions::default())
    }

    #[test]
    fn v2_packet_built_by_hand() {
        // Word sum: 0x2133 + 0x6401 + 0x0001 + 0xc0a8 + 0xc810 = 0x20ded, folded 0x0def,
        // complemented 0xf210.
        let expected = [
            0x21, // version 2, type 1
            51,   // VRID
            100,  // priority
            1,    // address count
            0,    // auth type: none
            1,    // advert interval: 1 s
            0xf2, 0x10, // checksum
            192, 168, 200, 16, // address
            0, 0, 0, 0, 0, 0, 0, 0, // authentication data
        ];
        let advert = advert(Version::V2, "192.168.200.16");
        // v2 has no pseudo-header: neither the addresses nor the option matter.
        for (src, dst) in [(V4_PEER, V4_GROUP), (ip("10.0.0.1"), ip("10.0.0.2"))] {
            for opts in [CodecOptions::default(), CodecOptions { v3_pseudo_header_checksum: false }] {
                assert_eq!(roundtrip(&advert, src, dst, &opts), expected);
            }
        }
    }

    #[test]
    fn v2_simple_text_auth_vector() {
        let mut advert = advert(Version::V2, "192.168.200.16");
        advert.auth = Auth::Simple(*b"secret\0\0");
        let expected = [
            0x21, 0x33, 0x64, 0x01, 0x01, 0x01, 0xb4, 0xc4, 0xc0, 0xa8, 0xc8, 0x10, //
            b's', b'e', b'c', b'r', b'e', b't', 0, 0,
        ];
        assert_eq!(roundtrip(&advert, V4_PEER, V4_GROUP, &CodecOptions::default()), expected);
    }

    #[test]
    fn v2_ignores_auth_data_without_auth_type() {
        let payload = patched(Version::V2, 1, |p| p[12..].copy_from_slice(b"leftover"));
        assert_eq!(decode_v4(&payload).unwrap().auth, Auth::None);
    }

    #[test]
    fn v3_ipv4_vectors_with_and_without_pseudo_header() {
        let advert = advert(Version::V3, "192.168.200.16");
        let body = |checksum: [u8; 2]| [0x31, 51, 100, 1, 0x00, 100, checksum[0], checksum[1], 192, 168, 200, 16];
        let with = CodecOptions::default();
        let without = CodecOptions { v3_pseudo_header_checksum: false };
        assert_eq!(roundtrip(&advert, V4_PEER, V4_GROUP, &with), body([0x78, 0x74]));
        assert_eq!(roundtrip(&advert, V4_PEER, V4_GROUP, &without), body([0xe1, 0xad]));

        // Each side rejects the other variant, and the pseudo-header binds src and dst.
        let payload = encode(&advert, V4_PEER, V4_GROUP, &with);
        assert_eq!(decode(&payload, V4_PEER, V4_GROUP, &without), Err(PacketError::Checksum));
        assert_eq!(decode(&payload, ip("192.168.200.2"), V4_GROUP, &with), Err(PacketError::Checksum));
        assert_eq!(decode(&payload, V4_PEER, ip("192.168.200.2"), &with), Err(PacketError::Checksum));
    }

    #[test]
    fn v3_ipv6_vector_always_uses_pseudo_header() {
        let advert = advert(Version::V3, "2001:db8::100");
        let mut expected = vec![0x31, 51, 100, 1, 0x00, 100, 0x3d, 0x8f];
        expected.extend_from_slice(&"2001:db8::100".parse::<Ipv6Addr>().unwrap().octets());
        for opts in [CodecOptions::default(), CodecOptions { v3_pseudo_header_checksum: false }] {
            assert_eq!(roundtrip(&advert, V6_PEER, V6_GROUP, &opts), expected);
        }
    }

    #[test]
    fn v3_reserved_bits_are_ignored_and_interval_has_12_bits() {
        let mut advert = advert(Version::V3, "192.168.200.16");
        advert.interval_cs = 4095;
        roundtrip(&advert, V4_PEER, V4_GROUP, &CodecOptions::default());
        let payload = patched(Version::V3, 1, |p| p[4] |= 0xf0);
        assert_eq!(decode_v4(&payload).unwrap().interval_cs, 100);
    }

    #[test]
    fn rejects_each_malformation_with_its_own_error() {
        let valid = encode(&advert(Version::V2, "192.168.200.16"), V4_PEER, V4_GROUP, &CodecOptions::default());
        assert_eq!(decode_v4(&valid[..7]), Err(PacketError::TooShort));
        assert_eq!(decode_v4(&[]), Err(PacketError::TooShort));
        assert_eq!(decode_v4(&patched(Version::V2, 1, |p| p[0] = 0x41)), Err(PacketError::Version(4)));
        assert_eq!(decode_v4(&patched(Version::V3, 1, |p| p[0] = 0x32)), Err(PacketError::Type(2)));
        let mut corrupt = valid.clone();
        corrupt[2] ^= 0x01;
        assert_eq!(decode_v4(&corrupt), Err(PacketError::Checksum));
        assert_eq!(decode_v4(&patched(Version::V2, 1, |p| p[3] = 2)), Err(PacketError::AddressCount));
        assert_eq!(decode_v4(&patched(Version::V3, 2, |p| p[3] = 0)), Err(PacketError::AddressCount));
        assert_eq!(decode_v4(&patched(Version::V3, 1, |p| p.push(0))), Err(PacketError::AddressCount));
        assert_eq!(decode_v4(&patched(Version::V2, 1, |p| p[5] = 0)), Err(PacketError::Interval));
        assert_eq!(decode_v4(&patched(Version::V3, 1, |p| p[4..6].fill(0))), Err(PacketError::Interval));
        assert_eq!(decode_v4(&patched(Version::V2, 1, |p| p[4] = 2)), Err(PacketError::AuthType(2)));
    }

    #[test]
    fn rejects_family_mismatches() {
        let options = CodecOptions::default();
        let v2 = encode(&advert(Version::V2, "192.168.200.16"), V4_PEER, V4_GROUP, &options);
        assert_eq!(decode(&v2, V6_PEER, V6_GROUP, &options), Err(PacketError::AddressFamily));
        let v3 = encode(&advert(Version::V3, "192.168.200.16"), V4_PEER, V4_GROUP, &options);
        assert_eq!(decode(&v3, V4_PEER, V6_GROUP, &options), Err(PacketError::AddressFamily));
    }

    #[test]
    #[should_panic(expected = "cannot be encoded")]
    fn encode_refuses_v2_intervals_that_are_not_whole_seconds() {
        let mut advert = advert(Version::V2, "192.168.200.16");
        advert.interval_cs = 150;
        encode(&advert, V4_PEER, V4_GROUP, &CodecOptions::default());
    }

    #[test]
    #[should_panic(expected = "cannot be encoded")]
    fn encode_refuses_addresses_of_another_family() {
        encode(&advert(Version::V3, "2001:db8::1"), V4_PEER, V4_GROUP, &CodecOptions::default());
    }

    fn ipv4_datagram(options: &[u8], protocol: u8, payload: &[u8], trailer: &[u8]) -> Vec<u8> {
        let header_len = 20 + options.len();
        let total_len = (header_len + payload.len()) as u16;
        let mut datagram = vec![0x40 | (header_len / 4) as u8, 0xc0];
        datagram.extend_from_slice(&total_len.to_be_bytes());
        datagram.extend_from_slice(&[0, 0, 0, 0, 255, protocol, 0, 0]);
        datagram.extend_from_slice(&[192, 168, 200, 1, 224, 0, 0, 18]);
        datagram.extend_from_slice(options);
        datagram.extend_from_slice(payload);
        datagram.extend_from_slice(trailer);
        datagram
    }

    #[test]
    fn split_ipv4_header_returns_meta_and_payload() {
        let payload = encode(&advert(Version::V3, "192.168.200.16"), V4_PEER, V4_GROUP, &CodecOptions::default());
        let expected_meta =
            Ipv4Meta { src: Ipv4Addr::new(192, 168, 200, 1), dst: MULTICAST_V4, ttl: 255, protocol: IPPROTO_VRRP };
        // With IP options (IHL 6) and bytes past the total length.
        let datagram = ipv4_datagram(&[1, 1, 1, 0], IPPROTO_VRRP, &payload, &[0xee; 3]);
        let (meta, split) = split_ipv4_header(&datagram).unwrap();
        assert_eq!(meta, expected_meta);
        assert_eq!(split, payload);
        assert!(decode(split, meta.src.into(), meta.dst.into(), &CodecOptions::default()).is_ok());
    }

    #[test]
    fn split_ipv4_header_rejects_bad_headers() {
        let good = ipv4_datagram(&[], IPPROTO_VRRP, &[0; 12], &[]);
        assert_eq!(split_ipv4_header(&good[..19]), Err(PacketError::TooShort));
        let mut ipv6 = good.clone();
        ipv6[0] = 0x65;
        assert_eq!(split_ipv4_header(&ipv6), Err(PacketError::NotIpv4(6)));
        let mut short_ihl = good.clone();
        short_ihl[0] = 0x44;
        assert_eq!(split_ipv4_header(&short_ihl), Err(PacketError::Ipv4HeaderLength(16)));
        let mut long_ihl = good.clone();
        long_ihl[0] = 0x4f;
        assert_eq!(split_ipv4_header(&long_ihl), Err(PacketError::Ipv4HeaderLength(60)));
        assert_eq!(split_ipv4_header(&good[..31]), Err(PacketError::Ipv4TotalLength(32)));
        let mut tiny_total = good.clone();
        tiny_total[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(split_ipv4_header(&tiny_total), Err(PacketError::Ipv4TotalLength(19)));
        let tcp = ipv4_datagram(&[], 6, &[0; 12], &[]);
        assert_eq!(split_ipv4_header(&tcp), Err(PacketError::Protocol(6)));
    }
}

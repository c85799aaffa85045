//! Property tests of the VRRP codec: round trips, robustness against arbitrary bytes, and
//! detection of single-bit corruption.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use nginx_ha::vrrp::packet::{Advert, Auth, CodecOptions, Version, decode, encode, split_ipv4_header};
use proptest::prelude::*;

fn address(ipv4: bool) -> BoxedStrategy<IpAddr> {
    if ipv4 {
        any::<[u8; 4]>().prop_map(|octets| IpAddr::from(Ipv4Addr::from(octets))).boxed()
    } else {
        any::<[u8; 16]>().prop_map(|octets| IpAddr::from(Ipv6Addr::from(octets))).boxed()
    }
}

fn options() -> impl Strategy<Value = CodecOptions> {
    any::<bool>().prop_map(|v3_pseudo_header_checksum| CodecOptions { v3_pseudo_header_checksum })
}

/// A valid advert with the source and destination it is sent between.
fn sent_advert() -> impl Strategy<Value = (Advert, IpAddr, IpAddr)> {
    prop_oneof![Just((Version::V2, true)), Just((Version::V3, true)), Just((Version::V3, false))].prop_flat_map(
        |(version, ipv4)| {
            let interval_cs = match version {
                Version::V2 => (1u16..=255).prop_map(|seconds| seconds * 100).boxed(),
                Version::V3 => (1u16..=0x0fff).boxed(),
            };
            let auth = match version {
                Version::V2 => prop_oneof![Just(Auth::None), any::<[u8; 8]>().prop_map(Auth::Simple)].boxed(),
                Version::V3 => Just(Auth::None).boxed(),
            };
            let advert = (any::<u8>(), any::<u8>(), interval_cs, auth, prop::collection::vec(address(ipv4), 1..=20))
                .prop_map(move |(vrid, priority, interval_cs, auth, addresses)| Advert {
                    version,
                    vrid,
                    priority,
                    interval_cs,
                    auth,
                    addresses,
                });
            (advert, address(ipv4), address(ipv4))
        },
    )
}

proptest! {
    #[test]
    fn decode_inverts_encode((advert, src, dst) in sent_advert(), opts in options()) {
        let payload = encode(&advert, src, dst, &opts);
        prop_assert_eq!(decode(&payload, src, dst, &opts), Ok(advert));
    }

    #[test]
    fn a_flipped_bit_is_rejected(
        (advert, src, dst) in sent_advert(),
        opts in options(),
        bit in any::<prop::sample::Index>(),
    ) {
        let mut payload = encode(&advert, src, dst, &opts);
        let bit = bit.index(payload.len() * 8);
        payload[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(decode(&payload, src, dst, &opts).is_err());
    }

    #[test]
    fn decode_never_panics(
        payload in prop::collection::vec(any::<u8>(), 0..400),
        ipv4 in any::<bool>(),
        mixed_families in any::<bool>(),
        opts in options(),
        seed in any::<[u8; 16]>(),
    ) {
        let v6 = IpAddr::from(Ipv6Addr::from(seed));
        let v4 = IpAddr::from(Ipv4Addr::new(seed[0], seed[1], seed[2], seed[3]));
        let src = if ipv4 { v4 } else { v6 };
        let dst = if mixed_families == ipv4 { v6 } else { v4 };
        let _ = decode(&payload, src, dst, &opts);
    }

    /// Packets of arbitrary content but consistent length and checksum decode exactly when
    /// their interval and v2 auth type are valid, and re-encode to the same bytes except
    /// for what the RFCs say to ignore: v3 reserved bits and v2 auth data without auth type.
    #[test]
    fn well_formed_bytes_decode_and_reencode_canonically(
        v2 in any::<bool>(),
        header in any::<[u8; 3]>(),
        count in 1usize..=20,
        interval_word in any::<u16>(),
        body in prop::collection::vec(any::<u8>(), 20 * 4 + 8),
    ) {
        // Checksum over the payload only: v2, or v3 without the pseudo-header.
        let opts = CodecOptions { v3_pseudo_header_checksum: false };
        let (src, dst) = (IpAddr::from([192, 0, 2, 1]), IpAddr::from([224, 0, 0, 18]));
        let [high, low] = interval_word.to_be_bytes();
        let mut payload = vec![if v2 { 0x21 } else { 0x31 }, header[0], header[1], count as u8, high, low, 0, 0];
        let addresses_end = payload.len() + count * 4;
        payload.extend_from_slice(&body[..count * 4 + if v2 { 8 } else { 0 }]);
        set_checksum(&mut payload);

        let valid = if v2 { high <= 1 && low != 0 } else { interval_word & 0x0fff != 0 };
        let decoded = decode(&payload, src, dst, &opts);
        prop_assert_eq!(decoded.is_ok(), valid, "{:?}", decoded);
        if let Ok(advert) = decoded {
            let mut canonical = payload;
            if v2 && high == 0 {
                canonical[addresses_end..].fill(0);
            }
            if !v2 {
                canonical[4] &= 0x0f;
            }
            set_checksum(&mut canonical);
            prop_assert_eq!(encode(&advert, src, dst, &opts), canonical);
        }
    }

    #[test]
    fn split_ipv4_header_never_panics_and_stays_in_bounds(
        datagram in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        if let Ok((meta, payload)) = split_ipv4_header(&datagram) {
            prop_assert_eq!(meta.protocol, 112);
            prop_assert!(payload.len() + 20 <= datagram.len());
        }
    }

    #[test]
    fn split_ipv4_header_finds_the_payload(
        (advert, _, _) in sent_advert().prop_filter("IPv4", |(_, src, _)| src.is_ipv4()),
        options_words in 0usize..=10,
        ttl in any::<u8>(),
        trailer in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let (src, dst) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(224, 0, 0, 18));
        let payload = encode(&advert, src.into(), dst.into(), &CodecOptions::default());
        let header_len = 20 + options_words * 4;
        let mut datagram = vec![0x40 | (header_len / 4) as u8, 0];
        datagram.extend_from_slice(&((header_len + payload.len()) as u16).to_be_bytes());
        datagram.extend_from_slice(&[0, 0, 0, 0, ttl, 112, 0, 0]);
        datagram.extend_from_slice(&src.octets());
        datagram.extend_from_slice(&dst.octets());
        datagram.resize(header_len, 1); // NOP options
        datagram.extend_from_slice(&payload);
        datagram.extend_from_slice(&trailer);

        let (meta, split) = split_ipv4_header(&datagram).unwrap();
        prop_assert_eq!((meta.src, meta.dst, meta.ttl), (src, dst, ttl));
        prop_assert_eq!(split, &payload[..]);
    }
}

/// RFC 1071, written independently of the codec's.
fn set_checksum(payload: &mut [u8]) {
    payload[6..8].fill(0);
    let mut sum: u32 =
        payload.chunks(2).map(|word| u32::from(u16::from_be_bytes([word[0], word.get(1).copied().unwrap_or(0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    payload[6..8].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

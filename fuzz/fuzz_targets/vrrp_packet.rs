//! Arbitrary bytes into everything that parses VRRP input from the network: the IPv4 header
//! split, the decoder for both families and checksum variants, and a BACKUP and a MASTER
//! router. Must never panic; adverts the routers send in reply must decode.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use nginx_ha::vrrp::packet::{self, CodecOptions, MULTICAST_V4, MULTICAST_V6, Version};
use nginx_ha::vrrp::router::{Action, FailureMode, Input, Router, RouterConfig, State};
use nginx_ha::nginx::policy::Health;

const OWN: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
const GROUP: IpAddr = IpAddr::V4(MULTICAST_V4);
const PEER_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2));
const GROUP_V6: IpAddr = IpAddr::V6(MULTICAST_V6);
/// Both routers checksum the payload alone (v2, and v3 without the pseudo-header), so that
/// `with_checksum` can make random bytes get past the checksum.
const PAYLOAD_ONLY: CodecOptions = CodecOptions { v3_pseudo_header_checksum: false };

fuzz_target!(|data: &[u8]| {
    if let Ok((meta, payload)) = packet::split_ipv4_header(data) {
        let _ = packet::decode(payload, meta.src.into(), meta.dst.into(), &CodecOptions::default());
    }
    for opts in [CodecOptions::default(), PAYLOAD_ONLY] {
        let _ = packet::decode(data, PEER, GROUP, &opts);
        let _ = packet::decode(data, PEER_V6, GROUP_V6, &opts);
    }

    let checksummed = with_checksum(data);
    for payload in [data, &checksummed] {
        // BACKUP: VRRPv2, priority 100. MASTER: VRRPv3 address owner.
        for (version, priority, state) in [(Version::V2, 100, State::Backup), (Version::V3, 255, State::Master)] {
            let now = Instant::now();
            let mut router = started_router(version, priority, now);
            assert_eq!(router.status().state, state);
            let input = Input::Packet { src: PEER, dst: GROUP, hop_limit: 255, payload };
            check_adverts(router.handle(now + Duration::from_millis(500), input));
            // Whatever the packet set in motion (a priority-0 advert makes the backup master).
            if let Some(deadline) = router.next_deadline() {
                check_adverts(router.handle(deadline, Input::TimerFired));
            }
        }
    }
});

fn started_router(version: Version, priority: u8, now: Instant) -> Router {
    let config = RouterConfig {
        name: "fuzz".into(),
        vrid: 51,
        priority,
        version,
        advert_interval: Duration::from_secs(1),
        preempt: true,
        preempt_delay: Duration::ZERO,
        restart_grace: Duration::from_millis(300),
        drain: Duration::ZERO,
        auth_pass: None,
        vips: vec!["192.0.2.100/24".parse().unwrap()],
        failure_mode: FailureMode::Relinquish,
        codec: PAYLOAD_ONLY,
        unicast_peers: vec![],
    };
    let mut router = Router::new(config, now);
    router.handle(now, Input::Health(Health::Healthy));
    router.handle(now, Input::Startup { primary: OWN });
    router
}

fn check_adverts(actions: Vec<Action>) {
    for action in actions {
        if let Action::SendAdvert { dst, payload, .. } = action {
            assert!(packet::decode(&payload, OWN, dst, &PAYLOAD_ONLY).is_ok());
        }
    }
}

/// `data` with a correct RFC 1071 checksum over itself in bytes 6..8, where VRRP keeps it.
fn with_checksum(data: &[u8]) -> Vec<u8> {
    let mut payload = data.to_vec();
    if payload.len() < 8 {
        return payload;
    }
    payload[6..8].fill(0);
    let mut sum: u64 = payload
        .chunks(2)
        .map(|word| u64::from(u16::from_be_bytes([word[0], word.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    payload[6..8].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    payload
}

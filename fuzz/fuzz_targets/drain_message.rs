//! Arbitrary bytes on the drain port (src/drain/protocol.rs) into the decoder and into the drain
//! core as both the new holder (accepting a drain from the sender) and the old holder (waiting
//! for acknowledgements from it), with both hop limits. Must never panic; whatever the core
//! sends in reply must decode, and it never passes through a flow to an address that is not a VIP.
#![no_main]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use nginx_ha::drain::core::{Command, Drains, Input, Output, TTL};
use nginx_ha::drain::protocol;

fuzz_target!(|data: &[u8]| {
    let _ = protocol::decode(data);
    let peer: IpAddr = "198.18.0.1".parse().unwrap();
    let vip: IpAddr = "198.18.0.100".parse().unwrap();
    for ttl in [TTL, 64] {
        let now = Instant::now();
        let mut drains = Drains::new();
        let window = Duration::from_secs(30);
        drains.handle(now, Input::Command(Command::Accept { router: 0, vrid: 1, ifindex: 2, vips: vec![vip], from: peer, window }));
        let hand_over = Command::HandOver {
            router: 1,
            vrid: 1,
            ifindex: 2,
            mac: [2, 0, 0, 0, 0, 1],
            vips: vec![vip],
            to: peer,
            window,
            session: 1,
        };
        drains.handle(now, Input::Command(hand_over));
        for (i, chunk) in [data, data].into_iter().enumerate() {
            let at = now + Duration::from_millis(50 * i as u64);
            for output in drains.handle(at, Input::Datagram { from: peer, ttl, bytes: chunk }) {
                match output {
                    Output::Send { bytes, .. } => assert!(protocol::decode(&bytes).is_ok()),
                    Output::Forward { flows, .. } => assert!(flows.iter().all(|flow| flow.vip.ip() == vip)),
                    _ => {}
                }
            }
        }
        let _ = drains.handle(now + Duration::from_secs(60), Input::Timer);
    }
});

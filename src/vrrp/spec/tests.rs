//! The conversion of one `[[vrrp]]` table; the located messages are tested in config/tests.rs.

use super::*;

const TABLE: &str = r#"
name = "VI_1"
interface = "eth0"
vrid = 51
priority = 100
virtual_ips = ["192.0.2.100/24"]
"#;

/// TABLE with the keys of `extra` (lines `key = value`) set to its values.
fn table(extra: &str) -> VrrpConfig {
    let key = |line: &str| line.split('=').next().unwrap_or_default().trim().to_owned();
    let written: Vec<String> = extra.lines().map(key).collect();
    let kept: Vec<&str> = TABLE.lines().filter(|line| !written.contains(&key(line))).collect();
    toml::from_str(&format!("{}\n{extra}\n", kept.join("\n"))).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(extra: &str) -> Vec<SpecError> {
    RouterSpec::try_from(&table(extra)).expect_err("the table should be rejected").0
}

#[test]
fn a_table_is_parsed_into_the_routers_types() {
    let spec = RouterSpec::try_from(&table(
        "auth_pass = \"secret\"\nunicast_peers = [\"192.0.2.2\"]\nvirtual_ips_excluded = [\"192.0.2.200\"]\n\
         on_nginx_failure = \"demote\"\npreempt_delay_ms = 2500\nnotify = \"/bin/true\"",
    ))
    .unwrap();
    let router = &spec.router;
    assert_eq!((router.vrid, router.priority, router.version), (51, 100, Version::V2));
    assert_eq!(router.advert_interval, Duration::from_secs(1));
    assert_eq!(router.preempt_delay, Duration::from_millis(2500));
    assert_eq!(router.auth_pass, Some(*b"secret\0\0"), "zero-padded to the advert's 8 bytes");
    assert_eq!(router.vips, ["192.0.2.100/24".parse::<IpNet>().unwrap()]);
    assert_eq!(router.unicast_peers, ["192.0.2.2".parse::<IpAddr>().unwrap()]);
    assert_eq!(router.failure_mode, FailureMode::Demote { weight: 50 });
    assert_eq!(spec.excluded_vips, ["192.0.2.200/32".parse::<IpNet>().unwrap()]);
    assert_eq!((spec.family(), spec.all_vips().count()), (Family::V4, 2));
    assert_eq!(spec.notify_timeout, Duration::from_secs(5));
}

#[test]
fn ipv6_virtual_ips_default_to_version_3() {
    let ipv6 = "virtual_ips = [\"2001:db8::100/64\"]";
    let spec = RouterSpec::try_from(&table(ipv6)).unwrap();
    assert_eq!((spec.router.version, spec.family()), (Version::V3, Family::V6));
    let vip = "2001:db8::100/64".to_owned();
    let error = SpecError::V2Ipv6 { list: VipList::Advertised, index: 0, vip };
    assert_eq!(errors(&format!("{ipv6}\nversion = 2")), [error]);
}

/// What [`SpecError::key`] returns.
type Key = (&'static str, Option<usize>);

#[test]
fn every_problem_is_named_with_its_key() {
    let many: Vec<String> = (0..256).map(|i| format!("\"192.0.2.{}\"", i % 250 + 1)).collect();
    let cases: Vec<(String, SpecError, Key)> = vec![
        ("vrid = 0".into(), SpecError::Vrid, ("vrid", None)),
        ("priority = 0".into(), SpecError::Priority, ("priority", None)),
        ("version = 4".into(), SpecError::Version(4), ("version", None)),
        ("advert_interval_ms = 1500".into(), SpecError::V2Interval(1500), ("advert_interval_ms", None)),
        ("advert_interval_ms = 256000".into(), SpecError::V2Interval(256_000), ("advert_interval_ms", None)),
        ("version = 3\nadvert_interval_ms = 15".into(), SpecError::V3Interval(15), ("advert_interval_ms", None)),
        ("version = 3\nadvert_interval_ms = 40960".into(), SpecError::V3Interval(40_960), ("advert_interval_ms", None)),
        ("version = 3\nadvert_interval_ms = 0".into(), SpecError::V3Interval(0), ("advert_interval_ms", None)),
        ("checksum_pseudo_header = false".into(), SpecError::V2PseudoHeader, ("checksum_pseudo_header", None)),
        ("version = 3\nauth_pass = \"x\"".into(), SpecError::V3Auth, ("auth_pass", None)),
        ("auth_pass = \"123456789\"".into(), SpecError::AuthLength(9), ("auth_pass", None)),
        ("preempt_delay_ms = 1000001".into(), SpecError::PreemptDelay, ("preempt_delay_ms", None)),
        ("on_nginx_failure = \"demote\"\ndemote_weight = 0".into(), SpecError::DemoteWeight, ("demote_weight", None)),
        ("unicast_peers = []".into(), SpecError::NoPeers, ("unicast_peers", None)),
        (
            "unicast_peers = [\"192.0.2.2\", \"nope\"]".into(),
            SpecError::Peer { index: 1, peer: "nope".into() },
            ("unicast_peers", Some(1)),
        ),
        (
            "unicast_peers = [\"fe80::2\"]".into(),
            SpecError::PeerFamily { index: 0, peer: "fe80::2".parse().unwrap() },
            ("unicast_peers", Some(0)),
        ),
        (
            "version = 3\nvirtual_ips_excluded = [\"2001:db8::1\"]".into(),
            SpecError::MixedFamilies { list: VipList::Excluded, index: 0, vip: "2001:db8::1".into() },
            ("virtual_ips_excluded", Some(0)),
        ),
        (
            "track_interfaces = [\"eth1\", \"a/b\"]".into(),
            SpecError::TrackInterface { index: 1, source: InterfaceNameError("a/b".into()) },
            ("track_interfaces", Some(1)),
        ),
        ("notify = \"notify.sh\"".into(), SpecError::NotifyPath("notify.sh".into()), ("notify", None)),
    ];
    for (extra, error, key) in cases {
        assert_eq!(errors(&extra), std::slice::from_ref(&error), "{extra}");
        assert_eq!(error.key(), key, "{extra}");
    }
    assert_eq!(errors("virtual_ips = []"), [SpecError::NoVips]);
    assert_eq!(errors(&format!("virtual_ips = [{}]", many.join(", "))), [SpecError::TooManyVips(256)]);
    assert!(RouterSpec::try_from(&table("version = 3\nadvert_interval_ms = 40950")).is_ok());
    assert!(RouterSpec::try_from(&table("advert_interval_ms = 255000")).is_ok());
}

#[test]
fn ipv6_with_auth_pass_is_not_told_to_use_version_2() {
    assert_eq!(errors("virtual_ips = [\"2001:db8::100/64\"]\nauth_pass = \"x\""), [SpecError::Ipv6Auth]);
    assert!(!SpecError::Ipv6Auth.to_string().contains("version = 2"));
}

#[test]
fn all_problems_of_a_table_come_at_once() {
    let errors = errors("vrid = 0\npriority = 0\nunicast_peers = [\"nope\"]");
    assert_eq!(errors.len(), 3, "{errors:?}");
}

#[test]
fn only_adverts_under_a_second_ask_for_a_real_time_thread() {
    let spec = |extra: &str| RouterSpec::try_from(&table(extra)).unwrap();
    let slow = spec("");
    let v3_second = spec("version = 3\nadvert_interval_ms = 1000");
    let fast = spec("version = 3\nadvert_interval_ms = 20");
    assert!(!RouterSpec::wants_realtime(&[]));
    assert!(!RouterSpec::wants_realtime(&[slow.clone(), v3_second]));
    assert!(RouterSpec::wants_realtime(&[slow, fast]), "one fast router is enough");
}

use super::*;
use crate::alias::InvalidAlias;
use crate::net::OWNER_PROTO;

fn alias(address: &str, interface: &str, label: Option<&str>) -> Alias {
    Alias::parse(address, interface, label).unwrap()
}

fn cli(a: &Alias) -> Declared {
    Declared { alias: a.clone(), source: Source::Cli }
}

fn config(a: &Alias) -> Declared {
    Declared { alias: a.clone(), source: Source::Config }
}

fn info(ifindex: u32, address: &str, proto: Option<u8>) -> AddressInfo {
    AddressInfo::new(ifindex, address.parse().unwrap(), proto)
}

fn eth0(up: bool) -> Vec<(String, u32, bool)> {
    vec![("lo".into(), 1, true), ("eth0".into(), 2, up)]
}

fn add(address: &str, interface: &str, ifindex: u32, label: Option<&str>, probe: bool) -> Action {
    Action::Add {
        address: address.parse().unwrap(),
        interface: interface.into(),
        ifindex,
        label: label.map(str::to_owned),
        probe,
    }
}

fn remove(address: &str, ifindex: u32) -> Action {
    Action::Remove { address: address.parse().unwrap(), ifindex }
}

/// A reconciler with `a` declared on an up eth0 (index 2), added and present.
fn with_present(a: &Alias, now: Instant) -> Reconciler {
    let mut core = Reconciler::new();
    assert_eq!(core.set_declared(vec![cli(a)], vec![], now), vec![], "no link known yet");
    let actions = core.snapshot(eth0(true), vec![info(2, "198.18.0.1/24", None)], now);
    assert_eq!(actions, vec![add(&a.address.to_string(), "eth0", 2, a.label.as_deref(), a.address.addr().is_ipv4())]);
    assert!(core.busy());
    assert_eq!(core.settled(a), Settled::Pending);
    assert_eq!(core.add_finished(a.address, AddOutcome::Added, now), vec![]);
    assert_eq!(core.address_added(info(2, &a.address.to_string(), Some(ALIAS_PROTO)), now), vec![]);
    core
}

#[test]
fn a_declared_alias_is_probed_added_and_reported_present() {
    let now = Instant::now();
    let a = alias("198.18.0.107/24", "eth0", Some("eth0:1"));
    let core = with_present(&a, now);
    assert!(!core.busy());
    assert_eq!(core.settled(&a), Settled::Done);
    let reports = core.reports();
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(
        (r.address.as_str(), r.interface.as_str(), r.label.as_deref(), r.present, r.source.as_deref()),
        ("198.18.0.107/24", "eth0", Some("eth0:1"), true, Some("cli"))
    );
    assert_eq!(r.problem, None);
}

#[test]
fn an_alias_removed_behind_our_back_is_added_again() {
    let now = Instant::now();
    let a = alias("198.18.0.107/24", "eth0", Some("eth0:1"));
    let mut core = with_present(&a, now);
    let actions = core.address_removed(&info(2, "198.18.0.107/24", Some(ALIAS_PROTO)), now);
    assert_eq!(actions, vec![add("198.18.0.107/24", "eth0", 2, Some("eth0:1"), true)]);
    assert!(!core.reports()[0].present);
    // A repeated removal notice while the add is under way adds nothing more.
    assert_eq!(core.address_removed(&info(2, "198.18.0.107/24", Some(ALIAS_PROTO)), now), vec![]);
    // Someone else's address going away concerns nobody.
    assert_eq!(core.address_removed(&info(2, "198.18.0.9/24", None), now), vec![]);
}

#[test]
fn an_alias_waits_for_its_interface_and_is_added_when_it_appears() {
    let now = Instant::now();
    let a = alias("198.18.0.107/24", "vlan100", None);
    let mut core = Reconciler::new();
    core.set_declared(vec![config(&a)], vec![], now);
    assert_eq!(core.snapshot(eth0(true), vec![], now), vec![]);
    assert_eq!(core.settled(&a), Settled::Done);
    let report = &core.reports()[0];
    assert!(!report.present);
    assert!(report.problem.as_deref().unwrap().contains("vlan100 does not exist (yet)"), "{report:?}");
    // Created down: added at once, without a probe (nothing can answer on a link without carrier).
    assert_eq!(core.link("vlan100", 7, false, now), vec![add("198.18.0.107/24", "vlan100", 7, None, false)]);
    core.add_finished(a.address, AddOutcome::Added, now);
    core.address_added(info(7, "198.18.0.107/24", Some(ALIAS_PROTO)), now);
    assert!(core.reports()[0].present);
    // Deleted and created again under a new index: added there.
    assert_eq!(core.link_gone("vlan100", now), vec![]);
    assert!(!core.reports()[0].present);
    assert_eq!(core.link("vlan100", 8, true, now), vec![add("198.18.0.107/24", "vlan100", 8, None, true)]);
    // The link vanished before the add: it waits again.
    assert_eq!(core.add_finished(a.address, AddOutcome::NoLink, now), vec![]);
    assert!(core.reports()[0].problem.as_deref().unwrap().contains("does not exist"));
}

#[test]
fn the_snapshot_removes_only_undeclared_aliases_of_ours() {
    let now = Instant::now();
    let kept = alias("198.18.0.107/24", "eth0", None);
    let mut core = Reconciler::new();
    core.set_declared(vec![cli(&kept)], vec![], now);
    let addresses = vec![
        info(2, "198.18.0.1/24", None),
        info(2, "198.18.0.107/24", Some(ALIAS_PROTO)),
        // Deleted with `alias del` while no daemon ran: ours, no longer declared.
        info(2, "198.18.0.108/24", Some(ALIAS_PROTO)),
        // A VIP (VRRP's business) and the admin's own address: never touched.
        info(2, "198.18.0.100/24", Some(OWNER_PROTO)),
        info(2, "198.18.0.50/24", Some(4)),
    ];
    assert_eq!(core.snapshot(eth0(true), addresses, now), vec![remove("198.18.0.108/24", 2)]);
    assert!(core.reports()[0].present);
}

#[test]
fn an_alias_no_longer_declared_is_removed_and_a_new_label_re_adds_it() {
    let now = Instant::now();
    let a = alias("198.18.0.107/24", "eth0", Some("eth0:1"));
    let mut core = with_present(&a, now);
    let relabelled = alias("198.18.0.107/24", "eth0", Some("eth0:web"));
    assert_eq!(
        core.set_declared(vec![cli(&relabelled)], vec![], now),
        vec![remove("198.18.0.107/24", 2), add("198.18.0.107/24", "eth0", 2, Some("eth0:web"), true)]
    );
    core.add_finished(relabelled.address, AddOutcome::Added, now);
    core.address_added(info(2, "198.18.0.107/24", Some(ALIAS_PROTO)), now);
    assert_eq!(core.set_declared(vec![], vec![], now), vec![remove("198.18.0.107/24", 2)]);
    assert!(core.reports().is_empty());
    // Its removal notice re-adds nothing.
    assert_eq!(core.address_removed(&info(2, "198.18.0.107/24", Some(ALIAS_PROTO)), now), vec![]);
}

#[test]
fn a_conflict_blocks_the_alias_and_is_retried_later() {
    let now = Instant::now();
    let a = alias("198.18.0.107/24", "eth0", None);
    let mut core = Reconciler::new();
    core.set_declared(vec![cli(&a)], vec![], now);
    core.snapshot(eth0(true), vec![], now);
    let reason =
        Blocked::ArpAnswered { mac: [2, 0, 0, 0, 0, 2], interface: "eth0".into(), ip: "198.18.0.107".parse().unwrap() };
    assert_eq!(core.add_finished(a.address, AddOutcome::Blocked(reason.clone()), now), vec![]);
    assert_eq!(core.settled(&a), Settled::Blocked(reason.clone()));
    let problem = core.reports()[0].problem.clone().unwrap();
    assert!(
        problem.starts_with("another host (02:00:00:00:00:02) on eth0 already answers for 198.18.0.107"),
        "{problem}"
    );
    assert_eq!(core.next_deadline(), Some(now + RETRY_AFTER));
    assert_eq!(core.tick(now + RETRY_AFTER - Duration::from_millis(1)), vec![]);
    assert_eq!(core.tick(now + RETRY_AFTER), vec![add("198.18.0.107/24", "eth0", 2, None, true)]);
    // A failure blocks it the same way; a change of its link retries at once.
    core.add_finished(a.address, AddOutcome::Blocked(Blocked::Failed("EPERM".into())), now + RETRY_AFTER);
    assert_eq!(core.link("eth0", 2, false, now + RETRY_AFTER), vec![add("198.18.0.107/24", "eth0", 2, None, false)]);
}

#[test]
fn an_address_on_another_interface_of_this_host_blocks_the_alias() {
    let now = Instant::now();
    let a = alias("198.18.0.107/24", "eth0", None);
    let mut core = Reconciler::new();
    core.set_declared(vec![cli(&a)], vec![], now);
    let links = vec![("eth0".to_string(), 2, true), ("eth1".to_string(), 3, true)];
    assert_eq!(core.snapshot(links, vec![info(3, "198.18.0.107/16", None)], now), vec![]);
    match core.settled(&a) {
        Settled::Blocked(reason) => assert!(reason.to_string().contains("already on eth1"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_address_already_on_the_interface_counts_as_present() {
    let now = Instant::now();
    let a = alias("198.18.0.107/24", "eth0", None);
    let mut core = Reconciler::new();
    core.set_declared(vec![config(&a)], vec![], now);
    // The address was there before (the previous daemon run, or the admin's ifupdown).
    assert_eq!(core.snapshot(eth0(true), vec![info(2, "198.18.0.107/24", Some(ALIAS_PROTO))], now), vec![]);
    assert!(core.reports()[0].present);
    assert!(!core.busy());
}

#[test]
fn ipv6_waits_for_dad_and_a_failed_dad_is_a_conflict() {
    let now = Instant::now();
    let a = alias("fd00:198:18::107/64", "eth0", None);
    let mut core = Reconciler::new();
    core.set_declared(vec![cli(&a)], vec![], now);
    assert_eq!(core.snapshot(eth0(true), vec![], now), vec![add("fd00:198:18::107/64", "eth0", 2, None, false)]);
    let tentative = AddressInfo { tentative: true, ..info(2, "fd00:198:18::107/64", Some(ALIAS_PROTO)) };
    core.address_added(tentative.clone(), now);
    core.add_finished(a.address, AddOutcome::Added, now);
    assert_eq!(core.settled(&a), Settled::Pending);
    assert!(!core.reports()[0].present, "a tentative address is not usable yet");
    // DAD passes: the kernel repeats the address without the tentative flag.
    core.address_added(AddressInfo { tentative: false, ..tentative.clone() }, now);
    assert_eq!(core.settled(&a), Settled::Done);
    assert!(core.reports()[0].present);

    // Added again later (after a removal), and this time another host has it.
    let actions = core.address_removed(&tentative, now);
    assert_eq!(actions, vec![add("fd00:198:18::107/64", "eth0", 2, None, false)]);
    core.add_finished(a.address, AddOutcome::Added, now);
    let failed = AddressInfo { dad_failed: true, ..tentative };
    assert_eq!(core.address_added(failed, now), vec![remove("fd00:198:18::107/64", 2)]);
    match core.settled(&a) {
        Settled::Blocked(reason @ Blocked::DadFailed { .. }) => {
            assert!(reason.to_string().contains("duplicate address detection failed"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // DAD that never ends (no carrier) settles after DAD_PATIENCE.
    let mut core = Reconciler::new();
    core.set_declared(vec![cli(&a)], vec![], now);
    core.snapshot(eth0(false), vec![], now);
    core.add_finished(a.address, AddOutcome::Added, now);
    assert_eq!(core.next_deadline(), Some(now + DAD_PATIENCE));
    core.tick(now + DAD_PATIENCE);
    assert!(!core.busy());
}

#[test]
fn merging_rejects_store_aliases_that_are_vips_or_declared_already() {
    let vips = vec![Vip { address: "198.18.0.100".parse().unwrap(), router: "VI_1".into() }];
    let from_config = alias("198.18.0.107/24", "eth0", None);
    let stored = vec![
        alias("198.18.0.107/24", "eth0", Some("eth0:1")),
        alias("198.18.0.100/24", "eth0", None),
        alias("198.18.0.108/24", "eth0", None),
    ];
    let (declared, rejected) = merge(std::slice::from_ref(&from_config), &stored, &vips);
    assert_eq!(declared, vec![config(&from_config), cli(&stored[2])]);
    assert_eq!(rejected.len(), 2);
    let reasons: Vec<String> = rejected.iter().map(|r| r.reason.to_string()).collect();
    assert!(reasons[0].contains("also declared as 198.18.0.107/24 on eth0 (an [[alias]] in the config file)"));
    assert!(matches!(rejected[1].reason, NotApplied::Vip { .. }));
    assert!(reasons[1].contains("is a VIP of [[vrrp]] \"VI_1\""), "{}", reasons[1]);
    // Rejected ones are reported, not applied.
    let now = Instant::now();
    let mut core = Reconciler::new();
    core.set_declared(declared, rejected, now);
    let actions = core.snapshot(eth0(true), vec![info(2, "198.18.0.100/24", Some(ALIAS_PROTO))], now);
    assert_eq!(
        actions,
        vec![add("198.18.0.107/24", "eth0", 2, None, true), add("198.18.0.108/24", "eth0", 2, None, true)]
    );
    assert_eq!(core.reports().len(), 4);
}

#[test]
fn a_new_alias_is_checked_against_what_is_declared() {
    let vips = vec![Vip { address: "198.18.0.100".parse().unwrap(), router: "VI_1".into() }];
    let in_config = vec![alias("198.18.0.107/24", "eth0", None)];
    let stored = vec![alias("198.18.0.108/24", "eth0", Some("eth0:8"))];
    let check = |a: &Alias| check_new(a, &in_config, &stored, &vips);
    let refusal = |a: &Alias| check(a).unwrap_err().to_string();
    assert_eq!(check(&alias("198.18.0.109/24", "eth0", None)).unwrap(), NewAlias::New);
    assert_eq!(check(&stored[0]).unwrap(), NewAlias::AlreadyDeclared);
    assert!(matches!(check(&alias("198.18.0.100/24", "eth0", None)), Err(AliasError::Vip { .. })));
    assert!(refusal(&alias("198.18.0.100/24", "eth0", None)).contains("is a VIP of [[vrrp]] \"VI_1\""));
    assert!(refusal(&alias("198.18.0.107/32", "eth1", None)).contains("in the config file"));
    assert!(matches!(check(&alias("198.18.0.108/24", "eth0", None)), Err(AliasError::Duplicate { .. })));
    assert!(refusal(&alias("198.18.0.108/24", "eth0", None)).contains("alias del 198.18.0.108/24 --dev eth0"));
    let bad_label = Alias { label: Some("eth1:1".into()), ..alias("198.18.0.110/24", "eth0", None) };
    assert!(refusal(&bad_label).contains("must start with the interface name"));
    let ipv6_label = Alias::parse("fd00::1/64", "eth0", Some("eth0:1")).unwrap_err();
    assert_eq!(ipv6_label, InvalidAlias::LabelOnIpv6("eth0:1".into()));
    assert!(ipv6_label.to_string().contains("IPv4 addresses only"));
}

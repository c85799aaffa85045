//! nginx-ha beside real keepalived (2.2.7) on one bridge in network namespaces, each node with
//! its own real nginx, a client asking the VIP: the two must elect one master and hand the
//! VIP back and forth in both directions, in VRRPv2 (with and without simple-text
//! authentication), VRRPv3 (1 s and 100 ms adverts) and unicast, so that a keepalived cluster
//! can be migrated one node at a time. At the end of each test keepalived's log must hold no
//! complaint about nginx-ha's adverts and nginx-ha's counters no error about keepalived's.

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::keepalived::*;
use common::netns::{Bridge, wait_until};

const VIP: &str = "198.18.0.100";
const VIP_CIDR: &str = "198.18.0.100/24";
const NHA: &str = "nginx-ha";
const NHA_CIDR: &str = "198.18.0.1/24";
const NHA_ADDRESS: &str = "198.18.0.1";
const KA: &str = "keepalived";
const KA_CIDR: &str = "198.18.0.2/24";
const KA_ADDRESS: &str = "198.18.0.2";

/// nginx-ha's error counters, none of which a well-formed keepalived advert may touch.
const ERROR_COUNTERS: &[&str] = &[
    "ttl_errors",
    "version_errors",
    "type_errors",
    "checksum_errors",
    "auth_errors",
    "interval_errors",
    "address_family_errors",
    "unknown_peer_errors",
    "malformed_errors",
    "other_vrid",
    "vip_mismatches",
];

/// One nginx-ha node and one keepalived node on a bridge, plus a client. Fields drop in
/// order: the daemons stop before their namespaces and the bridge go.
struct Pair {
    client: Client,
    nha: Node,
    ka: KeepalivedNode,
    bridge: Bridge,
    /// The VIP the client asks.
    vip: String,
    /// The source of keepalived's adverts: its IPv4 address, or for IPv6 its link-local one.
    ka_source: String,
    /// One advert interval, to wait out elections.
    interval: Duration,
}

/// `nha_extra` goes into nginx-ha's `[[vrrp]]` table, `ka_globals` into keepalived's
/// `global_defs`, `ka_extra` into its `vrrp_instance`.
fn pair(nha_priority: u8, nha_extra: &str, ka_priority: u8, ka_globals: &str, ka_extra: &str) -> Pair {
    pair_at(NHA_CIDR, nha_priority, nha_extra, ka_priority, ka_globals, ka_extra, &[VIP_CIDR])
}

/// [`pair`] with nginx-ha at `nha_cidr` (keepalived is always at KA_CIDR) and other VIPs;
/// the client asks the first one that is not link-local.
fn pair_at(
    nha_cidr: &str,
    nha_priority: u8,
    nha_extra: &str,
    ka_priority: u8,
    ka_globals: &str,
    ka_extra: &str,
    vips: &[&str],
) -> Pair {
    let bridge = Bridge::new();
    let mut nha = Node::new(&bridge, NHA, nha_cidr);
    let mut ka = KeepalivedNode::new(&bridge, KA, KA_CIDR);
    let client = Client::new(&bridge, "198.18.0.200/24");
    let vip = vips
        .iter()
        .map(|cidr| cidr.split('/').next().unwrap())
        .find(|vip| !vip.starts_with("fe80:"))
        .unwrap()
        .to_owned();
    let ka_source = if vip.contains(':') {
        client.ns.ip(&["-6", "addr", "add", "fd00:198:18::200/64", "dev", "eth0", "nodad"]);
        link_local(&ka.ns)
    } else {
        KA_ADDRESS.to_owned()
    };
    let quoted: Vec<String> = vips.iter().map(|vip| format!("\"{vip}\"")).collect();
    nha.configure(&format!(
        "[[vrrp]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvrid = 51\npriority = {nha_priority}\nvirtual_ips = [{}]\n{nha_extra}\n",
        quoted.join(", ")
    ));
    ka.configure(ka_globals, &ka.instance("VI_1", 51, ka_priority, vips, ka_extra));
    nha.start();
    ka.start();
    let interval = if nha_extra.lines().any(|line| line.trim() == "advert_interval_ms = 100") {
        Duration::from_millis(100)
    } else {
        Duration::from_secs(1)
    };
    Pair { client, nha, ka, bridge, vip, ka_source, interval }
}

/// The interface's own link-local address: the kernel lists newer addresses of a scope
/// first, so a link-local VIP comes before it.
fn link_local(ns: &common::netns::NetNs) -> String {
    let output = ns.ip(&["-6", "-o", "addr", "show", "dev", "eth0", "scope", "link"]);
    let address = output
        .split("inet6 ")
        .last()
        .filter(|_| output.contains("inet6 "))
        .unwrap_or_else(|| panic!("no link-local in {output:?}"));
    address.split('/').next().unwrap().to_owned()
}

fn counters(node: &Node) -> serde_json::Value {
    let status = node.status().expect("nginx-ha answers status");
    status["vrrp"][0]["counters"].clone()
}

fn counter(node: &Node, name: &str) -> u64 {
    counters(node)[name].as_u64().unwrap_or_else(|| panic!("no counter {name}"))
}

fn entered_master(ka: &KeepalivedNode) -> usize {
    ka.log().matches("Entering MASTER STATE").count()
}

/// Longer than a master down interval (3 × interval + skew): a side that dropped the other's
/// adverts would have taken over by then.
fn outlast_master_down(interval: Duration) {
    std::thread::sleep(interval * 4 + Duration::from_secs(1));
}

impl Pair {
    /// nginx-ha MASTER holding and serving the VIP, keepalived BACKUP and staying so: it
    /// accepts nginx-ha's adverts.
    fn nginx_ha_is_master(&self) {
        self.nha.wait_state("VI_1", "MASTER");
        self.ka.wait_state("BACKUP");
        self.client.wait_served_by(&self.vip, NHA);
        let (became_master, ka_masters) = (counter(&self.nha, "became_master"), entered_master(&self.ka));
        outlast_master_down(self.interval);
        assert_eq!(self.ka.state().as_deref(), Some("BACKUP"), "keepalived left BACKUP:\n{}", self.ka.log());
        assert_eq!(entered_master(&self.ka), ka_masters, "keepalived became MASTER meanwhile:\n{}", self.ka.log());
        assert_eq!(self.nha.state("VI_1").as_deref(), Some("MASTER"));
        assert_eq!(counter(&self.nha, "became_master"), became_master, "nginx-ha flapped");
        assert!(self.nha.has_address(&self.vip) && !self.ka.has_address(&self.vip));
        assert_eq!(self.client.get(&self.vip).as_deref(), Some(NHA));
    }

    /// keepalived MASTER holding and serving the VIP, nginx-ha BACKUP and staying so: it
    /// accepts keepalived's adverts and names keepalived as the master.
    fn keepalived_is_master(&self) {
        self.ka.wait_state("MASTER");
        self.nha.wait_state("VI_1", "BACKUP");
        self.client.wait_served_by(&self.vip, KA);
        let (became_master, received) = (counter(&self.nha, "became_master"), counter(&self.nha, "adverts_received"));
        outlast_master_down(self.interval);
        assert_eq!(self.nha.state("VI_1").as_deref(), Some("BACKUP"));
        assert_eq!(
            counter(&self.nha, "became_master"),
            became_master,
            "nginx-ha became MASTER meanwhile:\n{}",
            self.nha.log()
        );
        assert!(counter(&self.nha, "adverts_received") > received, "nginx-ha hears keepalived's adverts");
        assert_eq!(self.ka.state().as_deref(), Some("MASTER"));
        let status = self.nha.status().unwrap();
        assert_eq!(status["vrrp"][0]["master_address"], self.ka_source.as_str(), "{status}");
        assert!(self.ka.has_address(&self.vip) && !self.nha.has_address(&self.vip));
        assert_eq!(self.client.get(&self.vip).as_deref(), Some(KA));
    }

    /// With nginx-ha on `on_nginx_failure = "demote"` (weight 20, from 100 to 80 under
    /// keepalived's 90): nginx-ha master, then a hung nginx hands the VIP to keepalived while
    /// nginx-ha keeps advertising as a backup, then nginx-ha preempts back. Exercises both
    /// directions with each side as master and as backup.
    fn both_roles_by_demotion(&self) {
        self.nginx_ha_is_master();
        self.nha.signal_nginx(libc::SIGSTOP);
        self.keepalived_is_master();
        assert_eq!(self.nha.status().unwrap()["vrrp"][0]["effective_priority"], 80);
        self.nha.signal_nginx(libc::SIGCONT);
        self.nginx_ha_is_master();
    }

    /// What every good case ends with: neither side complained about the other's adverts.
    fn assert_clean(&self) {
        self.ka.assert_no_complaints();
        let counters = counters(&self.nha);
        for name in ERROR_COUNTERS {
            assert_eq!(counters[name], 0, "nginx-ha counted {name}: {counters}\nnginx-ha log:\n{}", self.nha.log());
        }
        assert!(counters["adverts_received"].as_u64().unwrap() > 0, "{counters}");
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        // KEEPALIVED_LOG=1 shows nginx-ha's log of passing tests too (keepalived's is shown
        // by KeepalivedNode).
        if std::env::var_os("KEEPALIVED_LOG").is_some() {
            eprintln!("==== nginx-ha log ====\n{}", self.nha.log());
        }
    }
}

const NO_GRACE: &str = "restart_grace_ms = 0";
const DEMOTE: &str = "on_nginx_failure = \"demote\"\ndemote_weight = 20";

#[test]
fn v2_multicast_nginx_ha_master_keepalived_backup_and_failover_on_nginx_failure() {
    // Without the restart grace a killed nginx hands over (with it, a killed nginx is restarted
    // in place and the VIP stays: tests/vrrp_hitless.rs).
    let mut p = pair(100, NO_GRACE, 90, "", "");
    p.nginx_ha_is_master();

    // A hung nginx: nginx-ha relinquishes (priority-0 advert, VIP dropped); keepalived takes over.
    p.nha.signal_nginx(libc::SIGSTOP);
    p.nha.wait_state("VI_1", "FAULT");
    p.ka.wait_state("MASTER");
    p.client.wait_served_by(VIP, KA);
    assert!(counter(&p.nha, "priority_zero_sent") >= 1);
    assert!(
        p.ka.log().contains("(VI_1) Backup received priority 0 advertisement"),
        "keepalived saw the priority-0 advert:\n{}",
        p.ka.log()
    );
    // nginx back: nginx-ha rejoins as BACKUP, outranks keepalived and preempts it.
    p.nha.signal_nginx(libc::SIGCONT);
    p.nginx_ha_is_master();

    // nginx killed: the same, and nginx-ha restarts nginx and preempts again.
    let ka_masters = entered_master(&p.ka);
    p.nha.signal_nginx(libc::SIGKILL);
    wait_until(PATIENCE, "keepalived to take over from the killed nginx", || entered_master(&p.ka) > ka_masters);
    p.nginx_ha_is_master();
    p.assert_clean();

    // nginx-ha stopping hands over with a priority-0 advert too.
    let zeros = p.ka.log().matches("Backup received priority 0 advertisement").count();
    assert!(p.nha.stop().success());
    p.ka.wait_state("MASTER");
    p.client.wait_served_by(VIP, KA);
    assert!(p.ka.log().matches("Backup received priority 0 advertisement").count() > zeros);
    p.ka.assert_no_complaints();
}

/// Issue 7's planned stop with keepalived as the peer: nginx-ha's priority-0 advert makes
/// keepalived take over after its skew time, and nginx-ha keeps the VIP and nginx serving until
/// keepalived's first advert as master, so the client always has a holder.
#[test]
fn v2_planned_stop_hands_over_to_keepalived_with_overlap() {
    let mut p = pair(100, "", 90, "", "");
    p.nginx_ha_is_master();
    let poller = p.client.poll(VIP);
    wait_until(PATIENCE, "the poller answered by nginx-ha", || {
        poller.answers().iter().any(|(_, answer)| answer.as_deref() == Some(NHA))
    });
    assert!(p.nha.stop().success());
    p.ka.wait_state("MASTER");
    wait_until(PATIENCE, "the poller answered by keepalived", || {
        poller.answers().iter().any(|(_, answer)| answer.as_deref() == Some(KA))
    });
    let answers = poller.stop();
    let log = p.nha.log();
    assert!(log.contains("planned stop: handed over"), "nginx-ha waited for keepalived's advert as master:\n{log}");
    assert!(!p.nha.has_address(VIP), "VIP removed on shutdown");
    let outage = longest_outage(&answers);
    let failed = answers.iter().filter(|(_, answer)| answer.is_none()).count();
    println!("planned stop, keepalived peer: longest outage {outage:?}, {failed} failed of {}", answers.len());
    assert!(outage < Duration::from_millis(500), "{outage:?} without an answer during a planned stop");
    assert!(failed <= 2, "{failed} failed requests during a planned stop");
    p.ka.assert_no_complaints();
}

#[test]
fn v2_multicast_keepalived_master_nginx_ha_backup_and_takeover_on_keepalived_stop() {
    // `state MASTER`, as the primary of a keepalived pair is usually configured (2.2.7 still
    // starts it in BACKUP and lets the master down timer decide).
    let mut p = pair(90, "", 100, "", "    state MASTER");
    p.keepalived_is_master();

    // keepalived stopping sends priority 0: nginx-ha takes over after Skew_Time instead of
    // waiting out the master down interval.
    let zeros = counter(&p.nha, "priority_zero_received");
    let stopped = Instant::now();
    p.ka.stop();
    p.nha.wait_state("VI_1", "MASTER");
    eprintln!("nginx-ha MASTER {:?} after keepalived's SIGTERM", stopped.elapsed());
    assert!(counter(&p.nha, "priority_zero_received") > zeros, "keepalived's priority-0 advert reached nginx-ha");
    p.client.wait_served_by(VIP, NHA);
    assert!(!p.ka.has_address(VIP), "keepalived removed the VIP on stop");

    // keepalived back with the higher priority: it preempts nginx-ha.
    p.ka.start();
    p.keepalived_is_master();
    p.assert_clean();
}

#[test]
fn v2_simple_text_authentication_both_roles() {
    let p = pair(
        100,
        &format!("auth_pass = \"s3cret\"\n{DEMOTE}"),
        90,
        "",
        "    authentication {\n        auth_type PASS\n        auth_pass s3cret\n    }",
    );
    p.both_roles_by_demotion();
    p.assert_clean();
}

#[test]
fn v2_wrong_password_is_counted_by_nginx_ha_and_logged_by_keepalived() {
    let p = pair(
        100,
        "auth_pass = \"wrong\"",
        90,
        "",
        "    authentication {\n        auth_type PASS\n        auth_pass s3cret\n    }",
    );
    // Neither accepts the other: both end up MASTER.
    p.nha.wait_state("VI_1", "MASTER");
    p.ka.wait_state("MASTER");
    wait_until(PATIENCE, "nginx-ha to count auth errors", || counter(&p.nha, "auth_errors") > 0);
    wait_until(PATIENCE, "keepalived to complain about the password", || !p.ka.complaints().is_empty());
    assert_eq!(counter(&p.nha, "adverts_received"), 0, "nothing with the wrong password is accepted");
    let complaints = p.ka.complaints();
    assert!(
        complaints.iter().all(|line| line.contains("(VI_1) received an invalid passwd!")),
        "only password complaints: {complaints:#?}"
    );
    assert!(p.nha.log().contains("fails authentication"), "nginx-ha logs the mismatch");
}

#[test]
fn v3_multicast_1s_adverts_both_roles() {
    let p = pair(100, &format!("version = 3\n{DEMOTE}"), 90, "    vrrp_version 3", "");
    p.both_roles_by_demotion();
    let status = p.nha.status().unwrap();
    assert_eq!(status["vrrp"][0]["version"], 3);
    p.assert_clean();
}

#[test]
fn v3_multicast_100ms_adverts_both_roles() {
    let p = pair(
        100,
        &format!("version = 3\nadvert_interval_ms = 100\n{DEMOTE}"),
        90,
        "    vrrp_version 3",
        "    advert_int 0.1",
    );
    assert_eq!(p.interval, Duration::from_millis(100));
    p.nginx_ha_is_master();
    p.nha.signal_nginx(libc::SIGSTOP);
    p.keepalived_is_master();
    let status = p.nha.status().unwrap();
    assert_eq!(status["vrrp"][0]["master_advert_interval_ms"], 100, "keepalived advertises 10 cs: {status}");
    p.nha.signal_nginx(libc::SIGCONT);
    p.nginx_ha_is_master();
    p.assert_clean();
}

#[test]
fn v3_100ms_keepalived_master_stops_and_nginx_ha_takes_over() {
    let mut p = pair(90, "version = 3\nadvert_interval_ms = 100", 100, "    vrrp_version 3", "    advert_int 0.1");
    p.keepalived_is_master();
    let zeros = counter(&p.nha, "priority_zero_received");
    p.ka.stop();
    p.nha.wait_state("VI_1", "MASTER");
    assert!(counter(&p.nha, "priority_zero_received") > zeros);
    p.client.wait_served_by(VIP, NHA);
    p.ka.start();
    p.keepalived_is_master();
    p.assert_clean();
}

fn unicast_keepalived() -> String {
    format!("    unicast_src_ip {KA_ADDRESS}\n    unicast_peer {{\n        {NHA_ADDRESS}\n    }}")
}

#[test]
fn v2_unicast_both_roles() {
    let p = pair(100, &format!("unicast_peers = [\"{KA_ADDRESS}\"]\n{DEMOTE}"), 90, "", &unicast_keepalived());
    p.both_roles_by_demotion();
    p.assert_clean();
}

#[test]
fn v3_unicast_both_roles() {
    // v3 over IPv4 checksums a pseudo-header holding the destination: the peer's address here.
    let p = pair(
        100,
        &format!("version = 3\nunicast_peers = [\"{KA_ADDRESS}\"]\n{DEMOTE}"),
        90,
        "    vrrp_version 3",
        &unicast_keepalived(),
    );
    p.both_roles_by_demotion();
    p.assert_clean();
}

#[test]
fn v3_ipv6_both_roles() {
    // IPv6 adverts come from the link-locals, to ff02::12, checksummed with the IPv6
    // pseudo-header.
    let p = pair_at(
        NHA_CIDR,
        100,
        &format!("version = 3\n{DEMOTE}"),
        90,
        "    vrrp_version 3",
        "",
        &["fd00:198:18::100/64"],
    );
    p.both_roles_by_demotion();
    p.assert_clean();
}

#[test]
fn v3_ipv6_with_a_link_local_vip_first_both_roles() {
    // RFC 5798 §5.2.9 wants an IPv6 virtual router's first address to be a link-local one,
    // and keepalived 2.2.7 warns "the first IPv6 VIP address should be link local" without
    // it. Holding that VIP must not make it the source of nginx-ha's adverts: adverts come
    // from the node's own link-local (§5.1.2.1), as keepalived's do.
    const LINK_LOCAL_VIP: &str = "fe80::100";
    let vips = [&format!("{LINK_LOCAL_VIP}/64") as &str, "fd00:198:18::100/64"];
    let p = pair_at(NHA_CIDR, 100, &format!("version = 3\n{DEMOTE}"), 90, "    vrrp_version 3", "", &vips);
    let nha_source = link_local(&p.nha.ns);
    assert_ne!(nha_source, LINK_LOCAL_VIP);
    p.both_roles_by_demotion();
    let status = p.nha.status().unwrap();
    assert_eq!(
        status["vrrp"][0]["master_address"],
        nha_source.as_str(),
        "nginx-ha names itself by its own address: {status}"
    );
    let named =
        |address: &str| p.ka.log().lines().filter(|line| line.contains(&format!("advert from {address} "))).count();
    assert_eq!(named(LINK_LOCAL_VIP), 0, "keepalived got adverts from the VIP:\n{}", p.ka.log());
    assert!(named(&nha_source) > 0, "keepalived names nginx-ha by its link-local:\n{}", p.ka.log());
    p.assert_clean();
}

/// Equal priorities: when both are MASTER (here after a partition heals), the higher primary
/// address wins (RFC 5798 §6.4.3), and both must agree on which that is. keepalived is at
/// 198.18.0.2; nginx-ha at `nha_cidr` is below or above it.
fn equal_priority_after_partition(nha_cidr: &str, nginx_ha_wins: bool) {
    let p = pair_at(nha_cidr, 100, "", 100, "", "", &[VIP_CIDR]);
    // Whoever's master down timer runs out first wins the start; the other accepts an equal
    // priority as a backup.
    wait_until(PATIENCE, "one master", || {
        let masters = [p.nha.state("VI_1").as_deref() == Some("MASTER"), p.ka.state().as_deref() == Some("MASTER")];
        masters.iter().filter(|m| **m).count() == 1
    });
    p.nha.set_partitioned(&p.bridge, true);
    p.nha.wait_state("VI_1", "MASTER");
    p.ka.wait_state("MASTER");
    p.nha.set_partitioned(&p.bridge, false);
    if nginx_ha_wins {
        p.nginx_ha_is_master();
    } else {
        p.keepalived_is_master();
    }
    p.assert_clean();
}

#[test]
fn v2_equal_priority_keepalived_with_the_higher_address_wins() {
    equal_priority_after_partition(NHA_CIDR, false);
}

#[test]
fn v2_equal_priority_nginx_ha_with_the_higher_address_wins() {
    equal_priority_after_partition("198.18.0.3/24", true);
}

#[test]
fn v3_keepalived_in_strict_mode_both_roles() {
    // vrrp_strict makes keepalived check adverts harder (RFC TTL and address list, no
    // authentication, no unicast). Without `accept` a strict master also drops traffic to the
    // VIP with an nftables rule, so its nginx could not serve it.
    let p = pair(100, &format!("version = 3\n{DEMOTE}"), 90, "    vrrp_strict\n    vrrp_version 3", "    accept");
    p.both_roles_by_demotion();
    p.assert_clean();
}

/// One deliberately mismatched virtual router for `keepalived_logs_each_deliberate_mismatch`.
struct Mismatch {
    name: &'static str,
    vrid: u8,
    nha_extra: &'static str,
    nha_vips: &'static [&'static str],
    ka_extra: &'static str,
    /// None: no keepalived instance for this VRID.
    ka_vips: Option<&'static [&'static str]>,
    /// What keepalived must log, as in [`COMPLAINTS`].
    ka_says: &'static [&'static str],
    /// The nginx-ha counter that keepalived's adverts must raise (keepalived, not accepting
    /// nginx-ha's adverts, turns MASTER and advertises too).
    nha_counts: Option<&'static str>,
}

const PASS_S3CRET: &str = "    authentication {\n        auth_type PASS\n        auth_pass s3cret\n    }";

/// Proves the complaint checks are not vacuous: one router per deliberate mismatch, and
/// keepalived must log each in its own words, which [`COMPLAINTS`] must catch, and nginx-ha
/// must count keepalived's adverts in the matching error counter.
#[test]
fn keepalived_logs_each_deliberate_mismatch() {
    let cases = [
        Mismatch {
            name: "VI_VIP",
            vrid: 61,
            nha_extra: "",
            nha_vips: &["198.18.0.161/24"],
            ka_extra: "",
            ka_vips: Some(&["198.18.0.162/24"]),
            ka_says: &[") ip address associated with VRID ", " not present in MASTER advert: "],
            nha_counts: Some("vip_mismatches"),
        },
        Mismatch {
            name: "VI_COUNT",
            vrid: 62,
            nha_extra: "",
            nha_vips: &["198.18.0.163/24", "198.18.0.164/24"],
            ka_extra: "",
            ka_vips: Some(&["198.18.0.163/24"]),
            ka_says: &[") received an unexpected ip number count "],
            nha_counts: Some("vip_mismatches"),
        },
        Mismatch {
            name: "VI_PASS",
            vrid: 63,
            nha_extra: "auth_pass = \"wrong\"",
            nha_vips: &["198.18.0.165/24"],
            ka_extra: PASS_S3CRET,
            ka_vips: Some(&["198.18.0.165/24"]),
            ka_says: &[") received an invalid passwd!"],
            nha_counts: Some("auth_errors"),
        },
        Mismatch {
            name: "VI_AUTHTYPE",
            vrid: 64,
            nha_extra: "",
            nha_vips: &["198.18.0.166/24"],
            ka_extra: PASS_S3CRET,
            ka_vips: Some(&["198.18.0.166/24"]),
            ka_says: &[") received a ", " auth, expecting ", "!"],
            nha_counts: Some("auth_errors"),
        },
        Mismatch {
            name: "VI_INTERVAL",
            vrid: 65,
            nha_extra: "advert_interval_ms = 2000",
            nha_vips: &["198.18.0.167/24"],
            ka_extra: "",
            ka_vips: Some(&["198.18.0.167/24"]),
            ka_says: &[") advertisement interval mismatch mine="],
            nha_counts: Some("interval_errors"),
        },
        Mismatch {
            name: "VI_VERSION",
            vrid: 66,
            nha_extra: "version = 3",
            nha_vips: &["198.18.0.168/24"],
            ka_extra: "",
            ka_vips: Some(&["198.18.0.168/24"]),
            ka_says: &[") wrong version. Received ", " and expect "],
            nha_counts: Some("version_errors"),
        },
        Mismatch {
            name: "VI_CHECKSUM",
            vrid: 67,
            nha_extra: "version = 3\nchecksum_pseudo_header = false",
            nha_vips: &["198.18.0.169/24"],
            ka_extra: "    version 3",
            ka_vips: Some(&["198.18.0.169/24"]),
            ka_says: &[") Invalid VRRPv3 checksum"],
            nha_counts: Some("checksum_errors"),
        },
        Mismatch {
            name: "VI_UNKNOWN",
            vrid: 68,
            nha_extra: "",
            nha_vips: &["198.18.0.170/24"],
            ka_extra: "",
            ka_vips: None,
            ka_says: &["Unknown VRID(68) received on interface("],
            nha_counts: None,
        },
    ];
    let bridge = Bridge::new();
    let mut nha = Node::new(&bridge, NHA, NHA_CIDR);
    let mut ka = KeepalivedNode::new(&bridge, KA, KA_CIDR);
    let mut tables = String::new();
    let mut instances = String::new();
    for case in &cases {
        let vips: Vec<String> = case.nha_vips.iter().map(|v| format!("\"{v}\"")).collect();
        tables += &format!(
            "[[vrrp]]\nname = \"{}\"\ninterface = \"eth0\"\nvrid = {}\npriority = 100\nvirtual_ips = [{}]\n{}\n\n",
            case.name,
            case.vrid,
            vips.join(", "),
            case.nha_extra
        );
        if let Some(ka_vips) = case.ka_vips {
            instances += &ka.instance(case.name, case.vrid, 90, ka_vips, case.ka_extra);
        }
    }
    nha.configure(&tables);
    ka.configure("", &instances);
    nha.start();
    ka.start();
    let names_router =
        |case: &Mismatch, line: &str| case.ka_vips.is_none() || line.contains(&format!("({})", case.name));
    for case in &cases {
        wait_until(PATIENCE, &format!("keepalived to complain about {}", case.name), || {
            ka.complaints().iter().any(|line| names_router(case, line) && contains_in_order(line, case.ka_says))
        });
        if let Some(counter) = case.nha_counts {
            wait_until(PATIENCE, &format!("nginx-ha to count {counter} on {}", case.name), || {
                let status = nha.status().unwrap();
                let router =
                    status["vrrp"].as_array().unwrap().iter().find(|r| r["name"] == case.name).unwrap().clone();
                router["counters"][counter].as_u64().unwrap() > 0
            });
        }
    }
    eprintln!("keepalived's complaints:\n{}", ka.complaints().join("\n"));
}

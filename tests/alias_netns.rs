//! Static aliases (`nginx-ha alias`, `[[alias]]`) against the real kernel: the real binary
//! with real nginx inside network namespaces the tests create. Needs root and `ip`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::cluster::{BIN, Node, PATIENCE, router};
use common::netns::{Bridge, NetNs, wait_until};
use nginx_ha::net::{ALIAS_PROTO, Net, OWNER_PROTO};

/// `nginx-ha ARGS -c CONFIG` inside the node's namespace.
fn cli(node: &Node, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", node.ns.name(), BIN])
        .args(args)
        .arg("-c")
        .arg(node.config())
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// `ip -o -4/-6 addr show dev IF` lines in `ns` that hold `address` (with its prefix).
fn address_line(ns: &NetNs, interface: &str, address: &str) -> Option<String> {
    let shown = ns.ip(&["-o", "addr", "show", "dev", interface]);
    shown.lines().find(|line| line.contains(&format!(" {address} "))).map(str::to_owned)
}

fn has_label(ns: &NetNs, interface: &str, address: &str, label: &str) -> bool {
    // `ip -o` ends the IPv4 part of a line with the label and a backslash.
    address_line(ns, interface, address).is_some_and(|line| line.contains(&format!(" {label}\\")))
}

fn wait_alias(node: &Node, address: &str, label: &str) {
    wait_until(PATIENCE, &format!("{address} with label {label} on {}", node.name), || {
        has_label(&node.ns, "eth0", address, label)
    });
}

/// The status document's entry for `address`.
fn reported(node: &Node, address: &str) -> Option<serde_json::Value> {
    let status = node.status()?;
    status["aliases"].as_array()?.iter().find(|a| a["address"] == address).cloned()
}

fn wait_reported_present(node: &Node, address: &str, present: bool) {
    wait_until(PATIENCE, &format!("{address} reported present={present}"), || {
        reported(node, address).is_some_and(|a| a["present"] == present)
    });
}

fn wait_daemon(node: &Node) {
    wait_until(PATIENCE, &format!("{}: the daemon answering", node.name), || node.status().is_some());
}

/// Points the node's config at another state dir (the "same disk" after a reboot).
fn use_state_dir(node: &Node, dir: &Path) {
    let config = std::fs::read_to_string(node.config()).unwrap();
    let start = config.find("state_dir = ").unwrap();
    let end = start + config[start..].find('\n').unwrap();
    let edited = format!("{}state_dir = \"{}\"{}", &config[..start], dir.display(), &config[end..]);
    std::fs::write(node.config(), edited).unwrap();
}

fn state_dir(node: &Node) -> PathBuf {
    node.path("state")
}

#[test]
fn an_added_alias_is_kept_restored_survives_restarts_and_reboots_and_del_is_for_good() {
    let bridge = Bridge::new();
    let mut a = Node::new(&bridge, "a", "198.18.0.1/24");
    // A VRRP router too: its start-up clean-up of stale VIPs must leave the alias alone.
    a.configure(&router("VI_1", 51, 150, "198.18.0.100/24", "version = 3\nadvert_interval_ms = 100\n"));
    // The "disk" outlives the first namespace.
    let disk = tempfile::Builder::new().prefix("nginx-ha-alias-disk-").tempdir().unwrap();
    use_state_dir(&a, disk.path());
    a.start();
    wait_daemon(&a);

    let added = cli(&a, &["alias", "add", "198.18.0.107/24", "--dev", "eth0", "--label", "eth0:1"]);
    assert!(added.status.success(), "{}\n{}", text(&added), a.log());
    assert!(text(&added).contains("added, present"), "{}", text(&added));
    let line = address_line(&a.ns, "eth0", "198.18.0.107/24").expect("the alias is on eth0");
    assert!(line.contains("eth0:1"), "{line}");
    let entry = reported(&a, "198.18.0.107/24").unwrap();
    assert_eq!(
        (entry["interface"].as_str(), entry["label"].as_str(), &entry["present"]),
        (Some("eth0"), Some("eth0:1"), &serde_json::json!(true))
    );
    let listed = cli(&a, &["alias", "list", "--json"]);
    assert!(listed.status.success());
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed["aliases"][0]["present"], true, "{listed}");
    assert_eq!(listed["daemon"], true);
    // Tagged as an alias, not as a VIP.
    let ns_name = a.ns.name().to_owned();
    let (aliases, vips) = a.ns.run(|| async {
        let net = Net::new().await.unwrap();
        (net.addresses_with_proto(ALIAS_PROTO).await.unwrap(), net.addresses_with_proto(OWNER_PROTO).await.unwrap())
    });
    assert!(aliases.iter().any(|x| x.address.to_string() == "198.18.0.107/24"), "{ns_name}: {aliases:?}");
    assert!(!vips.iter().any(|x| x.address.to_string() == "198.18.0.107/24"), "{vips:?}");

    // Removed behind our back: added again, with its label, from the netlink event.
    a.ns.ip(&["addr", "del", "198.18.0.107/24", "dev", "eth0"]);
    wait_alias(&a, "198.18.0.107/24", "eth0:1");
    assert!(a.log().contains("removed behind our back"), "{}", a.log());

    // A planned stop leaves the alias; the next start (VRRP's stale-VIP clean-up included)
    // neither removes nor re-adds it.
    assert!(a.stop().success());
    assert!(has_label(&a.ns, "eth0", "198.18.0.107/24", "eth0:1"), "an alias stays on a planned stop");
    let log_before = a.log().len();
    a.start();
    wait_daemon(&a);
    a.wait_state("VI_1", "MASTER");
    wait_reported_present(&a, "198.18.0.107/24", true);
    let second_run = a.log()[log_before..].to_string();
    assert!(!second_run.contains("removed behind our back"), "{second_run}");
    assert!(!second_run.contains("alias added"), "the alias was never gone: {second_run}");
    assert!(a.has_address("198.18.0.100"), "the VIP is there too");
    a.kill_daemon();

    // "Reboot": a fresh namespace (nothing configured on it) with the same state dir.
    let mut rebooted = Node::new(&bridge, "a-rebooted", "198.18.0.3/24");
    rebooted.configure("");
    use_state_dir(&rebooted, disk.path());
    // The old host leaves the segment (deleting its namespace is asynchronous in the kernel).
    bridge.ns.ip(&["link", "del", &a.bridge_port]);
    drop(a);
    rebooted.start();
    wait_daemon(&rebooted);
    wait_alias(&rebooted, "198.18.0.107/24", "eth0:1");
    wait_reported_present(&rebooted, "198.18.0.107/24", true);

    // del: gone now, and still gone after a restart.
    let deleted = cli(&rebooted, &["alias", "del", "198.18.0.107/24", "--dev", "eth0"]);
    assert!(deleted.status.success(), "{}", text(&deleted));
    assert!(address_line(&rebooted.ns, "eth0", "198.18.0.107/24").is_none());
    let again = cli(&rebooted, &["alias", "del", "198.18.0.107/24", "--dev", "eth0"]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(text(&again).contains("no alias 198.18.0.107/24 on eth0 is declared"), "{}", text(&again));
    assert!(rebooted.stop().success());
    rebooted.start();
    wait_daemon(&rebooted);
    std::thread::sleep(Duration::from_secs(2));
    assert!(address_line(&rebooted.ns, "eth0", "198.18.0.107/24").is_none());
    assert!(reported(&rebooted, "198.18.0.107/24").is_none());
}

#[test]
fn without_a_daemon_the_cli_persists_and_the_daemon_applies_at_start() {
    let bridge = Bridge::new();
    let mut a = Node::new(&bridge, "a", "198.18.0.1/24");
    a.configure("");
    let added = cli(&a, &["alias", "add", "198.18.0.107/24", "--dev", "eth0", "--label", "eth0:7"]);
    assert!(added.status.success(), "{}", text(&added));
    assert!(text(&added).contains("no nginx-ha daemon answers"), "{}", text(&added));
    assert!(text(&added).contains("added (after an ARP probe) when nginx-ha starts"), "{}", text(&added));
    assert!(address_line(&a.ns, "eth0", "198.18.0.107/24").is_none(), "nothing applied without a daemon");
    let listed = cli(&a, &["alias", "list"]);
    assert!(listed.status.success());
    let shown = text(&listed);
    assert!(shown.contains("no nginx-ha daemon answers") && shown.contains("198.18.0.107/24"), "{shown}");
    assert!(shown.lines().any(|l| l.starts_with("198.18.0.107/24") && l.trim_end().ends_with("NO")), "{shown}");
    // A second add of the same alias is no error; unknown dels are.
    assert!(cli(&a, &["alias", "add", "198.18.0.107/24", "--dev", "eth0", "--label", "eth0:7"]).status.success());
    let unknown = cli(&a, &["alias", "del", "198.18.0.99/24", "--dev", "eth0"]);
    assert_eq!(unknown.status.code(), Some(1), "{}", text(&unknown));
    // A deleted-then-added one, all offline.
    assert!(cli(&a, &["alias", "add", "198.18.0.108/24", "--dev", "eth0"]).status.success());
    let deleted = cli(&a, &["alias", "del", "198.18.0.108/24", "--dev", "eth0"]);
    assert!(deleted.status.success() && text(&deleted).contains("no nginx-ha daemon answers"), "{}", text(&deleted));

    a.start();
    wait_daemon(&a);
    wait_alias(&a, "198.18.0.107/24", "eth0:7");
    wait_reported_present(&a, "198.18.0.107/24", true);
    assert!(address_line(&a.ns, "eth0", "198.18.0.108/24").is_none());
    let listed = cli(&a, &["alias", "list"]);
    assert!(text(&listed).lines().any(|l| l.starts_with("198.18.0.107/24") && l.trim_end().ends_with("yes")));
}

#[test]
fn a_corrupt_store_is_kept_aside_reported_and_the_daemon_starts() {
    let bridge = Bridge::new();
    let mut a = Node::new(&bridge, "a", "198.18.0.1/24");
    a.configure("[[alias]]\naddress = \"198.18.0.108/24\"\ninterface = \"eth0\"\nlabel = \"eth0:8\"\n");
    let dir = state_dir(&a);
    std::fs::create_dir_all(&dir).unwrap();
    // What a bad manual edit leaves: the first alias whole, then garbage.
    std::fs::write(
        dir.join("aliases.json"),
        "{\"version\": 1, \"aliases\": [\n  {\"address\":\"198.18.0.107/24\",\"interface\":\"eth0\"},\n  {\"address\":\"198.18.0.1",
    )
    .unwrap();
    let offline = cli(&a, &["alias", "add", "198.18.0.109/24", "--dev", "eth0"]);
    assert_eq!(offline.status.code(), Some(1), "the CLI does not write over a corrupt store: {}", text(&offline));
    assert!(text(&offline).contains("is corrupt"), "{}", text(&offline));

    a.start();
    wait_daemon(&a);
    // The config's alias is applied all the same, and nginx serves.
    wait_alias(&a, "198.18.0.108/24", "eth0:8");
    wait_until(PATIENCE, "nginx healthy", || a.status().is_some_and(|s| s["nginx"]["healthy"] == true));
    let log = a.log();
    assert!(log.contains("aliases.json is corrupt") && log.contains("moved to"), "{log}");
    let kept: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("aliases.json.corrupt-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(std::fs::read_to_string(dir.join(&kept[0])).unwrap().contains("198.18.0.107/24"), "kept as it was");
    // What the corrupt store still said is reported, not applied.
    let salvaged = reported(&a, "198.18.0.107/24").expect("the salvaged alias is reported");
    assert_eq!(salvaged["present"], false);
    assert!(salvaged["problem"].as_str().unwrap().contains("corrupt alias store kept as"), "{salvaged}");
    assert!(address_line(&a.ns, "eth0", "198.18.0.107/24").is_none());
    // The store works again: a new alias is added and stored.
    let added = cli(&a, &["alias", "add", "198.18.0.109/24", "--dev", "eth0"]);
    assert!(added.status.success(), "{}", text(&added));
    assert!(std::fs::read_to_string(dir.join("aliases.json")).unwrap().contains("198.18.0.109/24"));
}

#[test]
fn an_interface_created_after_the_start_gets_its_alias() {
    let bridge = Bridge::new();
    let mut a = Node::new(&bridge, "a", "198.18.0.1/24");
    a.configure("[[alias]]\naddress = \"198.18.1.7/24\"\ninterface = \"late0\"\nlabel = \"late0:1\"\n");
    a.start();
    wait_daemon(&a);
    let entry = reported(&a, "198.18.1.7/24").unwrap();
    assert_eq!(entry["present"], false);
    assert!(entry["problem"].as_str().unwrap().contains("does not exist (yet)"), "{entry}");
    // A CLI alias for it too, accepted while the interface is missing.
    let added = cli(&a, &["alias", "add", "198.18.1.8/24", "--dev", "late0"]);
    assert!(added.status.success(), "{}", text(&added));
    assert!(text(&added).contains("not present yet"), "{}", text(&added));

    a.ns.ip(&["link", "add", "late0", "type", "veth", "peer", "name", "late1"]);
    a.ns.ip(&["link", "set", "late1", "up"]);
    a.ns.ip(&["link", "set", "late0", "up"]);
    wait_until(PATIENCE, "both aliases on late0", || {
        has_label(&a.ns, "late0", "198.18.1.7/24", "late0:1") && address_line(&a.ns, "late0", "198.18.1.8/24").is_some()
    });
    wait_reported_present(&a, "198.18.1.7/24", true);
    wait_reported_present(&a, "198.18.1.8/24", true);
    // Deleted and created again: the aliases follow.
    a.ns.ip(&["link", "del", "late0"]);
    wait_reported_present(&a, "198.18.1.7/24", false);
    a.ns.ip(&["link", "add", "late0", "type", "veth", "peer", "name", "late1"]);
    wait_until(PATIENCE, "the alias on the re-created late0", || has_label(&a.ns, "late0", "198.18.1.7/24", "late0:1"));
}

#[test]
fn reload_applies_alias_tables() {
    let bridge = Bridge::new();
    let mut a = Node::new(&bridge, "a", "198.18.0.1/24");
    a.configure("");
    a.start();
    wait_daemon(&a);
    let config = std::fs::read_to_string(a.config()).unwrap();
    std::fs::write(a.config(), format!("{config}\n[[alias]]\naddress = \"198.18.0.110/24\"\ninterface = \"eth0\"\n"))
        .unwrap();
    let reloaded = cli(&a, &["reload"]);
    assert!(reloaded.status.success(), "{}", text(&reloaded));
    assert!(text(&reloaded).contains("[[alias]]"), "{}", text(&reloaded));
    wait_until(PATIENCE, "the reloaded alias", || address_line(&a.ns, "eth0", "198.18.0.110/24").is_some());
    // A config alias is not the CLI's to delete.
    let refused = cli(&a, &["alias", "del", "198.18.0.110/24", "--dev", "eth0"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused).contains("remove it there and run `nginx-ha reload`"), "{}", text(&refused));
    std::fs::write(a.config(), config).unwrap();
    assert!(cli(&a, &["reload"]).status.success());
    wait_until(PATIENCE, "the alias gone after the reload", || {
        address_line(&a.ns, "eth0", "198.18.0.110/24").is_none()
    });
}

#[test]
fn conflicts_with_a_vip_or_another_host_are_refused() {
    let bridge = Bridge::new();
    let mut a = Node::new(&bridge, "a", "198.18.0.1/24");
    let b = Node::new(&bridge, "b", "198.18.0.2/24");
    b.ns.ip(&["addr", "add", "fd00:198:18::2/64", "dev", "eth0"]);
    // DAD on for A's eth0 (the bridge helper turns it off).
    a.ns.sysctl("net.ipv6.conf.eth0.accept_dad", "1");
    a.configure(&router("VI_1", 52, 100, "198.18.0.100/24", ""));
    a.start();
    wait_daemon(&a);

    let vip = cli(&a, &["alias", "add", "198.18.0.100/24", "--dev", "eth0"]);
    assert_eq!(vip.status.code(), Some(1), "{}", text(&vip));
    assert!(text(&vip).contains("is a VIP of [[vrrp]] \"VI_1\""), "{}", text(&vip));

    let taken = cli(&a, &["alias", "add", "198.18.0.2/24", "--dev", "eth0"]);
    assert_eq!(taken.status.code(), Some(1), "{}", text(&taken));
    assert!(text(&taken).contains("already answers for 198.18.0.2 (ARP probe"), "{}", text(&taken));
    assert!(address_line(&a.ns, "eth0", "198.18.0.2/24").is_none());

    let taken6 = cli(&a, &["alias", "add", "fd00:198:18::2/64", "--dev", "eth0"]);
    assert_eq!(taken6.status.code(), Some(1), "{}", text(&taken6));
    assert!(text(&taken6).contains("duplicate address detection failed"), "{}", text(&taken6));
    assert!(address_line(&a.ns, "eth0", "fd00:198:18::2/64").is_none());

    // Refused ones are not stored; a free address next to them is added.
    let free = cli(&a, &["alias", "add", "198.18.0.107/24", "--dev", "eth0"]);
    assert!(free.status.success(), "{}", text(&free));
    let stored = std::fs::read_to_string(state_dir(&a).join("aliases.json")).unwrap();
    assert!(
        stored.contains("198.18.0.107/24") && !stored.contains("198.18.0.2/") && !stored.contains("fd00"),
        "{stored}"
    );
    let twice = cli(&a, &["alias", "add", "198.18.0.107/16", "--dev", "eth0"]);
    assert_eq!(twice.status.code(), Some(1), "{}", text(&twice));
    assert!(text(&twice).contains("already declared"), "{}", text(&twice));
    let bad_label = cli(&a, &["alias", "add", "198.18.0.111/24", "--dev", "eth0", "--label", "wlan0:1"]);
    assert_eq!(bad_label.status.code(), Some(1));
    assert!(text(&bad_label).contains("must start with the interface name"), "{}", text(&bad_label));

    // In the config, an alias equal to a VIP is an error.
    let config = std::fs::read_to_string(a.config()).unwrap();
    std::fs::write(a.config(), format!("{config}\n[[alias]]\naddress = \"198.18.0.100/24\"\ninterface = \"eth0\"\n"))
        .unwrap();
    let check = cli(&a, &["check"]);
    assert_eq!(check.status.code(), Some(1));
    assert!(text(&check).contains("is a VIP of [[vrrp]] \"VI_1\""), "{}", text(&check));
}

use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(text, Path::new("/etc/nginx-ha/nginx-ha.toml"))
}

fn errors(text: &str) -> Vec<String> {
    parse(text).expect_err("config should be rejected").0.iter().map(ToString::to_string).collect()
}

const ROUTER: &str = r#"
[[vrrp]]
name = "VI_1"
interface = "eth0"
vrid = 151
priority = 100
virtual_ips = ["198.18.0.100/24"]
"#;

#[test]
fn empty_file_is_a_pure_supervisor_with_defaults() {
    let config = parse("").unwrap();
    assert_eq!(config.nginx.config, Path::new("/etc/nginx/nginx.conf"));
    assert!(config.nginx.watch);
    assert_eq!(config.health.interval_ms, 1000);
    assert_eq!((config.health.fall, config.health.rise), (2, 2));
    assert!(config.vrrp.is_empty());
    assert_eq!(config.daemon.control_socket, Path::new("/run/nginx-ha/control.sock"));
    assert_eq!(config.daemon.state_dir, Path::new("/var/lib/nginx-ha"));
}

#[test]
fn router_defaults_follow_the_contract() {
    let config = parse(ROUTER).unwrap();
    let router = &config.vrrp[0];
    assert_eq!(router.version(), 2);
    assert_eq!(router.advert_interval_ms, 1000);
    assert!(router.preempt);
    assert_eq!(router.on_nginx_failure, OnNginxFailure::Relinquish);
    assert_eq!(router.demote_weight, 50);
    assert_eq!(router.vips(), vec!["198.18.0.100/24".parse::<ipnet::IpNet>().unwrap()]);
}

#[test]
fn example_config_in_conf_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/nginx-ha.toml");
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.vrrp.len(), 2, "the example shows the dual-master layout");
}

#[test]
fn local_example_is_a_valid_pure_supervisor() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/example/local.toml");
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.vrrp.is_empty());
    assert!(config.nginx.config.ends_with("conf/example/nginx.conf") && config.nginx.config.is_absolute());
}

#[test]
fn unknown_key_names_its_line_and_column() {
    let errs = errors("[nginx]\nconfig = \"/etc/nginx/nginx.conf\"\nwatchh = true\n");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("/etc/nginx-ha/nginx-ha.toml:3:1: unknown field `watchh`"), "{}", errs[0]);
}

#[test]
fn bare_address_is_a_host_route() {
    let config = parse(&ROUTER.replace("198.18.0.100/24", "198.18.0.100")).unwrap();
    assert_eq!(config.vrrp[0].vips()[0].prefix_len(), 32);
}

#[test]
fn semantic_errors_point_at_the_value() {
    let errs = errors(&ROUTER.replace("vrid = 151", "vrid = 0"));
    assert!(errs[0].starts_with("/etc/nginx-ha/nginx-ha.toml:5:8: [VI_1] vrid = 0"), "{}", errs[0]);
}

#[test]
fn out_of_range_integer_is_located() {
    let errs = errors(&ROUTER.replace("vrid = 151", "vrid = 300"));
    assert!(errs[0].contains(":5:8:"), "{}", errs[0]);
}

#[test]
fn v2_interval_must_be_whole_seconds() {
    let errs = errors(&format!("{ROUTER}advert_interval_ms = 1500\n"));
    assert!(errs[0].contains("whole seconds"), "{}", errs[0]);
    assert!(errs[0].contains(":8:22:"), "{}", errs[0]);
}

#[test]
fn v3_interval_in_ten_ms_steps() {
    assert!(parse(&format!("{ROUTER}version = 3\nadvert_interval_ms = 50\n")).is_ok());
    let errs = errors(&format!("{ROUTER}version = 3\nadvert_interval_ms = 55\n"));
    assert!(errs[0].contains("multiple of 10"), "{}", errs[0]);
}

#[test]
fn unicast_with_no_peers_is_an_error() {
    let errs = errors(&format!("{ROUTER}unicast_peers = []\n"));
    assert!(errs[0].contains("unicast_peers is empty"), "{}", errs[0]);
    assert!(parse(&format!("{ROUTER}unicast_peers = [\"198.18.0.2\"]\n")).is_ok());
    let errs = errors(&format!("{ROUTER}unicast_peers = [\"198.18.0.2\", \"nope\"]\n"));
    assert!(errs[0].contains("`nope` is not an IP address"), "{}", errs[0]);
}

#[test]
fn ipv6_needs_v3_and_one_family_per_router() {
    let v6 = ROUTER.replace("198.18.0.100/24", "fd00::100/64");
    assert!(errors(&format!("{v6}version = 2\n"))[0].contains("use version = 3"));
    assert!(parse(&format!("{v6}version = 3\n")).is_ok());
    let mixed = ROUTER.replace("\"198.18.0.100/24\"", "\"198.18.0.100/24\", \"fd00::1\"");
    assert!(errors(&format!("{mixed}version = 3\n"))[0].contains("mixes IPv4 and IPv6"));
}

#[test]
fn bad_address_and_auth_and_version() {
    let errs = errors(&ROUTER.replace("198.18.0.100/24", "198.18.0.300/24"));
    assert!(errs[0].contains("`198.18.0.300/24` is not an address"), "{}", errs[0]);
    let errs = errors(&format!("{ROUTER}auth_pass = \"123456789\"\n"));
    assert!(errs[0].contains("1 to 8 bytes"), "{}", errs[0]);
    let errs = errors(&format!("{ROUTER}version = 3\nauth_pass = \"1111\"\n"));
    assert!(errs[0].contains("no authentication"), "{}", errs[0]);
    let errs = errors(&format!("{ROUTER}version = 4\n"));
    assert!(errs[0].contains("use 2 (RFC 3768) or 3"), "{}", errs[0]);
}

#[test]
fn all_problems_are_reported_at_once() {
    let errs = errors(&ROUTER.replace("vrid = 151", "vrid = 0").replace("priority = 100", "priority = 0"));
    assert_eq!(errs.len(), 2, "{errs:?}");
}

#[test]
fn duplicate_vrid_on_one_interface_is_an_error() {
    let second = ROUTER.replace("VI_1", "VI_2").replace("198.18.0.100", "198.18.0.101");
    let errs = errors(&format!("{ROUTER}{second}"));
    assert!(errs[0].contains("vrid 151 is already used on eth0"), "{}", errs[0]);
    assert!(errs[0].contains(":12:8:"), "{}", errs[0]);
}

#[test]
fn on_nginx_failure_values() {
    let config = parse(&format!("{ROUTER}on_nginx_failure = \"demote\"\ndemote_weight = 30\n")).unwrap();
    assert_eq!(config.vrrp[0].on_nginx_failure, OnNginxFailure::Demote);
    let errs = errors(&format!("{ROUTER}on_nginx_failure = \"panic\"\n"));
    assert!(errs[0].contains("\"relinquish\" or \"demote\""), "{}", errs[0]);
}

#[test]
fn health_probe_syntax() {
    assert!(
        parse("[health]\nhttp = \"http://127.0.0.1:8080/health\"\ntcp = [\"127.0.0.1:80\", \"[::1]:443\"]\n").is_ok()
    );
    assert!(errors("[health]\nhttp = \"https://x/\"\n")[0].contains("not an http:// URL"));
    assert!(errors("[health]\ntcp = [\"localhost\"]\n")[0].contains(":2:8:"));
    assert!(errors("[health]\ntimeout_ms = 2000\n")[0].contains("must be from 1 to interval_ms"));
    assert!(errors("[health]\nfall = 0\n")[0].contains("fall = 0"));
}

#[test]
fn http_probe_url_parts() {
    let url = HttpProbeUrl::parse("http://127.0.0.1:8080/health?x=1").unwrap();
    assert_eq!((url.host.as_str(), url.port, url.path.as_str()), ("127.0.0.1", 8080, "/health?x=1"));
    let url = HttpProbeUrl::parse("http://[::1]/").unwrap();
    assert_eq!((url.host.as_str(), url.port), ("::1", 80));
    assert_eq!(HttpProbeUrl::parse("http://localhost").unwrap().path, "/");
}

#[test]
fn alias_label_must_start_with_interface() {
    let ok = "[[alias]]\naddress = \"198.18.0.107/24\"\ninterface = \"eth0\"\nlabel = \"eth0:1\"\n";
    assert!(parse(ok).is_ok());
    let errs = errors(&ok.replace("label = \"eth0:1\"", "label = \"web\""));
    assert!(errs[0].contains("must start with the interface name"), "{}", errs[0]);
    assert!(errs[0].contains(":4:9:"), "{}", errs[0]);
}

#[test]
fn unreadable_file_says_so() {
    let err = Config::load(Path::new("/nonexistent/nginx-ha.toml")).unwrap_err();
    assert!(err.to_string().contains("cannot read the config file"), "{err}");
}

#[test]
fn more_vips_than_an_advert_carries_go_to_virtual_ips_excluded() {
    let many: Vec<String> = (0..300).map(|i| format!("\"198.18.{}.{}/16\"", 1 + i / 250, 1 + i % 250)).collect();
    let errs = errors(&ROUTER.replace("\"198.18.0.100/24\"", &many.join(", ")));
    assert!(errs[0].contains("virtual_ips_excluded"), "{}", errs[0]);
    let config = parse(&format!("{ROUTER}virtual_ips_excluded = [{}]\n", many.join(", "))).unwrap();
    assert_eq!(config.vrrp[0].excluded_vips().len(), 300);
    let errs = errors(&format!("{ROUTER}virtual_ips_excluded = [\"fd00::1\"]\n"));
    assert!(errs[0].contains("mixes IPv4 and IPv6") && errs[0].contains(":8:"), "{}", errs[0]);
}

#[test]
fn a_missing_required_key_says_what_to_add() {
    let router = |without: &str| ROUTER.lines().filter(|l| !l.starts_with(without)).collect::<Vec<_>>().join("\n");
    let expected = [
        ("virtual_ips", "add `virtual_ips = [\"198.18.0.100/24\"]` to this [[vrrp]] table"),
        ("priority", "add `priority = 100` to this [[vrrp]] table (1 to 255"),
        ("vrid", "add `vrid = 51` to this [[vrrp]] table (1 to 255, the same on both peers)"),
        ("interface", "add `interface = \"eth0\"` to this [[vrrp]] table"),
        ("name", "add `name = \"VI_1\"` to this [[vrrp]] table"),
    ];
    for (key, hint) in expected {
        let errs = errors(&router(key));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with(&format!("/etc/nginx-ha/nginx-ha.toml:2:1: missing field `{key}`; ")),
            "{}",
            errs[0]
        );
        assert!(errs[0].contains(hint), "{}", errs[0]);
    }
    // The same key name in another table gets that table's example.
    let errs = errors("[nginx]\nwatch = true\n\n[[alias]]\naddress = \"198.18.0.107/24\"\n");
    assert!(
        errs[0].contains(":4:1: missing field `interface`; add `interface = \"eth0\"` to this [[alias]] table"),
        "{}",
        errs[0]
    );
    let errs = errors("[[alias]]\ninterface = \"eth0\"\n");
    assert!(errs[0].contains("add `address = \"198.18.0.107/24\"` to this [[alias]] table"), "{}", errs[0]);
    // Inline tables too.
    let errs = errors("vrrp = [{ name = \"VI_1\", interface = \"eth0\", vrid = 1, priority = 100 }]\n");
    assert!(errs[0].contains("add `virtual_ips = [\"198.18.0.100/24\"]`"), "{}", errs[0]);
}

#[test]
fn a_wrong_type_or_value_shows_a_right_one() {
    let cases = [
        (
            "[nginx]\nwatch = \"yes\"\n",
            ":2:9: invalid type: string \"yes\", expected a boolean; write e.g. `watch = true`",
        ),
        ("[health]\ninterval_ms = \"100\"\n", "expected u64; write e.g. `interval_ms = 1000`"),
        ("[health]\ntcp = \"127.0.0.1:80\"\n", "expected a sequence; write e.g. `tcp = [\"127.0.0.1:80\"]`"),
        ("[health]\ntcp = [80]\n", "write e.g. `tcp = [\"127.0.0.1:80\"]`"),
        ("[health]\nhttp = 80\n", "write e.g. `http = \"http://127.0.0.1:80/\"`"),
        ("[daemon]\nstate_dir = 5\n", "write e.g. `state_dir = \"/var/lib/nginx-ha\"`"),
        (
            &ROUTER.replace("vrid = 151", "vrid = 351"),
            ":5:8: invalid value: integer `351`, expected u8; write e.g. `vrid = 51`",
        ),
        (
            &ROUTER.replace("[\"198.18.0.100/24\"]", "\"198.18.0.100/24\""),
            "write e.g. `virtual_ips = [\"198.18.0.100/24\"]`",
        ),
        ("[vrrp]\nname = \"VI_1\"\n", "write the header as [[vrrp]], not [vrrp]"),
        ("nginx = 1\n", "write [nginx] on a line of its own"),
        ("[nginx]\nwatch = yes\n", "string values must be quoted, expected literal string; write e.g. `watch = true`"),
        ("[nginx]\nwatch = true\nwatch = false\n", ":3:1: duplicate key `watch`; a key appears once per table"),
    ];
    for (text, expected) in cases {
        let errs = errors(text);
        assert!(errs[0].contains(expected), "{text:?}:\n{}\nlacks {expected:?}", errs[0]);
    }
}

#[test]
fn every_key_has_a_valid_example() {
    // serde lists a table's keys when it meets an unknown one: each of them needs an example.
    for table in ["nginx", "health", "vrrp", "alias", "anycast", "daemon"] {
        let text = if ["vrrp", "alias", "anycast"].contains(&table) {
            format!("[[{table}]]\nzzz = 1\n")
        } else {
            format!("[{table}]\nzzz = 1\n")
        };
        let message = errors(&text).remove(0);
        let listed = message.split("expected one of ").nth(1).unwrap_or_else(|| panic!("{message}"));
        let keys: Vec<&str> = listed.split(';').next().unwrap().split(", ").map(|k| k.trim_matches('`')).collect();
        assert_eq!(hints::keys_of(table), keys, "[{table}]: the examples follow the schema");
    }
    // The examples, put together, are a valid config.
    let mut text = String::new();
    for table in ["nginx", "health", "vrrp", "alias", "anycast", "daemon"] {
        let header =
            if ["vrrp", "alias", "anycast"].contains(&table) { format!("[[{table}]]") } else { format!("[{table}]") };
        text.push_str(&format!("{header}\n"));
        for key in hints::keys_of(table) {
            let (line, _) = hints::example(table, key).unwrap();
            // auth_pass is v2 only and checksum_pseudo_header v3 only; the default version is 2.
            if key != "checksum_pseudo_header" {
                text.push_str(&format!("{line}\n"));
            }
        }
    }
    parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
}

#[test]
fn validation_messages_say_what_would_be_right() {
    let second = ROUTER.replace("vrid = 151", "vrid = 152").replace("198.18.0.100", "198.18.0.101");
    assert!(errors(&format!("{ROUTER}{second}"))[0].contains("rename one, e.g. \"VI_2\""));
    let errs = errors(&format!("{ROUTER}unicast_peers = [\"fd00::2\"]\n"));
    assert!(errs[0].contains("list the peer's IPv4 address, e.g. \"198.18.0.2\""), "{}", errs[0]);
    let alias = "[[alias]]\naddress = \"198.18.0.107/24\"\ninterface = \"eth0\"\n";
    assert!(errors(&format!("{alias}{alias}"))[0].contains("remove one of the two [[alias]] tables"));
    assert!(
        errors(&format!("{ROUTER}notify = \"notify.sh\"\n"))[0].contains("e.g. \"/usr/local/bin/nginx-ha-notify\"")
    );
    assert!(
        errors("[health]\nhttp = \"http://127.0.0.1:0/\"\n")[0].contains("not a number from 1 to 65535; write e.g.")
    );
    assert!(errors("[health]\nhttp = \"http://[::1/\"\n")[0].contains("write e.g. \"http://[::1]:80/\""));
}

fn reload_changes(before: &str, after: &str) -> Result<Vec<String>, RestartNeeded> {
    parse(before).unwrap().reload_changes(&parse(after).unwrap())
}

#[test]
fn reload_applies_health_and_the_live_nginx_keys() {
    let before = format!("[nginx]\nwatch = true\n[health]\ninterval_ms = 1000\n{ROUTER}");
    assert_eq!(reload_changes(&before, &before), Ok(vec![]));
    let after = before
        .replace("watch = true", "watch = false\nwatch_debounce_ms = 20\nstop_timeout_ms = 1\nreload_timeout_ms = 2")
        .replace("interval_ms = 1000", "interval_ms = 500\nhttp = \"http://127.0.0.1:81/\"");
    let applied = reload_changes(&before, &after).unwrap();
    assert_eq!(
        applied,
        [
            "[nginx] watch",
            "[nginx] stop_timeout_ms",
            "[nginx] reload_timeout_ms",
            "[nginx] watch_debounce_ms",
            "[health] interval_ms",
            "[health] http"
        ]
    );
}

#[test]
fn reload_rejects_every_key_that_needs_a_restart_by_name() {
    let before = format!("[nginx]\nconfig = \"/etc/nginx/nginx.conf\"\n[health]\nfall = 2\n{ROUTER}");
    let after = before
        .replace("/etc/nginx/nginx.conf", "/etc/nginx/other.conf")
        .replace("fall = 2", "fall = 3\n[daemon]\nmetrics_listen = \"127.0.0.1:9612\"")
        .replace("priority = 100", "priority = 90");
    let RestartNeeded(keys) = reload_changes(&before, &after).unwrap_err();
    assert_eq!(keys, ["[nginx] config", "[daemon] metrics_listen", "[[vrrp]] \"VI_1\" priority"]);
    let message = RestartNeeded(keys).to_string();
    assert!(message.contains("restart it (`systemctl restart nginx-ha`)"), "{message}");
    assert!(message.contains("hands the VIPs to the peer") && message.contains("nothing was changed"), "{message}");

    let second = ROUTER.replace("VI_1", "VI_2").replace("vrid = 151", "vrid = 152");
    let RestartNeeded(keys) = reload_changes(ROUTER, &second).unwrap_err();
    assert_eq!(keys, ["[[vrrp]] \"VI_2\" (added)", "[[vrrp]] \"VI_1\" (removed)"]);
    let RestartNeeded(keys) = reload_changes("", "[nginx]\npid_file = \"/run/x.pid\"\n").unwrap_err();
    assert_eq!(keys, ["[nginx] pid_file"]);
    let message = RestartNeeded(keys).to_string();
    assert!(
        message.starts_with("[nginx] pid_file changed; this key takes effect only when nginx-ha restarts"),
        "{message}"
    );
}

#[test]
fn a_default_that_depends_on_another_key_follows_it() {
    // [health] interval_ms = 200 alone used to be rejected: timeout_ms's default (500) is
    // longer than the interval. It follows the interval instead.
    let config = Config::parse("[health]\ninterval_ms = 200\n", Path::new("x.toml")).unwrap();
    assert_eq!((config.health.interval_ms, config.health.timeout_ms), (200, 200));
    let config = Config::parse("[health]\ninterval_ms = 2000\n", Path::new("x.toml")).unwrap();
    assert_eq!(config.health.timeout_ms, 500);
    assert!(errors("[health]\ninterval_ms = 200\ntimeout_ms = 300\n")[0].contains("must be from 1 to interval_ms"));
}

#[test]
fn vrrp_defaults_that_depend_on_another_key_follow_it_or_say_so() {
    // IPv6 VIPs alone used to be rejected ("VRRPv2 cannot carry" IPv6, with version = 2 a
    // default the user never wrote): the version follows the VIPs, as in keepalived.
    let v6 = ROUTER.replace("198.18.0.100/24", "fd00::100/64");
    let config = parse(&v6).unwrap();
    assert_eq!(config.vrrp[0].version(), 3);
    assert_eq!(config.routers()[0].router.version, crate::vrrp::packet::Version::V3);
    assert_eq!(parse(ROUTER).unwrap().vrrp[0].version(), 2);
    // IPv6 has VRRPv3 only: auth_pass is to go, not the version to change.
    let errs = errors(&format!("{v6}auth_pass = \"secret\"\n"));
    assert!(errs[0].contains("the only version that carries IPv6") && !errs[0].contains("version = 2"), "{}", errs[0]);
    // With the default version 2, a v3-only key says that the version is the way out.
    let errs = errors(&format!("{ROUTER}checksum_pseudo_header = false\n"));
    assert!(
        errs[0].contains("or write version = 3 (the default for IPv4 is 2)") && errs[0].contains(":8:"),
        "{errs:?}"
    );
    let errs = errors(&format!("{ROUTER}advert_interval_ms = 500\n"));
    assert!(errs[0].contains("or use version = 3 for sub-second intervals"), "{}", errs[0]);
}

#[test]
fn parse_keeps_the_routers_it_validated() {
    let config = parse(&format!("{ROUTER}auth_pass = \"secret\"\nunicast_peers = [\"198.18.0.2\"]\n")).unwrap();
    let [spec] = config.routers() else { panic!("one router: {:?}", config.routers()) };
    assert_eq!((spec.router.name.as_str(), spec.interface.as_str()), ("VI_1", "eth0"));
    assert_eq!(spec.router.auth_pass, Some(*b"secret\0\0"));
    assert_eq!(spec.router.unicast_peers, ["198.18.0.2".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(crate::vrrp::spec::RouterSpec::from_config(&config), config.routers());
    assert!(parse("").unwrap().routers().is_empty());
}

#[test]
fn an_alias_may_be_neither_a_vip_nor_declared_twice() {
    let vip = "[[alias]]\naddress = \"198.18.0.100/24\"\ninterface = \"eth0\"\n";
    let errs = errors(&format!("{ROUTER}{vip}"));
    assert!(errs[0].contains("is a VIP of [[vrrp]] \"VI_1\""), "{errs:?}");
    // The same address on another interface, or with another prefix length, is the same address.
    let a = "[[alias]]\naddress = \"198.18.0.107/24\"\ninterface = \"eth0\"\n";
    let b = "[[alias]]\naddress = \"198.18.0.107/16\"\ninterface = \"eth1\"\n";
    let errs = errors(&format!("{a}{b}"));
    assert!(errs[0].contains("declared twice (address 198.18.0.107)"), "{errs:?}");
}

#[test]
fn reload_applies_alias_changes_live() {
    let before = format!("{ROUTER}[[alias]]\naddress = \"198.18.0.107/24\"\ninterface = \"eth0\"\n");
    let after = before.replace("198.18.0.107/24", "198.18.0.108/24");
    assert_eq!(reload_changes(&before, &after), Ok(vec!["[[alias]]".to_string()]));
    assert_eq!(reload_changes(&before, ROUTER), Ok(vec!["[[alias]]".to_string()]));
}

const ANYCAST: &str = "[[anycast]]\nname = \"web\"\naddresses = [\"198.19.10.1/32\"]\n";

#[test]
fn anycast_defaults_follow_the_contract() {
    let config = parse(ANYCAST).unwrap();
    let anycast = &config.anycast[0];
    assert_eq!((anycast.interface.as_str(), anycast.table), ("lo", 110));
    assert_eq!((anycast.drain_ms, anycast.restart_grace_ms), (5000, 300));
    assert_eq!(anycast.nets(), ["198.19.10.1/32".parse::<ipnet::IpNet>().unwrap()]);
    assert_eq!(anycast.hold(), AnycastHold::Address);
}

#[test]
fn anycast_hold_is_address_or_local_route() {
    let config = parse(&format!("{ANYCAST}hold = \"local-route\"\n")).unwrap();
    assert_eq!(config.anycast[0].hold(), AnycastHold::LocalRoute);
    assert_eq!(parse(&format!("{ANYCAST}hold = \"address\"\n")).unwrap().anycast[0].hold(), AnycastHold::Address);
    let errs = errors(&format!("{ANYCAST}hold = \"route\"\n"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("anycast[0].hold") || errs[0].contains("hold = \"route\""), "{errs:?}");
    assert!(errs[0].contains("\"address\"") && errs[0].contains("\"local-route\""), "{errs:?}");
    // A change of hold needs a restart, like the other keys that are in the kernel.
    let RestartNeeded(keys) = reload_changes(ANYCAST, &format!("{ANYCAST}hold = \"local-route\"\n")).unwrap_err();
    assert_eq!(keys, ["[[anycast]] \"web\" hold"]);
}

#[test]
fn anycast_validation_says_what_would_be_right() {
    let cases = [
        ("table = 254\n", "table = 254 is reserved by the kernel"),
        ("table = 255\n", "table = 255 is reserved"),
        ("table = 0\n", "table = 0 is reserved"),
        ("drain_ms = 700000\n", "drain_ms = 700000 must be at most 600000"),
        ("interface = \"a/b\"\n", "not a valid Linux interface name"),
    ];
    for (extra, expected) in cases {
        let errs = errors(&format!("{ANYCAST}{extra}"));
        assert!(errs[0].contains(expected), "{extra:?}: {errs:?}");
    }
    assert!(errors("[anycast]\nname = \"web\"\n")[0].contains("write the header as [[anycast]]"));
    let errs =
        errors("[[anycast]]\nname = \"web\"\naddresses = [\"198.19.10.1/32\", \"fd00::1\", \"nope\", \"127.0.0.1\"]\n");
    assert!(errs.iter().any(|e| e.contains(":3:") && e.contains("mixes IPv4 and IPv6")), "{errs:?}");
    assert!(errs.iter().any(|e| e.contains("`nope` is not an IP address")), "{errs:?}");
    assert!(errs.iter().any(|e| e.contains("`127.0.0.1` cannot be announced")), "{errs:?}");
    let errs = errors(&format!("{ANYCAST}{ANYCAST}"));
    assert!(errs.iter().any(|e| e.contains("names must be unique")), "{errs:?}");
    assert!(errs.iter().any(|e| e.contains("is listed twice")), "{errs:?}");
    assert!(errors("[[anycast]]\nname = \"web\"\naddresses = []\n")[0].contains("addresses is empty"));
    assert!(errors("[[anycast]]\nname = \"web\"\ntable = 4294967296\naddresses = []\n")[0].contains("table = 110"));
}

#[test]
fn reload_applies_the_anycast_timings_and_rejects_the_rest() {
    let after = format!("{ANYCAST}drain_ms = 100\nrestart_grace_ms = 0\n");
    assert_eq!(
        reload_changes(ANYCAST, &after).unwrap(),
        ["[[anycast]] \"web\" drain_ms", "[[anycast]] \"web\" restart_grace_ms"]
    );
    let after = format!("{ANYCAST}table = 111\n").replace("198.19.10.1/32", "198.19.10.2/32");
    let RestartNeeded(keys) = reload_changes(ANYCAST, &after).unwrap_err();
    assert_eq!(keys, ["[[anycast]] \"web\" addresses", "[[anycast]] \"web\" table"]);
    let RestartNeeded(keys) = reload_changes(ANYCAST, "").unwrap_err();
    assert_eq!(keys, ["[[anycast]] \"web\" (removed)"]);
}

#[test]
fn status_url_defaults_to_the_probe_and_can_be_turned_off() {
    let url = |u: &str| HttpProbeUrl::parse(u).unwrap();
    assert_eq!(parse("").unwrap().health.status_source(), StatusSource::Off);
    let probe = parse("[health]\nhttp = \"http://127.0.0.1:80/nginx_status\"\n").unwrap();
    assert_eq!(probe.health.status_source(), StatusSource::Probe(url("http://127.0.0.1:80/nginx_status")));
    let configured =
        parse("[health]\nhttp = \"http://127.0.0.1/\"\nstatus_url = \"http://[::1]:8080/status\"\n").unwrap();
    assert_eq!(configured.health.status_source(), StatusSource::Configured(url("http://[::1]:8080/status")));
    assert_eq!(url("http://[::1]:8080/status").to_string(), "http://[::1]:8080/status");
    let off = parse("[health]\nhttp = \"http://127.0.0.1/\"\nstatus_url = \"\"\n").unwrap();
    assert_eq!(off.health.status_source(), StatusSource::Off);
    let bad = errors("[health]\nstatus_url = \"https://127.0.0.1/status\"\n");
    assert!(bad.iter().any(|e| e.contains("status_url") && e.contains("not an http:// URL")), "{bad:?}");
}

#[test]
fn status_group_is_a_group_name() {
    assert_eq!(parse("[daemon]\nstatus_group = \"adm\"\n").unwrap().daemon.status_group.as_deref(), Some("adm"));
    assert_eq!(parse("").unwrap().daemon.status_group, None);
    for bad in ["", "-adm", "a dm", "adm:x", &"g".repeat(33)] {
        let errors = errors(&format!("[daemon]\nstatus_group = \"{bad}\"\n"));
        assert!(errors.iter().any(|e| e.contains("is not a group name") && e.contains("\"adm\"")), "{bad}: {errors:?}");
    }
}

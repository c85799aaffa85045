//! Semantic checks that serde cannot express: ranges, address syntax, protocol constraints.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use super::locate::Step::{self, Index, Key};
use super::{
    AnycastConfig, AnycastHold, Config, HttpProbeUrl, IFNAME_MAX, VrrpConfig, check_interface_name, parse_net,
};
use crate::vrrp::spec::{InvalidRouter, RouterSpec};

/// A problem and the path of the value it is about.
pub struct Problem {
    pub path: Vec<Step>,
    pub message: String,
}

/// The problems, and when there are none, the `[[vrrp]]` tables as routers.
pub fn validate(config: &Config) -> (Vec<Problem>, Vec<RouterSpec>) {
    let mut problems = Vec::new();
    let mut report = |path: Vec<Step>, message: String| problems.push(Problem { path, message });

    validate_health(config, &mut report);
    let routers: Vec<RouterSpec> =
        config.vrrp.iter().enumerate().filter_map(|(i, table)| validate_router(i, table, &mut report)).collect();
    validate_router_uniqueness(config, &mut report);
    validate_aliases(config, &mut report);
    validate_anycast(config, &mut report);

    if !config.daemon.control_socket.is_absolute() {
        report(
            vec![Key("daemon"), Key("control_socket")],
            format!(
                "control_socket `{}` must be an absolute path, e.g. \"/run/nginx-ha/control.sock\"",
                config.daemon.control_socket.display()
            ),
        );
    }
    if let Some(listen) = &config.daemon.metrics_listen
        && listen.parse::<SocketAddr>().is_err()
    {
        report(
            vec![Key("daemon"), Key("metrics_listen")],
            format!("metrics_listen `{listen}` is not ADDRESS:PORT; write e.g. \"127.0.0.1:9612\""),
        );
    }
    if let Some(group) = &config.daemon.status_group
        && !is_group_name(group)
    {
        report(
            vec![Key("daemon"), Key("status_group")],
            format!(
                "status_group `{group}` is not a group name (letters, digits, `_`, `-`, `.`, at most 32, not starting with `-`); write e.g. \"adm\""
            ),
        );
    }
    if config.nginx.watch_debounce_ms > 10_000 {
        report(
            vec![Key("nginx"), Key("watch_debounce_ms")],
            "watch_debounce_ms must be at most 10000 (10 s); 100 suits most editors".into(),
        );
    }
    (problems, routers)
}

/// A name `groupadd` accepts (the portable set, plus `.`); whether it exists is the daemon's check.
fn is_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn validate_health(config: &Config, report: &mut impl FnMut(Vec<Step>, String)) {
    let health = &config.health;
    let at = |key| vec![Key("health"), Key(key)];
    if health.interval_ms < 10 {
        report(at("interval_ms"), format!("interval_ms = {} is too short; use at least 10 (ms)", health.interval_ms));
    }
    if health.timeout_ms == 0 || health.timeout_ms > health.interval_ms {
        report(
            at("timeout_ms"),
            format!(
                "timeout_ms = {} must be from 1 to interval_ms ({}), so that probes never overlap",
                health.timeout_ms, health.interval_ms
            ),
        );
    }
    for key in ["fall", "rise"] {
        let value = if key == "fall" { health.fall } else { health.rise };
        if value == 0 {
            report(at(key), format!("{key} = 0 would never change the health; use 1 or more (default 2)"));
        }
    }
    if let Some(url) = &health.http
        && let Err(message) = HttpProbeUrl::parse(url)
    {
        report(at("http"), message);
    }
    if let Some(url) = health.status_url.as_deref().filter(|url| !url.is_empty())
        && let Err(message) = HttpProbeUrl::parse(url)
    {
        let message = if url.starts_with("http://") {
            format!("{message} (status_url: nginx's stub_status location, or \"\" to read none)")
        } else {
            format!(
                "status_url `{url}` is not an http:// URL; nginx-ha reads nginx's stub_status over plain HTTP: \
                 write e.g. \"http://127.0.0.1:80/nginx_status\", or \"\" to read none"
            )
        };
        report(at("status_url"), message);
    }
    for (i, target) in health.tcp.iter().enumerate() {
        if target.parse::<SocketAddr>().is_err() {
            report(
                vec![Key("health"), Key("tcp"), Index(i)],
                format!("tcp probe `{target}` is not ADDRESS:PORT; write e.g. \"127.0.0.1:80\" or \"[::1]:443\""),
            );
        }
    }
}

/// One `[[vrrp]]` table through the router's own conversion: its typed errors become located
/// messages, named after the router.
fn validate_router(i: usize, table: &VrrpConfig, report: &mut impl FnMut(Vec<Step>, String)) -> Option<RouterSpec> {
    let InvalidRouter(errors) = match RouterSpec::try_from(table) {
        Ok(spec) => return Some(spec),
        Err(invalid) => invalid,
    };
    for error in errors {
        let (key, index) = error.key();
        let mut path = vec![Key("vrrp"), Index(i), Key(key)];
        path.extend(index.map(Index));
        let message = if error.names_router() { format!("[{}] {error}", table.name) } else { error.to_string() };
        report(path, message);
    }
    None
}

fn validate_router_uniqueness(config: &Config, report: &mut impl FnMut(Vec<Step>, String)) {
    let mut names = HashSet::new();
    let mut vrids = HashSet::new();
    for (i, router) in config.vrrp.iter().enumerate() {
        if !names.insert(router.name.as_str()) {
            report(
                vec![Key("vrrp"), Index(i), Key("name")],
                format!(
                    "name `{}` is used by another [[vrrp]]; names must be unique: rename one, e.g. \"VI_{}\"",
                    router.name,
                    i + 1
                ),
            );
        }
        let ipv4 = router.vips().first().is_none_or(|net| matches!(net, ipnet::IpNet::V4(_)));
        if !vrids.insert((router.interface.as_str(), router.vrid, ipv4)) {
            report(
                vec![Key("vrrp"), Index(i), Key("vrid")],
                format!(
                    "[{}] vrid {} is already used on {} by another [[vrrp]] of the same address family; each virtual router needs its own vrid",
                    router.name, router.vrid, router.interface
                ),
            );
        }
    }
}

fn validate_aliases(config: &Config, report: &mut impl FnMut(Vec<Step>, String)) {
    let mut seen = HashSet::new();
    let vips: Vec<(IpAddr, &str)> = config
        .vrrp
        .iter()
        .flat_map(|r| r.vips().into_iter().chain(r.excluded_vips()).map(move |net| (net.addr(), r.name.as_str())))
        .collect();
    for (i, alias) in config.alias.iter().enumerate() {
        let at = |key| vec![Key("alias"), Index(i), Key(key)];
        check_ifname(&alias.interface, at("interface"), report);
        match parse_net(&alias.address) {
            Err(message) => report(at("address"), message),
            Ok(net) => {
                // One address, one declaration: the same IP on two interfaces (or with two
                // prefix lengths) is a mistake, not two aliases.
                if !seen.insert(net.addr()) {
                    report(
                        at("address"),
                        format!(
                            "alias {} on {} is declared twice (address {}); remove one of the two [[alias]] tables",
                            alias.address,
                            alias.interface,
                            net.addr()
                        ),
                    );
                }
                if let Some((_, router)) = vips.iter().find(|(vip, _)| *vip == net.addr()) {
                    report(
                        at("address"),
                        format!(
                            "alias {} is a VIP of [[vrrp]] \"{router}\": VRRP adds and removes it; an address is either a VIP or an alias, remove one",
                            alias.address
                        ),
                    );
                }
                if let Some(label) = &alias.label {
                    if net.addr().is_ipv6() {
                        report(
                            at("label"),
                            "labels exist for IPv4 addresses only; remove label for an IPv6 alias".into(),
                        );
                    } else {
                        check_label(label, &alias.interface, at("label"), report);
                    }
                }
            }
        }
    }
}

/// Routing tables the kernel reserves: 253 default, 254 main, 255 local (and 0, unspecified).
const RESERVED_TABLES: [u32; 4] = [0, 253, 254, 255];

/// The longest drain: a planned stop must still end.
const MAX_DRAIN_MS: u64 = 600_000;

fn validate_anycast(config: &Config, report: &mut impl FnMut(Vec<Step>, String)) {
    let mut names = HashSet::new();
    let mut addresses = HashSet::new();
    for (i, anycast) in config.anycast.iter().enumerate() {
        validate_anycast_table(i, anycast, &mut addresses, report);
        if !names.insert(anycast.name.as_str()) {
            report(
                vec![Key("anycast"), Index(i), Key("name")],
                format!(
                    "name `{}` is used by another [[anycast]]; names must be unique: rename one, e.g. \"web{}\"",
                    anycast.name,
                    i + 1
                ),
            );
        }
    }
}

/// One `[[anycast]]` table; `seen` collects the addresses of all tables (each may appear once).
fn validate_anycast_table(
    i: usize,
    anycast: &AnycastConfig,
    seen: &mut HashSet<std::net::IpAddr>,
    report: &mut impl FnMut(Vec<Step>, String),
) {
    let at = |key| vec![Key("anycast"), Index(i), Key(key)];
    let name = &anycast.name;
    if name.is_empty() {
        report(at("name"), "name must not be empty; it names the table in status, e.g. \"web\"".into());
    }
    check_ifname(&anycast.interface, at("interface"), report);
    if anycast.addresses.is_empty() {
        report(at("addresses"), format!("[{name}] addresses is empty: list at least one, e.g. [\"198.19.10.1/32\"]"));
    }
    let mut family = None;
    for (a, text) in anycast.addresses.iter().enumerate() {
        let path = vec![Key("anycast"), Index(i), Key("addresses"), Index(a)];
        let net = match parse_net(text) {
            Ok(net) => net,
            Err(message) => {
                report(path, format!("[{name}] {message}"));
                continue;
            }
        };
        let is_v4 = net.addr().is_ipv4();
        if *family.get_or_insert(is_v4) != is_v4 {
            report(
                path.clone(),
                format!("[{name}] `{text}` mixes IPv4 and IPv6 in one [[anycast]]; put each family in its own table"),
            );
        }
        if net.addr().is_loopback() || net.addr().is_multicast() || net.addr().is_unspecified() {
            report(
                path.clone(),
                format!("[{name}] `{text}` cannot be announced; use a unicast address, e.g. \"198.19.10.1/32\""),
            );
        }
        if !seen.insert(net.addr()) {
            report(path, format!("[{name}] `{text}` is listed twice; each anycast address appears once"));
        }
    }
    if RESERVED_TABLES.contains(&anycast.table) {
        report(
            at("table"),
            format!(
                "[{name}] table = {} is reserved by the kernel (253 default, 254 main, 255 local); use a table of its own that BIRD or FRR reads, e.g. 110",
                anycast.table
            ),
        );
    }
    if anycast.drain_ms > MAX_DRAIN_MS {
        report(
            at("drain_ms"),
            format!("[{name}] drain_ms = {} must be at most {MAX_DRAIN_MS} (10 min)", anycast.drain_ms),
        );
    }
    if AnycastHold::parse(&anycast.hold).is_none() {
        report(
            at("hold"),
            format!(
                "[{name}] hold = \"{}\" is not one of \"address\" (the address on the interface) or \"local-route\" (a local route in table 255, needed with FRR)",
                anycast.hold
            ),
        );
    }
    if anycast.restart_grace_ms > MAX_DRAIN_MS {
        report(
            at("restart_grace_ms"),
            format!("[{name}] restart_grace_ms = {} must be at most {MAX_DRAIN_MS} (10 min)", anycast.restart_grace_ms),
        );
    }
}

/// The kernel only accepts IPv4 labels that start with the interface name (`eth0:1`).
pub fn check_label(label: &str, interface: &str, path: Vec<Step>, report: &mut impl FnMut(Vec<Step>, String)) {
    if !label.starts_with(interface) || label.len() > IFNAME_MAX {
        report(
            path,
            format!(
                "label `{label}` must start with the interface name and be at most {IFNAME_MAX} bytes, e.g. \"{interface}:1\""
            ),
        );
    }
}

fn check_ifname(name: &str, path: Vec<Step>, report: &mut impl FnMut(Vec<Step>, String)) {
    if let Err(error) = check_interface_name(name) {
        report(path, error.to_string());
    }
}

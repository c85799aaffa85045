//! The status document of `nginx-ha status --json`, and its table for people.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::nginx::supervisor::NginxStatus;
use crate::vrrp::shell::RouterReport;

/// The status document: serialized for `status --json` and the control socket, rendered for the
/// table and the metrics. One type for all three, so a field cannot mean different things.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusDocument {
    pub nginx: NginxStatus,
    #[serde(default)]
    pub vrrp: Vec<RouterReport>,
    #[serde(default)]
    pub aliases: Vec<AliasReport>,
    #[serde(default)]
    pub anycast: Vec<AnycastReport>,
    /// The daemon's version (after `nginx-ha upgrade`, the new binary's).
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub daemon: DaemonReport,
    /// The connection drain, when a router has one (`[[vrrp]] drain_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainReport>,
}

/// The connection drain of this node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReport {
    /// Why drains are off on this node (no BPF program, no privileges), if they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// The drains under way.
    #[serde(default)]
    pub drains: Vec<DrainEntry>,
    /// Packets of old holders' connections this node passed through (the BPF program's count).
    #[serde(default)]
    pub forwarded_packets: u64,
    /// Connections passed through to an old holder, over all drains.
    #[serde(default)]
    pub forwarded_connections: u64,
    /// ARP requests for a draining VIP this node did not answer (it is the old holder).
    #[serde(default)]
    pub arp_requests_dropped: u64,
    /// New connections' SYNs to a draining VIP this old holder dropped: the client sends them
    /// again after its retransmission timeout, to the new holder.
    #[serde(default)]
    pub syns_deferred: u64,
    /// Datagrams on the drain port that no drain expected (or that did not decode).
    #[serde(default)]
    pub datagrams_dropped: u64,
}

/// One drain under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainEntry {
    pub router: String,
    /// `old holder` (its connections drain through the peer) or `new holder` (it passes the
    /// peer's connections through).
    pub role: String,
    pub peer: std::net::IpAddr,
    /// Connections draining.
    pub connections: usize,
    /// Until the window (`drain_ms`) is over.
    pub remaining_ms: u64,
}

/// The daemon process itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonReport {
    pub pid: u32,
    /// When this binary started (Unix time in ms); an `upgrade` keeps the pid, not this.
    pub started_at_ms: u64,
    /// In-place upgrades (re-executions) since the process started.
    pub upgrades: u32,
}

/// One static alias (`[[alias]]` or `nginx-ha alias add`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasReport {
    pub address: String,
    pub interface: String,
    pub label: Option<String>,
    /// Whether the address is on its interface now.
    pub present: bool,
    /// `config` (an `[[alias]]` table) or `cli` (`nginx-ha alias add`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Why it is not (or not yet) present: a conflict, a missing interface, a failed add.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// One `[[anycast]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnycastReport {
    pub name: String,
    pub addresses: Vec<String>,
    /// Whether the routes are in the announce table now (nginx healthy).
    pub announced: bool,
}

/// An advert's age for people: tenths of seconds, then whole ones, minutes, hours.
fn age(ms: u64) -> String {
    match ms {
        0..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// Renders the document for a terminal.
pub fn render_table(view: &StatusDocument) -> String {
    let mut out = String::new();
    let n = &view.nginx;
    let health = if n.healthy { "healthy" } else { "UNHEALTHY" };
    let master = n.master_pid.map_or("-".to_string(), |p| p.to_string());
    let workers = if n.worker_pids.is_empty() {
        "-".to_string()
    } else {
        n.worker_pids.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
    };
    let _ =
        writeln!(out, "nginx    {}, {health}   master {master}   workers {workers}   restarts {}", n.state, n.restarts);
    if let Some(error) = &n.config_error {
        let _ = writeln!(out, "config   REJECTED: {}", error.replace('\n', "\n         "));
    }
    if let Some(error) = &n.last_probe_error {
        let _ = writeln!(out, "probe    {error}");
    }
    if let Some(exit) = &n.last_exit {
        let _ = writeln!(out, "last     {exit}");
    }
    if !view.vrrp.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<16} {:<8} {:>8} {:>9}  {:<16} {:>4} {:>8} {:>7}  {:<28} VIPS",
            "VRRP", "STATE", "PRIORITY", "EFFECTIVE", "MASTER SEEN", "PRIO", "AGE", "CHANGES", "PEER HEARD"
        );
        for r in &view.vrrp {
            // The master as heard on the wire; older daemons only report the one they follow.
            let (master, priority, master_age) = match (&r.master, r.master_address) {
                (Some(m), _) => (m.address.to_string(), m.priority.to_string(), age(m.advert_age_ms)),
                (None, Some(address)) => (address.to_string(), "-".to_string(), "-".to_string()),
                (None, None) => ("-".to_string(), "-".to_string(), "-".to_string()),
            };
            let peer = r
                .peer
                .as_ref()
                .map_or("-".to_string(), |p| format!("{} p{} {} ago", p.address, p.priority, age(p.advert_age_ms)));
            let _ = writeln!(
                out,
                "{:<16} {:<8} {:>8} {:>9}  {master:<16} {priority:>4} {master_age:>8} {:>7}  {peer:<28} {}",
                r.name,
                r.state,
                r.priority,
                r.effective_priority,
                r.counters.master_changes,
                r.vips.join(" ")
            );
        }
    }
    if !view.aliases.is_empty() {
        let _ = writeln!(out, "\n{:<24} {:<12} {:<12} PRESENT", "ALIAS", "INTERFACE", "LABEL");
        for a in &view.aliases {
            let present = if a.present { "yes" } else { "NO" };
            let _ = writeln!(
                out,
                "{:<24} {:<12} {:<12} {present}",
                a.address,
                a.interface,
                a.label.as_deref().unwrap_or("-")
            );
        }
    }
    if let Some(drain) = &view.drain {
        if let Some(why) = &drain.unavailable {
            let _ = writeln!(out, "\ndrain    OFF: {why}");
        }
        for d in &drain.drains {
            let _ = writeln!(
                out,
                "\ndrain    {} {} with {}: {} connections, {} s left",
                d.router,
                d.role,
                d.peer,
                d.connections,
                d.remaining_ms / 1000
            );
        }
    }
    if !view.anycast.is_empty() {
        let _ = writeln!(out, "\n{:<16} {:<10} ADDRESSES", "ANYCAST", "ANNOUNCED");
        for a in &view.anycast {
            let announced = if a.announced { "yes" } else { "NO" };
            let _ = writeln!(out, "{:<16} {announced:<10} {}", a.name, a.addresses.join(" "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_the_contract_example() {
        let document = serde_json::json!({
          "nginx": {"state": "running", "healthy": true, "master_pid": 4242, "worker_pids": [4243, 4244],
                    "restarts": 0, "config_error": null},
          "vrrp": [{"name": "VI_1", "state": "MASTER", "priority": 100, "effective_priority": 100,
                    "vips": ["198.18.0.100/24"]}],
          "aliases": [{"address": "198.18.0.107/24", "interface": "eth0", "label": "eth0:1", "present": true}]
        });
        let table = render_table(&serde_json::from_value(document).unwrap());
        assert!(table.contains("nginx    running, healthy   master 4242   workers 4243,4244   restarts 0"), "{table}");
        assert!(
            table.contains(
                "VI_1             MASTER        100       100  -                   -        -       0  -                            198.18.0.100/24"
            ),
            "{table}"
        );
        assert!(table.contains("198.18.0.107/24          eth0         eth0:1       yes"), "{table}");
    }

    #[test]
    fn table_and_json_show_the_pair_as_heard_on_the_wire() {
        let document = serde_json::json!({
          "nginx": {"state": "running", "healthy": true, "master_pid": 1, "worker_pids": [], "restarts": 0},
          "vrrp": [{"name": "VI_2", "state": "BACKUP", "priority": 100, "effective_priority": 100,
                    "vips": ["198.18.0.101/24"], "master_address": "198.18.0.2",
                    "counters": {"master_changes": 3},
                    "master": {"address": "198.18.0.2", "priority": 150, "advert_interval_ms": 1000,
                               "advert_age_ms": 310},
                    "peer": {"address": "198.18.0.2", "priority": 150, "advert_interval_ms": 1000,
                             "advert_age_ms": 310}}]
        });
        let parsed: StatusDocument = serde_json::from_value(document.clone()).unwrap();
        let table = render_table(&parsed);
        assert!(
            table.contains(
                "VI_2             BACKUP        100       100  198.18.0.2        150     0.3s       3  198.18.0.2 p150 0.3s ago     198.18.0.101/24"
            ),
            "{table}"
        );
        // Serialized back, the new fields keep their names.
        let json = serde_json::to_value(&parsed).unwrap();
        assert_eq!(json["vrrp"][0]["master"], document["vrrp"][0]["master"]);
        assert_eq!(json["vrrp"][0]["counters"]["master_changes"], 3);
        assert_eq!((age(61_000), age(7_320_000)), ("1m01s".to_string(), "2h02m".to_string()));
    }

    #[test]
    fn table_shows_a_rejected_config() {
        let document = serde_json::json!({
          "nginx": {"state": "running", "healthy": true, "master_pid": 1, "worker_pids": [],
                    "restarts": 2, "config_error": "nginx: [emerg] unknown directive \"lisen\""},
          "vrrp": [], "aliases": []
        });
        assert!(
            render_table(&serde_json::from_value(document).unwrap())
                .contains("config   REJECTED: nginx: [emerg] unknown directive")
        );
    }
}

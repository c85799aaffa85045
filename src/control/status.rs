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
            "\n{:<16} {:<8} {:>8} {:>9}  {:<16} VIPS",
            "VRRP", "STATE", "PRIORITY", "EFFECTIVE", "MASTER SEEN"
        );
        for r in &view.vrrp {
            let _ = writeln!(
                out,
                "{:<16} {:<8} {:>8} {:>9}  {:<16} {}",
                r.name,
                r.state,
                r.priority,
                r.effective_priority,
                r.master_address.map_or("-".to_string(), |a| a.to_string()),
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
            table.contains("VI_1             MASTER        100       100  -                198.18.0.100/24"),
            "{table}"
        );
        assert!(table.contains("198.18.0.107/24          eth0         eth0:1       yes"), "{table}");
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

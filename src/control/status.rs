//! The status document of `nginx-ha status --json`, and its table for people.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::nginx::supervisor::NginxStatus;

#[derive(Debug, Clone, Serialize)]
pub struct StatusDocument {
    pub nginx: NginxStatus,
    pub vrrp: Vec<serde_json::Value>,
    pub aliases: Vec<serde_json::Value>,
}

/// The fields the table shows, read back from JSON (the CLI only has the document).
#[derive(Debug, Deserialize)]
struct View {
    nginx: NginxView,
    #[serde(default)]
    vrrp: Vec<RouterView>,
    #[serde(default)]
    aliases: Vec<AliasView>,
}

#[derive(Debug, Deserialize)]
struct NginxView {
    state: String,
    healthy: bool,
    master_pid: Option<i64>,
    #[serde(default)]
    worker_pids: Vec<i64>,
    restarts: u64,
    config_error: Option<String>,
    #[serde(default)]
    last_exit: Option<String>,
    #[serde(default)]
    last_probe_error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RouterView {
    name: String,
    state: String,
    priority: u64,
    effective_priority: u64,
    #[serde(default)]
    vips: Vec<String>,
    #[serde(default)]
    master_address: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AliasView {
    address: String,
    interface: String,
    label: Option<String>,
    present: bool,
}

/// Renders the document for a terminal.
pub fn render_table(document: &serde_json::Value) -> Result<String, serde_json::Error> {
    let view: View = serde_json::from_value(document.clone())?;
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
                r.master_address.as_deref().unwrap_or("-"),
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
    Ok(out)
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
        let table = render_table(&document).unwrap();
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
        assert!(render_table(&document).unwrap().contains("config   REJECTED: nginx: [emerg] unknown directive"));
    }
}

//! `[daemon] metrics_listen`: the status document as Prometheus text, over plain HTTP.
//! It asks the daemon loop for the status like the CLI does, so it holds no state of its own.

use std::fmt::Write as _;
use std::net::SocketAddr;

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::warn;

use super::Request;
use super::server::Incoming;
use super::status::StatusDocument;
use crate::nginx::policy::NginxState;
use crate::vrrp::router::State;
use crate::vrrp::shell::{AdvertReport, RouterReport};

#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {address}: {source}; change or remove [daemon] metrics_listen")]
pub struct MetricsError {
    address: SocketAddr,
    source: std::io::Error,
}

/// Connections served at once; a scraper needs one.
const MAX_CONNECTIONS: usize = 16;

/// Binds `address`; the returned future serves the metrics and never ends on its own (the
/// caller owns it).
pub async fn bind(
    address: SocketAddr,
    requests: mpsc::Sender<Incoming>,
) -> Result<impl Future<Output = ()> + Send + 'static, MetricsError> {
    let listener = TcpListener::bind(address).await.map_err(|source| MetricsError { address, source })?;
    Ok(serve(listener, requests))
}

async fn serve(listener: TcpListener, requests: mpsc::Sender<Incoming>) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_CONNECTIONS {
            connections.join_next().await;
            continue;
        }
        let Ok((stream, _)) = listener.accept().await else { continue };
        connections.spawn(answer(stream, requests.clone()));
    }
}

async fn answer(mut stream: TcpStream, requests: mpsc::Sender<Incoming>) {
    // The request itself does not matter: every path serves the metrics.
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
    let (reply_tx, reply_rx) = oneshot::channel();
    let body = match requests.send((Request::Status, reply_tx)).await {
        Ok(()) => reply_rx.await.ok().and_then(|r| r.status).map(|doc| render(&doc)),
        Err(_) => None,
    };
    let response = match body {
        Some(body) => format!(
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        None => "HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".to_string(),
    };
    let write = tokio::time::timeout(Duration::from_secs(5), stream.write_all(response.as_bytes()));
    if let Ok(Err(e)) = write.await {
        warn!("metrics: {e}");
    }
}

/// The status document in the Prometheus text exposition format.
pub fn render(document: &StatusDocument) -> String {
    let mut out = String::new();
    let nginx = &document.nginx;
    let flag = |yes: bool| u64::from(yes);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP nginx_ha_{name} {help}\n# TYPE nginx_ha_{name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "nginx_ha_{name}{labels} {value}");
        }
    };
    metric("nginx_healthy", "gauge", "1 while nginx is healthy.", &[(String::new(), flag(nginx.healthy))]);
    let states: Vec<(String, u64)> =
        NginxState::ALL.iter().map(|s| (format!("{{state=\"{s}\"}}"), flag(nginx.state == *s))).collect();
    metric("nginx_state", "gauge", "1 for the supervisor's current state of nginx.", &states);
    metric("nginx_restarts_total", "counter", "Restarts of nginx after a crash.", &[(String::new(), nginx.restarts)]);
    metric(
        "nginx_worker_exits_total",
        "counter",
        "Workers that died and were respawned by the master.",
        &[(String::new(), nginx.worker_exits)],
    );
    let workers = nginx.worker_pids.len() as u64;
    metric("nginx_workers", "gauge", "nginx worker processes serving.", &[(String::new(), workers)]);
    let rejected = flag(nginx.config_error.is_some());
    metric("config_rejected", "gauge", "1 while the last config change was rejected.", &[(String::new(), rejected)]);

    let routers = &document.vrrp;
    let label = |router: &RouterReport| format!("router=\"{}\"", router.name);
    let per_state: Vec<(String, u64)> = routers
        .iter()
        .flat_map(|r| State::ALL.iter().map(move |s| (format!("{{{},state=\"{s}\"}}", label(r)), flag(r.state == *s))))
        .collect();
    metric("vrrp_state", "gauge", "1 for each virtual router's current state.", &per_state);
    type Field = fn(&RouterReport) -> u8;
    let priorities: [(&str, &str, Field); 2] = [
        ("priority", "Configured priority.", |r| r.priority),
        ("effective_priority", "Priority advertised now.", |r| r.effective_priority),
    ];
    for (key, help, value) in priorities {
        let samples: Vec<(String, u64)> =
            routers.iter().map(|r| (format!("{{{}}}", label(r)), u64::from(value(r)))).collect();
        metric(&format!("vrrp_{key}"), "gauge", help, &samples);
    }
    // The counters' names come from their serialization, so a new counter is a new metric.
    let counters: Vec<serde_json::Map<String, serde_json::Value>> = routers
        .iter()
        .map(|r| match serde_json::to_value(r.counters) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        })
        .collect();
    let names: Vec<String> = counters.first().map(|c| c.keys().cloned().collect()).unwrap_or_default();
    for name in names {
        let samples: Vec<(String, u64)> = routers
            .iter()
            .zip(&counters)
            .map(|(r, c)| (format!("{{{}}}", label(r)), c.get(&name).and_then(|v| v.as_u64()).unwrap_or(0)))
            .collect();
        metric(&format!("vrrp_{name}_total"), "counter", &format!("VRRP {}.", name.replace('_', " ")), &samples);
    }
    let aliases: Vec<(String, u64)> = document
        .aliases
        .iter()
        .map(|a| (format!("{{address=\"{}\",interface=\"{}\"}}", a.address, a.interface), flag(a.present)))
        .collect();
    metric("alias_present", "gauge", "1 while the static alias is on its interface.", &aliases);
    let anycast: Vec<(String, u64)> =
        document.anycast.iter().map(|a| (format!("{{name=\"{}\"}}", a.name), flag(a.announced))).collect();
    metric("anycast_announced", "gauge", "1 while the anycast routes are in the announce table.", &anycast);
    out.push_str(&render_wire(routers));
    out
}

/// The pair as each router hears it on the wire: the master and the last peer heard, their
/// priorities and the age of their last advert (a router that heard nothing has no sample).
fn render_wire(routers: &[RouterReport]) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP nginx_ha_vrrp_{name} {help}\n# TYPE nginx_ha_vrrp_{name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(out, "nginx_ha_vrrp_{name}{{{labels}}} {value}");
        }
    };
    fn seconds(ms: u64) -> f64 {
        ms as f64 / 1000.0
    }
    let interval = |r: &RouterReport| r.master.map_or(r.master_advert_interval_ms, |m| m.advert_interval_ms);
    for (who, pick) in [("master", (|r| r.master) as fn(&RouterReport) -> _), ("peer", |r| r.peer)] {
        let heard: Vec<(&RouterReport, AdvertReport)> = routers.iter().filter_map(|r| Some((r, pick(r)?))).collect();
        let by_router = |value: fn(&AdvertReport) -> f64| -> Vec<(String, f64)> {
            heard.iter().map(|(r, a)| (format!("router=\"{}\"", r.name), value(a))).collect()
        };
        let (info_help, priority_help, age_help) = match who {
            "master" => (
                "The master of the router as this node hears it on the wire (this node while MASTER); value 1.",
                "The priority the master advertises.",
                "Since the master's last advert (this node's own while MASTER).",
            ),
            _ => (
                "The last other router heard on the wire, in any state; value 1.",
                "The priority in the last advert heard from another router.",
                "Since the last advert heard from another router (a silent peer is BACKUP, or gone).",
            ),
        };
        let info = heard.iter().map(|(r, a)| (format!("router=\"{}\",address=\"{}\"", r.name, a.address), 1.0));
        metric(&format!("{who}_info"), info_help, info.collect());
        metric(&format!("{who}_priority"), priority_help, by_router(|a| f64::from(a.priority)));
        metric(&format!("{who}_advert_age_seconds"), age_help, by_router(|a| seconds(a.advert_age_ms)));
    }
    let intervals = routers.iter().map(|r| (format!("router=\"{}\"", r.name), seconds(interval(r)))).collect();
    metric("master_advert_interval_seconds", "The interval the master advertises with.", intervals);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_nginx_and_vrrp() {
        let document = serde_json::json!({
          "nginx": {"state": "running", "healthy": true, "master_pid": 1, "worker_pids": [2, 3],
                    "restarts": 4, "worker_exits": 1, "config_error": null},
          "vrrp": [{"name": "VI_1", "state": "MASTER", "priority": 100, "effective_priority": 80,
                    "counters": {"adverts_sent": 7, "checksum_errors": 0}}],
          "aliases": []
        });
        let text = render(&serde_json::from_value(document).unwrap());
        for line in [
            "nginx_ha_nginx_healthy 1",
            "nginx_ha_nginx_state{state=\"running\"} 1",
            "nginx_ha_nginx_state{state=\"failed\"} 0",
            "nginx_ha_nginx_restarts_total 4",
            "nginx_ha_nginx_workers 2",
            "nginx_ha_config_rejected 0",
            "nginx_ha_vrrp_state{router=\"VI_1\",state=\"MASTER\"} 1",
            "nginx_ha_vrrp_state{router=\"VI_1\",state=\"BACKUP\"} 0",
            "nginx_ha_vrrp_effective_priority{router=\"VI_1\"} 80",
            "nginx_ha_vrrp_adverts_sent_total{router=\"VI_1\"} 7",
            "# TYPE nginx_ha_vrrp_checksum_errors_total counter",
            "nginx_ha_vrrp_master_advert_interval_seconds{router=\"VI_1\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("nginx_ha_vrrp_master_info{"), "nothing heard, no master: {text}");
    }

    #[test]
    fn renders_the_pair_as_heard_on_the_wire() {
        let document = serde_json::json!({
          "nginx": {"state": "running", "healthy": true, "master_pid": 1, "worker_pids": [], "restarts": 0},
          "vrrp": [{"name": "VI_2", "state": "BACKUP", "priority": 100, "effective_priority": 100,
                    "master_advert_interval_ms": 1000, "counters": {"master_changes": 2},
                    "master": {"address": "198.18.0.2", "priority": 150, "advert_interval_ms": 1000,
                               "advert_age_ms": 310},
                    "peer": {"address": "198.18.0.3", "priority": 0, "advert_interval_ms": 1000,
                             "advert_age_ms": 2500}}]
        });
        let text = render(&serde_json::from_value(document).unwrap());
        for line in [
            "nginx_ha_vrrp_master_info{router=\"VI_2\",address=\"198.18.0.2\"} 1",
            "nginx_ha_vrrp_master_priority{router=\"VI_2\"} 150",
            "nginx_ha_vrrp_master_advert_age_seconds{router=\"VI_2\"} 0.31",
            "nginx_ha_vrrp_master_advert_interval_seconds{router=\"VI_2\"} 1",
            "nginx_ha_vrrp_peer_info{router=\"VI_2\",address=\"198.18.0.3\"} 1",
            "nginx_ha_vrrp_peer_priority{router=\"VI_2\"} 0",
            "nginx_ha_vrrp_peer_advert_age_seconds{router=\"VI_2\"} 2.5",
            "nginx_ha_vrrp_master_changes_total{router=\"VI_2\"} 2",
            "# TYPE nginx_ha_vrrp_master_advert_age_seconds gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}

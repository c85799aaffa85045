//! What the metrics say: the status document, nginx's counters and the processes, as families
//! of an [`Exposition`]. Names follow Prometheus' naming guide (base units in the name,
//! `_total` on counters, added by the encoder); nginx's counters use nginx-prometheus-exporter's
//! names so that its dashboards work unchanged.

use super::encode::{BaseUnit, Exposition, Kind, Value};
use super::nginx::NginxReading;
use crate::control::status::{DrainReport, StatusDocument};
use crate::nginx::policy::NginxState;
use crate::nginx::process::{self, ProcessFigures};
use crate::nginx::supervisor::NginxStatus;
use crate::vrrp::router::State;
use crate::vrrp::shell::{AdvertReport, RouterReport};

/// The status document's metrics (the `nginx_ha_*` families).
pub fn render(document: &StatusDocument) -> Exposition {
    let mut out = Exposition::default();
    let nginx = &document.nginx;
    out.family("nginx_ha_build_info", "The running nginx-ha's version (value 1)", Kind::Gauge, None)
        .sample(vec![("version", document.version.clone())], 1u64);
    out.counter(
        "nginx_ha_upgrades",
        "In-place upgrades of the daemon since its process started",
        document.daemon.upgrades,
    );
    out.gauge("nginx_ha_nginx_healthy", "1 while nginx is healthy", nginx.healthy);
    let mut states =
        out.family("nginx_ha_nginx_state", "1 for the supervisor's current state of nginx", Kind::Gauge, None);
    for state in NginxState::ALL {
        states.sample(vec![("state", state.to_string())], nginx.state == state);
    }
    out.counter("nginx_ha_nginx_restarts", "Restarts of nginx after a crash", nginx.restarts);
    out.counter(
        "nginx_ha_nginx_worker_exits",
        "Workers that died and were respawned by the master",
        nginx.worker_exits,
    );
    out.gauge("nginx_ha_nginx_workers", "nginx worker processes serving", nginx.worker_pids.len());
    out.gauge("nginx_ha_config_rejected", "1 while the last config change was rejected", nginx.config_error.is_some());

    let routers = &document.vrrp;
    let router = |r: &RouterReport| vec![("router", r.name.clone())];
    let mut per_state =
        out.family("nginx_ha_vrrp_state", "1 for each virtual router's current state", Kind::Gauge, None);
    for r in routers {
        for state in State::ALL {
            per_state.sample(vec![("router", r.name.clone()), ("state", state.to_string())], r.state == state);
        }
    }
    let mut priority = out.family("nginx_ha_vrrp_priority", "Configured priority", Kind::Gauge, None);
    for r in routers {
        priority.sample(router(r), r.priority);
    }
    let mut effective = out.family("nginx_ha_vrrp_effective_priority", "Priority advertised now", Kind::Gauge, None);
    for r in routers {
        effective.sample(router(r), r.effective_priority);
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
        let help = format!("VRRP {}", name.replace('_', " "));
        let mut family = out.family(&format!("nginx_ha_vrrp_{name}"), &help, Kind::Counter, None);
        for (r, c) in routers.iter().zip(&counters) {
            family.sample(router(r), c.get(&name).and_then(|v| v.as_u64()).unwrap_or(0));
        }
    }
    let mut aliases =
        out.family("nginx_ha_alias_present", "1 while the static alias is on its interface", Kind::Gauge, None);
    for a in &document.aliases {
        aliases.sample(vec![("address", a.address.clone()), ("interface", a.interface.clone())], a.present);
    }
    let help = "1 while the anycast routes are in the announce table";
    let mut anycast = out.family("nginx_ha_anycast_announced", help, Kind::Gauge, None);
    for a in &document.anycast {
        anycast.sample(vec![("name", a.name.clone())], a.announced);
    }
    wire(&mut out, routers);
    if let Some(drain) = &document.drain {
        drain_metrics(&mut out, drain);
    }
    out
}

/// The connection drain (present when a router has `drain_ms`).
fn drain_metrics(out: &mut Exposition, drain: &DrainReport) {
    out.gauge("nginx_ha_drain_available", "1 while connection drains work on this node", drain.unavailable.is_none());
    let help = "Connections draining now, by router and role (old_holder: through the peer; new_holder: for it)";
    let mut connections = out.family("nginx_ha_drain_connections", help, Kind::Gauge, None);
    for d in &drain.drains {
        connections.sample(vec![("router", d.router.clone()), ("role", d.role.replace(' ', "_"))], d.connections);
    }
    out.counter(
        "nginx_ha_drain_forwarded_packets",
        "Packets of old holders' connections passed through by this node",
        drain.forwarded_packets,
    );
    out.counter(
        "nginx_ha_drain_forwarded_connections",
        "Connections of old holders passed through by this node",
        drain.forwarded_connections,
    );
    out.counter(
        "nginx_ha_drain_arp_requests_dropped",
        "ARP requests for a draining VIP left unanswered by this old holder",
        drain.arp_requests_dropped,
    );
    out.counter(
        "nginx_ha_drain_syns_deferred",
        "New connections' SYNs to a draining VIP dropped by this old holder (the client retries to the new holder)",
        drain.syns_deferred,
    );
    out.counter(
        "nginx_ha_drain_datagrams_dropped",
        "Datagrams on the drain port that no drain expected",
        drain.datagrams_dropped,
    );
}

/// The pair as each router hears it on the wire: the master and the last other router heard,
/// their priorities and the age of their last advert (nothing heard: no sample).
fn wire(out: &mut Exposition, routers: &[RouterReport]) {
    fn seconds(ms: u64) -> f64 {
        ms as f64 / 1000.0
    }
    type Pick = fn(&RouterReport) -> Option<AdvertReport>;
    let seen: [(&str, Pick, [&str; 3]); 2] = [
        (
            "master",
            |r| r.master,
            [
                "The master of the router as this node hears it on the wire (this node while MASTER), by address (value 1)",
                "The priority the master advertises",
                "Since the master's last advert (this node's own while MASTER)",
            ],
        ),
        (
            "peer",
            |r| r.peer,
            [
                "The last other router heard on the wire, in any state, by address (value 1)",
                "The priority in the last advert heard from another router",
                "Since the last advert heard from another router (a silent peer is BACKUP, or gone)",
            ],
        ),
    ];
    for (who, pick, [info_help, priority_help, age_help]) in seen {
        let heard: Vec<(&RouterReport, AdvertReport)> = routers.iter().filter_map(|r| Some((r, pick(r)?))).collect();
        let mut info = out.family(&format!("nginx_ha_vrrp_{who}_info"), info_help, Kind::Gauge, None);
        for (r, advert) in &heard {
            info.sample(vec![("router", r.name.clone()), ("address", advert.address.to_string())], 1u64);
        }
        let mut priority = out.family(&format!("nginx_ha_vrrp_{who}_priority"), priority_help, Kind::Gauge, None);
        for (r, advert) in &heard {
            priority.sample(vec![("router", r.name.clone())], advert.priority);
        }
        let name = format!("nginx_ha_vrrp_{who}_advert_age");
        let mut age = out.family(&name, age_help, Kind::Gauge, Some(BaseUnit::Seconds));
        for (r, advert) in &heard {
            age.sample(vec![("router", r.name.clone())], seconds(advert.advert_age_ms));
        }
    }
    let help = "The interval the master advertises with";
    let mut interval = out.family("nginx_ha_vrrp_master_advert_interval", help, Kind::Gauge, Some(BaseUnit::Seconds));
    for r in routers {
        let ms = r.master.map_or(r.master_advert_interval_ms, |m| m.advert_interval_ms);
        interval.sample(vec![("router", r.name.clone())], seconds(ms));
    }
}

/// nginx's own counters, under nginx-prometheus-exporter's names; see `stub_status` for what
/// is subtracted. Without a stub_status page nothing is served, not even `nginx_up`.
pub fn nginx_counters(out: &mut Exposition, reading: &NginxReading) {
    let counters = match reading {
        NginxReading::Off => return,
        NginxReading::Down => {
            out.gauge("nginx_up", "Status of the last read of nginx's stub_status (1 read, 0 not)", 0u64);
            return;
        }
        NginxReading::Up(counters) => counters,
    };
    out.gauge("nginx_up", "Status of the last read of nginx's stub_status (1 read, 0 not)", 1u64);
    let gauges = [
        ("active", "Active client connections", counters.active),
        ("reading", "Connections where NGINX is reading the request header", counters.reading),
        ("writing", "Connections where NGINX is writing the response back to the client", counters.writing),
        ("waiting", "Idle client connections", counters.waiting),
    ];
    for (name, help, value) in gauges {
        out.gauge(&format!("nginx_connections_{name}"), help, value);
    }
    out.counter("nginx_connections_accepted", "Accepted client connections", counters.accepted);
    out.counter("nginx_connections_handled", "Handled client connections", counters.handled);
    out.counter("nginx_http_requests", "Total http requests", counters.requests);
}

/// What nginx's processes are to the supervisor; the `role` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Master,
    /// Serving workers of the current config.
    Worker,
    /// Workers of an earlier config (before a reload or a binary upgrade) finishing requests.
    DrainingWorker,
    /// The cache manager and loader, and any other child of the master.
    Helper,
    /// During a live binary upgrade: the master being replaced, and the one replacing it.
    OldMaster,
    NewMaster,
}

impl Role {
    const ALL: [Role; 6] =
        [Role::Master, Role::Worker, Role::DrainingWorker, Role::Helper, Role::OldMaster, Role::NewMaster];

    fn label(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Worker => "worker",
            Role::DrainingWorker => "draining_worker",
            Role::Helper => "helper",
            Role::OldMaster => "old_master",
            Role::NewMaster => "new_master",
        }
    }
}

/// nginx's processes and nginx-ha's own, read from /proc at a scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessSnapshot {
    pub nginx: Vec<(Role, ProcessFigures)>,
    pub own: Option<ProcessFigures>,
}

impl ProcessSnapshot {
    /// The processes the supervisor knows of (and the master's other children: helpers).
    pub fn read(status: &NginxStatus) -> ProcessSnapshot {
        let mut pids: Vec<(Role, i32)> = Vec::new();
        if let Some(master) = status.master_pid {
            pids.push((Role::Master, master));
            let known = |pid: &i32| status.worker_pids.contains(pid) || status.draining_pids.contains(pid);
            let helpers = process::children_of(master).into_iter().filter(|pid| !known(pid));
            pids.extend(helpers.filter(|pid| Some(*pid) != status.new_master_pid).map(|pid| (Role::Helper, pid)));
        }
        pids.extend(status.worker_pids.iter().map(|pid| (Role::Worker, *pid)));
        pids.extend(status.draining_pids.iter().map(|pid| (Role::DrainingWorker, *pid)));
        pids.extend(status.old_master_pid.map(|pid| (Role::OldMaster, pid)));
        pids.extend(status.new_master_pid.map(|pid| (Role::NewMaster, pid)));
        let nginx = pids.into_iter().filter_map(|(role, pid)| Some((role, process::figures(pid)?))).collect();
        ProcessSnapshot { nginx, own: process::figures(std::process::id() as i32) }
    }
}

/// nginx's processes summed by role, and nginx-ha's own under the standard `process_*` names.
pub fn processes(out: &mut Exposition, snapshot: &ProcessSnapshot) {
    let help = "nginx processes by role (master, worker, draining_worker of an earlier config, helper, old_master and new_master during a binary upgrade)";
    let mut count = out.family("nginx_ha_nginx_processes", help, Kind::Gauge, None);
    for role in Role::ALL {
        count.sample(vec![("role", role.label().into())], snapshot.nginx.iter().filter(|(r, _)| *r == role).count());
    }
    type Field = fn(&ProcessFigures) -> f64;
    let sums: [(&str, &str, Kind, BaseUnit, Field); 2] = [
        (
            "nginx_ha_nginx_resident_memory",
            "Resident memory of nginx's processes, summed by role",
            Kind::Gauge,
            BaseUnit::Bytes,
            |f| f.resident_bytes as f64,
        ),
        (
            "nginx_ha_nginx_cpu",
            "User and system CPU time of nginx's processes, summed by role (drops when workers are replaced)",
            Kind::Counter,
            BaseUnit::Seconds,
            |f| f.cpu_seconds,
        ),
    ];
    for (name, help, kind, unit, field) in sums {
        let mut family = out.family(name, help, kind, Some(unit));
        for role in Role::ALL.into_iter().filter(|role| snapshot.nginx.iter().any(|(r, _)| r == role)) {
            let sum: f64 = snapshot.nginx.iter().filter(|(r, _)| *r == role).map(|(_, f)| field(f)).sum();
            let value = if unit == BaseUnit::Bytes { Value::Count(sum as u64) } else { Value::Float(sum) };
            family.sample(vec![("role", role.label().into())], value);
        }
    }
    let mut fds = out.family(
        "nginx_ha_nginx_open_fds",
        "Open file descriptors of nginx's processes, summed by role",
        Kind::Gauge,
        None,
    );
    for role in Role::ALL.into_iter().filter(|role| snapshot.nginx.iter().any(|(r, _)| r == role)) {
        fds.sample(
            vec![("role", role.label().into())],
            snapshot.nginx.iter().filter(|(r, _)| *r == role).map(|(_, f)| f.open_fds).sum::<u64>(),
        );
    }

    let Some(own) = snapshot.own else { return };
    out.family(
        "process_cpu",
        "Total user and system CPU time spent in seconds",
        Kind::Counter,
        Some(BaseUnit::Seconds),
    )
    .sample(Vec::new(), own.cpu_seconds);
    out.family("process_resident_memory", "Resident memory size in bytes", Kind::Gauge, Some(BaseUnit::Bytes))
        .sample(Vec::new(), own.resident_bytes);
    out.family("process_virtual_memory", "Virtual memory size in bytes", Kind::Gauge, Some(BaseUnit::Bytes))
        .sample(Vec::new(), own.virtual_bytes);
    out.gauge("process_open_fds", "Number of open file descriptors", own.open_fds);
    if let Some(max) = own.max_fds {
        out.gauge("process_max_fds", "Maximum number of open file descriptors", max);
    }
    out.gauge("process_threads", "Number of OS threads in the process", own.threads);
    out.family(
        "process_start_time",
        "Start time of the process since unix epoch in seconds",
        Kind::Gauge,
        Some(BaseUnit::Seconds),
    )
    .sample(Vec::new(), own.start_time_seconds);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::metrics::Format;
    use crate::nginx::stub_status::SiteCounters;

    fn document() -> StatusDocument {
        let document = serde_json::json!({
          "nginx": {"state": "running", "healthy": true, "master_pid": 1, "worker_pids": [2, 3],
                    "restarts": 4, "worker_exits": 1, "config_error": null},
          "vrrp": [{"name": "VI_1", "state": "MASTER", "priority": 100, "effective_priority": 80,
                    "counters": {"adverts_sent": 7, "checksum_errors": 0}}],
          "aliases": [],
          "version": "0.1.0"
        });
        serde_json::from_value(document).unwrap()
    }

    fn has_lines(text: &str, lines: &[&str]) {
        for line in lines {
            assert!(text.lines().any(|l| l == *line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn renders_the_drain() {
        let mut document = document();
        let text = render(&document).encode(Format::Text);
        assert!(!text.contains("nginx_ha_drain"), "no drain metrics without drains configured:\n{text}");
        document.drain = Some(DrainReport {
            drains: vec![crate::control::status::DrainEntry {
                router: "VI_1".into(),
                role: "old holder".into(),
                peer: "198.18.0.2".parse().unwrap(),
                connections: 3,
                remaining_ms: 1000,
            }],
            forwarded_packets: 12,
            ..DrainReport::default()
        });
        has_lines(
            &render(&document).encode(Format::Text),
            &[
                "nginx_ha_drain_available 1",
                "nginx_ha_drain_connections{router=\"VI_1\",role=\"old_holder\"} 3",
                "nginx_ha_drain_forwarded_packets_total 12",
            ],
        );
    }

    #[test]
    fn renders_nginx_and_vrrp_under_the_old_names() {
        for format in [Format::Text, Format::OpenMetrics] {
            let text = render(&document()).encode(format);
            has_lines(
                &text,
                &[
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
                    "nginx_ha_build_info{version=\"0.1.0\"} 1",
                ],
            );
        }
        has_lines(&render(&document()).encode(Format::Text), &["# TYPE nginx_ha_vrrp_checksum_errors_total counter"]);
        has_lines(&render(&document()).encode(Format::OpenMetrics), &["# TYPE nginx_ha_vrrp_checksum_errors counter"]);
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
                             "advert_age_ms": 2500}},
                   {"name": "VI_3", "state": "INIT", "priority": 100, "effective_priority": 100,
                    "master_advert_interval_ms": 2000}]
        });
        let text = render(&serde_json::from_value(document).unwrap()).encode(Format::Text);
        has_lines(
            &text,
            &[
                "nginx_ha_vrrp_master_info{router=\"VI_2\",address=\"198.18.0.2\"} 1",
                "nginx_ha_vrrp_master_priority{router=\"VI_2\"} 150",
                "nginx_ha_vrrp_master_advert_age_seconds{router=\"VI_2\"} 0.31",
                "nginx_ha_vrrp_master_advert_interval_seconds{router=\"VI_2\"} 1.0",
                "nginx_ha_vrrp_master_advert_interval_seconds{router=\"VI_3\"} 2.0",
                "nginx_ha_vrrp_peer_info{router=\"VI_2\",address=\"198.18.0.3\"} 1",
                "nginx_ha_vrrp_peer_priority{router=\"VI_2\"} 0",
                "nginx_ha_vrrp_peer_advert_age_seconds{router=\"VI_2\"} 2.5",
                "nginx_ha_vrrp_master_changes_total{router=\"VI_2\"} 2",
                "# TYPE nginx_ha_vrrp_master_advert_age_seconds gauge",
            ],
        );
        // A router that heard nothing has no master or peer sample.
        assert!(!text.contains("info{router=\"VI_3\""), "{text}");
        assert!(!text.contains("age_seconds{router=\"VI_3\""), "{text}");
    }

    #[test]
    fn nginx_counters_under_the_exporters_names() {
        let mut out = Exposition::default();
        let counters =
            SiteCounters { active: 3, accepted: 10, handled: 9, requests: 42, reading: 1, writing: 1, waiting: 1 };
        nginx_counters(&mut out, &NginxReading::Up(counters));
        has_lines(
            &out.encode(Format::Text),
            &[
                "nginx_up 1",
                "nginx_connections_active 3",
                "nginx_connections_waiting 1",
                "nginx_connections_accepted_total 10",
                "nginx_connections_handled_total 9",
                "nginx_http_requests_total 42",
                "# TYPE nginx_http_requests_total counter",
            ],
        );
        let mut down = Exposition::default();
        nginx_counters(&mut down, &NginxReading::Down);
        let text = down.encode(Format::Text);
        has_lines(&text, &["nginx_up 0"]);
        assert!(!text.contains("nginx_http_requests"), "{text}");
        let mut off = Exposition::default();
        nginx_counters(&mut off, &NginxReading::Off);
        assert!(!off.encode(Format::Text).contains("nginx_"));
    }

    #[test]
    fn processes_by_role_and_our_own() {
        let figures = |rss: u64, cpu: f64| ProcessFigures {
            resident_bytes: rss,
            cpu_seconds: cpu,
            open_fds: 5,
            max_fds: Some(1024),
            threads: 1,
            ..Default::default()
        };
        let snapshot = ProcessSnapshot {
            nginx: vec![
                (Role::Master, figures(1000, 0.5)),
                (Role::Worker, figures(2000, 1.0)),
                (Role::Worker, figures(3000, 1.5)),
                (Role::DrainingWorker, figures(100, 0.25)),
            ],
            own: Some(figures(7_000_000, 2.0)),
        };
        let mut out = Exposition::default();
        processes(&mut out, &snapshot);
        has_lines(
            &out.encode(Format::Text),
            &[
                "nginx_ha_nginx_processes{role=\"worker\"} 2",
                "nginx_ha_nginx_processes{role=\"draining_worker\"} 1",
                "nginx_ha_nginx_processes{role=\"helper\"} 0",
                "nginx_ha_nginx_resident_memory_bytes{role=\"worker\"} 5000",
                "nginx_ha_nginx_cpu_seconds_total{role=\"worker\"} 2.5",
                "nginx_ha_nginx_open_fds{role=\"worker\"} 10",
                "process_resident_memory_bytes 7000000",
                "process_cpu_seconds_total 2.0",
                "process_max_fds 1024",
            ],
        );
    }

    #[test]
    fn snapshot_of_a_real_process_tree() {
        // This test process stands in for the master: its figures are read, no workers.
        let status: NginxStatus = serde_json::from_value(serde_json::json!({
            "state": "running", "healthy": true, "master_pid": std::process::id(), "worker_pids": [],
            "restarts": 0, "config_error": null
        }))
        .unwrap();
        let snapshot = ProcessSnapshot::read(&status);
        assert!(snapshot.nginx.iter().any(|(role, f)| *role == Role::Master && f.resident_bytes > 0), "{snapshot:?}");
        assert!(snapshot.own.is_some());
    }
}

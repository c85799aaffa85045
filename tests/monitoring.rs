//! The shipped monitoring (conf/monitoring/) against the real thing: `promtool` checks and
//! unit-tests the alert rules and the dashboard's queries, and a real Prometheus scrapes a
//! dual-master pair in namespaces: the summed `nginx_http_requests_total` grows by exactly the
//! client's requests, every metric the rules, dashboard and Zabbix template read is served, and
//! killing nginx-ha on one node fires `NginxHaDown` in Prometheus' own evaluation of the shipped
//! rules. Needs root, `ip`, nginx and Debian's `prometheus` (/usr/bin/prometheus, promtool).

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::*;
use common::netns::{Bridge, NetNs, join, wait_until};
use common::process::{record_pid, stop_child};

const VIP_1: &str = "198.18.0.100";
const VIP_2: &str = "198.18.0.101";
const METRICS_PORT: u16 = 9612;
const PROMETHEUS: &str = "127.0.0.1:9090";

fn monitoring(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/monitoring").join(file)
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool").args(args).current_dir(dir).output().expect("promtool (Debian: prometheus)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn shipped_rules_pass_promtool_and_their_unit_tests_fire_the_alerts() {
    let dir = monitoring("");
    let checked = promtool(&["check", "rules", "nginx-ha.rules.yml"], &dir);
    assert!(checked.contains("SUCCESS: 7 rules found"), "{checked}");
    // The unit tests expect split brain and no master (and the others) to fire, and pending
    // before their `for:`; a rule that never fires fails them.
    let tested = promtool(&["test", "rules", "nginx-ha.rules.test.yml"], &dir);
    assert!(tested.contains("SUCCESS"), "{tested}");
    let tests = std::fs::read_to_string(monitoring("nginx-ha.rules.test.yml")).unwrap();
    for alert in ["NginxHaSplitBrain", "NginxHaNoMaster", "NginxHaMasterSilent", "NginxHaDown"] {
        assert!(tests.contains(&format!("alertname: {alert}\n        exp_alerts:\n          - exp_labels")), "{alert}");
    }
}

/// The dashboard's queries, with Grafana's variables as a user would have them.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(monitoring("grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("grafana-dashboard.json is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let queries: Vec<String> = panels
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| {
            target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$job", "nginx-ha")
                .replace("$router", ".*")
        })
        .collect();
    assert!(queries.len() >= 10, "{queries:?}");
    queries
}

#[test]
fn the_dashboard_s_queries_are_valid_promql() {
    let dir = tempfile::tempdir().unwrap();
    let rules: String = dashboard_queries()
        .iter()
        .enumerate()
        .map(|(i, expr)| format!("      - record: dashboard:query{i}\n        expr: {}\n", serde_json::json!(expr)))
        .collect();
    std::fs::write(dir.path().join("dashboard.yml"), format!("groups:\n  - name: dashboard\n    rules:\n{rules}"))
        .unwrap();
    promtool(&["check", "rules", "dashboard.yml"], dir.path());
}

/// Prometheus in a namespace of its own, stopped by pid.
struct Prometheus {
    child: Option<Child>,
    ns_name: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `targets` every second in job "nginx-ha" and evaluates the shipped rules every second.
    fn start(ns: &NetNs, targets: &[String]) -> Prometheus {
        let on_path = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("prometheus").is_file()));
        assert!(on_path, "no prometheus on PATH: apt-get install prometheus (.ci/run does)");
        let dir = tempfile::Builder::new().prefix("nginx-ha-prometheus-").tempdir().unwrap();
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
             rule_files:\n  - '{}'\n\
             scrape_configs:\n  - job_name: nginx-ha\n    static_configs:\n      - targets: [{}]\n",
            monitoring("nginx-ha.rules.yml").display(),
            targets.join(", ")
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "prometheus"])
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={PROMETHEUS}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian: prometheus)");
        record_pid(child.id());
        Prometheus { child: Some(child), ns_name: ns.name().to_owned(), _dir: dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GET `path_and_query` of the HTTP API from inside the namespace: the `data` of a
    /// successful answer, or None.
    fn api(&self, ns: &NetNs, path_and_query: String) -> Option<serde_json::Value> {
        assert_eq!(ns.name(), self.ns_name);
        let body = join(ns.enter(move || get(PROMETHEUS.parse().unwrap(), &path_and_query)))?;
        let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
        (answer["status"] == "success").then(|| answer["data"].clone())
    }

    /// An instant query: (labels, value) of each series.
    fn query(&self, ns: &NetNs, promql: &str) -> Option<Vec<(serde_json::Value, f64)>> {
        let data = self.api(ns, format!("/api/v1/query?query={}", percent_encode(promql)))?;
        let series = data["result"].as_array()?;
        series.iter().map(|s| Some((s["metric"].clone(), s["value"][1].as_str()?.parse().ok()?))).collect()
    }

    /// The value of a query answered by one series.
    fn scalar(&self, ns: &NetNs, promql: &str) -> Option<f64> {
        match self.query(ns, promql)?.as_slice() {
            [(_, value)] => Some(*value),
            _ => None,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child);
        }
        if std::thread::panicking() {
            eprintln!("==== prometheus log ====\n{}", self.log());
        }
    }
}

/// One HTTP/1.0 GET: the body of a 200 answer.
fn get(address: SocketAddr, path_and_query: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    stream.write_all(format!("GET {path_and_query} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    // Go answers HTTP/1.0 in kind.
    head.split_whitespace().nth(1).is_some_and(|code| code == "200").then(|| body.to_owned())
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every metric name (`nginx_…`) a shipped file reads.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("nginx_").map(|at| at + i) {
        let before = at.checked_sub(1).map(|b| bytes[b]);
        let end = text[at..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(text.len(), |e| at + e);
        // Not inside another word, nor a Zabbix item key (`nginx_ha.nginx.healthy`).
        let inside = before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'$');
        if !inside && bytes.get(end) != Some(&b'.') {
            names.insert(text[at..end].to_owned());
        }
        i = end;
    }
    names
}

/// Two nodes, each master of one router (A of VI_1, B of VI_2), serving metrics and reading
/// their stub_status; a client; Prometheus beside the client, scraping both.
#[test]
fn prometheus_sums_the_pair_s_requests_and_fires_nginx_ha_down() {
    let bridge = Bridge::new();
    let mut a = Node::new(&bridge, "A", "198.18.0.1/24");
    let mut b = Node::new(&bridge, "B", "198.18.0.2/24");
    let client = Client::new(&bridge, "198.18.0.200/24");
    let watcher = NetNs::new();
    bridge.connect(&watcher, "eth0", "198.18.0.201/24");
    for (node, vi_1, vi_2) in [(&a, 150, 100), (&b, 100, 150)] {
        node.configure(&format!(
            "{}{}",
            router("VI_1", 51, vi_1, &format!("{VIP_1}/24"), ""),
            router("VI_2", 52, vi_2, &format!("{VIP_2}/24"), "")
        ));
        let toml = std::fs::read_to_string(node.config()).unwrap();
        // Probes once a second with a timeout as long: none times out on a loaded machine (a timed
        // out probe stays in nginx's count, and a failing one would move the VIPs).
        let toml = toml
            .replace("interval_ms = 200\ntimeout_ms = 150\n", "interval_ms = 1000\ntimeout_ms = 1000\n")
            .replace("[health]\n", "[health]\nstatus_url = \"http://127.0.0.1:80/nginx_status\"\n")
            .replace("[daemon]\n", &format!("[daemon]\nmetrics_listen = \"0.0.0.0:{METRICS_PORT}\"\n"));
        assert!(toml.contains("interval_ms = 1000\n") && toml.contains("metrics_listen"), "{toml}");
        node.write("nginx-ha.toml", &toml);
    }
    a.start();
    b.start();
    let targets = [format!("{}:{METRICS_PORT}", a.address), format!("{}:{METRICS_PORT}", b.address)];
    let prometheus = Prometheus::start(&watcher, &targets);
    a.wait_state("VI_1", "MASTER");
    b.wait_state("VI_2", "MASTER");
    client.wait_served_by(VIP_1, "A");
    client.wait_served_by(VIP_2, "B");

    // Both nodes scraped, each master of one router: one master per router, summed over the pair.
    let masters = r#"sum by (router) (nginx_ha_vrrp_state{job="nginx-ha", state="MASTER"})"#;
    let counted = r#"count(nginx_http_requests_total{job="nginx-ha"})"#;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (count, per_router) = (prometheus.scalar(&watcher, counted), prometheus.query(&watcher, masters));
        if count == Some(2.0) && per_router.as_ref().is_some_and(|m| m.len() == 2 && m.iter().all(|(_, v)| *v == 1.0)) {
            break;
        }
        let up = prometheus.api(&watcher, "/api/v1/targets".into());
        assert!(
            Instant::now() < deadline,
            "Prometheus: {count:?} nodes counting requests, masters {per_router:?}, {up:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // What each node hears of the other on the wire: A is VI_2's backup and hears B, in its
    // status, its table and its metrics.
    let router_of = |node: &Node, name: &str| -> serde_json::Value {
        let status = node.status().unwrap();
        status["vrrp"].as_array().unwrap().iter().find(|r| r["name"] == name).unwrap().clone()
    };
    let vi_2 = router_of(&a, "VI_2");
    assert_eq!(
        (&vi_2["master"]["address"], &vi_2["master"]["priority"]),
        (&"198.18.0.2".into(), &150.into()),
        "{vi_2}"
    );
    assert!(vi_2["master"]["advert_age_ms"].as_u64().unwrap() < 3000, "{vi_2}");
    assert_eq!(router_of(&a, "VI_1")["master"]["address"], "198.18.0.1", "A is VI_1's master");
    let table = Command::new(BIN).args(["status", "-c"]).arg(a.config()).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    let line = table.lines().find(|l| l.starts_with("VI_2 ")).unwrap_or_default();
    assert!(line.contains(" 198.18.0.2 ") && line.contains(" 150 ") && line.contains("198.18.0.2 p150"), "{table}");
    let heard = prometheus.query(&watcher, r#"nginx_ha_vrrp_master_info{instance="198.18.0.1:9612", router="VI_2"}"#);
    assert_eq!(heard.unwrap()[0].0["address"], "198.18.0.2");

    // The client's requests in the site's counter summed over both nodes: every one of them, and
    // of nginx-ha's own traffic no more than its documented share (docs/nginx-ha.md, "nginx's
    // counters (stub_status)": a probe that timed out after nginx counted it stays counted), here
    // bounded by the probes made meanwhile, one a second per node. Unsubtracted, the probes and
    // the stub_status reads would be twice that. max_over_time: a scrape missed on a loaded
    // machine leaves the node's last value in the sum, not a gap.
    let per_node = |at: &str| format!(r#"max_over_time(nginx_http_requests_total{{job="nginx-ha"}}[10s]{at})"#);
    let node_counts = |promql: &str| -> Vec<(String, f64)> {
        let mut counts: Vec<(String, f64)> = (prometheus.query(&watcher, promql).unwrap().into_iter())
            .map(|(labels, value)| (labels["instance"].as_str().unwrap().to_owned(), value))
            .collect();
        counts.sort_by(|x, y| x.0.cmp(&y.0));
        counts
    };
    let before_at = prometheus.scalar(&watcher, "vector(time())").unwrap();
    let before = node_counts(&per_node(&format!(" @ {before_at}")));
    let window = Instant::now();
    let (to_a, to_b) = (60, 40);
    for (vip, count, node) in [(VIP_1, to_a, "A"), (VIP_2, to_b, "B")] {
        for _ in 0..count {
            assert_eq!(client.get(vip).as_deref(), Some(node), "{vip}");
        }
    }
    let increase = format!("sum({}) - sum({})", per_node(""), per_node(&format!(" @ {before_at}")));
    let sent = f64::from(to_a + to_b);
    let deadline = Instant::now() + Duration::from_secs(15);
    while prometheus.scalar(&watcher, &increase).is_none_or(|seen| seen < sent) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    // A few scrapes later: what nginx-ha's own traffic added meanwhile shows.
    std::thread::sleep(Duration::from_secs(3));
    let seen = prometheus.scalar(&watcher, &increase).unwrap_or(0.0);
    let after = node_counts(&per_node(""));
    let probes_per_node = window.elapsed().as_secs_f64().ceil() + 1.0;
    let grew: Vec<f64> = after.iter().zip(&before).map(|(x, y)| x.1 - y.1).collect();
    let within = |grew: f64, sent: f64, nodes: f64| sent <= grew && grew <= sent + nodes * probes_per_node;
    assert!(
        within(seen, sent, 2.0)
            && grew.len() == 2
            && within(grew[0], to_a.into(), 1.0)
            && within(grew[1], to_b.into(), 1.0),
        "the pair's summed requests grew by {seen}, the client sent {sent} ({to_a} to A, {to_b} to B), \
         {probes_per_node} probes per node: {before:?} -> {after:?}"
    );
    eprintln!("summed requests grew by {seen} for the client's {sent} ({probes_per_node} probes per node meanwhile)");

    // nginx-ha killed on B: the shipped rule fires in Prometheus' own evaluation.
    b.kill_daemon();
    let b_target = format!("{}:{METRICS_PORT}", b.address);
    let firing = |alert: &str| -> Vec<String> {
        let alerts = prometheus.api(&watcher, "/api/v1/alerts".into()).unwrap_or_default();
        (alerts["alerts"].as_array().cloned().unwrap_or_default().iter())
            .filter(|a| a["labels"]["alertname"] == alert && a["state"] == "firing")
            .map(|a| a["labels"]["instance"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let killed = Instant::now();
    // Meanwhile (the rule's `for:` runs), the shipped files against what was served.
    // Every metric the shipped rules, dashboard and Zabbix template read is served.
    let served: BTreeSet<String> = prometheus
        .api(&watcher, "/api/v1/label/__name__/values".into())
        .and_then(|names| names.as_array().map(|n| n.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()))
        .unwrap();
    for file in ["nginx-ha.rules.yml", "grafana-dashboard.json", "zabbix-template.yaml"] {
        let text = std::fs::read_to_string(monitoring(file)).unwrap();
        let missing: Vec<String> = metric_names_in(&text).into_iter().filter(|n| !served.contains(n)).collect();
        assert!(missing.is_empty(), "{file} reads metrics nginx-ha does not serve: {missing:?}");
    }

    // Each of the dashboard's queries answers with data (rates once there are two samples).
    for query in dashboard_queries() {
        wait_until(Duration::from_secs(10), &format!("data for {query}"), || {
            prometheus.query(&watcher, &query).is_some_and(|r| !r.is_empty())
        });
    }

    wait_until(Duration::from_secs(60), "NginxHaDown fires for B", || firing("NginxHaDown") == [b_target.clone()]);
    eprintln!("NginxHaDown fired {:?} after the kill", killed.elapsed());
    // The rule's `for: 20s`: not before.
    assert!(killed.elapsed() >= Duration::from_secs(20), "fired after {:?}", killed.elapsed());
    // A took VI_2 over: one master per router still, and no split-brain or no-master alert.
    a.wait_state("VI_2", "MASTER");
    // Nor a silent master: A's VI_2 heard B's last advert over 3 intervals ago only until it
    // took over, well within the rule's `for:`.
    for alert in ["NginxHaSplitBrain", "NginxHaNoMaster", "NginxHaMasterSilent"] {
        assert!(firing(alert).is_empty(), "{alert} fires: {:?}", prometheus.api(&watcher, "/api/v1/alerts".into()));
    }
    // A saw VI_2's master change once (B to A), and never VI_1's.
    let changes = |name: &str| router_of(&a, name)["counters"]["master_changes"].as_u64();
    assert_eq!((changes("VI_1"), changes("VI_2")), (Some(0), Some(1)));
    let peer = router_of(&a, "VI_2")["peer"].clone();
    assert!(peer["address"] == "198.18.0.2" && peer["advert_age_ms"].as_u64().unwrap() > 20_000, "{peer}");
    drop(prometheus);
}

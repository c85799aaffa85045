//! `/metrics` against real nginx on loopback: nginx's own counters from stub_status (the
//! client's requests counted, nginx-ha's probes not), the HTTP side (404, HEAD, keep-alive,
//! Accept), and a stub_status that cannot be read (`nginx_up 0`, the scrape still 200, one log
//! line).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::local::*;

/// A site with a stub_status location, nginx-ha probing `/` every 100 ms and serving metrics.
fn setup_with_status(status_url: &str) -> (Setup, u16) {
    let setup = Setup::with_health("site", "interval_ms = 100\ntimeout_ms = 100\nfall = 2\nrise = 1\n");
    let site = format!(
        "server {{\n  listen 127.0.0.1:{port};\n  location / {{ return 200 \"site\\n\"; }}\n  location = /nginx_status {{ stub_status; }}\n}}\n",
        port = setup.port
    );
    setup.write("sites/site.conf", &site);
    let metrics = free_port();
    let toml = std::fs::read_to_string(setup.config()).unwrap();
    let status_url = status_url.replace("{port}", &setup.port.to_string());
    let toml = toml
        .replace("[health]\n", &format!("[health]\nstatus_url = \"{status_url}\"\n"))
        .replace("[daemon]\n", &format!("[daemon]\nmetrics_listen = \"127.0.0.1:{metrics}\"\n"));
    setup.write("nginx-ha.toml", &toml);
    (setup, metrics)
}

struct Answer {
    status: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn sample(&self, name: &str) -> Option<f64> {
        self.body.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }
}

/// One request on an open connection; reads the answer by its Content-Length.
fn exchange(reader: &mut BufReader<TcpStream>, request: &str) -> Answer {
    reader.get_mut().write_all(request.as_bytes()).unwrap();
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let mut answer = Answer { status: status.trim_end().to_owned(), headers, body: String::new() };
    let length: usize = answer.header("content-length").map_or(0, |l| l.parse().unwrap());
    if !request.starts_with("HEAD") {
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        answer.body = String::from_utf8(body).unwrap();
    }
    answer
}

fn connect(port: u16) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    BufReader::new(stream)
}

fn scrape(port: u16) -> Answer {
    exchange(&mut connect(port), "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
}

#[test]
fn nginx_requests_are_the_clients_not_the_probes() {
    let (setup, metrics) = setup_with_status("http://127.0.0.1:{port}/nginx_status");
    let mut daemon = setup.start();
    daemon.wait_serving();
    wait_until("nginx_up 1", || daemon.log_text(), || scrape(metrics).sample("nginx_up") == Some(1.0));
    // A probe nginx has counted but nginx-ha has not yet seen answered is subtracted one reading
    // late (the served counter holds still meanwhile): a rare ±1, so a few tries.
    let mut seen = Vec::new();
    for _ in 0..3 {
        let before = scrape(metrics).sample("nginx_http_requests_total").unwrap();
        const CLIENT_REQUESTS: usize = 57;
        for _ in 0..CLIENT_REQUESTS {
            assert_eq!(get(setup.port).as_deref(), Some("site"));
        }
        // Probes (every 100 ms) and scrapes meanwhile: nginx counts them, the metric must not.
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(200));
            scrape(metrics);
        }
        let after = scrape(metrics).sample("nginx_http_requests_total").unwrap();
        seen.push(after - before);
        if after - before == CLIENT_REQUESTS as f64 {
            let text = scrape(metrics).body;
            for name in
                ["nginx_connections_active", "nginx_connections_accepted_total", "nginx_connections_handled_total"]
            {
                assert!(text.lines().any(|l| l.starts_with(&format!("{name} "))), "no {name} in\n{text}");
            }
            return;
        }
    }
    panic!("nginx_http_requests_total grew by {seen:?}, not the client's requests; log:\n{}", daemon.log_text());
}

#[test]
fn only_metrics_is_served_with_head_keep_alive_and_accept() {
    let (setup, metrics) = setup_with_status("http://127.0.0.1:{port}/nginx_status");
    let mut daemon = setup.start();
    daemon.wait_serving();
    let mut connection = connect(metrics);
    for path in ["/", "/metric", "/metrics/", "/favicon.ico"] {
        let answer = exchange(&mut connection, &format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"));
        assert_eq!(answer.status, "HTTP/1.1 404 Not Found", "{path}");
    }
    // The same connection still serves (keep-alive), in both formats.
    let text = exchange(&mut connection, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(text.status, "HTTP/1.1 200 OK");
    assert_eq!(text.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    assert!(text.body.lines().any(|l| l == "# TYPE nginx_http_requests_total counter"), "{}", text.body);
    let accept = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
    let open = exchange(&mut connection, &format!("GET /metrics HTTP/1.1\r\nHost: test\r\nAccept: {accept}\r\n\r\n"));
    assert_eq!(open.header("content-type"), Some("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    assert!(open.body.ends_with("# EOF\n"), "{}", open.body);
    assert!(open.body.lines().any(|l| l == "# TYPE nginx_http_requests counter"), "{}", open.body);
    let head = exchange(&mut connection, "HEAD /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(head.status, "HTTP/1.1 200 OK");
    assert!(head.header("content-length").is_some_and(|l| l.parse::<usize>().unwrap() > 100), "{:?}", head.headers);
    let post = exchange(&mut connection, "POST /metrics HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(post.status, "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    // Still the same connection after HEAD and 405.
    let again = exchange(&mut connection, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(again.sample("nginx_up"), Some(1.0), "{}", again.body);
    assert!(again.sample("nginx_ha_nginx_processes{role=\"worker\"}") == Some(2.0), "{}", again.body);
    assert!(again.sample("process_resident_memory_bytes").is_some_and(|rss| rss > 1e6), "{}", again.body);
    drop(daemon);
}

#[test]
fn an_unreadable_stub_status_is_nginx_up_0_and_said_once() {
    // Nothing listens there.
    let (setup, metrics) = setup_with_status(&format!("http://127.0.0.1:{}/nginx_status", free_port()));
    let mut daemon = setup.start();
    daemon.wait_serving();
    for _ in 0..5 {
        let answer = scrape(metrics);
        assert_eq!(answer.status, "HTTP/1.1 200 OK");
        assert_eq!(answer.sample("nginx_up"), Some(0.0), "{}", answer.body);
        assert!(answer.sample("nginx_http_requests_total").is_none(), "{}", answer.body);
        assert_eq!(answer.sample("nginx_ha_nginx_healthy"), Some(1.0), "the rest is served");
        std::thread::sleep(Duration::from_millis(300));
    }
    let said = |log: &str| log.lines().filter(|l| l.contains("nginx_up is 0 until it answers")).count();
    assert_eq!(said(&daemon.log_text()), 1, "{}", daemon.log_text());

    // Garbage: a page that is not stub_status (the site's own `/`), applied by `nginx-ha reload`.
    let wrong = format!("http://127.0.0.1:{}/", setup.port);
    let toml = std::fs::read_to_string(setup.config()).unwrap();
    let toml = toml
        .lines()
        .map(|l| if l.starts_with("status_url") { format!("status_url = \"{wrong}\"") } else { l.to_owned() });
    setup.write("nginx-ha.toml", &toml.collect::<Vec<_>>().join("\n"));
    assert!(setup.cli(&["reload"]).status.success());
    for _ in 0..5 {
        let answer = scrape(metrics);
        assert_eq!(answer.status, "HTTP/1.1 200 OK");
        assert_eq!(answer.sample("nginx_up"), Some(0.0), "{}", answer.body);
        std::thread::sleep(Duration::from_millis(300));
    }
    let garbage = |log: &str| log.lines().filter(|l| l.contains("not an nginx stub_status page")).count();
    assert_eq!(garbage(&daemon.log_text()), 1, "{}", daemon.log_text());
}

#[test]
fn without_status_url_the_probe_url_is_used_when_it_is_a_stub_status_page() {
    // The probe at the site's `/`: not a stub_status page, so no nginx_* metrics, said once.
    let (setup, metrics) = setup_with_status("");
    let toml = std::fs::read_to_string(setup.config()).unwrap().replace("status_url = \"\"\n", "");
    setup.write("nginx-ha.toml", &toml);
    let mut daemon = setup.start();
    daemon.wait_serving();
    for _ in 0..3 {
        let answer = scrape(metrics);
        assert_eq!(answer.status, "HTTP/1.1 200 OK");
        assert!(!answer.body.contains("nginx_up"), "{}", answer.body);
        std::thread::sleep(Duration::from_millis(300));
    }
    let said = |log: &str| log.lines().filter(|l| l.contains("is not nginx's stub_status page")).count();
    assert_eq!(said(&daemon.log_text()), 1, "{}", daemon.log_text());

    // The probe pointed at stub_status (`nginx-ha reload`): its URL serves the counters.
    let probe = format!("http://127.0.0.1:{}/", setup.port);
    setup.edit("nginx-ha.toml", &format!("http = \"{probe}\""), &format!("http = \"{probe}nginx_status\""));
    assert!(setup.cli(&["reload"]).status.success());
    wait_until(
        "nginx_up 1 from the probe's URL",
        || daemon.log_text(),
        || scrape(metrics).sample("nginx_up") == Some(1.0),
    );
    let requests = scrape(metrics).sample("nginx_http_requests_total").unwrap();
    std::thread::sleep(Duration::from_millis(600));
    // Only probes (every 100 ms) and scrapes since: none of them is the site's traffic.
    let later = scrape(metrics).sample("nginx_http_requests_total").unwrap();
    assert!(later - requests <= 1.0, "{requests} -> {later}: the probe's requests were counted");
}

#[test]
fn silent_connections_do_not_keep_a_scraper_out() {
    let (setup, metrics) = setup_with_status("http://127.0.0.1:{port}/nginx_status");
    let mut daemon = setup.start();
    daemon.wait_serving();
    // More than the 16 connections served at once, none of them ever sending a byte.
    let silent: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(("127.0.0.1", metrics)).unwrap()).collect();
    let started = std::time::Instant::now();
    // Each silent connection gives its slot back after 2 s; the scrape queues behind them.
    let answer = scrape(metrics);
    assert_eq!(answer.status, "HTTP/1.1 200 OK", "after {:?}", started.elapsed());
    assert_eq!(answer.sample("nginx_up"), Some(1.0));
    drop(silent);
}

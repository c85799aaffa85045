//! The connection drain (src/drain/): TCP connections open on the old holder of a VIP survive a
//! planned move — a failback by preemption and a planned stop — while new connections go to the
//! new holder at once; a drain whose old holder dies ends at once. Two nginx-ha nodes with real
//! nginx in network namespaces, a client on the same bridge: a slow download (nginx's
//! limit_rate) and a websocket-style echo (nginx proxying an Upgrade to a small backend).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::netns::{Bridge, join, wait_until};

const VIP: &str = "198.18.0.100";
/// Served at 1 MB/s (limit_rate 1m): the download takes about this many seconds.
const BIG: usize = 5_000_000;
/// Outlasts any test: for a connection that is not meant to complete.
const HUGE: usize = 30_000_000;
const ECHO_ROUNDS: usize = 50;
const ECHO_EVERY: Duration = Duration::from_millis(100);
/// v3 at 100 ms: elections in a fraction of a second; a node that comes back waits 2 s as
/// BACKUP before it preempts, so that the long connections are opened on the old holder in time.
const FAST: &str = "version = 3\nadvert_interval_ms = 100\npreempt = true\npreempt_delay_ms = 2000";

/// The echo backend nginx proxies /echo to: answers the Upgrade with 101, then echoes.
const ECHO_BACKEND: &str = r#"
import socket, threading
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", 9000))
server.listen(64)
def serve(conn):
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = conn.recv(4096)
        if not chunk:
            return
        request += chunk
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
    while True:
        data = conn.recv(4096)
        if not data:
            break
        conn.sendall(data)
    conn.close()
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"#;

/// A node whose nginx also serves /big slowly and proxies /echo to its echo backend.
struct DrainNode {
    node: Node,
    backend: Child,
}

impl DrainNode {
    fn new(bridge: &Bridge, name: &str, cidr: &str, priority: u8) -> DrainNode {
        let node = Node::new(bridge, name, cidr);
        let d = node.dir.path().display().to_string();
        std::fs::create_dir_all(node.path("www")).unwrap();
        std::fs::write(node.path("www/big"), vec![b'x'; BIG]).unwrap();
        std::fs::write(node.path("www/huge"), vec![b'x'; HUGE]).unwrap();
        node.write(
            "nginx.conf",
            &format!(
                "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nevents {{ worker_connections 128; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
                   server {{\n    listen 80;\n    root {d}/www;\n    location = / {{ return 200 \"{name}\\n\"; }}\n\
                     location /big {{ limit_rate 1m; }}\n    location /huge {{ limit_rate 1m; }}\n\
                     location /echo {{ proxy_pass http://127.0.0.1:9000; proxy_http_version 1.1;\n\
                       proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\"; proxy_read_timeout 60s; }}\n\
                   }}\n}}\n"
            ),
        );
        node.configure(&router("VI_1", 51, priority, &format!("{VIP}/24"), FAST));
        let backend = Command::new("ip")
            .args(["netns", "exec", node.ns.name(), "python3", "-c", ECHO_BACKEND])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        common::process::record_pid(backend.id());
        DrainNode { node, backend }
    }
}

impl Drop for DrainNode {
    fn drop(&mut self) {
        let _ = self.backend.kill();
        let _ = self.backend.wait();
    }
}

fn vip() -> SocketAddr {
    SocketAddr::new(VIP.parse().unwrap(), 80)
}

/// What the client saw of one long connection.
#[derive(Debug)]
enum Outcome {
    Complete { elapsed: Duration },
    Failed { after: Duration, error: String },
}

/// Downloads /big (or /huge) from the VIP (HTTP/1.1, Connection: close): complete only with
/// every byte.
fn download(client: &Client, huge: bool) -> JoinHandle<Outcome> {
    let (path, size) = if huge { ("/huge", HUGE) } else { ("/big", BIG) };
    client.ns.enter(move || {
        let start = Instant::now();
        let failed = |error: String| Outcome::Failed { after: start.elapsed(), error };
        let mut stream = match TcpStream::connect_timeout(&vip(), Duration::from_secs(2)) {
            Ok(stream) => stream,
            Err(e) => return failed(format!("connect: {e}")),
        };
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
        let mut answer = Vec::new();
        if let Err(e) = stream.read_to_end(&mut answer) {
            return failed(format!("after {} bytes: {e}", answer.len()));
        }
        let body = answer.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |at| answer.len() - at - 4);
        if body == size {
            Outcome::Complete { elapsed: start.elapsed() }
        } else {
            failed(format!("{body} of {size} bytes"))
        }
    })
}

/// Upgrades /echo and sends a line every ECHO_EVERY, each echoed back, ECHO_ROUNDS times.
fn echo(client: &Client) -> JoinHandle<Outcome> {
    client.ns.enter(|| {
        let start = Instant::now();
        let failed = |error: String| Outcome::Failed { after: start.elapsed(), error };
        let stream = match TcpStream::connect_timeout(&vip(), Duration::from_secs(2)) {
            Ok(stream) => stream,
            Err(e) => return failed(format!("connect: {e}")),
        };
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut writer = stream.try_clone().unwrap();
        writer.write_all(b"GET /echo HTTP/1.1\r\nHost: test\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n").unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        if !line.starts_with("HTTP/1.1 101") {
            return failed(format!("upgrade answered {line:?}"));
        }
        while line != "\r\n" {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return failed("closed during the upgrade".into());
            }
        }
        for round in 0..ECHO_ROUNDS {
            let sent = format!("ping {round}\n");
            if let Err(e) = writer.write_all(sent.as_bytes()) {
                return failed(format!("round {round}: send: {e}"));
            }
            line.clear();
            match reader.read_line(&mut line) {
                Ok(_) if line == sent => {}
                Ok(_) => return failed(format!("round {round}: echoed {line:?}")),
                Err(e) => return failed(format!("round {round}: {e}")),
            }
            std::thread::sleep(ECHO_EVERY);
        }
        Outcome::Complete { elapsed: start.elapsed() }
    })
}

fn logs(a: &DrainNode, b: &DrainNode) -> String {
    format!("--- A ---\n{}\n--- B ---\n{}", a.node.log(), b.node.log())
}

fn assert_complete(what: &str, outcome: Outcome, logs: &str) {
    match outcome {
        Outcome::Complete { elapsed } => println!("{what}: complete in {elapsed:?}"),
        Outcome::Failed { after, error } => panic!("{what} failed after {after:?}: {error}\n{logs}"),
    }
}

/// Both long connections open on the VIP's holder and passing data.
fn open_long_connections(client: &Client) -> (JoinHandle<Outcome>, JoinHandle<Outcome>) {
    let connections = (download(client, false), echo(client));
    std::thread::sleep(Duration::from_millis(1000));
    connections
}

#[test]
fn long_connections_survive_a_failback_and_a_planned_stop() {
    let bridge = Bridge::new();
    let mut a = DrainNode::new(&bridge, "A", "198.18.0.1/24", 200);
    let mut b = DrainNode::new(&bridge, "B", "198.18.0.2/24", 100);
    let client = Client::new(&bridge, "198.18.0.200/24");

    // B holds the VIP alone; A comes back and preempts it: a failback.
    b.node.start();
    b.node.wait_state("VI_1", "MASTER");
    client.wait_served_by(VIP, "B");
    a.node.start();
    a.node.wait_state("VI_1", "BACKUP");
    let (download_b, echo_b) = open_long_connections(&client);
    a.node.wait_state("VI_1", "MASTER");
    // New connections go to the new holder at once, while B's go on.
    client.wait_served_by(VIP, "A");
    assert!(!download_b.is_finished(), "the download outlasts the failback");
    assert_complete("download across the failback", join(download_b), &logs(&a, &b));
    assert_complete("echo across the failback", join(echo_b), &logs(&a, &b));
    assert!(b.node.log().contains("draining their connections through the new holder"), "{}", logs(&a, &b));
    assert!(a.node.log().contains("passing the old holder's connections through"), "{}", logs(&a, &b));
    wait_until(PATIENCE, "B's drain to end", || b.node.log().contains("drain over: no connection to the VIPs is left"));

    // A planned stop of A: B takes over, A's nginx finishes its connections before it stops.
    let (download_a, echo_a) = open_long_connections(&client);
    let stopping = Instant::now();
    let stopped = a.node.stop();
    assert!(stopped.success(), "{}", logs(&a, &b));
    println!("planned stop took {:?}", stopping.elapsed());
    assert_complete("download across the planned stop", join(download_a), &logs(&a, &b));
    assert_complete("echo across the planned stop", join(echo_a), &logs(&a, &b));
    client.wait_served_by(VIP, "B");
    assert!(a.node.nginx_pids().is_empty(), "nginx stopped with nginx-ha");
    assert!(!a.node.has_address(VIP));
    let routes = a.node.ns.ip(&["route", "show", "table", "local", "proto", "100"]);
    assert!(routes.trim().is_empty(), "drain routes left on A: {routes}");
}

#[test]
fn an_old_holder_that_dies_during_the_drain_ends_it_at_once() {
    let bridge = Bridge::new();
    let mut a = DrainNode::new(&bridge, "A", "198.18.0.1/24", 200);
    let mut b = DrainNode::new(&bridge, "B", "198.18.0.2/24", 100);
    let client = Client::new(&bridge, "198.18.0.200/24");
    b.node.start();
    b.node.wait_state("VI_1", "MASTER");
    client.wait_served_by(VIP, "B");
    a.node.start();
    a.node.wait_state("VI_1", "BACKUP");
    let download_b = download(&client, true);
    a.node.wait_state("VI_1", "MASTER");
    wait_until(PATIENCE, "A to pass B's connections through", || {
        a.node.log().contains("passing the old holder's connections through")
    });
    // B dies as at a power cut: nginx-ha and nginx killed, its link cut.
    let nginx = b.node.nginx_pids();
    b.node.kill_daemon();
    for pid in nginx {
        signal(pid, libc::SIGKILL);
    }
    b.node.set_link(&bridge, false);
    let died = Instant::now();
    wait_until(PATIENCE, "A to end the pass-through", || {
        a.node.log().contains("pass-through over: the old holder fell silent")
    });
    println!("pass-through ended {:?} after the old holder died", died.elapsed());
    // Its packets now reach A, which resets them at once: the client is not left hanging.
    match join(download_b) {
        Outcome::Failed { error, .. } => println!("the dead holder's download ended: {error}"),
        Outcome::Complete { .. } => panic!("a download from a dead node cannot complete"),
    }
    assert!(died.elapsed() < Duration::from_secs(8), "the client waited {:?}: black-holed", died.elapsed());
    client.wait_served_by(VIP, "A");
}

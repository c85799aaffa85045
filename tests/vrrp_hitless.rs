//! Restart in place on a pair in network namespaces: an nginx `kill -9` on the master keeps the
//! VIP where it is; a crash whose restart fails hands it over at once.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::cluster::*;
use common::netns::{Bridge, wait_until};

const VIP: &str = "198.18.0.100";
/// The policy restarts in place only an nginx that served 10 s (RESTART_IN_PLACE_AFTER).
const SERVED_LONG: Duration = Duration::from_millis(10_500);

/// A (priority 100) and B (90); `nginx_extra` goes into each node's [nginx] table.
fn pair(nginx_extra: &str) -> (Bridge, Node, Node, Client) {
    let bridge = Bridge::new();
    let mut a = Node::new(&bridge, "A", "198.18.0.1/24");
    let mut b = Node::new(&bridge, "B", "198.18.0.2/24");
    let client = Client::new(&bridge, "198.18.0.200/24");
    for (node, priority) in [(&a, 100), (&b, 90)] {
        node.configure(&router("VI_1", 51, priority, &format!("{VIP}/24"), ""));
        let text = std::fs::read_to_string(node.config()).unwrap();
        node.write("nginx-ha.toml", &text.replacen("[nginx]\n", &format!("[nginx]\n{nginx_extra}\n"), 1));
    }
    a.start();
    b.start();
    a.wait_state("VI_1", "MASTER");
    b.wait_state("VI_1", "BACKUP");
    client.wait_served_by(VIP, "A");
    (bridge, a, b, client)
}

/// Watches B's router state and A's VIP in the background: what each was, every ~20 ms.
struct Watch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(Vec<String>, usize)>>,
}

impl Watch {
    fn start(a: &Node, b: &Node) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (b_config, a_ns) = (b.config(), a.ns.name().to_string());
        let thread = std::thread::spawn(move || {
            let (mut b_states, mut a_without_vip) = (Vec::new(), 0);
            while !flag.load(Ordering::Relaxed) {
                let out = std::process::Command::new(BIN).args(["status", "--json", "-c"]).arg(&b_config).output();
                if let Ok(out) = out
                    && let Ok(status) = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                {
                    b_states.push(status["vrrp"][0]["state"].as_str().unwrap_or("?").to_string());
                }
                let addr = std::process::Command::new("ip")
                    .args(["netns", "exec", &a_ns, "ip", "-o", "addr", "show", "dev", "eth0"])
                    .output()
                    .unwrap();
                if !String::from_utf8_lossy(&addr.stdout).contains(&format!(" {VIP}/")) {
                    a_without_vip += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (b_states, a_without_vip)
        });
        Watch { stop, thread: Some(thread) }
    }

    /// (B's states seen, how many times A was seen without the VIP)
    fn finish(mut self) -> (Vec<String>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

#[test]
fn nginx_kill_9_on_the_master_keeps_the_vip_and_the_peer_stays_backup() {
    let (_bridge, a, b, client) = pair("");
    std::thread::sleep(SERVED_LONG);
    let old_master = a.nginx_master().unwrap();
    let watch = Watch::start(&a, &b);
    let poller = client.poll(VIP);
    std::thread::sleep(Duration::from_millis(300));
    a.signal_nginx(libc::SIGKILL);
    wait_until(PATIENCE, "A's nginx restarted", || {
        a.nginx_master().is_some_and(|pid| pid != old_master && is_nginx(pid))
    });
    // Past restart_grace (300 ms) and B's skew and master-down time (3 adverts of 1 s + skew).
    std::thread::sleep(Duration::from_secs(4));
    let answers = poller.stop();
    let (b_states, a_without_vip) = watch.finish();

    assert!(b_states.len() > 20, "B was watched: {b_states:?}");
    assert!(b_states.iter().all(|s| s == "BACKUP"), "B never left BACKUP: {b_states:?}\n{}", b.log());
    assert_eq!(a_without_vip, 0, "the VIP never left A\n{}", a.log());
    assert_eq!(a.state("VI_1").as_deref(), Some("MASTER"));
    let from_b = answers.iter().filter(|(_, body)| body.as_deref() == Some("B")).count();
    assert_eq!(from_b, 0, "every answer came from A");
    // The restart leaves a short gap (no listener for some milliseconds); the client gets
    // answers from A again well within restart_grace.
    let failed: Vec<Duration> = answers.iter().filter(|(_, body)| body.is_none()).map(|(at, _)| *at).collect();
    if let (Some(first), Some(last)) = (failed.first(), failed.last()) {
        assert!(*last - *first < Duration::from_millis(300), "failures from {first:?} to {last:?}: {answers:?}");
    }
    assert!(answers.iter().rev().take(10).all(|(_, body)| body.as_deref() == Some("A")), "A answers at the end");
    let status = a.status().unwrap();
    assert_eq!(status["nginx"]["restarts"], 1, "{status}");
}

#[test]
fn a_crash_whose_restart_fails_hands_the_vip_over_within_grace_and_skew() {
    let (_bridge, a, b, client) = pair("watch = false");
    std::thread::sleep(SERVED_LONG);
    // The nginx config on disk becomes invalid (not reloaded: watch = false), then nginx dies:
    // the restart exits at once.
    let config = std::fs::read_to_string(a.path("nginx.conf")).unwrap();
    a.write("nginx.conf", &config.replacen("http {", "http {\n  lisen 1;", 1));
    let killed_at = Instant::now();
    a.signal_nginx(libc::SIGKILL);
    b.wait_state("VI_1", "MASTER");
    let handed_over = killed_at.elapsed();
    client.wait_served_by(VIP, "B");
    a.wait_state("VI_1", "FAULT");
    // restart_grace (300 ms) + B's skew ((256 - 90) / 256 s = 0.65 s) is under 1 s; B's
    // master-down time (3.65 s) would mean A never relinquished. 3 s leaves room for a loaded
    // machine and the status polling.
    assert!(handed_over < Duration::from_secs(3), "B took over {handed_over:?} after the kill\n{}", a.log());
    assert!(a.log().contains("nginx is unhealthy"), "{}", a.log());
}

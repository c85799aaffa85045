//! Restart in place and live binary upgrades, against real nginx on loopback.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::local::*;

/// How long nginx serves before it is killed: the first crash 2 s after a start (the old rule
/// took a crash within 10 s of a start for a crash loop).
const SERVED_SHORT: Duration = Duration::from_secs(2);

#[test]
fn kill_9_of_an_nginx_2s_after_its_start_restarts_it_in_place_at_once() {
    let setup = Setup::new("in place");
    let mut daemon = setup.start();
    let before = daemon.wait_serving();
    std::thread::sleep(SERVED_SHORT);
    let killed = signal_nginx(&before, libc::SIGKILL);
    let killed_at = Instant::now();
    wait_body(setup.port, "in place", || daemon.log_text());
    let outage = killed_at.elapsed();
    let after = daemon.wait_for("the new master serving", |n| {
        n["master_pid"].as_i64().is_some_and(|p| p as i32 != killed[0])
            && n["state"] == "running"
            && n["healthy"] == true
    });
    assert_eq!(after["restarts"], 1);
    let log = daemon.log_text();
    assert!(log.contains("restarting it in place in 0 ms"), "Restarting (at once) was published:\n{log}");
    assert!(!log.contains("nginx is unhealthy"), "never reported unhealthy:\n{log}");
    // A generous bound that still fails with a backoff of seconds or a wait for `rise` probes.
    assert!(outage < Duration::from_secs(3), "served again after {outage:?}");
    for pid in killed {
        assert!(!alive(pid), "{pid} of the killed generation is gone");
    }
}

#[test]
fn a_crash_whose_restart_fails_is_unhealthy_at_once() {
    let setup = Setup::new("doomed");
    setup.edit("nginx-ha.toml", "[nginx]\n", "[nginx]\nwatch = false\n");
    let mut daemon = setup.start();
    let before = daemon.wait_serving();
    std::thread::sleep(SERVED_SHORT);
    setup.edit("sites/site.conf", "location", "lisen 1; location");
    signal_nginx(&before, libc::SIGKILL);
    daemon.wait_for("unhealthy after the failed restart", |n| n["healthy"] == false && n["master_pid"].is_null());
    let log = daemon.log_text();
    assert!(log.contains("restarting it in place in 0 ms"), "{log}");
    wait_until("unhealthy reported", || daemon.log_text(), || daemon.log_text().contains("nginx is unhealthy"));
}

/// `[nginx] binary` at a path of the test's own (`bin/nginx`, a copy of the real one), so it
/// can be replaced; `extra` goes into [nginx].
fn setup_with_own_binary(body: &str, extra: &str) -> Setup {
    let setup = Setup::new(body);
    std::fs::create_dir(setup.path("bin")).unwrap();
    std::fs::copy(nginx_binary(), setup.path("bin/nginx")).unwrap();
    let own = setup.path("bin/nginx").display().to_string();
    setup.edit("nginx-ha.toml", &format!("binary = \"{}\"", nginx_binary()), &format!("binary = \"{own}\"\n{extra}"));
    setup
}

/// Puts `file` (written as `text`, or copied from the real nginx) at bin/nginx by rename, as a
/// package manager does.
fn replace_binary(setup: &Setup, text: Option<&str>) {
    let staged = setup.path("bin/nginx.new");
    match text {
        Some(text) => std::fs::write(&staged, text).unwrap(),
        None => {
            std::fs::copy(nginx_binary(), &staged).unwrap();
        }
    }
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&staged, setup.path("bin/nginx")).unwrap();
}

/// A client sending `Connection: close` requests (HTTP/1.0) in a loop until dropped.
struct Client {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Client {
    fn start(port: u16, body: &'static str) -> Client {
        let (stop, ok, failed) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (s, o, f) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if get(port).as_deref() == Some(body) {
                    o.fetch_add(1, Ordering::Relaxed);
                } else {
                    f.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Client { stop, ok, failed, thread: Some(thread) }
    }

    /// (answered, failed)
    fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        (self.ok.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

fn master_of(nginx: &serde_json::Value) -> i32 {
    nginx["master_pid"].as_i64().expect("a master") as i32
}

#[test]
fn upgrade_nginx_replaces_the_master_without_a_failed_request_and_is_adopted_afterwards() {
    let setup = setup_with_own_binary("upgraded", "watch = false");
    let mut daemon = setup.start();
    let before = daemon.wait_serving();
    let (old_master, old_workers) = (master_of(&before), pids(&before["worker_pids"]));
    replace_binary(&setup, None);
    let client = Client::start(setup.port, "upgraded");
    std::thread::sleep(Duration::from_millis(300));
    let out = setup.cli(&["upgrade-nginx"]);
    std::thread::sleep(Duration::from_millis(300));
    let (answered, failed) = client.finish();
    assert!(
        out.status.success(),
        "upgrade-nginx: {}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        daemon.log_text()
    );
    assert_eq!(failed, 0, "{failed} of {} requests failed during the upgrade", answered + failed);
    assert!(answered > 10, "the client ran ({answered} answers)");
    let after = daemon.nginx();
    let new_master = master_of(&after);
    assert_ne!(new_master, old_master, "a new master");
    assert!(!alive(old_master), "the old master is gone when upgrade-nginx returns");
    for worker in &old_workers {
        assert!(!alive(*worker), "old worker {worker} is gone");
    }
    assert_eq!(after["restarts"], 0, "an upgrade is not a restart");
    assert_eq!(after["state"], "running");
    assert_eq!(after["healthy"], true);
    let workers = pids(&after["worker_pids"]);
    assert_eq!(workers.len(), 2, "{after}");
    assert!(workers.iter().all(|w| alive(*w) && !old_workers.contains(w)), "the new master's workers: {after}");
    assert_eq!(std::fs::read_to_string(setup.path("nginx.pid")).unwrap().trim(), new_master.to_string(), "pid file");
    // nginx says so before it opens the configured error_log: on its stderr, which the
    // supervisor logs.
    let log = daemon.log_text();
    assert!(log.contains("using inherited sockets from"), "the old master's sockets, not new ones:\n{log}");

    // The new master is supervised like any other: kill -9 moments after the upgrade restarts it
    // in place, at once (never unhealthy: the VIPs would stay).
    let killed = signal_nginx(&after, libc::SIGKILL);
    let restarted = daemon.wait_for("a restart after the upgrade", |n| {
        n["master_pid"].as_i64().is_some_and(|p| p as i32 != killed[0]) && n["healthy"] == true
    });
    assert_eq!(restarted["restarts"], 1);
    let log = daemon.log_text();
    assert!(log.contains("restarting it in place in 0 ms"), "the first crash after an upgrade:\n{log}");
    assert!(!log.contains("nginx is unhealthy"), "never reported unhealthy:\n{log}");

    // And an nginx-ha restart adopts the master an upgrade left.
    let upgrade_again = setup.cli(&["upgrade-nginx"]);
    assert!(upgrade_again.status.success(), "{}", String::from_utf8_lossy(&upgrade_again.stderr));
    let upgraded = master_of(&daemon.nginx());
    daemon.kill9();
    let mut second = setup.start();
    let adopted = second.wait_serving();
    assert_eq!(master_of(&adopted), upgraded, "adopted, not restarted: {adopted}");
    assert_eq!(adopted["adopted"], true);
}

#[test]
fn a_new_binary_failing_its_config_test_is_refused_and_nginx_untouched() {
    let setup = setup_with_own_binary("refused", "watch = false");
    let mut daemon = setup.start();
    let before = daemon.wait_serving();
    let real = nginx_binary();
    replace_binary(
        &setup,
        Some(&format!(
            "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = -t ] && {{ echo 'nginx: [emerg] this build rejects the config' >&2; exit 1; }}; done\nexec {real} \"$@\"\n"
        )),
    );
    let out = setup.cli(&["upgrade-nginx"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused") && stderr.contains("this build rejects the config"), "{stderr}");
    let after = daemon.nginx();
    assert_eq!(after["master_pid"], before["master_pid"]);
    assert_eq!(after["worker_pids"], before["worker_pids"]);
    assert_eq!(after["restarts"], 0);
    assert_eq!(after["state"], "running");
    assert_eq!(get(setup.port).as_deref(), Some("refused"));
}

#[test]
fn a_new_binary_that_does_not_serve_is_rolled_back() {
    let setup = setup_with_own_binary("rollback", "watch = false\nreload_timeout_ms = 1500");
    let mut daemon = setup.start();
    let before = daemon.wait_serving();
    let real = nginx_binary();
    // Passes `nginx -t` (and -T, -V) but, started as a master (`-c ...`), never serves; it
    // writes the pid file as a master does (and is killed before it could delete it).
    let pid_path = setup.path("nginx.pid").display().to_string();
    replace_binary(
        &setup,
        Some(&format!(
            "#!/bin/sh\n[ \"$1\" = -c ] && {{ echo $$ > {pid_path}; exec sleep 60; }}\nexec {real} \"$@\"\n"
        )),
    );
    let client = Client::start(setup.port, "rollback");
    let started = Instant::now();
    let out = setup.cli(&["upgrade-nginx"]);
    let (answered, failed) = client.finish();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("rolled back"), "{stderr}");
    assert!(started.elapsed() >= Duration::from_millis(1500), "after reload_timeout_ms, not before");
    assert_eq!(failed, 0, "the old nginx served all along ({answered} answered)");
    let after = daemon.nginx();
    assert_eq!(after["master_pid"], before["master_pid"]);
    assert_eq!(after["worker_pids"], before["worker_pids"]);
    assert_eq!(after["restarts"], 0);
    assert_eq!(after["new_master_pid"], serde_json::Value::Null);
    let pid_file = || std::fs::read_to_string(setup.path("nginx.pid")).unwrap_or_default().trim().to_string();
    wait_until(
        "the pid file names the old master again",
        || daemon.log_text(),
        || pid_file() == master_of(&before).to_string(),
    );
    let daemon_pid = daemon.pid();
    wait_until(
        "the new master (sleep) killed and reaped: the old master is the daemon's only child",
        || daemon.log_text(),
        || {
            let children = std::fs::read_dir(format!("/proc/{daemon_pid}/task")).unwrap().flatten().flat_map(|task| {
                std::fs::read_to_string(task.path().join("children"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(String::from)
                    .collect::<Vec<_>>()
            });
            children.filter_map(|pid| pid.parse::<i32>().ok()).collect::<Vec<_>>() == [master_of(&before)]
        },
    );
}

#[test]
fn renaming_a_new_binary_over_the_configured_one_upgrades_nginx() {
    let setup = setup_with_own_binary("renamed", "");
    let mut daemon = setup.start();
    let before = daemon.wait_serving();
    let old_master = master_of(&before);
    let client = Client::start(setup.port, "renamed");
    replace_binary(&setup, None);
    let after = daemon.wait_for("a new master after the rename, the old one gone", |n| {
        n["master_pid"].as_i64().is_some_and(|p| p as i32 != old_master)
            && n["old_master_pid"].is_null()
            && n["state"] == "running"
    });
    std::thread::sleep(Duration::from_millis(200));
    let (answered, failed) = client.finish();
    assert_eq!(failed, 0, "{failed} of {} failed", answered + failed);
    assert!(!alive(old_master));
    assert_eq!(after["restarts"], 0);
    assert!(daemon.log_text().contains("the nginx binary was replaced; upgrading nginx live"));
}

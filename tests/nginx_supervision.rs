//! The supervisor against real nginx: start, crashes, hangs, hot reloads, adoption, CLI.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::local::*;

#[test]
fn starts_nginx_and_serves() {
    let setup = Setup::new("hello");
    let mut daemon = setup.start();
    let nginx = daemon.wait_serving();
    assert_eq!(get(setup.port).as_deref(), Some("hello"));
    assert_eq!(pids(&nginx["worker_pids"]).len(), 2, "worker_processes 2: {nginx}");
    assert_eq!(nginx["restarts"], 0);
    assert_eq!(nginx["config_error"], serde_json::Value::Null);
    let master = nginx["master_pid"].as_i64().unwrap() as i32;
    assert!(alive(master));
    let control = std::fs::metadata(setup.path("control.sock")).unwrap();
    assert!(control.file_type().is_socket());
    assert_eq!(control.permissions().mode() & 0o7777, 0o600, "the control socket is root's only (umask 022)");

    let table = setup.cli(&["status"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("nginx    running, healthy"), "{table}");

    assert!(daemon.terminate().success(), "clean stop exits 0");
    assert!(!alive(master), "nginx is stopped with the daemon");
    assert_eq!(setup.cli(&["status"]).status.code(), Some(3), "no daemon answers: exit 3");
}

#[test]
fn kill_9_of_master_and_workers_restarts_nginx() {
    let setup = Setup::new("up");
    let mut daemon = setup.start();
    let before = daemon.wait_serving();
    let master = before["master_pid"].as_i64().unwrap() as i32;
    signal(master, libc::SIGKILL);
    for worker in pids(&before["worker_pids"]) {
        signal(worker, libc::SIGKILL);
    }
    let after = daemon.wait_for("a new master serving", |n| {
        n["master_pid"].as_i64().is_some_and(|p| p as i32 != master) && n["state"] == "running" && n["healthy"] == true
    });
    assert_eq!(after["restarts"], 1);
    wait_body(setup.port, "up", || daemon.log_text());
    assert!(daemon.log_text().contains("killed by signal 9"), "the exit is explained in the log");
}

#[test]
fn kill_9_of_the_master_alone_leaves_no_orphan() {
    let setup = Setup::new("orphans");
    let mut daemon = setup.start();
    let before = daemon.wait_serving();
    let master = before["master_pid"].as_i64().unwrap() as i32;
    let old_workers = pids(&before["worker_pids"]);
    signal(master, libc::SIGKILL);
    daemon.wait_for("a new master serving", |n| {
        n["master_pid"].as_i64().is_some_and(|p| p as i32 != master) && n["healthy"] == true
    });
    wait_body(setup.port, "orphans", || daemon.log_text());
    for worker in old_workers {
        assert!(!alive(worker), "orphaned worker {worker} of the dead master is gone (killed and reaped)");
        let zombie = std::fs::read_to_string(format!("/proc/{worker}/stat")).is_ok_and(|s| s.contains(") Z "));
        assert!(!zombie, "worker {worker} was reaped, not left a zombie");
    }
}

#[test]
fn a_worker_crash_is_counted_and_the_master_respawns_it() {
    let setup = Setup::new("w");
    let mut daemon = setup.start();
    let before = daemon.wait_serving();
    let victim = pids(&before["worker_pids"])[0];
    signal(victim, libc::SIGKILL);
    let after = daemon.wait_for("the worker exit counted and a new worker tracked", |n| {
        n["worker_exits"] == 1 && pids(&n["worker_pids"]).len() == 2 && !pids(&n["worker_pids"]).contains(&victim)
    });
    assert_eq!(after["master_pid"], before["master_pid"], "a worker death is not a crash");
    assert_eq!(after["restarts"], 0);
}

#[test]
fn a_hung_nginx_becomes_unhealthy_and_recovers() {
    let setup = Setup::new("hang");
    let mut daemon = setup.start();
    let nginx = daemon.wait_serving();
    let all = signal_nginx(&nginx, libc::SIGSTOP);
    let stopped_at = Instant::now();
    let hung = daemon.wait_for("unhealthy", |n| n["healthy"] == false);
    // At worst fall (2) × (interval 200 ms + timeout 150 ms) = 0.7 s after the stop, plus the
    // 50 ms status poll; 2 s leaves slack for a loaded CI machine and still fails if the probe
    // timeout or fall were ignored.
    assert!(stopped_at.elapsed() < Duration::from_secs(2), "noticed after {:?}", stopped_at.elapsed());
    assert_eq!(hung["state"], "running", "a hang is reported, the process is not restarted");
    assert!(hung["last_probe_error"].as_str().is_some_and(|e| e.contains("no answer")), "{hung}");
    for &pid in &all {
        signal(pid, libc::SIGCONT);
    }
    let back = daemon.wait_serving();
    assert_eq!(back["master_pid"], nginx["master_pid"]);
}

#[test]
fn editing_an_included_file_reloads_nginx() {
    let setup = Setup::new("one");
    let mut daemon = setup.start();
    let before = daemon.wait_serving();
    setup.set_body("two");
    wait_body(setup.port, "two", || daemon.log_text());
    let after = daemon.wait_for("the reload confirmed", |n| n["state"] == "running");
    assert_eq!(after["master_pid"], before["master_pid"], "a reload, not a restart");
    assert_eq!(after["restarts"], 0);
}

#[test]
fn editor_style_rename_and_main_file_edits_reload_nginx() {
    let setup = Setup::new("a");
    let mut daemon = setup.start();
    daemon.wait_serving();
    // write-to-temp-and-rename, as vim and most editors do
    setup.write("sites/.site.conf.swp", &setup.site("b"));
    std::fs::rename(setup.path("sites/.site.conf.swp"), setup.path("sites/site.conf")).unwrap();
    wait_body(setup.port, "b", || daemon.log_text());
    // the main file alone: a header only this edit produces is served
    let main = std::fs::read_to_string(setup.path("nginx.conf")).unwrap();
    assert!(get_raw(setup.port).is_some_and(|answer| !answer.contains("X-Test")));
    setup.write("nginx.conf", &main.replace("access_log off;", "access_log off;\n  add_header X-Test main;"));
    let mut last = None;
    wait_until(
        "the main-file edit served (X-Test header)",
        || daemon.log_text(),
        || {
            last = get_raw(setup.port);
            last.as_ref().is_some_and(|answer| answer.contains("\r\nX-Test: main\r\n"))
        },
    );
    assert!(last.unwrap().ends_with("\r\n\r\nb\n"), "the included file is unchanged");
    // then the included file again, with the main-file change kept
    std::fs::write(setup.path("sites/site.conf"), setup.site("c")).unwrap();
    wait_body(setup.port, "c", || daemon.log_text());
    assert!(get_raw(setup.port).is_some_and(|answer| answer.contains("\r\nX-Test: main\r\n")));
}

/// Inode numbers of everything the process watches with inotify (from /proc/PID/fdinfo).
fn inotify_watched_inodes(pid: i32) -> Vec<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return Vec::new() };
    fds.filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_to_string(fd.path()).ok())
        .flat_map(|info| {
            info.lines()
                .filter(|line| line.starts_with("inotify wd:"))
                .filter_map(|line| line.split_whitespace().find_map(|field| field.strip_prefix("ino:")))
                .filter_map(|ino| u64::from_str_radix(ino, 16).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Adds `include more/*.conf` (and a header) to the main nginx config and waits until nginx
/// serves the header, i.e. the edit was reloaded.
fn include_more(setup: &Setup, daemon: &Daemon) {
    let main = std::fs::read_to_string(setup.path("nginx.conf")).unwrap();
    let include = format!("include {}/*.conf;\n  add_header X-Reloaded yes;", setup.path("more").display());
    setup.write("nginx.conf", &main.replace("include ", &format!("{include}\n  include ")));
    wait_until(
        "the new include reloaded",
        || daemon.log_text(),
        || get_raw(setup.port).is_some_and(|answer| answer.contains("\r\nX-Reloaded: yes\r\n")),
    );
}

#[test]
fn the_watch_set_follows_a_new_include_after_a_reload() {
    use std::os::unix::fs::MetadataExt;
    let setup = Setup::new("base");
    let mut daemon = setup.start();
    daemon.wait_serving();
    std::fs::create_dir(setup.path("more")).unwrap();
    let more = std::fs::metadata(setup.path("more")).unwrap().ino();
    assert!(!inotify_watched_inodes(daemon.pid()).contains(&more), "more/ is not part of the config yet");

    include_more(&setup, &daemon);
    // The watch set is recomputed from `nginx -T` after the reload, asynchronously: a file
    // created before the new watch is in place would go unseen, so wait for it first.
    wait_until(
        "more/ watched after the reload",
        || daemon.log_text(),
        || inotify_watched_inodes(daemon.pid()).contains(&more),
    );

    let port = free_port();
    setup.write("more/extra.conf", &site_on(port, "more"));
    wait_body(port, "more", || daemon.log_text());
    setup.write("more/extra.conf", &site_on(port, "more2"));
    wait_body(port, "more2", || daemon.log_text());
}

#[test]
fn a_file_created_while_the_watch_set_is_recomputed_is_not_missed() {
    // nginx behind a wrapper whose `nginx -T` takes 1.5 s: the window between the reload (nginx
    // has read its config) and the new watch set (from `nginx -T`) is wide open.
    let setup = Setup::new("base");
    let wrapper = setup.path("slow-dump-nginx");
    setup.write(
        "slow-dump-nginx",
        &format!(
            "#!/bin/sh
case \" $* \" in *\" -T \"*) sleep 1.5 ;; esac
exec {} \"$@\"\n",
            nginx_binary()
        ),
    );
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let toml = std::fs::read_to_string(setup.config()).unwrap();
    setup.write("nginx-ha.toml", &toml.replace(nginx_binary(), &wrapper.display().to_string()));
    let mut daemon = setup.start();
    daemon.wait_serving();

    std::fs::create_dir(setup.path("more")).unwrap();
    include_more(&setup, &daemon);
    // Inside the window: more/ is not watched yet, so this raises no event.
    let port = free_port();
    setup.write("more/extra.conf", &site_on(port, "more"));
    wait_body(port, "more", || daemon.log_text());
    assert!(daemon.log_text().contains("changed while its watch was being updated"), "{}", daemon.log_text());
}

#[test]
fn a_new_file_in_an_included_directory_is_picked_up() {
    let setup = Setup::new("base");
    let mut daemon = setup.start();
    daemon.wait_serving();
    let port = free_port();
    setup.write("sites/extra.conf", &site_on(port, "extra"));
    wait_body(port, "extra", || daemon.log_text());
}

#[test]
fn an_invalid_config_never_reaches_nginx() {
    let setup = Setup::new("good");
    let mut daemon = setup.start();
    let before = daemon.wait_serving();
    setup.write("sites/site.conf", "server { lisen 80; }\n");
    let rejected = daemon.wait_for("config_error set", |n| n["config_error"].is_string());
    let error = rejected["config_error"].as_str().unwrap();
    assert!(error.contains("unknown directive \"lisen\"") && error.contains("site.conf:1"), "{error}");
    assert_eq!(rejected["master_pid"], before["master_pid"], "nginx not restarted");
    assert_eq!(rejected["worker_pids"], before["worker_pids"], "nginx not even reloaded");
    assert_eq!(get(setup.port).as_deref(), Some("good"), "the old config keeps serving");
    assert_eq!(rejected["healthy"], true);

    let out = setup.cli(&["reload"]);
    assert_eq!(out.status.code(), Some(1), "reload is rejected");
    assert!(String::from_utf8_lossy(&out.stderr).contains("lisen"), "with the reason");

    setup.set_body("fixed");
    wait_body(setup.port, "fixed", || daemon.log_text());
    daemon.wait_for("config_error cleared", |n| n["config_error"].is_null());
    let out = setup.cli(&["reload"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn reload_rereads_the_own_config_and_rejects_a_broken_one() {
    let setup = Setup::new("r");
    let mut daemon = setup.start();
    daemon.wait_serving();
    let good = std::fs::read_to_string(setup.config()).unwrap();
    setup.write("nginx-ha.toml", &format!("{good}\n[bogus]\nx = 1\n"));
    let out = setup.cli(&["reload"]);
    // The CLI finds the socket from the (now broken) file's default, so point it explicitly.
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    setup.write("nginx-ha.toml", &good);
    if out.status.code() == Some(1) {
        assert!(stderr.contains("unknown field `bogus`"), "{stderr}");
        let nginx = daemon.nginx();
        assert!(nginx["config_error"].as_str().is_some_and(|e| e.contains("bogus")), "{nginx}");
    } else {
        panic!("expected exit 1, got {:?}: {stderr}", out.status.code());
    }
    let out = setup.cli(&["reload"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(daemon.nginx()["config_error"].is_null());
}

#[test]
fn a_restarted_daemon_adopts_the_running_nginx_without_failed_requests() {
    let setup = Setup::new("adopt");
    let mut daemon = setup.start();
    let before = daemon.wait_serving();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let client = {
        let (stop, ok, failed, port) = (stop.clone(), ok.clone(), failed.clone(), setup.port);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match get(port) {
                    Some(_) => ok.fetch_add(1, Ordering::Relaxed),
                    None => failed.fetch_add(1, Ordering::Relaxed),
                };
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    daemon.kill9();
    std::thread::sleep(Duration::from_millis(300));
    let mut second = setup.start();
    let after = second.wait_serving();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();

    assert_eq!(after["master_pid"], before["master_pid"], "the same master, adopted");
    assert_eq!(after["adopted"], true);
    assert_eq!(after["restarts"], 0);
    assert!(ok.load(Ordering::Relaxed) > 10);
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no failed request across the daemon restart");
    assert!(second.log_text().contains("adopted the running nginx master"));

    // The adopted master is still supervised: a crash is restarted.
    let master = after["master_pid"].as_i64().unwrap() as i32;
    signal(master, libc::SIGKILL);
    second.wait_for("restart after adoption", |n| {
        n["master_pid"].as_i64().is_some_and(|p| p as i32 != master) && n["healthy"] == true
    });
    for worker in pids(&after["worker_pids"]) {
        assert!(!alive(worker), "orphaned worker {worker} of the adopted master was killed");
    }
}

#[test]
fn bad_startup_config_is_failed_until_fixed() {
    let setup = Setup::new("later");
    setup.write("sites/site.conf", "server { lisen 80; }\n");
    let mut daemon = setup.start();
    let failed =
        daemon.wait_for("failed with the nginx error", |n| n["state"] == "failed" && n["config_error"].is_string());
    assert!(failed["master_pid"].is_null(), "nothing was started");
    setup.set_body("later");
    wait_body(setup.port, "later", || daemon.log_text());
    daemon.wait_serving();
}

#[test]
fn check_validates_both_configs() {
    let setup = Setup::new("c");
    let out = setup.cli(&["check"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    setup.write("sites/site.conf", "server { lisen 80; }\n");
    let out = setup.cli(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown directive \"lisen\""));

    setup.set_body("c");
    let toml = std::fs::read_to_string(setup.config()).unwrap();
    let router = "\n[[vrrp]]\nname = \"VI_1\"\ninterface = \"nhamissing0\"\nvrid = 1\npriority = 100\nvirtual_ips = [\"198.18.0.100/24\"]\n";
    setup.write("nginx-ha.toml", &format!("{toml}{router}"));
    let out = setup.cli(&["check"]);
    assert!(out.status.success(), "a missing interface is no config error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning: interface nhamissing0 does not exist"), "{stderr}");

    setup.write("nginx-ha.toml", &toml.replace("[health]\n", "[health]\nfal = 3\n"));
    let out = setup.cli(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!("{}:", setup.config().display());
    assert!(stderr.starts_with(&expected) && stderr.contains("unknown field `fal`"), "{stderr}");
    let line_col = stderr[expected.len()..].split(':').take(2).collect::<Vec<_>>();
    assert!(line_col.iter().all(|n| n.parse::<u32>().is_ok()), "file:line:col: {stderr}");
}

#[test]
fn a_daemon_directive_in_the_nginx_config_is_explained() {
    let setup = Setup::new("d");
    let main = std::fs::read_to_string(setup.path("nginx.conf")).unwrap();
    setup.write("nginx.conf", &format!("daemon on;\n{main}"));
    let out = setup.cli(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("remove the `daemon`"), "{stderr}");
}

#[test]
fn a_second_daemon_on_the_same_socket_refuses_to_start() {
    let setup = Setup::new("one");
    let mut first = setup.start();
    first.wait_serving();
    let out = std::process::Command::new(BIN).args(["run", "-c"]).arg(setup.config()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another nginx-ha is running"));
    first.wait_serving();
}

#[test]
fn tells_systemd_ready_watchdog_and_stopping() {
    let setup = Setup::new("sd");
    let socket_path = setup.path("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut daemon =
        setup.start_with_env(&[("NOTIFY_SOCKET", socket_path.to_str().unwrap()), ("WATCHDOG_USEC", "400000")]);
    let mut messages = String::new();
    let receive_until = |messages: &mut String, wanted: &str| {
        let deadline = Instant::now() + PATIENCE;
        let mut buf = [0u8; 4096];
        while !messages.contains(wanted) {
            assert!(Instant::now() < deadline, "no {wanted} in {messages:?}");
            if let Ok(n) = socket.recv(&mut buf) {
                messages.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    };
    receive_until(&mut messages, "READY=1");
    assert!(get(setup.port).is_some(), "READY comes once nginx serves");
    receive_until(&mut messages, "WATCHDOG=1");
    assert!(messages.contains("STATUS=nginx running"), "{messages}");
    let status = daemon.terminate();
    assert!(status.success());
    receive_until(&mut messages, "STOPPING=1");
}

#[test]
fn every_worker_is_tracked_and_a_reload_is_confirmed_by_new_ones_only() {
    let setup = Setup::new("eight");
    let main = std::fs::read_to_string(setup.path("nginx.conf")).unwrap();
    setup.write("nginx.conf", &main.replace("worker_processes 2;", "worker_processes 8;"));
    let mut daemon = setup.start();
    let before = daemon.wait_serving();
    assert_eq!(pids(&before["worker_pids"]).len(), 8, "all workers tracked from the start: {before}");
    let out = setup.cli(&["reload"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let after = daemon.nginx();
    let (old, new) = (pids(&before["worker_pids"]), pids(&after["worker_pids"]));
    assert_eq!(new.len(), 8, "all new workers tracked right after the reload: {after}");
    assert!(
        new.iter().all(|pid| !old.contains(pid)),
        "the reload is confirmed by new workers only: {old:?} -> {new:?}"
    );
    assert!(
        pids(&after["draining_pids"]).iter().all(|pid| old.contains(pid)),
        "only old workers are draining: {after}"
    );
    // The old generation drains (idle: at once) and status stops listing it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !pids(&daemon.nginx()["draining_pids"]).is_empty() {
        assert!(std::time::Instant::now() < deadline, "old workers still draining: {}", daemon.nginx());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(old.iter().all(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()), "old workers are gone");
    assert_eq!(daemon.nginx()["worker_exits"], 0, "old workers draining after a reload are not crashes");
    assert!(daemon.log_text().contains("the old nginx workers have drained"), "{}", daemon.log_text());
}

#[test]
fn a_master_running_another_config_is_not_adopted_nor_touched() {
    let setup = Setup::new("ours");
    // Someone else's nginx: another config (another port) but the same pid file.
    let main = std::fs::read_to_string(setup.path("nginx.conf")).unwrap();
    let other_port = free_port();
    let sites = format!("include {}/sites/*.conf;", setup.dir.path().display());
    setup.write("other.conf", &main.replace(&sites, &site_on(other_port, "theirs")));
    let mut foreign = Command::new(nginx_binary())
        .arg("-c")
        .arg(setup.path("other.conf"))
        .args(["-g", "daemon off; master_process on;"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let foreign_pid = foreign.id() as i32;
    wait_body(other_port, "theirs", String::new);
    assert_eq!(std::fs::read_to_string(setup.path("nginx.pid")).unwrap().trim(), foreign_pid.to_string());

    let mut daemon = setup.start();
    let nginx = daemon.wait_serving();
    assert_ne!(nginx["master_pid"], foreign_pid, "not adopted: {nginx}");
    assert_eq!(nginx["adopted"], false);
    assert_eq!(get(setup.port).as_deref(), Some("ours"));
    assert_eq!(get(other_port).as_deref(), Some("theirs"), "the other nginx is left alone");
    assert!(daemon.log_text().contains("with another config"), "{}", daemon.log_text());

    let workers = std::fs::read_to_string(format!("/proc/{foreign_pid}/task/{foreign_pid}/children")).unwrap();
    let _ = foreign.kill();
    let _ = foreign.wait();
    for pid in workers.split_whitespace().filter_map(|p| p.parse().ok()) {
        signal(pid, libc::SIGKILL);
    }
}

#[test]
fn an_edit_made_while_the_daemon_was_down_is_applied_on_adoption() {
    let setup = Setup::new("before");
    let mut daemon = setup.start();
    let before = daemon.wait_serving();
    daemon.kill9();
    std::thread::sleep(Duration::from_millis(1100));
    setup.set_body("while-away");
    assert_eq!(get(setup.port).as_deref(), Some("before"), "nobody reloads nginx while nginx-ha is down");
    let mut second = setup.start();
    wait_body(setup.port, "while-away", || second.log_text());
    let after = second.wait_serving();
    assert_eq!(after["master_pid"], before["master_pid"], "adopted and reloaded, not restarted");
}

#[test]
fn metrics_listen_serves_prometheus_text() {
    let setup = Setup::new("m");
    let port = free_port();
    let toml = std::fs::read_to_string(setup.config()).unwrap();
    setup.write(
        "nginx-ha.toml",
        &toml.replace("[daemon]\n", &format!("[daemon]\nmetrics_listen = \"127.0.0.1:{port}\"\n")),
    );
    let mut daemon = setup.start();
    daemon.wait_serving();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(&mut stream, b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stream, &mut text).unwrap();
    assert!(text.starts_with("HTTP/1.0 200 OK"), "{text}");
    assert!(text.lines().any(|l| l == "nginx_ha_nginx_healthy 1"), "{text}");
    assert!(text.lines().any(|l| l == "nginx_ha_nginx_workers 2"), "{text}");
}

fn output(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn reload_applies_changed_health_and_watch_settings() {
    let setup = Setup::new("one");
    let mut daemon = setup.start();
    daemon.wait_serving();
    let probe = format!("http://127.0.0.1:{}/", setup.port);

    // [health] http pointed at a port where nothing listens: the new probe fails at once.
    let nothing = format!("http://127.0.0.1:{}/", free_port());
    setup.edit("nginx-ha.toml", &probe, &nothing);
    let out = setup.cli(&["reload"]);
    assert!(out.status.success(), "{}", output(&out));
    assert!(output(&out).contains("reload applied; nginx-ha settings changed: [health] http"), "{}", output(&out));
    let failing = daemon.wait_for("the new probe failing", |n| n["healthy"] == false);
    assert!(failing["last_probe_error"].is_string(), "{failing}");
    assert_eq!(failing["state"], "running");
    setup.edit("nginx-ha.toml", &nothing, &probe);
    assert!(setup.cli(&["reload"]).status.success());
    let back = daemon.wait_serving();
    assert!(back["last_probe_error"].is_null(), "{back}");

    // watch = false: an edit of the nginx config is no longer reloaded by itself.
    setup.edit("nginx-ha.toml", "watch_debounce_ms = 50", "watch = false\nwatch_debounce_ms = 50");
    let out = setup.cli(&["reload"]);
    assert!(output(&out).contains("nginx-ha settings changed: [nginx] watch"), "{}", output(&out));
    let before = daemon.wait_for("the reload confirmed", |n| n["state"] == "running");
    setup.set_body("two");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(get(setup.port).as_deref(), Some("one"), "not reloaded with watch = false:\n{}", daemon.log_text());
    assert_eq!(daemon.nginx()["worker_pids"], before["worker_pids"]);

    // watch = true again: the reload itself applies the pending edit, and the next edit is seen.
    setup.edit("nginx-ha.toml", "watch = false\n", "");
    let out = setup.cli(&["reload"]);
    assert!(output(&out).contains("nginx-ha settings changed: [nginx] watch"), "{}", output(&out));
    // (Old workers may answer a moment longer: they close their listen sockets after the HUP.)
    wait_body(setup.port, "two", || daemon.log_text());
    setup.set_body("three");
    wait_body(setup.port, "three", || daemon.log_text());

    // Nothing changed: nothing to name.
    let out = setup.cli(&["reload"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "reload applied\n");
    assert_eq!(daemon.nginx()["restarts"], 0);
}

#[test]
fn reload_rejects_a_key_that_needs_a_restart_and_keeps_the_old_settings() {
    let setup = Setup::new("old");
    let mut daemon = setup.start();
    daemon.wait_serving();
    let good = std::fs::read_to_string(setup.config()).unwrap();
    // Live keys (watch, the probe) changed together with keys that need a restart: none applies.
    let nothing = format!("http://127.0.0.1:{}/", free_port());
    let router = "\n[[vrrp]]\nname = \"VI_1\"\ninterface = \"nhamissing0\"\nvrid = 1\npriority = 100\nvirtual_ips = [\"198.18.0.100/24\"]\n";
    let changed = good
        .replace("watch_debounce_ms = 50", "watch = false\nwatch_debounce_ms = 50")
        .replace(&format!("http://127.0.0.1:{}/", setup.port), &nothing)
        .replace("[daemon]\n", &format!("[daemon]\nmetrics_listen = \"127.0.0.1:{}\"\n", free_port()));
    setup.write("nginx-ha.toml", &format!("{changed}{router}"));

    let out = setup.cli(&["reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("reload rejected: [daemon] metrics_listen, [[vrrp]] \"VI_1\" (added) changed;")
            && stderr.contains("restart it (`systemctl restart nginx-ha`)")
            && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    let nginx = daemon.nginx();
    assert!(nginx["config_error"].as_str().is_some_and(|e| e.contains("[daemon] metrics_listen")), "{nginx}");

    // The daemon runs on with the old settings: the old probe keeps it healthy, watch stays on.
    std::thread::sleep(Duration::from_millis(1000));
    let nginx = daemon.nginx();
    assert_eq!(nginx["healthy"], true, "the old probe, not the unapplied one: {nginx}");
    assert!(nginx["last_probe_error"].is_null(), "{nginx}");
    setup.set_body("watched");
    wait_body(setup.port, "watched", || daemon.log_text());

    setup.write("nginx-ha.toml", &good);
    let out = setup.cli(&["reload"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "reload applied\n", "{}", output(&out));
    assert!(daemon.nginx()["config_error"].is_null());
}

#[test]
fn a_stopped_nginx_is_escalated_from_quit_to_term_to_kill_on_shutdown() {
    let setup = Setup::new("stuck");
    let toml = std::fs::read_to_string(setup.config()).unwrap();
    setup.write("nginx-ha.toml", &toml.replace("stop_timeout_ms = 3000", "stop_timeout_ms = 300"));
    let mut daemon = setup.start();
    let nginx = daemon.wait_serving();
    let all = signal_nginx(&nginx, libc::SIGSTOP);
    let asked = Instant::now();
    let status = daemon.terminate();
    let took = asked.elapsed();
    let log = daemon.log_text();
    assert!(status.success(), "{status:?}\n{log}");
    // QUIT, 300 ms, TERM, 3 s, KILL: about 3.3 s, slack for a loaded machine.
    assert!(took < Duration::from_secs(10), "stopping took {took:?}\n{log}");
    assert!(log.contains("nginx did not stop gracefully within 300 ms; sending TERM"), "{log}");
    assert!(log.contains("nginx ignored TERM; sending KILL"), "{log}");
    wait_until("every nginx process gone", || daemon.log_text(), || all.iter().all(|&pid| !alive(pid)));
}

#[test]
fn sigint_stops_like_sigterm() {
    let setup = Setup::new("int");
    let mut daemon = setup.start();
    let nginx = daemon.wait_serving();
    let all: Vec<i32> =
        std::iter::once(nginx["master_pid"].as_i64().unwrap() as i32).chain(pids(&nginx["worker_pids"])).collect();
    let status = daemon.stop_with(libc::SIGINT);
    let log = daemon.log_text();
    assert!(status.success(), "a clean stop exits 0: {status:?}\n{log}");
    assert!(log.contains("SIGINT: shutting down") && log.contains("nginx-ha stopped"), "{log}");
    assert!(!log.contains("sending TERM"), "nginx stopped gracefully (QUIT): {log}");
    wait_until("every nginx process gone", || daemon.log_text(), || all.iter().all(|&pid| !alive(pid)));
    assert_eq!(setup.cli(&["status"]).status.code(), Some(3), "no daemon answers: exit 3");
}

#[test]
fn sighup_reloads_like_the_reload_command() {
    let setup = Setup::new("before-hup");
    let mut daemon = setup.start();
    let before = daemon.wait_serving();
    // The watcher would reload too: turn it off so that only SIGHUP can.
    setup.edit("nginx-ha.toml", "watch_debounce_ms = 50", "watch_debounce_ms = 50\nwatch = false");
    let out = setup.cli(&["reload"]);
    assert!(out.status.success(), "{}", output(&out));
    setup.set_body("after-hup");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(get(setup.port).as_deref(), Some("before-hup"), "watch = false: nothing reloads by itself");
    common::process::signal(daemon.pid(), libc::SIGHUP);
    wait_body(setup.port, "after-hup", || daemon.log_text());
    let after = daemon.wait_for("the reload confirmed", |n| n["state"] == "running");
    assert_eq!(after["master_pid"], before["master_pid"], "a reload, not a restart");
    assert!(daemon.log_text().contains("SIGHUP: reloading"));
}

#[test]
fn concurrent_reloads_from_the_cli_the_watcher_and_sighup_all_settle() {
    let setup = Setup::new("v0");
    let mut daemon = setup.start();
    let before = daemon.wait_serving();
    setup.set_body("v1");
    let clis: Vec<_> = (0..3)
        .map(|_| {
            let config = setup.config();
            std::thread::spawn(move || {
                std::process::Command::new(common::process::BIN).args(["reload", "-c"]).arg(config).output().unwrap()
            })
        })
        .collect();
    common::process::signal(daemon.pid(), libc::SIGHUP);
    common::process::signal(daemon.pid(), libc::SIGHUP);
    for cli in clis {
        let out = cli.join().unwrap();
        assert!(out.status.success(), "every concurrent reload is answered: {}", output(&out));
    }
    wait_body(setup.port, "v1", || daemon.log_text());
    let after = daemon.wait_for("running and healthy", |n| n["state"] == "running" && n["healthy"] == true);
    assert_eq!(after["master_pid"], before["master_pid"]);
    assert_eq!(after["restarts"], 0);
    assert!(after["config_error"].is_null(), "{after}");
    // And it still reloads afterwards.
    setup.set_body("v2");
    wait_body(setup.port, "v2", || daemon.log_text());
}

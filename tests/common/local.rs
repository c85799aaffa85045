//! Drives the real nginx-ha binary with real nginx in a temp dir on loopback.
//! Every process a test starts is stopped by pid when the test ends, even on panic.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use super::process::{BIN, PATIENCE, is_nginx, nginx_binary, signal};
use super::process::{http_exchange, http_get, stop_child};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A temp dir with an nginx config answering `body` on a free loopback port, and an
/// nginx-ha config supervising it.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Setup {
    pub fn new(body: &str) -> Setup {
        Self::with_health(body, "interval_ms = 200\ntimeout_ms = 150\nfall = 2\nrise = 2\n")
    }

    /// `health` is the body of the [health] table; `{port}` in it is replaced.
    pub fn with_health(body: &str, health: &str) -> Setup {
        let dir = tempfile::Builder::new().prefix("nginx-ha-test-").tempdir().unwrap();
        let port = free_port();
        let setup = Setup { dir, port };
        let d = setup.dir.path().display().to_string();
        setup.write(
            "nginx.conf",
            &format!(
                "worker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 256; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  include {d}/sites/*.conf;\n}}\n"
            ),
        );
        std::fs::create_dir(setup.path("sites")).unwrap();
        setup.set_body(body);
        let health = health.replace("{port}", &port.to_string());
        setup.write(
            "nginx-ha.toml",
            &format!(
                "[nginx]\nbinary = \"{}\"\nconfig = \"{d}/nginx.conf\"\nwatch_debounce_ms = 50\nstop_timeout_ms = 3000\n\n\
                 [health]\nhttp = \"http://127.0.0.1:{port}/\"\n{health}\n\
                 [daemon]\ncontrol_socket = \"{d}/control.sock\"\nstate_dir = \"{d}/state\"\n",
                nginx_binary()
            ),
        );
        setup
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).unwrap();
    }

    pub fn site(&self, body: &str) -> String {
        site_on(self.port, body)
    }

    /// Rewrites the included site file in place.
    pub fn set_body(&self, body: &str) {
        self.write("sites/site.conf", &self.site(body));
    }

    /// Replaces `from` (which must be there) by `to` in file `name`.
    pub fn edit(&self, name: &str, from: &str, to: &str) {
        let text = std::fs::read_to_string(self.path(name)).unwrap();
        assert!(text.contains(from), "{name} has no {from:?}:\n{text}");
        self.write(name, &text.replacen(from, to, 1));
    }

    pub fn config(&self) -> PathBuf {
        self.path("nginx-ha.toml")
    }

    pub fn start(&self) -> Daemon {
        self.start_with_env(&[])
    }

    pub fn start_with_env(&self, env: &[(&str, &str)]) -> Daemon {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.path("daemon.log")).unwrap();
        let mut command = Command::new(BIN);
        // A fixed, common umask (022) whatever the runner's: modes the daemon sets must show.
        // SAFETY: umask(2) is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::umask(0o022);
                Ok(())
            });
        }
        let child = command
            .args(["run", "-c"])
            .arg(self.config())
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        super::process::record_pid(child.id());
        Daemon {
            child: Some(child),
            config: self.config(),
            log: self.path("daemon.log"),
            port: self.port,
            nginx_pids: Vec::new(),
        }
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        let mut command = Command::new(BIN);
        command.args(args).arg("-c").arg(self.config());
        command.output().unwrap()
    }
}

pub struct Daemon {
    child: Option<Child>,
    pub config: PathBuf,
    pub log: PathBuf,
    pub port: u16,
    /// nginx processes seen, stopped by pid at the end of the test.
    nginx_pids: Vec<i32>,
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn status(&self) -> Option<serde_json::Value> {
        let out = Command::new(BIN).args(["status", "--json", "-c"]).arg(&self.config).output().unwrap();
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn nginx(&mut self) -> serde_json::Value {
        let status = self.status().expect("the daemon answers");
        self.remember(&status);
        status["nginx"].clone()
    }

    fn remember(&mut self, status: &serde_json::Value) {
        let nginx = &status["nginx"];
        let pids = nginx["master_pid"]
            .as_i64()
            .into_iter()
            .chain(nginx["worker_pids"].as_array().into_iter().flatten().filter_map(|p| p.as_i64()));
        for pid in pids {
            if !self.nginx_pids.contains(&(pid as i32)) {
                self.nginx_pids.push(pid as i32);
            }
        }
    }

    /// Polls the status until `check` holds; panics with the log after PATIENCE.
    pub fn wait_for(&mut self, what: &str, check: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.status() {
                self.remember(&status);
                if check(&status["nginx"]) {
                    return status["nginx"].clone();
                }
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; status: {:?}\nlog:\n{}", self.status(), self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_serving(&mut self) -> serde_json::Value {
        self.wait_for("nginx running and healthy", |n| n["state"] == "running" && n["healthy"] == true)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL the daemon itself (nginx keeps running).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits (up to PATIENCE) for a daemon that stops by itself, e.g. refusing to start.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.wait_for_exit("daemon did not stop by itself")
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.stop_with(libc::SIGTERM)
    }

    /// Sends `sig` to the daemon and waits (up to PATIENCE) for its exit status.
    pub fn stop_with(&mut self, sig: i32) -> std::process::ExitStatus {
        signal(self.child.as_ref().expect("daemon running").id() as i32, sig);
        self.wait_for_exit(&format!("daemon did not stop after signal {sig}"))
    }

    fn wait_for_exit(&mut self, what: &str) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "{what}:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child);
        }
        // Only processes this test saw as its nginx, and only if they still are nginx.
        for &pid in &self.nginx_pids {
            if is_nginx(pid) {
                signal(pid, libc::SIGKILL);
            }
        }
    }
}

pub fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists() && is_nginx(pid)
}

/// One HTTP GET on loopback; the body, or None on any failure.
pub fn get(port: u16) -> Option<String> {
    http_get(([127, 0, 0, 1], port).into(), Duration::from_secs(2))
}

/// One HTTP GET on loopback: the whole answer with status line and headers, or None.
pub fn get_raw(port: u16) -> Option<String> {
    http_exchange(([127, 0, 0, 1], port).into(), Duration::from_secs(2))
}

/// Waits until GET answers `body`.
pub fn wait_body(port: u16, body: &str, log: impl Fn() -> String) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got = get(port);
        if got.as_deref() == Some(body) {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for body {body:?}, last got {got:?}; log:\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub fn pids(value: &serde_json::Value) -> Vec<i32> {
    value.as_array().into_iter().flatten().filter_map(|p| p.as_i64()).map(|p| p as i32).collect()
}

/// Polls `condition` every 25 ms; panics with `what` and the log after PATIENCE.
pub fn wait_until(what: &str, log: impl Fn() -> String, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}; log:\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A server block answering `body` on 127.0.0.1:`port`.
pub fn site_on(port: u16, body: &str) -> String {
    format!("server {{\n  listen 127.0.0.1:{port};\n  location / {{ return 200 \"{body}\\n\"; }}\n}}\n")
}

/// Sends `sig` to the master and the workers named in the `nginx` part of a status document;
/// returns their pids.
pub fn signal_nginx(nginx: &serde_json::Value, sig: i32) -> Vec<i32> {
    let master = nginx["master_pid"].as_i64().expect("a master pid") as i32;
    let all: Vec<i32> = std::iter::once(master).chain(pids(&nginx["worker_pids"])).collect();
    for &pid in &all {
        signal(pid, sig);
    }
    all
}

//! Multi-node clusters in network namespaces: each node runs real nginx under a real
//! nginx-ha (or keepalived), all on one bridge; a client namespace asks the VIPs.
//! Every process is stopped by pid and every namespace deleted when the test ends.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::netns::{Bridge, NetNs, join, wait_until};
use super::process::stop_child;
pub use super::process::{BIN, PATIENCE, http_get, is_nginx, nginx_binary, signal};

/// A host on the bridge: its namespace, its eth0 address, its nginx (answering its name on
/// port 80) and optionally nginx-ha.
pub struct Node {
    pub name: String,
    pub ns: NetNs,
    pub address: String,
    /// The bridge-side end of eth0: set it down to cut this node's link.
    pub bridge_port: String,
    pub dir: tempfile::TempDir,
    daemon: Option<Child>,
    /// Processes stopped by [`Node::power_cut`], continued when the node is dropped.
    frozen: Vec<i32>,
}

impl Node {
    pub fn new(bridge: &Bridge, name: &str, cidr: &str) -> Node {
        let ns = NetNs::new();
        let bridge_port = bridge.connect(&ns, "eth0", cidr);
        let dir = tempfile::Builder::new().prefix(&format!("nginx-ha-{name}-")).tempdir().unwrap();
        let node = Node {
            name: name.into(),
            ns,
            address: cidr.split('/').next().unwrap().into(),
            bridge_port,
            dir,
            daemon: None,
            frozen: Vec::new(),
        };
        let d = node.dir.path().display().to_string();
        node.write(
            "nginx.conf",
            &format!(
                "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nevents {{ worker_connections 128; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
                   server {{ listen 80; listen [::]:80; location / {{ return 200 \"{name}\\n\"; }}\n\
                     location = /nginx_status {{ stub_status; }} }}\n}}\n"
            ),
        );
        node
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).unwrap();
    }

    /// Writes nginx-ha.toml: the given [[vrrp]] tables (and anything else) after the common part.
    pub fn configure(&self, tables: &str) {
        let d = self.dir.path().display().to_string();
        self.write(
            "nginx-ha.toml",
            &format!(
                "[nginx]\nbinary = \"{}\"\nconfig = \"{d}/nginx.conf\"\nstop_timeout_ms = 3000\n\n\
                 [health]\ninterval_ms = 200\ntimeout_ms = 150\nfall = 2\nrise = 2\nhttp = \"http://127.0.0.1:80/\"\n\n\
                 [daemon]\ncontrol_socket = \"{d}/control.sock\"\nstate_dir = \"{d}/state\"\n\n{tables}",
                nginx_binary()
            ),
        );
    }

    pub fn config(&self) -> PathBuf {
        self.path("nginx-ha.toml")
    }

    /// Starts nginx-ha inside the namespace.
    pub fn start(&mut self) {
        assert!(self.daemon.is_none(), "{} already runs nginx-ha", self.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.path("nginx-ha.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", self.ns.name(), BIN, "run", "-c"])
            .arg(self.config())
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        super::process::record_pid(child.id());
        self.daemon = Some(child);
    }

    /// SIGTERM to nginx-ha and wait for it to exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.daemon.take().expect("nginx-ha runs");
        signal(child.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "{}: nginx-ha did not stop:\n{}", self.name, self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL nginx-ha (nginx keeps running, VIPs stay where they are).
    pub fn kill_daemon(&mut self) {
        let mut child = self.daemon.take().expect("nginx-ha runs");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Waits for nginx-ha to exit by itself.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let child = self.daemon.as_mut().expect("nginx-ha runs");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.daemon = None;
                return status;
            }
            assert!(Instant::now() < deadline, "{}: nginx-ha did not exit:\n{}", self.name, self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends one raw JSON request line to the control socket and returns the answer line.
    pub fn request(&self, json: &str) -> String {
        use std::io::{BufRead, Write};
        let mut stream = std::os::unix::net::UnixStream::connect(self.path("control.sock")).unwrap();
        stream.write_all(format!("{json}\n").as_bytes()).unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stream).read_line(&mut line).unwrap();
        line
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("nginx-ha.log")).unwrap_or_default()
    }

    pub fn status(&self) -> Option<serde_json::Value> {
        let out = Command::new(BIN).args(["status", "--json", "-c"]).arg(self.config()).output().unwrap();
        out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
    }

    /// The state of router `name` as nginx-ha reports it.
    pub fn state(&self, router: &str) -> Option<String> {
        let status = self.status()?;
        let routers = status["vrrp"].as_array()?.clone();
        routers.iter().find(|r| r["name"] == router).and_then(|r| r["state"].as_str().map(str::to_owned))
    }

    pub fn wait_state(&self, router: &str, state: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if self.state(router).as_deref() == Some(state) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {router} never reached {state} (now {:?}); status {:?}\nlog:\n{}",
                self.name,
                self.state(router),
                self.status(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn has_address(&self, address: &str) -> bool {
        self.ns.ip(&["-o", "addr", "show", "dev", "eth0"]).contains(&format!(" {address}/"))
    }

    /// The nginx master pid of this node (from its pid file).
    pub fn nginx_master(&self) -> Option<i32> {
        std::fs::read_to_string(self.path("nginx.pid")).ok()?.trim().parse().ok()
    }

    /// nginx master and workers of this node.
    pub fn nginx_pids(&self) -> Vec<i32> {
        let Some(master) = self.nginx_master().filter(|pid| is_nginx(*pid)) else { return Vec::new() };
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children")).unwrap_or_default();
        std::iter::once(master).chain(children.split_whitespace().filter_map(|p| p.parse().ok())).collect()
    }

    pub fn signal_nginx(&self, sig: i32) {
        let pids = self.nginx_pids();
        assert!(!pids.is_empty(), "{}: no nginx running", self.name);
        for pid in pids {
            signal(pid, sig);
        }
    }

    /// Cuts (or restores) this node's link: its eth0 loses carrier.
    pub fn set_link(&self, bridge: &Bridge, up: bool) {
        bridge.ns.ip(&["link", "set", &self.bridge_port, if up { "up" } else { "down" }]);
    }

    /// What the peers see of a power cut: nginx-ha and nginx stop at once (SIGSTOP: no further
    /// advert, no priority-0 advert, no clean-up; the VIP stays configured but nothing answers)
    /// and the node's switch port loses carrier, so its kernel (which would have died with it)
    /// answers no ARP or TCP handshake either. The peers' own links stay up, as behind a switch.
    pub fn power_cut(&mut self, bridge: &Bridge) {
        let daemon = self.daemon.as_ref().expect("nginx-ha runs").id() as i32;
        let processes: Vec<i32> = std::iter::once(daemon).chain(self.nginx_pids()).collect();
        for &pid in &processes {
            signal(pid, libc::SIGSTOP);
        }
        self.frozen.extend(processes);
        self.set_link(bridge, false);
    }

    /// nginx-ha gets no CPU for `pause` (SIGSTOP, then SIGCONT), as on an overloaded machine at
    /// its worst; its sockets keep queueing what arrives meanwhile.
    pub fn stall_daemon(&self, pause: Duration) {
        let daemon = self.daemon.as_ref().expect("nginx-ha runs").id() as i32;
        signal(daemon, libc::SIGSTOP);
        std::thread::sleep(pause);
        signal(daemon, libc::SIGCONT);
    }

    /// Takes the node off the bridge (or back on) without carrier loss: a partition.
    pub fn set_partitioned(&self, bridge: &Bridge, partitioned: bool) {
        if partitioned {
            bridge.ns.ip(&["link", "set", &self.bridge_port, "nomaster"]);
        } else {
            bridge.ns.ip(&["link", "set", &self.bridge_port, "master", "br0"]);
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A stopped process would sit on its SIGTERM until continued.
        for pid in self.frozen.drain(..) {
            signal(pid, libc::SIGCONT);
        }
        if let Some(child) = self.daemon.take() {
            stop_child(child);
        }
        // nginx outlives nginx-ha only if something went wrong; stop it by pid.
        for pid in self.nginx_pids() {
            signal(pid, libc::SIGKILL);
        }
        if std::thread::panicking() {
            eprintln!("==== {} nginx-ha log ====\n{}", self.name, self.log());
        }
    }
}

/// A client namespace on the bridge that asks a VIP over HTTP.
pub struct Client {
    pub ns: NetNs,
}

impl Client {
    pub fn new(bridge: &Bridge, cidr: &str) -> Client {
        let ns = NetNs::new();
        bridge.connect(&ns, "eth0", cidr);
        Client { ns }
    }

    /// One GET from inside the client namespace: the body (the serving node's name), or None.
    pub fn get(&self, vip: &str) -> Option<String> {
        let address = socket_address(vip);
        join(self.ns.enter(move || http_get(address, Duration::from_millis(500))))
    }

    /// Waits until the VIP is answered by `node`.
    pub fn wait_served_by(&self, vip: &str, node: &str) {
        let mut last = None;
        wait_until(PATIENCE, &format!("{vip} served by {node}"), || {
            last = self.get(vip);
            last.as_deref() == Some(node)
        });
    }

    /// Polls `vip` every 10 ms in the background until stopped; see [`Poller::stop`].
    pub fn poll(&self, vip: &str) -> Poller {
        let address = socket_address(vip);
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let (stop_flag, log) = (stop.clone(), answers.clone());
        let handle = self.ns.enter(move || {
            let start = Instant::now();
            while !stop_flag.load(Ordering::Relaxed) {
                let answer = http_get(address, Duration::from_millis(100));
                log.lock().unwrap().push((start.elapsed(), answer));
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Poller { stop, answers, handle: Some(handle) }
    }
}

/// (time since the poller started, the body or None)
pub type Answer = (Duration, Option<String>);

/// The longest stretch between two answered requests of a poller.
pub fn longest_outage(answers: &[Answer]) -> Duration {
    let answered: Vec<Duration> = answers.iter().filter(|(_, a)| a.is_some()).map(|(at, _)| *at).collect();
    answered.windows(2).map(|pair| pair[1] - pair[0]).max().unwrap_or_default()
}

pub struct Poller {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
    handle: Option<JoinHandle<()>>,
}

impl Poller {
    /// Every answer so far (time since start, body or None).
    pub fn answers(&self) -> Vec<Answer> {
        self.answers.lock().unwrap().clone()
    }

    pub fn stop(mut self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            join(handle);
        }
        self.answers()
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn socket_address(vip: &str) -> SocketAddr {
    SocketAddr::new(vip.parse().expect("an IP address"), 80)
}

/// A `[[vrrp]]` table.
pub fn router(name: &str, vrid: u8, priority: u8, vip: &str, extra: &str) -> String {
    format!(
        "[[vrrp]]\nname = \"{name}\"\ninterface = \"eth0\"\nvrid = {vrid}\npriority = {priority}\nvirtual_ips = [\"{vip}\"]\n{extra}\n"
    )
}

//! A node running real keepalived (VRRP only) beside its own real nginx, on the same bridge
//! as `cluster::Node`s, to test nginx-ha against keepalived on the wire.
//!
//! keepalived runs in the foreground inside the node's namespace and logs to a file in the
//! node's temp dir; a `notify` script there records its state. Every process is stopped by
//! pid when the node is dropped; on a panic the keepalived log is printed.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::cluster::{PATIENCE, nginx_binary, signal};
use super::netns::{Bridge, NetNs, wait_until};

pub const KEEPALIVED: &str = "keepalived";

/// How keepalived 2.2.7 complains about a received advert it drops or distrusts: the fixed
/// parts, in order, of each such message of its VRRP receive path, as in the format strings
/// of the 2.2.7 binary (`strings /usr/sbin/keepalived`) and as seen in its log in the
/// deliberately broken runs of `keepalived_logs_each_deliberate_mismatch`. A line is a
/// complaint if it contains all parts of one entry, in order.
pub const COMPLAINTS: &[&[&str]] = &[
    // Lengths and headers.
    &["VRRP packet too short - "], // "IPv4 VRRP packet too short - %zu bytes"
    &["VRRP packet with AH too short - "],
    &[") vrrp packet too ", ", length ", " and expect "],
    &[") ip_tot_len mismatch against received length."],
    &[") invalid TTL/HL. Received ", " and expect "],
    &[") TTL/HL ", " not in range "],
    &[") wrong version. Received ", " and expect "],
    &[") Invalid packet type. "],
    &[") Expected ", "icast packet but received ", "icast packet"], // multicast / unicast
    // v2 authentication.
    &[") Invalid auth type: "],
    &[") received a ", " auth, expecting ", "!"],
    &[") received an invalid passwd!"],
    &[") Received AH header but auth type not AH"],
    &[") No AH header but auth type is AH"],
    &[") IPSEC-AH : "],
    // Interval, addresses, checksum, sources.
    &[") advertisement interval mismatch mine="],
    &[") received an unexpected ip number count "],
    &[") expected ", " VIPs but received "],
    &[") ip address associated with VRID ", " not present in MASTER advert: "],
    &[") Invalid VRRPv2 checksum"],
    &[") Invalid VRRPv3 checksum"],
    &[") Setting unicast VRRPv3 checksum to old version"],
    &[") unicast source address ", " not a unicast peer"],
    &[") WARNING - equal priority advert received from remote host with our IP address."],
    // With `log_unknown_vrids` (set by `configure`): an advert for no configured VRID.
    &["Unknown VRID(", ") received on interface("],
];

/// keepalived beside its own nginx in a namespace on the bridge.
pub struct KeepalivedNode {
    pub name: String,
    pub ns: NetNs,
    pub address: String,
    pub bridge_port: String,
    pub dir: tempfile::TempDir,
    nginx: Option<Child>,
    keepalived: Option<Child>,
}

impl KeepalivedNode {
    /// Connects a namespace to the bridge with `cidr` on eth0 and starts nginx answering
    /// `name` on port 80. keepalived starts with [`start`](Self::start) after
    /// [`configure`](Self::configure).
    pub fn new(bridge: &Bridge, name: &str, cidr: &str) -> KeepalivedNode {
        let ns = NetNs::new();
        let bridge_port = bridge.connect(&ns, "eth0", cidr);
        let dir = tempfile::Builder::new().prefix(&format!("keepalived-{name}-")).tempdir().unwrap();
        // keepalived's script security wants every directory on the notify script's path
        // root-owned and not writable by others (/tmp passes: it is sticky).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut node = KeepalivedNode {
            name: name.into(),
            ns,
            address: cidr.split('/').next().unwrap().into(),
            bridge_port,
            dir,
            nginx: None,
            keepalived: None,
        };
        let d = node.dir.path().display().to_string();
        node.write(
            "nginx.conf",
            &format!(
                "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nevents {{ worker_connections 128; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
                   server {{ listen 80; listen [::]:80; location / {{ return 200 \"{name}\\n\"; }} }}\n}}\n"
            ),
        );
        // notify TYPE NAME STATE PRIORITY
        let notify = node.path("notify.sh");
        std::fs::write(&notify, format!("#!/bin/sh\necho \"$3\" > {d}/state.tmp && mv {d}/state.tmp {d}/state\n"))
            .unwrap();
        std::fs::set_permissions(&notify, std::fs::Permissions::from_mode(0o755)).unwrap();
        node.start_nginx();
        node
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).unwrap();
    }

    /// A `vrrp_instance` block that reports its state to this node's notify script. `extra`
    /// goes inside the block; without a `state` there it starts as BACKUP (so priority alone
    /// decides, keepalived's usual advice), without an `advert_int` it advertises every 1 s.
    pub fn instance(&self, name: &str, vrid: u8, priority: u8, vips: &[&str], extra: &str) -> String {
        let state = if extra.contains("state ") { "" } else { "    state BACKUP\n" };
        let advert_int = if extra.contains("advert_int") { "" } else { "    advert_int 1\n" };
        let vips: String = vips.iter().map(|vip| format!("        {vip}\n")).collect();
        format!(
            "vrrp_instance {name} {{\n{state}    interface eth0\n    virtual_router_id {vrid}\n    priority {priority}\n\
             {advert_int}    virtual_ipaddress {{\n{vips}    }}\n    notify {}\n{extra}\n}}\n",
            self.path("notify.sh").display()
        )
    }

    /// Writes keepalived.conf: `global_defs` (with `globals` added) and the given instances.
    pub fn configure(&self, globals: &str, instances: &str) {
        self.write(
            "keepalived.conf",
            &format!(
                "global_defs {{\n    router_id {}\n    enable_script_security\n    script_user root\n\
                 \x20   vrrp_garp_master_delay 1\n    log_unknown_vrids\n{globals}\n}}\n\n{instances}",
                self.name
            ),
        );
    }

    /// Starts keepalived (VRRP subsystem only) in the foreground inside the namespace.
    pub fn start(&mut self) {
        assert!(self.keepalived.is_none(), "{}: keepalived already runs", self.name);
        let _ = std::fs::remove_file(self.path("state"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.path("keepalived.log")).unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                self.ns.name(),
                KEEPALIVED,
                "--vrrp",
                "--dont-fork",
                "--log-console",
                "--log-detail",
                "--no-syslog",
            ])
            .arg("--use-file")
            .arg(self.path("keepalived.conf"))
            .arg("--pid")
            .arg(self.path("keepalived.pid"))
            .arg("--vrrp_pid")
            .arg(self.path("vrrp.pid"))
            .arg("--checkers_pid")
            .arg(self.path("checkers.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        super::process::record_pid(child.id());
        self.keepalived = Some(child);
    }

    /// SIGTERM to keepalived (it sends a priority-0 advert if MASTER) and waits for it and its
    /// VRRP child to exit.
    pub fn stop(&mut self) {
        let mut child = self.keepalived.take().expect("keepalived runs");
        let vrrp = self.vrrp_pid();
        signal(child.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + PATIENCE;
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "{}: keepalived did not stop:\n{}", self.name, self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(pid) = vrrp {
            wait_until(PATIENCE, "keepalived's VRRP process to exit", || !is_keepalived(pid));
        }
    }

    /// The pid of keepalived's VRRP child process, from its pid file.
    fn vrrp_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.path("vrrp.pid")).ok()?.trim().parse().ok().filter(|pid| is_keepalived(*pid))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("keepalived.log")).unwrap_or_default()
    }

    /// keepalived's state as its notify script last reported it (MASTER, BACKUP, FAULT, STOP).
    pub fn state(&self) -> Option<String> {
        std::fs::read_to_string(self.path("state")).ok().map(|s| s.trim().to_owned())
    }

    pub fn wait_state(&self, state: &str) {
        let deadline = Instant::now() + PATIENCE;
        while self.state().as_deref() != Some(state) {
            assert!(
                Instant::now() < deadline,
                "{}: keepalived never reached {state} (now {:?})\nlog:\n{}",
                self.name,
                self.state(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn has_address(&self, address: &str) -> bool {
        self.ns.ip(&["-o", "addr", "show", "dev", "eth0"]).contains(&format!(" {address}/"))
    }

    /// Lines of keepalived's log that complain about a received advert (see [`COMPLAINTS`]).
    pub fn complaints(&self) -> Vec<String> {
        self.log().lines().filter(|line| is_complaint(line)).map(str::to_owned).collect()
    }

    /// Panics with the offending lines if keepalived complained about any advert.
    pub fn assert_no_complaints(&self) {
        let complaints = self.complaints();
        assert!(
            complaints.is_empty(),
            "{}: keepalived complained about adverts:\n{}",
            self.name,
            complaints.join("\n")
        );
    }

    fn start_nginx(&mut self) {
        let child = Command::new("ip")
            .args(["netns", "exec", self.ns.name(), nginx_binary(), "-c"])
            .arg(self.path("nginx.conf"))
            .args(["-g", "daemon off; master_process on;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        super::process::record_pid(child.id());
        self.nginx = Some(child);
        wait_until(PATIENCE, "keepalived node's nginx to answer", || self.own_nginx_answers());
    }

    /// Whether this node's nginx answers a GET from inside the namespace.
    fn own_nginx_answers(&self) -> bool {
        let address = format!("{}:80", self.address).parse().unwrap();
        super::netns::join(self.ns.enter(move || super::cluster::http_get(address, Duration::from_millis(300))))
            .is_some()
    }

    fn stop_nginx(&mut self) {
        let Some(mut child) = self.nginx.take() else { return };
        let master = child.id() as i32;
        let workers = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children")).unwrap_or_default();
        signal(master, libc::SIGKILL);
        for pid in workers.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            signal(pid, libc::SIGKILL);
        }
        let _ = child.wait();
    }
}

impl Drop for KeepalivedNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.keepalived.take() {
            let vrrp = self.vrrp_pid();
            signal(child.id() as i32, libc::SIGTERM);
            for _ in 0..200 {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = child.kill();
            let _ = child.wait();
            if let Some(pid) = vrrp.filter(|pid| is_keepalived(*pid)) {
                signal(pid, libc::SIGKILL);
            }
        }
        self.stop_nginx();
        // KEEPALIVED_LOG=1 shows the log of passing tests too.
        if std::thread::panicking() || std::env::var_os("KEEPALIVED_LOG").is_some() {
            eprintln!("==== {} keepalived log ====\n{}", self.name, self.log());
        }
    }
}

fn is_keepalived(pid: i32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let program = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    program.ends_with(KEEPALIVED.as_bytes())
}

/// Whether a keepalived log line complains about a received advert (see [`COMPLAINTS`]).
pub fn is_complaint(line: &str) -> bool {
    COMPLAINTS.iter().any(|parts| contains_in_order(line, parts))
}

/// Whether `line` holds all `parts`, in this order, without overlaps.
pub fn contains_in_order(line: &str, parts: &[&str]) -> bool {
    let mut rest = line;
    parts.iter().all(|part| match rest.find(part) {
        Some(at) => {
            rest = &rest[at + part.len()..];
            true
        }
        None => false,
    })
}

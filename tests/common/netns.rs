//! Throw-away network namespaces for integration tests (run as root).
//!
//! Every test builds its own topology, so tests run in parallel without seeing each
//! other. Only 198.18.0.0/15 and fd00:198:18::/64 (plus link-locals) belong in them.
//!
//! ```ignore
//! let bridge = Bridge::new();
//! let (a, b) = (NetNs::new(), NetNs::new());
//! bridge.connect(&a, "eth0", "198.18.0.1/24");
//! bridge.connect(&b, "eth0", "198.18.0.2/24");
//! let index = a.run(|| async { Net::new().await.unwrap().link("eth0").await.unwrap().index });
//! ```

use std::{
    fs::File,
    future::Future,
    os::fd::AsRawFd,
    process::{Command, Output},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);
/// `ip netns add` sets up the /run/netns mount on first use; concurrent first uses race.
static CREATING: Mutex<()> = Mutex::new(());

/// A named network namespace (`nha-<pid>-<n>`) with `lo` up, deleted on drop (also when
/// the test panics). Deleting it also deletes the interfaces inside, and with a veth the
/// peer in the other namespace.
pub struct NetNs {
    name: String,
}

impl NetNs {
    pub fn new() -> NetNs {
        let name = format!("nha-{}-{}", std::process::id(), NEXT_ID.fetch_add(1, Ordering::Relaxed));
        {
            let _serialized = CREATING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            run("ip", &["netns", "add", &name]);
        }
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> <args>`; panics with ip's message on failure, returns its stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        ip_in(&self.name, args)
    }

    /// `ip netns exec <ns> <command>`, whatever its outcome.
    pub fn exec(&self, command: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(command);
        Command::new("ip").args(&full).output().expect("cannot run ip")
    }

    /// Sets `key` (like `net.ipv4.conf.eth0.arp_accept`) inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let value = value.to_owned();
        join(self.enter(move || std::fs::write(&path, value).map_err(|e| format!("{path}: {e}"))))
            .unwrap_or_else(|e| panic!("sysctl {e}"));
    }

    /// Runs `f` on a new thread that has entered the namespace, so the sockets it opens
    /// (netlink, raw, packet) belong to the namespace.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
        let file = File::open(format!("/run/netns/{}", self.name)).expect("namespace file");
        thread::spawn(move || {
            // SAFETY: setns only changes this thread's network namespace.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                panic!("setns: {}", std::io::Error::last_os_error());
            }
            drop(file);
            f()
        })
    }

    /// Like [`enter`](Self::enter), with a current-thread tokio runtime running `f()`.
    pub fn spawn<F, Fut>(&self, f: F) -> JoinHandle<Fut::Output>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future,
        Fut::Output: Send + 'static,
    {
        self.enter(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
            runtime.block_on(f())
        })
    }

    /// Adds `address` to `interface` tagged `IFA_PROTO = proto`, through nginx-ha's own
    /// rtnetlink code: iproute2 before 6.3 cannot set an address's protocol.
    #[allow(dead_code)]
    pub fn add_tagged_address(&self, interface: &str, address: &str, proto: u8) {
        let (interface, net) = (interface.to_owned(), address.parse::<ipnet::IpNet>().expect("an address/len"));
        self.run(move || async move {
            let kernel = nginx_ha::net::Net::new().await.expect("netlink");
            let link = kernel.link(&interface).await.expect("the interface");
            kernel.add_address(link.index, net, None, proto).await.expect("address added");
        });
    }

    /// [`spawn`](Self::spawn) and wait for the result; a panic inside is re-raised here.
    pub fn run<F, Fut>(&self, f: F) -> Fut::Output
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future,
        Fut::Output: Send + 'static,
    {
        join(self.spawn(f))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let deleted = Command::new("ip").args(["netns", "del", &self.name]).status();
        if !matches!(deleted, Ok(status) if status.success()) {
            eprintln!("could not delete network namespace {}", self.name);
        }
    }
}

/// A namespace holding bridge `br0` (multicast snooping off, so multicast is flooded
/// like on a plain switch) that nodes connect to with veth pairs.
pub struct Bridge {
    pub ns: NetNs,
    next_port: AtomicUsize,
}

impl Bridge {
    pub fn new() -> Bridge {
        let ns = NetNs::new();
        ns.ip(&["link", "add", "br0", "type", "bridge", "mcast_snooping", "0"]);
        ns.ip(&["link", "set", "br0", "up"]);
        Bridge { ns, next_port: AtomicUsize::new(0) }
    }

    /// Creates `ifname` in `node`, up with `cidr`, wired to br0, and waits for its IPv6
    /// link-local address (DAD is off on it so the address is usable at once). Returns the
    /// name of the bridge-side end: set it down to make `ifname` lose its carrier.
    pub fn connect(&self, node: &NetNs, ifname: &str, cidr: &str) -> String {
        let port = format!("port{}", self.next_port.fetch_add(1, Ordering::Relaxed));
        node.ip(&["link", "add", ifname, "type", "veth", "peer", "name", &port, "netns", self.ns.name()]);
        node.sysctl(&format!("net.ipv6.conf.{ifname}.accept_dad"), "0");
        self.ns.ip(&["link", "set", &port, "master", "br0", "up"]);
        node.ip(&["addr", "add", cidr, "dev", ifname]);
        node.ip(&["link", "set", ifname, "up"]);
        wait_until(Duration::from_secs(10), "the IPv6 link-local address", || {
            node.ip(&["-6", "addr", "show", "dev", ifname, "scope", "link"]).contains("fe80::")
        });
        port
    }
}

/// [`NetNs::ip`] by namespace name, for closures running inside another namespace.
pub fn ip_in(ns_name: &str, args: &[&str]) -> String {
    let mut full = vec!["-n", ns_name];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// The MAC address of `ifname` in `ns`, as `ip` prints it (`aa:bb:cc:dd:ee:ff`).
pub fn mac_of(ns: &NetNs, ifname: &str) -> String {
    let output = ns.ip(&["-o", "link", "show", "dev", ifname]);
    let after = output.split("link/ether ").nth(1).unwrap_or_else(|| panic!("no MAC in {output:?}"));
    after.split_whitespace().next().unwrap().to_owned()
}

/// Polls `condition` every 50 ms; panics if it is still false after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "still waiting for {what} after {timeout:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Joins a test thread, re-raising its panic with the original message.
pub fn join<T>(handle: JoinHandle<T>) -> T {
    handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The next hops of `prefix` in the FIB of `router` (the `via` addresses of `ip route show`).
pub fn next_hops(router: &NetNs, prefix: &str) -> std::collections::BTreeSet<String> {
    let text = router.ip(&["route", "show", prefix]);
    text.split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|pair| pair[0] == "via")
        .map(|pair| pair[1].to_string())
        .collect()
}

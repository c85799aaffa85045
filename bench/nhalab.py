"""Shared pieces of the namespace benchmarks (bench/vrrp.py, bench/storm.py): a lab of network
namespaces on one bridge, nodes running real nginx (optionally under nginx-ha), process helpers
that only ever look at pids the caller started or read from its own nodes' files, and the HTTP
poll of a VIP. Addresses from 198.18.0.0/15 only. Not run on its own.
"""

import asyncio
import json
import os
import signal
import subprocess
import tempfile
import time

NGINX = next((p for p in ("/usr/sbin/nginx", "/usr/bin/nginx") if os.path.exists(p)), "nginx")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------
# One HTTP poll of a VIP: [start, end, body-or-null] with CLOCK_MONOTONIC times (the same clock
# in every namespace).

async def poll_once(vip, timeout):
    start = time.monotonic()
    body = None
    try:
        async def get():
            reader, writer = await asyncio.open_connection(vip, 80)
            writer.write(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
            data = await reader.read()
            writer.close()
            return data
        data = await asyncio.wait_for(get(), timeout)
        head, _, rest = data.partition(b"\r\n\r\n")
        if b" 200 " in head.split(b"\r\n", 1)[0]:
            body = rest.decode(errors="replace").strip()
    except (OSError, asyncio.TimeoutError):
        pass
    return [start, time.monotonic(), body]



# --------------------------------------------------------------------------------------------
# Namespaces, processes, and their cleanup.

def sh(*args, check=True):
    done = subprocess.run(args, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def program_of(pid):
    text = read(f"/proc/{pid}/cmdline")
    return text.split("\0")[0] if text else None


def children_of(pid):
    return [int(p) for p in (read(f"/proc/{pid}/task/{pid}/children") or "").split()]


def wait_until(what, condition, timeout=30.0, step=0.05):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"still waiting for {what} after {timeout:.0f} s")
        time.sleep(step)


OPEN_LABS = []


class Lab:
    """One cluster: its namespaces, the processes started in them, a temp dir. `close()` stops
    every process by pid (those it started and the nginx processes they started) and deletes
    every namespace."""

    counter = 0

    def __init__(self, root, prefix="nhb"):
        Lab.counter += 1
        self.tag = f"{prefix}{os.getpid()}-{Lab.counter}"
        self.dir = tempfile.mkdtemp(prefix=f"{self.tag}-", dir=root)
        os.chmod(self.dir, 0o755)  # keepalived's script security wants a root-only path
        self.namespaces, self.procs, self.nodes = [], [], []
        self.bridge = self.netns("br")
        sh("ip", "-n", self.bridge, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        sh("ip", "-n", self.bridge, "link", "set", "br0", "up")
        self.ports = 0
        OPEN_LABS.append(self)

    def netns(self, suffix):
        name = f"{self.tag}-{suffix}"
        self.namespaces.append(name)
        self.created("netns", name)
        sh("ip", "netns", "add", name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def connect(self, ns, cidr):
        """eth0 in `ns`, on br0, with `cidr`; returns the bridge-side port (down = carrier lost)."""
        self.ports += 1
        port = f"port{self.ports}"
        sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", self.bridge)
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0")
        sh("ip", "-n", self.bridge, "link", "set", port, "master", "br0", "up")
        sh("ip", "-n", ns, "addr", "add", cidr, "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        return port

    def spawn(self, ns, args, log, env=None):
        """`ip netns exec ns args...`: ip execs the program, so the pid is the program's."""
        with open(log, "ab") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", ns, *args], stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=out, env=env)
        self.procs.append(proc)
        self.created("pid", proc.pid)
        return proc

    def created(self, kind, value):
        """Called for every namespace ("netns", name) and process ("pid", pid) this lab creates,
        before (namespace) or right after (process) it exists: a hook for a record of leftovers."""

    def close(self):
        if self in OPEN_LABS:
            OPEN_LABS.remove(self)
        for node in self.nodes:
            node.resume()
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for node in self.nodes:
            node.stop_leftovers()
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)
        subprocess.run(["rm", "-rf", self.dir])


def site_conf(name):
    return f"server {{ listen 80; location / {{ return 200 \"{name}\\n\"; }} }}\n"


def nginx_conf(d, name, sites=False):
    """The node's nginx.conf: its server answers the node's name; with `sites`, the server is in
    sites/main.conf, included by `include sites/*.conf` (for benches that edit the site)."""
    server = f"  include {d}/sites/*.conf;\n" if sites else f"  {site_conf(name)}"
    return (f"worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n"
            f"events {{ worker_connections 512; }}\nhttp {{\n  access_log off;\n"
            f"  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n{server}}}\n")


class Node:
    def __init__(self, lab, name, cidr, sites=False):
        self.lab, self.name = lab, name
        self.ns = lab.netns(name)
        self.port = lab.connect(self.ns, cidr)
        self.address = cidr.split("/")[0]
        self.dir = os.path.join(lab.dir, name)
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o755)
        with open(self.path("nginx.conf"), "w") as f:
            f.write(nginx_conf(self.dir, name, sites))
        if sites:
            os.makedirs(self.path("sites"))
            with open(self.path("sites/main.conf"), "w") as f:
                f.write(site_conf(name))
        self.stopped = False
        lab.nodes.append(self)

    def path(self, name):
        return os.path.join(self.dir, name)

    def nginx_master(self):
        text = read(self.path("nginx.pid"))
        pid = int(text) if text and text.strip().isdigit() else None
        if pid and (program_of(pid) or "").startswith("nginx") and self.dir in (read(f"/proc/{pid}/cmdline") or ""):
            return pid
        return None

    def nginx_pids(self):
        master = self.nginx_master()
        return [master, *children_of(master)] if master else []

    def signal_nginx(self, sig):
        pids = self.nginx_pids()
        if not pids:
            raise RuntimeError(f"{self.name}: no nginx to signal")
        for pid in pids:
            os.kill(pid, sig)
        self.stopped = self.stopped or sig == signal.SIGSTOP

    def resume(self):
        if self.stopped:
            for pid in self.nginx_pids():
                os.kill(pid, signal.SIGCONT)
            self.stopped = False
        for pid in getattr(self, "frozen", []):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.frozen = []

    def vrrp_pids(self):
        """The processes that run this node's VRRP (the subclasses know them)."""
        return []

    def power_cut(self):
        """What the peer sees of a power cut: every process of the node stops at once (SIGSTOP:
        nothing more is sent, no clean-up runs, the VIP stays configured but dead) and its
        switch port loses carrier (the bridge-side end of eth0 set down: the node's kernel,
        which would have died too, can no longer answer ARP or TCP for the frozen nginx).
        The peer's own link stays up, as behind a real switch."""
        self.frozen = self.vrrp_pids() + self.nginx_pids()
        for pid in self.frozen:
            os.kill(pid, signal.SIGSTOP)
        self.cut_link()

    def stop_leftovers(self):
        for pid in self.nginx_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def cut_link(self):
        sh("ip", "-n", self.lab.bridge, "link", "set", self.port, "down")


def cpu_seconds(pid, children=False):
    """utime+stime of every thread, in ns resolution from schedstat; plus (tick resolution)
    cutime+cstime of reaped children when asked."""
    total = 0.0
    for task in os.listdir(f"/proc/{pid}/task"):
        total += int((read(f"/proc/{pid}/task/{task}/schedstat") or "0").split()[0]) / 1e9
    if children:
        stat = read(f"/proc/{pid}/stat")
        fields = stat[stat.rfind(")") + 2:].split()
        total += (int(fields[13]) + int(fields[14])) / CLK_TCK
    return total


def rss_kib(pid):
    for line in (read(f"/proc/{pid}/status") or "").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class NginxHaNode(Node):
    """nginx-ha supervising this node's nginx and running the given [[vrrp]] tables."""

    def start(self, binary, tables, health, watch=False):
        self.configure(binary, tables, health, watch)
        self.spawn_daemon()

    def nginx_ha_toml(self, tables, health, watch=False):
        d = self.dir
        return (f"[nginx]\nbinary = \"{NGINX}\"\nconfig = \"{d}/nginx.conf\"\nwatch = {str(watch).lower()}\n\n"
                f"[health]\n{health}\nhttp = \"http://127.0.0.1:80/\"\n\n"
                f"[daemon]\ncontrol_socket = \"{d}/control.sock\"\nstate_dir = \"{d}/state\"\n\n{tables}")

    def configure(self, binary, tables, health, watch=False):
        with open(self.path("nginx-ha.toml"), "w") as f:
            f.write(self.nginx_ha_toml(tables, health, watch))
        self.binary = binary

    def spawn_daemon(self):
        """Starts `nginx-ha run` on the config written by `configure` (again after a stop)."""
        # NHA_RUST_LOG: more detail for one run (e.g. "info,nginx_ha::vrrp=debug").
        env = dict(os.environ, RUST_LOG=os.environ.get("NHA_RUST_LOG", "info"))
        self.daemon = self.lab.spawn(self.ns, [self.binary, "run", "-c", self.path("nginx-ha.toml")],
                                     self.path("nginx-ha.log"), env)
        return self.daemon

    def status(self, timeout=5.0):
        """`nginx-ha status --json`, parsed; None when no daemon answers."""
        try:
            done = subprocess.run([self.binary, "status", "--json", "-c", self.path("nginx-ha.toml")],
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        if done.returncode != 0:
            return None
        try:
            return json.loads(done.stdout)
        except ValueError:
            return None

    def states(self):
        return {r["name"]: r["state"] for r in (self.status() or {}).get("vrrp", [])}

    def wait_state(self, router, state, timeout=30.0):
        wait_until(f"{self.name} {router} {state}", lambda: self.states().get(router, "").upper() == state, timeout,
                   0.1)

    def usage(self):
        return cpu_seconds(self.daemon.pid), rss_kib(self.daemon.pid)

    def vrrp_pids(self):
        return [self.daemon.pid]


# --------------------------------------------------------------------------------------------
# Configurations.

def nha_router(name, vrid, priority, version, interval_ms, vips, excluded=()):
    table = (f"[[vrrp]]\nname = \"{name}\"\ninterface = \"eth0\"\nvrid = {vrid}\npriority = {priority}\n"
             f"version = {version}\nadvert_interval_ms = {interval_ms}\nvirtual_ips = {json.dumps(list(vips))}\n")
    if excluded:
        table += f"virtual_ips_excluded = {json.dumps(list(excluded))}\n"
    return table + "\n"

FAST_HEALTH = "interval_ms = 200\ntimeout_ms = 150\nfall = 2\nrise = 2"
DEFAULT_HEALTH = "interval_ms = 1000\ntimeout_ms = 500\nfall = 2\nrise = 2"


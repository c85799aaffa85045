#!/usr/bin/env python3
"""Seeded fault storm against a two-node nginx-ha pair with a client, in network namespaces.

usage: bench/storm.sh [--binary PATH] [--seed N] [--faults N] [--kinds a,b,c] [--advert-ms MS]
                      [--json FILE] [--settle-timeout S]
       bench/storm.sh sweep        # cleans what a killed run left (from its records)

The binary defaults to $NGINX_HA_BIN, else target/release/nginx-ha (`cargo build --release`).
Needs root, iproute2 (ip, bridge) and nginx. Topology (bench/nhalab.py, shared with vrrp.py): a
bridge namespace, nodes A (priority 100) and B (90), each real nginx under nginx-ha, one VRRP router
(VIP 198.18.0.100), a client C polling the VIP over HTTP every 15 ms (250 ms per poll). Each node's
addresses are watched through rtnetlink (an address-event subscription per node namespace), so
split brain (both nodes holding the VIP) is timed to the event, not sampled.

Faults are drawn by a seeded RNG in rounds (each round a shuffle of the selected kinds, so N ≥
number of kinds covers every kind), with random phase (0.3–1.5 s after the pair settled) and
random durations. After each fault the harness waits until the pair has settled (A MASTER and B
BACKUP with healthy nginx, A the only holder of the VIP, the VIP answered by A for 300 ms), then
samples RSS and open fds of both daemons and looks for stray processes.

Goals (exit status 1 when one is violated; each is printed with its figures):
  split brain     no overlap of the two nodes holding the VIP longer than --split-tolerance-ms
                  (10 ms, the resolution of a 10 ms sampler) outside the allowed windows: during a
                  partition/link-down/interface deletion and one advert interval after its heal;
                  after an nginx-ha kill -9 until one advert interval after its restart; after
                  both daemons restart at once, until one advert interval after the restarts
                  (the election by preemption of two fresh routers).
  heal            after a partition/link-down/interface re-creation heals, one holder and a VIP
                  answered (for 200 ms) within one advert interval (+ one poll interval).
  settle          the pair settles after every fault (within --settle-timeout).
  checks          fault-specific: a bad nginx-ha config is rejected by `nginx-ha reload` and the
                  running state (router state, nginx master) is untouched; a bad nginx config does
                  not reach the running nginx (same master).
  strays          after every settle: no process the harness saw (daemons, nginx masters and
                  workers, tracked by pid + start time) alive that is not the current daemon,
                  master, worker or draining worker; at the end, after SIGTERM to both daemons, no
                  VIP on any node and no tracked process alive.
  leak            RSS / open-fd growth of a daemon instance after warm-up ≤ --rss-bound-kib /
                  --fd-bound (assessed for instances with ≥ 5 samples after warm-up; daemons
                  restarted by faults start new instances, so long runs with few restart kinds
                  assess more).

Everything created is recorded in /tmp/nginx-ha-storm/run-PID.rec (namespaces nhastorm-PID-*,
pids with start times) before or as it is created, torn down by pid/name at the end, also on a
failure or Ctrl-C; `storm.sh sweep` (and .ci/sweep) remove what a killed run left.
"""

import argparse
import asyncio
import ctypes
import datetime
import json
import os
import random
import select
import shlex
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nhalab import (FAST_HEALTH, OPEN_LABS, Lab, NginxHaNode, children_of, nha_router, poll_once, read,  # noqa: E402
                    rss_kib, sh)

A_ADDR, B_ADDR, C_ADDR = "198.18.0.1", "198.18.0.2", "198.18.0.10"
VIP = "198.18.0.100"
POLL_INTERVAL, POLL_TIMEOUT = 0.015, 0.250
RECORDS = "/tmp/nginx-ha-storm"
ROUTER = "VI_1"

KINDS = ["nginx-kill", "nginx-stop", "worker-kill", "daemon-kill", "daemon-term", "link-down", "partition",
         "nginx-bad-config", "ha-bad-reload", "state-dir", "iface-recreate", "both-restart"]
# Kinds during which the two nodes cannot hear each other: both holding the VIP is expected then.
ISOLATING = {"link-down", "partition", "iface-recreate"}


# --------------------------------------------------------------------------------------------
# Helpers run inside a namespace as subprocesses of this script.

async def stream_polls(vip):
    """`storm.py poll VIP`: a new connection every POLL_INTERVAL until killed; one line per poll,
    `start end body` (body `-` for a failure), CLOCK_MONOTONIC."""
    pending = set()
    tick = time.monotonic()

    async def one():
        start, end, body = await poll_once(vip, POLL_TIMEOUT)
        sys.stdout.write(f"{start:.6f} {end:.6f} {body if body else '-'}\n")
        sys.stdout.flush()

    while True:
        task = asyncio.ensure_future(one())
        pending.add(task)
        task.add_done_callback(pending.discard)
        tick += POLL_INTERVAL
        await asyncio.sleep(max(0.0, tick - time.monotonic()))


RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
NLMSG_DONE, NLMSG_ERROR = 3, 2
RTMGRP_IPV4_IFADDR = 0x10


def parse_addr_messages(data):
    """(type, ifindex, address) of the RTM_NEWADDR/RTM_DELADDR messages in a netlink buffer; type
    NLMSG_DONE/NLMSG_ERROR passed through with address None."""
    out, offset = [], 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16:
            break
        if kind in (RTM_NEWADDR, RTM_DELADDR):
            _family, _plen, _flags, _scope, index = struct.unpack_from("=BBBBI", data, offset + 16)
            attr, address = offset + 24, None
            while attr + 4 <= offset + length:
                alen, atype = struct.unpack_from("=HH", data, attr)
                if alen < 4:
                    break
                if atype in (1, 2) and alen == 8:  # IFA_ADDRESS, IFA_LOCAL
                    value = socket.inet_ntoa(data[attr + 4:attr + 8])
                    address = value if atype == 2 or address is None else address
                attr += (alen + 3) & ~3
            out.append((kind, index, address))
        elif kind in (NLMSG_DONE, NLMSG_ERROR):
            out.append((kind, None, None))
        offset += (length + 3) & ~3
    return out


def watch_addresses(vip, namespaces):
    """`storm.py addrwatch VIP NAME=NETNS ...`: prints `time NAME 1|0` whenever a namespace
    starts or stops holding VIP (on any interface): subscribes first, then dumps, so no change
    is missed. One process and one clock for all namespaces: events read in one wake-up share
    their time, so the watcher's own scheduling delay cannot make a hand-over look like an
    overlap (netlink carries no timestamps)."""
    libc = ctypes.CDLL(None, use_errno=True)
    clone_newnet = 0x40000000

    def enter(path):
        with open(path) as ns:
            if libc.setns(ns.fileno(), clone_newnet) != 0:
                raise OSError(ctypes.get_errno(), f"setns {path}")

    home = "/proc/self/ns/net"
    home_fd = os.open(home, os.O_RDONLY)
    watched = {}
    for spec in namespaces:
        name, netns = spec.split("=", 1)
        enter(f"/run/netns/{netns}")
        events = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        events.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        events.bind((0, RTMGRP_IPV4_IFADDR))
        query = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        watched[events] = (name, query, set())
        libc.setns(home_fd, clone_newnet)

    def dump(query, holding):
        holding.clear()
        query.send(struct.pack("=IHHII", 24, RTM_GETADDR, 0x301, 1, 0) + struct.pack("=BBBBI", socket.AF_INET, 0, 0,
                                                                                      0, 0))
        done = False
        while not done:
            for kind, index, address in parse_addr_messages(query.recv(1 << 16)):
                done = done or kind in (NLMSG_DONE, NLMSG_ERROR)
                if kind == RTM_NEWADDR and address == vip:
                    holding.add(index)

    shown = {}
    now = time.monotonic()
    for events, (name, query, holding) in watched.items():
        dump(query, holding)
        shown[name] = bool(holding)
        print(f"{now:.6f} {name} {int(shown[name])}", flush=True)
    while True:
        ready, _, _ = select.select(list(watched), [], [])
        now = time.monotonic()
        for events in ready:
            name, query, holding = watched[events]
            try:
                data = events.recv(1 << 16)
            except OSError:  # ENOBUFS: events were lost; start again from a dump
                dump(query, holding)
                data = b""
            for kind, index, address in parse_addr_messages(data):
                if address != vip:
                    continue
                (holding.add if kind == RTM_NEWADDR else holding.discard)(index)
            if bool(holding) != shown[name]:
                shown[name] = bool(holding)
                print(f"{now:.6f} {name} {int(shown[name])}", flush=True)


# --------------------------------------------------------------------------------------------
# Records of what a run created, for a sweep after a killed run.

def start_time(pid):
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot), or None."""
    stat = read(f"/proc/{pid}/stat")
    if not stat:
        return None
    return stat[stat.rfind(")") + 2:].split()[19]


def process_state(pid):
    stat = read(f"/proc/{pid}/stat")
    return stat[stat.rfind(")") + 2:].split()[0] if stat else None


def same_process(pid, started):
    return started is not None and start_time(pid) == started


class Record:
    """Append-only lines: `owner PID START`, `netns NAME`, `pid PID START`, `dir PATH`."""

    def __init__(self):
        os.makedirs(RECORDS, exist_ok=True)
        self.path = os.path.join(RECORDS, f"run-{os.getpid()}.rec")
        self.file = open(self.path, "a")
        self.add("owner", os.getpid(), start_time(os.getpid()))

    def add(self, *fields):
        self.file.write(" ".join(str(f) for f in fields) + "\n")
        self.file.flush()

    def remove(self):
        self.file.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def sweep(quiet=False):
    """Removes what killed runs left: for each record whose owner is gone, SIGTERM (then SIGKILL)
    the recorded pids whose start time still matches, delete the namespaces and the dir."""
    if not os.path.isdir(RECORDS):
        return 0
    cleaned = 0
    for name in sorted(os.listdir(RECORDS)):
        path = os.path.join(RECORDS, name)
        if not name.endswith(".rec"):
            continue
        lines = [line.split() for line in (read(path) or "").splitlines() if line.strip()]
        owner = next((l for l in lines if l[0] == "owner" and len(l) == 3), None)
        if owner and same_process(int(owner[1]), owner[2]):
            continue  # still running
        pids = [(int(l[1]), l[2]) for l in lines if l[0] == "pid" and len(l) == 3]
        alive = [pid for pid, started in pids if same_process(pid, started)]
        for pid in alive:
            for sig in (signal.SIGCONT, signal.SIGTERM):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(same_process(p, s) for p, s in pids):
            time.sleep(0.1)
        for pid, started in pids:
            if same_process(pid, started):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for l in lines:
            if l[0] == "netns" and len(l) == 2:
                subprocess.run(["ip", "netns", "del", l[1]], capture_output=True)
            if l[0] == "dir" and len(l) == 2 and l[1].startswith("/tmp/"):
                subprocess.run(["rm", "-rf", l[1]])
        os.unlink(path)
        cleaned += 1
        if not quiet:
            print(f"storm sweep: {name}: stopped {len(alive)} processes, deleted its namespaces")
    return cleaned


def become_subreaper(candidates):
    """Orphans (nginx left by a killed nginx-ha, later stopped by the restarted one) are re-parented
    to the nearest subreaper: make that us, not a pid 1 that may not reap (as in some containers),
    and reap those of `candidates()` (the nginx pids seen; never a pid a Popen of ours waits for)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER

    def reap():
        while True:
            for pid in candidates():
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
            time.sleep(0.05)
    threading.Thread(target=reap, daemon=True).start()


class StormLab(Lab):
    def __init__(self, root, record):
        self.record = record
        super().__init__(root, prefix="nhastorm-")

    def created(self, kind, value):
        if kind == "pid":
            self.record.add("pid", value, start_time(value))
        else:
            self.record.add(kind, value)


# --------------------------------------------------------------------------------------------
# The storm.

def brief(faults, key=None):
    """`#3 partition 1200 ms, ...` for the first 8 faults."""
    return ", ".join(f"#{f['index']} {f['kind']}" + (f" {fmt_ms(f[key])} ms" if key else "") for f in faults[:8])


def fmt_ms(value):
    if value is None:
        return "—"
    if value == float("inf"):
        return "never"
    return f"{1000 * value:.0f}"


class Storm:
    def __init__(self, args):
        self.args = args
        self.advert = args.advert_ms / 1000.0
        self.rng = random.Random(args.seed)
        self.record = Record()
        self.workdir = tempfile.mkdtemp(prefix="nginx-ha-storm-")
        os.chmod(self.workdir, 0o755)
        self.record.add("dir", self.workdir)
        self.lab = None
        self.nodes = {}
        self.t_begin = time.monotonic()
        self.helpers = []  # poller and address watchers (Popen)
        self.polls = []  # (start, end, body or None)
        self.holds = {"A": [], "B": []}  # (time, holding)
        self.lock = threading.Lock()
        self.tracked = {}  # pid -> (start time, label)
        self.faults = []
        self.samples = []  # (fault index, node, daemon pid, rss KiB, fds)
        self.violations = []
        self.end_checks = {}

    # ---- setup and teardown

    def setup(self):
        self.lab = StormLab(self.workdir, self.record)
        version = 2 if self.args.advert_ms % 1000 == 0 else 3
        self.nodes = {}
        for name, address, priority in (("A", A_ADDR, 100), ("B", B_ADDR, 90)):
            node = NginxHaNode(self.lab, name, f"{address}/24", sites=True)
            tables = nha_router(ROUTER, 51, priority, version, self.args.advert_ms, [f"{VIP}/24"])
            node.configure(self.args.binary, tables, FAST_HEALTH, watch=True)
            self.nodes[name] = node
        self.client = self.lab.netns("C")
        self.lab.connect(self.client, f"{C_ADDR}/24")
        self.helper(None, ["addrwatch", VIP, *(f"{name}={node.ns}" for name, node in self.nodes.items())],
                    self.on_hold)
        self.helper(self.client, ["poll", VIP], self.on_poll)
        for node in self.nodes.values():
            node.spawn_daemon()
            self.track(node.daemon.pid, f"nginx-ha {node.name}")

    def helper(self, ns, argv, on_line):
        """Runs `storm.py ARGV...` in namespace `ns` (None: here) and hands each line to `on_line`."""
        prefix = ["ip", "netns", "exec", ns] if ns else []
        proc = subprocess.Popen([*prefix, sys.executable, os.path.abspath(__file__), *argv],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        self.record.add("pid", proc.pid, start_time(proc.pid))
        self.helpers.append(proc)

        def reader():
            for line in proc.stdout:
                on_line(line.split())
        threading.Thread(target=reader, daemon=True).start()

    def on_poll(self, fields):
        if len(fields) == 3:
            with self.lock:
                self.polls.append((float(fields[0]), float(fields[1]), None if fields[2] == "-" else fields[2]))

    def on_hold(self, fields):
        if len(fields) == 3 and fields[1] in self.holds:
            with self.lock:
                self.holds[fields[1]].append((float(fields[0]), fields[2] == "1"))

    def holding(self, node):
        with self.lock:
            return bool(self.holds[node]) and self.holds[node][-1][1]

    def teardown(self):
        for node in (self.nodes.values() if self.lab else ()):
            try:
                node.resume()
                self.repair_node(node)
            except Exception as error:
                print(f"storm: repairing {node.name} at teardown: {error}", file=sys.stderr)
        for proc in self.helpers:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        if self.lab:
            self.lab.close()
        # Anything the harness saw that outlived the lab's stop (e.g. orphaned workers).
        for pid, (started, _label) in list(self.tracked.items()):
            if same_process(pid, started) and process_state(pid) != "Z":
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        subprocess.run(["rm", "-rf", self.workdir])
        self.record.remove()

    # ---- processes

    def track(self, pid, label):
        if pid and pid not in self.tracked:
            started = start_time(pid)
            if started is not None:
                self.tracked[pid] = (started, label)
                self.record.add("pid", pid, started)

    def observe(self, node, status=None):
        """Tracks every nginx process of `node` visible now (pid file, status, daemon's children)."""
        for pid in node.nginx_pids():
            self.track(pid, f"nginx {node.name}")
        if status:
            n = status.get("nginx", {})
            for pid in [n.get("master_pid")] + n.get("worker_pids", []) + n.get("draining_pids", []):
                self.track(pid, f"nginx {node.name}")
        daemon = node.daemon.pid if node.daemon.poll() is None else None
        if daemon:
            for pid in children_of(daemon):
                self.track(pid, f"daemon child {node.name}")

    def strays(self, statuses):
        """Tracked processes alive now that are not a current daemon, master, worker or draining
        worker (zombies count: nobody reaped them)."""
        expected = set()
        for name, node in self.nodes.items():
            if node.daemon.poll() is None:
                expected.add(node.daemon.pid)
            n = (statuses.get(name) or {}).get("nginx", {})
            master = n.get("master_pid")
            expected.update([master] + n.get("worker_pids", []) + n.get("draining_pids", []))
            if master:
                expected.update(children_of(master))
        return [(pid, label, process_state(pid)) for pid, (started, label) in self.tracked.items()
                if same_process(pid, started) and (pid not in expected or process_state(pid) == "Z")]

    # ---- settling

    def router_state(self, status):
        return next((r.get("state", "") for r in (status or {}).get("vrrp", []) if r.get("name") == ROUTER), "")

    def recent_polls_good(self, now, window=0.3):
        with self.lock:
            recent = [p for p in self.polls[-60:] if p[0] >= now - window - POLL_TIMEOUT and p[1] <= now]
        recent = [p for p in recent if p[0] >= now - window - POLL_TIMEOUT]
        return len(recent) >= 10 and all(p[2] == "A" for p in recent)

    def settle(self, timeout):
        """Waits until A is MASTER, B BACKUP, both nginx healthy, only A holds the VIP and the VIP
        is answered by A; returns (settled time or None, statuses)."""
        deadline = time.monotonic() + timeout
        statuses = {}
        while time.monotonic() < deadline:
            now = time.monotonic()
            if self.holding("A") and not self.holding("B") and self.recent_polls_good(now):
                statuses = {name: node.status() for name, node in self.nodes.items()}
                for name, node in self.nodes.items():
                    self.observe(node, statuses[name])
                a, b = statuses["A"], statuses["B"]
                if (a and b and self.router_state(a).upper() == "MASTER" and self.router_state(b).upper() == "BACKUP"
                        and a["nginx"].get("healthy") and b["nginx"].get("healthy")
                        and self.holding("A") and not self.holding("B")):
                    return now, statuses
            time.sleep(0.1)
        return None, {name: node.status() for name, node in self.nodes.items()}

    # ---- faults

    def pick_node(self):
        return self.nodes["A"] if self.rng.random() < 0.7 else self.nodes["B"]

    def stop_daemon(self, node, sig):
        """Sends `sig` (0: none, already sent) and waits; Popen.send_signal does nothing to a
        process that has exited (os.kill could hit a reaped pid)."""
        if sig:
            node.daemon.send_signal(sig)
        try:
            node.daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            node.daemon.kill()
            node.daemon.wait()
            return "did not exit within 30 s of SIGTERM (killed)"
        return None

    def restart_daemon(self, node):
        node.spawn_daemon()
        self.track(node.daemon.pid, f"nginx-ha {node.name}")

    def recreate_iface(self, node):
        br = self.lab.bridge
        sh("ip", "-n", node.ns, "link", "add", "eth0", "type", "veth", "peer", "name", node.port, "netns", br)
        sh("ip", "netns", "exec", node.ns, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0")
        sh("ip", "-n", br, "link", "set", node.port, "master", "br0", "up")
        sh("ip", "-n", node.ns, "addr", "add", f"{node.address}/24", "dev", "eth0")
        sh("ip", "-n", node.ns, "link", "set", "eth0", "up")

    def repair_node(self, node):
        """Undoes any fault still applied to `node` (used on errors and at teardown)."""
        br = self.lab.bridge
        if subprocess.run(["ip", "-n", node.ns, "link", "show", "eth0"], capture_output=True).returncode != 0:
            self.recreate_iface(node)
        sh("ip", "-n", node.ns, "link", "set", "eth0", "up", check=False)
        sh("bridge", "-n", br, "link", "set", "dev", node.port, "state", "3", check=False)
        for name in ("sites/zz-bad.conf",):
            if os.path.exists(node.path(name)):
                os.unlink(node.path(name))
        state = node.path("state")
        if os.path.isfile(state):
            os.unlink(state)
        if os.path.exists(node.path("state.away")):
            os.rename(node.path("state.away"), state)
        if os.path.exists(node.path("nginx-ha.toml.good")):
            os.replace(node.path("nginx-ha.toml.good"), node.path("nginx-ha.toml"))

    def inject(self, kind, fault):
        rng = self.rng
        if kind == "link-down":
            node = self.nodes["A"]  # the master, as settled
        elif kind == "both-restart":
            node = None
        else:
            node = self.pick_node()
        fault["node"] = node.name if node else "A+B"
        if node:
            self.observe(node)
        fault["t_start"] = time.monotonic()
        if kind == "nginx-kill":
            pids = node.nginx_pids()
            fault["detail"] = f"{len(pids)} processes"
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    # A worker already gone: the supervisor kills a dead master's workers at
                    # once, which may be between two of these kills.
                    pass
        elif kind == "nginx-stop":
            hold = rng.uniform(1.0, 3.0)
            fault["detail"] = f"{hold:.1f} s"
            node.signal_nginx(signal.SIGSTOP)
            time.sleep(hold)
            node.resume()
        elif kind == "worker-kill":
            master = node.nginx_master()
            workers = children_of(master) if master else []
            if workers:
                os.kill(rng.choice(workers), signal.SIGKILL)
            fault["detail"] = f"1 of {len(workers)} workers"
        elif kind in ("daemon-kill", "daemon-term"):
            sig = signal.SIGKILL if kind == "daemon-kill" else signal.SIGTERM
            problem = self.stop_daemon(node, sig)
            if problem:
                fault["problems"].append(problem)
            time.sleep(0.5)
            fault["t_restart"] = time.monotonic()
            self.restart_daemon(node)
        elif kind == "link-down":
            hold = rng.uniform(1.0, 5.0)
            fault["detail"] = f"{hold:.1f} s"
            sh("ip", "-n", node.ns, "link", "set", "eth0", "down")
            time.sleep(hold)
            sh("ip", "-n", node.ns, "link", "set", "eth0", "up")
        elif kind == "partition":
            hold = rng.uniform(1.0, 5.0)
            fault["detail"] = f"{hold:.1f} s"
            sh("bridge", "-n", self.lab.bridge, "link", "set", "dev", node.port, "state", "0")
            time.sleep(hold)
            sh("bridge", "-n", self.lab.bridge, "link", "set", "dev", node.port, "state", "3")
        elif kind == "iface-recreate":
            hold = rng.uniform(0.5, 2.0)
            fault["detail"] = f"{hold:.1f} s"
            sh("ip", "-n", node.ns, "link", "del", "eth0")
            time.sleep(hold)
            self.recreate_iface(node)
        elif kind == "nginx-bad-config":
            hold = rng.uniform(1.0, 4.0)
            fault["detail"] = f"{hold:.1f} s"
            before = node.nginx_master()
            with open(node.path("sites/zz-bad.conf"), "w") as f:
                f.write("server { listen 80; this is not nginx syntax }\n")
            time.sleep(hold)
            status = node.status()
            fault["detail"] += f", config_error reported: {bool(((status or {}).get('nginx') or {}).get('config_error'))}"
            if node.nginx_master() != before:
                fault["problems"].append(f"nginx master changed under a bad config ({before} -> {node.nginx_master()})")
            os.unlink(node.path("sites/zz-bad.conf"))
        elif kind == "ha-bad-reload":
            # Invalid configs that still parse as TOML (the CLI finds the control socket in the
            # file), one that needs a restart (rejected too), and a syntax error sent by SIGHUP.
            variant = rng.choice(["type", "range", "unknown-key", "needs-restart", "syntax-sighup"])
            config = node.path("nginx-ha.toml")
            before = node.status()
            with open(config) as f:
                good = f.read()
            bad = {"type": good.replace("priority = ", "priority = \"high\" # ", 1),
                   "range": good.replace("vrid = 51", "vrid = 300", 1),
                   "unknown-key": good.replace("[health]\n", "[health]\nintervall_ms = 200\n", 1),
                   "needs-restart": good.replace("vrid = 51", "vrid = 52", 1),
                   "syntax-sighup": good + "\n[daemon\nstate_dir = \"unterminated\n"}[variant]
            os.replace(config, config + ".good")
            with open(config, "w") as f:
                f.write(bad)
            if variant == "syntax-sighup":
                node.daemon.send_signal(signal.SIGHUP)
                time.sleep(0.5)
                fault["detail"] = variant
            else:
                done = subprocess.run([node.binary, "reload", "-c", config], capture_output=True, text=True,
                                      timeout=60)
                fault["detail"] = f"{variant}, reload exit {done.returncode}"
                if done.returncode != 1:
                    fault["problems"].append(f"`nginx-ha reload` of an invalid config ({variant}) exited "
                                             f"{done.returncode} (want 1, rejected): {done.stderr.strip()[:200]}")
            os.replace(config + ".good", config)
            after = node.status()
            if node.daemon.poll() is not None:
                fault["problems"].append(f"nginx-ha exited after the invalid config ({node.daemon.returncode})")
            elif not after:
                fault["problems"].append("daemon not answering after the rejected reload")
            elif before and (self.router_state(before) != self.router_state(after)
                             or before["nginx"].get("master_pid") != after["nginx"].get("master_pid")
                             or before["nginx"].get("worker_pids") != after["nginx"].get("worker_pids")):
                fault["problems"].append(f"running state changed: {self.router_state(before)}/"
                                         f"{before['nginx'].get('master_pid')}/{before['nginx'].get('worker_pids')} -> "
                                         f"{self.router_state(after)}/{after['nginx'].get('master_pid')}/"
                                         f"{after['nginx'].get('worker_pids')}")
            again = subprocess.run([node.binary, "reload", "-c", config], capture_output=True, text=True, timeout=60)
            if again.returncode != 0:
                fault["problems"].append(f"reload of the restored config failed: {again.stderr.strip()[:200]}")
        elif kind == "state-dir":
            hold = rng.uniform(1.0, 3.0)
            fault["detail"] = f"{hold:.1f} s"
            # chmod 000 does not stop root: a file where the directory should be does.
            state = node.path("state")
            if os.path.exists(state):
                os.rename(state, node.path("state.away"))
            with open(state, "w") as f:
                f.write("not a directory\n")
            time.sleep(hold)
            os.unlink(state)
            if os.path.exists(node.path("state.away")):
                os.rename(node.path("state.away"), state)
        elif kind == "both-restart":
            for n in self.nodes.values():
                if n.daemon.poll() is not None:
                    fault["problems"].append(f"{n.name}: nginx-ha had exited before the fault (status {n.daemon.returncode})")
                n.daemon.send_signal(signal.SIGTERM)
            for n in self.nodes.values():
                problem = self.stop_daemon(n, 0)
                if problem:
                    fault["problems"].append(f"{n.name}: {problem}")
            fault["t_restart"] = time.monotonic()
            for n in self.nodes.values():
                self.restart_daemon(n)
        else:
            raise ValueError(kind)
        fault["t_end"] = time.monotonic()

    def run(self):
        args = self.args
        kinds = args.kinds
        plan = []
        while len(plan) < args.faults:
            round_ = list(kinds)
            self.rng.shuffle(round_)
            plan.extend(round_)
        plan = plan[:args.faults]
        settled, statuses = self.settle(60)
        if settled is None:
            raise RuntimeError(f"the pair never settled at startup: {self.describe(statuses)}")
        self.sample(0, statuses)
        for index, kind in enumerate(plan, 1):
            time.sleep(self.rng.uniform(0.3, 1.5))
            fault = {"index": index, "kind": kind, "problems": []}
            self.faults.append(fault)
            try:
                self.inject(kind, fault)
            except Exception as error:  # a fault that could not be applied: repair and go on
                fault["problems"].append(f"injecting failed: {error}")
                fault.setdefault("t_end", time.monotonic())
                for node in self.nodes.values():
                    node.resume()
                    self.repair_node(node)
                    if node.daemon.poll() is not None:
                        self.restart_daemon(node)
            settled, statuses = self.settle(args.settle_timeout)
            fault["t_settled"] = settled
            if settled is None:
                fault["problems"].append(f"not settled within {args.settle_timeout:.0f} s: {self.describe(statuses)}")
                # Recover as systemd / an operator would, so the storm can go on: start a daemon
                # that exited, or, if both run (e.g. a router stuck in FAULT), restart both. The
                # fault stays counted as not settled; its outage is measured up to this point.
                fault["t_recover"] = time.monotonic()
                dead = [node for node in self.nodes.values() if node.daemon.poll() is not None]
                for node in dead:
                    fault["problems"].append(f"nginx-ha on {node.name} had exited ({node.daemon.returncode}); "
                                             f"restarted")
                for node in (dead or self.nodes.values()):
                    self.repair_node(node)
                    if node.daemon.poll() is None:
                        self.stop_daemon(node, signal.SIGTERM)
                    self.restart_daemon(node)
                if not dead:
                    fault["problems"].append("recovered by restarting both daemons")
                settled, statuses = self.settle(args.settle_timeout)
                if settled is None:
                    fault["problems"].append("not settled even after the recovery: stopping the storm")
                    self.print_fault(fault)
                    break
            strays = self.strays(statuses)
            deadline = time.monotonic() + 3
            while strays and time.monotonic() < deadline:
                time.sleep(0.3)
                statuses = {name: node.status() for name, node in self.nodes.items()}
                strays = self.strays(statuses)
            if strays:
                fault["problems"].append("stray processes: " + ", ".join(f"{p} ({l}, {s})" for p, l, s in strays))
                fault["strays"] = len(strays)
            self.sample(index, statuses)
            self.print_fault(fault)
        time.sleep(1.0)
        self.t_stop = time.monotonic()
        self.finish()

    def describe(self, statuses):
        parts = []
        for name in self.nodes:
            st = statuses.get(name)
            if not st:
                parts.append(f"{name}: no status")
                continue
            parts.append(f"{name}: {self.router_state(st)} nginx {st['nginx'].get('state')} "
                         f"healthy={st['nginx'].get('healthy')} holds={self.holding(name)}")
        now = time.monotonic()
        with self.lock:
            recent = [p[2] for p in self.polls if p[0] >= now - 1.3 and p[1] <= now]
        parts.append(f"client last 1 s: {sum(1 for b in recent if b is None)} of {len(recent)} failed, "
                     f"answered by {sorted(set(b for b in recent if b))}")
        # Where the client sends VIP traffic: its neighbour entry against the nodes' MACs.
        neigh = sh("ip", "-n", self.client, "neigh", "show", VIP, check=False).strip()
        macs = {}
        for name, node in self.nodes.items():
            link = sh("ip", "-n", node.ns, "-o", "link", "show", "dev", "eth0", check=False)
            macs[name] = link.split("link/ether ")[1].split()[0] if "link/ether " in link else "?"
        parts.append(f"client neighbour entry for the VIP: {neigh or 'none'} (A is {macs['A']}, B is {macs['B']})")
        return "; ".join(parts)

    def sample(self, index, statuses):
        for name, node in self.nodes.items():
            pid = node.daemon.pid
            if node.daemon.poll() is None:
                try:
                    fds = len(os.listdir(f"/proc/{pid}/fd"))
                except OSError:
                    continue
                self.samples.append((index, name, pid, rss_kib(pid), fds))

    def finish(self):
        """SIGTERM both daemons: afterwards no VIP may be anywhere and no tracked process alive."""
        for node in self.nodes.values():
            self.observe(node, node.status())
        for node in self.nodes.values():
            if node.daemon.poll() is None:
                node.daemon.send_signal(signal.SIGTERM)
        for node in self.nodes.values():
            try:
                node.daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.end_checks.setdefault("problems", []).append(f"nginx-ha {node.name} ignored SIGTERM for 30 s")
        time.sleep(1.0)
        self.end_checks["vips_after_stop"] = [name for name in self.nodes if self.holding(name)]
        alive = [(pid, label, process_state(pid)) for pid, (started, label) in self.tracked.items()
                 if same_process(pid, started)]
        self.end_checks["processes_after_stop"] = alive

    def print_fault(self, fault):
        t0 = fault["t_start"] if "t_start" in fault else time.monotonic()
        extra = f" ({fault['detail']})" if fault.get("detail") else ""
        settle = (f"settled {fault['t_settled'] - fault['t_end']:.1f} s after the fault ended"
                  if fault.get("t_settled") else "NOT settled")
        print(f"  fault {fault['index']:3d} {fault['kind']:16s} on {fault.get('node', '?'):3s}{extra}: {settle}"
              f" [{datetime.datetime.now():%H:%M:%S}, t={t0 - self.t_begin:.1f} s]", flush=True)
        for problem in fault["problems"]:
            print(f"      problem: {problem}", flush=True)

    # ---- analysis

    def analyse(self):
        with self.lock:
            polls = sorted(self.polls)
            holds = {name: list(events) for name, events in self.holds.items()}
        # Failed-poll runs: (first failed start, next answered start or None).
        runs, first = [], None
        for start, _end, body in polls:
            if body is None:
                first = start if first is None else first
            elif first is not None:
                runs.append((first, start))
                first = None
        if first is not None:
            runs.append((first, None))
        # Intervals when both nodes held the VIP.
        merged = sorted([(t, n, h) for n, events in holds.items() for t, h in events])
        state, both, since = {"A": False, "B": False}, [], None
        for t, n, h in merged:
            state[n] = h
            if state["A"] and state["B"] and since is None:
                since = t
            elif not (state["A"] and state["B"]) and since is not None:
                both.append((since, t))
                since = None
        if since is not None:
            both.append((since, time.monotonic()))

        def holders_at(t):
            out = set()
            for n, events in holds.items():
                h = False
                for et, eh in events:
                    if et > t:
                        break
                    h = eh
                if h:
                    out.add(n)
            return out

        ends = [f["t_start"] for f in self.faults[1:] if "t_start" in f] + [getattr(self, "t_stop", time.monotonic())]
        poll_starts = [p[0] for p in polls]
        # Where split brain is allowed, over the whole run: a heal's window may reach into the
        # next fault's (a partition shorter than master-down ends, the next fault starts, and
        # the isolated backup's timer runs out just before the master's next advert).
        allowed = []
        for fault in self.faults:
            if "t_start" not in fault:
                continue
            ws = fault["t_start"]
            if fault["kind"] in ISOLATING:
                allowed.append((ws, fault["t_end"] + self.advert))
            if fault["kind"] == "daemon-kill":
                allowed.append((ws, fault.get("t_restart", fault["t_end"]) + self.advert))
            if fault["kind"] == "both-restart":
                # Two fresh routers elect by preemption: the lower one may become MASTER a few
                # ms before the higher one, and yields on its first advert.
                allowed.append((fault.get("t_restart", ws), fault["t_end"] + self.advert))
        merged = []
        for a_s, a_e in sorted(allowed):
            if merged and a_s <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], a_e))
            else:
                merged.append((a_s, a_e))
        allowed = merged
        for fault, window_end in zip(self.faults, ends):
            if "t_start" not in fault:
                continue
            ws, we = fault["t_start"], fault.get("t_recover", window_end)
            fault["window_s"] = we - ws
            lengths = [((end if end is not None else we) - start) for start, end in runs if ws <= start < we]
            fault["outage_s"] = max(lengths, default=0.0)
            fault["unanswered_at_window_end"] = any(end is None and ws <= start < we for start, end in runs)
            inside, outside, episodes = 0.0, 0.0, []
            for s, e in both:
                s, e = max(s, ws), min(e, we)
                if e <= s:
                    continue
                cut = 0.0
                for a_s, a_e in allowed:
                    cut += max(0.0, min(e, a_e) - max(s, a_s))
                inside += cut
                if (e - s) - cut > 0:
                    outside += (e - s) - cut
                    episodes.append((e - s) - cut)
            fault["split_allowed_s"] = inside
            fault["split_outside_s"] = outside
            fault["split_outside_worst_s"] = max(episodes, default=0.0)
            fault["split_episodes"] = len(episodes)
            if fault["kind"] in ISOLATING:
                fault["heal_s"] = self.heal_time(fault["t_end"], we, polls, poll_starts, holders_at)
        # Leak: per daemon instance, after warm-up.
        warmup = max(3, self.args.faults // 10)
        instances = {}
        for index, name, pid, rss, fds in self.samples:
            instances.setdefault((name, pid), []).append((index, rss, fds))
        self.leak = []
        for (name, pid), series in instances.items():
            later = [s for s in series if s[0] > warmup][1:]
            self.leak.append({"node": name, "pid": pid, "samples": len(series), "assessed": len(later) >= 5,
                              "first_fault": series[0][0], "last_fault": series[-1][0],
                              "rss_kib": [series[0][1], series[-1][1]], "fds": [series[0][2], series[-1][2]],
                              "rss_growth_kib": (later[-1][1] - later[0][1]) if later else None,
                              "fd_growth": (later[-1][2] - later[0][2]) if later else None,
                              "rss_max_kib": max(s[1] for s in series), "fds_max": max(s[2] for s in series)})
        self.runs = runs

    def heal_time(self, healed, window_end, polls, poll_starts, holders_at, stable=0.2):
        """Seconds from the heal to the first moment T from which, for `stable` s, exactly one node
        holds the VIP and every poll started is answered; inf if not within the window."""
        import bisect
        i = bisect.bisect_left(poll_starts, healed)
        while i < len(polls) and polls[i][0] < window_end:
            t = polls[i][0]
            j = bisect.bisect_left(poll_starts, t + stable)
            chunk = polls[i:j]
            if j >= len(polls):
                return float("inf")
            if chunk and all(p[2] is not None for p in chunk) and self.one_holder_over(t, t + stable, holders_at):
                return t - healed
            # Skip past the first failed poll in the chunk, or by one poll.
            bad = next((k for k, p in enumerate(chunk) if p[2] is None), None)
            i += (bad + 1) if bad is not None else 1
        return float("inf")

    def one_holder_over(self, start, end, holders_at):
        if len(holders_at(start)) != 1:
            return False
        with self.lock:
            changes = [t for events in self.holds.values() for t, _h in events if start < t < end]
        return all(len(holders_at(t)) == 1 for t in changes)

    def report(self):
        args = self.args
        tol = args.split_tolerance_ms / 1000.0
        heal_bound = self.advert + POLL_INTERVAL
        print(f"\n## Per kind ({len(self.faults)} faults; outage = longest run of failed client polls in the "
              f"fault's window, from the fault to the next fault)")
        header = ("| kind | n | worst outage ms | median outage ms | split brain outside allowed, total / worst ms "
                  "| split brain in allowed windows ms | heal worst ms | not settled | problems |")
        print(header)
        print("|" + "---|" * 9)
        by_kind = {}
        for fault in self.faults:
            by_kind.setdefault(fault["kind"], []).append(fault)
        rows = {}
        for kind in [k for k in KINDS if k in by_kind]:
            fs = by_kind[kind]
            outages = [f.get("outage_s", 0.0) for f in fs]
            heal = [f["heal_s"] for f in fs if "heal_s" in f]
            row = {
                "n": len(fs), "worst_outage_s": max(outages), "median_outage_s": statistics.median(outages),
                "split_outside_total_s": sum(f.get("split_outside_s", 0.0) for f in fs),
                "split_outside_worst_s": max(f.get("split_outside_worst_s", 0.0) for f in fs),
                "split_allowed_total_s": sum(f.get("split_allowed_s", 0.0) for f in fs),
                "heal_worst_s": max(heal) if heal else None,
                "not_settled": sum(1 for f in fs if not f.get("t_settled")),
                "problems": sum(len(f["problems"]) for f in fs),
            }
            rows[kind] = row
            print(f"| {kind} | {row['n']} | {fmt_ms(row['worst_outage_s'])} | {fmt_ms(row['median_outage_s'])} | "
                  f"{fmt_ms(row['split_outside_total_s'])} / {fmt_ms(row['split_outside_worst_s'])} | "
                  f"{fmt_ms(row['split_allowed_total_s']) if kind in ISOLATING or kind in ('daemon-kill', 'both-restart') else '—'} | "
                  f"{fmt_ms(row['heal_worst_s'])} | {row['not_settled']} | {row['problems']} |")
        notable = [f for f in self.faults if f.get("outage_s", 0) >= 0.1 or f.get("split_outside_s", 0) > 0
                   or f.get("heal_s", 0) > heal_bound or f["problems"]]
        print(f"\n## Faults with an outage ≥ 100 ms, split brain, a slow heal or a problem ({len(notable)})")
        for f in notable:
            heal = f" heal {fmt_ms(f['heal_s'])} ms" if "heal_s" in f else ""
            print(f"  #{f['index']} {f['kind']} on {f.get('node')} ({f.get('detail', '')}) at t="
                  f"{f['t_start'] - self.t_begin:.1f} s: outage {fmt_ms(f.get('outage_s'))} ms, split brain "
                  f"{fmt_ms(f.get('split_outside_s'))} ms outside / {fmt_ms(f.get('split_allowed_s'))} ms allowed{heal}"
                  + "".join(f"; {p}" for p in f["problems"]))
        print("\n## Daemon RSS / open fds (sampled after each settle; an instance = one daemon process)")
        for leak in self.leak:
            growth = (f"growth after warm-up {leak['rss_growth_kib']:+d} KiB, {leak['fd_growth']:+d} fds"
                      if leak["rss_growth_kib"] is not None else "no samples after warm-up")
            print(f"  {leak['node']} pid {leak['pid']}: faults {leak['first_fault']}–{leak['last_fault']}, "
                  f"{leak['samples']} samples, RSS {leak['rss_kib'][0]}→{leak['rss_kib'][1]} KiB "
                  f"(max {leak['rss_max_kib']}), fds {leak['fds'][0]}→{leak['fds'][1]} (max {leak['fds_max']}); "
                  f"{growth}{'' if leak['assessed'] else ' (not assessed: < 5 samples after warm-up)'}")
        # Goals.
        goals = []
        split_bad = [f for f in self.faults if f.get("split_outside_worst_s", 0.0) > tol]
        tiny = [f for f in self.faults if 0.0 < f.get("split_outside_worst_s", 0.0) <= tol]
        goals.append(("split brain outside the allowed windows", not split_bad,
                      f"{len(split_bad)} faults with an overlap > {args.split_tolerance_ms:g} ms "
                      f"({brief(split_bad, 'split_outside_worst_s')})"
                      f"; {len(tiny)} faults with overlaps ≤ {args.split_tolerance_ms:g} ms "
                      f"(total {fmt_ms(sum(f['split_outside_s'] for f in tiny))} ms)"))
        heals = [f for f in self.faults if "heal_s" in f]
        heal_bad = [f for f in heals if f["heal_s"] > heal_bound]
        goals.append((f"one holder and the VIP answered within {fmt_ms(heal_bound)} ms of a heal", not heal_bad,
                      f"{len(heals)} heals, worst {fmt_ms(max((f['heal_s'] for f in heals), default=None))} ms; "
                      f"over: {brief(heal_bad, 'heal_s') or 'none'}"))
        unsettled = [f for f in self.faults if not f.get("t_settled")]
        goals.append(("settled after every fault", not unsettled,
                      f"{len(unsettled)} not settled within {args.settle_timeout:.0f} s"
                      + (f" ({brief(unsettled)})" if unsettled else "")))
        checks = [f for f in self.faults if any(not p.startswith("stray") and not p.startswith("not settled")
                                                and not p.startswith("still not settled") for p in f["problems"])]
        goals.append(("fault-specific checks (bad configs rejected, state untouched, daemons stop)", not checks,
                      f"{len(checks)} faults with problems"
                      + (f" ({brief(checks)})" if checks else "")))
        strays = [f for f in self.faults if f.get("strays")]
        end_vips = self.end_checks.get("vips_after_stop", [])
        end_procs = self.end_checks.get("processes_after_stop", [])
        goals.append(("no stray processes or VIPs", not strays and not end_vips and not end_procs
                      and not self.end_checks.get("problems"),
                      f"after settles: {len(strays)} faults with strays; after stopping both daemons: VIP on "
                      f"{end_vips or 'no node'}, {len(end_procs)} tracked processes alive"
                      + (f" {end_procs[:6]}" if end_procs else "")
                      + "".join(f"; {p}" for p in self.end_checks.get("problems", []))))
        assessed = [l for l in self.leak if l["assessed"]]
        leaky = [l for l in assessed if l["rss_growth_kib"] > args.rss_bound_kib or l["fd_growth"] > args.fd_bound]
        goals.append((f"no leak (growth after warm-up ≤ {args.rss_bound_kib} KiB RSS, ≤ {args.fd_bound} fds)",
                      not leaky,
                      f"{len(assessed)} daemon instances assessed"
                      + (f", worst {max(l['rss_growth_kib'] for l in assessed):+d} KiB / "
                         f"{max(l['fd_growth'] for l in assessed):+d} fds" if assessed else " (run too short)")
                      + (f"; over the bound: {[(l['node'], l['pid']) for l in leaky]}" if leaky else "")))
        print("\n## Goals")
        for name, ok, detail in goals:
            print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")
        self.rows, self.goals = rows, goals
        return all(ok for _n, ok, _d in goals)


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "poll":
        return asyncio.run(stream_polls(sys.argv[2]))
    if len(sys.argv) >= 2 and sys.argv[1] == "addrwatch":
        return watch_addresses(sys.argv[2], sys.argv[3:])
    if len(sys.argv) >= 2 and sys.argv[1] == "sweep":
        if os.geteuid() != 0:
            sys.exit("storm.py: needs root")
        sweep()
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=os.environ.get("NGINX_HA_BIN", "target/release/nginx-ha"))
    parser.add_argument("--seed", type=int, default=None, help="default: a random seed, printed")
    parser.add_argument("--faults", type=int, default=500)
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, from: {','.join(KINDS)}")
    parser.add_argument("--advert-ms", type=int, default=1000)
    parser.add_argument("--settle-timeout", type=float, default=30.0)
    parser.add_argument("--split-tolerance-ms", type=float, default=10.0)
    parser.add_argument("--rss-bound-kib", type=int, default=1024)
    parser.add_argument("--fd-bound", type=int, default=2)
    parser.add_argument("--json")
    parser.add_argument("--keep-logs", help="copy both nodes' nginx-ha.log and nginx-error.log into this dir")
    args = parser.parse_args()
    args.binary = os.path.abspath(args.binary)
    args.kinds = [k for k in args.kinds.split(",") if k]
    unknown = [k for k in args.kinds if k not in KINDS]
    if unknown or not args.kinds:
        sys.exit(f"storm.py: unknown kinds {unknown}; known: {','.join(KINDS)}")
    if os.geteuid() != 0:
        sys.exit("storm.py: needs root (network namespaces, raw sockets)")
    if not os.access(args.binary, os.X_OK):
        sys.exit(f"storm.py: {args.binary} is not an executable; run `cargo build --release` or set NGINX_HA_BIN")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1 << 31)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sweep(quiet=False)  # what earlier killed runs left
    command = (f"bench/storm.sh --binary {shlex.quote(args.binary)} --seed {args.seed} --faults {args.faults} "
               f"--kinds {','.join(args.kinds)} --advert-ms {args.advert_ms} --settle-timeout {args.settle_timeout:g}")
    print(f"# nginx-ha fault storm, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"seed {args.seed}, {args.faults} faults, adverts every {args.advert_ms} ms")
    print(f"# re-run: {command}")
    print(f"# binary {args.binary}; nproc {os.cpu_count()}; load {os.getloadavg()[0]:.2f}; "
          f"kernel {os.uname().release}", flush=True)
    storm = Storm(args)
    become_subreaper(lambda: [pid for pid, (_s, label) in list(storm.tracked.items()) if "nginx-ha" not in label
                              and os.path.exists(f"/proc/{pid}")])
    ok = False
    try:
        storm.t_begin = time.monotonic()
        storm.setup()
        storm.run()
        storm.analyse()
        ok = storm.report()
        elapsed = time.monotonic() - storm.t_begin
        print(f"\n# {len(storm.faults)} faults in {elapsed:.0f} s; seed {args.seed}; {'PASS' if ok else 'FAIL'}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"seed": args.seed, "command": command, "per_kind": storm.rows, "faults": storm.faults,
                           "leak": storm.leak, "end": storm.end_checks,
                           "goals": [{"goal": n, "ok": o, "detail": d} for n, o, d in storm.goals]}, f, indent=1,
                          default=str)
    finally:
        if not ok and storm.lab:
            for name, node in storm.nodes.items():
                log = read(node.path("nginx-ha.log")) or ""
                print(f"\n==== last lines of nginx-ha.log on {name} ====\n" + "\n".join(log.splitlines()[-40:]))
        if args.keep_logs and storm.lab:
            os.makedirs(args.keep_logs, exist_ok=True)
            for name, node in storm.nodes.items():
                for log in ("nginx-ha.log", "nginx-error.log"):
                    if os.path.exists(node.path(log)):
                        subprocess.run(["cp", node.path(log), os.path.join(args.keep_logs, f"{name}-{log}")])
        storm.teardown()
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        for lab in list(OPEN_LABS):
            lab.close()

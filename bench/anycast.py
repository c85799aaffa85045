#!/usr/bin/env python3
"""Anycast benchmarks: how fast a node's failure reaches the router's FIB, and what a client
looping requests loses. Prints figures (min/median/max); not a test.

usage: bench/anycast.sh [NGINX_HA_BINARY] [--reps N] [--only hang,crash,stop,kill] [--json FILE]

Topology (built fresh for each repetition, addresses from 198.18.0.0/15 only):
  client 198.18.2.10 -- edge bridge -- router (BIRD, ECMP, fib_multipath_hash_policy=1)
  -- fabric bridge -- node1..3 198.18.1.11..13 (nginx-ha + nginx + BIRD with conf/anycast/bird.conf,
  198.19.10.1/32 on lo). [health] probes http://127.0.0.1/ every 200 ms, timeout 150 ms, fall 2.

Events, all on node2:
  hang   SIGSTOP of its nginx processes (the probe fails; withdrawn at once)
  crash  kill -9 of its nginx master after 11 s of serving (restarted in place; restart_grace_ms = 300)
  stop   SIGTERM of nginx-ha (planned stop: withdraw, drain_ms = 1000, stop nginx)
  kill   SIGTERM of nginx-ha with drain_ms = 0 (no drain: the baseline for `stop`)
"FIB" is the time from the event to the first poll (every ~5 ms) of the router's FIB without
node2 as a next hop (`-` if node2 never left it). "failed" counts the client's failed requests
(a new connection every 10 ms, 300 ms each) from the event until 3 s after it.
"""

import argparse
import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
NGINX = next((p for p in ("/usr/sbin/nginx", "/usr/bin/nginx") if os.path.exists(p)), "nginx")
BIRD, BIRDC = "/usr/sbin/bird", "/usr/sbin/birdc"
ANYCAST = "198.19.10.1"
PREFIX = f"nha{os.getpid()}-"
started = []  # (Popen) everything we started, stopped by pid at the end
namespaces = []

CLIENT = r"""
import socket, sys, time, signal
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
out = open(sys.argv[1], "w", buffering=1)
while not stop:
    t = time.time()
    body = "-"
    try:
        s = socket.create_connection(("198.19.10.1", 80), timeout=0.3)
        s.settimeout(0.3)
        s.sendall(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        if data.startswith(b"HTTP/1.1 200"):
            body = data.split(b"\r\n\r\n", 1)[1].decode().strip()
    except OSError:
        pass
    out.write(f"{t:.6f} {body}\n")
    time.sleep(0.010)
"""


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True).stdout


def ns_new(name):
    full = PREFIX + name
    sh("ip", "netns", "add", full)
    namespaces.append(full)
    sh("ip", "-n", full, "link", "set", "lo", "up")
    return full


def sysctl(ns, key, value):
    sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{key}={value}")


def connect(bridge, ns, ifname, cidr, port):
    sh("ip", "-n", ns, "link", "add", ifname, "type", "veth", "peer", "name", port, "netns", bridge)
    sh("ip", "-n", bridge, "link", "set", port, "master", "br0", "up")
    sh("ip", "-n", ns, "addr", "add", cidr, "dev", ifname)
    sh("ip", "-n", ns, "link", "set", ifname, "up")


def spawn(ns, args, log):
    process = subprocess.Popen(["ip", "netns", "exec", ns, *args], stdin=subprocess.DEVNULL,
                               stdout=open(log, "a"), stderr=subprocess.STDOUT)
    started.append(process)
    return process


def stop(process, timeout=10):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait(what, condition, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def next_hops(router):
    words = sh("ip", "-n", router, "route", "show", f"{ANYCAST}/32").split()
    return {words[i + 1] for i, w in enumerate(words[:-1]) if w == "via"}


class Cluster:
    def __init__(self, binary, drain_ms):
        self.dir = tempfile.mkdtemp(prefix="nginx-ha-bench-anycast-")
        d = self.dir
        self.fabric, self.edge = ns_new("fabric"), ns_new("edge")
        for bridge in (self.fabric, self.edge):
            sh("ip", "-n", bridge, "link", "add", "br0", "type", "bridge")
            sh("ip", "-n", bridge, "link", "set", "br0", "up")
        self.router = ns_new("router")
        connect(self.fabric, self.router, "eth0", "198.18.1.1/24", "p0")
        connect(self.edge, self.router, "eth1", "198.18.2.1/24", "p0")
        sysctl(self.router, "net.ipv4.ip_forward", 1)
        sysctl(self.router, "net.ipv4.fib_multipath_hash_policy", 1)
        router_conf = ("log stderr all;\nrouter id 198.18.1.1;\nprotocol device {}\n"
                       "protocol kernel { merge paths on; ipv4 { import none; export all; }; }\n")
        for i in (1, 2, 3):
            router_conf += (f"protocol bgp node{i} {{ local 198.18.1.1 as 65000; neighbor 198.18.1.1{i} as 65010; "
                            "hold time 3; keepalive time 1; connect retry time 2; error wait time 1, 10; "
                            "ipv4 { import all; export none; }; }\n")
        self.bird("router", self.router, router_conf)
        node_conf = open(os.path.join(ROOT, "conf/anycast/bird.conf")).read().replace("log syslog all;", "log stderr all;")
        self.nodes = {}
        for i in (1, 2, 3):
            name = f"node{i}"
            ns = ns_new(name)
            connect(self.fabric, ns, "eth0", f"198.18.1.1{i}/24", f"p{i}")
            sh("ip", "-n", ns, "route", "add", "default", "via", "198.18.1.1")
            nd = os.path.join(d, name)
            os.makedirs(nd)
            with open(os.path.join(nd, "nginx.conf"), "w") as f:
                f.write(f"worker_processes 1;\npid {nd}/nginx.pid;\nerror_log {nd}/nginx-error.log;\n"
                        "events { worker_connections 256; }\n"
                        f"http {{ access_log off; client_body_temp_path {nd}/body; proxy_temp_path {nd}/proxy;\n"
                        f"  server {{ listen 80; location / {{ return 200 \"{name}\\n\"; }} }} }}\n")
            with open(os.path.join(nd, "nginx-ha.toml"), "w") as f:
                f.write(f"[nginx]\nbinary = \"{NGINX}\"\nconfig = \"{nd}/nginx.conf\"\nstop_timeout_ms = 3000\n"
                        "[health]\ninterval_ms = 200\ntimeout_ms = 150\nfall = 2\nrise = 2\nhttp = \"http://127.0.0.1:80/\"\n"
                        f"[daemon]\ncontrol_socket = \"{nd}/control.sock\"\nstate_dir = \"{nd}/state\"\n"
                        f"[[anycast]]\nname = \"web\"\naddresses = [\"{ANYCAST}/32\"]\ndrain_ms = {drain_ms}\n"
                        "restart_grace_ms = 300\n")
            self.nodes[name] = {"ns": ns, "dir": nd, "binary": binary}
            self.start_daemon(name)
            self.bird(name, ns, node_conf.replace("198.18.1.11", f"198.18.1.1{i}"))
        self.client = ns_new("client")
        connect(self.edge, self.client, "eth0", "198.18.2.10/24", "p1")
        sh("ip", "-n", self.client, "route", "add", "198.19.0.0/16", "via", "198.18.2.1")
        wait("three next hops", lambda: len(next_hops(self.router)) == 3, 60)

    def bird(self, name, ns, conf):
        path = os.path.join(self.dir, f"{name}-bird.conf")
        with open(path, "w") as f:
            f.write(conf)
        spawn(ns, [BIRD, "-f", "-c", path, "-s", os.path.join(self.dir, f"{name}-bird.ctl"),
                   "-P", os.path.join(self.dir, f"{name}-bird.pid")], os.path.join(self.dir, f"{name}-bird.log"))

    def start_daemon(self, name):
        node = self.nodes[name]
        node["daemon"] = spawn(node["ns"], [node["binary"], "run", "-c", os.path.join(node["dir"], "nginx-ha.toml")],
                               os.path.join(node["dir"], "nginx-ha.log"))

    def nginx_pids(self, name):
        nd = self.nodes[name]["dir"]
        try:
            master = int(open(os.path.join(nd, "nginx.pid")).read())
            children = open(f"/proc/{master}/task/{master}/children").read().split()
        except (OSError, ValueError):
            return []
        return [master] + [int(c) for c in children]

    def close(self):
        for node in self.nodes.values():
            if "daemon" in node:
                stop(node["daemon"])
        for name in self.nodes:
            for pid in self.nginx_pids(name):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass


def run_event(binary, event):
    cluster = Cluster(binary, drain_ms=0 if event == "kill" else 1000)
    try:
        log = os.path.join(cluster.dir, "client.log")
        client = spawn(cluster.client, [sys.executable, "-c", CLIENT, log], os.path.join(cluster.dir, "client.err"))
        # 11 s of serving, as in the results of 2026-12-03 (the rule then restarted in place only
        # after 10 s); now any first crash is restarted in place and a run of 3 s resets the count.
        time.sleep(11 if event == "crash" else 1.5)
        t0 = time.time()
        if event == "hang":
            for pid in cluster.nginx_pids("node2"):
                os.kill(pid, signal.SIGSTOP)
        elif event == "crash":
            os.kill(cluster.nginx_pids("node2")[0], signal.SIGKILL)
        else:
            cluster.nodes["node2"]["daemon"].send_signal(signal.SIGTERM)
        fib = None
        while time.time() - t0 < 3:
            if fib is None and "198.18.1.12" not in next_hops(cluster.router):
                fib = time.time() - t0
            time.sleep(0.005)
        stop(client)
        lines = [line.split() for line in open(log)]
        after = [(float(t), body) for t, body in lines if float(t) >= t0 - 0.3]
        failed = sum(1 for _, body in after if body == "-")
        served_by_2 = sum(1 for t, body in lines if body == "node2" and float(t) < t0)
        if event == "hang":
            for pid in cluster.nginx_pids("node2"):
                os.kill(pid, signal.SIGCONT)
        return {"event": event, "fib_ms": None if fib is None else round(fib * 1000, 1), "failed": failed,
                "requests": len(after), "node2_served_before": served_by_2}
    finally:
        cluster.close()
        for process in started:
            stop(process, 5)
        started.clear()
        while namespaces:
            sh("ip", "netns", "del", namespaces.pop(), check=False)


def summary(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{min(values)} / {statistics.median(values)} / {max(values)}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary", nargs="?")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", default="hang,crash,stop,kill")
    parser.add_argument("--json")
    args = parser.parse_args()
    binary = args.binary or next((os.path.join(ROOT, p) for p in ("target/release/nginx-ha", "target/debug/nginx-ha")
                                  if os.path.exists(os.path.join(ROOT, p))), None)
    if binary is None:
        sys.exit("build nginx-ha first (cargo build --release)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {binary}, {args.reps} reps")
    results = []
    for event in args.only.split(","):
        runs = [run_event(binary, event) for _ in range(args.reps)]
        results.extend(runs)
        fib = [r["fib_ms"] for r in runs]
        print(f"{event:<6} FIB change ms (min/median/max): {summary(fib):<24} "
              f"failed requests per event: {[r['failed'] for r in runs]} "
              f"(of {[r['requests'] for r in runs]}; node2 served {[r['node2_served_before'] for r in runs]} before)",
              flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    try:
        main()
    finally:
        for process in started:
            stop(process, 5)
        for ns in namespaces:
            sh("ip", "netns", "del", ns, check=False)

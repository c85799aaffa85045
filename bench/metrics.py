#!/usr/bin/env python3
"""Metrics benchmarks: what a scrape of nginx-ha's /metrics costs, the daemon's idle RSS with
metrics on (and where it goes), and whether hostile scrapers delay VRRP adverts. Prints figures;
not a test.

usage: bench/metrics.sh [NGINX_HA_BINARY] [--scrapes N] [--spaced N] [--seconds S] [--only scrape,vrrp]
                        [--json FILE]
       (NGINX_HA_BINARY defaults to target/release/nginx-ha; run `cargo build --release` first)

Needs root, iproute2, nginx and python3. A two-node lab in network namespaces (nodes A and B,
client C on a bridge, addresses from 198.18.0.0/15 only), each node nginx-ha with one router
and `[daemon] metrics_listen = "127.0.0.1:9612"`, `[health] status_url` at nginx's stub_status.
- scrape cost: scrapes of A from inside A's namespace, back to back on one keep-alive connection
  and on a new connection each (these share stub_status reads), and 300 ms apart (a read each);
  client-side latency (this Python client included) and the daemon's CPU (schedstat of all its
  threads) per scrape, less its idle CPU over the same time.
- idle RSS: VmRSS of both daemons 10 s after the scrapes stopped, and A's /proc/PID/smaps
  summed by kind of mapping (the binary, shared libraries, heap, anonymous, stacks).
- VRRP under load: the inter-arrival of A's adverts as C sees them on the bridge (router at
  100 ms adverts), for S seconds idle and S seconds while 1000 idle connections, a scraper
  that pipelines requests and never reads, and a normal scraper every 1 s hold on A's port.
Every process started here is stopped by pid and every namespace deleted, also on failure.
"""

import argparse
import datetime
import json
import os
import resource
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nhalab import (DEFAULT_HEALTH, NGINX, OPEN_LABS, Lab, NginxHaNode, cpu_seconds, nha_router, rss_kib,  # noqa: E402
                    read, sh, wait_until)

HERE = os.path.abspath(__file__)
A_ADDR, B_ADDR, C_ADDR = "198.18.0.1", "198.18.0.2", "198.18.0.10"
VIP = "198.18.0.100"
METRICS_PORT = 9612


class MetricsNode(NginxHaNode):
    """An nginx-ha node whose nginx has a stub_status location and whose daemon serves metrics."""

    def __init__(self, lab, name, cidr):
        super().__init__(lab, name, cidr, sites=True)
        with open(self.path("sites/main.conf"), "w") as f:
            f.write(f"server {{ listen 80; location / {{ return 200 \"{name}\\n\"; }}\n"
                    f"  location = /nginx_status {{ stub_status; }} }}\n")

    def nginx_ha_toml(self, tables, health, watch=False):
        text = super().nginx_ha_toml(tables, health, watch)
        text = text.replace("[health]\n", "[health]\nstatus_url = \"http://127.0.0.1:80/nginx_status\"\n")
        return text.replace("[daemon]\n", f"[daemon]\nmetrics_listen = \"127.0.0.1:{METRICS_PORT}\"\n")


def lab_with(args, interval_ms, version):
    lab = Lab(args.workdir, prefix="nhm")
    try:
        nodes = {}
        for name, address, priority in (("A", A_ADDR, 100), ("B", B_ADDR, 90)):
            node = MetricsNode(lab, name, f"{address}/24")
            node.start(args.binary, nha_router("VI_1", 51, priority, version, interval_ms, [f"{VIP}/24"]),
                       DEFAULT_HEALTH)
            nodes[name] = node
        client = lab.netns("C")
        lab.connect(client, f"{C_ADDR}/24")
        nodes["A"].wait_state("VI_1", "MASTER", 60)
        nodes["B"].wait_state("VI_1", "BACKUP", 60)
        return lab, nodes["A"], nodes["B"], client
    except BaseException:
        lab.close()
        raise


def in_ns(ns, *args, timeout):
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, HERE, *args], capture_output=True, text=True,
                         timeout=timeout, check=True)
    return json.loads(out.stdout)


# --------------------------------------------------------------------------------------------
# Helpers run inside a namespace (`metrics.py scrape|load|sniff ...`); each prints one JSON value.

def read_answer(sock_file):
    status = sock_file.readline()
    length = 0
    while True:
        line = sock_file.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    body = sock_file.read(length)
    return status, body


REQUEST = b"GET /metrics HTTP/1.1\r\nHost: bench\r\nAccept: application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2\r\n\r\n"


def scrape_main(port, count, mode):
    """`count` scrapes: `kept` back to back on one keep-alive connection, `fresh` back to back on
    a new connection each, `spaced` on one connection 300 ms apart (so that each one reads
    stub_status; back to back they share a read). The latencies in µs, the body size and the
    gathering time the last scrape reports."""
    port, count = int(port), int(count)
    latencies, body = [], b""
    sock = socket.create_connection(("127.0.0.1", port)) if mode != "fresh" else None
    f = sock.makefile("rb") if sock else None
    for _ in range(count):
        start = time.perf_counter()
        if sock:
            sock.sendall(REQUEST)
            status, body = read_answer(f)
        else:
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(REQUEST)
                status, body = read_answer(s.makefile("rb"))
        latencies.append((time.perf_counter() - start) * 1e6)
        assert status.startswith(b"HTTP/1.1 200"), status
        if mode == "spaced":
            time.sleep(0.3)
    if sock:
        sock.close()
    gather = next((float(line.split()[1]) for line in body.decode().splitlines()
                   if line.startswith("nginx_ha_metrics_scrape_duration_seconds ")), None)
    print(json.dumps({"latency_us": latencies, "bytes": len(body), "gather_s": gather}))


def load_main(port, seconds):
    """1000 idle connections, one scraper that pipelines requests and never reads (its receive
    buffer small), and a normal scraper once a second with a 5 s timeout, for `seconds`."""
    port, seconds = int(port), float(seconds)
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", port))
    slow.setblocking(False)
    pipelined = 0
    try:
        for _ in range(2000):
            slow.send(REQUEST)
            pipelined += 1
    except BlockingIOError:
        pass
    idle = []
    for _ in range(1000):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        idle.append(s)
    time.sleep(0.5)
    _, writable, _ = select.select([], idle, [], 0)
    established = len(writable)
    scrapes = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.settimeout(5)
                s.sendall(REQUEST)
                status, _ = read_answer(s.makefile("rb"))
                scrapes.append([start, time.monotonic() - start, status.startswith(b"HTTP/1.1 200")])
        except OSError:
            scrapes.append([start, time.monotonic() - start, False])
        time.sleep(max(0.0, 1.0 - (time.monotonic() - start)))
    for s in idle + [slow]:
        s.close()
    print(json.dumps({"established": established, "pipelined": pipelined, "scrapes": scrapes}))


def sniff_main(seconds):
    """Kernel receive times (SO_TIMESTAMPNS, so that this script's own scheduling does not show)
    of the VRRP adverts this namespace's eth0 sees (IPv4, protocol 112), by source."""
    import struct
    so_timestampns = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python lacks the name
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, so_timestampns, 1)
    sock.settimeout(0.05)
    adverts = []
    end = time.monotonic() + float(seconds)
    while time.monotonic() < end:
        try:
            packet, ancillary, _flags, _address = sock.recvmsg(2048, 64)
        except OSError:
            continue
        stamp = next((struct.unpack("qq", data[:16]) for level, kind, data in ancillary
                      if level == socket.SOL_SOCKET and kind == so_timestampns), None)
        if stamp and len(packet) > 20 and packet[9] == 112:
            adverts.append([stamp[0] + stamp[1] / 1e9, ".".join(str(b) for b in packet[12:16])])
    print(json.dumps(adverts))


# --------------------------------------------------------------------------------------------
# Scenarios.

def pct(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def smaps_breakdown(pid, binary):
    """Rss (KiB) of the process's mappings summed by kind."""
    kinds, current = {}, None
    binary = os.path.realpath(binary)
    for line in (read(f"/proc/{pid}/smaps") or "").splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5:
            name = fields[5] if len(fields) >= 6 else ""
            if name == binary or name.endswith("(deleted)") and binary in name:
                current = "binary"
            elif name == "[heap]":
                current = "heap (main arena)"
            elif name == "[stack]":
                current = "main thread stack"
            elif name.startswith("/"):
                current = "shared libraries"
            elif name == "":
                current = "anonymous (thread arenas, thread stacks, runtime)"
            else:
                current = name
        elif fields and fields[0] == "Rss:" and current:
            kinds[current] = kinds.get(current, 0) + int(fields[1])
    return kinds


def threads_of(pid):
    return next((int(l.split()[1]) for l in (read(f"/proc/{pid}/status") or "").splitlines()
                 if l.startswith("Threads:")), 0)


def scenario_scrape_and_rss(args):
    print("\n## scrape cost and idle RSS (one router, v2 at 1 s, http probe every 1 s, metrics on)", flush=True)
    lab, a, b, _client = lab_with(args, 1000, 2)
    try:
        time.sleep(3)
        pid = a.daemon.pid
        idle_before, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(5)
        idle_rate = (cpu_seconds(pid) - idle_before) / (time.monotonic() - t0)
        result = {"idle_cpu_per_s": idle_rate}
        for mode, count in (("kept", args.scrapes), ("fresh", args.scrapes), ("spaced", args.spaced)):
            before, t1 = cpu_seconds(pid), time.monotonic()
            seen = in_ns(a.ns, "scrape", str(METRICS_PORT), str(count), mode, timeout=900)
            elapsed = time.monotonic() - t1
            server_us = ((cpu_seconds(pid) - before) - idle_rate * elapsed) / count * 1e6
            lat = seen["latency_us"]
            result[mode] = {"scrapes": count, "server_cpu_us": server_us, "median_us": statistics.median(lat),
                            "p99_us": pct(lat, 99), "bytes": seen["bytes"],
                            "gather_us": seen["gather_s"] * 1e6 if seen["gather_s"] is not None else None}
            print(f"  {mode:6} ×{count}: daemon CPU per scrape {server_us:.0f} µs (gathering, last scrape: "
                  f"{result[mode]['gather_us']:.0f} µs); client latency median {result[mode]['median_us']:.0f} µs, "
                  f"p99 {result[mode]['p99_us']:.0f} µs; body {seen['bytes']} bytes", flush=True)
        time.sleep(10)
        result["rss_kib"] = {"A": rss_kib(a.daemon.pid), "B": rss_kib(b.daemon.pid)}
        result["threads"] = threads_of(a.daemon.pid)
        result["smaps_kib"] = smaps_breakdown(a.daemon.pid, args.binary)
        print(f"  idle RSS 10 s after the scrapes: A {result['rss_kib']['A'] / 1024:.2f} MiB, "
              f"B {result['rss_kib']['B'] / 1024:.2f} MiB; A's threads: {result['threads']}")
        for kind, kib in sorted(result["smaps_kib"].items(), key=lambda kv: -kv[1]):
            if kib:
                print(f"    {kind}: {kib} KiB")
        return result
    finally:
        lab.close()


def inter_arrival(adverts, source):
    times = [t for t, s in adverts if s == source]
    return [(b - a) * 1000 for a, b in zip(times, times[1:])]


def describe(gaps, interval_ms):
    late = [g - interval_ms for g in gaps]
    return {"adverts": len(gaps) + 1, "median_ms": statistics.median(gaps), "max_ms": max(gaps),
            "min_ms": min(gaps), "p99_late_ms": pct(late, 99), "max_late_ms": max(late)}


def scenario_vrrp_under_load(args):
    print(f"\n## A's adverts (v3 at 100 ms) seen by C: {args.seconds:.0f} s idle, then {args.seconds:.0f} s "
          "with 1000 idle connections + a never-reading pipelining scraper + a scraper every 1 s", flush=True)
    lab, a, _b, client = lab_with(args, 100, 3)
    try:
        time.sleep(2)
        quiet = describe(inter_arrival(in_ns(client, "sniff", str(args.seconds), timeout=args.seconds + 60),
                                       A_ADDR), 100)
        sniffer = subprocess.Popen(["ip", "netns", "exec", client, sys.executable, HERE, "sniff",
                                    str(args.seconds + 1)], stdout=subprocess.PIPE, text=True)
        load = in_ns(a.ns, "load", str(METRICS_PORT), str(args.seconds), timeout=args.seconds + 120)
        out, _ = sniffer.communicate(timeout=120)
        loaded = describe(inter_arrival(json.loads(out), A_ADDR), 100)
        ok = [s for s in load["scrapes"] if s[2]]
        result = {"idle": quiet, "loaded": loaded, "established": load["established"],
                  "pipelined": load["pipelined"], "scrapes": len(load["scrapes"]), "scrapes_ok": len(ok),
                  "rss_kib_after": rss_kib(a.daemon.pid), "state_A": a.states().get("VI_1")}
        for name, d in (("idle", quiet), ("loaded", loaded)):
            print(f"  {name}: {d['adverts']} adverts, inter-arrival median {d['median_ms']:.2f} ms, "
                  f"min {d['min_ms']:.2f}, max {d['max_ms']:.2f} ms; lateness p99 {d['p99_late_ms']:.2f} ms, "
                  f"max {d['max_late_ms']:.2f} ms")
        print(f"  load: {load['established']} idle connections established, {load['pipelined']} requests "
              f"pipelined unread; the 1 s scraper got {len(ok)} of {len(load['scrapes'])} answers within 5 s; "
              f"A still {result['state_A']}; A's RSS after {result['rss_kib_after'] / 1024:.2f} MiB", flush=True)
        return result
    finally:
        lab.close()


SCENARIOS = {"scrape": scenario_scrape_and_rss, "vrrp": scenario_vrrp_under_load}


def main():
    if len(sys.argv) > 1 and sys.argv[1] in ("scrape", "load", "sniff"):
        return {"scrape": scrape_main, "load": load_main, "sniff": sniff_main}[sys.argv[1]](*sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binary", nargs="?", default="target/release/nginx-ha")
    parser.add_argument("--scrapes", type=int, default=2000)
    parser.add_argument("--spaced", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--json")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("metrics.py: needs root (network namespaces, raw sockets)")
    if not os.access(args.binary, os.X_OK):
        sys.exit(f"metrics.py: {args.binary} is not an executable; run `cargo build --release` first")
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="nginx-ha-metrics-bench-")
    os.chmod(args.workdir, 0o755)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"# nginx-ha metrics benchmarks, {datetime.datetime.now():%Y-%m-%d %H:%M}; binary {args.binary}; "
          f"nproc {os.cpu_count()}; load {os.getloadavg()[0]:.2f}; kernel {os.uname().release}")
    results = {name: SCENARIOS[name](args) for name in args.only.split(",")}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        for lab in list(OPEN_LABS):
            lab.close()

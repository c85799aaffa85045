#!/usr/bin/env python3
"""Loaded soak of fast VRRP adverts: false takeovers, not a test. Several two-node pairs run at
once for --minutes at v3 --interval-ms adverts while the machine is loaded: one CPU hog per core
(busy loops at nice 0, like `stress -c`) and wrk against every pair's VIP (nginx under load on the
master). Nothing fails on the wire here, so every advert the backup B sends is a false takeover:
each pair's client sniffs the bridge (kernel receive timestamps) and counts B's adverts, the
master A's priority-0 adverts, and the gaps between A's adverts (a gap longer than the backup's
master-down interval is what a false takeover needs on the sending side).

usage: bench/soak.sh [NGINX_HA_BINARY] [--minutes M] [--interval-ms MS]
                     [--pairs nginx-ha,keepalived,nginx-ha/keepalived,keepalived/nginx-ha]
                     [--hogs N] [--no-wrk] [--json FILE]
       (NGINX_HA_BINARY defaults to target/release/nginx-ha; run `cargo build --release` first)

A pair is "nginx-ha", "keepalived" or "X/Y" (A runs X, B runs Y); priorities 100/90, one router,
each pair on its own bridge. Needs root, iproute2, nginx, keepalived, wrk. Addresses from
198.18.0.0/15 only; every process started here is stopped by pid and every namespace deleted.
"""

import argparse
import datetime
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vrrp  # noqa: E402
from nhalab import DEFAULT_HEALTH, OPEN_LABS  # noqa: E402

SO_RXQ_OVFL = 40  # Linux: the socket's cumulative drop count with every packet
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python's socket module lacks it


def sniff_main(seconds, interval_ms, a_addr, b_addr, local):
    """Inside a client namespace: every VRRP advert on eth0 for `seconds`, timed by the kernel
    (SO_TIMESTAMPNS), so that this sniffer's own scheduling delays under load do not show as
    gaps. Prints one JSON summary."""
    # A raw socket of IP protocol 112 in the VRRP group sees the adverts and nothing else (a
    # packet socket would also get all of wrk's traffic and drop adverts under load).
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                    socket.inet_aton("224.0.0.18") + socket.inet_aton(local))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
    drops = 0
    sock.settimeout(0.2)
    interval = interval_ms / 1000
    master_down = 3 * interval + (256 - 90) * interval / 256
    last_a, gaps, a_count, a_zero, b_adverts = None, [], 0, 0, []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            packet, ancillary, _flags, _addr = sock.recvmsg(2048, 64)
        except OSError:
            continue
        stamp = None
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", data[:16])
                stamp = sec + nsec / 1e9
            elif level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL:
                drops = struct.unpack("I", data[:4])[0]
        stamp = stamp if stamp is not None else time.time()
        header = (packet[0] & 0x0F) * 4  # a raw IPv4 socket gets the IP header too
        if len(packet) < header + 4 or packet[9] != 112:
            continue
        source = ".".join(str(b) for b in packet[12:16])
        priority = packet[header + 2]
        if source == a_addr:
            a_count += 1
            a_zero += priority == 0
            if last_a is not None:
                gaps.append(stamp - last_a)
            last_a = stamp
        elif source == b_addr and priority > 0:
            b_adverts.append(stamp)
    gaps.sort()
    # Episodes of B's adverts: a new one after a second without any.
    episodes = sum(1 for i, t in enumerate(b_adverts) if i == 0 or t - b_adverts[i - 1] > 1.0)

    def quantile(q):
        return gaps[min(len(gaps) - 1, int(q * len(gaps)))] if gaps else None

    print(json.dumps({
        "a_adverts": a_count, "a_priority_zero": a_zero, "b_adverts": len(b_adverts), "takeovers": episodes,
        "gap_p50_s": quantile(0.5), "gap_p999_s": quantile(0.999), "gap_max_s": gaps[-1] if gaps else None,
        "gaps_over_2x": sum(1 for g in gaps if g > 2 * interval), "gaps_over_master_down": sum(
            1 for g in gaps if g > master_down), "master_down_s": master_down, "sniffer_drops": drops}))


def start_hogs(count):
    hog = "import os\nos.nice(0)\nwhile True:\n    pass\n"
    return [subprocess.Popen([sys.executable, "-c", hog]) for _ in range(count)]


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "sniff":
        return sniff_main(float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binary", nargs="?", default="target/release/nginx-ha")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval-ms", type=int, default=20)
    parser.add_argument("--pairs", default="nginx-ha,keepalived,nginx-ha/keepalived,keepalived/nginx-ha")
    parser.add_argument("--hogs", type=int, default=os.cpu_count())
    parser.add_argument("--no-wrk", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    args.binary = os.path.abspath(args.binary)
    if os.geteuid() != 0:
        sys.exit("soak.py: needs root (network namespaces, raw sockets)")
    if not os.access(args.binary, os.X_OK):
        sys.exit(f"soak.py: {args.binary} is not an executable; run `cargo build --release` first")
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="nginx-ha-soak-")
    os.chmod(args.workdir, 0o755)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    seconds = args.minutes * 60
    pairs = args.pairs.split(",")
    print(f"# nginx-ha loaded soak, {datetime.datetime.now():%Y-%m-%d %H:%M}: v3 {args.interval_ms} ms adverts, "
          f"{args.minutes:g} min, pairs {', '.join(pairs)}, {args.hogs} CPU hogs"
          f"{'' if args.no_wrk else ', wrk on every VIP'}; nproc {os.cpu_count()}, load before "
          f"{os.getloadavg()[0]:.2f}, kernel {os.uname().release}", flush=True)
    clusters, procs = [], []
    try:
        for pair in pairs:
            routers = [("VI_1", 51, 3, args.interval_ms, [f"{vrrp.VIP}/24"], ())]
            clusters.append((pair, *vrrp.cluster(args, pair, routers, DEFAULT_HEALTH, check=True)))
        procs += start_hogs(args.hogs)
        sniffers, wrks, before = [], [], []
        for pair, lab, a, b, client in clusters:
            sniffers.append(subprocess.Popen(
                ["ip", "netns", "exec", client, sys.executable, os.path.abspath(__file__), "sniff", str(seconds),
                 str(args.interval_ms), vrrp.A_ADDR, vrrp.B_ADDR, vrrp.C_ADDR], stdout=subprocess.PIPE, text=True))
            if not args.no_wrk:
                wrks.append(subprocess.Popen(
                    ["ip", "netns", "exec", client, "wrk", "-t1", "-c16", f"-d{int(seconds)}s",
                     f"http://{vrrp.VIP}/"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
            before.append((a.usage(), b.usage()))
        procs += sniffers + wrks
        loads = []
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            time.sleep(min(30.0, seconds - (time.monotonic() - started)))
            loads.append(os.getloadavg()[0])
        results = {}
        for (pair, lab, a, b, client), sniffer, (a_before, b_before) in zip(clusters, sniffers, before):
            out, _ = sniffer.communicate(timeout=60)
            seen = json.loads(out)
            seen["a_cpu_percent"] = 100 * (a.usage()[0] - a_before[0]) / seconds
            seen["b_cpu_percent"] = 100 * (b.usage()[0] - b_before[0]) / seconds
            results[pair] = seen
        for wrk, (pair, *_rest) in zip(wrks, clusters):
            out, _ = wrk.communicate(timeout=60)
            rate = next((line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec")), "?")
            results[pair]["wrk_requests_per_s"] = rate
        print(f"# load average during the soak (every 30 s): min {min(loads):.1f}, max {max(loads):.1f}")
        for pair, seen in results.items():
            gap = seen["gap_max_s"]
            print(f"  {pair}: false takeovers {seen['takeovers']} ({seen['b_adverts']} adverts from B), "
                  f"A priority-0 adverts {seen['a_priority_zero']}; A's adverts {seen['a_adverts']}, gap p50 "
                  f"{1000 * (seen['gap_p50_s'] or 0):.1f} ms, p99.9 {1000 * (seen['gap_p999_s'] or 0):.1f} ms, "
                  f"max {1000 * (gap or 0):.1f} ms (master-down {1000 * seen['master_down_s']:.0f} ms), "
                  f"gaps > 2 × interval {seen['gaps_over_2x']}, > master-down {seen['gaps_over_master_down']}; "
                  f"CPU A {seen['a_cpu_percent']:.2f} %, B {seen['b_cpu_percent']:.2f} % of a core; wrk "
                  f"{seen.get('wrk_requests_per_s', '-')} req/s; sniffer drops {seen['sniffer_drops']}", flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for _pair, lab, *_rest in clusters:
            lab.close()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        for lab in list(OPEN_LABS):
            lab.close()

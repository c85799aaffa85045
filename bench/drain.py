#!/usr/bin/env python3
"""Connection drain benchmark: do long connections to the VIP survive a planned move of it?
nginx-ha with its drain (the defaults), nginx-ha with `drain_ms = 0`, and keepalived 2.2 doing
the same moves, on two-node pairs in network namespaces. Prints figures; not a test.

usage: bench/drain.sh [NGINX_HA_BINARY] [--reps N] [--only drain,no-drain,keepalived]
       (NGINX_HA_BINARY defaults to target/release/nginx-ha; run `cargo build --release` first)

Same lab as bench/vrrp.py (whose pieces it uses): nodes A (priority 200) and B (100), each with
its own nginx, and a client C on one bridge, addresses from 198.18.0.0/15 only. VRRPv3 with
100 ms adverts for both daemons (keepalived 2.2 speaks v3); nginx-ha probes nginx every 500 ms
(timeout 400 ms, fall 2, rise 2) so that a loaded machine does not fail over by itself. Each
node's nginx serves /big (30 MB at limit_rate 1m: ~30 s) and proxies /echo with the Upgrade
headers to a small python echo backend in the node's namespace. Per repetition, one pair:
  failback  B holds the VIP alone (nginx-ha: A not started; keepalived: A's keepalived stopped);
            the client opens its long connections on B; 3 s later A's daemon is started and
            preempts the VIP.
  stop      then, with A holding the VIP, the client opens them on A; 3 s later SIGTERM to A's
            daemon (nginx-ha, or keepalived), the planned stop.
The client holds (a) a download of /big (complete = every byte), (b) an echo session of 200
rounds every 100 ms (~20 s), and (c) a new connection to the VIP every 10 ms (300 ms each).
A read that waits 5 s is a stall (counted apart from resets, ECONNRESET). The "new holder
serves" figure is from the move (failback: the new holder's first advert as master, heard by
the client; stop: the SIGTERM) to the first new connection answered by the new holder.
Every process started here is stopped by pid and every namespace deleted, also on failure.
"""

import argparse
import asyncio
import datetime
import errno
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vrrp  # noqa: E402
from nhalab import Lab, NginxHaNode, nha_router, poll_once, wait_until  # noqa: E402

A_ADDR, B_ADDR, C_ADDR, VIP = vrrp.A_ADDR, vrrp.B_ADDR, vrrp.C_ADDR, vrrp.VIP
BIG = 30_000_000
ECHO_ROUNDS, ECHO_EVERY = 200, 0.100
STALL = 5.0
LEAD = 3.0
CLIENT_SECONDS = 36.0
HEALTH = "interval_ms = 500\ntimeout_ms = 400\nfall = 2\nrise = 2"
CONFIGS = {
    "drain": ("nginx-ha, drain (defaults)", "nginx-ha", ""),
    "no-drain": ("nginx-ha, drain_ms = 0", "nginx-ha", "drain_ms = 0\n"),
    "keepalived": ("keepalived 2.2", "keepalived", None),
}

ECHO_BACKEND = r"""
import socket, threading
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", 9000))
server.listen(64)
def serve(conn):
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = conn.recv(4096)
        if not chunk:
            return
        request += chunk
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
    while True:
        data = conn.recv(4096)
        if not data:
            break
        conn.sendall(data)
    conn.close()
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


def nginx_conf(d, name):
    return (f"worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n"
            f"events {{ worker_connections 512; }}\nhttp {{\n  access_log off;\n"
            f"  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n"
            f"  server {{\n    listen 80;\n    root {d}/www;\n    location = / {{ return 200 \"{name}\\n\"; }}\n"
            f"    location /big {{ limit_rate 1m; }}\n"
            f"    location /echo {{ proxy_pass http://127.0.0.1:9000; proxy_http_version 1.1;\n"
            f"      proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\";\n"
            f"      proxy_read_timeout 60s; }}\n  }}\n}}\n")


# --------------------------------------------------------------------------------------------
# The client, run inside C as `drain.py client`: prints one JSON object.

def classify(error):
    if isinstance(error, (socket.timeout, TimeoutError)):
        return "stall"
    if isinstance(error, ConnectionResetError) or getattr(error, "errno", None) == errno.ECONNRESET:
        return "reset"
    return f"error: {error!r}"


def connect():
    sock = socket.create_connection((VIP, 80), timeout=2.0)
    sock.settimeout(STALL)
    return sock


def download(into):
    start, got, head = time.monotonic(), 0, b""
    try:
        sock = connect()
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")
        while True:
            data = sock.recv(1 << 16)
            if not data:
                break
            if head is not None:
                head += data
                if b"\r\n\r\n" in head:
                    got = len(head) - head.index(b"\r\n\r\n") - 4
                    head = None
            else:
                got += len(data)
        sock.close()
        into.update(outcome="complete" if got == BIG else "short", bytes=got)
    except OSError as e:
        into.update(outcome=classify(e), bytes=got)
    into["seconds"] = time.monotonic() - start


def echo(into):
    start, rounds = time.monotonic(), 0
    try:
        sock = connect()
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: vip\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
        reader = sock.makefile("rb")
        if not reader.readline().startswith(b"HTTP/1.1 101"):
            raise OSError("upgrade refused")
        while reader.readline() not in (b"\r\n", b""):
            pass
        for rounds in range(ECHO_ROUNDS):
            line = f"ping {rounds}\n".encode()
            sock.sendall(line)
            if reader.readline() != line:
                raise OSError(f"round {rounds}: wrong or no echo")
            time.sleep(ECHO_EVERY)
        rounds = ECHO_ROUNDS
        sock.close()
        into.update(outcome="complete", rounds=rounds)
    except OSError as e:
        into.update(outcome=classify(e), rounds=rounds)
    into["seconds"] = time.monotonic() - start


async def poll_loop(seconds):
    tasks, begin = [], time.monotonic()
    tick = begin
    while tick < begin + seconds:
        tasks.append(asyncio.ensure_future(poll_once(VIP, vrrp.POLL_TIMEOUT)))
        tick += vrrp.POLL_INTERVAL
        await asyncio.sleep(max(0.0, tick - time.monotonic()))
    return await asyncio.gather(*tasks)


def client_main(seconds):
    results = {"download": {}, "echo": {}, "adverts": []}
    threads = [threading.Thread(target=download, args=(results["download"],), daemon=True),
               threading.Thread(target=echo, args=(results["echo"],), daemon=True),
               threading.Thread(target=vrrp.sniff_adverts, args=(seconds, results["adverts"]), daemon=True)]
    results["start"] = time.monotonic()
    for thread in threads:
        thread.start()
    results["polls"] = asyncio.run(poll_loop(seconds))
    for thread in threads:
        thread.join(timeout=BIG / 1e6 + 30)
    print(json.dumps(results))


# --------------------------------------------------------------------------------------------
# The pair.

def make_node(lab, cls, name, address):
    node = cls(lab, name, f"{address}/24")
    with open(node.path("nginx.conf"), "w") as f:
        f.write(nginx_conf(node.dir, name))
    os.makedirs(node.path("www"))
    with open(node.path("www/big"), "wb") as f:
        f.truncate(BIG)
    lab.spawn(node.ns, [sys.executable, "-c", ECHO_BACKEND], node.path("echo.log"))
    return node


def nha_tables(priority, extra):
    return nha_router("VI_1", 51, priority, 3, 100, [f"{VIP}/24"]).rstrip("\n") + "\n" + extra + "\n"


def ka_spawn(node):
    node.keepalived = node.lab.spawn(node.ns, [
        vrrp.KEEPALIVED, "--vrrp", "--dont-fork", "--log-console", "--no-syslog", "--use-file",
        node.path("keepalived.conf"), "--pid", node.path("keepalived.pid"), "--vrrp_pid", node.path("vrrp.pid"),
        "--checkers_pid", node.path("checkers.pid")], node.path("keepalived.log"))


def pair(args, kind, extra):
    """A lab with B holding the VIP and A ready to be started: returns (lab, a, b, client, start_a)."""
    lab = Lab(args.workdir)
    try:
        cls = NginxHaNode if kind == "nginx-ha" else vrrp.KeepalivedNode
        a, b = make_node(lab, cls, "A", A_ADDR), make_node(lab, cls, "B", B_ADDR)
        client = lab.netns("C")
        lab.connect(client, f"{C_ADDR}/24")
        if kind == "nginx-ha":
            a.configure(args.binary, nha_tables(200, extra), HEALTH)
            b.start(args.binary, nha_tables(100, extra), HEALTH)
            b.wait_state("VI_1", "MASTER", 60)
            start_a = a.spawn_daemon
        else:
            # A's keepalived runs first and is stopped again: B holds the VIP, A's nginx runs on.
            a.start([vrrp.ka_instance("VI_1", 51, 200, 3, 100, [f"{VIP}/24"])])
            a.wait_state("VI_1", "MASTER", 60)
            b.start([vrrp.ka_instance("VI_1", 51, 100, 3, 100, [f"{VIP}/24"])])
            b.wait_state("VI_1", "BACKUP", 60)
            a.keepalived.send_signal(signal.SIGTERM)
            a.keepalived.wait(timeout=30)
            b.wait_state("VI_1", "MASTER", 60)
            start_a = lambda: ka_spawn(a)  # noqa: E731
        wait_until("B answering on the VIP", lambda: vrrp.all_from(vrrp.poll(client, VIP, 0.05), "B"), 30, 0.2)
        return lab, a, b, client, start_a
    except BaseException:
        lab.close()
        raise


def run_client(client, event):
    """Runs the client; `event()` LEAD s after it started. Returns (client results, event time)."""
    proc = subprocess.Popen(["ip", "netns", "exec", client, sys.executable, os.path.abspath(__file__), "client",
                             str(CLIENT_SECONDS)], stdout=subprocess.PIPE, text=True)
    time.sleep(LEAD)
    at = time.monotonic()
    event()
    out, _ = proc.communicate(timeout=CLIENT_SECONDS + BIG / 1e6 + 60)
    return json.loads(out), at


def summarize(seen, at, move_at, new_holder):
    polls = sorted(seen["polls"])
    served = next((start for start, _e, body in polls if start >= move_at and body == new_holder), None)
    failed = sum(1 for start, _e, body in polls if body is None and start >= at - vrrp.POLL_TIMEOUT)
    resets = sum(1 for c in ("download", "echo") if seen[c].get("outcome") == "reset")
    stalls = sum(1 for c in ("download", "echo") if seen[c].get("outcome") == "stall")
    return {"download": seen["download"], "echo": seen["echo"], "resets": resets, "stalls": stalls,
            "failed_polls": failed, "new_holder_after_s": None if served is None else served - move_at,
            "move_after_download_start_s": move_at - seen["start"]}


def one_rep(args, kind, extra):
    lab, a, b, client, start_a = pair(args, kind, extra)
    rows = {}
    try:
        # Failback: A started, preempts B.
        seen, at = run_client(client, start_a)
        move_at = min((t for t, src, _v, prio in seen["adverts"] if src == A_ADDR and prio > 0 and t >= at),
                      default=at)
        rows["failback"] = summarize(seen, at, move_at, "A")
        a.wait_state("VI_1", "MASTER", 30)
        time.sleep(1.0)
        # Planned stop of A.
        daemon = a.daemon if kind == "nginx-ha" else a.keepalived
        stopped = {}

        def stop():
            stopped["at"] = time.monotonic()
            daemon.send_signal(signal.SIGTERM)

            def reap():
                daemon.wait()
                stopped["took"] = time.monotonic() - stopped["at"]
            threading.Thread(target=reap, daemon=True).start()
        seen, at = run_client(client, stop)
        rows["stop"] = summarize(seen, at, at, "B")
        wait_until("A's daemon to stop", lambda: "took" in stopped, 90, 0.1)
        rows["stop"]["stop_took_s"] = stopped["took"]
    finally:
        lab.close()
    return rows


def describe(move, row):
    d, e = row["download"], row["echo"]
    after = row["new_holder_after_s"]
    served = "—" if after is None else f"{1000 * after:.0f} ms"
    text = (f"download {d.get('outcome')} ({d.get('bytes', 0) / 1e6:.1f} MB, {d.get('seconds', 0):.1f} s), "
            f"echo {e.get('outcome')} ({e.get('rounds', 0)}/{ECHO_ROUNDS} rounds), move at "
            f"{row['move_after_download_start_s']:.1f} s, new holder serves after {served}, "
            f"{row['failed_polls']} failed polls")
    if "stop_took_s" in row:
        text += f", stop took {row['stop_took_s']:.1f} s"
    return text


def fmt_ms(values):
    values = sorted(1000 * v for v in values if v is not None)
    if not values:
        return "—"
    return f"{values[0]:.0f} / {statistics.median(values):.0f} / {values[-1]:.0f} ms"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binary", nargs="?", default="target/release/nginx-ha")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", default=",".join(CONFIGS))
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    args.binary = os.path.abspath(args.binary)
    if os.geteuid() != 0:
        sys.exit("drain.py: needs root (network namespaces, raw sockets)")
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="nginx-ha-drain-bench-")
    os.chmod(args.workdir, 0o755)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"# nginx-ha connection drain benchmark, {datetime.datetime.now():%Y-%m-%d %H:%M}, {args.reps} reps, "
          f"binary {args.binary}, kernel {os.uname().release}, load {os.getloadavg()[0]:.2f}", flush=True)
    results = {}
    for name in args.only.split(","):
        if name not in CONFIGS:
            sys.exit(f"drain.py: unknown configuration {name!r}; known: {', '.join(CONFIGS)}")
        title, kind, extra = CONFIGS[name]
        print(f"\n## {title}", flush=True)
        reps = []
        for rep in range(args.reps):
            rows = one_rep(args, kind, extra)
            reps.append(rows)
            for move, row in rows.items():
                print(f"  rep {rep + 1} {move}: {describe(move, row)}", flush=True)
        results[name] = reps
        for move in ("failback", "stop"):
            rows = [r[move] for r in reps]
            line = (f"  {move}: downloads complete {sum(r['download'].get('outcome') == 'complete' for r in rows)}"
                    f"/{len(rows)}, echo sessions complete {sum(r['echo'].get('outcome') == 'complete' for r in rows)}"
                    f"/{len(rows)}, resets {sum(r['resets'] for r in rows)}, stalls {sum(r['stalls'] for r in rows)}, "
                    f"failed polls {sum(r['failed_polls'] for r in rows)}, new holder serves after "
                    f"{fmt_ms([r['new_holder_after_s'] for r in rows])}")
            if move == "stop":
                line += f", stop took {fmt_ms([r['stop_took_s'] for r in rows])}"
            print(line, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    if sys.argv[1:2] == ["client"]:
        client_main(float(sys.argv[2]))
        sys.exit(0)
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        for lab in list(vrrp.OPEN_LABS):
            lab.close()

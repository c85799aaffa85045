#!/usr/bin/env python3
"""Connection drain benchmark: do long connections to the VIP survive a planned move of it?
nginx-ha with its drain (the defaults), nginx-ha with `drain_ms = 0`, and keepalived 2.2 doing
the same moves, on two-node pairs in network namespaces. Prints figures; not a test.

usage: bench/drain.sh [NGINX_HA_BINARY] [--reps N] [--only drain,no-drain,keepalived] [--json FILE]
       [--logs DIR]
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
the client; stop: the SIGTERM) to the first new connection answered by the new holder. Where
new connections land: of those opened in the 5 s after the new holder's first advert (heard by
the client), how many the new holder answered, how many the old holder did (the last when),
how many failed (each with what failed and its client port), and from when on every one was
the new holder's. When the client is done, the TCP connections still open on the old holder's
port 80 (`ss`) and how its drain ended (its log) are printed too: a drain or a stop that runs
its whole window shows what kept it. On the wire (the client hears every advert and ARP): when,
after the new master's first advert, the old holder confirms it let the VIPs go (its next
advert) and when the new holder first sends ARP for the VIP (it added them): an ARP before the
confirmation is a claim on the new master's 50 ms claim wait.
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
from nhalab import Lab, NginxHaNode, nha_router, wait_until  # noqa: E402

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


async def poll_detail(vip, timeout):
    """nhalab.poll_once, and for a failed poll what failed and the client port it used:
    [start, end, body-or-null, error-or-null, port-or-null]."""
    start, body, error, port = time.monotonic(), None, None, None
    writer = None
    try:
        async def get():
            nonlocal writer, port
            reader, writer = await asyncio.open_connection(vip, 80)
            port = writer.get_extra_info("sockname")[1]
            writer.write(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
            return await reader.read()
        data = await asyncio.wait_for(get(), timeout)
        head, _, rest = data.partition(b"\r\n\r\n")
        if b" 200 " in head.split(b"\r\n", 1)[0]:
            body = rest.decode(errors="replace").strip()
        else:
            error = "no 200" if data else "closed without an answer"
    except asyncio.TimeoutError:
        error = "timeout" if port is None else "timeout after connect"
    except ConnectionResetError:
        error = "reset"
    except OSError as e:
        error = errno.errorcode.get(e.errno, repr(e))
    finally:
        if writer is not None:
            writer.close()
    return [start, time.monotonic(), body, error, port]


async def poll_loop(seconds):
    tasks, begin = [], time.monotonic()
    tick = begin
    while tick < begin + seconds:
        tasks.append(asyncio.ensure_future(poll_detail(VIP, vrrp.POLL_TIMEOUT)))
        tick += vrrp.POLL_INTERVAL
        await asyncio.sleep(max(0.0, tick - time.monotonic()))
    return await asyncio.gather(*tasks)


def sniff_arp(seconds, into):
    """Appends [time, sender MAC, sender address] for every ARP packet whose sender address is
    the VIP (a holder's gratuitous ARP, or its answer) seen by this namespace's eth0."""
    vip = socket.inet_aton(VIP)

    def keep(packet, when):
        if len(packet) >= 28 and packet[14:18] == vip:
            into.append([when, packet[8:14].hex(":"), VIP])
    vrrp.sniff(0x0806, seconds, keep)


def client_main(seconds):
    results = {"download": {}, "echo": {}, "adverts": [], "arp": []}
    threads = [threading.Thread(target=download, args=(results["download"],), daemon=True),
               threading.Thread(target=echo, args=(results["echo"],), daemon=True),
               threading.Thread(target=vrrp.sniff_adverts, args=(seconds, results["adverts"]), daemon=True),
               threading.Thread(target=sniff_arp, args=(seconds, results["arp"]), daemon=True)]
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


def connections_on(ns):
    """The TCP connections on port 80 in `ns` that are not listening and not in TIME-WAIT, as
    `ss` shows them."""
    out = subprocess.run(["ip", "netns", "exec", ns, "ss", "-tanoH", "state", "connected", "exclude", "time-wait",
                          "( sport = :80 )"], capture_output=True, text=True).stdout
    return [" ".join(line.split()) for line in out.splitlines() if line.strip()]


def drain_log(node, since):
    """The old holder's "drain over" lines after byte offset `since` of its nginx-ha log."""
    try:
        with open(node.path("nginx-ha.log"), "rb") as f:
            f.seek(since)
            lines = f.read().decode(errors="replace").splitlines()
        return [line.split("  ", 1)[-1].strip() for line in lines if "drain over" in line]
    except OSError:
        return []


def log_size(node):
    try:
        return os.path.getsize(node.path("nginx-ha.log"))
    except OSError:
        return 0


def run_client(client, event):
    """Runs the client; `event()` LEAD s after it started. Returns (client results, event time)."""
    proc = subprocess.Popen(["ip", "netns", "exec", client, sys.executable, os.path.abspath(__file__), "client",
                             str(CLIENT_SECONDS)], stdout=subprocess.PIPE, text=True)
    time.sleep(LEAD)
    at = time.monotonic()
    event()
    out, _ = proc.communicate(timeout=CLIENT_SECONDS + BIG / 1e6 + 60)
    return json.loads(out), at


def first_advert(seen, source, after):
    """When the client first heard `source` advertise as master (priority > 0) at or after `after`."""
    return min((t for t, src, _v, prio in seen["adverts"] if src == source and prio > 0 and t >= after), default=None)


LANDING = 5.0


def landing(polls, move_at, new_holder, old_holder):
    """Where the new connections opened in the LANDING s from `move_at` on went: the first
    answered by the new holder, how many the old holder answered and the last of them, how many
    failed, and from when on every one was the new holder's (`settled`: the start of the poll
    after the last one that was not)."""
    after = [(start, body) for start, _e, body, *_ in polls if move_at <= start < move_at + LANDING]
    new = [start for start, body in after if body == new_holder]
    old = [start for start, body in after if body == old_holder]
    failed = [start for start, body in after if body is None]
    others = [start for start, body in after if body not in (new_holder, old_holder, None)]
    last_bad = max(old + failed + others, default=None)
    later = [start for start, _b in after if last_bad is None or start > last_bad]
    settled = min(later, default=None)
    rel = lambda t: None if t is None else t - move_at  # noqa: E731
    return {"polls": len(after), "to_new_holder": len(new), "to_old_holder": len(old), "failed": len(failed),
            "first_new_s": rel(min(new, default=None)), "last_old_s": rel(max(old, default=None)),
            "last_failed_s": rel(max(failed, default=None)), "settled_s": rel(settled)}


def mac_of(ns):
    out = subprocess.run(["ip", "-n", ns, "-j", "link", "show", "eth0"], capture_output=True, text=True).stdout
    try:
        return json.loads(out)[0]["address"]
    except (ValueError, IndexError, KeyError):
        return None


def hand_over(seen, new_master_at, new_addr, old_addr, new_mac):
    """The move as the client saw it on the wire, from the new master's first advert: the old
    holder's next advert (its confirmation that it let the VIPs go: a lower priority at a
    failback, priority 0 at a stop; adverts within 5 ms of the new master's may have crossed it)
    and the new holder's first ARP for the VIP (it added the VIPs: its gratuitous ARP). An ARP
    before the confirmation: it claimed the VIPs on its claim wait, not on the confirmation."""
    if new_master_at is None:
        return None
    confirm = min((t for t, src, _v, _p in seen["adverts"] if src == old_addr and t > new_master_at + 0.005),
                  default=None)
    garp = min((t for t, mac, _a in seen.get("arp", []) if mac == new_mac and t >= new_master_at), default=None)
    rel = lambda t: None if t is None else t - new_master_at  # noqa: E731
    return {"old_confirms_s": rel(confirm), "new_arp_s": rel(garp)}


def summarize(seen, at, move_at, new_holder, old_holder, new_master_at):
    polls = sorted(seen["polls"])
    served = next((start for start, _e, body, *_ in polls if start >= move_at and body == new_holder), None)
    failed = [[start - move_at, error, port] for start, _e, body, error, port in polls
              if body is None and start >= at - vrrp.POLL_TIMEOUT]
    resets = sum(1 for c in ("download", "echo") if seen[c].get("outcome") == "reset")
    stalls = sum(1 for c in ("download", "echo") if seen[c].get("outcome") == "stall")
    # From the new holder's first advert as master (the moment the VIP moves on the wire): where
    # did the new connections go, and how soon were they all the new holder's?
    land = landing(polls, new_master_at, new_holder, old_holder) if new_master_at is not None else None
    return {"download": seen["download"], "echo": seen["echo"], "resets": resets, "stalls": stalls,
            "failed_polls": len(failed), "failed_detail": failed,
            "new_holder_after_s": None if served is None else served - move_at,
            "move_after_download_start_s": move_at - seen["start"],
            "new_master_after_event_s": None if new_master_at is None else new_master_at - at,
            "landing": land}


def keep_logs(args, lab, label):
    """Copies the lab's logs to `--logs DIR/label/` before the lab's directory goes."""
    if not args.logs:
        return
    for node in lab.nodes:
        into = os.path.join(args.logs, label, node.name)
        os.makedirs(into, exist_ok=True)
        for name in os.listdir(node.dir):
            if name.endswith(".log"):
                subprocess.run(["cp", os.path.join(node.dir, name), into], check=False)


def one_rep(args, kind, extra, label):
    lab, a, b, client, start_a = pair(args, kind, extra)
    rows = {}
    try:
        # Failback: A started, preempts B.
        b_log = log_size(b)
        seen, at = run_client(client, start_a)
        b_left = connections_on(b.ns)
        new_master_at = first_advert(seen, A_ADDR, at)
        move_at = at if new_master_at is None else new_master_at
        rows["failback"] = summarize(seen, at, move_at, "A", "B", new_master_at)
        rows["failback"]["hand_over"] = hand_over(seen, new_master_at, A_ADDR, B_ADDR, mac_of(a.ns))
        # What the old holder still had when the client was done (it opened nothing after 36 s),
        # and how its drain ended.
        rows["failback"]["old_holder_left"] = b_left
        rows["failback"]["drain_ended"] = drain_log(b, b_log) if kind == "nginx-ha" else []
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
        a_log = log_size(a)
        seen, at = run_client(client, stop)
        a_left = connections_on(a.ns)
        new_master_at = first_advert(seen, B_ADDR, at)
        rows["stop"] = summarize(seen, at, at, "B", "A", new_master_at)
        rows["stop"]["hand_over"] = hand_over(seen, new_master_at, B_ADDR, A_ADDR, mac_of(b.ns))
        rows["stop"]["old_holder_left"] = a_left
        wait_until("A's daemon to stop", lambda: "took" in stopped, 90, 0.1)
        rows["stop"]["stop_took_s"] = stopped["took"]
        rows["stop"]["drain_ended"] = drain_log(a, a_log) if kind == "nginx-ha" else []
    finally:
        keep_logs(args, lab, label)
        lab.close()
    return rows


def ms(value):
    return "—" if value is None else f"{1000 * value:.0f} ms"


def describe(move, row):
    d, e = row["download"], row["echo"]
    text = (f"download {d.get('outcome')} ({d.get('bytes', 0) / 1e6:.1f} MB, {d.get('seconds', 0):.1f} s), "
            f"echo {e.get('outcome')} ({e.get('rounds', 0)}/{ECHO_ROUNDS} rounds), move at "
            f"{row['move_after_download_start_s']:.1f} s, new holder serves after {ms(row['new_holder_after_s'])}, "
            f"{row['failed_polls']} failed polls")
    land = row.get("landing")
    if land is None:
        text += "; no advert of the new holder heard"
    else:
        text += (f"; from its first advert ({ms(row['new_master_after_event_s'])} after the event): "
                 f"{land['polls']} new connections, {land['to_new_holder']} to the new holder (first at "
                 f"{ms(land['first_new_s'])}), {land['to_old_holder']} to the old (last at {ms(land['last_old_s'])}), "
                 f"{land['failed']} failed (last at {ms(land['last_failed_s'])}), all to the new holder from "
                 f"{ms(land['settled_s'])}")
    if "stop_took_s" in row:
        text += f", stop took {row['stop_took_s']:.1f} s"
    if row.get("hand_over"):
        h = row["hand_over"]
        text += (f"\n      on the wire, from the new master's first advert: the old holder confirms at "
                 f"{ms(h['old_confirms_s'])}, the new holder's first ARP for the VIP at {ms(h['new_arp_s'])}")
    for start, error, port in row.get("failed_detail", []):
        text += f"\n      failed poll at {ms(start)} after the move: {error} (client port {port})"
    for line in row.get("old_holder_left", []):
        text += f"\n      left on the old holder after the client: {line}"
    for line in row.get("drain_ended", []):
        text += f"\n      old holder: {line}"
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
    parser.add_argument("--logs", default=None, help="copy each pair's logs (nginx-ha, keepalived, nginx) here")
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
            rows = one_rep(args, kind, extra, f"{name}-{rep + 1}")
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
            lands = [r["landing"] for r in rows if r.get("landing")]
            line += (f"; from the new holder's first advert: new connections to the old holder "
                     f"{sum(x['to_old_holder'] for x in lands)}, failed {sum(x['failed'] for x in lands)}, "
                     f"first to the new holder {fmt_ms([x['first_new_s'] for x in lands])}, all to the new holder from "
                     f"{fmt_ms([x['settled_s'] for x in lands])}")
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

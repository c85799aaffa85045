#!/usr/bin/env python3
"""VRRP failover benchmarks: nginx-ha side by side with keepalived + a check script, in the same
run, on two-node clusters in network namespaces. Prints figures (min/median/max); not a test.

usage: bench/vrrp.sh [NGINX_HA_BINARY] [--reps N]
                     [--only kill-v2,kill-v3,hang,link,idle,vips,routers,hitless,nodeloss,cpu,stall]
                     [--idle-seconds S] [--hitless-reps N] [--intervals MS,MS,...] [--stall-ms MS] [--json FILE]
       (NGINX_HA_BINARY defaults to target/release/nginx-ha; run `cargo build --release` first)

Needs root, iproute2, nginx (/usr/sbin/nginx) and keepalived. Every cluster is built fresh for
each repetition: a bridge in its own namespace, nodes A and B (each with its own nginx, under
nginx-ha or beside keepalived) and a client C, addresses from 198.18.0.0/15 only. The client polls
the VIP over HTTP: a new connection every 10 ms, each given 300 ms; the outage is the longest run
of failed polls (from the start of its first failed poll to the start of the next answered one).
Every process started here is stopped by pid and every namespace deleted, also on failure/Ctrl-C.
"""

import argparse
import asyncio
import datetime
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nhalab import (DEFAULT_HEALTH, FAST_HEALTH, NGINX, OPEN_LABS, Lab, NginxHaNode, Node,  # noqa: E402
                    cpu_seconds, nha_router, poll_once, read, rss_kib, program_of, sh, wait_until)

KEEPALIVED = next((p for p in ("/usr/sbin/keepalived", "/usr/bin/keepalived") if os.path.exists(p)), "keepalived")
HERE = os.path.dirname(os.path.abspath(__file__))

A_ADDR, B_ADDR, C_ADDR = "198.18.0.1", "198.18.0.2", "198.18.0.10"
VIP = "198.18.0.100"
POLL_INTERVAL, POLL_TIMEOUT = 0.010, 0.300


# --------------------------------------------------------------------------------------------
# The poller, run inside the client namespace as `vrrp.py poll VIP SECONDS`: prints one JSON list
# of [start, end, body-or-null] with CLOCK_MONOTONIC times (the same clock in every namespace).

async def poll_loop(vip, seconds):
    tasks = []
    begin = time.monotonic()
    tick = begin
    while tick < begin + seconds:
        tasks.append(asyncio.ensure_future(poll_once(vip, POLL_TIMEOUT)))
        tick += POLL_INTERVAL
        await asyncio.sleep(max(0.0, tick - time.monotonic()))
    return await asyncio.gather(*tasks)


def sniff(ethertype, seconds, keep):
    """Reads every packet of `ethertype` this namespace's interfaces see for `seconds` (from the
    network layer on) and calls `keep(packet, when)` on each."""
    import socket
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ethertype))
    sock.settimeout(0.05)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            packet = sock.recv(2048)
        except OSError:
            continue
        keep(packet, time.monotonic())


def sniff_adverts(seconds, into):
    """Appends [time, source, vrid, priority] for every VRRP packet (IPv4) seen by this
    namespace's eth0 for `seconds`: the client hears the multicast adverts on the bridge."""
    def keep(packet, when):
        header = (packet[0] & 0x0F) * 4
        if len(packet) >= header + 4 and packet[9] == 112:
            source = ".".join(str(b) for b in packet[12:16])
            into.append([when, source, packet[header + 1], packet[header + 2]])
    sniff(0x0800, seconds, keep)


def poller_main(vip, seconds):
    adverts = []
    sniffer = threading.Thread(target=sniff_adverts, args=(float(seconds), adverts), daemon=True)
    sniffer.start()
    polls = asyncio.run(poll_loop(vip, float(seconds)))
    sniffer.join()
    print(json.dumps({"polls": polls, "adverts": adverts}))


def outages(polls, after):
    """Runs of failed polls that end (or are still going) after `after`: [(first failed start,
    next answered start or None, answered by)]."""
    runs, first_failed = [], None
    for start, _end, body in sorted(polls):
        if body is None:
            first_failed = start if first_failed is None else first_failed
        elif first_failed is not None:
            if start > after:
                runs.append((first_failed, start, body))
            first_failed = None
    if first_failed is not None:
        runs.append((first_failed, None, None))
    return runs


# --------------------------------------------------------------------------------------------
# keepalived nodes and configurations (Lab, Node, NginxHaNode and nha_router are in nhalab.py).

class KeepalivedNode(Node):
    """keepalived (VRRP only) beside this node's own nginx, with the usual check script: a
    vrrp_script every 1 s (fall 1, rise 1, weight 0: failure means FAULT) that runs `kill -0`
    on the pid in nginx's pid file (not `killall -0 nginx`, which would see the other nodes'
    nginx in this shared pid namespace)."""

    def start(self, instances, check=True):
        d = self.dir
        self.nginx = self.lab.spawn(self.ns, [NGINX, "-c", self.path("nginx.conf"), "-g",
                                              "daemon off; master_process on;"], self.path("nginx.log"))
        # Reap nginx the moment it dies, as systemd would: an unreaped master is a zombie, and
        # `kill -0` on a zombie succeeds, so the check script would never fail.
        threading.Thread(target=self.nginx.wait, daemon=True).start()
        wait_until(f"{self.name} nginx", lambda: bool(self.nginx_pids()[1:]))
        with open(self.path("notify.sh"), "w") as f:
            f.write(f"#!/bin/sh\necho \"$3\" > {d}/state.$$ && mv {d}/state.$$ {d}/state-\"$2\"\n")
        with open(self.path("check_nginx.sh"), "w") as f:
            f.write(f"#!/bin/sh\nexec kill -0 \"$(cat {d}/nginx.pid)\"\n")
        for script in ("notify.sh", "check_nginx.sh"):
            os.chmod(self.path(script), 0o755)
        script = (f"vrrp_script chk_nginx {{\n    script \"{d}/check_nginx.sh\"\n    interval 1\n    fall 1\n"
                  f"    rise 1\n    weight 0\n}}\n\n") if check else ""
        track = "    track_script {\n        chk_nginx\n    }\n" if check else ""
        body = "".join(instance.replace("@TRACK@", track).replace("@NOTIFY@", f"{d}/notify.sh")
                       for instance in instances)
        with open(self.path("keepalived.conf"), "w") as f:
            f.write(f"global_defs {{\n    router_id {self.name}\n    enable_script_security\n    script_user root\n"
                    f"    vrrp_garp_master_delay 1\n}}\n\n{script}{body}")
        self.keepalived = self.lab.spawn(self.ns, [
            KEEPALIVED, "--vrrp", "--dont-fork", "--log-console", "--no-syslog", "--use-file",
            self.path("keepalived.conf"), "--pid", self.path("keepalived.pid"), "--vrrp_pid",
            self.path("vrrp.pid"), "--checkers_pid", self.path("checkers.pid")], self.path("keepalived.log"))

    def wait_state(self, router, state, timeout=30.0):
        wait_until(f"{self.name} {router} {state}",
                   lambda: (read(self.path(f"state-{router}")) or "").strip() == state, timeout)

    def vrrp_pid(self):
        text = read(self.path("vrrp.pid"))
        pid = int(text) if text and text.strip().isdigit() else None
        return pid if pid and (program_of(pid) or "").endswith("keepalived") else None

    def usage(self):
        """Both keepalived processes; the VRRP child reaps the check scripts, so their CPU is
        in its cutime/cstime."""
        cpu = cpu_seconds(self.keepalived.pid, children=True)
        rss = rss_kib(self.keepalived.pid)
        if self.vrrp_pid():
            cpu += cpu_seconds(self.vrrp_pid(), children=True)
            rss += rss_kib(self.vrrp_pid())
        return cpu, rss

    def vrrp_pids(self):
        return [self.keepalived.pid] + ([self.vrrp_pid()] if self.vrrp_pid() else [])

    def stop_leftovers(self):
        super().stop_leftovers()
        vrrp = self.vrrp_pid()
        if vrrp and getattr(self, "keepalived", None) and self.keepalived.poll() is not None:
            os.kill(vrrp, signal.SIGKILL)


def ka_instance(name, vrid, priority, version, interval_ms, vips, excluded=()):
    vip_lines = "".join(f"        {vip}\n" for vip in vips)
    excluded_block = ("    virtual_ipaddress_excluded {\n" + "".join(f"        {v}\n" for v in excluded) + "    }\n"
                      if excluded else "")
    return (f"vrrp_instance {name} {{\n    state BACKUP\n    interface eth0\n    virtual_router_id {vrid}\n"
            f"    priority {priority}\n    version {version}\n    advert_int {interval_ms / 1000:g}\n"
            f"    virtual_ipaddress {{\n{vip_lines}    }}\n{excluded_block}    notify @NOTIFY@\n@TRACK@}}\n\n")


def cluster(args, kind, routers, health=FAST_HEALTH, check=True, client_routes=(), a_priority=100):
    """A fresh lab with A (priorities 100, or `a_priority`) and B (90) of `kind` ("nginx-ha", "keepalived", or
    "nginx-ha/keepalived" for A of one and B of the other) running `routers` — a list of
    (name, vrid, version, interval_ms, vips, excluded) — and client C. Returns once A is MASTER
    and B BACKUP of every router and C gets answers from A on the first VIP."""
    lab = Lab(args.workdir)
    try:
        nodes = {}
        # "nginx-ha/keepalived": A runs nginx-ha, B keepalived (a mixed pair).
        node_kinds = kind.split("/") if "/" in kind else (kind, kind)
        for (name, address, priority), node_kind in zip((("A", A_ADDR, a_priority), ("B", B_ADDR, 90)), node_kinds):
            node = (NginxHaNode if node_kind == "nginx-ha" else KeepalivedNode)(lab, name, f"{address}/24")
            if node_kind == "nginx-ha":
                node.start(args.binary, "".join(nha_router(r[0], r[1], priority, *r[2:]) for r in routers), health)
            else:
                node.start([ka_instance(r[0], r[1], priority, *r[2:]) for r in routers], check)
            nodes[name] = node
        client = lab.netns("C")
        lab.connect(client, f"{C_ADDR}/24")
        for route in client_routes:
            sh("ip", "-n", client, "route", "add", route, "dev", "eth0")
        for router in routers:
            nodes["A"].wait_state(router[0], "MASTER", 60)
            nodes["B"].wait_state(router[0], "BACKUP", 60)
        first_vip = routers[0][4][0].split("/")[0]
        wait_until("A answering on the VIP", lambda: all_from(poll(client, first_vip, 0.05), "A"), 30, 0.2)
        return lab, nodes["A"], nodes["B"], client
    except BaseException:
        lab.close()
        raise


def poll(client, vip, seconds):
    """Polls synchronously for `seconds`; the bodies (None for a failed poll)."""
    out = sh("ip", "netns", "exec", client, sys.executable, os.path.abspath(__file__), "poll", vip, str(seconds))
    return [body for _s, _e, body in json.loads(out)["polls"]]


def all_from(bodies, name):
    return bool(bodies) and all(body == name for body in bodies)


def start_poller(client, vip, seconds):
    return subprocess.Popen(["ip", "netns", "exec", client, sys.executable, os.path.abspath(__file__), "poll", vip,
                             str(seconds)], stdout=subprocess.PIPE, text=True)


def measure_outage(client, vips, event, seconds, lead=1.0):
    """Starts pollers on `vips`, runs `event()` after `lead` s. Returns the event time and per
    VIP: the outage runs after the event (see `outages`), the number of failed polls, and the
    adverts the client saw ([time, source, vrid, priority])."""
    # A random phase against the 1 s cycles (adverts, keepalived's check script): a fixed one
    # would show the same point of the cycle in every repetition.
    lead += random.uniform(0.0, 1.0)
    pollers = [start_poller(client, vip, lead + seconds) for vip in vips]
    time.sleep(lead)
    at = time.monotonic()
    event()
    results = []
    for poller in pollers:
        out, _ = poller.communicate(timeout=lead + seconds + 30)
        seen = json.loads(out)
        polls = seen["polls"]
        failed = sum(1 for p in polls if p[2] is None and p[0] >= at - POLL_TIMEOUT)
        last_body = next((p[2] for p in sorted(polls, reverse=True) if p[2] is not None), None)
        results.append((outages(polls, at), failed, seen["adverts"], last_body))
    return at, results


# --------------------------------------------------------------------------------------------
# Scenarios. Each prints its figures and returns them for --json.

def fmt(values, unit="ms", scale=1000.0):
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    v = sorted(x * scale for x in values)
    return f"{v[0]:.0f} / {statistics.median(v):.0f} / {v[-1]:.0f} {unit}"


def failover(args, title, kinds, routers, event_name, seconds, expect=None, health=FAST_HEALTH):
    """Repeats: fresh cluster, poll the VIP, apply the event to A, record the first outage (the
    failover) and, for nginx-ha, the failback glitch once A is healthy again and preempts."""
    print(f"\n## {title}")
    rows = {}
    for kind in kinds:
        fail, back, failed_polls, never, after_last_advert, since_event = [], [], [], 0, [], []
        for rep in range(args.reps):
            lab, a, b, client = cluster(args, kind, routers, health)
            try:
                events = {"kill": lambda: a.signal_nginx(signal.SIGKILL),
                          "stop": lambda: a.signal_nginx(signal.SIGSTOP),
                          "link": a.cut_link, "power": a.power_cut}
                at, [(runs, failed, adverts, last_body)] = measure_outage(client, [VIP], events[event_name], seconds)
                failed_polls.append(failed)
                if not runs:
                    print(f"  {kind} rep {rep + 1}: no outage seen (?)")
                    fail.append(0.0)
                    continue
                first = runs[0]
                if first[1] is None:
                    never += 1
                    print(f"  {kind} rep {rep + 1}: VIP not answered again within {seconds:.0f} s of the event")
                    continue
                fail.append(first[1] - first[0])
                since_event.append(first[1] - at)
                last_from_a = max((t for t, source, _vrid, _prio in adverts if source == A_ADDR and t <= at), default=None)
                if last_from_a is not None:
                    after_last_advert.append(first[1] - last_from_a)
                line = (f"  {kind} rep {rep + 1}: outage {1000 * (first[1] - first[0]):.0f} ms "
                        f"(first failed poll {1000 * (first[0] - at):+.0f} ms after the event, then answered by "
                        f"{first[2]} {1000 * (first[1] - at):.0f} ms after it), {failed} failed polls")
                if len(runs) > 1 and runs[1][1] is not None:
                    back.append(runs[1][1] - runs[1][0])
                    line += f"; failback to {runs[1][2]}: {1000 * (runs[1][1] - runs[1][0]):.0f} ms"
                line += f"; answered by {last_body} at the end"
                print(line, flush=True)
            finally:
                lab.close()
        rows[kind] = {"outage_s": fail, "failback_s": back, "failed_polls": failed_polls, "not_recovered": never,
                      "answered_after_last_advert_s": after_last_advert, "answered_after_event_s": since_event}
        summary = f"  {kind}: outage {fmt(fail)}"
        summary += f"; answered again after the event {fmt(since_event)}"
        if never:
            summary += f", not recovered in {never} of {args.reps}"
        if back:
            summary += f"; failback glitch {fmt(back)}"
        if expect:
            summary += f" (target {expect})"
        print(summary, flush=True)
    return rows


def scenario_kill_v2(args):
    return failover(args, "kill -9 nginx on the master, v2, 1 s adverts, priorities 100/90",
                    ("nginx-ha", "keepalived"), [("VI_1", 51, 2, 1000, [f"{VIP}/24"], ())], "kill", 8.0,
                    "≤ 900 ms")


def scenario_kill_v3(args):
    return failover(args, "kill -9 nginx on the master, v3, 100 ms adverts, priorities 100/90",
                    ("nginx-ha", "keepalived"), [("VI_1", 51, 3, 100, [f"{VIP}/24"], ())], "kill", 4.0, "≤ 300 ms")


def scenario_hang(args):
    return failover(args, "nginx hung (SIGSTOP) on the master, v2 1 s, probes every 200 ms, fall 2",
                    ("nginx-ha", "keepalived"), [("VI_1", 51, 2, 1000, [f"{VIP}/24"], ())], "stop", 8.0,
                    "≤ 1.6 s")


def scenario_link(args):
    expected = 3 * 1.0 + (256 - 90) / 256
    rows = failover(args, f"master link cut, v2 1 s, priorities 100/90 (3 × interval + skew = {expected * 1000:.0f} ms)",
                    ("nginx-ha", "keepalived"), [("VI_1", 51, 2, 1000, [f"{VIP}/24"], ())], "link", 8.0,
                    f"within 100 ms of {expected * 1000:.0f} ms")
    for kind, row in rows.items():
        # The backup's master-down timer started at the last advert it heard, before the cut.
        late = [t - expected for t in row["answered_after_last_advert_s"]]
        print(f"  {kind}: (VIP answered again − A's last advert before the cut) − (3 × interval + skew): "
              f"{fmt(late)}")
    return rows


def scenario_nodeloss(args):
    """Power cut of the master (every process frozen, its switch port down: see Node.power_cut)
    at v3 adverts of each of --intervals ms; outage as the client sees it, per pair: both
    nginx-ha, both keepalived, and mixed pairs at intervals ≤ 50 ms."""
    rows = {}
    for interval in args.intervals:
        expected = 3 * interval + (256 - 90) * interval / 256
        kinds = ["nginx-ha", "keepalived"]
        if interval <= 50:
            kinds += ["nginx-ha/keepalived", "keepalived/nginx-ha"]
        rows[interval] = failover(
            args, f"power cut of the master, v3 {interval} ms adverts, priorities 100/90 "
                  f"(3 × interval + skew = {expected:.0f} ms)",
            kinds, [("VI_1", 51, 3, interval, [f"{VIP}/24"], ())], "power", 2.0 + 5 * expected / 1000,
            "≤ 100 ms" if interval <= 20 else None, health=DEFAULT_HEALTH)
        for kind, row in rows[interval].items():
            late = [t - expected / 1000 for t in row["answered_after_last_advert_s"]]
            print(f"  {kind}: (VIP answered again − A's last advert before the cut) − (3 × interval + skew): "
                  f"{fmt(late)}", flush=True)
    return rows


def scenario_stall(args):
    """What a loaded machine does to a backup at its worst: B's VRRP process gets no CPU for
    --stall-ms (SIGSTOP, then SIGCONT), longer than its master-down interval, while A keeps
    advertising every 20 ms. A's adverts are queued in B's socket meanwhile, so B has heard
    its master: taking over when it runs again is a false takeover (seen as B's adverts on the
    bridge by a sniffer in the client's namespace). --reps × 4 stalls per kind, at random phases."""
    stall = args.stall_ms / 1000
    print(f"\n## backup stalled for {args.stall_ms} ms (> master-down 73 ms), v3 20 ms adverts, {4 * args.reps} "
          f"stalls per pair")
    rows = {}
    for kind in ("nginx-ha", "keepalived", "nginx-ha/keepalived", "keepalived/nginx-ha"):
        lab, a, b, client = cluster(args, kind, [("VI_1", 51, 3, 20, [f"{VIP}/24"], ())], DEFAULT_HEALTH)
        try:
            count = 4 * args.reps
            seconds = count * (1.5 + stall) + 3
            sniffer = subprocess.Popen(["ip", "netns", "exec", client, sys.executable, os.path.join(HERE, "soak.py"),
                                        "sniff", str(seconds), "20", A_ADDR, B_ADDR, C_ADDR], stdout=subprocess.PIPE, text=True)
            time.sleep(1.0)
            for _ in range(count):
                time.sleep(random.uniform(1.0, 1.04))
                pids = b.vrrp_pids()
                for pid in pids:
                    os.kill(pid, signal.SIGSTOP)
                time.sleep(stall)
                for pid in pids:
                    os.kill(pid, signal.SIGCONT)
            seen = json.loads(sniffer.communicate(timeout=seconds + 30)[0])
            rows[kind] = {"stalls": count, "takeovers": seen["takeovers"], "b_adverts": seen["b_adverts"]}
            print(f"  {kind}: false takeovers after {count} stalls of B: {seen['takeovers']} "
                  f"({seen['b_adverts']} adverts from B)", flush=True)
        finally:
            lab.close()
    return rows


def scenario_cpu(args):
    """CPU per router at v3 adverts of each of --intervals ms: one router, A master (sends),
    B backup (receives), --idle-seconds after 5 s settling; keepalived without a check script
    (its 1 s script would dominate), nginx-ha with its default 1 s probes."""
    print(f"\n## CPU per router at v3 advert intervals, {args.idle_seconds:.0f} s after 5 s settling")
    rows = {}
    for interval in args.intervals:
        routers = [("VI_1", 51, 3, interval, [f"{VIP}/24"], ())]
        rows[interval] = {}
        for kind, health in (("nginx-ha", DEFAULT_HEALTH), ("keepalived", None)):
            usage = idle_usage(args, kind, routers, health, False, args.idle_seconds)
            rows[interval][kind] = usage
            print(f"  {interval} ms {kind}: " + ", ".join(
                f"{node} {100 * u['cpu_s'] / args.idle_seconds:.2f} % of a core" for node, u in usage.items()),
                flush=True)
    return rows


def idle_usage(args, kind, routers, health, check, seconds, client_routes=()):
    lab, a, b, _client = cluster(args, kind, routers, health, check, client_routes)
    try:
        time.sleep(5)
        before = {n.name: n.usage() for n in (a, b)}
        time.sleep(seconds)
        after = {n.name: n.usage() for n in (a, b)}
        return {name: {"cpu_s": after[name][0] - before[name][0], "rss_kib": after[name][1]} for name in after}
    finally:
        lab.close()


def scenario_idle(args):
    print(f"\n## idle, one router at 1 s adverts, {args.idle_seconds:.0f} s after 5 s settling")
    routers = [("VI_1", 51, 2, 1000, [f"{VIP}/24"], ())]
    rows = {}
    for kind, health in (("nginx-ha", DEFAULT_HEALTH), ("keepalived", None)):
        rows[kind] = idle_usage(args, kind, routers, health, True, args.idle_seconds)
        for node, u in rows[kind].items():
            print(f"  {kind} {node}: CPU {1000 * u['cpu_s']:.1f} ms = {100 * u['cpu_s'] / args.idle_seconds:.3f} % "
                  f"of a core, RSS {u['rss_kib'] / 1024:.2f} MiB", flush=True)
    return rows


def scenario_routers(args):
    print(f"\n## 100 v3 routers at 100 ms adverts, A master of all, {args.idle_seconds:.0f} s")
    routers = [(f"VI_{n}", n, 3, 100, [f"198.18.1.{n}/32"], ()) for n in range(1, 101)]
    rows = {}
    for kind, health in (("nginx-ha", DEFAULT_HEALTH), ("keepalived", None)):
        rows[kind] = idle_usage(args, kind, routers, health, False, args.idle_seconds, ["198.18.1.0/24"])
        for node, u in rows[kind].items():
            print(f"  {kind} {node}: CPU {100 * u['cpu_s'] / args.idle_seconds:.2f} % of a core (target ≤ 10 %), "
                  f"RSS {u['rss_kib'] / 1024:.2f} MiB", flush=True)
    return rows


def scenario_vips(args):
    """kill -9 on the master with 1 VIP and with 1 + 999 excluded VIPs; outage on the last VIP."""
    print("\n## 1000 VIPs on one router (1 advertised + 999 excluded), kill -9 nginx on the master, v3 100 ms")
    excluded = [f"198.19.{n // 250}.{n % 250 + 1}/32" for n in range(999)]
    last = excluded[-1].split("/")[0]
    rows = {}
    for kind in ("nginx-ha", "keepalived"):
        rows[kind] = {}
        for label, extra, watched in (("1 VIP", (), VIP), ("1000 VIPs", excluded, last)):
            times = []
            for rep in range(args.reps):
                routers = [("VI_1", 51, 3, 100, [f"{VIP}/24"], extra)]
                lab, a, _b, client = cluster(args, kind, routers, client_routes=["198.19.0.0/16"])
                try:
                    wait_until("A answering on the last VIP", lambda: all_from(poll(client, watched, 0.05), "A"), 30)
                    _at, [(runs, _failed, _adverts, _last)] = measure_outage(client, [watched],
                                                            lambda: a.signal_nginx(signal.SIGKILL), 4.0)
                    if runs and runs[0][1] is not None:
                        times.append(runs[0][1] - runs[0][0])
                        print(f"  {kind} {label} rep {rep + 1}: outage on {watched} "
                              f"{1000 * times[-1]:.0f} ms", flush=True)
                    else:
                        print(f"  {kind} {label} rep {rep + 1}: {watched} not answered again", flush=True)
                finally:
                    lab.close()
            rows[kind][label] = times
            print(f"  {kind} {label}: outage {fmt(times)}", flush=True)
        one, many = rows[kind]["1 VIP"], rows[kind]["1000 VIPs"]
        if one and many:
            print(f"  {kind}: 1000 VIPs − 1 VIP (medians): "
                  f"{1000 * (statistics.median(many) - statistics.median(one)):.0f} ms (target ≤ 200 ms)")
    return rows


def scenario_hitless(args):
    """kill -9 of nginx (master and workers) on the master of a pair, nginx having served ≥ 10 s:
    nginx-ha restarts it in place (no backoff, Health::Restarting) and the VIP stays for
    restart_grace_ms (300). One cluster, --hitless-reps kills at random phases; each kill waits
    until the restarted nginx has served 10.5 s again (past the policy's BACKOFF_RESET_AFTER, 3 s
    since issue 14 part 1, 10 s before: each kill the first in a row; kept at 10.5 s so the
    figures compare with the earlier runs). Kills seconds after a start: bench/hitless.py first-crash, crash-loop."""
    reps = args.hitless_reps
    print(f"\n## hitless: kill -9 nginx (master + workers) on the master after ≥ 10 s of serving, v2 1 s, "
          f"{reps} kills")
    outage, left, failed_counts = [], 0, []
    lab, a, b, client = cluster(args, "nginx-ha", [("VI_1", 51, 2, 1000, [f"{VIP}/24"], ())])
    try:
        for rep in range(reps):
            time.sleep(10.5)
            old = a.nginx_master()
            at, [(runs, failed, adverts, last_body)] = measure_outage(
                client, [VIP], lambda: a.signal_nginx(signal.SIGKILL), 1.5, lead=0.2)
            wait_until("A's nginx restarted", lambda: a.nginx_master() not in (None, old), 10)
            # The VIP left if B advertised (it sends nothing as BACKUP) or A sent a priority-0 advert.
            moved = [ad for ad in adverts if ad[0] >= at and (ad[1] == B_ADDR or ad[3] == 0)]
            answered_by = {run[2] for run in runs if run[2] is not None} | {last_body}
            vip_left = bool(moved) or answered_by != {"A"} or b.states().get("VI_1") != "BACKUP"
            left += vip_left
            worst_run = max((run[1] - run[0] for run in runs if run[1] is not None), default=0.0)
            if any(run[1] is None for run in runs):
                worst_run = None
            outage.append(worst_run)
            failed_counts.append(failed)
            shown = "not answered again" if worst_run is None else f"{1000 * worst_run:.0f} ms"
            print(f"  rep {rep + 1}: outage {shown}, {failed} failed polls, answered by {sorted(answered_by)}"
                  f"{', VIP LEFT A' if vip_left else ''}", flush=True)
    finally:
        lab.close()
    measured = [o for o in outage if o is not None]
    median = statistics.median(measured) if measured else None
    worst = max(measured) if measured else None
    print(f"  nginx-ha: outage min / median / max {fmt(measured)} (target median ≤ 50 ms, worst ≤ 100 ms); "
          f"VIP left A in {left} of {reps}; not answered again in {len(outage) - len(measured)}", flush=True)
    return {"outage_s": outage, "median_s": median, "worst_s": worst, "vip_left": left,
            "failed_polls": failed_counts}


SCENARIOS = {"kill-v2": scenario_kill_v2, "kill-v3": scenario_kill_v3, "hang": scenario_hang,
             "link": scenario_link, "idle": scenario_idle, "vips": scenario_vips, "routers": scenario_routers,
             "hitless": scenario_hitless, "nodeloss": scenario_nodeloss, "cpu": scenario_cpu,
             "stall": scenario_stall}


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "poll":
        return poller_main(sys.argv[2], sys.argv[3])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binary", nargs="?", default="target/release/nginx-ha")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--hitless-reps", type=int, default=20)
    parser.add_argument("--stall-ms", type=int, default=200, help="how long the stall scenario stops the backup")
    parser.add_argument("--intervals", default="20,50,100,1000",
                        help="advert intervals in ms of the nodeloss and cpu scenarios")
    parser.add_argument("--json")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    args.binary = os.path.abspath(args.binary)
    args.intervals = [int(ms) for ms in args.intervals.split(",")]
    if os.geteuid() != 0:
        sys.exit("vrrp.py: needs root (network namespaces, raw sockets)")
    if not os.access(args.binary, os.X_OK):
        sys.exit(f"vrrp.py: {args.binary} is not an executable; run `cargo build --release` first")
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="nginx-ha-vrrp-bench-")
    os.chmod(args.workdir, 0o755)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"# nginx-ha VRRP benchmarks, {datetime.datetime.now():%Y-%m-%d %H:%M}, {args.reps} reps")
    versions = [subprocess.run([p, flag], capture_output=True, text=True).stderr.splitlines()[0]
                for p, flag in ((NGINX, "-v"), (KEEPALIVED, "--version"))]
    print(f"# binary {args.binary}; {'; '.join(versions)}; nproc {os.cpu_count()}; "
          f"load {os.getloadavg()[0]:.2f}; kernel {os.uname().release}")
    results = {}
    for name in args.only.split(","):
        if name not in SCENARIOS:
            sys.exit(f"vrrp.py: unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
        results[name] = SCENARIOS[name](args)
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

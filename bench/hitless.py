#!/usr/bin/env python3
"""Hitless life-cycle benchmarks: what nginx-ha's own restarts, upgrades and stops, and a short
link loss, cost the clients of a two-node pair, side by side with keepalived where it can do the
same. Prints figures (min/median/max); not a test.

usage: bench/hitless.sh [NGINX_HA_BINARY] [--reps N] [--interval-ms MS] [--kinds nginx-ha,keepalived]
                        [--only daemon-kill,stop,link,upgrade,first-crash,first-crash-upgrade,crash-loop]
       (NGINX_HA_BINARY defaults to target/release/nginx-ha; run `cargo build --release` first)

Same lab as bench/vrrp.py (whose pieces it uses): VRRPv2, 1 s adverts (--interval-ms MS: VRRPv3
at MS, e.g. 20 for fast node-loss detection), priorities 100/90, an
http probe every 200 ms, a client opening a new connection to the VIP every 10 ms (300 ms each).
Per event: the client's failed polls, the longest outage, and whether B ever advertised as
master (the client sniffs the adverts on the bridge).
  daemon-kill  kill -9 of the daemon on the master, started again 0.5 s later (as Restart= would)
  stop         SIGTERM to the daemon on the master (systemctl stop); keepalived: SIGTERM too
  link         the master's link down for 2 s
  upgrade      `nginx-ha upgrade` on the master (no keepalived equivalent)
  first-crash  kill -9 of nginx (master and workers) on the master 2 s after nginx's start (A has
               priority 255 here, so it is MASTER before that); keepalived: the same, its check
               script sees it (keepalived does not restart nginx)
  first-crash-upgrade  `nginx-ha upgrade-nginx` on the master, then kill -9 of the new nginx 2 s
               after its start (no keepalived equivalent)
  crash-loop   nginx killed 1 s after each start, up to 5 times: at which crash the VIP leaves A
               and each crash's outage (keepalived: its first crash already hands over, as in
               first-crash)
"""

import argparse
import datetime
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vrrp  # noqa: E402
from nhalab import CLK_TCK, read, wait_until  # noqa: E402

ROUTERS = [("VI_1", 51, 2, 1000, [f"{vrrp.VIP}/24"], ())]


def kill_and_restart(node, kind):
    if kind == "nginx-ha":
        node.daemon.send_signal(signal.SIGKILL)
        node.daemon.wait()
        time.sleep(0.5)
        env = dict(os.environ, RUST_LOG="info")
        node.daemon = node.lab.spawn(node.ns, [node.binary, "run", "-c", node.path("nginx-ha.toml")],
                                     node.path("nginx-ha.log"), env)
    else:
        vrrp_child = node.vrrp_pid()
        node.keepalived.send_signal(signal.SIGKILL)
        if vrrp_child:
            os.kill(vrrp_child, signal.SIGKILL)
        node.keepalived.wait()
        time.sleep(0.5)
        node.keepalived = node.lab.spawn(node.ns, [
            vrrp.KEEPALIVED, "--vrrp", "--dont-fork", "--log-console", "--no-syslog", "--use-file",
            node.path("keepalived.conf"), "--pid", node.path("keepalived.pid"), "--vrrp_pid",
            node.path("vrrp.pid"), "--checkers_pid", node.path("checkers.pid")], node.path("keepalived.log"))


def stop(node, kind):
    (node.daemon if kind == "nginx-ha" else node.keepalived).send_signal(signal.SIGTERM)


def link_down_2s(node, _kind):
    node.cut_link()
    time.sleep(2.0)
    vrrp.sh("ip", "-n", node.lab.bridge, "link", "set", node.port, "up")


def upgrade(node, _kind):
    done = subprocess.run([node.binary, "upgrade", "-c", node.path("nginx-ha.toml")], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"    upgrade failed: {done.stderr.strip()}")


SCENARIOS = {
    "daemon-kill": ("daemon kill -9 on the master, restarted 0.5 s later", kill_and_restart,
                    ("nginx-ha", "keepalived"), 8.0),
    "stop": ("planned stop (SIGTERM) of the master's daemon", stop, ("nginx-ha", "keepalived"), 6.0),
    "link": ("the master's link down for 2 s", link_down_2s, ("nginx-ha", "keepalived"), 10.0),
    "upgrade": ("nginx-ha upgrade (re-exec in place) on the master", upgrade, ("nginx-ha",), 6.0),
}


def nginx_age(node):
    """Seconds the node's nginx master has run (its start time in /proc/PID/stat)."""
    pid = node.nginx_master()
    if pid is None:
        return None
    stat = read(f"/proc/{pid}/stat")
    started = int(stat[stat.rfind(")") + 2:].split()[19]) / CLK_TCK
    return float(read("/proc/uptime").split()[0]) - started


def healthy(node):
    return bool(((node.status() or {}).get("nginx") or {}).get("healthy"))


def kill_at_age(client, a, age, seconds):
    """Polls the VIP (and sniffs the adverts) while A's nginx is killed -9 once it is `age` s old
    (at once, 0.3 s into the polls, when older). (kill time, age at the kill, the failed-poll runs
    after it, failed polls, adverts, last body, the client's longest gap between two polls' starts
    in the second after the kill: more than a few ms means the client itself was not scheduled,
    and an outage that long may be the client's, not the server's)."""
    poller = vrrp.start_poller(client, vrrp.VIP, 0.3 + max(0.0, age - nginx_age(a)) + seconds)
    time.sleep(0.3)
    time.sleep(max(0.0, age - nginx_age(a)))
    killed_at_age = nginx_age(a)
    at = time.monotonic()
    a.signal_nginx(signal.SIGKILL)
    out, _ = poller.communicate(timeout=age + seconds + 30)
    seen = vrrp.json.loads(out)
    polls = seen["polls"]
    failed = sum(1 for p in polls if p[2] is None and p[0] >= at - vrrp.POLL_TIMEOUT)
    last_body = next((p[2] for p in sorted(polls, reverse=True) if p[2] is not None), None)
    starts = sorted(p[0] for p in polls if at - 0.1 <= p[0] <= at + 1.0)
    gap = max((b - a for a, b in zip(starts, starts[1:])), default=0.0)
    return at, killed_at_age, vrrp.outages(polls, at), failed, seen["adverts"], last_body, gap


def faults_in_log(node):
    """How often nginx-ha on `node` has left MASTER for FAULT (0 for keepalived)."""
    return (read(node.path("nginx-ha.log")) or "").count("from=MASTER to=FAULT")


def vip_left_a(at, runs, adverts, last_body, until=None):
    """B advertised as master, A relinquished (priority 0), or someone else answered after `at`."""
    window = [ad for ad in adverts if ad[0] >= at and (until is None or ad[0] < until)]
    moved = [ad for ad in window if ad[1] == vrrp.B_ADDR or ad[3] == 0]
    answered_by = {run[2] for run in runs if run[2] is not None} | ({last_body} if until is None else set())
    return bool(moved) or bool(answered_by - {"A"})


def keep_logs(args, name, *nodes):
    """Copies the nodes' logs out of the lab (deleted when it closes) into the workdir."""
    into = os.path.join(args.workdir, name)
    os.makedirs(into, exist_ok=True)
    for node in nodes:
        for log in ("nginx-ha.log", "nginx-error.log", "keepalived.log"):
            if os.path.exists(node.path(log)):
                subprocess.run(["cp", node.path(log), os.path.join(into, f"{node.name}-{log}")], check=False)
    print(f"    logs kept in {into}")


def first_crash(args, after_upgrade):
    title = ("kill -9 of nginx 2 s after `upgrade-nginx` started it, on the master" if after_upgrade else
             "kill -9 of nginx 2 s after its start, on the master (A priority 255)")
    kinds = [k for k in (("nginx-ha",) if after_upgrade else ("nginx-ha", "keepalived")) if k in args.kinds]
    print(f"\n## {title}, {args.reps} reps")
    rows = {}
    for kind in kinds:
        outage_all, failed_all, left, ages, gaps = [], [], 0, [], []
        for rep in range(args.reps):
            lab, a, b, client = vrrp.cluster(args, kind, ROUTERS, a_priority=100 if after_upgrade else 255)
            try:
                if after_upgrade:
                    old = a.nginx_master()
                    done = subprocess.run([a.binary, "upgrade-nginx", "-c", a.path("nginx-ha.toml")],
                                          capture_output=True, text=True)
                    if done.returncode != 0 or a.nginx_master() == old:
                        print(f"    upgrade-nginx failed: {done.stdout.strip()} {done.stderr.strip()}")
                faults_before = faults_in_log(a)
                at, age, runs, failed, adverts, last_body, gap = kill_at_age(client, a, 2.0, 5.0)
                outage = max((end - start for start, end, _ in runs if end is not None), default=0.0)
                if any(end is None for _s, end, _b in runs):
                    outage = float("inf")
                # An address owner (255) that relinquishes takes the VIP back before B's skew time
                # runs out: B never advertises, but A did leave MASTER (its log says so).
                vip_left = vip_left_a(at, runs, adverts, last_body) or faults_in_log(a) > faults_before
                left += vip_left
                if vip_left or outage > 0.1:
                    keep_logs(args, f"{kind}-{'upgrade' if after_upgrade else 'start'}-rep{rep + 1}", a, b)
                outage_all.append(outage)
                failed_all.append(failed)
                ages.append(age)
                gaps.append(gap)
                print(f"  {kind} rep {rep + 1}: killed {age:.2f} s after nginx's start: {failed} failed polls, "
                      f"outage {1000 * outage:.0f} ms, VIP {'LEFT A' if vip_left else 'stayed on A'}; "
                      f"answered by {last_body} at the end; client's longest gap between polls {1000 * gap:.0f} ms",
                      flush=True)
            finally:
                lab.close()
        rows[kind] = {"outage_s": outage_all, "failed_polls": failed_all, "vip_left": left, "age_s": ages,
                      "client_gap_s": gaps}
        print(f"  {kind}: outage min / median / max {vrrp.fmt(outage_all)}; failed polls "
              f"{sorted(failed_all)[len(failed_all) // 2]} median, {max(failed_all)} max; VIP left A in {left} "
              f"of {args.reps}; killed {min(ages):.2f}–{max(ages):.2f} s after nginx's start; client gaps "
              f"{vrrp.fmt(gaps)}", flush=True)
    return rows


def crash_loop(args):
    print(f"\n## crash loop: nginx killed 1 s after each start on the master (up to 5 kills), {args.reps} reps")
    handed_over, outages = [], []
    for rep in range(args.reps):
        lab, a, b, client = vrrp.cluster(args, "nginx-ha", ROUTERS)
        try:
            # Long enough for 5 kills (each: 1 s of serving, the restart and its backoff, 0.8 s).
            poller = vrrp.start_poller(client, vrrp.VIP, 16.0)
            time.sleep(0.3)
            kills, at_crash = [], None
            for crash in range(1, 6):
                time.sleep(max(0.0, 1.0 - (nginx_age(a) or 0.0)))
                old = a.nginx_master()
                kills.append(time.monotonic())
                a.signal_nginx(signal.SIGKILL)
                wait_until("A's nginx restarted", lambda: a.nginx_master() not in (None, old), 30)
                wait_until("A healthy again", lambda: healthy(a), 30)
                # Longer than B's skew time (0.65 s), in which it takes over from a relinquishing A.
                time.sleep(0.8)
                if b.states().get("VI_1") == "MASTER":
                    at_crash = crash
                    break
            out, _ = poller.communicate(timeout=60)
            keep_logs(args, f"crash-loop-rep{rep + 1}", a, b)
        finally:
            lab.close()
        seen = vrrp.json.loads(out) if out else {"polls": [], "adverts": []}
        per_crash = []
        for i, at in enumerate(kills):
            until = kills[i + 1] if i + 1 < len(kills) else None
            # This crash's own runs of failed polls: those that began after it (less a poll's timeout).
            runs = [r for r in vrrp.outages(seen["polls"], at)
                    if r[0] >= at - vrrp.POLL_TIMEOUT and (until is None or r[0] < until)]
            outage = max(((end or 16.0 + kills[0]) - start for start, end, _ in runs), default=0.0)
            left = vip_left_a(at, runs, seen["adverts"], None, until)
            per_crash.append((outage, left))
        first_left = next((i + 1 for i, (_o, left) in enumerate(per_crash) if left), None)
        handed_over.append(first_left)
        if first_left:
            outages.append(per_crash[first_left - 1][0])
        shown = ", ".join(f"crash {i + 1}: {1000 * o:.0f} ms{' VIP LEFT' if left else ''}"
                          for i, (o, left) in enumerate(per_crash))
        print(f"  rep {rep + 1}: {shown}; B seen MASTER (status) after crash {at_crash}", flush=True)
    counted = [h for h in handed_over if h]
    print(f"  nginx-ha: the VIP left A at crash {sorted(counted)} (never in {len(handed_over) - len(counted)}); "
          f"outage of that crash {vrrp.fmt(outages)}; keepalived: at crash 1 (see first-crash)", flush=True)
    return {"handed_over_at": handed_over, "outage_s": outages}


def scenario(args, name):
    title, event, kinds, seconds = SCENARIOS[name]
    print(f"\n## {title}")
    rows = {}
    for kind in kinds:
        failed_all, outage_all, b_took_over = [], [], 0
        for rep in range(args.reps):
            lab, a, b, client = vrrp.cluster(args, kind, args.routers)
            try:
                at, [(runs, failed, adverts, last_body)] = vrrp.measure_outage(
                    client, [vrrp.VIP], lambda: event(a, kind), seconds)
                outage = max((end - start for start, end, _ in runs if end is not None), default=0.0)
                if any(end is None for _s, end, _b in runs):
                    outage = float("inf")
                b_master = any(src == vrrp.B_ADDR and prio > 0 and t >= at for t, src, _v, prio in adverts)
                b_took_over += b_master
                failed_all.append(failed)
                outage_all.append(outage)
                print(f"  {kind} rep {rep + 1}: {failed} failed polls, longest outage {1000 * outage:.0f} ms, "
                      f"B advertised as master: {'yes' if b_master else 'no'}; answered by {last_body} at the end",
                      flush=True)
            finally:
                lab.close()
        rows[kind] = {"failed_polls": failed_all, "outage_s": outage_all, "peer_took_over": b_took_over}
        print(f"  {kind}: failed polls {min(failed_all)} / {sorted(failed_all)[len(failed_all) // 2]} / "
              f"{max(failed_all)}; outage {vrrp.fmt(outage_all)}; B took over in {b_took_over} of {args.reps}",
              flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binary", nargs="?", default="target/release/nginx-ha")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--interval-ms", type=int, default=None, help="VRRPv3 at this advert interval")
    parser.add_argument("--kinds", default="nginx-ha,keepalived", help="first-crash: which daemons to run")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    args.routers = ROUTERS if args.interval_ms is None else [("VI_1", 51, 3, args.interval_ms, [f"{vrrp.VIP}/24"], ())]
    args.binary = os.path.abspath(args.binary)
    if os.geteuid() != 0:
        sys.exit("hitless.py: needs root (network namespaces, raw sockets)")
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="nginx-ha-hitless-bench-")
    os.chmod(args.workdir, 0o755)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"# nginx-ha hitless benchmarks, {datetime.datetime.now():%Y-%m-%d %H:%M}, {args.reps} reps, "
          f"binary {args.binary}, load {os.getloadavg()[0]:.2f}, "
          f"{'v2 1000' if args.interval_ms is None else f'v3 {args.interval_ms}'} ms adverts")
    extra = {"first-crash": lambda: first_crash(args, False),
             "first-crash-upgrade": lambda: first_crash(args, True),
             "crash-loop": lambda: crash_loop(args)}
    for name in args.only.split(","):
        if name in extra:
            extra[name]()
        elif name in SCENARIOS:
            scenario(args, name)
        else:
            sys.exit(f"hitless.py: unknown scenario {name!r}; known: {', '.join([*SCENARIOS, *extra])}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        for lab in list(vrrp.OPEN_LABS):
            lab.close()

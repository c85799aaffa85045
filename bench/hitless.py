#!/usr/bin/env python3
"""Hitless life-cycle benchmarks: what nginx-ha's own restarts, upgrades and stops, and a short
link loss, cost the clients of a two-node pair, side by side with keepalived where it can do the
same. Prints figures (min/median/max); not a test.

usage: bench/hitless.sh [NGINX_HA_BINARY] [--reps N] [--only daemon-kill,stop,link,upgrade] [--interval-ms MS]
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
    for name in args.only.split(","):
        if name not in SCENARIOS:
            sys.exit(f"hitless.py: unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
        scenario(args, name)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        for lab in list(vrrp.OPEN_LABS):
            lab.close()

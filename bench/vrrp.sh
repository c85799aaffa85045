#!/bin/sh
# usage: bench/vrrp.sh [NGINX_HA_BINARY] [--reps N] [--only kill-v2,...,hitless,nodeloss,cpu] [--intervals MS,...]
#                      [--idle-seconds S] [--hitless-reps N] [--json FILE]
#   NGINX_HA_BINARY defaults to target/release/nginx-ha (build it with `cargo build --release`).
#   Needs root, iproute2, nginx and keepalived (apt-get install nginx-light keepalived). About 30 minutes.
#
# VRRP failover benchmarks of nginx-ha side by side with keepalived + a 1 s check script (see
# BENCHMARKS.md). Builds its clusters in network namespaces named nhb<PID>-*, with addresses from
# 198.18.0.0/15 only; vrrp.py stops everything it started by pid and deletes its namespaces, and
# this wrapper deletes any of its namespaces that are left (e.g. after kill -9 of vrrp.py).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python3 "$here/vrrp.py" "$@" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' INT TERM
status=0
wait $pid || status=$?
# wait returns early when a trapped signal arrives; wait again for vrrp.py's own cleanup.
wait $pid 2>/dev/null || true
for ns in $(ip netns list | awk '{print $1}' | grep "^nhb$pid-" || true); do
    ip netns del "$ns" || true
done
exit $status

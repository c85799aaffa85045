#!/bin/sh
# usage: bench/hitless.sh [NGINX_HA_BINARY] [--reps N] [--interval-ms MS] [--kinds nginx-ha,keepalived]
#          [--only daemon-kill,stop,link,upgrade,first-crash,first-crash-upgrade,crash-loop]
#   NGINX_HA_BINARY defaults to target/release/nginx-ha (build it with `cargo build --release`).
#   Needs root, iproute2, nginx and keepalived (apt-get install nginx-light keepalived). About 5 minutes at 5 reps.
#
# What nginx-ha's own restarts, upgrades and stops (and a short link loss) cost the clients of a
# pair, beside keepalived doing the same where it can (see BENCHMARKS.md). Builds its clusters in network namespaces named nhb<PID>-*, with addresses from
# 198.18.0.0/15 only; hitless.py stops everything it started by pid and deletes its namespaces, and
# this wrapper deletes any of its namespaces that are left (e.g. after kill -9 of hitless.py).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python3 "$here/hitless.py" "$@" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' INT TERM
status=0
wait $pid || status=$?
# wait returns early when a trapped signal arrives; wait again for hitless.py's own cleanup.
wait $pid 2>/dev/null || true
for ns in $(ip netns list | awk '{print $1}' | grep "^nhb$pid-" || true); do
    ip netns del "$ns" || true
done
exit $status

#!/bin/sh
# usage: bench/drain.sh [NGINX_HA_BINARY] [--reps N] [--only drain,no-drain,keepalived] [--json FILE] [--logs DIR]
#   NGINX_HA_BINARY defaults to target/release/nginx-ha (build it with `cargo build --release`).
#   Needs root, iproute2, python3, nginx and keepalived (apt-get install nginx-light keepalived).
#   About 80 s per configuration and repetition (4 minutes a repetition of all three; a drain that
#   runs its whole 60 s window adds 35 s). --logs DIR keeps each pair's nginx-ha / keepalived /
#   nginx logs (NHA_RUST_LOG="info,nginx_ha::vrrp=debug" adds the hand-over timing).
#
# Do long connections to the VIP (a 30 MB download at 1 MB/s, a websocket-style echo through
# nginx) survive a failback and a planned stop? nginx-ha with its connection drain, without it
# (drain_ms = 0), and keepalived (see BENCHMARKS.md). Builds its pairs in network namespaces named
# nhb<PID>-*, with addresses from 198.18.0.0/15 only; drain.py stops everything it started by pid
# and deletes its namespaces, and this wrapper deletes any of its namespaces that are left (e.g.
# after kill -9 of drain.py).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python3 "$here/drain.py" "$@" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' INT TERM
status=0
wait $pid || status=$?
# wait returns early when a trapped signal arrives; wait again for drain.py's own cleanup.
wait $pid 2>/dev/null || true
for ns in $(ip netns list | awk '{print $1}' | grep "^nhb$pid-" || true); do
    ip netns del "$ns" || true
done
exit $status

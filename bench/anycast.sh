#!/bin/sh
# usage: bench/anycast.sh [NGINX_HA_BINARY] [--reps N] [--only hang,crash,stop,kill] [--json FILE]
#   NGINX_HA_BINARY defaults to target/release/nginx-ha, else target/debug/nginx-ha.
#   Needs root, iproute2, nginx and BIRD 2 (apt-get install nginx-light bird2). A few minutes.
#
# Anycast benchmarks (see BENCHMARKS.md): three nginx-ha + BIRD nodes, a BIRD router with ECMP,
# a client looping requests through it. For each failure: the time from the failure to the
# router's FIB change, and the client's failed requests. Namespaces are named nha<PID>-*, with
# addresses from 198.18.0.0/15 only; anycast.py stops everything it started by pid and deletes
# its namespaces, and this wrapper deletes any that are left (e.g. after kill -9 of anycast.py).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python3 "$here/anycast.py" "$@" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' INT TERM
status=0
wait $pid || status=$?
wait $pid 2>/dev/null || true
for ns in $(ip netns list | awk '{print $1}' | grep "^nha$pid-" || true); do
    ip netns del "$ns" || true
done
exit $status

#!/bin/sh
# usage: bench/soak.sh [NGINX_HA_BINARY] [--minutes M] [--interval-ms MS] [--pairs P,P,...] [--hogs N]
#                      [--no-wrk] [--json FILE]
#   NGINX_HA_BINARY defaults to target/release/nginx-ha (build it with `cargo build --release`).
#   Needs root, iproute2, nginx, keepalived and wrk. Takes --minutes (default 10) plus a minute.
#
# Loaded soak of fast VRRP adverts (see bench/soak.py and BENCHMARKS.md): counts false takeovers
# of nginx-ha, keepalived and mixed pairs while CPU hogs and wrk load the machine. Builds its
# clusters in network namespaces named nhb<PID>-*, with addresses from 198.18.0.0/15 only;
# soak.py stops everything it started by pid and deletes its namespaces, and this wrapper deletes
# any of its namespaces that are left (e.g. after kill -9 of soak.py).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python3 "$here/soak.py" "$@" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' INT TERM
status=0
wait $pid || status=$?
wait $pid 2>/dev/null || true
for ns in $(ip netns list | awk '{print $1}' | grep "^nhb$pid-" || true); do
    ip netns del "$ns" || true
done
exit $status

#!/bin/sh
# usage: bench/metrics.sh [NGINX_HA_BINARY] [--scrapes N] [--spaced N] [--seconds S] [--only scrape,vrrp] [--json FILE]
#   NGINX_HA_BINARY defaults to target/release/nginx-ha (build it with `cargo build --release`).
#   Needs root, iproute2, nginx and python3. About 2 minutes.
#
# Metrics benchmarks (see BENCHMARKS.md): a scrape's cost, the idle RSS with metrics on, and the
# VRRP adverts' timing while hostile scrapers hang on. Builds its labs in network namespaces named
# nhm<PID>-*, with addresses from 198.18.0.0/15 only; metrics.py stops everything it started by
# pid and deletes its namespaces, and this wrapper deletes any of its namespaces that are left.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python3 "$here/metrics.py" "$@" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' INT TERM
status=0
wait $pid || status=$?
# wait returns early when a trapped signal arrives; wait again for metrics.py's own cleanup.
wait $pid 2>/dev/null || true
for ns in $(ip netns list | awk '{print $1}' | grep "^nhm$pid-" || true); do
    ip netns del "$ns" || true
done
exit $status

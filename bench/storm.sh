#!/bin/sh
# usage: bench/storm.sh [--binary PATH] [--seed N] [--faults N] [--kinds a,b,c] [--advert-ms MS] [--json FILE]
#        bench/storm.sh sweep
#   The binary defaults to $NGINX_HA_BIN, else target/release/nginx-ha (`cargo build --release`).
#   Needs root, python3, iproute2 and nginx. About 9 s per fault with 1 s adverts (500 faults ≈ 75 min).
#
# Seeded fault storm against a two-node nginx-ha pair in network namespaces (see bench/storm.py and
# the Reliability section of BENCHMARKS.md). Prints the seed, a re-run command, one line per fault,
# a per-kind table and the goals; exits 1 when a goal is violated. Namespaces are named
# nhastorm-<PID>-*, addresses from 198.18.0.0/15 only; what it creates is recorded in
# /tmp/nginx-ha-storm/run-<PID>.rec and removed at the end; this wrapper sweeps after a killed run.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python3 "$here/storm.py" "$@" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' INT TERM
status=0
wait $pid || status=$?
# wait returns early when a trapped signal arrives; wait again for storm.py's own cleanup.
wait $pid 2>/dev/null || true
python3 "$here/storm.py" sweep >/dev/null 2>&1 || true
exit $status

#!/bin/sh
# usage: sudo bench/alias.sh [NGINX_HA_BINARY] [--reps N]
#   NGINX_HA_BINARY defaults to target/release/nginx-ha, else target/debug/nginx-ha.
#   Needs root, ip (iproute2) and nginx (/usr/sbin/nginx). Takes about half a minute.
#
# Static alias figures (see BENCHMARKS.md): `nginx-ha alias add` latency (it includes the RFC
# 5227 ARP probe), restoration after `ip addr del` behind the daemon's back, and a start that
# must add N stored aliases ("reboot"). Runs in its own network namespace (nha-bench-alias-PID,
# a veth pair, 198.18.0.0/24) with nginx on its loopback; the daemon is stopped by pid and the
# namespace and temp dir removed when it ends (also on Ctrl-C).
set -eu

bin=""
reps=10
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) reps=$2; shift 2 ;;
        *) bin=$1; shift ;;
    esac
done
if [ -z "$bin" ]; then
    if [ -x target/release/nginx-ha ]; then bin=target/release/nginx-ha; else bin=target/debug/nginx-ha; fi
fi
bin=$(realpath "$bin")
nginx=/usr/sbin/nginx
[ -x "$nginx" ] || nginx=$(command -v nginx)

ns="nha-bench-alias-$$"
workdir=$(mktemp -d "${TMPDIR:-/tmp}/nginx-ha-bench-alias-XXXXXX")
daemon=""
cleanup() {
    if [ -n "$daemon" ] && [ -d "/proc/$daemon" ]; then
        kill -TERM "$daemon" 2>/dev/null || true
        wait "$daemon" 2>/dev/null || true
    fi
    # nginx of this run only: its pid file is in the work dir.
    if [ -f "$workdir/nginx.pid" ]; then kill -KILL "$(cat "$workdir/nginx.pid")" 2>/dev/null || true; fi
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add v0 type veth peer name v1
ip -n "$ns" addr add 198.18.0.1/24 dev v0
ip -n "$ns" link set v1 up
ip -n "$ns" link set v0 up

d=$workdir
cat >"$d/nginx.conf" <<EOF
worker_processes 1;
pid $d/nginx.pid;
error_log $d/nginx-error.log;
events { worker_connections 64; }
http { access_log off; client_body_temp_path $d/body; proxy_temp_path $d/proxy;
  server { listen 127.0.0.1:8080; location / { return 200 "ok\n"; } } }
EOF
cat >"$d/nginx-ha.toml" <<EOF
[nginx]
binary = "$nginx"
config = "$d/nginx.conf"
[health]
http = "http://127.0.0.1:8080/"
[daemon]
control_socket = "$d/control.sock"
state_dir = "$d/state"
EOF

now_ms() { echo $(($(date +%s%N) / 1000000)); }
nha() { ip netns exec "$ns" "$bin" "$@" -c "$d/nginx-ha.toml"; }
present() { ip -n "$ns" -o addr show dev v0 | grep -q " $1 "; }
start_daemon() {
    ip netns exec "$ns" "$bin" run -c "$d/nginx-ha.toml" >>"$d/daemon.log" 2>&1 &
    daemon=$!
    until nha status >/dev/null 2>&1; do sleep 0.01; done
}
stop_daemon() { kill -TERM "$daemon"; wait "$daemon" || true; daemon=""; }
stats() { sort -n | awk '{ v[NR] = $1; s += $1 } END { printf "median %d ms, min %d, max %d, mean %.0f (n=%d)\n", v[int((NR + 1) / 2)], v[1], v[NR], s / NR, NR }'; }

echo "binary: $bin"
start_daemon

i=0
: >"$d/add.ms"
while [ $i -lt "$reps" ]; do
    t0=$(now_ms)
    nha alias add "198.18.0.$((100 + i))/24" --dev v0 >/dev/null
    echo $(($(now_ms) - t0)) >>"$d/add.ms"
    i=$((i + 1))
done
printf "alias add (ARP probe included):            "; stats <"$d/add.ms"

i=0
: >"$d/restore.ms"
while [ $i -lt "$reps" ]; do
    address="198.18.0.$((100 + i))/24"
    t0=$(now_ms)
    ip -n "$ns" addr del "$address" dev v0
    until present "$address"; do sleep 0.005; done
    echo $(($(now_ms) - t0)) >>"$d/restore.ms"
    i=$((i + 1))
done
printf "ip addr del -> back (ARP probe included):   "; stats <"$d/restore.ms"

# "Reboot": the daemon stopped, the addresses gone, the daemon started on the same store.
: >"$d/start.ms"
i=0
while [ $i -lt 3 ]; do
    stop_daemon
    j=0
    while [ $j -lt "$reps" ]; do ip -n "$ns" addr del "198.18.0.$((100 + j))/24" dev v0; j=$((j + 1)); done
    if [ -f "$d/nginx.pid" ]; then kill -QUIT "$(cat "$d/nginx.pid")" 2>/dev/null || true; sleep 0.5; fi
    t0=$(now_ms)
    start_daemon
    j=0
    while [ $j -lt "$reps" ]; do until present "198.18.0.$((100 + j))/24"; do sleep 0.005; done; j=$((j + 1)); done
    echo $(($(now_ms) - t0)) >>"$d/start.ms"
    i=$((i + 1))
done
printf "start with %d stored aliases -> all present: " "$reps"; stats <"$d/start.ms"

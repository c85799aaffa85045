#!/usr/bin/env bash
# sudo bench/syscalls.sh [BINARY]: which system calls nginx-ha and the nginx it starts really make,
# against the unit's SystemCallFilter= (@system-service bpf pidfd_getfd). Runs the daemon under
# `strace -f -c` in a network namespace of its own (node A, on a bridge with a peer node B and a
# client, 198.18.78.0/24) with a VRRP router, an alias and an anycast table, and drives status,
# reload, upgrade, upgrade-nginx, alias add/del, an anycast route removal, then two drained
# hand-overs with a slow download open: B (untraced) preempts A, which drains its connection
# through B (old holder: tc programs attached, ARP guard, drain routes, flows sent), and a planned
# stop of B, whose connection A passes through (new holder: the flow map); then A's stop. Prints
# every call seen, and those outside the filter (there should be none). Needs strace, nginx,
# iproute2, curl, systemd-analyze; BINARY defaults to target/release/nginx-ha.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/release/nginx-ha}")
nginx=$(command -v nginx || echo /usr/sbin/nginx)
work=$(mktemp -d /tmp/nha-syscalls.XXXXXX)
chmod 0755 "$work"
ns=nha-$$-sys    # node A, traced
peer=nha-$$-peer # node B
lan=nha-$$-lan   # the bridge and the client
daemon=""      # the subshell of `in_ns strace ... &`: its child is strace, strace's child nginx-ha
peer_daemon="" # B's nginx-ha (`ip netns exec` execs it)
downloads=()
child_of() { awk '{print $1}' "/proc/$1/task/$1/children" 2>/dev/null; }
stop_daemon() { # SIGTERM to nginx-ha; strace writes its summary when it exits
    local tracer child
    tracer=$(child_of "$daemon")
    child=$([ -n "$tracer" ] && child_of "$tracer")
    [ -n "$child" ] && kill -TERM "$child" 2>/dev/null
    for _ in $(seq 1 300); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.1; done
}
stop_peer() { # a planned stop of B: it waits for its drained connection
    kill -TERM "$peer_daemon" 2>/dev/null || true
    for _ in $(seq 1 900); do kill -0 "$peer_daemon" 2>/dev/null || break; sleep 0.1; done
}
cleanup() {
    for pid in "${downloads[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    if [ -n "$peer_daemon" ]; then
        stop_peer
        kill -KILL "$peer_daemon" 2>/dev/null || true
    fi
    if [ -n "$daemon" ]; then
        stop_daemon
        kill -KILL "$daemon" 2>/dev/null || true
    fi
    for n in "$ns" "$peer" "$lan"; do ip netns del "$n" 2>/dev/null || true; done
    [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$lan"
ip -n "$lan" link add br0 type bridge
ip -n "$lan" link set br0 up
ip -n "$lan" addr add 198.18.78.9/24 dev br0
address=1
for n in "$ns" "$peer"; do
    ip netns add "$n"
    ip -n "$n" link set lo up
    ip -n "$lan" link add "v$address" type veth peer name eth0 netns "$n"
    ip -n "$lan" link set "v$address" master br0 up
    ip -n "$n" link set eth0 up
    ip -n "$n" addr add "198.18.78.$address/24" dev eth0
    address=$((address + 1))
done
# The slow download held open across the drained hand-overs: 2 MiB at 256 KiB/s, about 8 s.
slow_size=$((2 * 1024 * 1024))
node_files() { # node_files DIR PRIORITY: nginx's and nginx-ha's config of a node, under DIR
    local d=$1
    mkdir -p "$d/www/slow"
    chmod 0755 "$d" "$d/www" "$d/www/slow"
    head -c "$slow_size" /dev/urandom >"$d/www/slow/file"
    chmod 0644 "$d/www/slow/file"
    cat >"$d/nginx.conf" <<EOF
user www-data;
worker_processes 2;
pid $d/nginx.pid;
error_log $d/error.log;
events { worker_connections 128; }
http {
    access_log $d/access.log;
    client_body_temp_path $d/body;
    proxy_temp_path $d/proxy;
    server {
        listen 80;
        location / { return 200 "ok\n"; }
        location ~ ^/re/ { return 200 "re\n"; }
        location /slow/ { root $d/www; limit_rate 256k; }
    }
}
EOF
    cat >"$d/nginx-ha.toml" <<EOF
[nginx]
binary = "$nginx"
config = "$d/nginx.conf"
[health]
interval_ms = 200
timeout_ms = 150
http = "http://127.0.0.1:80/"
[[vrrp]]
name = "VI_1"
interface = "eth0"
vrid = 78
priority = $2
virtual_ips = ["198.18.78.100/24"]
[[alias]]
address = "198.18.78.$((19 + $2 / 100))/24"
interface = "eth0"
[[anycast]]
name = "web"
addresses = ["198.19.78.1/32"]
[daemon]
control_socket = "$d/control.sock"
state_dir = "$d/state"
EOF
}
node_files "$work" 100
mkdir "$work/b"
node_files "$work/b" 200
in_ns() { ip netns exec "$ns" "$@"; }
cli() { in_ns "$bin" "$@" -c "$work/nginx-ha.toml" >/dev/null; }
download() { # download NAME: the slow file through the VIP from the client, in the background
    ip netns exec "$lan" curl -sS -m 90 -o "$work/dl-$1" -w '%{size_download}' http://198.18.78.100/slow/file \
        >"$work/dl-$1.out" 2>&1 &
    downloads+=($!)
    echo $! >"$work/dl-$1.pid"
}
downloaded() { # downloaded NAME: waits for it; says whether it got every byte
    local rc=0 pid
    pid=$(cat "$work/dl-$1.pid")
    wait "$pid" || rc=$?
    local left=() other
    for other in "${downloads[@]}"; do [ "$other" = "$pid" ] || left+=("$other"); done
    downloads=("${left[@]}")
    echo "bench/syscalls.sh: download across the $1: curl exit $rc, $(cat "$work/dl-$1.out") of $slow_size bytes" >&2
}
wait_for() {
    for _ in $(seq 1 150); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    echo "bench/syscalls.sh: timed out: $*" >&2
    return 1
}

in_ns strace -f -qq -c -o "$work/strace.txt" "$bin" run -c "$work/nginx-ha.toml" >"$work/daemon.log" 2>&1 &
daemon=$!
wait_for in_ns curl -s -m 1 -o /dev/null http://127.0.0.1/
wait_for bash -c "ip -n $ns addr show dev eth0 | grep -q 198.18.78.100/"
cli status
cli reload
cli upgrade
sleep 2
cli upgrade-nginx
cli alias add 198.18.78.40/24 --dev eth0
cli alias del 198.18.78.40/24 --dev eth0
in_ns curl -s -m 1 -o /dev/null http://127.0.0.1/re/x
wait_for bash -c "ip -n $ns route show table 110 | grep -q 198.19.78.1"
ip -n "$ns" route del 198.19.78.1/32 table 110
wait_for bash -c "ip -n $ns route show table 110 | grep -q 198.19.78.1"

# A drained failback: B preempts A while A serves the download; A drains it through B.
download failback
wait_for test -s "$work/dl-failback"
ip netns exec "$peer" "$bin" run -c "$work/b/nginx-ha.toml" >"$work/b/daemon.log" 2>&1 &
peer_daemon=$!
wait_for bash -c "ip -n $peer addr show dev eth0 | grep -q 198.18.78.100/"
downloaded failback
wait_for grep -q "drain over" "$work/daemon.log"
# A drained planned stop of B while B serves a download: A passes it through to B.
download stop
wait_for test -s "$work/dl-stop"
stop_peer
peer_daemon=""
downloaded stop
grep -E "handed over|drain over|passing the old holder|pass-through over|drains are off|without a connection drain" \
    "$work/daemon.log" | sed 's/^/bench\/syscalls.sh: A: /' >&2 || true
stop_daemon
wait "$daemon" || true
daemon=""

# The names strace counted (its last column), without the summary lines.
seen=$(awk 'NF >= 5 && $NF ~ /^[a-z_0-9]+$/ && $NF != "total" && $NF != "syscall" {print $NF}' "$work/strace.txt" | sort -u)
# @system-service expanded (groups name other groups), plus the two calls the unit adds.
expand() {
    systemd-analyze syscall-filter "$1" | awk 'NR > 1 && $1 !~ /^#/ {print $1}' | while read -r name; do
        case "$name" in @*) expand "$name" ;; *) echo "$name" ;; esac
    done
}
allowed=$( (expand @system-service; echo bpf; echo pidfd_getfd) | sort -u)
outside=$(comm -23 <(echo "$seen") <(echo "$allowed"))
echo "system calls made by nginx-ha and nginx ($(echo "$seen" | wc -l)):"
echo "$seen" | tr '\n' ' ' | fold -s -w 100
echo
echo "outside SystemCallFilter=@system-service bpf pidfd_getfd: ${outside:-none}"

#!/usr/bin/env bash
# sudo bench/syscalls.sh [BINARY]: which system calls nginx-ha and the nginx it starts really make,
# against the unit's SystemCallFilter= (@system-service bpf pidfd_getfd). Runs the daemon under
# `strace -f -c` in a network namespace of its own (a veth pair eth0-eth1, 198.18.78.0/24) with a VRRP
# router, an alias and an anycast table, and drives status, reload, upgrade, upgrade-nginx, alias
# add/del, an anycast route removal and a stop. Prints every call seen, and those outside the
# filter (there should be none). Needs strace, nginx, iproute2, systemd-analyze; BINARY defaults
# to target/release/nginx-ha.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/release/nginx-ha}")
nginx=$(command -v nginx || echo /usr/sbin/nginx)
work=$(mktemp -d /tmp/nha-syscalls.XXXXXX)
chmod 0755 "$work"
ns=nha-$$-sys
daemon=""   # `ip netns exec`'s pid: its child is strace, strace's child nginx-ha
child_of() { awk '{print $1}' "/proc/$1/task/$1/children" 2>/dev/null; }
stop_daemon() { # SIGTERM to nginx-ha; strace writes its summary when it exits
    local tracer child
    tracer=$(child_of "$daemon")
    child=$([ -n "$tracer" ] && child_of "$tracer")
    [ -n "$child" ] && kill -TERM "$child" 2>/dev/null
    for _ in $(seq 1 300); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.1; done
}
cleanup() {
    if [ -n "$daemon" ]; then
        stop_daemon
        kill -KILL "$daemon" 2>/dev/null || true
    fi
    ip netns del "$ns" 2>/dev/null || true
    [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add eth0 type veth peer name eth1
ip -n "$ns" link set eth1 up
ip -n "$ns" link set eth0 up
ip -n "$ns" addr add 198.18.78.1/24 dev eth0
cat >"$work/nginx.conf" <<EOF
user www-data;
worker_processes 2;
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 128; }
http {
    access_log $work/access.log;
    client_body_temp_path $work/body;
    proxy_temp_path $work/proxy;
    server { listen 80; location / { return 200 "ok\n"; } location ~ ^/re/ { return 200 "re\n"; } }
}
EOF
cat >"$work/nginx-ha.toml" <<EOF
[nginx]
binary = "$nginx"
config = "$work/nginx.conf"
[health]
interval_ms = 200
timeout_ms = 150
http = "http://127.0.0.1:80/"
[[vrrp]]
name = "VI_1"
interface = "eth0"
vrid = 78
priority = 100
virtual_ips = ["198.18.78.100/24"]
[[alias]]
address = "198.18.78.20/24"
interface = "eth0"
[[anycast]]
name = "web"
addresses = ["198.19.78.1/32"]
[daemon]
control_socket = "$work/control.sock"
state_dir = "$work/state"
EOF
in_ns() { ip netns exec "$ns" "$@"; }
cli() { in_ns "$bin" "$@" -c "$work/nginx-ha.toml" >/dev/null; }
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

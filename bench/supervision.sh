#!/bin/sh
# usage: bench/supervision.sh [NGINX_HA_BINARY] [--reps N] [--only kill,edit,load,idle] [--reloads N]
#                             [--idle-seconds S] [--json FILE]
#   NGINX_HA_BINARY defaults to target/release/nginx-ha (build it with `cargo build --release`).
#   Needs nginx (/usr/sbin/nginx), python3 and, for `load`, wrk. Takes about 2.5 minutes.
#
# Supervision benchmarks of nginx-ha (see BENCHMARKS.md): kill -9 nginx -> serving again,
# config edit -> new config serving, reloads under wrk load, idle RSS/CPU/wakeups.
# Runs in a fresh temp dir on 127.0.0.1 with its own free ports and control sockets; every
# process it starts is stopped by pid when it ends (also on Ctrl-C), and the temp dir removed.
set -eu

here=$(cd "$(dirname "$0")" && pwd)

workdir=$(mktemp -d "${TMPDIR:-/tmp}/nginx-ha-bench-XXXXXX")

# Safety net behind supervision.py's own cleanup: it writes "KIND PID" lines to $workdir/pids
# for every daemon, nginx and wrk process it starts or sees; whatever of those is still alive
# (and still is that program, started for this run) is killed by pid.
cleanup() {
    if [ -f "$workdir/pids" ]; then
        while read -r kind pid; do
            [ -d "/proc/$pid" ] || continue
            cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
            case "$kind" in
                daemon) case "$cmd" in *"$workdir"*) kill -KILL "$pid" 2>/dev/null || true ;; esac ;;
                wrk) case "$cmd" in wrk*) kill -KILL "$pid" 2>/dev/null || true ;; esac ;;
                nginx)
                    parent=$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null || echo 0)
                    pcmd=$(tr '\0' ' ' <"/proc/$parent/cmdline" 2>/dev/null || true)
                    case "$cmd$pcmd" in nginx*"$workdir"*) kill -KILL "$pid" 2>/dev/null || true ;; esac ;;
            esac
        done <"$workdir/pids"
    fi
    rm -rf "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

python3 "$here/supervision.py" --workdir "$workdir" "$@"

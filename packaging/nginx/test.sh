#!/usr/bin/env bash
# packaging/nginx/test.sh [TARBALL]: builds nginx with packaging/nginx/build.sh (staged under
# target/nginx-stage/, nothing installed), then runs it under `nginx-ha run` on loopback with a
# small config and checks that it serves (a page and stub_status), that `nginx-ha status --json`
# says running and healthy, and that stopping nginx-ha stops it.
#
# Skips (exit 0, "skip ..." on stdout) when no TARBALL is given and Debian's nginx source cannot
# be downloaded. NGINX_HA: the nginx-ha binary to use (default: NGINX_HA_BINARY, as for
# packaging/build.sh, else `cargo build --locked`'s).
# Ends with `packaging/nginx: N passed, N failed`; exits 1 on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }
has() {
    if grep -qE -- "$2" <<<"$3"; then
        ok "$1"
    else
        bad "$1"
        sed 's/^/     /' <<<"$3"
    fi
}

target_dir=$(cargo metadata --no-deps --format-version 1 | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
stage=$target_dir/nginx-stage
rm -rf "$stage"
rc=0
nginx=$(DESTDIR=$stage packaging/nginx/build.sh "$@" | tail -n 1) || rc=$?
if [ "$rc" = 3 ]; then
    echo "skip packaging/nginx: no nginx source tarball (none given, and apt-get source nginx failed)"
    exit 0
fi
[ "$rc" = 0 ] && [ -x "$nginx" ] || { echo "FAIL packaging/nginx/build.sh (exit $rc)"; exit 1; }
echo "nginx: $nginx"

NGINX_HA=${NGINX_HA:-${NGINX_HA_BINARY:-}}
if [ -z "$NGINX_HA" ]; then
    cargo build --locked >&2
    NGINX_HA=$target_dir/debug/nginx-ha
fi

work=$(mktemp -d)
chmod 755 "$work" # nginx workers run as www-data when started by root
daemon_pid=""
cleanup() {
    if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

version=$("$nginx" -v 2>&1)
has "nginx -v" '^nginx version: nginx/' "$version"
features=$("$nginx" -V 2>&1)
for m in http_stub_status_module http_ssl_module; do
    has "nginx -V has --with-$m" "(^| )--with-$m( |$)" "$features"
done

port=$((20000 + RANDOM % 20000))
mkdir -p "$work/site"
echo "served by the nginx built from source" >"$work/site/index.html"
# Absolute paths everywhere: the binary's compiled-in prefix (/usr/lib/nginx-ha/nginx) is not
# installed here. The error log goes to stderr by default (the build's --error-log-path).
cat >"$work/nginx.conf" <<EOF
worker_processes 2;
pid $work/nginx.pid;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $work/body;
    proxy_temp_path $work/proxy;
    fastcgi_temp_path $work/fastcgi;
    uwsgi_temp_path $work/uwsgi;
    scgi_temp_path $work/scgi;
    server {
        listen 127.0.0.1:$port;
        root $work/site;
        location = /status { stub_status; }
    }
}
EOF
cat >"$work/nginx-ha.toml" <<EOF
[nginx]
binary = "$nginx"
config = "$work/nginx.conf"
stop_timeout_ms = 3000
[health]
interval_ms = 200
timeout_ms = 150
http = "http://127.0.0.1:$port/"
[daemon]
control_socket = "$work/control.sock"
state_dir = "$work/state"
EOF

http_get() { # PATH: nginx's answer on 127.0.0.1:$port (empty if none)
    timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/$0 && printf "GET $1 HTTP/1.0\r\n\r\n" >&3 && cat <&3' "$port" "$1" 2>/dev/null || true
}
status() { "$NGINX_HA" status --json -c "$work/nginx-ha.toml" 2>/dev/null || true; }
healthy() { local s; s=$(status); grep -q '"state": *"running"' <<<"$s" && grep -q '"healthy": *true' <<<"$s"; }
wait_for() { # WHAT COMMAND...: polls COMMAND for up to 30 s
    local what=$1
    shift
    for _ in $(seq 300); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "     timed out waiting for $what"
    return 1
}
serving() { grep -q 'served by the nginx built from source' <<<"$(http_get /)"; }

out=$("$NGINX_HA" check -c "$work/nginx-ha.toml" 2>&1) && ok "nginx-ha check (nginx -t with the built nginx)" ||
    { bad "nginx-ha check"; sed 's/^/     /' <<<"$out"; }
"$NGINX_HA" run -c "$work/nginx-ha.toml" >"$work/daemon.log" 2>&1 </dev/null &
daemon_pid=$!
if wait_for "an HTTP answer" serving; then ok "nginx-ha runs the built nginx: HTTP answer"; else bad "HTTP answer"; fi
has "stub_status answers" '^Active connections: [0-9]+' "$(http_get /status)"
if wait_for "status running and healthy" healthy; then
    ok "nginx-ha status --json: running, healthy"
else
    bad "nginx-ha status --json: running, healthy"
    sed 's/^/     /' <<<"$(status)"
fi
has "the supervised master is the built binary" "^$nginx\$" "$(readlink "/proc/$(sed -n 's/.*"master_pid": *\([0-9]*\).*/\1/p' <<<"$(status)")/exe" 2>/dev/null || true)"
kill -TERM "$daemon_pid"
wait "$daemon_pid" && rc=0 || rc=$?
daemon_pid=""
has "nginx-ha stops cleanly (exit 0)" '^0$' "$rc"
if [ -z "$(http_get /)" ]; then ok "nginx stopped with it"; else bad "nginx stopped with it"; fi
[ "$failed" = 0 ] || sed 's/^/     log: /' "$work/daemon.log"

echo
echo "packaging/nginx: $passed passed, $failed failed"
[ "$failed" = 0 ]

#!/usr/bin/env bash
# sudo packaging/sandbox-test.sh [DEB]: boots the packaged nginx-ha.service, with its own sandbox,
# under a real systemd and runs the two-node scenarios against it: failover and failback, reload
# (ExecReload, inside the sandbox), `upgrade`, `upgrade-nginx`, alias add/del and anycast route
# repair, and the connection drain: a failback and a planned stop each with a slow download open on
# the VIP, which must complete (every byte, the old holder's) while the old holder's tc BPF program
# (bpf(), CAP_BPF) and the new holder's pass-through run under the sandbox; the journals and
# `status --json` must show the drain, and no EPERM from bpf(). Prints one "ok"/"FAIL" line per
# check and "N passed, M failed"; exits 1 on a failure.
#
# How: two systemd-nspawn containers booted (`--boot`, systemd 252 as their PID 1) from the host's
# own root file system through an overlay (a tmpfs upper layer: nothing is written to the host),
# each in a network namespace of its own (nha-<PID>-a, -b) on a bridge in a third (nha-<PID>-lan,
# which also is the client). The .deb (DEB, else built by packaging/build.sh) is installed in both
# with dpkg. Each container boots only nha-proof.target (basic.target + nginx-ha.service), so the
# host's other enabled services stay down. The unit runs exactly as packaged, with one drop-in:
# `SystemCallErrorNumber=` (reset), so a system call outside SystemCallFilter= kills the caller
# with SIGSYS instead of failing with EPERM, and the check at the end sees it. The containers
# themselves get every capability and nspawn's own seccomp filter widened by pidfd_getfd and bpf
# (nspawn keeps CAP_NET_ADMIN only with a network of its own making, and its filter lacks
# pidfd_getfd): what confines nginx-ha here is the unit alone, as on a host.
#
# Needs root, systemd-nspawn (Debian systemd-container: installed with apt-get if missing), nginx,
# iproute2, curl. Addresses from 198.18.0.0/15 only. Takes 40 s to 1.5 minutes after the build (2 shared
# cores, depending on their load; about half of it is the two boots); the release build and packaging before it 2-6 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "sandbox-test: $*" >&2; }
[ "$(id -u)" = 0 ] || { say "needs root"; exit 2; }
if ! command -v systemd-nspawn >/dev/null; then
    say "installing systemd-container"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 \
        systemd-container >/dev/null
fi

deb=${1:-}
if [ -z "$deb" ]; then
    deb=$(packaging/build.sh | grep '/nginx-ha_.*\.deb$' | head -1)
fi
deb=$(realpath "$deb")

work=$(mktemp -d /tmp/nha-sandbox.XXXXXX)
ns=nha-$$
lan=$ns-lan
pids=()
passed=0
failed=0
cleanup() {
    # Downloads still running (a check failed before their end); a finished one's file is gone.
    for f in "$work"/dl-*.pid; do
        [ -e "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    for n in a b lan; do ip netns del "$ns-$n" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

check() { # check NAME COMMAND...: one line per check
    local name=$1 start=$SECONDS
    shift
    echo "== $name" >>"$work/checks.log"
    if "$@" >>"$work/checks.log" 2>&1; then
        echo "ok   $name ($((SECONDS - start)) s)"
        passed=$((passed + 1))
    else
        echo "FAIL $name ($((SECONDS - start)) s, see below)"
        failed=$((failed + 1))
        FAILED_NAMES+=("$name")
    fi
}
FAILED_NAMES=()

wait_for() { # wait_for SECONDS COMMAND...
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.2
    done
}

# ---- the lab ------------------------------------------------------------------------------------
ip netns add "$lan"
ip -n "$lan" link add br0 type bridge
ip -n "$lan" link set br0 up
ip -n "$lan" addr add 198.18.77.9/24 dev br0
for n in a b; do
    ip netns add "$ns-$n"
    ip -n "$lan" link add "v$n" type veth peer name eth0 netns "$ns-$n"
    ip -n "$lan" link set "v$n" master br0 up
    ip -n "$ns-$n" link set lo up
    ip -n "$ns-$n" link set eth0 up
done
ip -n "$ns-a" addr add 198.18.77.1/24 dev eth0
ip -n "$ns-b" addr add 198.18.77.2/24 dev eth0

# ---- each node's files, copied over the container's root after the .deb -----------------------
slow_size=$((3 * 1024 * 1024))
node_files() { # node_files NAME PRIORITY
    local name=$1 priority=$2 f=$work/$1/files
    mkdir -p "$f/etc/nginx-ha" "$f/etc/nginx" "$f/var/www/html" "$f/etc/systemd/system/nginx-ha.service.d"
    cat >"$f/etc/nginx/nginx.conf" <<EOF
user www-data;
worker_processes 2;
pid /run/nginx.pid;
# info: nginx logs a failed PCRE JIT compile at that level.
error_log /var/log/nginx/error.log info;
# Measures MemoryDenyWriteExecute=yes against PCRE2's JIT (the location below is a regex).
pcre_jit on;
events { worker_connections 256; }
http {
    access_log /var/log/nginx/access.log;
    server {
        listen 80;
        root /var/www/html;
        location ~ ^/re/ { return 200 "regex-$name\n"; }
        # The long download held open across the drained hand-overs (about 12 s).
        location /slow/ { limit_rate 256k; }
    }
}
EOF
    echo "node-$name" >"$f/var/www/html/index.html"
    # Each node's own bytes: a download that completes with them was served by that node to its end.
    mkdir -p "$f/var/www/html/slow"
    head -c "$slow_size" /dev/urandom >"$f/var/www/html/slow/file"
    cat >"$f/etc/nginx-ha/nginx-ha.toml" <<EOF
[nginx]
config = "/etc/nginx/nginx.conf"

[health]
interval_ms = 200
timeout_ms = 150
http = "http://127.0.0.1:80/"

[[vrrp]]
name = "VI_1"
interface = "eth0"
vrid = 77
priority = $priority
advert_interval_ms = 1000
virtual_ips = ["198.18.77.100/24"]

[[alias]]
address = "198.18.77.$((20 + priority / 10))/24"
interface = "eth0"

[[anycast]]
name = "web"
addresses = ["198.19.77.1/32"]

[daemon]
status_group = "adm"
EOF
    chmod 0640 "$f/etc/nginx-ha/nginx-ha.toml"
    cat >"$f/etc/systemd/system/nha-proof.target" <<'EOF'
[Unit]
Description=sandbox-test: basic system and nginx-ha only
Requires=basic.target
Wants=nginx-ha.service
After=basic.target
AllowIsolate=yes
EOF
    # The only change to the packaged unit: a call outside the filter kills (SIGSYS) instead of EPERM.
    printf '[Service]\nSystemCallErrorNumber=\n' >"$f/etc/systemd/system/nginx-ha.service.d/sandbox-test.conf"
}

boot() { # boot NAME: overlay root, dpkg -i, the node's files, then systemd as PID 1
    local name=$1 d=$work/$1
    mkdir -p "$d/t" "$d/root"
    cat >"$d/boot.sh" <<EOF
set -eu
mount --make-rprivate /
mount -t tmpfs tmpfs "$d/t"
mkdir "$d/t/upper" "$d/t/work"
mount -t overlay overlay -o lowerdir=/,upperdir="$d/t/upper",workdir="$d/t/work" "$d/root"
nspawn() { systemd-nspawn -D "$d/root" --register=no --keep-unit --link-journal=no --quiet "\$@"; }
nspawn --bind-ro="$deb:/tmp/nginx-ha.deb" dpkg -i /tmp/nginx-ha.deb >"$d/dpkg.log" 2>&1
cp -a "$d/files/." "$d/root/"
exec systemd-nspawn -D "$d/root" --register=no --keep-unit --link-journal=no --quiet \
    --machine="nha-sandbox-$name" --network-namespace-path=/run/netns/$ns-$name \
    --capability=all --system-call-filter="pidfd_getfd bpf" --boot \
    systemd.unit=nha-proof.target
EOF
    unshare -m bash "$d/boot.sh" >"$d/console.log" 2>&1 &
    pids+=($!)
    echo $! >"$d/nspawn.pid"
}

# The container's PID 1: a descendant of its nspawn whose pid in its own namespace is 1.
leader() {
    local top
    top=$(cat "$work/$1/nspawn.pid")
    for status in /proc/[0-9]*/status; do
        local pid=${status#/proc/}
        pid=${pid%/status}
        grep -qE '^NSpid:\s+[0-9]+\s+1$' "$status" 2>/dev/null || continue
        local p=$pid
        while [ "$p" -gt 1 ]; do
            [ "$p" = "$top" ] && { echo "$pid"; return 0; }
            p=$(awk '/^PPid:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 1)
        done
    done
    return 1
}
on() { # on NAME COMMAND...: runs COMMAND inside the container
    local name=$1
    shift
    nsenter -t "$(leader "$name")" -a env PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"
}
active() { [ "$(on "$1" systemctl is-active nginx-ha.service)" = active ]; }
main_pid() { on "$1" systemctl show -P MainPID nginx-ha.service; }
vip_on() { ip -n "$ns-$1" -4 addr show dev eth0 | grep -q '198\.18\.77\.100/'; }
serves() { [ "$(ip netns exec "$lan" curl -s -m 2 http://198.18.77.100/)" = "node-$1" ]; }
nginx_master() { on "$1" nginx-ha status --json | sed -n 's/.*"master_pid": *\([0-9]*\).*/\1/p' | head -1; }

node_files a 100
node_files b 90
boot a
boot b
say "booting two containers from $deb"
wait_for 90 leader a && wait_for 90 leader b || { say "a container did not boot"; tail -20 "$work"/*/console.log; exit 1; }
wait_for 90 active a
wait_for 90 active b

# ---- the sandbox is on ----------------------------------------------------------------------------
# CAP_CHOWN 0, CAP_DAC_OVERRIDE 1, CAP_KILL 5, CAP_SETGID 6, CAP_SETUID 7, CAP_NET_BIND_SERVICE 10,
# CAP_NET_ADMIN 12, CAP_NET_RAW 13, CAP_SYS_NICE 23, CAP_BPF 39: the unit's CapabilityBoundingSet=.
expected_caps=$(printf '%016x' $(((1 << 0) | (1 << 1) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 10) | (1 << 12) | (1 << 13) | (1 << 23) | (1 << 39))))
equals() { [ "$1" = "$2" ]; }
differs() { [ -n "$1" ] && [ "$1" != "$2" ]; }
has_address() { ip -n "$ns-$1" addr show dev "$2" | grep -q "$3/"; }
lacks_address() { ! has_address "$@"; }
sandboxed() { # sandboxed NAME PID: the capability bounding set, no_new_privs and seccomp of PID
    local status
    status=$(on "$1" cat "/proc/$2/status")
    echo "$status" | grep -qE "^CapBnd:\s+$expected_caps$" &&
        echo "$status" | grep -qE '^NoNewPrivs:\s+1$' &&
        echo "$status" | grep -qE '^Seccomp:\s+2$'
}
# Writes as root in the unit's mount namespace: refused outside ReadWritePaths=, allowed inside.
writable() { on "$1" nsenter -t "$(main_pid "$1")" -m sh -c "touch '$2/.nha-sandbox-probe' && rm '$2/.nha-sandbox-probe'"; }
read_only() { ! writable "$@"; }
errno_kill() {
    local errno
    errno=$(on a systemctl show -P SystemCallErrorNumber nginx-ha.service)
    echo "SystemCallErrorNumber: '$errno'"
    [ "$errno" != 1 ] && [ "$errno" != EPERM ]
}
check "the packaged unit is the one running" on a systemctl show -P FragmentPath nginx-ha.service
check "nginx-ha.service active on both nodes" active b
check "nginx-ha: capability bounding set, NoNewPrivileges, seccomp" sandboxed a "$(main_pid a)"
wait_for 30 nginx_master a
check "nginx master: same sandbox" sandboxed a "$(nginx_master a)"
system_read_only() { read_only a /usr && read_only a /etc && read_only a /var/www; }
check "ProtectSystem=strict: /usr, /etc, /var/www read-only in the unit" system_read_only
for path in /run /var/log/nginx /var/lib/nginx /var/lib/nginx-ha /run/nginx-ha; do
    check "  $path writable" writable a "$path"
done
check "ProtectHome=yes: /root is not there" read_only a /root
check "the test's drop-in: a call outside the filter kills (no EPERM)" errno_kill
exposure=$(on a systemd-analyze security nginx-ha.service | tail -1)
say "live: $exposure"

# ---- the connection drain: a download held open across a hand-over -----------------------------------
download() { # download NAME: the slow file through the VIP, in the background (its outcome: downloaded)
    ip netns exec "$lan" curl -sS -m 90 -o "$work/dl-$1.bin" -w '%{size_download} %{http_code}\n' \
        http://198.18.77.100/slow/file >"$work/dl-$1.out" 2>"$work/dl-$1.err" &
    echo $! >"$work/dl-$1.pid"
}
under_way() { [ -s "$work/dl-$1.bin" ] && kill -0 "$(cat "$work/dl-$1.pid")"; }
still_open() { # still_open NAME: the download is neither finished nor failed yet
    echo "$(stat -c %s "$work/dl-$1.bin") of $slow_size bytes so far"
    kill -0 "$(cat "$work/dl-$1.pid")"
}
downloaded() { # downloaded NAME NODE: curl succeeded, every byte, NODE's own bytes (no reset, no other node)
    local rc=0
    wait "$(cat "$work/dl-$1.pid")" || rc=$?
    rm "$work/dl-$1.pid"
    echo "curl exit $rc: $(cat "$work/dl-$1.out") $(cat "$work/dl-$1.err")"
    [ "$rc" = 0 ] && [ "$(cat "$work/dl-$1.out")" = "$slow_size 200" ] &&
        cmp "$work/dl-$1.bin" "$work/$2/files/var/www/html/slow/file"
}
drain_status() { # drain_status NODE ROLE: status --json shows a drain in ROLE with a connection, drains on
    on "$1" nginx-ha status --json | python3 -c '
import json, sys
drain = json.load(sys.stdin).get("drain")
print(json.dumps(drain))
assert drain is not None and not drain.get("unavailable"), "drains off"
assert any(d["role"] == sys.argv[1] and d["connections"] >= 1 for d in drain["drains"]), "no such drain"
' "$2"
}
journal() { on "$1" journalctl -q --no-pager -o json -u nginx-ha.service; }
logged() { # logged NODE TEXT [JSON-REGEX]: a line of the daemon's journal has TEXT (and matches JSON-REGEX)
    local lines
    lines=$(journal "$1" | grep -F -- "$2") || return 1
    echo "$lines" | python3 -c 'import json, sys; [print(json.loads(l).get("MESSAGE"), {k: v for k, v in json.loads(l).items() if not k.startswith("_") and k.isupper() and "FLOWS" in k}) for l in sys.stdin]'
    [ -z "${3:-}" ] || echo "$lines" | grep -qE -- "$3"
}
handed_over="VIPs handed over: draining their connections through the new holder"
passing="passing the old holder's connections through to it"
# One connection at least in the drain (the journal field FLOWS, prefixed by the journald layer).
one_flow='FLOWS":"[1-9]'

# ---- failover; failback with a connection open (b drains it through a) --------------------------------
check "node a is MASTER and serves the VIP" wait_for 60 serves a
check "node b is BACKUP (no VIP)" lacks_address b eth0 198.18.77.100
on a systemctl stop nginx-ha.service
check "a stopped: b takes the VIP and serves" wait_for 30 serves b
download failback
check "a download from b is under way" wait_for 10 under_way failback
on a systemctl start nginx-ha.service
check "a back: it preempts and serves again" wait_for 60 serves a
check "  the download from b is still open after the failback" still_open failback
check "  b (old holder): status --json shows the drain" wait_for 10 drain_status b "old holder"
check "  a (new holder): status --json shows the pass-through" wait_for 10 drain_status a "new holder"
check "  the download completes: every byte, b's, no reset" downloaded failback b
check "  b's log: the VIPs handed over with a drain" logged b "$handed_over" "$one_flow"
check "  b's log: the drain is over" wait_for 20 logged b "drain over: no connection to the VIPs is left"
check "  a's log: passing b's connection through" logged a "$passing" "$one_flow"
check "  b: no drain route left" equals "$(ip -n "$ns-b" route show table local proto 100)" ""

# ---- reload, upgrade, upgrade-nginx -------------------------------------------------------------------
check "systemctl reload (ExecReload in the sandbox)" on a systemctl reload nginx-ha.service
pid_before=$(main_pid a)
check "nginx-ha upgrade (re-exec under NoNewPrivileges and the filter)" on a nginx-ha upgrade
check "  same pid, still active" equals "$(main_pid a)" "$pid_before"
master_before=$(nginx_master a)
check "nginx-ha upgrade-nginx (pidfd_getfd without CAP_SYS_PTRACE)" on a nginx-ha upgrade-nginx
check "  a new nginx master serves" differs "$(nginx_master a)" "$master_before"
check "  still serving the VIP" wait_for 20 serves a

# ---- aliases, anycast ---------------------------------------------------------------------------------
check "[[alias]] from the config is present" wait_for 20 has_address a eth0 198.18.77.30
check "alias add" on a nginx-ha alias add 198.18.77.40/24 --dev eth0
check "  present" wait_for 20 has_address a eth0 198.18.77.40
check "  the store is 0600" equals "$(on a stat -c %a /var/lib/nginx-ha/aliases.json)" 600
check "alias del" on a nginx-ha alias del 198.18.77.40/24 --dev eth0
check "  gone" wait_for 20 lacks_address a eth0 198.18.77.40
check "the VRRP state record is 0600" equals "$(on a stat -c %a /var/lib/nginx-ha/vrrp-state.json)" 600
route() { ip -n "$ns-a" route show table 110 | grep -q '198\.19\.77\.1'; }
check "anycast: the route in table 110" wait_for 30 route
ip -n "$ns-a" route del 198.19.77.1/32 table 110 2>/dev/null || true
check "anycast: a deleted route is put back" wait_for 30 route
check "anycast: the address on lo" wait_for 20 has_address a lo 198.19.77.1

# ---- the control socket from a non-root user, in the sandbox -------------------------------------------
check "the control socket is 0660 root:adm (status_group)" equals "$(on a stat -c %a:%U:%G /run/nginx-ha/control.sock)" 660:root:adm
check "status as a member of status_group (adm)" on a setpriv --reuid=nobody --regid=adm --clear-groups nginx-ha status
member_reload() { on a setpriv --reuid=nobody --regid=adm --clear-groups nginx-ha reload 2>&1; }
check "reload as that member is refused, saying why" bash -c 'grep -q "needs root" <<<"$0"' "$(member_reload || true)"

check "a regex location answers (PCRE)" equals "$(ip netns exec "$lan" curl -s -m 2 http://198.18.77.100/re/x)" regex-a

# ---- a planned stop with a connection open (a drains it through b, nginx finishes it) -----------------
inactive() { ! active "$1"; }
download stop
check "a download from a is under way" wait_for 10 under_way stop
on a systemctl stop --no-block nginx-ha.service
check "planned stop of a: b takes the VIP and serves" wait_for 30 serves b
check "  the download from a is still open after the hand-over" still_open stop
check "  b (new holder): status --json shows the pass-through" wait_for 10 drain_status b "new holder"
check "  the download completes: every byte, a's, no reset" downloaded stop a
check "  a stops once its connection is done" wait_for 60 inactive a
check "  a's log: the VIPs handed over with a drain" logged a "$handed_over" "$one_flow"
check "  a's log: the drain is over" logged a "drain over"
check "  b's log: passing a's connection through" logged b "$passing" "$one_flow"
check "  a: no drain route left" equals "$(ip -n "$ns-a" route show table local proto 100)" ""

# ---- the drain ran in the sandbox: no EPERM on bpf(); nothing killed by the filter ------------------------
drains_on() { # the BPF program loaded: no "drains are off" and no EPERM from bpf() in the journal
    ! journal "$1" | grep -E 'connection drains are off|drain.*(Operation not permitted|EPERM|os error 1\b)|without a connection drain'
}
check "drains on (no EPERM from bpf()) on node a" drains_on a
check "drains on on node b" drains_on b
# ---- nothing was killed by the filter; PCRE JIT under MemoryDenyWriteExecute -----------------------------
no_sigsys() {
    ! on "$1" journalctl -q --no-pager -u nginx-ha.service | grep -E 'status=31/SYS|signal 31|code=killed' &&
        ! on "$1" grep -E 'signal 31|exited on signal' /var/log/nginx/error.log
}
check "no SIGSYS (a call outside the filter) on node a" no_sigsys a
check "no SIGSYS on node b" no_sigsys b
jit=$(on a grep -c 'pcre2_jit_compile\|JIT' /var/log/nginx/error.log || true)
say "pcre_jit on under MemoryDenyWriteExecute=yes: ${jit:-0} JIT message(s) in nginx's error.log"
on a grep -i 'jit' /var/log/nginx/error.log | head -3 >&2 || true

if [ "$failed" != 0 ]; then
    say "failed: ${FAILED_NAMES[*]}"
    tail -60 "$work/checks.log" >&2
    ip -n "$ns-a" addr >&2
    ip -n "$ns-a" route show table all | grep -v "^local\|^broadcast\|^multicast" >&2
    for n in a b; do
        say "node $n journal:"
        on "$n" journalctl -q --no-pager -u nginx-ha.service | tail -40 >&2 || true
    done
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]

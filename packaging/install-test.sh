#!/usr/bin/env bash
# packaging/install-test.sh: the packages proven by installing them (CI runs it; root, Debian).
#
# Builds the packages twice with packaging/build.sh: release 1, and release 2 whose default
# config differs (as an upgrade that changes the conffile would). Then:
#   deb: `apt-get install ./nginx-ha_*-1_*.deb` for real (a policy-rc.d forbids service starts),
#        `nginx-ha check` on the installed config, the conffile edited into a loopback-only
#        config and the installed daemon started on it, the file trigger fired by reinstalling
#        the package that owns /usr/sbin/nginx, the upgrade to release 2 (edit kept), remove
#        (unit masked) and purge; everything under /etc, /lib/systemd, /usr/lib/systemd and
#        /var/lib is compared with a snapshot taken before the install.
#   rpm: installed into a throwaway root (`rpm --root DIR --dbpath /rpmdb --nodeps`) that holds
#        just a shell and the libraries the scriptlets and nginx-ha need: files and modes,
#        `rpm -V`, the %triggerin on a stand-in `nginx` package, the upgrade to release 2 with
#        an edited config (%config(noreplace): kept, the new default as .rpmnew) and erase; the
#        root is compared with a snapshot taken before the install.
# Ends with `packaging: N passed, N failed`; exits 1 on any failure, 2 if it cannot run here.
# What it installs on this machine it purges again; the daemon it starts it stops by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "packaging/install-test.sh: needs root on Debian (it installs the .deb for real)" >&2
    exit 2
fi
export DEBIAN_FRONTEND=noninteractive

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }
check() {
    local what=$1
    shift
    if "$@"; then ok "$what"; else bad "$what"; fi
}
has() {
    if grep -qE -- "$2" <<<"$3"; then
        ok "$1"
    else
        bad "$1"
        sed 's/^/     /' <<<"$3"
    fi
}
same() {
    if [ "$2" == "$3" ]; then
        ok "$1"
    else
        bad "$1"
        diff <(printf '%s\n' "$2") <(printf '%s\n' "$3") | sed 's/^/     /' || true
    fi
}
quiet() { "$@" >/dev/null 2>&1; }
say() { echo "packaging/install-test.sh: $*" >&2; }

work=$(mktemp -d)
chmod 755 "$work" # nginx workers run as www-data when started by root
daemon_pid=""
added_pkgs=""
nginx_pid_file_new=""
nginx_temp_before=unset
policy=/usr/sbin/policy-rc.d
created_policy=""
cleanup() {
    if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
    fi
    # Never leave the package behind, whatever failed.
    if dpkg-query -W -f '${Status}' nginx-ha 2>/dev/null | grep -qv 'not-installed'; then
        apt-get purge -y -qq nginx-ha >/dev/null 2>&1 || dpkg --purge nginx-ha >/dev/null 2>&1 || true
    fi
    # What nginx -t left (see nginx_pid_file_new), unless nginx is running or it holds something.
    if [ -n "$nginx_pid_file_new" ] && [ -f /run/nginx.pid ] && [ ! -s /run/nginx.pid ]; then rm -f /run/nginx.pid; fi
    if [ "$nginx_temp_before" != unset ] && [ -d /var/lib/nginx ]; then
        for d in /var/lib/nginx/*; do
            [ -d "$d" ] && ! grep -qxF "${d##*/}" <<<"$nginx_temp_before" && rmdir "$d" 2>/dev/null || true
        done
    fi
    # The nginx this test installed, and what came with it.
    if [ -n "$added_pkgs" ]; then
        # shellcheck disable=SC2086 # one package a word
        apt-get purge -y -qq -o DPkg::Lock::Timeout=600 $added_pkgs >/dev/null 2>&1 ||
            say "could not purge what the test installed: $(echo $added_pkgs)"
    fi
    [ -z "$created_policy" ] || rm -f "$policy"
    rm -rf "$work"
}
trap cleanup EXIT

# Installing (and reinstalling nginx) must not start services.
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
fi
apt_get() { apt-get -y -q -o DPkg::Lock::Timeout=600 "$@"; }

# ---- the packages ------------------------------------------------------------------------------
command -v rpm >/dev/null || { apt-get install -y -qq --no-install-recommends rpm >/dev/null ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends rpm >/dev/null; }; }
# Release 2's default config: the packaged one with a changed line.
sed 's/^# \(metrics_listen = .*\)/# \1\n# (changed in release 2)/' conf/nginx-ha.toml >"$work/changed.toml"
cmp -s conf/nginx-ha.toml "$work/changed.toml" && { say "could not derive a changed config"; exit 1; }
mkdir -p "$work/v1" "$work/v2"
# One release binary for both (NGINX_HA_BINARY, as for build.sh, or cargo's release build).
target_dir=$(cargo metadata --no-deps --format-version 1 | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
binary=${NGINX_HA_BINARY:-}
if [ -z "$binary" ]; then
    cargo build --release --locked >&2
    binary=$target_dir/release/nginx-ha
fi
packages=$(NGINX_HA_BINARY=$binary packaging/build.sh)
cp $packages "$work/v1/"
packages=$(NGINX_HA_BINARY=$binary PKG_RELEASE=2 NGINX_HA_CONFIG=$work/changed.toml packaging/build.sh)
cp $packages "$work/v2/"
deb1=$(ls "$work"/v1/nginx-ha_*.deb)
deb2=$(ls "$work"/v2/nginx-ha_*.deb)
rpm1=$(ls "$work"/v1/nginx-ha-*.rpm)
rpm2=$(ls "$work"/v2/nginx-ha-*.rpm)
version=$(dpkg-deb --field "$deb1" Version)
version=${version%-1}

# snapshot ROOT: every entry under the trees a package may touch, with type, mode and owner, and
# the content of regular files under /etc and the systemd and dpkg-trigger state.
snapshot() {
    local r=${1:-}
    (cd "${r:-/}" && find etc lib/systemd usr/lib/systemd var/lib \
        \( -path var/lib/apt -o -path var/lib/rpmdb -o -path 'var/lib/dpkg/*-old' \
        -o -path var/lib/dpkg/lock -o -path var/lib/dpkg/lock-frontend -o -path var/lib/dpkg/triggers/Lock \
        -o -path var/lib/dpkg/status -o -path var/lib/dpkg/available -o -path 'var/lib/nginx/*' \) -prune \
        -o -printf '%y %m %u:%g /%p\n' 2>/dev/null | sort -k4) || true
    (cd "${r:-/}" && find etc lib/systemd usr/lib/systemd var/lib/systemd var/lib/dpkg/triggers \
        -type f -exec sha256sum {} + 2>/dev/null | sort -k2) || true
}

http_get() { # PORT: the answer of nginx on 127.0.0.1:PORT (empty if none)
    timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/$0 && printf "GET / HTTP/1.0\r\n\r\n" >&3 && cat <&3' "$1" 2>/dev/null || true
}
status_json() { /usr/sbin/nginx-ha status --json 2>/dev/null || true; }
# wait_for WHAT COMMAND...: polls COMMAND for up to 30 s.
wait_for() {
    local what=$1
    shift
    for _ in $(seq 300); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    say "timed out waiting for $what"
    return 1
}
serving() { grep -q 'nginx-ha install test' <<<"$(http_get "$port")"; }
healthy() { grep -q '"state": *"running"' <<<"$(status_json)" && grep -q '"healthy": *true' <<<"$(status_json)"; }
master_pid() { sed -n 's/.*"master_pid": *\([0-9]*\).*/\1/p' <<<"$(status_json)"; }
has_subcommand() { /usr/sbin/nginx-ha "$1" --help >/dev/null 2>&1; }

echo "== deb: install"
if dpkg-query -W -f '${Status}' nginx-ha nginx-ha-bundled 2>/dev/null | grep -q 'ok installed'; then
    say "nginx-ha is installed on this machine already; not touching it"
    exit 2
fi
# The deb depends on a distro nginx. CI has nginx-light installed already; where there is none,
# nginx-light is installed here and purged again at the end (exactly the packages this install
# added), so the machine is left as it was.
nginx_pkg=$(dpkg-query -S /usr/sbin/nginx 2>/dev/null | cut -d: -f1 | head -n 1 || true)
if [ -z "$nginx_pkg" ]; then
    # What apt is going to install, from a simulation: not a before/after diff of the installed
    # packages, which would count what something else installs meanwhile on a shared machine.
    added_pkgs=$(apt-get install -s --no-install-recommends nginx-light | sed -n 's/^Inst \([^ ]*\) .*/\1/p')
    say "installing nginx-light (the deb's nginx dependency): $(echo $added_pkgs); purged again at the end"
    apt_get install --no-install-recommends nginx-light >/dev/null
    # The binary is in `nginx` (Debian 12; nginx-light only depends on it) or in nginx-light.
    nginx_pkg=$(dpkg-query -S /usr/sbin/nginx 2>/dev/null | cut -d: -f1 | head -n 1 || true)
    [ -n "$nginx_pkg" ] || { say "nginx-light installed no /usr/sbin/nginx"; exit 1; }
fi
# What `nginx -t` of the distro config leaves (the check below runs it): an empty /run/nginx.pid
# and nginx's temp directories in /var/lib/nginx. Removed again at the end when they were not
# there before (and are still empty); the snapshot leaves /var/lib/nginx/* out for that reason.
[ -e /run/nginx.pid ] || nginx_pid_file_new=1
nginx_temp_before=$(ls /var/lib/nginx 2>/dev/null || true)
before=$(snapshot)
out=$(apt_get install "$deb1" 2>&1) || bad "deb: apt-get install ./${deb1##*/} (exit $?)"
same "deb: installed" "install ok installed $version-1" "$(dpkg-query -W -f '${Status} ${Version}' nginx-ha)"
has "deb: first install says it is neither enabled nor started" 'neither enabled nor started' "$out"
same "deb: dpkg --verify (md5sums) finds nothing" "" "$(dpkg --verify nginx-ha 2>&1)"
same "deb: installed files and modes" "755 root:root /usr/sbin/nginx-ha
644 root:root /lib/systemd/system/nginx-ha.service
640 root:root /etc/nginx-ha/nginx-ha.toml
755 root:root /var/lib/nginx-ha" "$(stat -c '%a %U:%G %n' /usr/sbin/nginx-ha /lib/systemd/system/nginx-ha.service \
    /etc/nginx-ha/nginx-ha.toml /var/lib/nginx-ha 2>&1)"
has "deb: dpkg knows the file trigger on /usr/sbin/nginx" '^/usr/sbin/nginx nginx-ha/noawait$' "$(cat /var/lib/dpkg/triggers/File)"
check "deb: nothing started (no daemon answers)" test "$(/usr/sbin/nginx-ha status >/dev/null 2>&1; echo $?)" = 3
# The shipped example is a real config: its interfaces and VIPs are only named, not touched, by
# check, and it names the distro nginx config, which the package's nginx dependency installs; so
# both halves must pass (exit 0), not only the config validation.
out=$(/usr/sbin/nginx-ha check 2>&1) && rc=0 || rc=$?
same "deb: nginx-ha check on the installed config: both parts ok (exit $rc)" "/etc/nginx-ha/nginx-ha.toml: ok
/etc/nginx/nginx.conf: nginx -t ok" "$out"

echo "== deb: the installed daemon, on an edited conffile"
port=$((20000 + RANDOM % 20000))
mkdir -p "$work/site"
echo "nginx-ha install test" >"$work/site/index.html"
cat >"$work/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $work/body;
    proxy_temp_path $work/proxy;
    fastcgi_temp_path $work/fastcgi;
    uwsgi_temp_path $work/uwsgi;
    scgi_temp_path $work/scgi;
    server { listen 127.0.0.1:$port; root $work/site; }
}
EOF
# Loopback only: no [[vrrp]], no [[alias]]; nothing outside $work.
cat >/etc/nginx-ha/nginx-ha.toml <<EOF
# edited by packaging/install-test.sh
[nginx]
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
edited=$(cat /etc/nginx-ha/nginx-ha.toml)
check "deb: the edited config passes nginx-ha check" quiet /usr/sbin/nginx-ha check
/usr/sbin/nginx-ha run >"$work/daemon.log" 2>&1 </dev/null &
daemon_pid=$!
if wait_for "the installed daemon to serve" serving && wait_for "status running/healthy" healthy; then
    ok "deb: the installed nginx-ha runs nginx (HTTP answer, status running/healthy)"
else
    bad "deb: the installed nginx-ha runs nginx"
    sed 's/^/     /' "$work/daemon.log"
fi

echo "== deb: file trigger (reinstalling $nginx_pkg, which owns /usr/sbin/nginx)"
master=$(master_pid)
out=$(apt_get install --reinstall --no-install-recommends "$nginx_pkg" 2>&1) || bad "deb: reinstall $nginx_pkg (exit $?)"
has "deb: dpkg ran nginx-ha's trigger" 'Processing triggers for nginx-ha' "$out"
if has_subcommand upgrade-nginx; then
    check "deb: trigger: upgrade-nginx gave nginx a new master" test "$(master_pid)" != "$master" -a -n "$(master_pid)"
else
    has "deb: trigger: upgrade-nginx is not in this build: the trigger says so and goes on" 'upgrade-nginx failed' "$out"
    echo "skip deb: trigger: the live nginx upgrade itself (nginx-ha upgrade-nginx is not implemented in this build)"
fi
wait_for "nginx serving after the trigger" serving && ok "deb: trigger: nginx still serves" || bad "deb: trigger: nginx still serves"

echo "== deb: upgrade to $version-2 (its default config changed)"
exe_before=$(readlink "/proc/$daemon_pid/exe" || true)
out=$(apt_get -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold install "$deb2" 2>&1) ||
    bad "deb: apt-get install ./${deb2##*/} (exit $?)"
same "deb: upgraded" "install ok installed $version-2" "$(dpkg-query -W -f '${Status} ${Version}' nginx-ha)"
same "deb: the edited conffile is kept" "$edited" "$(cat /etc/nginx-ha/nginx-ha.toml)"
check "deb: the new default is beside it (.dpkg-dist)" cmp -s /etc/nginx-ha/nginx-ha.toml.dpkg-dist "$work/changed.toml"
same "deb: the conffile keeps mode 640" "640" "$(stat -c %a /etc/nginx-ha/nginx-ha.toml)"
if has_subcommand upgrade; then
    # The daemon re-executed the new binary in place: same PID, exe no longer "(deleted)".
    check "deb: upgrade: the daemon kept its PID" kill -0 "$daemon_pid"
    same "deb: upgrade: the daemon runs the new /usr/sbin/nginx-ha" "/usr/sbin/nginx-ha" "$(readlink "/proc/$daemon_pid/exe")"
    has "deb: upgrade: postinst says the daemon runs the new binary" 'now runs the new binary' "$out"
else
    check "deb: upgrade: without nginx-ha upgrade in this build, the old daemon keeps running" kill -0 "$daemon_pid"
    echo "skip deb: upgrade: the in-place re-execution (nginx-ha upgrade is not implemented in this build; was $exe_before)"
fi
wait_for "nginx serving after the upgrade" serving && ok "deb: upgrade: nginx still serves" || bad "deb: upgrade: nginx still serves"

# The test's own daemon, by PID: it stops nginx with it.
kill -TERM "$daemon_pid"
wait "$daemon_pid" 2>/dev/null || true
daemon_pid=""
check "deb: the daemon stopped nginx" test -z "$(http_get "$port")"

echo "== deb: remove, purge"
out=$(apt_get remove nginx-ha 2>&1) || bad "deb: apt-get remove (exit $?)"
check "deb: remove: the binary is gone" test ! -e /usr/sbin/nginx-ha
check "deb: remove: the conffile stays" test -f /etc/nginx-ha/nginx-ha.toml
if [ -x /usr/bin/deb-systemd-helper ]; then
    same "deb: remove: the unit is masked" "/dev/null" "$(readlink /etc/systemd/system/nginx-ha.service)"
fi
out=$(apt_get purge nginx-ha 2>&1) || bad "deb: apt-get purge (exit $?)"
same "deb: purged" "" "$(dpkg-query -W -f '${Status}' nginx-ha 2>/dev/null | grep -v not-installed || true)"
after=$(snapshot)
same "deb: after the purge, /etc, /lib/systemd, /usr/lib/systemd and /var/lib are as before the install" "$before" "$after"

echo "== rpm: a throwaway root"
root=$work/rpmroot
# usr/lib/systemd/system: systemd's (it owns the directory on a real system), not nginx-ha's.
mkdir -p "$root"/{usr/bin,usr/sbin,usr/lib,usr/lib64,usr/lib/systemd/system,etc,var/lib,tmp,rpmdb}
for d in bin sbin lib lib64; do ln -s "usr/$d" "$root/$d"; done
# What the scriptlets run (sh, install, rm) and their libraries, and nginx-ha's libraries: the
# scriptlets run chrooted into the root, for real.
for prog in /bin/sh /usr/bin/install /usr/bin/rm; do cp -L "$prog" "$root/usr/bin/"; done
for lib in $( (ldd /bin/sh /usr/bin/install /usr/bin/rm "$binary") | grep -oE '/[^ ]+\.so[^ ]*' | sort -u); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
mkdir -p "$root/dev"
mknod -m 666 "$root/dev/null" c 1 3 2>/dev/null || say "cannot mknod $root/dev/null; scriptlets see no /dev/null"
r() { rpm --root "$root" --dbpath /rpmdb "$@"; }
r --initdb
before=$(snapshot "$root")
out=$(r -i --nodeps "$rpm1" 2>&1) || bad "rpm: rpm -i ${rpm1##*/} (exit $?): $out"
nevr() { r -q --qf '%{NAME}-%{VERSION}-%{RELEASE}' nginx-ha 2>&1; }
same "rpm: installed" "nginx-ha-$version-1" "$(nevr)"
same "rpm: rpm -V finds nothing" "" "$(r -V --nodeps nginx-ha 2>&1)"
same "rpm: installed files and modes" "755 root:root /usr/sbin/nginx-ha
644 root:root /usr/lib/systemd/system/nginx-ha.service
755 root:root /etc/nginx-ha
640 root:root /etc/nginx-ha/nginx-ha.toml
755 root:root /var/lib/nginx-ha" "$(cd "$root" && stat -c '%a %U:%G /%n' usr/sbin/nginx-ha \
    usr/lib/systemd/system/nginx-ha.service etc/nginx-ha etc/nginx-ha/nginx-ha.toml var/lib/nginx-ha 2>&1 | sed 's#^\([^/]*\)//#\1/#')"
check "rpm: the installed config is the packaged one" cmp -s "$root/etc/nginx-ha/nginx-ha.toml" conf/nginx-ha.toml

# %triggerin -- nginx: a stand-in nginx package (one script) installed into the root.
mkdir -p "$work/fake-nginx"
cat >"$work/fake-nginx/nginx.spec" <<'EOF'
Name: nginx
Version: 1.0
Release: 1
Summary: stand-in for the trigger test
License: MIT
BuildArch: noarch
%description
stand-in
%install
mkdir -p %{buildroot}/usr/sbin && printf '#!/bin/sh\n' >%{buildroot}/usr/sbin/nginx && chmod 755 %{buildroot}/usr/sbin/nginx
%files
/usr/sbin/nginx
EOF
rpmbuild -bb --quiet --nodeps --define "_topdir $work/fake-nginx" --define "_rpmdir $work/fake-nginx/out" \
    --define "_build_name_fmt nginx.rpm" "$work/fake-nginx/nginx.spec" >/dev/null 2>&1
out=$(r -i --nodeps "$work/fake-nginx/out/nginx.rpm" 2>&1) || bad "rpm: install the stand-in nginx (exit $?)"
has "rpm: %triggerin ran on the nginx install (nginx-ha not running: nothing to upgrade)" \
    'nginx was installed or upgraded; nginx-ha is not running' "$out"
r -e --nodeps nginx >/dev/null 2>&1 || bad "rpm: erase the stand-in nginx" # nginx-ha requires nginx

echo "== rpm: upgrade to $version-2 with an edited config"
echo "# edited by packaging/install-test.sh" >>"$root/etc/nginx-ha/nginx-ha.toml"
edited=$(cat "$root/etc/nginx-ha/nginx-ha.toml")
out=$(r -U --nodeps "$rpm2" 2>&1) || bad "rpm: rpm -U ${rpm2##*/} (exit $?): $out"
same "rpm: upgraded" "nginx-ha-$version-2" "$(nevr)"
same "rpm: %config(noreplace): the edited config is kept" "$edited" "$(cat "$root/etc/nginx-ha/nginx-ha.toml")"
check "rpm: the new default is beside it (.rpmnew)" cmp -s "$root/etc/nginx-ha/nginx-ha.toml.rpmnew" "$work/changed.toml"
same "rpm: the config keeps mode 640" "640" "$(stat -c %a "$root/etc/nginx-ha/nginx-ha.toml")"
same "rpm: rpm -V: only the edited config differs" "/etc/nginx-ha/nginx-ha.toml" "$(r -V --nodeps nginx-ha 2>&1 | awk '{ print $NF }')"

echo "== rpm: erase"
out=$(r -e nginx-ha 2>&1) || bad "rpm: rpm -e (exit $?): $out"
same "rpm: erased" "package nginx-ha is not installed" "$(r -q nginx-ha 2>&1)"
# rpm's own rule: an edited config is saved as .rpmsave, and the .rpmnew it wrote is nobody's;
# so exactly those two stay, in /etc/nginx-ha. Everything else is as before.
after=$(snapshot "$root")
same "rpm: after the erase, the root is as before but for the admin's config (.rpmsave, .rpmnew)" \
    "+d 755 root:root /etc/nginx-ha
+f 640 root:root /etc/nginx-ha/nginx-ha.toml.rpmnew
+f 640 root:root /etc/nginx-ha/nginx-ha.toml.rpmsave" \
    "$(diff <(grep -v '^[0-9a-f]\{64\} ' <<<"$before") <(grep -v '^[0-9a-f]\{64\} ' <<<"$after") | grep '^[<>]' | sed -e 's/^> /+/' -e 's/^< /-/')"
same "rpm: .rpmsave holds the edited config" "$edited" "$(cat "$root/etc/nginx-ha/nginx-ha.toml.rpmsave" 2>&1)"

echo
echo "packaging: $passed passed, $failed failed"
[ "$failed" = 0 ]

#!/usr/bin/env bash
# packaging/test.sh [--bundled[=TARBALL]]: builds the .deb and the .rpm (build.sh) and checks what
# is in them: file lists, modes, conffiles, triggers, dependencies, maintainer scripts, the unit
# (systemd-analyze verify) and the packaged binary itself. Nothing is installed on this system:
# the packages are only unpacked into a temporary directory, so no service is enabled or started.
# With --bundled, nginx-ha-bundled (build.sh --bundled) is built and checked too.
# (packaging/install-test.sh installs them for real.)
set -euo pipefail
cd "$(dirname "$0")/.."

bundled_arg=""
case "${1:-}" in
--bundled | --bundled=*) bundled_arg=$1 ;;
"") ;;
*) echo "usage: packaging/test.sh [--bundled[=TARBALL]]" >&2 && exit 2 ;;
esac

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }
# check DESCRIPTION COMMAND...: one check, passed when COMMAND succeeds.
check() {
    local what=$1
    shift
    if "$@"; then ok "$what"; else bad "$what"; fi
}
quiet() { "$@" >/dev/null 2>&1; }
# has DESCRIPTION REGEX TEXT: TEXT has a line matching the extended REGEX; shows TEXT if not.
has() {
    if grep -qE "$2" <<<"$3"; then
        ok "$1"
    else
        bad "$1"
        sed 's/^/     /' <<<"$3"
    fi
}
# same DESCRIPTION EXPECTED ACTUAL: prints a diff when they differ.
same() {
    if [ "$2" == "$3" ]; then
        ok "$1"
    else
        bad "$1"
        diff <(printf '%s\n' "$2") <(printf '%s\n' "$3") | sed 's/^/     /' || true
    fi
}

# rpm(8) and rpm2archive read the .rpm; on Debian they come in the `rpm` package.
if ! command -v rpm >/dev/null || ! command -v rpm2archive >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "packaging/test.sh: installing rpm (to read the .rpm)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rpm >/dev/null ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rpm >/dev/null; }
    else
        echo "packaging/test.sh: needs rpm and rpm2archive (Debian: apt-get install rpm)" >&2
        exit 2
    fi
fi

rc=0
packages=$(packaging/build.sh ${bundled_arg:+"$bundled_arg"}) || rc=$?
if [ "$rc" = 3 ] && [ "$bundled_arg" = --bundled ]; then
    # packaging/nginx/build.sh's "cannot get Debian's nginx source" (and no TARBALL given): the
    # same skip as packaging/nginx/test.sh's; the other packages are still checked.
    echo "skip nginx-ha-bundled: no nginx source tarball (none given, and apt-get source nginx failed)"
    bundled_arg=""
    packages=$(packaging/build.sh)
elif [ "$rc" != 0 ]; then
    echo "FAIL packaging/build.sh ${bundled_arg:+$bundled_arg }(exit $rc)"
    exit 1
fi
deb=$(grep '/nginx-ha_[^/]*\.deb$' <<<"$packages" || true)
rpm=$(grep '\.rpm$' <<<"$packages" || true)
bundled_deb=$(grep '/nginx-ha-bundled_[^/]*\.deb$' <<<"$packages" || true)
if [ "$(wc -l <<<"$deb")" != 1 ] || [ -z "$deb" ] || [ "$(wc -l <<<"$rpm")" != 1 ] || [ -z "$rpm" ] ||
    { [ -n "$bundled_arg" ] && [ -z "$bundled_deb" ]; }; then
    echo "packaging/test.sh: expected one .deb and one .rpm${bundled_arg:+ and nginx-ha-bundled} from build.sh, got:"$'\n'"$packages" >&2
    exit 1
fi
echo "deb: $deb"
echo "rpm: $rpm"
[ -z "$bundled_deb" ] || echo "bundled deb: $bundled_deb"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# path+file:///…#nginx-ha@0.1.0 (or …#0.1.0)
version=$(cargo pkgid)
version=${version##*[#@]}

# The examples are whatever conf/example/ holds, the monitoring files whatever conf/monitoring/ does.
examples=$(cd conf/example && for f in *; do echo "$f"; done)
monitoring=$(cd conf/monitoring && for f in *; do echo "$f"; done)

# What both packages install, as "MODE PATH" (the unit's directory differs).
common_files() {
    local unit_dir=$1
    {
        echo "755 /usr/sbin/nginx-ha"
        echo "644 $unit_dir/nginx-ha.service"
        echo "640 /etc/nginx-ha/nginx-ha.toml"
        echo "644 /usr/share/doc/nginx-ha/README.md"
        echo "644 /usr/share/doc/nginx-ha/examples/nginx-ha.toml"
        while read -r f; do echo "644 /usr/share/doc/nginx-ha/examples/local/$f"; done <<<"$examples"
        while read -r f; do echo "644 /usr/share/nginx-ha/monitoring/$f"; done <<<"$monitoring"
    }
}
# The unit's lines that the daemon's behaviour depends on (see the comments in the unit).
required_unit_lines="Type=notify
NotifyAccess=main
ExecStart=/usr/sbin/nginx-ha run
ExecReload=/usr/sbin/nginx-ha reload
KillMode=process
Restart=on-failure
WatchdogSec=10s
RuntimeDirectory=nginx-ha
RuntimeDirectoryPreserve=yes
StateDirectory=nginx-ha
Conflicts=nginx.service keepalived.service
WantedBy=multi-user.target
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=/run -/var/log/nginx -/var/lib/nginx -/var/cache/nginx
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE CAP_KILL CAP_SETUID CAP_SETGID CAP_CHOWN CAP_DAC_OVERRIDE CAP_BPF CAP_SYS_NICE
SystemCallFilter=@system-service bpf pidfd_getfd"

# verify_unit LABEL ROOT UNIT_PATH: the unpacked unit against the unpacked binary.
verify_unit() {
    local label=$1 root=$2 unit=$3
    check "$label: unit is systemd/nginx-ha.service" cmp -s "$root$unit" systemd/nginx-ha.service
    local missing=""
    while read -r line; do
        grep -qxF "$line" "$root$unit" || missing+="$line"$'\n'
    done <<<"$required_unit_lines"
    same "$label: unit has the required settings" "" "${missing%$'\n'}"
    if command -v systemd-analyze >/dev/null; then
        # verify wants the binaries at their real paths: point them into the unpacked tree.
        # It exits 0 on unknown keys and bad values, so any output is a failure too.
        local copy=$work/verify-$label/nginx-ha.service out rc=0
        mkdir -p "${copy%/*}"
        sed "s#/usr/sbin/nginx-ha#$root/usr/sbin/nginx-ha#g" "$root$unit" >"$copy"
        out=$(cd "$work" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify "$copy" 2>&1) || rc=$?
        same "$label: systemd-analyze verify (exit $rc) says nothing" "" "$out"
        [ "$rc" = 0 ] || bad "$label: systemd-analyze verify exited $rc"
        # The sandbox's exposure (BENCHMARKS.md): 3.5 today (3.4 before CAP_SYS_NICE and no
        # RestrictRealtime for the VRRP thread's SCHED_FIFO); a change that raises it fails here.
        check "$label: systemd-analyze security exposure at most 3.5" \
            quiet systemd-analyze security --offline=yes --threshold=35 "$copy"
    else
        echo "skip $label: systemd-analyze verify (systemd-analyze is not installed)"
    fi
}

# run_binary LABEL ROOT: the unpacked binary runs and accepts the packaged example config.
run_binary() {
    local label=$1 root=$2 out
    out=$("$root/usr/sbin/nginx-ha" --version 2>&1) || true
    same "$label: nginx-ha --version" "nginx-ha $version" "$out"
    check "$label: nginx-ha check --help" quiet "$root/usr/sbin/nginx-ha" check --help
    # `check` validates the file first and prints "FILE: ok", then runs `nginx -t` on the nginx
    # config it names, which depends on this machine: only the first part is judged.
    out=$("$root/usr/sbin/nginx-ha" check -c "$root/etc/nginx-ha/nginx-ha.toml" 2>&1) || true
    same "$label: the packaged config is valid" "$root/etc/nginx-ha/nginx-ha.toml: ok" "$(head -n 1 <<<"$out")"
}

# The maintainer scripts run against stubs that record each command: PATH is the stubs alone
# (and cat), so a command without a stub fails instead of touching this system, and the paths
# the scripts test (/run/systemd/system, a booted systemd; /usr/bin/systemctl;
# /usr/bin/deb-systemd-helper) point at the stubs.
stubs=$work/stubs
mkdir -p "$stubs" "$work/booted"
for stub in systemctl deb-systemd-helper deb-systemd-invoke install rm; do
    printf '#!/bin/sh\necho "%s $*" >>"$TRACE"\n' "$stub" >"$stubs/$stub"
    chmod +x "$stubs/$stub"
done
# /usr/sbin/nginx-ha: fails (exit 1) the subcommands named in $FAIL, succeeds otherwise.
printf '#!/bin/sh\necho "nginx-ha $*" >>"$TRACE"\ncase " $FAIL " in *" $1 "*) echo "stub: $1 failed" >&2; exit 1 ;; esac\n' \
    >"$stubs/nginx-ha"
chmod +x "$stubs/nginx-ha"
ln -s "$(command -v cat)" "$stubs/cat"
printf '#!/bin/sh\n' >"$work/bundled-nginx"
chmod +x "$work/bundled-nginx"
shell=$(command -v sh)
# [FAIL=SUBCOMMANDS] [BOOTED=no] [BUNDLED=yes] traced SCRIPT ARGS...: the commands SCRIPT runs,
# one a line, and "exit N" at the end. FAIL: the nginx-ha subcommands that fail; BOOTED=no: no
# /run/systemd/system; BUNDLED=yes: nginx-ha-bundled's nginx is there.
traced() {
    local script=$1 rc=0 booted=$work/booted bundled=$work/no-bundled-nginx
    shift
    [ "${BOOTED:-}" != no ] || booted=$work/not-booted
    [ "${BUNDLED:-}" != yes ] || bundled=$work/bundled-nginx
    sed -e "s#/run/systemd/system#$booted#g" -e "s#/usr/bin/systemctl#$stubs/systemctl#g" \
        -e "s#/usr/bin/deb-systemd-helper#$stubs/deb-systemd-helper#g" \
        -e "s#/usr/sbin/nginx-ha#$stubs/nginx-ha#g" \
        -e "s#/usr/lib/nginx-ha/nginx/sbin/nginx#$bundled#g" "$script" >"$work/traced.sh"
    : >"$work/trace"
    FAIL=${FAIL:-} TRACE=$work/trace PATH=$stubs "$shell" "$work/traced.sh" "$@" >/dev/null 2>&1 || rc=$?
    cat "$work/trace"
    echo "exit $rc"
}

# scripts_parse LABEL FILE...: sh -n on each maintainer script.
scripts_parse() {
    local label=$1 f
    shift
    for f in "$@"; do check "$label: ${f##*/} parses (sh -n)" sh -n "$f"; done
}

echo "== deb"
dpkg-deb --contents "$deb" >"$work/deb.contents"
field() { dpkg-deb --field "$deb" "$1"; }
same "deb: Package" "nginx-ha" "$(field Package)"
same "deb: Version" "$version-1" "$(field Version)"
depends=$(field Depends)
has "deb: Depends has any nginx flavour" '(^|, )nginx \| nginx-light \| nginx-core \| nginx-full \| nginx-extras(,|$)' "$depends"
has "deb: Depends has libc6 (from \$auto, by dpkg-shlibdeps)" '(^|, )libc6( |,|$)' "$depends"

# Regular files as "MODE PATH", from `-rwxr-xr-x root/root 123 date time ./path`.
deb_files=$(awk '$1 ~ /^-/ {
        m = 0; p = substr($1, 2)
        for (i = 1; i <= 9; i++) m = m * 2 + (substr(p, i, 1) != "-")
        sub(/^\./, "", $6); printf "%o %s\n", m, $6 }' "$work/deb.contents" | sort -k2)
expected_deb=$({ common_files /lib/systemd/system; echo "644 /usr/share/doc/nginx-ha/copyright"; } | sort -k2)
same "deb: files and modes" "$expected_deb" "$deb_files"
same "deb: every entry is owned by root" "" "$(awk '$2 != "0/0" && $2 != "root/root"' "$work/deb.contents")"

mkdir -p "$work/deb-control" "$work/deb-root"
dpkg-deb --control "$deb" "$work/deb-control"
same "deb: conffiles" "/etc/nginx-ha/nginx-ha.toml" "$(cat "$work/deb-control/conffiles" 2>/dev/null)"
for script in postinst prerm postrm; do
    check "deb: $script is packaging/deb/$script" cmp -s "$work/deb-control/$script" "packaging/deb/$script"
    check "deb: $script is executable" test -x "$work/deb-control/$script"
done
check "deb: no preinst" test ! -e "$work/deb-control/preinst"
same "deb: triggers: a file trigger on /usr/sbin/nginx" "interest-noawait /usr/sbin/nginx" \
    "$(grep -v '^#' "$work/deb-control/triggers" 2>/dev/null)"
check "deb: md5sums cover the files outside /etc" test "$(wc -l <"$work/deb-control/md5sums")" = "$(grep -vc ' /etc/' <<<"$deb_files")"
scripts_parse deb "$work"/deb-control/{postinst,prerm,postrm}

# Neither enabled nor started on a first install; restarted on an upgrade only if running
# (try-restart); stopped only on removal, not before an upgrade.
c=$work/deb-control
same "deb: postinst configure (first install): no enable, no start" "install -d -m 0755 /var/lib/nginx-ha
deb-systemd-helper unmask nginx-ha.service
deb-systemd-helper update-state nginx-ha.service
systemctl --system daemon-reload
exit 0" "$(traced "$c/postinst" configure "")"
upgrade_prefix="install -d -m 0755 /var/lib/nginx-ha
deb-systemd-helper unmask nginx-ha.service
deb-systemd-helper update-state nginx-ha.service
systemctl --system daemon-reload"
same "deb: postinst configure OLD (upgrade): nginx-ha upgrade (in place), no restart" "$upgrade_prefix
nginx-ha upgrade
exit 0" "$(traced "$c/postinst" configure 0.0.1-1)"
same "deb: postinst configure OLD, nginx-ha upgrade fails: try-restart" "$upgrade_prefix
nginx-ha upgrade
deb-systemd-invoke try-restart nginx-ha.service
exit 0" "$(FAIL=upgrade traced "$c/postinst" configure 0.0.1-1)"
same "deb: postinst configure OLD, upgrade fails, no systemd: nothing else" "install -d -m 0755 /var/lib/nginx-ha
deb-systemd-helper unmask nginx-ha.service
deb-systemd-helper update-state nginx-ha.service
nginx-ha upgrade
exit 0" "$(FAIL=upgrade BOOTED=no traced "$c/postinst" configure 0.0.1-1)"
same "deb: postinst configure OLD, nginx-ha-bundled: upgrade, then upgrade-nginx" "$upgrade_prefix
nginx-ha upgrade
nginx-ha upgrade-nginx
exit 0" "$(BUNDLED=yes traced "$c/postinst" configure 0.0.1-1)"
same "deb: postinst configure OLD, nginx-ha-bundled, upgrade-nginx fails: still exit 0" "$upgrade_prefix
nginx-ha upgrade
nginx-ha upgrade-nginx
exit 0" "$(FAIL=upgrade-nginx BUNDLED=yes traced "$c/postinst" configure 0.0.1-1)"
same "deb: postinst triggered (nginx replaced), daemon running: upgrade-nginx" "nginx-ha status
nginx-ha upgrade-nginx
exit 0" "$(traced "$c/postinst" triggered /usr/sbin/nginx)"
same "deb: postinst triggered, upgrade-nginx fails (or is unknown): exit 0" "nginx-ha status
nginx-ha upgrade-nginx
exit 0" "$(FAIL=upgrade-nginx traced "$c/postinst" triggered /usr/sbin/nginx)"
same "deb: postinst triggered, no daemon answers: nothing" "nginx-ha status
exit 0" "$(FAIL=status traced "$c/postinst" triggered /usr/sbin/nginx)"
same "deb: prerm upgrade: nothing" "exit 0" "$(traced "$c/prerm" upgrade 9.9.9-1)"
same "deb: prerm remove: stop" "deb-systemd-invoke stop nginx-ha.service
exit 0" "$(traced "$c/prerm" remove)"
same "deb: postrm remove: daemon-reload, mask" "systemctl --system daemon-reload
deb-systemd-helper mask nginx-ha.service
exit 0" "$(traced "$c/postrm" remove)"
same "deb: postrm purge: forget the unit, remove the state" "deb-systemd-helper purge nginx-ha.service
deb-systemd-helper unmask nginx-ha.service
rm -rf /var/lib/nginx-ha /run/nginx-ha /var/log/nginx-ha
exit 0" "$(traced "$c/postrm" purge)"

dpkg-deb -x "$deb" "$work/deb-root"
check "deb: the packaged config is conf/nginx-ha.toml" cmp -s "$work/deb-root/etc/nginx-ha/nginx-ha.toml" conf/nginx-ha.toml
for f in $monitoring; do
    check "deb: monitoring/$f is conf/monitoring/$f" cmp -s "$work/deb-root/usr/share/nginx-ha/monitoring/$f" "conf/monitoring/$f"
done
# The shipped rule tests find the rules beside them, where the package puts both.
if command -v promtool >/dev/null; then
    check "deb: promtool test rules passes in /usr/share/nginx-ha/monitoring" \
        sh -c "cd '$work/deb-root/usr/share/nginx-ha/monitoring' && promtool test rules nginx-ha.rules.test.yml >/dev/null"
else
    echo "skip: promtool test rules on the packaged rules: no promtool (Debian: prometheus)"
fi
check "deb: copyright has the MIT licence" grep -q "Permission is hereby granted" "$work/deb-root/usr/share/doc/nginx-ha/copyright"
verify_unit deb "$work/deb-root" /lib/systemd/system/nginx-ha.service
run_binary deb "$work/deb-root"

echo "== rpm"
q() { rpm -qp --nosignature "$@" "$rpm" 2>/dev/null; }
same "rpm: name-version" "nginx-ha-$version" "$(q --qf '%{NAME}-%{VERSION}')"
same "rpm: license" "MIT" "$(q --qf '%{LICENSE}')"
requires=$(q --requires)
has "rpm: requires nginx" '^nginx$' "$requires"
has "rpm: requires /bin/sh (scriptlets)" '^/bin/sh$' "$requires"

# "MODE PATH" of every file, "dir MODE PATH" of every directory the package owns, and the file
# flags (c: config, n: noreplace, d: doc).
rpm_files=$(q --qf '[%{FILEMODES:perms} %{FILENAMES} %{FILEUSERNAME}:%{FILEGROUPNAME}\n]' | awk '{
        m = 0; p = substr($1, 2)
        for (i = 1; i <= 9; i++) m = m * 2 + (substr(p, i, 1) != "-")
        printf "%s%o %s\n", (substr($1, 1, 1) == "d" ? "dir " : ""), m, $2 }' | sort -k2)
expected_rpm=$({
    common_files /usr/lib/systemd/system
    echo "644 /usr/share/doc/nginx-ha/LICENSE"
    for d in /etc/nginx-ha /usr/share/doc/nginx-ha /usr/share/doc/nginx-ha/examples \
        /usr/share/doc/nginx-ha/examples/local /usr/share/nginx-ha /usr/share/nginx-ha/monitoring \
        /var/lib/nginx-ha; do echo "dir 755 $d"; done
} | sort -k2)
same "rpm: files, directories and modes" "$expected_rpm" "$rpm_files"
same "rpm: everything is owned by root:root" "" "$(q --qf '[%{FILEUSERNAME}:%{FILEGROUPNAME} %{FILENAMES}\n]' | grep -v '^root:root ')"
flags=$(q --qf '[%{FILEFLAGS:fflags}|%{FILEMODES:perms}|%{FILENAMES}\n]')
same "rpm: config(noreplace) files" "cn|/etc/nginx-ha/nginx-ha.toml" "$(awk -F'|' '$1 ~ /c/ { print $1 "|" $3 }' <<<"$flags")"
same "rpm: files under /usr/share/doc are %doc" "" "$(awk -F'|' '$3 ~ "^/usr/share/doc/" && $2 !~ /^d/ && $1 !~ /d/' <<<"$flags")"
same "rpm: no other file is flagged" "" "$(awk -F'|' '$3 !~ "^(/etc|/usr/share/doc)/" && $1 != ""' <<<"$flags")"

# The scriptlets as rpm stores them (interpreter /bin/sh), against packaging/rpm/.
mkdir -p "$work/rpm-scripts" "$work/rpm-root"
for s in post:POSTIN preun:PREUN postun:POSTUN; do
    q --qf "%{${s#*:}}" >"$work/rpm-scripts/${s%:*}.sh"
    check "rpm: %${s%:*} is packaging/rpm/${s%:*}.sh" cmp -s "$work/rpm-scripts/${s%:*}.sh" "packaging/rpm/${s%:*}.sh"
    same "rpm: %${s%:*} runs with /bin/sh" "/bin/sh" "$(q --qf "%{${s#*:}PROG}")"
done
same "rpm: no %pre" "(none)" "$(q --qf '%{PREIN}')"
same "rpm: one trigger, %triggerin -- nginx" "in nginx" "$(q --qf '[%{TRIGGERTYPE} %{TRIGGERNAME}\n]')"
q --qf '[%{TRIGGERSCRIPTS}]' >"$work/rpm-scripts/triggerin-nginx.sh"
check "rpm: %triggerin is packaging/rpm/triggerin-nginx.sh" cmp -s "$work/rpm-scripts/triggerin-nginx.sh" packaging/rpm/triggerin-nginx.sh
same "rpm: %triggerin runs with /bin/sh" "/bin/sh" "$(q --qf '[%{TRIGGERSCRIPTPROG}]')"
scripts_parse rpm "$work"/rpm-scripts/*.sh

r=$work/rpm-scripts
same "rpm: %post 1 (first install): preset, no start" "install -d -m 0755 /var/lib/nginx-ha
systemctl daemon-reload
systemctl --no-reload preset nginx-ha.service
exit 0" "$(traced "$r/post.sh" 1)"
same "rpm: %post 2 (upgrade): nginx-ha upgrade (in place), no restart" "install -d -m 0755 /var/lib/nginx-ha
systemctl daemon-reload
nginx-ha upgrade
exit 0" "$(traced "$r/post.sh" 2)"
same "rpm: %post 2, nginx-ha upgrade fails: try-restart" "install -d -m 0755 /var/lib/nginx-ha
systemctl daemon-reload
nginx-ha upgrade
systemctl try-restart nginx-ha.service
exit 0" "$(FAIL=upgrade traced "$r/post.sh" 2)"
same "rpm: %post 2, upgrade fails, no systemd: nothing else" "install -d -m 0755 /var/lib/nginx-ha
nginx-ha upgrade
exit 0" "$(FAIL=upgrade BOOTED=no traced "$r/post.sh" 2)"
same "rpm: %triggerin (nginx installed or upgraded), daemon running: upgrade-nginx" "nginx-ha status
nginx-ha upgrade-nginx
exit 0" "$(traced "$r/triggerin-nginx.sh" 1 1)"
same "rpm: %triggerin, upgrade-nginx fails (or is unknown): exit 0" "nginx-ha status
nginx-ha upgrade-nginx
exit 0" "$(FAIL=upgrade-nginx traced "$r/triggerin-nginx.sh" 1 2)"
same "rpm: %triggerin, no daemon answers: nothing" "nginx-ha status
exit 0" "$(FAIL=status traced "$r/triggerin-nginx.sh" 1 1)"
same "rpm: %preun 1 (upgrade): nothing" "exit 0" "$(traced "$r/preun.sh" 1)"
same "rpm: %preun 0 (erase): disable and stop" "systemctl --no-reload disable --now nginx-ha.service
exit 0" "$(traced "$r/preun.sh" 0)"
same "rpm: %postun 1 (upgrade): no restart (the new %post did it)" "systemctl daemon-reload
exit 0" "$(traced "$r/postun.sh" 1)"
same "rpm: %postun 0 (erase): daemon-reload" "systemctl daemon-reload
exit 0" "$(traced "$r/postun.sh" 0)"

rpm2archive - <"$rpm" | tar -xzf - -C "$work/rpm-root"
check "rpm: the binary is the deb's" cmp -s "$work/rpm-root/usr/sbin/nginx-ha" "$work/deb-root/usr/sbin/nginx-ha"
check "rpm: the packaged config is conf/nginx-ha.toml" cmp -s "$work/rpm-root/etc/nginx-ha/nginx-ha.toml" conf/nginx-ha.toml
verify_unit rpm "$work/rpm-root" /usr/lib/systemd/system/nginx-ha.service
run_binary rpm "$work/rpm-root"

if [ -n "$bundled_deb" ]; then
    echo "== deb (nginx-ha-bundled)"
    b=$work/bundled
    mkdir -p "$b/control" "$b/root"
    dpkg-deb --control "$bundled_deb" "$b/control"
    dpkg-deb -x "$bundled_deb" "$b/root"
    bfield() { dpkg-deb --field "$bundled_deb" "$1"; }
    same "bundled: Package" "nginx-ha-bundled" "$(bfield Package)"
    same "bundled: Version" "$version-1" "$(bfield Version)"
    # It replaces nginx-ha (the same files), and needs no distro nginx.
    same "bundled: Provides, Conflicts, Replaces nginx-ha" "nginx-ha nginx-ha nginx-ha" \
        "$(bfield Provides) $(bfield Conflicts) $(bfield Replaces)"
    bdepends=$(bfield Depends)
    has "bundled: Depends has libssl3 (nginx's, by dpkg-shlibdeps)" '(^|, )libssl3( |,|$)' "$bdepends"
    same "bundled: Depends has no nginx package" "" "$(tr ',' '\n' <<<"$bdepends" | grep -E '^ *nginx' || true)"
    check "bundled: no triggers (its nginx is its own)" test ! -e "$b/control/triggers"
    for script in postinst prerm postrm; do
        check "bundled: $script is packaging/deb/$script" cmp -s "$b/control/$script" "packaging/deb/$script"
    done
    bconf=$(cat "$b/control/conffiles")
    has "bundled: nginx-ha.toml is a conffile" '^/etc/nginx-ha/nginx-ha.toml$' "$bconf"
    has "bundled: nginx.conf is a conffile" '^/etc/nginx-ha/nginx/nginx.conf$' "$bconf"
    has "bundled: mime.types is a conffile" '^/etc/nginx-ha/nginx/mime.types$' "$bconf"
    bin=$b/root/usr/lib/nginx-ha/nginx/sbin/nginx
    check "bundled: /usr/lib/nginx-ha/nginx/sbin/nginx is executable" test -x "$bin"
    check "bundled: /usr/lib/nginx-ha/nginx/html/index.html" test -f "$b/root/usr/lib/nginx-ha/nginx/html/index.html"
    check "bundled: ships /var/log/nginx-ha" test -d "$b/root/var/log/nginx-ha"
    check "bundled: nothing under /run" test ! -e "$b/root/run"
    nv=$("$bin" -V 2>&1 || true)
    for m in http_stub_status_module http_ssl_module http_v2_module http_realip_module http_gzip_static_module; do
        has "bundled: nginx -V has --with-$m" "(^| )--with-$m( |$)" "$nv"
    done
    bcfg=$b/root/etc/nginx-ha/nginx-ha.toml
    has "bundled: default config runs the bundled nginx" '^binary = "/usr/lib/nginx-ha/nginx/sbin/nginx"' "$(cat "$bcfg")"
    has "bundled: default config uses the bundled nginx config" '^config = "/etc/nginx-ha/nginx/nginx.conf"' "$(cat "$bcfg")"
    same "bundled: only those two lines differ from conf/nginx-ha.toml" "2" "$(diff conf/nginx-ha.toml "$bcfg" | grep -c '^>' || true)"
    check "bundled: nginx-ha is the plain package's" cmp -s "$b/root/usr/sbin/nginx-ha" "$work/deb-root/usr/sbin/nginx-ha"
    out=$("$b/root/usr/sbin/nginx-ha" check -c "$bcfg" 2>&1) || true
    same "bundled: the packaged config is valid" "$bcfg: ok" "$(head -n 1 <<<"$out")"
fi

echo
echo "packaging: $passed passed, $failed failed"
[ "$failed" = 0 ]

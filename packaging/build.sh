#!/usr/bin/env bash
# packaging/build.sh [--bundled[=TARBALL]]: builds the release binary once and packages it as a
# .deb (dpkg-deb, from a staging tree) and an .rpm (rpmbuild -bb packaging/rpm/nginx-ha.spec) in
# target/packages/. Prints the paths of the packages on stdout (progress goes to stderr).
#
#   --bundled[=TARBALL]  also builds nginx-ha-bundled_*.deb, which carries its own nginx built from
#                        TARBALL (default: Debian's nginx source) by packaging/nginx/build.sh.
#   PKG_RELEASE          the package release (default 1): 0.1.0-PKG_RELEASE (deb), Release (rpm).
#   NGINX_HA_BINARY      package this nginx-ha binary instead of building the release one.
#   NGINX_HA_CONFIG      the default config installed as /etc/nginx-ha/nginx-ha.toml (default:
#                        conf/nginx-ha.toml; install-test.sh upgrades to a package with a changed one).
#
# Needs dpkg-deb and dpkg-shlibdeps (dpkg-dev) and rpmbuild (Debian's `rpm` package); as root on
# Debian, the missing ones are installed with apt-get. Exits 3 when --bundled has no TARBALL and
# Debian's nginx source cannot be downloaded (packaging/test.sh skips nginx-ha-bundled then).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

bundled=""
tarball=""
for arg in "$@"; do
    case "$arg" in
    --bundled) bundled=1 ;;
    --bundled=*) bundled=1 tarball=${arg#--bundled=} ;;
    *) echo "usage: packaging/build.sh [--bundled[=TARBALL]]" >&2 && exit 2 ;;
    esac
done
release=${PKG_RELEASE:-1}
config=$(realpath "${NGINX_HA_CONFIG:-conf/nginx-ha.toml}")
say() { echo "packaging/build.sh: $*" >&2; }

missing=()
command -v dpkg-deb >/dev/null || missing+=(dpkg)
command -v dpkg-shlibdeps >/dev/null || missing+=(dpkg-dev)
command -v rpmbuild >/dev/null || missing+=(rpm)
if [ ${#missing[@]} != 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing ${missing[*]}"
        apt=(apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600)
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" "${missing[@]}" >/dev/null ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${apt[@]}" "${missing[@]}" >/dev/null; }
    else
        say "needs ${missing[*]} (Debian: apt-get install ${missing[*]})"
        exit 2
    fi
fi

# Honours CARGO_TARGET_DIR and .cargo/config.
target_dir=$(cargo metadata --no-deps --format-version 1 | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
out="$target_dir/packages"
# path+file:///…#nginx-ha@0.1.0 (or …#0.1.0)
version=$(cargo pkgid)
version=${version##*[#@]}

if [ -n "${NGINX_HA_BINARY:-}" ]; then
    binary=$NGINX_HA_BINARY
else
    cargo build --release --locked >&2
    binary=$target_dir/release/nginx-ha
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$binary" "$work/nginx-ha"
strip "$work/nginx-ha"
binary=$work/nginx-ha

rm -rf "$out"
mkdir -p "$out"

# ---- deb ---------------------------------------------------------------------------------------
description="Keeps an nginx pair highly available: supervises nginx, runs VRRP, keeps addresses
 nginx-ha makes an nginx pair highly available on its own, replacing nginx + keepalived + a
 check script: it runs and supervises nginx (restarts, hot reloads after nginx -t, adoption of a
 running nginx), runs VRRP and keeps static IP aliases."

# stage_common ROOT: the files both deb variants carry.
stage_common() {
    local root=$1 d=$1/usr/share/doc/nginx-ha
    install -D -m 0755 "$binary" "$root/usr/sbin/nginx-ha"
    install -D -m 0644 systemd/nginx-ha.service "$root/lib/systemd/system/nginx-ha.service"
    # A conffile (everything under /etc is): upgrades keep the admin's edits. Not world-readable:
    # it holds the VRRP password.
    install -D -m 0640 "$config" "$root/etc/nginx-ha/nginx-ha.toml"
    install -D -m 0644 README.md "$d/README.md"
    install -D -m 0644 conf/nginx-ha.toml "$d/examples/nginx-ha.toml"
    install -d -m 0755 "$d/examples/local"
    install -m 0644 conf/example/* "$d/examples/local/"
    # Alert rules (and their tests), the Grafana dashboard, the Zabbix template.
    install -d -m 0755 "$root/usr/share/nginx-ha/monitoring"
    install -m 0644 conf/monitoring/* "$root/usr/share/nginx-ha/monitoring/"
    {
        echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
        echo "Upstream-Name: nginx-ha"
        echo
        echo "Files: *"
        echo "Copyright: 2026 nginx-ha authors"
        echo "License: MIT"
        sed -e 's/^$/./' -e 's/^/ /' LICENSE
    } >"$d/copyright"
    chmod 0644 "$d/copyright"
}

# shlibs_depends BINARY...: the shared-library dependencies, as dpkg-shlibdeps finds them.
shlibs_depends() {
    local dir=$work/shlibs
    mkdir -p "$dir/debian"
    printf 'Source: nginx-ha\n\nPackage: nginx-ha\nArchitecture: any\n' >"$dir/debian/control"
    (cd "$dir" && dpkg-shlibdeps -O -e "$@" 2>/dev/null) | sed -n 's/^shlibs:Depends=//p'
}

# build_deb ROOT NAME DEPENDS [EXTRA CONTROL FIELDS]: control files and dpkg-deb --build.
build_deb() {
    local root=$1 name=$2 depends=$3 extra=${4:-} c=$1/DEBIAN
    install -d -m 0755 "$c"
    for script in postinst prerm postrm; do install -m 0755 "packaging/deb/$script" "$c/$script"; done
    (cd "$root" && find etc -type f -printf '/%p\n' | sort) >"$c/conffiles"
    (cd "$root" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\n' | sort |
        xargs md5sum) >"$c/md5sums"
    chmod 0644 "$c/conffiles" "$c/md5sums"
    {
        echo "Package: $name"
        echo "Version: $version-$release"
        echo "Architecture: $(dpkg --print-architecture)"
        echo "Maintainer: nginx-ha authors <nginx-ha@invalid>"
        echo "Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)"
        echo "Depends: $depends"
        [ -z "$extra" ] || echo "$extra"
        echo "Section: net"
        echo "Priority: optional"
        echo "Description: $description"
    } >"$c/control"
    dpkg-deb --root-owner-group --build "$root" "$out/${name}_${version}-${release}_$(dpkg --print-architecture).deb" >&2
}

root=$work/deb
stage_common "$root"
# The dpkg file trigger: postinst is called with `triggered` when /usr/sbin/nginx is replaced.
install -D -m 0644 packaging/deb/triggers "$root/DEBIAN/triggers"
build_deb "$root" nginx-ha "$(shlibs_depends "$root/usr/sbin/nginx-ha"), nginx | nginx-light | nginx-core | nginx-full | nginx-extras"

if [ -n "$bundled" ]; then
    root=$work/deb-bundled
    stage_common "$root"
    # Exit 3 from it (no TARBALL, and Debian's source cannot be downloaded) is passed on as 3.
    nginx=$(DESTDIR=$root packaging/nginx/build.sh ${tarball:+"$tarball"} | tail -n 1) ||
        { rc=$?; say "packaging/nginx/build.sh failed (exit $rc)"; exit "$rc"; }
    [ -x "$nginx" ] || { say "packaging/nginx/build.sh gave no nginx binary"; exit 1; }
    rm -rf "$root/run" # systemd's RuntimeDirectory=
    # The default config runs the bundled nginx with its own config.
    sed -i -e 's#^binary = "/usr/sbin/nginx" *#binary = "/usr/lib/nginx-ha/nginx/sbin/nginx"#' \
        -e 's#^config = "/etc/nginx/nginx.conf" *#config = "/etc/nginx-ha/nginx/nginx.conf"#' \
        "$root/etc/nginx-ha/nginx-ha.toml"
    grep -q '^binary = "/usr/lib/nginx-ha/nginx/sbin/nginx"' "$root/etc/nginx-ha/nginx-ha.toml" &&
        grep -q '^config = "/etc/nginx-ha/nginx/nginx.conf"' "$root/etc/nginx-ha/nginx-ha.toml" ||
        { say "conf/nginx-ha.toml no longer has the binary/config lines the bundled variant rewrites"; exit 1; }
    build_deb "$root" nginx-ha-bundled "$(shlibs_depends "$root/usr/sbin/nginx-ha" "$nginx")" \
        "Provides: nginx-ha
Conflicts: nginx-ha
Replaces: nginx-ha"
fi

# ---- rpm ---------------------------------------------------------------------------------------
rpmbuild -bb --quiet --nodeps \
    --define "_topdir $work/rpmbuild" \
    --define "_rpmdir $out" \
    --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
    --define "nha_version $version" \
    --define "nha_release $release" \
    --define "nha_binary $binary" \
    --define "nha_src $repo" \
    --define "nha_config $config" \
    packaging/rpm/nginx-ha.spec >&2

ls -1 "$out"/*.deb "$out"/*.rpm

#!/usr/bin/env bash
# packaging/nginx/build.sh [TARBALL]: builds nginx from a source tarball for nginx-ha's own
# prefix and installs it; the LAST line of the output is the path of the installed nginx binary.
#
#   TARBALL   an nginx-X.Y.Z.tar.gz (upstream, or Debian's nginx_X.Y.Z.orig.tar.gz, which is the
#             same file, without Debian's patches). Without it, Debian's source package is
#             downloaded with apt-get source and unpacked with dpkg-source, which applies Debian's
#             patches (security fixes included; see fetch_debian_source below).
#   DESTDIR   (environment) stage the installation under DESTDIR instead of / (packaging, tests;
#             no root needed). Without it the install goes to the real prefix and needs root.
#
# The layout (the same one the nginx-ha-bundled package ships):
#   /usr/lib/nginx-ha/nginx/sbin/nginx      the binary       (--sbin-path)
#   /usr/lib/nginx-ha/nginx/html/           index.html, 50x.html (--prefix: relative paths)
#   /etc/nginx-ha/nginx/                    nginx.conf, mime.types, ... (--conf-path)
#   /var/log/nginx-ha/access.log            default access log; the error log defaults to stderr,
#                                           which nginx-ha passes on to its own log (journal)
#   /run/nginx-ha/nginx.pid                 (systemd's RuntimeDirectory=nginx-ha)
#   /var/lib/nginx-ha/nginx-*               temp files (client bodies, proxy, fastcgi, uwsgi, scgi)
#
# The object tree is kept in target/nginx/<tarball sha256>/, so a second run with the same tarball
# only installs again. Needs a C compiler, make and the -dev packages of PCRE2 (or PCRE), zlib and
# OpenSSL; as root on Debian, the missing ones are installed with apt-get.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

prefix=/usr/lib/nginx-ha/nginx
sbin=$prefix/sbin/nginx
configure_args=(
    --prefix="$prefix"
    --sbin-path="$sbin"
    --modules-path="$prefix/modules"
    --conf-path=/etc/nginx-ha/nginx/nginx.conf
    --error-log-path=stderr
    --http-log-path=/var/log/nginx-ha/access.log
    --pid-path=/run/nginx-ha/nginx.pid
    --lock-path=/run/nginx-ha/nginx.lock
    --http-client-body-temp-path=/var/lib/nginx-ha/nginx-body
    --http-proxy-temp-path=/var/lib/nginx-ha/nginx-proxy
    --http-fastcgi-temp-path=/var/lib/nginx-ha/nginx-fastcgi
    --http-uwsgi-temp-path=/var/lib/nginx-ha/nginx-uwsgi
    --http-scgi-temp-path=/var/lib/nginx-ha/nginx-scgi
    --user=www-data
    --group=www-data
    # What the status probe and TLS need, then the usual set of Debian's nginx-light/core.
    --with-http_stub_status_module
    --with-http_ssl_module
    --with-http_v2_module
    --with-http_realip_module
    --with-http_gzip_static_module
    --with-http_gunzip_module
    --with-http_sub_module
    --with-http_addition_module
    --with-http_auth_request_module
    --with-http_slice_module
    --with-http_secure_link_module
    --with-threads
    --with-file-aio
    --with-pcre-jit
    --with-stream
    --with-stream_ssl_module
    --with-stream_ssl_preread_module
    --with-stream_realip_module
    --with-compat
    --with-cc-opt="-g -O2 -fstack-protector-strong -Wformat -Werror=format-security -fPIC -D_FORTIFY_SOURCE=2"
    --with-ld-opt="-Wl,-z,relro -Wl,-z,now -fPIC"
)

say() { echo "packaging/nginx/build.sh: $*" >&2; }

# The build dependencies, installed when root on a Debian-like system and missing.
ensure_build_deps() {
    local missing=()
    command -v cc >/dev/null || missing+=(gcc)
    command -v make >/dev/null || missing+=(make)
    [ -n "${tarball:-}" ] || command -v dpkg-source >/dev/null || missing+=(dpkg-dev)
    [ -e /usr/include/zlib.h ] || missing+=(zlib1g-dev)
    [ -e /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
    if [ ! -e /usr/include/pcre2.h ] && [ ! -e /usr/include/pcre.h ]; then missing+=(libpcre2-dev); fi
    [ ${#missing[@]} = 0 ] && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing ${missing[*]}"
        local apt=(apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600)
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" "${missing[@]}" >/dev/null ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${apt[@]}" "${missing[@]}" >/dev/null; }
    else
        say "missing ${missing[*]} (Debian: apt-get install ${missing[*]}); run as root to have them installed"
        exit 2
    fi
}

# fetch_debian_source DIR: Debian's nginx source tarball into DIR; prints its path.
# The deb-src entries mirror the machine's deb entries (one-line *.list and deb822 *.sources), in
# a private apt configuration (sources, lists and cache under DIR), so /etc/apt and the system's
# package lists stay untouched; apt checks the download against the signed Sources index.
fetch_debian_source() {
    local dir=$1 parts=$1/apt/sources.list.d f
    mkdir -p "$parts" "$dir/apt/lists/partial" "$dir/apt/cache/archives/partial" "$dir/src"
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        sed -n -E 's/^[[:space:]]*deb([[:space:]])/deb-src\1/p' "$f" >>"$parts/nginx-ha-src.list"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # Types: deb [deb-src] -> deb-src; a stanza without deb becomes a disabled one.
        awk '
             /^Types:/ { if ($0 ~ /[[:space:]]deb([[:space:]]|$)/) $0 = "Types: deb-src"; else $0 = $0 "\nEnabled: no" }
             { print }' "$f" >"$parts/${f##*/}"
    done
    if ! grep -rqsE '^(deb-src|Types: deb-src)' "$parts"; then
        say "no deb entry in /etc/apt/sources.list{,.d/} to mirror as deb-src"
        return 1
    fi
    local apt=(apt-get -q -o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$parts"
        -o "Dir::State::Lists=$dir/apt/lists" -o "Dir::Cache=$dir/apt/cache")
    say "apt-get update (deb-src, private lists in $dir/apt)"
    "${apt[@]}" update >&2 || return 1
    # Newest first; a mirror missing the newest .dsc (seen with security mirrors) still has the
    # release's own: fall back to nginx/CODENAME.
    local codename
    codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
    for which in nginx ${codename:+"nginx/$codename"}; do
        rm -f "$dir/src"/*
        (cd "$dir/src" && "${apt[@]}" source --download-only "$which" >&2) || true
        local dsc
        dsc=$(ls "$dir/src"/nginx_*.dsc 2>/dev/null | head -n 1 || true)
        if [ -n "$dsc" ] && [ -n "$(ls "$dir/src"/nginx_*.orig.tar.gz 2>/dev/null)" ]; then
            debian_patched "$dsc" "$dir"
            return
        fi
    done
    say "apt-get source nginx gave no nginx_*.dsc with its nginx_*.orig.tar.gz"
    return 1
}

# debian_patched DSC DIR: the source of DSC unpacked by dpkg-source, which applies Debian's
# patch series (its security fixes among them: the upstream tarball alone lacks them), packed
# again as DIR/nginx_<Debian version>.debian-patched.tar.gz; prints its path.
debian_patched() {
    local dsc=$1 dir=$2 version tree
    version=$(sed -n 's/^Version: //p' "$dsc" | head -n 1)
    tree=$dir/nginx-patched
    rm -rf "$tree"
    # apt checked the files against the signed Sources index; dpkg-source warns that it cannot
    # check the .dsc signature itself where no keyring is installed, which is fine here.
    dpkg-source -x "$dsc" "$tree" >&2 || { say "dpkg-source -x $dsc failed"; return 1; }
    local patches=0
    [ -f "$tree/debian/patches/series" ] && patches=$(grep -cvE '^[[:space:]]*(#|$)' "$tree/debian/patches/series" || true)
    say "nginx $version: Debian's source with its $patches patches applied"
    rm -rf "$tree/debian"
    tar -czf "$dir/nginx_$version.debian-patched.tar.gz" -C "$dir" nginx-patched
    echo "$dir/nginx_$version.debian-patched.tar.gz"
}

tarball=${1:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# cargo's target directory (CARGO_TARGET_DIR, .cargo/config), as packaging/build.sh finds it.
target_dir=$(cd "$repo" && cargo metadata --no-deps --format-version 1 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p' || true)
target_dir=${target_dir:-${CARGO_TARGET_DIR:-$repo/target}}
# Before the download: dpkg-source (dpkg-dev) unpacks it.
ensure_build_deps
if [ -z "$tarball" ]; then
    # Downloaded once, kept in target/nginx/debian-source/ (delete it to download again).
    cached=$target_dir/nginx/debian-source
    tarball=$(ls "$cached"/nginx_*.debian-patched.tar.gz 2>/dev/null | head -n 1 || true)
    if [ -z "$tarball" ]; then
        tarball=$(fetch_debian_source "$tmp") || { say "cannot get Debian's nginx source; pass a TARBALL"; exit 3; }
        mkdir -p "$cached"
        cp "$tarball" "$cached/"
        tarball=$cached/${tarball##*/}
    else
        say "using $tarball (downloaded before)"
    fi
fi
[ -f "$tarball" ] || { say "$tarball: no such file"; exit 2; }
tarball=$(cd "$(dirname "$tarball")" && pwd)/$(basename "$tarball")

sum=$(sha256sum "$tarball" | cut -d' ' -f1)
build=$target_dir/nginx/$sum
# The configure arguments are part of the key too: a changed recipe rebuilds.
key=$(printf '%s\n' "${configure_args[@]}" | sha256sum | cut -d' ' -f1)
if [ ! -x "$build/objs/nginx" ] || [ "$(cat "$build/.configured" 2>/dev/null)" != "$key" ]; then
    rm -rf "$build"
    mkdir -p "$build"
    tar -xzf "$tarball" -C "$build" --strip-components=1
    [ -x "$build/configure" ] || { say "$tarball has no nginx source (no configure)"; exit 2; }
    say "configure and make in $build"
    (cd "$build" && ./configure "${configure_args[@]}" >configure.log 2>&1) ||
        { tail -n 30 "$build/configure.log" >&2; say "configure failed ($build/configure.log)"; exit 1; }
    (cd "$build" && make -j"$(nproc)" >make.log 2>&1) ||
        { tail -n 30 "$build/make.log" >&2; say "make failed ($build/make.log)"; exit 1; }
    echo "$key" >"$build/.configured"
else
    say "reusing the build in $build"
fi

destdir=${DESTDIR:-}
if [ -z "$destdir" ] && [ "$(id -u)" != 0 ]; then
    say "installing into $prefix needs root (or set DESTDIR)"
    exit 2
fi
(cd "$build" && make install DESTDIR="$destdir" >install.log 2>&1) ||
    { tail -n 30 "$build/install.log" >&2; say "make install failed"; exit 1; }
# make install also leaves the .default copies and an empty logs/ under the prefix: not needed.
rm -f "$destdir"/etc/nginx-ha/nginx/*.default
rmdir "$destdir$prefix/logs" 2>/dev/null || true
install -d -m 0755 "$destdir/var/log/nginx-ha" "$destdir/var/lib/nginx-ha"
strip "$destdir$sbin"
"$destdir$sbin" -V >&2 2>&1
echo "$destdir$sbin"

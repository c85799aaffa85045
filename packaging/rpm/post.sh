# %post of nginx-ha. $1: 1 on a first install, 2 on an upgrade.
# What %systemd_post expands to, written out because cargo-generate-rpm builds without rpmbuild.

# /var/lib/nginx-ha holds the persistent aliases; `nginx-ha alias add` works without a running
# daemon, before systemd's StateDirectory= would have created it. (cargo-generate-rpm cannot make
# the package own a directory.)
install -d -m 0755 /var/lib/nginx-ha

if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ] && [ -x /usr/bin/systemctl ]; then
    # Enabled or not as the distribution's presets say (Fedora and RHEL: disabled unless listed),
    # never started: the example config must be edited first, and starting it would stop the
    # distro nginx (Conflicts=).
    systemctl --no-reload preset nginx-ha.service >/dev/null 2>&1 || :
    echo "nginx-ha: edit /etc/nginx-ha/nginx-ha.toml, check it with \`nginx-ha check\`, then \`systemctl enable --now nginx-ha\`." >&2
fi

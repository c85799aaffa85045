# %post of nginx-ha. $1: 1 on a first install, 2 on an upgrade.
# What %systemd_post expands to, and on an upgrade the in-place re-execution (`nginx-ha upgrade`)
# with a fallback to the restart that %systemd_postun_with_restart would do.

# /var/lib/nginx-ha holds the persistent aliases; `nginx-ha alias add` works without a running
# daemon, before systemd's StateDirectory= would have created it. (The package owns the
# directory too; this restores it if it was deleted.)
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
if [ "$1" -ge 2 ]; then
    # Upgrade: a running nginx-ha re-executes the new binary in place (same PID; the VIPs, the
    # VRRP states and nginx stay), and answers only once the new binary runs.
    if out=$(/usr/sbin/nginx-ha upgrade 2>&1); then
        echo "nginx-ha: the running daemon now runs the new binary (nginx-ha upgrade)" >&2
    elif [ -d /run/systemd/system ]; then
        # No daemon answered (then try-restart does nothing either), or it could not re-execute
        # (a daemon too old to know `upgrade`, or the new binary did not start): a running
        # nginx-ha is restarted onto the new binary. It hands its VIPs to the peer and stops nginx
        # before exiting, so the peer serves meanwhile.
        echo "nginx-ha: no in-place upgrade (${out:-nginx-ha upgrade failed}); try-restart instead" >&2
        systemctl try-restart nginx-ha.service >/dev/null 2>&1 || :
    fi
fi

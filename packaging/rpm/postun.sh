# %postun of nginx-ha. $1: 0 when the package is erased, 1 on an upgrade.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    # Upgrade: only a running nginx-ha is restarted onto the new binary. It hands its VIPs to the
    # peer and stops nginx before exiting, so the peer serves meanwhile.
    if [ "$1" -ge 1 ]; then
        systemctl try-restart nginx-ha.service >/dev/null 2>&1 || :
    fi
fi

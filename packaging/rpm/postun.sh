# %postun of nginx-ha. $1: 0 when the package is erased, 1 on an upgrade.
# No restart on an upgrade: the new package's %post did it (`nginx-ha upgrade`, else try-restart).
# (An upgrade from 0.1.0-1 still restarts once more: the scriptlet that runs here is the old
# package's, and 0.1.0-1's did a try-restart.)
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi

# %preun of nginx-ha. $1: 0 when the package is erased, 1 on an upgrade.
# On erase: disable and stop (nginx-ha stops the nginx it runs). On an upgrade the old daemon
# keeps running until %postun restarts it once.
if [ "$1" -eq 0 ] && [ -x /usr/bin/systemctl ]; then
    systemctl --no-reload disable --now nginx-ha.service >/dev/null 2>&1 || :
fi

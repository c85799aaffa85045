# %triggerin -- nginx of nginx-ha: the nginx package was installed or upgraded (also run when
# nginx-ha is installed while nginx is). A running nginx-ha (one that answers on its control
# socket) moves nginx onto the new binary without dropping a connection; a stopped one starts the
# new binary anyway when it starts.
if /usr/sbin/nginx-ha status >/dev/null 2>&1; then
    /usr/sbin/nginx-ha upgrade-nginx >&2 ||
        echo "nginx-ha: upgrade-nginx failed: nginx runs the old binary until nginx-ha restarts" >&2
else
    echo "nginx-ha: nginx was installed or upgraded; nginx-ha is not running, nothing to upgrade" >&2
fi

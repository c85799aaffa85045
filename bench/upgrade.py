#!/usr/bin/env python3
"""Live nginx binary upgrade, three ways, on loopback: prints figures, not pass/fail.

usage: python3 bench/upgrade.py [NGINX_HA_BINARY] [--reps N]
       (NGINX_HA_BINARY defaults to target/release/nginx-ha)

1. `usr2-foreground`: nginx in the foreground (`daemon off`, as nginx-ha runs it) as our child,
   then USR2: does nginx start a new master at all?
2. `usr2-daemonized`: nginx daemonized under this script as child subreaper (the alternative
   for nginx-ha): USR2, wait for the new master (reparented to us once the old one leaves) and
   its workers, WINCH + QUIT the old master.
3. `nginx-ha`: `nginx-ha upgrade-nginx` (the old master's sockets handed to the new binary).

For 2 and 3 a client opens a new connection (HTTP/1.0, Connection: close) in a loop during the
whole run; every failed request is counted. Each upgrade is timed until the new master serves
and until the old master is gone. Needs nginx; no root. Everything started here is stopped by
pid; each run gets its own temp dir and free port.
"""

import argparse
import ctypes
import datetime
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

NGINX = next((p for p in ("/usr/sbin/nginx", "/usr/bin/nginx") if os.path.exists(p)), "nginx")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx_conf(d, port):
    return (f"worker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n"
            f"events {{ worker_connections 256; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n"
            f"  proxy_temp_path {d}/proxy;\n  server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"up\\n\"; }} }}\n}}\n")


def get(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: b\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            return data.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


class Client(threading.Thread):
    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.ok, self.failed, self.stopped = port, 0, 0, False

    def run(self):
        while not self.stopped:
            if get(self.port):
                self.ok += 1
            else:
                self.failed += 1

    def finish(self):
        self.stopped = True
        self.join()
        return self.ok, self.failed


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def children(pid):
    text = read(f"/proc/{pid}/task/{pid}/children") or ""
    return [int(p) for p in text.split()]


def workers(master):
    return [p for p in children(master) if "worker process" in (read(f"/proc/{p}/cmdline") or "")]


def alive(pid):
    stat = read(f"/proc/{pid}/stat")
    return stat is not None and stat[stat.rfind(")") + 2] != "Z"


def wait_until(condition, timeout=10.0, step=0.001):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(step)
    return None


def fmt(values):
    if not values:
        return "—"
    v = sorted(1000 * x for x in values)
    return f"{v[0]:.0f} / {statistics.median(v):.0f} / {v[-1]:.0f} ms"


def usr2_foreground():
    d = tempfile.mkdtemp(prefix="nginx-upgrade-bench-")
    port = free_port()
    with open(f"{d}/nginx.conf", "w") as f:
        f.write(nginx_conf(d, port))
    master = subprocess.Popen([NGINX, "-c", f"{d}/nginx.conf", "-g", "daemon off; master_process on;"])
    try:
        wait_until(lambda: len(workers(master.pid)) == 2)
        master.send_signal(signal.SIGUSR2)
        time.sleep(1.0)
        new = [p for p in children(master.pid) if "master process" in (read(f"/proc/{p}/cmdline") or "")]
        log = read(f"{d}/error.log") or ""
        ignored = next((line.split(": ", 1)[-1] for line in log.splitlines() if "ignor" in line), None)
        return {"new_master_started": bool(new), "log": ignored}
    finally:
        master.send_signal(signal.SIGQUIT)  # workers and all
        try:
            master.wait(timeout=10)
        except subprocess.TimeoutExpired:
            for pid in [master.pid, *children(master.pid)]:
                os.kill(pid, signal.SIGKILL)
            master.wait()
        shutil.rmtree(d, ignore_errors=True)


def usr2_daemonized(reps):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    d = tempfile.mkdtemp(prefix="nginx-upgrade-bench-")
    port = free_port()
    with open(f"{d}/nginx.conf", "w") as f:
        f.write(nginx_conf(d, port))
    subprocess.run([NGINX, "-c", f"{d}/nginx.conf"], check=True)  # daemonizes; the master comes to us
    master = wait_until(lambda: int(read(f"{d}/nginx.pid") or 0))
    wait_until(lambda: len(workers(master)) == 2)
    client = Client(port)
    client.start()
    time.sleep(0.3)
    serving, done, parents = [], [], []
    try:
        for _ in range(reps):
            start = time.monotonic()
            os.kill(master, signal.SIGUSR2)
            new = wait_until(lambda: next((p for p in children(master) if "master process" in
                                           (read(f"/proc/{p}/cmdline") or "")), None))
            wait_until(lambda: len(workers(new)) == 2)
            serving.append(time.monotonic() - start)
            os.kill(master, signal.SIGWINCH)
            os.kill(master, signal.SIGQUIT)
            os.waitpid(master, 0)
            done.append(time.monotonic() - start)
            wait_until(lambda: os.getpid() == int(read(f"/proc/{new}/stat").rsplit(")", 1)[1].split()[1]))
            parents.append(int(read(f"/proc/{new}/stat").rsplit(")", 1)[1].split()[1]) == os.getpid())
            master = new
            time.sleep(0.2)
    finally:
        ok, failed = client.finish()
        os.kill(master, signal.SIGQUIT)
        try:
            os.waitpid(master, 0)
        except ChildProcessError:
            pass
        shutil.rmtree(d, ignore_errors=True)
    return {"serving_s": serving, "done_s": done, "ok": ok, "failed": failed,
            "new_master_reparented_to_us": all(parents)}


def nginx_ha(binary, reps):
    d = tempfile.mkdtemp(prefix="nginx-upgrade-bench-")
    port = free_port()
    with open(f"{d}/nginx.conf", "w") as f:
        f.write(nginx_conf(d, port))
    os.makedirs(f"{d}/bin")
    shutil.copy(NGINX, f"{d}/bin/nginx")
    config = f"{d}/nginx-ha.toml"
    with open(config, "w") as f:
        f.write(f"[nginx]\nbinary = \"{d}/bin/nginx\"\nconfig = \"{d}/nginx.conf\"\nwatch = false\n\n"
                f"[daemon]\ncontrol_socket = \"{d}/control.sock\"\nstate_dir = \"{d}/state\"\n")
    log = open(f"{d}/nginx-ha.log", "w")
    daemon = subprocess.Popen([binary, "run", "-c", config], stdout=log, stderr=log)

    def status():
        out = subprocess.run([binary, "status", "--json", "-c", config], capture_output=True, text=True)
        return json.loads(out.stdout)["nginx"] if out.returncode == 0 else {}

    try:
        wait_until(lambda: status().get("healthy"), 30, 0.05)
        client = Client(port)
        client.start()
        time.sleep(0.3)
        done, restarts = [], []
        for _ in range(reps):
            before = status()["master_pid"]
            start = time.monotonic()
            result = subprocess.run([binary, "upgrade-nginx", "-c", config], capture_output=True, text=True)
            done.append(time.monotonic() - start)
            after = status()
            if result.returncode != 0 or after["master_pid"] == before or alive(before):
                raise RuntimeError(f"upgrade failed: {result.stderr} {after}")
            restarts.append(after["restarts"])
            time.sleep(0.2)
        ok, failed = client.finish()
        return {"done_s": done, "ok": ok, "failed": failed, "restarts": max(restarts)}
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
        shutil.rmtree(d, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binary", nargs="?", default="target/release/nginx-ha")
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    version = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip()
    print(f"# live nginx upgrade, {datetime.datetime.now():%Y-%m-%d %H:%M}, {args.reps} upgrades each; {version}; "
          f"nproc {os.cpu_count()}; load {os.getloadavg()[0]:.2f}")
    fg = usr2_foreground()
    print(f"usr2-foreground (daemon off, our child): new master started: {fg['new_master_started']}; "
          f"nginx says: {fg['log']}")
    dz = usr2_daemonized(args.reps)
    print(f"usr2-daemonized (under a subreaper): new master serving {fmt(dz['serving_s'])}, old master gone "
          f"{fmt(dz['done_s'])}; {dz['failed']} of {dz['ok'] + dz['failed']} requests failed; new master "
          f"reparented to us: {dz['new_master_reparented_to_us']}")
    ha = nginx_ha(os.path.abspath(args.binary), args.reps)
    print(f"nginx-ha upgrade-nginx (sockets handed over): command done (new master serving, old gone) "
          f"{fmt(ha['done_s'])}; {ha['failed']} of {ha['ok'] + ha['failed']} requests failed; restarts {ha['restarts']}")


if __name__ == "__main__":
    main()

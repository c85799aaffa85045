#!/usr/bin/env python3
"""Supervision benchmarks for nginx-ha: restart after kill -9, config edit to new config,
reloads under wrk load, idle footprint. Prints figures (min/median/max); not a pass/fail test.

usage: bench/supervision.sh [NGINX_HA_BINARY] [--reps N] [--only kill,edit,load,idle]
                            [--reloads N] [--idle-seconds S]
       (NGINX_HA_BINARY defaults to target/release/nginx-ha; run `cargo build --release` first)

Everything runs in a fresh temp dir (created by supervision.sh, or here with --workdir unset),
on 127.0.0.1 only, each daemon with its own free port and its own control socket. Every process
started here is stopped by pid at the end; every loop is bounded in count and time.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

NGINX = next((p for p in ("/usr/sbin/nginx", "/usr/bin/nginx") if os.path.exists(p)), None)
CLK_TCK = os.sysconf("SC_CLK_TCK")

# --------------------------------------------------------------------------------------------
# Bookkeeping of the processes we start, so that they are all stopped by pid at the end.

STATE = {"workdir": None, "daemons": {}, "nginx": set(), "others": {}}


def record(kind, pid):
    """Appends to WORKDIR/pids, read by supervision.sh's EXIT trap as a safety net."""
    with open(os.path.join(STATE["workdir"], "pids"), "a") as f:
        f.write(f"{kind} {pid}\n")


def read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return None


def cmdline(pid):
    text = read_text(f"/proc/{pid}/cmdline")
    return None if text is None else text.replace("\0", " ").strip()


def ppid_of(pid):
    stat = read_text(f"/proc/{pid}/stat")
    if not stat:
        return None
    return int(stat[stat.rfind(")") + 1:].split()[1])


def is_zombie(pid):
    stat = read_text(f"/proc/{pid}/stat")
    return stat is None or stat[stat.rfind(")") + 1:].split()[0] in ("Z", "X")


def our_nginx(pid):
    """An nginx process of this benchmark: a master whose command line names our temp dir, or a
    process whose parent is such a master or one of our daemons (orphans come to the daemon)."""
    own = cmdline(pid)
    if not own or not own.startswith("nginx") or is_zombie(pid):
        return False
    if STATE["workdir"] in own:
        return True
    parent = ppid_of(pid)
    if parent is None:
        return False
    if parent in STATE["daemons"]:
        return True
    parent_cmd = cmdline(parent) or ""
    if parent_cmd.startswith("nginx"):
        return STATE["workdir"] in parent_cmd
    # An orphaned worker whose master and daemon are gone (reparented to init or a subreaper).
    return own.startswith("nginx: worker") or own.startswith("nginx: cache")


def remember_nginx(pids, seen):
    for pid in pids:
        if pid:
            seen.add(pid)
        if pid and pid not in STATE["nginx"]:
            STATE["nginx"].add(pid)
            record("nginx", pid)


def cleanup():
    for pid, proc in list(STATE["others"].items()):
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    STATE["others"].clear()
    for pid, daemon in list(STATE["daemons"].items()):
        daemon.stop()
    for pid in sorted(STATE["nginx"]):
        if our_nginx(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# --------------------------------------------------------------------------------------------
# HTTP on loopback

def get(port, connect_timeout=0.05, read_timeout=1.0):
    """One HTTP/1.0 GET; the body (stripped) on a 200, else None."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=connect_timeout)
    except OSError:
        return None
    try:
        s.settimeout(read_timeout)
        s.sendall(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        return None
    finally:
        s.close()
    if not data.startswith(b"HTTP/1.1 200"):
        return None
    parts = data.split(b"\r\n\r\n", 1)
    return parts[1].decode(errors="replace").strip() if len(parts) == 2 else None


def parse_body(body):
    """Bodies are "$pid GEN": the worker's pid and the config generation token."""
    if not body:
        return None, None
    fields = body.split()
    try:
        return int(fields[0]), (fields[1] if len(fields) > 1 else None)
    except ValueError:
        return None, None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# One nginx-ha daemon supervising one nginx, in its own subdirectory

LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z\s+(\w+)\s+(.*)$")


class Instance:
    def __init__(self, binary, root, name, probes=True, debounce_ms=None, workers=2):
        self.binary = binary
        self.dir = os.path.join(root, name)
        os.makedirs(os.path.join(self.dir, "sites"))
        self.port = free_port()
        self.config = os.path.join(self.dir, "nginx-ha.toml")
        self.log = os.path.join(self.dir, "daemon.log")
        self.proc = None
        self.seen = set()
        d = self.dir
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write(
                f"worker_processes {workers};\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n"
                "events { worker_connections 1024; }\n"
                f"http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n"
                f"  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n"
                f"  include {d}/sites/*.conf;\n}}\n"
            )
        self.set_body("g0")
        health = "interval_ms = 1000\ntimeout_ms = 500\n"
        if probes:
            health += f'http = "http://127.0.0.1:{self.port}/"\n'
        debounce = f"watch_debounce_ms = {debounce_ms}\n" if debounce_ms is not None else ""
        with open(self.config, "w") as f:
            f.write(
                f'[nginx]\nbinary = "{NGINX}"\nconfig = "{d}/nginx.conf"\n{debounce}\n'
                f"[health]\n{health}\n"
                f'[daemon]\ncontrol_socket = "{d}/control.sock"\nstate_dir = "{d}/state"\n'
            )

    def site(self, gen):
        return f'server {{\n  listen 127.0.0.1:{self.port};\n  location / {{ return 200 "$pid {gen}\\n"; }}\n}}\n'

    def set_body(self, gen, rename=False):
        """Rewrites the included site file in place, or by write-to-temp and rename."""
        target = os.path.join(self.dir, "sites", "site.conf")
        if rename:
            temp = target + ".tmp"
            with open(temp, "w") as f:
                f.write(self.site(gen))
            os.rename(temp, target)
        else:
            with open(target, "w") as f:
                f.write(self.site(gen))

    def start(self):
        log = open(self.log, "ab")
        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        env.pop("NOTIFY_SOCKET", None)
        env.pop("JOURNAL_STREAM", None)  # log to daemon.log, which the phases are read from
        self.proc = subprocess.Popen([self.binary, "run", "-c", self.config], stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        log.close()
        STATE["daemons"][self.proc.pid] = self
        record("daemon", self.proc.pid)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        STATE["daemons"].pop(self.proc.pid, None)
        self.proc = None
        # The daemon stops nginx itself; anything of this instance's nginx still alive is killed.
        for pid in sorted(self.seen):
            if our_nginx(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def cli(self, *args, timeout=30):
        return subprocess.run([self.binary, *args, "-c", self.config], capture_output=True, text=True, timeout=timeout)

    def status(self):
        out = self.cli("status", "--json", timeout=10)
        if out.returncode != 0:
            return None
        try:
            nginx = json.loads(out.stdout)["nginx"]
        except (ValueError, KeyError):
            return None
        remember_nginx([nginx.get("master_pid")] + list(nginx.get("worker_pids") or []), self.seen)
        return nginx

    def wait_status(self, what, check, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx-ha exited ({self.proc.returncode}); see {self.log}:\n{self.log_tail()}")
            nginx = self.status()
            if nginx and check(nginx):
                return nginx
            time.sleep(0.02)
        raise RuntimeError(f"timed out waiting for {what}; last status {self.status()}\n{self.log_tail()}")

    def wait_serving(self, timeout=20.0):
        """nginx running with master and workers known to the daemon, and answering GETs."""
        nginx = self.wait_status(
            "nginx running", lambda n: n["state"] == "running" and n["master_pid"] and n["worker_pids"], timeout
        )
        deadline = time.monotonic() + timeout
        while get(self.port) is None:
            if time.monotonic() > deadline:
                raise RuntimeError("nginx does not answer")
            time.sleep(0.01)
        return nginx

    def log_tail(self, n=30):
        return "\n".join((read_text(self.log) or "").splitlines()[-n:])

    def log_offset(self):
        try:
            return os.path.getsize(self.log)
        except OSError:
            return 0

    def log_events(self, offset):
        """(wall time, level, message) of the log lines written after `offset`."""
        with open(self.log, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        events = []
        for line in text.splitlines():
            m = LOG_LINE.match(line)
            if not m:
                continue
            stamp = m.group(1)
            if "." in stamp:
                head, frac = stamp.split(".")
                stamp = f"{head}.{(frac + '000000')[:6]}"
            else:
                stamp += ".000000"
            wall = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc).timestamp()
            events.append((wall, m.group(2), m.group(3)))
        return events


def phase_times(events, t0_wall, markers):
    """ms from t0 to the first log line containing each marker (None if absent)."""
    out = {}
    for key, needle in markers.items():
        out[key] = next(((wall - t0_wall) * 1000 for wall, _, msg in events if needle in msg and wall >= t0_wall - 0.001), None)
    return out


# --------------------------------------------------------------------------------------------
# Figures

def summary(values, unit="ms", digits=1):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    fmt = f"{{:.{digits}f}}"
    return f"min {fmt.format(min(values))} / median {fmt.format(statistics.median(values))} / max {fmt.format(max(values))} {unit} (n={len(values)})"


RESULTS = {}


def report(key, label, values, target=None, unit="ms", digits=1):
    RESULTS[key] = {"values": [v for v in values if v is not None], "unit": unit, "target": target}
    line = f"  {label:<46} {summary(values, unit, digits)}"
    if target is not None:
        finite = [v for v in values if v is not None]
        verdict = "met" if finite and len(finite) == len(values) and max(finite) <= target else "NOT met"
        line += f"   target <= {target:g} {unit}: {verdict}"
    print(line, flush=True)


def poll_until(port, done, timeout=10.0, every=0.002):
    """Polls GET every `every` s until done(body) is true; (seconds since now, body, trace) or
    (None, last body, trace) on timeout. The trace lists (t, pid, gen) of every answer (None
    fields on failure)."""
    start = time.monotonic()
    trace = []
    body = None
    while time.monotonic() - start < timeout:
        body = get(port)
        t = time.monotonic() - start
        pid, gen = parse_body(body)
        trace.append((t, pid, gen))
        if body is not None and done(pid, gen):
            return t, body, trace
        time.sleep(every)
    return None, body, trace


# --------------------------------------------------------------------------------------------
# 1. kill -9 nginx -> serving again

KILL_MARKERS = {
    "detected": "nginx master exited",
    "spawned": "nginx started",
    "workers_found": "nginx is serving",
}


def workers_of(master):
    """The master's worker processes, from /proc (independent of what the daemon reports)."""
    kids = (read_text(f"/proc/{master}/task/{master}/children") or "").split()
    return sorted(int(k) for k in kids if "worker process" in (cmdline(int(k)) or ""))


def kill_once(inst, master_only, expected_workers=2):
    nginx = inst.wait_serving()
    deadline = time.monotonic() + 5
    while len(workers_of(nginx["master_pid"])) < expected_workers and time.monotonic() < deadline:
        time.sleep(0.01)
    nginx = inst.status()
    master, listed = nginx["master_pid"], list(nginx["worker_pids"])
    actual = workers_of(master)
    remember_nginx(actual, inst.seen)
    # The pids come from `nginx-ha status --json`; workers the status did not list are killed
    # too (and counted), so that "kill -9 master+workers" really leaves no nginx process.
    unlisted = [pid for pid in actual if pid not in listed]
    workers = listed + unlisted
    old = set(workers) | {master}
    offset = inst.log_offset()
    t0_wall = time.time()
    t0 = time.monotonic()
    os.kill(master, signal.SIGKILL)
    if not master_only:
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    kill_done = (time.monotonic() - t0) * 1000
    elapsed, body, trace = poll_until(inst.port, lambda pid, gen: pid is not None and pid not in old)
    # Let the daemon finish logging this restart before reading the log.
    inst.wait_serving()
    phases = phase_times(inst.log_events(offset), t0_wall, KILL_MARKERS)
    first_fail = next((t for t, pid, _ in trace if pid is None), None)
    last_old = max((t for t, pid, _ in trace if pid is not None and pid in old), default=None)
    return {
        "ms": None if elapsed is None else elapsed * 1000,
        "kill_syscalls_ms": kill_done,
        "old_answers": sum(1 for _, pid, _ in trace if pid is not None and pid in old),
        "first_failure_ms": None if first_fail is None else first_fail * 1000,
        "last_old_answer_ms": None if last_old is None else last_old * 1000,
        "polls": len(trace),
        "status_listed": len(listed),
        "status_unlisted": len(unlisted),
        **phases,
    }


def bench_kill(binary, root, reps):
    print("\n[1] kill -9 nginx -> GET answered by a new worker  (fresh daemon per repetition: first crash, 100 ms backoff)", flush=True)
    for master_only, label in ((False, "master+workers"), (True, "master only")):
        runs = []
        for i in range(reps):
            inst = Instance(binary, root, f"kill-{'master' if master_only else 'all'}-{i}").start()
            try:
                runs.append(kill_once(inst, master_only))
            finally:
                inst.stop()
        key = "kill_master" if master_only else "kill_all"
        report(key, f"kill -9 {label}: serving again", [r["ms"] for r in runs], target=300)
        report(f"{key}_detected", "  daemon saw the master exit (log)", [r["detected"] for r in runs])
        report(f"{key}_spawned", "  new nginx spawned (log; after 100 ms backoff)", [r["spawned"] for r in runs])
        report(f"{key}_workers", "  daemon found the new workers (log)", [r["workers_found"] for r in runs])
        if master_only:
            report(f"{key}_first_fail", "  first refused GET (orphans killed)", [r["first_failure_ms"] for r in runs])
            report(f"{key}_last_old", "  last GET answered by an orphaned worker", [r["last_old_answer_ms"] for r in runs])
            gaps = [r["ms"] - r["first_failure_ms"] for r in runs if r["ms"] is not None and r["first_failure_ms"] is not None]
            report(f"{key}_gap", "  unavailable (first refused -> new worker)", gaps)
        RESULTS[key]["runs"] = runs
        missed = [r["status_unlisted"] for r in runs]
        print(f"    (`status --json` listed {summary([r['status_listed'] for r in runs], 'workers', 0)} of 2 running; "
              f"it missed a worker in {sum(1 for m in missed if m)} of {len(runs)} starts)", flush=True)

    print("\n[1b] crash loop: 5 kill -9 (master+workers) in a row on one daemon (backoff doubles; informational)", flush=True)
    inst = Instance(binary, root, "kill-loop").start()
    try:
        series = []
        for _ in range(5):
            series.append(kill_once(inst, False))
        print("  serving again after each kill (ms): " + ", ".join(f"{r['ms']:.0f}" for r in series if r["ms"] is not None), flush=True)
        print("  of which spawn at (ms):             " + ", ".join(f"{r['spawned']:.0f}" for r in series if r["spawned"] is not None), flush=True)
        RESULTS["crash_loop"] = {"values": [r["ms"] for r in series], "spawned": [r["spawned"] for r in series], "unit": "ms"}
        state = inst.status()
        print(f"  state after the 5th crash: {state['state'] if state else '?'} (restarts {state['restarts'] if state else '?'})", flush=True)
    finally:
        inst.stop()


# --------------------------------------------------------------------------------------------
# 2. config edit -> new config serving

EDIT_MARKERS = {
    "debounced": "nginx config changed; testing it",
    "hup": "config valid; sent HUP",
    "confirmed": "reload took: new workers started",
}


def edit_once(inst, gen, rename):
    nginx = inst.wait_status("nginx running", lambda n: n["state"] == "running" and n["worker_pids"])
    old_workers = set(workers_of(nginx["master_pid"]))
    remember_nginx(old_workers, inst.seen)
    offset = inst.log_offset()
    t0_wall = time.time()
    t0 = time.monotonic()
    inst.set_body(gen, rename=rename)
    elapsed, body, _ = poll_until(inst.port, lambda pid, g: g == gen)
    # Keep polling until 40 answers in a row come from the new config: old workers go on
    # accepting until the nginx master tells them to quit.
    streak, last_old, deadline = 0, None, time.monotonic() + 3
    while elapsed is not None and streak < 40 and time.monotonic() < deadline:
        pid, g = parse_body(get(inst.port))
        if g == gen:
            streak += 1
        else:
            streak = 0
            if g is not None:
                last_old = time.monotonic() - t0
        time.sleep(0.002)
    nginx = inst.wait_status("reload confirmed", lambda n: n["state"] == "running")
    time.sleep(0.3)  # old workers have quit; the post-reload `nginx -T` has run
    nginx = inst.status() or nginx
    status_matches = sorted(nginx["worker_pids"]) == workers_of(nginx["master_pid"])
    events = inst.log_events(offset)
    phases = phase_times(events, t0_wall, EDIT_MARKERS)
    named = confirmed_workers(events)
    return {
        "ms": None if elapsed is None else elapsed * 1000,
        "last_old_ms": None if last_old is None else last_old * 1000,
        # The scan that confirmed the reload found no worker that was not running before.
        "confirmed_by_old_worker": bool(named) and not (named - old_workers),
        "status_matches": status_matches,
        "status_workers": sorted(nginx["worker_pids"]),
        "actual_workers": workers_of(nginx["master_pid"]),
        **phases,
    }


def bench_edit(binary, root, reps):
    print("\n[2] config edit of the included site file -> GET returns the new body", flush=True)
    counter = 0
    for debounce in (None, 20):
        name = "default 100" if debounce is None else str(debounce)
        inst = Instance(binary, root, f"edit-{debounce or 'default'}", debounce_ms=debounce).start()
        try:
            inst.wait_serving()
            time.sleep(0.5)  # the first `nginx -T` for the watch set has run
            for rename in (False, True):
                runs = []
                for _ in range(reps):
                    counter += 1
                    runs.append(edit_once(inst, f"g{counter}", rename))
                how = "rename" if rename else "in place"
                key = f"edit_{'rename' if rename else 'inplace'}_{debounce or 100}"
                report(key, f"debounce {name} ms, {how}: new body", [r["ms"] for r in runs], target=500)
                report(key + "_debounced", "  debounce fired, `nginx -t` starts (log)", [r["debounced"] for r in runs])
                report(key + "_hup", "  `nginx -t` passed, HUP sent (log)", [r["hup"] for r in runs])
                report(key + "_confirmed", "  daemon confirmed the reload (log)", [r["confirmed"] for r in runs])
                report(key + "_last_old", "  last answer from an old worker", [r["last_old_ms"] for r in runs])
                wrong = sum(1 for r in runs if r["confirmed_by_old_worker"])
                mismatch = sum(1 for r in runs if not r["status_matches"])
                print(f"    reloads 'confirmed' by a pre-edit worker only: {wrong} of {len(runs)}; "
                      f"status worker_pids != the master's workers 300 ms later: {mismatch} of {len(runs)}", flush=True)
                RESULTS[key]["runs"] = runs
            nginx = inst.status() or {}
            warned = sum(1 for _, _, msg in inst.log_events(0) if "nginx worker exited; the master respawns it" in msg)
            print(f"    no worker crashed, yet status worker_exits = {nginx.get('worker_exits')} and "
                  f"{warned} 'nginx worker exited' warnings after {2 * reps} reloads", flush=True)
            RESULTS[f"edit_{debounce or 100}_worker_exits"] = {"worker_exits": nginx.get("worker_exits"), "warnings": warned}
        finally:
            inst.stop()


def bench_cli_reload(binary, root, reps):
    print("\n[2b] `nginx-ha reload -c CFG` right after a daemon start, no load (fresh daemon per repetition)", flush=True)
    runs = []
    for i in range(reps):
        inst = Instance(binary, root, f"cli-reload-{i}").start()
        try:
            nginx = inst.wait_serving()
            master = nginx["master_pid"]
            deadline = time.monotonic() + 5
            while len(workers_of(master)) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.3)
            nginx = inst.status()
            before = set(workers_of(master))
            listed = len(nginx["worker_pids"])
            offset = inst.log_offset()
            t0 = time.monotonic()
            out = inst.cli("reload", timeout=130)
            elapsed = (time.monotonic() - t0) * 1000
            after = set(workers_of(master))
            remember_nginx(before | after, inst.seen)
            events = inst.log_events(offset)
            hup = next((w for w, _, msg in events if "sent HUP" in msg), None)
            confirm = next((w for w, _, msg in events if "reload took" in msg), None)
            named = confirmed_workers(events)
            runs.append({"ms": elapsed if out.returncode == 0 else None, "listed_before": listed,
                         "hup_to_confirm_ms": None if hup is None or confirm is None else (confirm - hup) * 1000,
                         "confirmed_by_old_worker": bool(named) and not (named - before)})
        finally:
            inst.stop()
    report("cli_reload", "`nginx-ha reload` returned 'reload applied'", [r["ms"] for r in runs])
    report("cli_reload_hup_confirm", "  HUP sent -> reload confirmed (log)", [r["hup_to_confirm_ms"] for r in runs], digits=2)
    premature = sum(1 for r in runs if r["confirmed_by_old_worker"])
    print(f"    confirmed by a worker that ran before the HUP (no new worker yet): {premature} of {len(runs)} "
          f"(status listed {', '.join(str(r['listed_before']) for r in runs)} of 2 workers before the reload)", flush=True)
    RESULTS["cli_reload"]["runs"] = runs


def confirmed_workers(events):
    """The pids named by the daemon's "reload took: new workers started workers=[..]" line."""
    line = next((msg for _, _, msg in events if "reload took" in msg), "")
    return {int(p) for p in re.findall(r"\d+", line.split("workers=")[-1])} if "workers=" in line else set()


def bench_tracking(binary, root, reps, workers=8):
    print(f"\n[2c] worker tracking with worker_processes {workers} (status --json worker_pids vs the master's "
          "children in /proc; fresh daemon per repetition)", flush=True)
    after_start, after_reload, exits, early = [], [], [], 0
    for i in range(reps):
        inst = Instance(binary, root, f"tracking-{i}", workers=workers).start()
        try:
            master = inst.wait_serving()["master_pid"]
            deadline = time.monotonic() + 5
            while len(workers_of(master)) < workers and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.3)
            before = set(workers_of(master))
            after_start.append(len(set(inst.status()["worker_pids"]) & before))
            offset = inst.log_offset()
            inst.cli("reload", timeout=130)
            named = confirmed_workers(inst.log_events(offset))
            early += bool(named) and not (named - before)
            time.sleep(0.5)  # the old workers have quit
            actual = set(workers_of(master))
            remember_nginx(before | actual, inst.seen)
            nginx = inst.status()
            after_reload.append(len(set(nginx["worker_pids"]) & actual))
            exits.append(nginx["worker_exits"])
        finally:
            inst.stop()
    print(f"  workers listed by status, of {workers} running: after start {after_start}; 0.5 s after a reload {after_reload}", flush=True)
    print(f"  reloads confirmed by a worker that ran before the HUP (no new worker yet): {early} of {reps}", flush=True)
    print(f"  status worker_exits after one reload (no worker crashed): {exits}", flush=True)
    RESULTS["tracking"] = {"workers": workers, "listed_after_start": after_start, "listed_after_reload": after_reload,
                           "confirmed_by_old_worker": early, "worker_exits": exits}


# --------------------------------------------------------------------------------------------
# 3. reloads under wrk load

WRK_RE = {
    "requests": re.compile(r"(\d+) requests in"),
    "non2xx": re.compile(r"Non-2xx or 3xx responses:\s*(\d+)"),
    "socket": re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"),
    "rps": re.compile(r"Requests/sec:\s*([\d.]+)"),
}


def start_wrk(port, seconds, close=False):
    extra = ["-H", "Connection: close"] if close else []
    proc = subprocess.Popen(
        ["wrk", "-t2", "-c50", f"-d{seconds}s", "--timeout", "2s", *extra, f"http://127.0.0.1:{port}/"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    STATE["others"][proc.pid] = proc
    record("wrk", proc.pid)
    return proc


def finish_wrk(proc):
    """SIGINT makes wrk stop and print its summary."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    STATE["others"].pop(proc.pid, None)
    result = {"requests": 0, "non2xx": 0, "connect": 0, "read": 0, "write": 0, "timeout": 0, "rps": 0.0, "raw": out}
    if m := WRK_RE["requests"].search(out):
        result["requests"] = int(m.group(1))
    if m := WRK_RE["non2xx"].search(out):
        result["non2xx"] = int(m.group(1))
    if m := WRK_RE["socket"].search(out):
        result.update(zip(("connect", "read", "write", "timeout"), map(int, m.groups())))
    if m := WRK_RE["rps"].search(out):
        result["rps"] = float(m.group(1))
    result["failed"] = result["non2xx"] + result["connect"] + result["read"] + result["write"] + result["timeout"]
    return result


def print_wrk(label, w):
    print(
        f"  {label}: {w['requests']} requests ({w['rps']:.0f}/s), failed {w['failed']} "
        f"(non-2xx {w['non2xx']}; socket errors connect {w['connect']}, read {w['read']}, write {w['write']}, timeout {w['timeout']})",
        flush=True,
    )


LOAD_RUNS = [
    # key, reload by, wrk sends "Connection: close", label
    ("edit", "edit", False, "nginx-ha, file edit, wait for the new body"),
    ("cli", "cli", False, "nginx-ha, `nginx-ha reload -c CFG`"),
    ("cli_close", "cli", True, "nginx-ha, `nginx-ha reload -c CFG`, wrk -H 'Connection: close'"),
    ("bare_hup", "bare", False, "control: nginx alone, file edit + kill -HUP, wait for the new body"),
]


def start_bare_nginx(inst):
    """The control case: the same nginx config run directly, without nginx-ha."""
    log = open(os.path.join(inst.dir, "nginx.stderr"), "ab")
    proc = subprocess.Popen([NGINX, "-c", os.path.join(inst.dir, "nginx.conf"), "-g", "daemon off; master_process on;"],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    log.close()
    STATE["others"][proc.pid] = proc
    remember_nginx([proc.pid], inst.seen)
    deadline = time.monotonic() + 10
    while get(inst.port) is None:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"bare nginx did not start; see {inst.dir}/nginx.stderr")
        time.sleep(0.01)
    return proc


def stop_bare_nginx(inst, proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    STATE["others"].pop(proc.pid, None)
    for pid in sorted(inst.seen):
        if our_nginx(pid):
            os.kill(pid, signal.SIGKILL)


def bench_load(binary, root, reloads):
    print(f"\n[3] {reloads} reloads under `wrk -t2 -c50` (keep-alive unless said otherwise; target: 0 failed requests)", flush=True)
    inst = Instance(binary, root, "load").start()
    bare = Instance(binary, root, "load-bare")
    try:
        inst.wait_serving()
        time.sleep(0.5)
        for key, how, close, label in LOAD_RUNS:
            target = bare if how == "bare" else inst
            bare_proc = start_bare_nginx(bare) if how == "bare" else None
            offset = inst.log_offset()
            wrk = start_wrk(target.port, 300, close)
            time.sleep(1.0)
            times = []
            deadline = time.monotonic() + 240
            for i in range(reloads):
                if time.monotonic() > deadline:
                    break
                if how != "bare":
                    inst.wait_status("nginx running", lambda n: n["state"] == "running" and n["worker_pids"])
                t0 = time.monotonic()
                if how == "cli":
                    out = inst.cli("reload", timeout=130)
                    elapsed = time.monotonic() - t0 if out.returncode == 0 else None
                    if out.returncode != 0:
                        print(f"    reload {i} rejected: {out.stderr.strip()}", flush=True)
                else:
                    gen = f"{key}{i}"
                    target.set_body(gen)
                    if how == "bare":
                        os.kill(bare_proc.pid, signal.SIGHUP)
                    elapsed, _, _ = poll_until(target.port, lambda pid, g, gen=gen: g == gen, every=0.005)
                times.append(None if elapsed is None else elapsed * 1000)
            time.sleep(1.0)
            w = finish_wrk(wrk)
            if bare_proc is not None:
                stop_bare_nginx(bare, bare_proc)
            hups = len(times) if how == "bare" else sum(1 for _, _, msg in inst.log_events(offset) if "sent HUP" in msg)
            print(f"  {label}:", flush=True)
            print_wrk(f"  {len(times)} reloads ({hups} HUPs)", w)
            print(f"      failed per reload: {w['failed'] / max(1, hups):.1f}; target 0 failed: {'met' if w['failed'] == 0 else 'NOT met'}", flush=True)
            what = "CLI returned" if how == "cli" else "new body served"
            report(f"load_{key}_latency", f"    each reload under load ({what})", times)
            RESULTS[f"load_{key}"] = {k: v for k, v in w.items() if k != "raw"} | {"hups": hups, "target": 0}
    finally:
        inst.stop()


# --------------------------------------------------------------------------------------------
# 4. idle daemon

def proc_status(pid):
    fields = {}
    for line in (read_text(f"/proc/{pid}/status") or "").splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def cpu_ticks(pid):
    stat = read_text(f"/proc/{pid}/stat")
    rest = stat[stat.rfind(")") + 1:].split()
    return int(rest[11]) + int(rest[12])  # utime, stime (fields 14, 15)


def cpu_ns(pid):
    """Time on CPU of all live threads, from schedstat (ns resolution, unlike the 10 ms ticks)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        text = read_text(f"/proc/{pid}/task/{tid}/schedstat")
        if text:
            total += int(text.split()[0])
    return total


def task_switches(pid):
    """tid -> (thread name, voluntary, nonvoluntary context switches)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        st = proc_status(f"{pid}/task/{tid}")
        if "voluntary_ctxt_switches" in st:
            out[int(tid)] = (st.get("Name", "?"), int(st["voluntary_ctxt_switches"]), int(st["nonvoluntary_ctxt_switches"]))
    return out


def switch_delta(before, after):
    vol = nonvol = 0
    per_name = {}
    for tid, (name, v, n) in after.items():
        v0, n0 = (before[tid][1], before[tid][2]) if tid in before else (0, 0)
        vol += v - v0
        nonvol += n - n0
        per_name[name] = per_name.get(name, 0) + (v - v0)
    return vol, nonvol, per_name


def bench_idle(binary, root, seconds, settle, windows):
    print(f"\n[4] idle daemon (release build): RSS after {settle} s idle, CPU and wakeups over {seconds} s ({windows} windows)", flush=True)
    for probes in (True, False):
        label = "http probe every 1 s" if probes else "no probes"
        key = "idle_probe" if probes else "idle_noprobe"
        inst = Instance(binary, root, key, probes=probes).start()
        try:
            inst.wait_serving()
            time.sleep(settle)
            st = proc_status(inst.pid)
            rss_kib = int(st["VmRSS"].split()[0])
            threads = int(st["Threads"])
            ticks0, ns0 = cpu_ticks(inst.pid), cpu_ns(inst.pid)
            per_window, cpu_windows = [], []
            names_total = {}
            t_start = time.monotonic()
            for _ in range(windows):
                sw0, c0, w0 = task_switches(inst.pid), cpu_ticks(inst.pid), time.monotonic()
                time.sleep(seconds / windows)
                sw1, c1, w1 = task_switches(inst.pid), cpu_ticks(inst.pid), time.monotonic()
                vol, nonvol, names = switch_delta(sw0, sw1)
                per_window.append((vol + nonvol) / (w1 - w0))
                cpu_windows.append((c1 - c0) * 1000 / CLK_TCK)
                for name, n in names.items():
                    names_total[name] = names_total.get(name, 0) + n
            wall = time.monotonic() - t_start
            cpu_ms = (cpu_ticks(inst.pid) - ticks0) * 1000 / CLK_TCK
            sched_ms = (cpu_ns(inst.pid) - ns0) / 1e6
            st_end = proc_status(inst.pid)
            rss_end = int(st_end["VmRSS"].split()[0])
            print(f"  {label}:", flush=True)
            RESULTS[key + "_rss"] = {"values": [rss_kib / 1024], "end": rss_end / 1024, "hwm": int(st_end["VmHWM"].split()[0]) / 1024, "unit": "MiB", "target": 8}
            verdict = "met" if max(rss_kib, rss_end) <= 8 * 1024 else "NOT met"
            print(f"    VmRSS {rss_kib / 1024:.2f} MiB after {settle} s, {rss_end / 1024:.2f} MiB after {settle + wall:.0f} s "
                  f"(VmHWM {RESULTS[key + '_rss']['hwm']:.2f} MiB, {threads} threads)   target <= 8 MiB: {verdict}", flush=True)
            RESULTS[key + "_cpu"] = {"values": [cpu_ms], "schedstat_ms": sched_ms, "wall_s": wall, "unit": "ms", "windows": cpu_windows}
            print(f"    CPU over {wall:.1f} s: utime+stime {cpu_ms:.0f} ms (10 ms ticks); schedstat {sched_ms:.2f} ms "
                  f"= {sched_ms / wall / 10:.4f} % of one core", flush=True)
            report(key + "_wakeups", "  context switches/s, per window", per_window, unit="/s", digits=2)
            print("    voluntary switches by thread name over the whole run: "
                  + ", ".join(f"{n}={c}" for n, c in sorted(names_total.items(), key=lambda x: -x[1])), flush=True)
            RESULTS[key + "_wakeups"]["by_thread"] = names_total
        finally:
            inst.stop()


# --------------------------------------------------------------------------------------------

def machine():
    nginx_v = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip()
    return {"nproc": os.cpu_count(), "kernel": os.uname().release, "nginx": nginx_v,
            "wrk": shutil.which("wrk") is not None, "date": datetime.date.today().isoformat()}


def main():
    ap = argparse.ArgumentParser(description="nginx-ha supervision benchmarks", usage=__doc__.split("usage: ")[1].split("\n\n")[0])
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("binary", nargs="?", default=os.path.join(repo, "target", "release", "nginx-ha"))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", default="kill,edit,load,idle")
    ap.add_argument("--reloads", type=int, default=50)
    ap.add_argument("--idle-seconds", type=float, default=30)
    ap.add_argument("--idle-settle", type=float, default=10)
    ap.add_argument("--idle-windows", type=int, default=5)
    ap.add_argument("--workdir", help="an empty directory to work in (supervision.sh makes one)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()

    binary = os.path.abspath(args.binary)
    if not os.access(binary, os.X_OK):
        sys.exit(f"no nginx-ha binary at {binary}; run `cargo build --release` or pass its path")
    if NGINX is None:
        sys.exit("nginx is not installed (/usr/sbin/nginx)")
    only = set(args.only.split(","))
    if "load" in only and not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install -y wrk (or --only kill,edit,idle)")
    own_dir = args.workdir is None
    STATE["workdir"] = args.workdir or tempfile.mkdtemp(prefix="nginx-ha-bench-")
    STATE["workdir"] = os.path.realpath(STATE["workdir"])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    m = machine()
    print(f"nginx-ha supervision benchmarks — {m['date']}, {binary}")
    print(f"machine: nproc {m['nproc']}, kernel {m['kernel']}, {m['nginx']}; workdir {STATE['workdir']}", flush=True)
    print("load average at start: %.2f %.2f %.2f (other work on the machine skews the figures)" % os.getloadavg(), flush=True)
    RESULTS["machine"] = m
    RESULTS["loadavg_start"] = os.getloadavg()
    try:
        if "kill" in only:
            bench_kill(binary, STATE["workdir"], args.reps)
        if "edit" in only:
            bench_edit(binary, STATE["workdir"], args.reps)
            bench_cli_reload(binary, STATE["workdir"], args.reps)
            bench_tracking(binary, STATE["workdir"], args.reps)
        if "load" in only:
            bench_load(binary, STATE["workdir"], args.reloads)
        if "idle" in only:
            bench_idle(binary, STATE["workdir"], args.idle_seconds, args.idle_settle, args.idle_windows)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping what was started", flush=True)
        sys.exit(130)
    finally:
        cleanup()
        RESULTS["loadavg_end"] = os.getloadavg()
        print("\nload average at the end: %.2f %.2f %.2f" % RESULTS["loadavg_end"], flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(RESULTS, f, indent=1, default=str)
        if own_dir:
            shutil.rmtree(STATE["workdir"], ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Drives one lb with many backends and times what operators do to it; run.sh calls it.

Usage: drive.py LB_BIN WORKDIR BACKENDS RUNS REPEATS INTERVAL

Each run starts lb afresh on a configuration file of BACKENDS refusing backends
(127.x.y.z:9, where nothing listens: a health check is refused at once) plus REAL real ones
(small HTTP servers in a child process), with health checks every INTERVAL, and measures:

  start      exec to the listener accepting a connection, and to READY=1 on the notification
             socket (lb's sd_notify: sent once every listener accepts);
  settle     start to every refusing backend marked down (fall = 3 failed checks);
  rss        VmRSS once settled;
  metrics    GET /metrics, request to the last byte of the answer (REPEATS times);
  stats      GET /stats, the same;
  hup        SIGHUP after the file changed one backend's weight, to lb's READY=1 (lb says
             RELOADING=1 and READY=1 around each reload);
  ctl        `lb ctl reload` after the same kind of change, the process's run time;
  post       POST /command `reload` after the same kind of change, request to answer;
  nochange   SIGHUP with the file unchanged;
  swap       SIGHUP after the file replaced one backend's address (one removal, one addition).

Meanwhile a client thread opens one connection through lb every 5 ms (a request to a real
backend and its answer); the slowest of those during reloads and outside them is printed, so
that a reload that made new connections wait would show. One line per measurement goes to
stdout: `RUN ITEM VALUE_MS` (rss in KiB, sizes in bytes), for run.sh to take medians of.
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

REAL = 3
SERVER = r"""
import socket, sys, threading
def serve(s):
    while True:
        c, _ = s.accept()
        threading.Thread(target=answer, args=(c,), daemon=True).start()
def answer(c):
    try:
        c.recv(4096)
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
    finally:
        c.close()
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1024); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks), flush=True)
for s in socks[1:]:
    threading.Thread(target=serve, args=(s,), daemon=True).start()
serve(socks[0])
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refusing(i, variant=0):
    """The i-th refusing backend: 127.1.0.1 upwards, port 9 (nothing listens there)."""
    i += variant * 60000  # a replacement address no other entry has
    return f"127.{1 + i // 62500}.{(i // 250) % 250}.{i % 250 + 1}:9"


def write_config(path, port, admin, log, n, real_ports, interval, weight=1, variant=0):
    lines = [
        'host = "127.0.0.1"',
        f"port = {port}",
        f'admin = "127.0.0.1:{admin}"',
        f'log-file = "{log}"',
        f'health-interval = "{interval}"',
        "",
    ]
    for p in real_ports:
        lines += ["[[backend]]", f'address = "127.0.0.1:{p}"', ""]
    for i in range(n):
        # The first refusing backend's weight and the last one's address are what changes.
        addr = refusing(i, variant if i == n - 1 else 0)
        w = f"\nweight = {weight}" if i == 0 and weight != 1 else ""
        lines += ["[[backend]]", f'address = "{addr}"{w}', ""]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines))
    os.replace(tmp, path)  # as an editor's save does: never a half-written file


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def request(admin, method, path, body=None):
    """Request to answer, in ms, with the answer's status and body."""
    c = http.client.HTTPConnection("127.0.0.1", admin, timeout=30)
    headers = {"X-LB-Admin": "1"} if method == "POST" else {}
    t = time.perf_counter()
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    ms = (time.perf_counter() - t) * 1000
    c.close()
    return ms, r.status, data


class Notify(threading.Thread):
    """The socket lb sends its sd_notify messages to, read all the time: lb's sends block once
    the socket's queue is full (as systemd never lets it be)."""

    def __init__(self, path):
        super().__init__(daemon=True)
        if os.path.exists(path):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.path = path
        self.messages = []  # (arrival, lines)
        self.cond = threading.Condition()
        self.start()

    def run(self):
        while True:
            msg = self.sock.recv(4096).decode()
            with self.cond:
                self.messages.append((time.perf_counter(), msg.split("\n")))
                self.cond.notify_all()

    def wait(self, word, after, timeout=120):
        """When the first message with `word` (READY=1) sent after `after` came."""
        deadline = time.perf_counter() + timeout
        with self.cond:
            while True:
                for at, lines in self.messages:
                    if at >= after and word in lines:
                        return at
                if not self.cond.wait(deadline - time.perf_counter()):
                    sys.exit(f"no {word} from lb within {timeout} s")


class Clients(threading.Thread):
    """One connection through lb every 5 ms, each timed from connect to the answer's end."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.samples, self.stop = port, [], threading.Event()

    def run(self):
        while not self.stop.is_set():
            t = time.perf_counter()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    while s.recv(4096):
                        pass
                ok = True
            except OSError:
                ok = False
            end = time.perf_counter()
            self.samples.append((t, end, ok))
            time.sleep(0.005)


def main():
    lb, work, n, runs, repeats, interval = sys.argv[1:7]
    n, runs, repeats = int(n), int(runs), int(repeats)
    os.makedirs(work, exist_ok=True)
    children = []

    def cleanup(*_):
        for p in children:
            if p.poll() is None:
                p.kill()
                p.wait()
        sys.exit(1)

    signal.signal(signal.SIGTERM, cleanup)
    servers = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(REAL)], stdout=subprocess.PIPE, text=True
    )
    children.append(servers)
    real_ports = [int(p) for p in servers.stdout.readline().split()]
    config, log = f"{work}/lb.toml", f"{work}/lb.log"
    try:
        for run in range(1, runs + 1):
            one_run(lb, work, config, log, n, real_ports, interval, repeats, run, children)
    finally:
        for p in children:
            if p.poll() is None:
                p.kill()
                p.wait()


def out(run, item, value):
    print(f"{run} {item} {value:.2f}" if isinstance(value, float) else f"{run} {item} {value}",
          flush=True)


def one_run(lb, work, config, log, n, real_ports, interval, repeats, run, children):
    port, admin = free_port(), free_port()
    write_config(config, port, admin, log, n, real_ports, interval)
    notify = Notify(f"{work}/notify.sock")
    env = dict(os.environ, NOTIFY_SOCKET=notify.path)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [lb, "--config", config, "-q"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=open(f"{work}/lb.err", "w"), env=env,
    )
    children.append(proc)
    try:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    sys.exit(f"lb exited: {open(f'{work}/lb.err').read()}")
                time.sleep(0.0005)
        listening = time.perf_counter()
        ready = notify.wait("READY=1", t0)
        out(run, "start_bound", (listening - t0) * 1000)
        out(run, "start_ready", (ready - t0) * 1000)
        measure(proc, run, n, port, admin, config, log, real_ports, interval, repeats, notify, t0, lb)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        children.remove(proc)


def measure(proc, run, n, port, admin, config, log, real_ports, interval, repeats, notify, t0, lb):
    # Settled: every refusing backend down, the real ones up.
    deadline = time.perf_counter() + 300
    while True:
        _, _, body = request(admin, "GET", "/stats")
        totals = json.loads(body)["totals"]
        if totals["available"] == len(real_ports):
            break
        if time.perf_counter() > deadline:
            sys.exit(f"not settled in 300 s: {totals}")
        time.sleep(0.2)
    out(run, "settle", (time.perf_counter() - t0) * 1000)
    out(run, "rss_kb", rss_kb(proc.pid))
    for _ in range(repeats):
        ms, status, body = request(admin, "GET", "/metrics")
        assert status == 200, status
        out(run, "metrics", ms)
    out(run, "metrics_bytes", len(body))
    for _ in range(repeats):
        ms, status, body = request(admin, "GET", "/stats")
        assert status == 200, status
        out(run, "stats", ms)
    out(run, "stats_bytes", len(body))
    if n == 0:
        return
    clients = Clients(port)
    clients.start()
    time.sleep(0.5)
    windows = []
    weight = 1

    def change(what):
        nonlocal weight
        if what == "weight":
            weight = 3 - weight  # 1 <-> 2
            write_config(config, port, admin, log, n, real_ports, interval, weight=weight)
        elif what == "swap":
            write_config(config, port, admin, log, n, real_ports, interval, weight, variant=1)
        elif what == "unswap":
            write_config(config, port, admin, log, n, real_ports, interval, weight, variant=0)

    def hup(item, what):
        change(what)
        t = time.perf_counter()
        proc.send_signal(signal.SIGHUP)
        done = notify.wait("READY=1", t)
        windows.append((t, done))
        out(run, item, (done - t) * 1000)

    for i in range(repeats):
        hup("hup", "weight")
        time.sleep(0.2)
    for i in range(repeats):
        change("weight")
        t = time.perf_counter()
        ms, status, body = request(admin, "POST", "/command", b"reload")
        windows.append((t, time.perf_counter()))
        assert status == 200 and b"weight 127." in body, body[:300]
        out(run, "post", ms)
        time.sleep(0.2)
    for i in range(repeats):
        change("weight")
        t = time.perf_counter()
        r = subprocess.run(
            [lb, "ctl", "--admin", f"127.0.0.1:{admin}", "reload"], capture_output=True, text=True
        )
        done = time.perf_counter()
        windows.append((t, done))
        assert r.returncode == 0 and "weight 127." in r.stdout, r.stdout + r.stderr
        out(run, "ctl", (done - t) * 1000)
        time.sleep(0.2)
    for i in range(repeats):
        hup("nochange", None)
        time.sleep(0.2)
    for i in range(repeats):
        hup("swap", "swap" if i % 2 == 0 else "unswap")
        time.sleep(0.2)
    clients.stop.set()
    clients.join()
    during, outside, failed = [], [], 0
    for start, end, ok in clients.samples:
        failed += not ok
        inside = any(a - 0.001 <= start <= b for a, b in windows)
        (during if inside else outside).append((end - start) * 1000)
    out(run, "conn_during_reload_max", max(during) if during else 0.0)
    out(run, "conn_during_reload_n", len(during))
    out(run, "conn_outside_max", max(outside) if outside else 0.0)
    out(run, "conn_failed", failed)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Fault test for durable zones: no ticket is ever issued twice.

Runs nginx with a durable zone (state=, a small reserve=) under concurrent
load and, round after round, kills it the hard way: SIGKILL to every nginx
process at once, SIGKILL to one worker in the middle of the load, and a clean
stop for comparison. Across every ticket collected it checks, per counter:

- no ticket was handed out twice;
- after a crash, the gap between the last ticket seen before it and the first
  one after it is at most reserve= (plus the requests that were in flight
  when the processes died: their tickets were taken but never delivered);
- after a clean stop, there is no gap at all.

Loopback only; every round is bounded in time and requests.
"""

import argparse
import http.client
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COUNTERS = ["/t", "/k?k=alpha", "/k?k=beta"]


def config(module, port, state, reserve):
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""
load_module {module};
{user}
worker_processes 2;
daemon off;
master_process on;
error_log logs/error.log notice;
pid logs/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    ticket_zone t:1m state={state} reserve={reserve};
    server {{
        listen 127.0.0.1:{port};
        location = /t {{ ticket_counter zone=t; }}
        location = /k {{ ticket_counter zone=t key=$arg_k; }}
    }}
}}
"""


class Nginx:
    def __init__(self, binary, prefix, port):
        self.binary, self.prefix, self.port = binary, prefix, port
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [self.binary, "-p", self.prefix, "-c", "conf/nginx.conf"],
            start_new_session=True,  # one process group: master and workers
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"nginx exited at start; see {self.prefix}/logs/error.log")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("nginx did not start listening")

    def workers(self):
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def kill_all(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        # the workers die with the group; wait until the port is free
        deadline = time.time() + 10
        while time.time() < deadline and subprocess.run(
                ["pgrep", "-g", str(self.proc.pid)], capture_output=True).returncode == 0:
            time.sleep(0.05)

    def quit(self):
        self.proc.send_signal(signal.SIGQUIT)
        self.proc.wait(timeout=15)


class Load:
    """Clients taking tickets over keep-alive connections until stopped."""

    def __init__(self, port, clients):
        self.port, self.clients = port, clients
        self.tickets = {c: [] for c in COUNTERS}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.errors = 0
        self.threads = [threading.Thread(target=self.client, args=(i,)) for i in range(clients)]

    def client(self, index):
        rng = random.Random(index)
        conn = None
        deadline = time.time() + 30
        while not self.stop.is_set() and time.time() < deadline:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                path = rng.choice(COUNTERS)
                conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read()
                if resp.status == 200:
                    with self.lock:
                        self.tickets[path].append(int(body))
                elif resp.status not in (503,):
                    with self.lock:
                        self.errors += 1
            except (OSError, http.client.HTTPException, ValueError):
                # nginx was killed under us: reconnect, or stop when told to
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.01)
        if conn is not None:
            conn.close()

    def total(self):
        with self.lock:
            return sum(len(t) for t in self.tickets.values())

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=40)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nginx", default=os.path.join(ROOT, "build/sbin/nginx"))
    ap.add_argument("--module", default=os.path.join(ROOT, "build/modules/ngx_http_ticket_module.so"))
    ap.add_argument("--port", type=int, default=18380)
    ap.add_argument("--reserve", type=int, default=300)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--crashes", type=int, default=4, help="rounds ending in SIGKILL of every process")
    ap.add_argument("--seconds", type=float, default=1.0, help="load per round")
    args = ap.parse_args()

    prefix = tempfile.mkdtemp(prefix="ngx-ticket-fault-")
    for d in ("conf", "logs", "state"):
        os.makedirs(os.path.join(prefix, d), exist_ok=True)
    state = os.path.join(prefix, "state", "t.state")
    with open(os.path.join(prefix, "conf", "nginx.conf"), "w") as f:
        f.write(config(args.module, args.port, state, args.reserve))

    nginx = Nginx(args.nginx, prefix, args.port)
    # Each round: how it ended, and the tickets it collected per counter.
    plan = ["kill-all"] * args.crashes
    plan.insert(1, "kill-worker-then-all")
    plan.insert(3, "clean-stop")
    plan.append("clean-stop")
    rounds = []
    failures = []
    for how in plan:
        nginx.start()
        with Load(args.port, args.clients) as load:
            time.sleep(args.seconds * random.uniform(0.5, 1.0))
            if how == "kill-worker-then-all":
                workers = nginx.workers()
                if workers:
                    os.kill(random.choice(workers), signal.SIGKILL)
                time.sleep(args.seconds * 0.3)  # the master starts a new worker
                # nothing may be stuck: tickets keep coming after the kill
                before = load.total()
                time.sleep(args.seconds * 0.5)
                if load.total() - before < 100:
                    failures.append(f"round {len(rounds) + 1}: no progress after a worker was killed")
            if how == "clean-stop":
                load.stop.set()
                for t in load.threads:
                    t.join(timeout=40)
                nginx.quit()
            else:
                nginx.kill_all()
        if load.errors:
            failures.append(f"round {len(rounds) + 1} ({how}): {load.errors} unexpected responses")
        rounds.append((how, load.tickets))
        counts = {c: len(v) for c, v in load.tickets.items()}
        print(f"round {len(rounds)}: {how:22} tickets {counts}")

    in_flight = args.clients
    max_gap = 0
    for counter in COUNTERS:
        everything = [t for _, tickets in rounds for t in tickets[counter]]
        duplicates = len(everything) - len(set(everything))
        if duplicates:
            failures.append(f"{counter}: {duplicates} tickets issued twice")
        previous_last = None
        for i, (how, tickets) in enumerate(rounds):
            got = sorted(tickets[counter])
            if not got:
                continue
            if previous_last is not None:
                gap = got[0] - previous_last - 1
                if gap < 0:
                    failures.append(f"{counter}: round {i + 1} started below the previous round")
                ended = rounds[i - 1][0]
                if ended == "clean-stop":
                    if gap != 0:
                        failures.append(f"{counter}: gap of {gap} after a clean stop (round {i})")
                else:
                    max_gap = max(max_gap, gap)
                    if gap > args.reserve + in_flight:
                        failures.append(f"{counter}: gap of {gap} after a crash (round {i}), "
                                        f"more than reserve={args.reserve} + {in_flight} in flight")
            previous_last = got[-1]

    total = sum(len(t) for _, tickets in rounds for t in tickets.values())
    print(f"{total} tickets over {len(rounds)} rounds; largest gap after a crash: {max_gap} "
          f"(reserve={args.reserve}, up to {in_flight} requests in flight)")
    for failure in failures:
        print("FAIL:", failure)
    print(f"fault test: {'1 failed' if failures else 'passed'}")
    if failures:
        print(f"nginx prefix kept for inspection: {prefix}")
        return 1
    subprocess.run(["rm", "-rf", prefix])
    return 0


if __name__ == "__main__":
    sys.exit(main())

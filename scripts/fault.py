#!/usr/bin/env python3
"""Fault and safety test for durable zones: no ticket is ever issued twice.

Each scenario runs nginx (the bundled build, copied into a private prefix) on
loopback, most of them under concurrent keep-alive load from several clients
that keep every ticket they are given, and does to it what an operator, a
crash or a hostile local user can do. Across everything collected it checks,
per counter (the default counter and keyed ones):

- no ticket was handed out twice, in the whole run of the scenario;
- on one keep-alive connection (one worker, so one nginx instance), tickets
  only go up;
- after a crash, a counter skips at most reserve= numbers plus the requests
  that were in flight; after a clean stop of a lone instance, none;
- no request waits 5 s (500 "ticket state not saved") during a binary
  upgrade, a rollback or a reload; a graceful quit may answer 503 "try again";
- no worker dies of anything but our own SIGKILL.

Scenarios (issue 10's list; `scripts/fault --list`):

  crash            SIGKILL of every nginx process under load, of one worker; clean stops
                   (quit, and stop: SIGTERM) with no gap
  rollback         USR2; WINCH, HUP to the old master; QUIT to the new one
  usr2-kill9       USR2; kill -9 of the new master (orphaned workers serve on); HUP the old
  usr2-quit-old    USR2 then QUIT of the old master, three times in a row (restore under the lock)
  resize           1m <-> 2m reloads under keyed load with new keys all the time
  special-files    FIFO, symlinks, world-writable and sticky directories, hard link, owner
  crafted          crafted state files: marks past 2^56, a key twice in a frame, too many keys
  two-instances    two nginx on one state file, stopped and restarted in turn
  two-instances-admin  two nginx on one state file under load, admin moves sent to each in turn
                   (below, into the other's block, above): only 200 or 409, only forward
  config-changes   state= added on reload, one file for two zones, module at a new path, temp files
  disk-full        the state directory on a small tmpfs, filled up under load, then freed

Loopback only; every round is bounded in time and requests; every nginx
process started is stopped by its pid, also on failure. The prefixes are kept
for inspection when a scenario fails, with every response of a failed
scenario in NAME.responses.tsv. `--workers 1` runs every nginx with one
worker process.
"""

import argparse
import bisect
import ctypes
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE_NAME = "ngx_http_ticket_module.so"
IS_ROOT = os.geteuid() == 0
# A request that waits for its reservation gives up after 5 s; anything
# this slow waited for it.
SLOW = 4.5


# ---------------------------------------------------------------------------
# processes


def proc_stat(pid):
    """(state, ppid) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2:].split()
    return rest[0], int(rest[1])


def alive(pid):
    """Running and not a zombie; reaps it if it is our own dead child."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def wait_gone(pids, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.02)
    return not any(alive(p) for p in pids)


def become_subreaper():
    """Orphaned nginx processes (a killed master's workers, a master whose
    old master quit) come to us: we reap them and can always find them."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


class Run:
    """One run: a base directory holding every prefix, and the nginx
    processes started from it (all run the binary copied into it)."""

    def __init__(self, keep):
        self.base = tempfile.mkdtemp(prefix="ngx-ticket-fault-")
        self.keep = keep
        self.sbin = os.path.join(self.base, "sbin", "nginx")
        self.module = os.path.join(self.base, "modules", MODULE_NAME)
        self.mounts = []
        self.next_port = 18380
        self.workers = 2

    def install(self, nginx, module):
        # USR2 re-executes this file: the bundled nginx "upgraded" to itself
        os.makedirs(os.path.dirname(self.sbin))
        os.makedirs(os.path.dirname(self.module))
        shutil.copy2(nginx, self.sbin)
        shutil.copy2(module, self.module)

    def port(self):
        self.next_port += 1
        return self.next_port

    def ours(self):
        """Every live process running our copy of nginx."""
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                exe = os.readlink(f"/proc/{entry}/exe")
            except OSError:
                continue
            if exe.startswith(self.base + "/") and alive(int(entry)):
                pids.append(int(entry))
        return pids

    def stop_everything(self):
        """SIGKILL, by pid, every process of ours still running."""
        for _ in range(3):
            pids = self.ours()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            wait_gone(pids, 5)

    def cleanup(self, failed):
        self.stop_everything()
        for mount in reversed(self.mounts):
            subprocess.run(["umount", "-l", mount], stderr=subprocess.DEVNULL)
        self.mounts = []
        if failed or self.keep:
            print(f"nginx prefixes kept for inspection: {self.base}")
        else:
            shutil.rmtree(self.base, ignore_errors=True)


def children(pid):
    """The worker processes of a master (not a new master it started)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(entry)
            if st and st[1] == pid and st[0] not in ("Z", "X"):
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        title = f.read()
                except OSError:
                    continue
                if title.startswith(b"nginx: worker") or title.startswith(b"nginx: cache"):
                    out.append(int(entry))
    return out


# ---------------------------------------------------------------------------
# nginx


def conf_text(module, port, http, workers=2, main=""):
    user = "user root;" if IS_ROOT else ""
    return f"""
load_module {module};
{user}
worker_processes {workers};
master_process on;
error_log logs/error.log notice;
pid logs/nginx.pid;
worker_shutdown_timeout 5s;
{main}
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
{http}
}}
"""


def server(port, locations):
    return f"""
    server {{
        listen 127.0.0.1:{port};
        add_header X-Pid $pid always;
{locations}
    }}
"""


class Nginx:
    """One nginx prefix, with the pids of the masters started from it."""

    def __init__(self, run, name, port=None):
        self.run = run
        self.prefix = os.path.join(run.base, name)
        self.port = port or run.port()
        for d in ("conf", "logs", "state"):
            os.makedirs(os.path.join(self.prefix, d), exist_ok=True)
        self.master = None

    def path(self, *parts):
        return os.path.join(self.prefix, *parts)

    def configure(self, http, module=None, workers=None, main=""):
        workers = workers or self.run.workers
        self.nworkers = workers
        with open(self.path("conf", "nginx.conf"), "w") as f:
            f.write(conf_text(module or self.run.module, self.port, http, workers, main))

    def command(self, *args, timeout=15):
        """Runs our nginx with this prefix; returns (exit code or None if it
        hung, what it printed)."""
        out = self.path("logs", "command.out")
        with open(out, "w") as f:
            try:
                rc = subprocess.run([self.run.sbin, "-p", self.prefix + "/", "-c", "conf/nginx.conf", *args],
                                    stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                    timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                rc = None
        with open(out) as f:
            return rc, f.read()

    def test_config(self, timeout=15):
        return self.command("-t", timeout=timeout)

    def start(self, timeout=15):
        """Starts nginx (it daemonizes); returns (ok, output)."""
        try:
            os.unlink(self.path("logs", "nginx.pid"))
        except FileNotFoundError:
            pass
        rc, out = self.command(timeout=timeout)
        if rc != 0:
            return False, out if rc is not None else f"nginx hung for {timeout} s at start"
        self.master = self.read_pid()
        if not self.master or not self.wait_workers(self.master, self.nworkers):
            return False, "no workers after start"
        self.wait_listening()
        return True, out

    def must_start(self):
        ok, out = self.start()
        if not ok:
            raise Failure(f"{self.prefix}: nginx did not start: {out.strip()[-400:]}")

    def read_pid(self, name="nginx.pid", seconds=10):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                with open(self.path("logs", name)) as f:
                    return int(f.read().strip())
            except (OSError, ValueError):
                time.sleep(0.02)
        return None

    def wait_listening(self, seconds=10):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                time.sleep(0.02)
        return False

    def workers(self, master=None):
        return children(master or self.master)

    def wait_workers(self, master, count, exclude=(), seconds=10):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            got = [p for p in children(master) if p not in exclude]
            if len(got) >= count:
                return got
            if not alive(master):
                return []
            time.sleep(0.02)
        return []

    def signal(self, sig, pid=None):
        os.kill(pid or self.master, sig)

    def quit(self, master=None, seconds=20, sig=None):
        """Graceful stop of one master and its workers (sig SIGTERM: the
        fast stop of `nginx -s stop`); waits for them."""
        sig = sig or signal.SIGQUIT
        master = master or self.master
        group = [master] + children(master)
        os.kill(master, sig)
        if not wait_gone(group, seconds):
            raise Failure(f"nginx {master} did not stop ({signal.Signals(sig).name}) within {seconds} s")

    def kill_all(self, master=None):
        master = master or self.master
        group = [master] + children(master)
        for pid in group:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_gone(group, 10)

    def reload(self, master=None, seconds=15):
        """HUP; waits until the new workers run and the old ones are gone."""
        master = master or self.master
        before = children(master)
        os.kill(master, signal.SIGHUP)
        new = self.wait_workers(master, 1, exclude=before, seconds=seconds)
        if not new:
            raise Failure(f"no new workers after a reload of {master}; see {self.path('logs', 'error.log')}")
        if not wait_gone(before, seconds):
            raise Failure(f"old workers of {master} still running {seconds} s after a reload")
        return new

    def upgrade(self, seconds=15):
        """USR2: a new master from the same binary; returns its pid once its
        workers run."""
        old = self.master
        os.kill(old, signal.SIGUSR2)
        return self.upgrade_done(old, seconds)

    def upgrade_done(self, old, seconds=15):
        deadline = time.monotonic() + seconds
        new = None
        while time.monotonic() < deadline:
            pid = self.read_pid(seconds=0.1)
            if pid and pid != old and alive(pid):
                new = pid
                break
            time.sleep(0.02)
        if not new or not self.wait_workers(new, 1, seconds=seconds):
            raise Failure(f"no new master after USR2 to {old}; see {self.path('logs', 'error.log')}")
        return new

    def error_log(self):
        try:
            with open(self.path("logs", "error.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""


class Failure(Exception):
    """A scenario could not go on."""


# ---------------------------------------------------------------------------
# load


class Conn:
    """A minimal HTTP/1.1 keep-alive client: fast enough to keep nginx busy."""

    def __init__(self, port, timeout):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def get(self, path):
        return self.request("GET", path)

    def request(self, method, path):
        """One request without a body (POST says so: Content-Length: 0)."""
        length = "Content-Length: 0\r\n" if method == "POST" else ""
        self.sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: fault\r\n{length}\r\n".encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed in the body")
            self.buf += chunk
        body, self.buf = self.buf[:length], self.buf[length:]
        if headers.get("connection", "").lower() == "close":
            self.close()
            self.sock = None
        return status, headers, body


class Clients:
    """Client threads, each running `run_client(index)` (a subclass's) until
    stopped, keeping what it records in `records[index]`; client i talks to
    targets[i % len(targets)]. Bounded by `seconds` and `max_requests` each.
    A client that raises is reported in `crashed`, never lost silently."""

    def __init__(self, targets, choose, clients, seconds, max_requests, timeout):
        self.targets = targets
        self.choose, self.clients = choose, clients
        self.seconds, self.max_requests, self.timeout = seconds, max_requests, timeout
        self.stop = threading.Event()
        self.records = [[] for _ in range(clients)]
        self.conn_errors = [0] * clients
        self.crashed = []
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(clients)]
        self.t0 = None

    def client(self, index):
        try:
            self.run_client(index)
        except Exception as e:  # a bug in the client: say so, never lose it silently
            self.crashed.append(f"client {index}: {type(e).__name__}: {e}")

    def all(self):
        return [x for r in self.records for x in r]

    def __enter__(self):
        self.t0 = time.monotonic()
        for t in self.threads:
            t.start()
        return self

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=self.timeout + 10)

    def __exit__(self, *exc):
        self.finish()


class Load(Clients):
    """Clients taking tickets over keep-alive connections until stopped,
    each keeping every response: (sent, done, status, counter, ticket, pid,
    connection). `choose(rng, elapsed)` gives (counter, path); client i uses
    ports[i % len(ports)]."""

    def __init__(self, ports, choose, clients=8, seconds=60, max_requests=400_000, timeout=8):
        ports = ports if isinstance(ports, (list, tuple)) else [ports]
        super().__init__(ports, choose, clients, seconds, max_requests, timeout)

    def run_client(self, index):
        rng = random.Random(index * 7919 + int(self.t0 * 1000))
        port = self.targets[index % len(self.targets)]
        records = self.records[index]
        conn, conn_id = None, index << 32
        deadline = self.t0 + self.seconds
        while not self.stop.is_set() and len(records) < self.max_requests:
            now = time.monotonic()
            if now > deadline:
                break
            counter, path = self.choose(rng, now - self.t0)
            try:
                if conn is None or conn.sock is None:
                    conn_id += 1
                    conn = Conn(port, self.timeout)
                sent = time.monotonic()
                status, headers, body = conn.get(path)
            except (OSError, ValueError, IndexError):
                self.conn_errors[index] += 1
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.005)
                continue
            ticket = None
            if status == 200:
                try:
                    ticket = int(body)
                except ValueError:
                    status = -200  # a 200 without a ticket: reported as an unexpected status
            records.append((sent, time.monotonic(), status, counter, ticket,
                            int(headers.get("x-pid", 0)), conn_id))
        if conn is not None:
            conn.close()

    def count(self):
        return sum(len(r) for r in self.records)

    def ok_since(self, t):
        """200s answered after monotonic time t."""
        return sum(1 for r in self.records for x in r[-2000:] if x[1] > t and x[2] == 200)


def keyed_chooser(zone_paths, keys, default_share=0.3):
    """Requests over a zone's default counter (/t) and `keys` keys (/k?k=)."""
    names = [f"k{i}" for i in range(keys)]

    def choose(rng, elapsed):
        if not names or rng.random() < default_share:
            return ("t", None), zone_paths[0]
        key = rng.choice(names)
        return ("t", key), f"{zone_paths[1]}?k={key}"
    return choose


class Check:
    """What one scenario found."""

    def __init__(self, name):
        self.name = name
        self.failures = []
        self.notes = []
        self.stats = {}
        self.tickets = {}  # counter -> every ticket collected
        self.statuses = {}
        self.requests = 0
        self.slow = 0
        self.max_latency = 0.0
        self.monotonic_violations = 0
        self.conn_errors = 0
        self.checks = 0
        self.records = []
        self.pids = {}  # pid -> what it was ("A worker", "B master"...)

    def fail(self, text):
        self.failures.append(text)
        print(f"  FAIL: {text}", flush=True)

    def note(self, text):
        self.notes.append(text)
        print(f"  {text}", flush=True)

    def expect(self, cond, text):
        self.checks += 1
        if not cond:
            self.fail(text)
        return cond

    def absorb(self, load, phase="", slow_allowed=False, allowed=(200, 503)):
        """Adds a load's responses; checks statuses, waits and ordering on
        each connection."""
        records = load.all()
        self.records.extend(records)
        for crash in load.crashed:
            self.fail(f"load client died: {crash}")
        self.requests += len(records)
        self.conn_errors += sum(load.conn_errors)
        last = {}
        bad = {}
        for sent, done, status, counter, ticket, pid, conn in records:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            latency = done - sent
            self.max_latency = max(self.max_latency, latency)
            if latency >= SLOW:
                self.slow += 1
            if status not in allowed:
                bad[status] = bad.get(status, 0) + 1
            if status != 200:
                continue
            self.tickets.setdefault(counter, []).append(ticket)
            k = (conn, counter)
            if k in last and ticket <= last[k]:
                self.monotonic_violations += 1
            last[k] = ticket
        where = f" ({phase})" if phase else ""
        for status, n in sorted(bad.items()):
            self.fail(f"{n} responses with status {status}{where}")
        slow = sum(1 for x in records if x[1] - x[0] >= SLOW)
        if slow and not slow_allowed:
            self.fail(f"{slow} requests waited {SLOW} s or more{where}")
        return records

    def role(self, pid):
        return self.pids.get(pid, f"pid {pid}")

    def explain(self, counter, ticket):
        """Who handed out `ticket` of `counter`, and when."""
        t0 = self.records[0][0] if self.records else 0
        who = [f"{self.role(r[5])} at {r[1] - t0:.2f} s" for r in self.records
               if r[2] == 200 and r[3] == counter and r[4] == ticket]
        return "; ".join(who) or "the start after the scenario"

    def has_records(self):
        return bool(self.records)

    def dump(self, path):
        with open(path, "w") as f:
            f.write("# sent\tdone\tstatus\tzone\tkey\tticket\tpid\tconnection\n")
            for pid, role in sorted(self.pids.items()):
                f.write(f"# pid {pid}: {role}\n")
            for sent, done, status, (zone, key), ticket, pid, conn in self.records:
                f.write(f"{sent:.4f}\t{done:.4f}\t{status}\t{zone}\t{key or '-'}\t{ticket}\t{pid}\t{conn}\n")

    def duplicates(self):
        """One failure for all counters: how many tickets were issued twice,
        the counters worst hit, and who issued a few of them."""
        per = []
        for counter, tickets in self.tickets.items():
            dups = len(tickets) - len(set(tickets))
            if dups:
                seen, twice = set(), []
                for t in tickets:
                    if t in seen:
                        twice.append(t)
                    seen.add(t)
                per.append((dups, counter, sorted(twice)))
        if not per:
            return 0
        per.sort(key=lambda x: (-x[0], fmt_counter(x[1])))
        total = sum(d for d, _, _ in per)
        worst = ", ".join(f"{fmt_counter(c)} {d} (from {t[0]})" for d, c, t in per[:4])
        self.fail(f"{total} tickets issued twice, in {len(per)} of {len(self.tickets)} counters; "
                  f"most: {worst}")
        for d, counter, twice in per[:3]:
            self.note(f"    {fmt_counter(counter)} ticket {twice[0]}: {self.explain(counter, twice[0])}")
        return total

    def finish(self, seconds):
        dups = self.duplicates()
        if self.monotonic_violations:
            self.fail(f"{self.monotonic_violations} tickets lower than the previous one on the "
                      f"same connection and counter")
        self.stats.update(seconds=round(seconds, 1), checks=self.checks)
        if self.requests:
            self.stats.update(requests=self.requests,
                              tickets=sum(len(t) for t in self.tickets.values()),
                              counters=len(self.tickets), duplicates=dups,
                              statuses=dict(sorted(self.statuses.items())),
                              max_latency=f"{self.max_latency:.2f} s")
        return not self.failures


def fmt_counter(counter):
    zone, key = counter
    return zone if key is None else f"{zone}[{key}]"


def check_workers_healthy(check, *nginxes):
    """No worker died of a signal we did not send."""
    for n in nginxes:
        for line in n.error_log().splitlines():
            m = re.search(r"exited on signal (\d+)", line)
            if (m and m.group(1) != "9") or "core dumped" in line:
                check.fail(f"{n.prefix}: {line.strip()[-200:]}")


def first_tickets(port, counters, paths):
    """One ticket per counter, over one connection: {counter: (status, ticket)}."""
    out = {}
    conn = Conn(port, 8)
    try:
        for counter in counters:
            status, _, body = conn.get(paths(counter))
            out[counter] = (status, int(body) if status == 200 else body)
    finally:
        conn.close()
    return out


def check_continuation(check, nginx, paths, strict, bound, what):
    """Starts nginx alone after a clean stop and takes one ticket of every
    counter seen: never one issued before; strict: exactly the next one,
    else at most `bound` skipped."""
    nginx.must_start()
    try:
        got = first_tickets(nginx.port, list(check.tickets), paths)
    finally:
        nginx.quit()
    largest = 0
    below, skipped, refused = [], [], []
    for counter, (status, ticket) in got.items():
        if status != 200:
            refused.append(f"{fmt_counter(counter)} {status} {ticket!r}")
            continue
        previous = max(check.tickets[counter])
        gap = ticket - previous - 1
        largest = max(largest, gap)
        if gap < 0 or ticket in set(check.tickets[counter]):
            below.append(f"{fmt_counter(counter)} at {ticket} (issued up to {previous})")
        elif (strict and gap) or gap > bound:
            skipped.append(f"{fmt_counter(counter)} skipped {gap}")
        check.tickets[counter].append(ticket)
    check.expect(not refused, f"{what}: {len(refused)} counters refused: {', '.join(refused[:3])}")
    check.expect(not below, f"{what}: {len(below)} of {len(got)} counters went on at or below a ticket "
                 f"already issued: {', '.join(below[:3])}")
    check.expect(not skipped, f"{what}: {len(skipped)} counters skipped more than "
                 f"{'nothing (a clean stop of a lone instance)' if strict else bound}: {', '.join(skipped[:3])}")
    check.stats["gap after the last stop"] = largest
    return largest


def check_after_instances(check, nginx, reserve, args, what):
    """After several instances shared the file and all stopped: a lone start
    never repeats a ticket and skips at most what the others held unused
    (a current and a pending block each: 4 * reserve, plus requests in
    flight); then a clean stop and another start skip nothing."""
    check_continuation(check, nginx, paths_tk, strict=False, bound=4 * reserve + args.clients,
                       what=f"a lone start after {what}")
    gap = check.stats.pop("gap after the last stop")
    check_continuation(check, nginx, paths_tk, strict=True, bound=0,
                       what=f"a second lone start after {what}")
    check.stats.pop("gap after the last stop")
    check.stats["gap at the lone start after"] = gap


# ---------------------------------------------------------------------------
# state files (see src/core/state/format.rs)

MAGIC = b"NGXTKST2"
START_UNKNOWN = (1 << 64) - 1


def header(version=2, flags=0):
    head = MAGIC + struct.pack("<II", version, flags)
    return head + struct.pack("<I", zlib.crc32(head))


def mark_record(key, mark, start=1, instance=0x1234, used=0):
    key = key.encode() if isinstance(key, str) else (key or b"")
    return (struct.pack("<BB", 1, len(key)) + key +
            struct.pack("<QQQQ", instance, START_UNKNOWN if start is None else start, mark, used))


def frame(*records, crc=None):
    payload = b"".join(records)
    return struct.pack("<II", len(payload), zlib.crc32(payload) if crc is None else crc) + payload


def state_file(*frames):
    return header() + b"".join(frames)


def file_facts(path):
    st = os.lstat(path)
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return (digest, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_nlink)


# ---------------------------------------------------------------------------
# scenarios

SCENARIOS = {}


def scenario(fn):
    SCENARIOS[fn.__name__.replace("_", "-")] = fn
    return fn


def durable_http(port, state, reserve, zone="t", size="1m", extra_zones="", extra_locations=""):
    return (f"    ticket_zone {zone}:{size} state={state} reserve={reserve};\n{extra_zones}" +
            server(port, f"""
        location = /t {{ ticket_counter zone={zone}; }}
        location = /k {{ ticket_counter zone={zone} key=$arg_k; }}
{extra_locations}"""))


def paths_tk(counter):
    _, key = counter
    return "/t" if key is None else f"/k?k={key}"


@scenario
def crash(run, args, check):
    """SIGKILL of every nginx process under load (and of one worker); clean stops (quit, and stop: SIGTERM) in between."""
    n = Nginx(run, "crash")
    state = n.path("state", "t.state")
    n.configure(durable_http(n.port, state, args.reserve))
    plan = ["kill-all"] * 4
    plan.insert(1, "kill-worker-then-all")
    plan.insert(3, "clean-stop")
    plan.insert(5, "fast-stop")
    plan.append("clean-stop")
    choose = keyed_chooser(["/t", "/k"], 2, default_share=0.34)
    rounds = []
    for i, how in enumerate(plan, 1):
        n.must_start()
        with Load(n.port, choose, clients=args.clients, seconds=30) as load:
            time.sleep(args.seconds * random.uniform(0.7, 1.0))
            if how == "kill-worker-then-all":
                os.kill(random.choice(n.workers()), signal.SIGKILL)
                time.sleep(args.seconds * 0.3)  # the master starts a new worker
                before = time.monotonic()
                time.sleep(args.seconds * 0.5)
                check.expect(load.ok_since(before) >= 100, f"round {i}: no progress after a worker was killed")
            if how == "clean-stop":
                load.finish()
                n.quit()
            elif how == "fast-stop":
                # nginx -s stop: the workers end at once, the master after them
                load.finish()
                n.quit(sig=signal.SIGTERM)
            else:
                n.kill_all()
        records = check.absorb(load, f"round {i}")
        per = {}
        for r in records:
            if r[2] == 200:
                per.setdefault(r[3], []).append(r[4])
        rounds.append((how, per))
        print(f"  round {i}: {how:22} {sum(len(v) for v in per.values())} tickets", flush=True)
    in_flight = args.clients
    largest = 0
    for counter in check.tickets:
        previous_last = None
        for i, (how, per) in enumerate(rounds):
            got = sorted(per.get(counter, []))
            if not got:
                continue
            if previous_last is not None:
                gap = got[0] - previous_last - 1
                ended = rounds[i - 1][0]
                if gap < 0:
                    check.fail(f"{fmt_counter(counter)}: round {i + 1} started below the previous round")
                elif ended in ("clean-stop", "fast-stop"):
                    check.expect(gap == 0, f"{fmt_counter(counter)}: gap of {gap} after a {ended} (round {i})")
                else:
                    largest = max(largest, gap)
                    check.expect(gap <= args.reserve + in_flight,
                                 f"{fmt_counter(counter)}: gap of {gap} after a crash (round {i}), more "
                                 f"than reserve={args.reserve} + {in_flight} in flight")
            previous_last = got[-1]
    check.stats["largest gap after a crash"] = f"{largest} (reserve={args.reserve}, {in_flight} in flight)"
    check_workers_healthy(check, n)


def upgrade_setup(run, args, name, reserve):
    n = Nginx(run, name)
    state = n.path("state", "t.state")
    n.configure(durable_http(n.port, state, reserve))
    return n


@scenario
def rollback(run, args, check):
    """Binary-upgrade rollback under load: USR2; WINCH and HUP to the old master; QUIT to the new one."""
    reserve = args.small_reserve
    n = upgrade_setup(run, args, "rollback", reserve)
    n.must_start()
    old = n.master
    choose = keyed_chooser(["/t", "/k"], args.keys)
    step = args.seconds
    check.pids.update({p: "old worker" for p in n.workers()})
    with Load(n.port, choose, clients=args.clients, seconds=60) as load:
        time.sleep(step)
        new = n.upgrade()
        check.pids.update({p: "new worker" for p in children(new)})
        time.sleep(step)
        old_workers = children(old)
        os.kill(old, signal.SIGWINCH)
        check.expect(wait_gone(old_workers, 15), "the old workers did not leave after WINCH")
        time.sleep(step)
        new_workers = children(new)
        os.kill(old, signal.SIGHUP)
        check.expect(bool(n.wait_workers(old, 1)), "the old master started no workers after HUP")
        time.sleep(0.1)
        check.pids.update({p: "old worker after HUP" for p in children(old)})
        time.sleep(step)
        n.quit(new)
        time.sleep(step)
        served = {r[5] for r in load.all()}
        check.expect(bool(served & set(new_workers)), "the new master's workers answered nothing")
    check.absorb(load, "rollback")
    n.master = old
    n.quit()
    check_after_instances(check, n, reserve, args, "the rollback")
    check_workers_healthy(check, n)


@scenario
def usr2_kill9(run, args, check):
    """USR2, kill -9 of the new master (its orphaned workers serve on), HUP of the old; then the orphans die."""
    reserve = args.small_reserve
    n = upgrade_setup(run, args, "usr2-kill9", reserve)
    n.must_start()
    old = n.master
    choose = keyed_chooser(["/t", "/k"], args.keys)
    step = args.seconds
    with Load(n.port, choose, clients=args.clients, seconds=60) as load:
        time.sleep(step)
        new = n.upgrade()
        orphans = children(new)
        check.pids.update({p: "old worker" for p in children(old)})
        check.pids.update({p: "new worker (orphaned later)" for p in orphans})
        time.sleep(step)
        os.kill(new, signal.SIGKILL)
        check.expect(wait_gone([new], 10), "the new master survived SIGKILL")
        time.sleep(step)
        check.expect(all(alive(p) for p in orphans), "the orphaned workers did not keep running")
        check.pids.update({p: "old worker after HUP" for p in n.reload(old)})
        marked = time.monotonic()
        time.sleep(step)
        by_orphans = sum(1 for r in load.all() if r[5] in orphans and r[1] > marked and r[2] == 200)
        check.note(f"orphaned workers answered {by_orphans} tickets after the old master's reload")
        for pid in orphans:
            os.kill(pid, signal.SIGKILL)
        wait_gone(orphans, 10)
        time.sleep(step)
        before = time.monotonic()
        time.sleep(0.5)
        check.expect(load.ok_since(before) > 50, "no tickets after the orphans were killed")
    check.absorb(load, "usr2-kill9")
    n.master = old
    n.quit()
    # the orphans died holding blocks: what they reserved last is skipped
    check_after_instances(check, n, reserve, args, "the orphans died")
    check_workers_healthy(check, n)


def restore_waits_for_the_lock(check, n):
    """A new master (USR2) reads the file only under the directory's lock:
    while someone else holds it, it restores nothing and starts no worker."""
    import fcntl
    notices = n.error_log().count("counters restored from")
    fd = os.open(n.path("state"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        old = n.master
        os.kill(old, signal.SIGUSR2)
        time.sleep(1.0)
        check.expect(n.error_log().count("counters restored from") == notices,
                     "a new master restored its counters while the state directory was locked")
        new = n.read_pid(seconds=0.1)
        check.expect(new == old or not children(new), "a new master started workers while the state directory was locked")
    finally:
        os.close(fd)  # unlocks
    new = n.upgrade_done(old)
    n.quit(old)
    n.master = new


@scenario
def usr2_quit_old(run, args, check):
    """USR2 under heavy keyed load (small reserve), QUIT of the old master; three upgrades in a row."""
    reserve = args.small_reserve
    n = upgrade_setup(run, args, "usr2-quit-old", reserve)
    n.must_start()
    restore_waits_for_the_lock(check, n)
    choose = keyed_chooser(["/t", "/k"], args.keys)
    step = args.seconds
    size_before = 0
    with Load(n.port, choose, clients=args.clients, seconds=60) as load:
        time.sleep(step)
        for i in range(3):
            old = n.master
            size_before = os.path.getsize(n.path("state", "t.state"))
            check.pids.update({p: f"worker of master {i + 1}" for p in children(old) if p not in check.pids})
            new = n.upgrade()
            check.pids.update({p: f"worker of master {i + 2}" for p in children(new)})
            time.sleep(step)
            n.quit(old)
            n.master = new
            time.sleep(step)
        elapsed = time.monotonic() - load.t0
        rate = load.count() / elapsed
    check.absorb(load, "upgrades")
    check.note(f"{rate:.0f} requests/s over {args.keys} keys and the default counter, reserve={reserve} "
               f"(state file {size_before} bytes at the last USR2)")
    n.quit()
    check_after_instances(check, n, reserve, args, "the upgrades")
    check_workers_healthy(check, n)


@scenario
def resize(run, args, check):
    """Resize reloads (1m <-> 2m) of a plain and a durable zone under keyed load, new keys all the time."""
    n = Nginx(run, "resize")
    state = n.path("state", "d.state")

    def http(size):
        return (f"    ticket_zone p:{size};\n    ticket_zone d:{size} state={state} reserve=20;\n" +
                server(n.port, """
        location = /p { ticket_counter zone=p key=$arg_k; }
        location = /d { ticket_counter zone=d key=$arg_k; }
        location = /pt { ticket_counter zone=p; }
"""))
    nkeys = 400

    def choose(rng, elapsed):
        # the key space grows all the time; half of the requests go to the
        # newest keys, so a new key is hit by both workers as it appears
        top = min(nkeys, 20 + int(elapsed * 60))
        i = rng.randrange(max(0, top - 20), top) if rng.random() < 0.5 else rng.randrange(top)
        zone = "p" if rng.random() < 0.5 else "d"
        if rng.random() < 0.05:
            return ("p", None), "/pt"
        return (zone, f"n{i}"), f"/{zone}?k=n{i}"
    n.configure(http("1m"))
    n.must_start()
    reloads = 0
    with Load(n.port, choose, clients=args.clients, seconds=60) as load:
        time.sleep(0.5)
        for i in range(args.resizes):
            n.configure(http("2m" if i % 2 == 0 else "1m"))
            n.reload()
            reloads += 1
            time.sleep(0.3)
    records = check.absorb(load, "resize reloads")
    # A worker whose zone was resized away answers 503 "try again" and
    # closes the connection, so the client's next request reaches a new
    # worker rather than the same old one again (only a rare "busy key
    # table" 503 keeps its connection).
    refused = kept = 0
    for client in load.records:
        for this, after in zip(client, client[1:]):
            if this[2] == 503:
                refused += 1
                kept += after[6] == this[6]
    check.note(f"{refused} of {len(records)} requests answered 503 during the reloads "
               f"({refused / max(1, len(records)):.1%}); {kept} of them kept their connection")
    check.expect(kept * 10 <= refused, f"{kept} of {refused} 503 answers kept their connection "
                 "(a worker whose zone was replaced closes it)")
    n.quit()
    log = n.error_log()
    carried = len(re.findall(r"resized: \d+ counters? carried over", log))
    check.expect(carried >= reloads, f"{carried} carry-overs logged for {reloads} resize reloads")
    check.note(f"{reloads} resize reloads, {carried} carry-overs, "
               f"{sum(1 for c in check.tickets if c[1] is not None)} keys used")
    check_workers_healthy(check, n)


def expect_refused(check, n, what, message, also_start=True, timeout=10):
    """nginx -t and a start both refuse, promptly, with `message`."""
    print(f"  {what}: refused?", flush=True)
    rc, out = n.test_config(timeout=timeout)
    if rc is None:
        check.fail(f"{what}: nginx -t hung for {timeout} s")
    else:
        check.expect(rc != 0, f"{what}: nginx -t accepted it")
        check.expect(message in out, f"{what}: nginx -t said {out.strip()[-300:]!r}, not {message!r}")
    if also_start:
        ok, out = n.start(timeout=timeout)
        if ok:
            check.fail(f"{what}: nginx started")
            n.quit()
        elif "hung" in out:
            check.fail(f"{what}: {out}")
        else:
            check.expect(message in n.error_log() or message in out,
                         f"{what}: the start did not say {message!r}")


def expect_accepted(check, n, what):
    print(f"  {what}: accepted?", flush=True)
    rc, out = n.test_config()
    check.expect(rc == 0, f"{what}: nginx -t refused it: {out.strip()[-300:]!r}")
    ok, out = n.start()
    if not check.expect(ok, f"{what}: nginx did not start: {out.strip()[-300:]!r}"):
        return None
    try:
        return first_tickets(n.port, [("t", None)], paths_tk)[("t", None)]
    finally:
        n.quit()


def outside_target(run, name):
    """A file outside every state directory, owned by someone else."""
    path = os.path.join(run.base, "outside", name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"root:secret:outside the state directory\n" + os.urandom(64))
    os.chmod(path, 0o640)
    if IS_ROOT:
        os.chown(path, 4242, 4243)
    return path


@scenario
def special_files(run, args, check):
    """Special files at the state path: FIFO, symlinks, hard link, foreign owner, world-writable dirs."""
    def case(name, reserve=10):
        n = Nginx(run, f"special-{name}")
        state = n.path("state", "t.state")
        n.configure(durable_http(n.port, state, reserve, size="32k"))
        return n, state

    n, state = case("fifo")
    os.mkfifo(state)
    expect_refused(check, n, "a FIFO", f'"{state}" is not a regular file')
    check.expect(stat.S_ISFIFO(os.lstat(state).st_mode), "the FIFO was replaced")

    n, state = case("devzero")
    os.symlink("/dev/zero", state)
    expect_refused(check, n, "a symlink to /dev/zero", f'"{state}" is a symbolic link')

    n, state = case("symlink-out")
    target = outside_target(run, "symlink-target")
    before = file_facts(target)
    os.symlink(target, state)
    expect_refused(check, n, "a symlink to a file outside", f'"{state}" is a symbolic link')
    check.expect(file_facts(target) == before, "the symlink's target was changed")

    n, state = case("hardlink")
    target = outside_target(run, "hardlink-target")
    if IS_ROOT:
        os.chown(target, 0, 0)
    before = file_facts(target)
    os.link(target, state)
    expect_refused(check, n, "a hard link", f'"{state}" has 2 hard links')
    check.expect(file_facts(target)[:5] == before[:5], "the hard link's other name was changed")

    if IS_ROOT:
        n, state = case("owner")
        with open(state, "wb") as f:
            f.write(state_file(frame(mark_record(None, 5))))
        os.chown(state, 4242, 4242)
        expect_refused(check, n, "a file of another user", f'"{state}" is owned by uid 4242')

    n, state = case("world-writable")
    os.chmod(os.path.dirname(state), 0o777)
    expect_refused(check, n, "a world-writable directory",
                   f'directory "{os.path.dirname(state)}" is writable by every user and has no sticky bit')
    os.chmod(os.path.dirname(state), 0o1777)
    got = expect_accepted(check, n, "a world-writable directory with the sticky bit")
    check.expect(got == (200, 1), f"sticky directory: first ticket {got}")
    check.expect(os.path.exists(state), "sticky directory: no state file written")

    # Planted while nginx runs: symlinks at the state path and at temporary
    # names; the master's stop and the next start must not write through them.
    n, state = case("planted", reserve=5)
    n.must_start()
    got = first_tickets(n.port, [("t", None)] * 1 + [("t", "a")], paths_tk)
    target = outside_target(run, "planted-target")
    target2 = outside_target(run, "planted-target2")
    before, before2 = file_facts(target), file_facts(target2)
    d = os.path.dirname(state)
    os.symlink(target, os.path.join(d, f"t.state.tmp.{n.master}"))
    for w in n.workers():
        os.symlink(target, os.path.join(d, f"t.state.tmp.{w}"))
    os.symlink(target2, os.path.join(d, ".t.state.0123456789abcdef.tmp"))
    os.rename(state, state + ".saved")
    os.symlink(target, state)
    t0 = time.monotonic()
    conn = Conn(n.port, 10)
    try:
        status, _, body = conn.get("/k?k=new-key")
    finally:
        conn.close()
    waited = time.monotonic() - t0
    check.expect(status == 500 and waited >= 4, f"a new key with a symlink planted at the state path: "
                 f"{status} {body!r} after {waited:.1f} s, expected 500 after 5 s")
    check.expect("is a symbolic link" in n.error_log(), "the worker did not log the symlink")
    n.quit()
    check.expect(file_facts(target) == before, "a planted symlink's target was written or chowned at stop")
    check.expect(file_facts(target2) == before2, "a planted temp symlink's target was changed at stop")
    os.unlink(state)
    os.rename(state + ".saved", state)
    n.must_start()
    try:
        again = first_tickets(n.port, [("t", None)], paths_tk)[("t", None)]
    finally:
        n.quit()
    check.expect(again[0] == 200 and again[1] > got[("t", None)][1], f"after the planted files: ticket {again}")
    left = sorted(e for e in os.listdir(d) if e != "t.state")
    check.expect(not left, f"stale temporary names left in the state directory: {left}")
    check.expect(file_facts(target) == before and file_facts(target2) == before2,
                 "a planted symlink's target was changed by the next start")
    for x in (n,):
        check_workers_healthy(check, x)


@scenario
def crafted(run, args, check):
    """Crafted state files: marks past 2^56, a key twice in one frame, more keys than the zone fits."""
    def case(name, content, size="32k"):
        n = Nginx(run, f"crafted-{name}")
        state = n.path("state", "t.state")
        n.configure(durable_http(n.port, state, 10, size=size))
        if content is not None:
            with open(state, "wb") as f:
                f.write(content)
        return n, state

    # the record starts at byte 28: header 20, frame 8
    for name, mark in (("2^56", 1 << 56), ("2^63", 1 << 63), ("2^64-1", (1 << 64) - 1)):
        n, state = case(f"mark-{name}", state_file(frame(mark_record(None, mark))))
        expect_refused(check, n, f"a mark of {name}",
                       f'corrupt state file "{state}": mark above the counters\' limit at byte 28')

    n, state = case("key-twice", state_file(frame(mark_record("k", 50), mark_record("k", 10))))
    expect_refused(check, n, "the same key twice in one frame",
                   f'corrupt state file "{state}": the same key twice in one frame at byte 63')

    # the first frame is written whole: damage there is never a torn write
    good = frame(mark_record(None, 100))
    n, state = case("first-frame-crc", header() + good[:4] + b"\0\0\0\0" + good[8:])
    expect_refused(check, n, "a bad checksum in the only frame",
                   f'corrupt state file "{state}": checksum mismatch at byte 20')
    n, state = case("first-frame-cut", header() + good[:-3])
    expect_refused(check, n, "a cut first frame", f'corrupt state file "{state}": truncated at byte 20')

    # a torn last frame after a good one is a write that never finished
    n, state = case("torn-tail", state_file(good) + frame(mark_record(None, 900))[:-5])
    got = expect_accepted(check, n, "a torn last frame")
    check.expect(got == (200, 101), f"a torn last frame: first ticket {got}, expected 101")

    # the end of the range: start 2^64 - 2 with a mark of 1
    n, state = case("range-end", state_file(frame(mark_record(None, 1, start=(1 << 64) - 2))))
    rc, out = n.test_config()
    check.expect(rc == 0, f"start=2^64-2 mark=1: nginx -t refused it: {out.strip()[-200:]!r}")
    if check.expect(n.start()[0], "start=2^64-2 mark=1: nginx did not start"):
        try:
            conn = Conn(n.port, 8)
            got = [conn.get("/t")[::2] for _ in range(3)]
            conn.close()
        finally:
            n.quit()
        check.expect(got == [(200, b"18446744073709551615\n"), (410, b"sold out\n"), (410, b"sold out\n")],
                     f"start=2^64-2 mark=1: {got}")

    # a mark at the counters' limit: nothing left to hand out
    n, state = case("mark-limit", state_file(frame(mark_record(None, (1 << 56) - 1))))
    if check.expect(n.start()[0], "a mark of 2^56-1: nginx did not start"):
        try:
            conn = Conn(n.port, 8)
            got = [conn.get("/t")[::2] for _ in range(2)]
            conn.close()
        finally:
            n.quit()
        check.expect(all(s == 410 for s, _ in got), f"a mark of 2^56-1: {got}, expected 410 sold out")

    # more keys than the zone fits: nginx -t already says so
    probe, _ = case("capacity", None)
    probe.test_config()
    m = re.search(r'ticket zone "t" holds (\d+) keys', probe.error_log() + open(probe.path("logs", "command.out")).read())
    if not m:
        ok, _ = probe.start()
        if ok:
            probe.quit()
        m = re.search(r'ticket zone "t" holds (\d+) keys', probe.error_log())
    if check.expect(m is not None, "could not learn the zone's capacity"):
        capacity = int(m.group(1))
        records = [mark_record(f"key{i}", 3) for i in range(capacity + 1)]
        n, state = case("too-many-keys", state_file(frame(*records)))
        expect_refused(check, n, f"{capacity + 1} keys in a zone of {capacity}",
                       f'"{state}" holds more keys than the zone fits ({capacity})')
        n, state = case("keys-fit", state_file(frame(*records[:capacity])))
        got = expect_accepted(check, n, f"{capacity} keys in a zone of {capacity}")
        check.expect(got == (200, 1), f"a full file's default counter: {got}")


@scenario
def two_instances(run, args, check):
    """Two nginx (two prefixes and ports) on one state file under load, stopped and restarted in turn."""
    shared = os.path.join(run.base, "shared-state")
    os.makedirs(shared)
    state = os.path.join(shared, "t.state")
    reserve = args.small_reserve
    a, b = Nginx(run, "two-a"), Nginx(run, "two-b")
    for n in (a, b):
        n.configure(durable_http(n.port, state, reserve))
        n.must_start()
        check.pids.update({p: f"{'A' if n is a else 'B'} worker (start 1)" for p in n.workers()})
    choose = keyed_chooser(["/t", "/k"], args.keys // 2)
    step = args.seconds / 2
    served = {}
    with Load([a.port, b.port], choose, clients=args.clients, seconds=60) as load:
        time.sleep(step)
        for i in range(6):
            n = (a, b)[i % 2]
            if i == 3:
                n.kill_all()  # one of the stops is a crash
            else:
                n.quit()
            time.sleep(step)
            n.must_start()
            check.pids.update({p: f"{'AB'[i % 2]} worker (start {i // 2 + 2})" for p in n.workers()})
            time.sleep(step)
        for r in load.all():
            served[r[5]] = served.get(r[5], 0) + 1
    check.absorb(load, "two instances")
    a.quit()
    b.quit()
    check_after_instances(check, a, reserve, args, "both stopped")
    check_workers_healthy(check, a, b)

# Admin moves under load (two-instances-admin): the promise under attack is
# that a move stays safe while another nginx holds reservations on the file.

ADMIN_LOCATION = """
        location = /admin {
            allow 127.0.0.1;
            deny all;
            ticket_admin zone=t;
        }"""

# Where a move aims: below what this nginx took already (must be 409), at
# its own next ticket, into the other nginx's current block, and from the
# lowest number nobody is known to have taken: just above, above every
# likely reservation, far above.
MOVE_KINDS = ("below", "own-next", "other-block", "just-above", "above", "far")


def admin_path(counter, next_ticket=None):
    _, key = counter
    query = [] if key is None else [f"key={key}"]
    if next_ticket is not None:
        query.append(f"next={next_ticket}")
    return "/admin" + ("?" + "&".join(query) if query else "")


def move_target(kind, rng, own_floor, free_floor, own_next, other_next, reserve):
    if kind == "below":
        return max(1, own_floor - rng.randint(1, 2 * reserve))
    if kind == "own-next":
        return own_next or own_floor
    if kind == "other-block":
        return (other_next or free_floor) + rng.randrange(reserve)
    if kind == "just-above":
        return free_floor + rng.randint(0, reserve)
    if kind == "above":
        return free_floor + rng.randint(2 * reserve, 20 * reserve)
    return free_floor + rng.randint(1000, 100_000)


class AdminClient:
    """A keep-alive connection to one nginx's ticket_admin; reconnects
    after nginx closes it."""

    def __init__(self, nginx):
        self.nginx = nginx
        self.conn = None

    def ask(self, method, path):
        if self.conn is None or self.conn.sock is None:
            self.conn = Conn(self.nginx.port, 10)  # a move waits up to 5 s for the disk
        return self.conn.request(method, path)

    def next_ticket(self, counter):
        """The counter's next ticket in this nginx, None while it has none."""
        status, _, body = self.ask("GET", admin_path(counter))
        return json.loads(body).get("next") if status == 200 else None

    def close(self):
        if self.conn is not None:
            self.conn.close()


class HighestSeen:
    """The highest ticket of each counter each nginx (port) answered so far
    in a running load, read incrementally (its clients only append)."""

    def __init__(self, load):
        self.load = load
        self.scanned = [0] * len(load.records)
        self.highest = {}

    def __call__(self, port, counter):
        for i, records in enumerate(self.load.records):
            end = len(records)
            port_of_client = self.load.targets[i % len(self.load.targets)]
            for r in records[self.scanned[i]:end]:
                if r[2] == 200 and r[4] > self.highest.get((port_of_client, r[3]), 0):
                    self.highest[(port_of_client, r[3])] = r[4]
            self.scanned[i] = end
        return self.highest.get((port, counter), 0)


def describe_move(move, t0):
    at = f" sent at {move['sent'] - t0:.3f} s" if "sent" in move else ""
    return (f"move {move['i']} on {move['nginx']}: {fmt_counter(move['counter'])} next={move.get('target')} "
            f"({move['kind']}, own floor {move.get('own_floor')}, free floor {move.get('free_floor')}){at}: "
            f"{move['status']} {move.get('body', '')!r}")


def write_moves(path, moves, t0):
    with open(path, "w") as f:
        f.write("# move\tnginx\tzone\tkey\tkind\town_floor\tfree_floor\ttarget\tsent\tdone\tstatus\tbody\n")
        for m in moves:
            zone, key = m["counter"]
            times = "\t".join(f"{m[k] - t0:.4f}" if k in m else "-" for k in ("sent", "done"))
            f.write(f"{m['i']}\t{m['nginx']}\t{zone}\t{key or '-'}\t{m['kind']}\t{m.get('own_floor')}\t"
                    f"{m.get('free_floor')}\t{m.get('target')}\t{times}\t{m['status']}\t{m.get('body', '')}\n")


def check_admin_moves(check, load, moves, other_port):
    """Every move answered 200 or 409; never one below what its nginx took
    already; after an accepted move to N, its nginx hands out only N or more
    to requests sent once the 200 arrived."""
    t0 = load.t0
    check.expect(len(moves) >= 30, f"only {len(moves)} admin moves were sent in time")
    odd = [m for m in moves if m["status"] not in (200, 409)]
    check.expect(not odd, f"{len(odd)} of {len(moves)} admin moves answered neither 200 nor 409: "
                 + "; ".join(describe_move(m, t0) for m in odd[:3]))
    accepted = [m for m in moves if m["status"] == 200]
    refused = [m for m in moves if m["status"] == 409]
    check.expect(len(accepted) >= 5 and len(refused) >= 5,
                 f"{len(accepted)} moves accepted and {len(refused)} refused: too few of one to test anything")
    backward = [m for m in accepted if m["target"] < m["own_floor"]]
    check.expect(not backward, f"{len(backward)} moves accepted below a number their nginx had taken: "
                 + "; ".join(describe_move(m, t0) for m in backward[:3]))
    short = []
    for m in accepted:
        try:
            shown = json.loads(m["body"]).get("next")
        except ValueError:
            shown = None
        if shown is None or shown < m["target"]:
            short.append(m)
    check.expect(not short, f"{len(short)} accepted moves answered a next ticket below their target: "
                 + "; ".join(describe_move(m, t0) for m in short[:3]))

    # Tickets of each nginx (client i talks to targets[i % 2]) and counter,
    # by send time, and by answer time with the highest answered by then.
    by_sent, by_done = {}, {}
    for index, records in enumerate(load.records):
        port = load.targets[index % len(load.targets)]
        for sent, done, status, counter, ticket, _, _ in records:
            if status == 200:
                by_sent.setdefault((port, counter), []).append((sent, ticket))
                by_done.setdefault((port, counter), []).append((done, ticket))
    for tickets in by_sent.values():
        tickets.sort()
    highest_by = {}
    for where, answered in by_done.items():
        answered.sort()
        top, highest = 0, []
        for _, ticket in answered:
            top = max(top, ticket)
            highest.append(top)
        highest_by[where] = ([done for done, _ in answered], highest)

    def highest_before(port, counter, when):
        times, highest = highest_by.get((port, counter), ([], []))
        n = bisect.bisect_left(times, when)
        return highest[n - 1] if n else 0

    checked = followed = 0
    went_below, reissued, inside_own = [], [], 0
    for m in accepted:
        after = by_sent.get((m["port"], m["counter"]), [])
        later = after[bisect.bisect_right(after, (m["done"], float("inf"))):]
        checked += len(later)
        followed += bool(later)
        low = [(sent, t) for sent, t in later if t < m["target"]]
        if low:
            went_below.append(f"{describe_move(m, t0)}, answered at {m['done'] - t0:.3f} s; then "
                              f"{m['nginx']} handed out {low[0][1]} to a request sent at {low[0][0] - t0:.3f} s "
                              f"({len(low)} such tickets)")
        own = highest_before(m["port"], m["counter"], m["sent"])
        if own >= m["target"]:
            reissued.append(f"{describe_move(m, t0)}, but its nginx had answered ticket {own} before "
                            f"({check.explain(m['counter'], own)})")
        # Two nginx are unique, not ordered: a move inside this nginx's own
        # reservation is accepted even where the other one handed out more;
        # the duplicate check shows it reissues nothing.
        inside_own += highest_before(other_port[m["port"]], m["counter"], m["sent"]) >= m["target"]
    check.expect(not went_below, f"{len(went_below)} accepted moves were followed by lower tickets from the "
                 f"same nginx: " + "; ".join(went_below[:3]))
    check.expect(not reissued, f"{len(reissued)} moves were accepted at or below a ticket their nginx had "
                 "handed out: " + "; ".join(reissued[:3]))
    # without tickets after it, a move checks nothing, and the lone start
    # after the run would see its jump as a gap
    check.expect(followed == len(accepted), f"only {followed} of {len(accepted)} accepted moves were followed "
                 "by a ticket of their counter from their nginx")

    kinds = {}
    for m in moves:
        kinds.setdefault(m["kind"], {}).setdefault(m["status"], 0)
        kinds[m["kind"]][m["status"]] += 1
    check.note("moves by kind: " + ", ".join(
        f"{kind} " + "/".join(f"{n}x{s}" for s, n in sorted(kinds[kind].items(), key=str))
        for kind in MOVE_KINDS if kind in kinds))
    check.note(f"{inside_own} accepted moves went to a number at or below one the other nginx had "
               "already handed out (inside the mover's own reservation)")
    check.stats["admin moves"] = f"{len(moves)} (200: {len(accepted)}, 409: {len(refused)})"
    check.stats["tickets checked against moves"] = checked


def check_no_alerts(check, *nginxes):
    """Nothing logged at crit, alert or emerg; errors and warnings noted."""
    for n in nginxes:
        lesser = 0
        for line in n.error_log().splitlines():
            if re.search(r"\[(crit|alert|emerg)\]", line):
                check.fail(f"{n.prefix}: {line.strip()[-200:]}")
            elif re.search(r"\[(error|warn)\]", line):
                lesser += 1
        if lesser:
            check.note(f"{n.prefix}: {lesser} lines at warn or error in the error log")


@scenario
def two_instances_admin(run, args, check):
    """Two nginx on one state file under load, admin moves to each in turn: only 200 or 409, never a ticket twice."""
    shared = os.path.join(run.base, "admin-shared-state")
    os.makedirs(shared)
    state = os.path.join(shared, "t.state")
    reserve = args.small_reserve
    a, b = Nginx(run, "admin-a"), Nginx(run, "admin-b")
    name = {a.port: "A", b.port: "B"}
    for n in (a, b):
        n.configure(durable_http(n.port, state, reserve, extra_locations=ADMIN_LOCATION))
        n.must_start()
        check.pids.update({p: f"{name[n.port]} worker" for p in n.workers()})
    keys = args.keys // 2
    choose = keyed_chooser(["/t", "/k"], keys)
    moved = [("t", None)] + [("t", f"k{i}") for i in range(min(6, keys))]
    rng = random.Random()
    step = args.seconds
    admins = {n.port: AdminClient(n) for n in (a, b)}
    moves = []
    try:
        with Load([a.port, b.port], choose, clients=args.clients, seconds=60) as load:
            highest_seen = HighestSeen(load)
            time.sleep(step)
            deadline = time.monotonic() + 8 * step
            for i in range(args.moves):
                if time.monotonic() > deadline:
                    break
                this, other = (a, b) if i % 2 == 0 else (b, a)
                # each (counter, kind) goes to A, then to B; 7 counters and
                # 6 kinds make 42 pairs before one repeats
                counter = moved[i // 2 % len(moved)]
                kind = MOVE_KINDS[i // 2 % len(MOVE_KINDS)]
                move = {"i": i, "nginx": name[this.port], "port": this.port, "counter": counter, "kind": kind}
                try:
                    own = admins[this.port].next_ticket(counter)
                    theirs = admins[other.port].next_ticket(counter)
                    # below own_floor this nginx took every number already:
                    # a move there must be refused; from free_floor on,
                    # nobody is known to have taken any
                    own_floor = max(highest_seen(this.port, counter) + 1, own or 1)
                    free_floor = max(own_floor, highest_seen(other.port, counter) + 1, theirs or 1)
                    target = move_target(kind, rng, own_floor, free_floor, own, theirs, reserve)
                    move.update(own_floor=own_floor, free_floor=free_floor, target=target, sent=time.monotonic())
                    status, _, body = admins[this.port].ask("POST", admin_path(counter, target))
                    move.update(done=time.monotonic(), status=status, body=body.decode(errors="replace").strip())
                except (OSError, ValueError) as e:
                    move.update(status=f"no answer ({type(e).__name__}: {e})")
                moves.append(move)
                time.sleep(rng.uniform(0.05, 0.15))
            time.sleep(step)  # every counter moved is taken from again on both nginx
    finally:
        for admin in admins.values():
            admin.close()
    write_moves(os.path.join(run.base, "two-instances-admin.moves.tsv"), moves, load.t0)
    check.absorb(load, "admin moves")
    check_admin_moves(check, load, moves, {a.port: b.port, b.port: a.port})
    a.quit()
    b.quit()
    check_after_instances(check, a, reserve, args, "both stopped")
    check_workers_healthy(check, a, b)
    check_no_alerts(check, a, b)



@scenario
def config_changes(run, args, check):
    """state= added on a same-size reload, two zones on one file, the module at a new path, stale temp files."""
    # 1. A file from an earlier run with higher marks; a zone that gains
    #    state= on a reload of the same size continues above them.
    n = Nginx(run, "config-add-state")
    state = n.path("state", "t.state")
    n.configure(durable_http(n.port, state, 50))
    n.must_start()
    conn = Conn(n.port, 8)
    for _ in range(300):
        conn.get("/t")
        conn.get("/k?k=a")
    conn.close()
    n.quit()
    n.configure("    ticket_zone t:1m;\n" + server(n.port, """
        location = /t { ticket_counter zone=t; }
        location = /k { ticket_counter zone=t key=$arg_k; }
"""))
    n.must_start()
    before = first_tickets(n.port, [("t", None), ("t", "a")], paths_tk)
    check.expect(before == {("t", None): (200, 1), ("t", "a"): (200, 1)}, f"without state=: {before}")
    n.configure(durable_http(n.port, state, 50))
    n.reload()
    after = first_tickets(n.port, [("t", None), ("t", "a"), ("t", "b")], paths_tk)
    check.expect(after[("t", None)][1] > 300 and after[("t", "a")][1] > 300,
                 f"state= added on a same-size reload: {after}, expected above the file's 300")
    check.expect(after[("t", "b")] == (200, 1), f"a new key after state= was added: {after[('t', 'b')]}")
    # and on a reload that also resizes
    n.configure(durable_http(n.port, n.path("state", "u.state"), 50, size="2m"))
    n.reload()
    n.quit()

    # 2. Two zones with one state file: refused by nginx -t.
    n = Nginx(run, "config-same-file")
    state = n.path("state", "t.state")
    n.configure(durable_http(n.port, state, 10, extra_zones=f"    ticket_zone u:1m state={state};\n"))
    expect_refused(check, n, "two zones with one state file",
                   f'ticket zones "t" and "u" use the same state file "{state}"')
    # the same file spelled another way, "." or a symlinked directory: the
    # check compares the directory's device and inode, so both are caught
    n.configure(durable_http(n.port, state, 10, extra_zones=f"    ticket_zone u:1m state={os.path.dirname(state)}/./t.state;\n"))
    expect_refused(check, n, "two zones with one state file, one spelled with ./",
                   'ticket zones "t" and "u" use the same state file', also_start=False)
    alias = n.path("state-alias")
    os.symlink(os.path.dirname(state), alias)
    n.configure(durable_http(n.port, state, 10, extra_zones=f"    ticket_zone u:1m state={alias}/t.state;\n",
                             extra_locations="        location = /u { ticket_counter zone=u; }"))
    expect_refused(check, n, "two zones with one state file, one through a symlinked directory",
                   'ticket zones "t" and "u" use the same state file', also_start=False)

    # 3. A reload with the module at a new path: nginx takes its zones for
    #    new ones; the plain zone's counters carry on.
    n = Nginx(run, "config-module-path")
    state = n.path("state", "d.state")
    mod_b = os.path.join(run.base, "modules", "copy-b", MODULE_NAME)
    os.makedirs(os.path.dirname(mod_b))
    shutil.copy2(run.module, mod_b)
    http = (f"    ticket_zone p:1m;\n    ticket_zone d:1m state={state} reserve=20;\n" + server(n.port, """
        location = /p { ticket_counter zone=p; }
        location = /pk { ticket_counter zone=p key=$arg_k; }
        location = /d { ticket_counter zone=d; }
"""))
    n.configure(http)
    n.must_start()
    counters = {"/p": [], "/pk?k=x": [], "/d": []}

    def take(rounds):
        conn = Conn(n.port, 8)
        try:
            for _ in range(rounds):
                for path in counters:
                    status, _, body = conn.get(path)
                    counters[path].append(int(body) if status == 200 else f"{status} {body!r}")
        finally:
            conn.close()
    take(10)
    for module in (mod_b, run.module):
        n.configure(http, module=module)
        n.reload()
        take(5)
    for path, got in counters.items():
        check.expect(got == list(range(1, 21)), f"{path} across reloads with the module at a new path: {got}")
    n.quit()

    # 4. Files a killed writer left behind are removed at start; other
    #    names stay.
    n = Nginx(run, "config-temps")
    state = n.path("state", "t.state")
    d = os.path.dirname(state)
    n.configure(durable_http(n.port, state, 10))
    stale = ["t.state.tmp.12345", ".t.state.0123456789abcdef.tmp", ".t.state.fedcba9876543210.tmp"]
    kept = ["t.state.tmp.x1", ".t.state.0123.tmp", ".u.state.0123456789abcdef.tmp", "notes"]
    for name in stale + kept:
        with open(os.path.join(d, name), "w") as f:
            f.write("left behind\n")
    n.must_start()
    n.quit()
    left = set(os.listdir(d))
    check.expect(not (left & set(stale)), f"stale temporary files not removed: {sorted(left & set(stale))}")
    check.expect(set(kept) <= left, f"files that are not ours were removed: {sorted(set(kept) - left)}")
    for x in (n,):
        check_workers_healthy(check, x)


@scenario
def disk_full(run, args, check):
    """The state directory on a small tmpfs, filled up under load, then freed: 500s, never a duplicate."""
    if not (IS_ROOT and os.environ.get("FAULT_IN_MOUNTNS")):
        check.stats["skipped"] = "needs root and a private mount namespace (scripts/fault makes one)"
        return "skip"
    n = Nginx(run, "disk-full")
    d = n.path("state")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "fault-tmpfs", d], check=True)
    run.mounts.append(d)
    try:
        state = os.path.join(d, "t.state")
        n.configure(durable_http(n.port, state, 10))
        n.must_start()
        choose = keyed_chooser(["/t", "/k"], 20)
        filler = os.path.join(d, "filler")
        with Load(n.port, choose, clients=args.clients, seconds=40, timeout=10) as load:
            time.sleep(1)
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                while os.write(fd, b"\0" * 4096):
                    pass
            except OSError:
                pass
            finally:
                os.close(fd)
            full_at = time.monotonic()
            time.sleep(6.5)
            failed = sum(1 for r in load.all() if r[2] == 500)
            check.expect(failed > 0, "no request got 500 while the disk was full")
            os.unlink(filler)
            freed = time.monotonic()
            time.sleep(2.5)
            resumed = [r[1] - freed for r in load.all() if r[0] > freed and r[2] == 200 and r[3][1] is not None]
            time.sleep(1)
        records = check.absorb(load, "disk full", slow_allowed=True, allowed=(200, 500, 503))
        during = [r for r in records if full_at < r[0] < freed]
        ok_during = sum(1 for r in during if r[2] == 200)
        first = min(resumed) if resumed else None
        check.expect(first is not None and first <= 2.0,
                     f"keyed tickets resumed {first if first is None else round(first, 2)} s after space was freed")
        after = [r for r in records if r[0] > freed + 2.0]
        check.expect(after and all(r[2] == 200 for r in after),
                     f"{sum(1 for r in after if r[2] != 200)} failures from 2 s after space was freed")
        check.note(f"disk full for {freed - full_at:.1f} s: {ok_during} tickets from blocks already "
                   f"reserved, {sum(1 for r in during if r[2] == 500)} answered 500; first keyed ticket "
                   f"{'never' if first is None else f'{first:.2f} s'} after space was freed")
        check.expect("No space left on device" in n.error_log(), "no 'No space left on device' in the error log")
        n.quit()
        check_workers_healthy(check, n)
    finally:
        n.run.stop_everything()
        subprocess.run(["umount", d], check=False)
        run.mounts.remove(d)


# ---------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nginx", default=os.path.join(ROOT, "build/sbin/nginx"))
    ap.add_argument("--module", default=os.path.join(ROOT, "build/modules", MODULE_NAME))
    ap.add_argument("--scenario", action="append", metavar="NAME",
                    help="run only this scenario (repeatable; default: all)")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    ap.add_argument("--reserve", type=int, default=300, help="reserve= of the crash scenario")
    ap.add_argument("--small-reserve", type=int, default=10,
                    help="reserve= where extensions should be frequent (upgrades, two instances)")
    ap.add_argument("--keys", type=int, default=60, help="keys under load in the upgrade scenarios")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=1.5, help="length of one step of load")
    ap.add_argument("--resizes", type=int, default=12, help="resize reloads")
    ap.add_argument("--moves", type=int, default=60, help="admin moves in two-instances-admin")
    ap.add_argument("--workers", type=int, default=2, help="worker_processes of every nginx")
    ap.add_argument("--keep", action="store_true", help="keep the prefixes even when everything passes")
    args = ap.parse_args()

    if args.list:
        for name, fn in SCENARIOS.items():
            print(f"{name:20} {fn.__doc__}")
        return 0
    names = args.scenario or list(SCENARIOS)
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario {', '.join(unknown)}; see --list")

    become_subreaper()
    run = Run(args.keep)
    run.workers = args.workers
    run.install(args.nginx, args.module)
    return run_scenarios("fault test", SCENARIOS, names, run, args, Check,
                         lambda results: "{} tickets collected".format(
                             sum(c.stats.get("tickets", 0) for _, _, c in results)))


def run_scenarios(title, scenarios, names, run, args, new_check, collected):
    """Runs the named scenarios one after another, each with a fresh check,
    stops what each started, keeps every response of a failed one, prints
    the summary; returns the exit code. Shared with cluster_fault.py."""
    results = []
    failed = False
    started = time.monotonic()
    try:
        for name in names:
            print(f"== {name}: {scenarios[name].__doc__}", flush=True)
            check = new_check(name)
            t0 = time.monotonic()
            try:
                outcome = scenarios[name](run, args, check)
            except Failure as e:
                check.fail(str(e))
                outcome = None
            except Exception as e:  # a bug here, or nginx gone: report, go on
                traceback.print_exc()
                check.fail(f"{type(e).__name__}: {e}")
                outcome = None
            finally:
                run.stop_everything()
            ok = check.finish(time.monotonic() - t0)
            if not ok and check.has_records():
                check.dump(os.path.join(run.base, f"{name}.responses.tsv"))
            status = "SKIP" if outcome == "skip" else ("PASS" if ok else "FAIL")
            failed |= not ok
            results.append((name, status, check))
            print(f"   {status} {name}: {fmt_stats(check.stats)}", flush=True)
    finally:
        run.cleanup(failed)
    total = time.monotonic() - started
    print()
    print(f"{title} summary:")
    for name, status, check in results:
        print(f"  {status} {name:20} {fmt_stats(check.stats)}")
        for failure in check.failures:
            print(f"       FAIL: {failure}")
        for note in check.notes:
            if note.startswith("note:"):
                print(f"       {note}")
    dups = sum(c.stats.get("duplicates", 0) for _, _, c in results)
    bad = [n for n, s, _ in results if s == "FAIL"]
    print(f"{collected(results)}, {dups} duplicates, {total:.0f} s")
    print(f"{title}: {'FAILED: ' + ', '.join(bad) if bad else 'passed'}")
    return 1 if bad else 0


def fmt_stats(stats):
    return ", ".join(f"{k} {v}" for k, v in stats.items())


if __name__ == "__main__":
    sys.exit(main())

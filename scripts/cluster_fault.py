#!/usr/bin/env python3
"""Cluster fault test: two nginx nodes, one Redis, no ticket issued twice.

Each scenario starts a redis-server of its own (appendonly yes, appendfsync
always, its own directory) and nginx nodes (the bundled build, copied into
private prefixes, 2 workers each) whose zones keep their counters in it, puts
them under concurrent keep-alive load (several clients per node, the default
counter, keys, batches), records for every request when it was sent and when
it was answered (monotonic clock), and checks, per counter:

- no ticket handed out twice, over the whole scenario, faults included;
- real-time order: when request A was answered before request B was sent,
  ticket(A) < ticket(B) (strict mode: across nodes; lease mode: per node);
- no gap while nothing failed (tickets 1..N, N the count Redis holds);
- max= exact across nodes; a count=K batch all or nothing;
- no worker dies of a signal we did not send.

Scenarios (`scripts/cluster-fault --list`; `scripts/cluster-fault NAME` runs one):

  order          no fault: duplicates, order, gaps, max=500 across nodes, count=K
  redis-kill9    kill -9 of redis-server and restart on its directory, twice
  redis-empty    redis-server restarted empty: the nodes' guard keeps numbers unique
  redis-stop     kill -STOP of Redis (redis_timeout=500ms): 503 in time, other locations fast
  reload-quit    nginx -s reload and a graceful quit while requests wait for Redis
  lease          lease=100 on both nodes: unique, ordered per node; kill -9 of Redis
  lease-reload   lease=20: reload and quit while requests wait for a refill from
                 a stopped Redis: they get their tickets; then a reload that
                 resizes the zone meanwhile: 200 or 503 try again, nothing twice
  prefix         zones under redis_prefix= app:tix:, {shop}: (lease), one with spaces
                 and glob characters, and empty, beside ticket: on one Redis: unique,
                 in order, no gap; every Redis key is PREFIX+zone[:key|;key] of a
                 counter used, holding its last ticket; an admin move and delete;
                 kill -9 of Redis: each zone fenced once, nothing again
  failover       a master and a replica, the nodes reaching the master through a
                 TCP forwarder; kill -9 of the master, the replica promoted, the
                 forwarder repointed; then again with a replica whose link was
                 held (it lacks the last writes): unique, in order, fenced once
                 per zone, redis_replicas=1 lost nothing it answered
  failback       back to a former master that never restarted and lacks the
                 later writes (its own run id still in its metadata: the nodes
                 that saw the other run fence); then a master demoted while the
                 nodes use it (READONLY: the link is dropped and reconnects)
  life-local     issue 12 on a local zone: takes while keys are deleted, moved, expire
  life-durable   the same on a durable zone; a move and a delete survive kill -9 and a restart
  life-redis     the same on a Redis zone over two nodes; survives Redis restarts
  life-lease     the same in lease mode, moves and expiry: the node that moved a
                 key serves only the new range (another may finish its lease)

Lives of a key (issue 12), as the client sees them: a key's life ends at a
DELETE answered 200 (or one that failed: it may have happened) and at an
idle expiry, which needs a quiet spell of at least idle= with no successful
use (take or move) of the key. Two takes that got the same ticket of a key
are a duplicate unless one of these boundaries could lie between them
(between their send and answer times). Every key i has locations with
start=i*10^9+1 and every move goes to a fresh range i*10^9+j*10^6+1, so a
ticket outside the key's range belongs to another key, and after a move
(until the next admin operation or quiet spell) every take of that key is in
the moved-to range; after a delete or an expiry, in the range of a new life.

Loopback only (scripts/cluster-fault runs this in a private network
namespace when it can); every phase is bounded in time; every process is
stopped by its pid, also on failure. The prefixes (with the Redis
directories and logs) are kept when a scenario fails, with every response of
the failed scenario in NAME.responses.tsv.
"""

import argparse
import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from bisect import bisect_left
from collections import defaultdict, namedtuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fault  # noqa: E402  scripts/fault.py: prefixes, nginx processes
from fault import Failure, Nginx, Run, become_subreaper, server  # noqa: E402

ROOT = fault.ROOT
MODULE_NAME = fault.MODULE_NAME
UNAVAILABLE = b"ticket authority unavailable\n"

# ---------------------------------------------------------------------------
# Redis


class RedisError(Exception):
    pass


def resp_encode(args):
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def resp_read(f):
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2].decode(errors="replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [resp_read(f) for _ in range(n)]
    raise ConnectionError(f"bad reply {line!r}")


def redis_command(port, *args, timeout=2.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(resp_encode(args))
        with s.makefile("rb") as f:
            return resp_read(f)


class Redis:
    """A redis-server of our own, on loopback, with its own directory."""

    def __init__(self, run, name):
        self.run = run
        self.port = run.port()
        self.dir = os.path.join(run.base, name)
        os.makedirs(self.dir, exist_ok=True)
        self.proc = None
        self.started = self.ready = None
        self.extra = []  # more redis-server arguments (a replica's --replicaof)
        run.redises.append(self)

    def start(self, seconds=10):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no",
             "--logfile", os.path.join(self.dir, "redis.log"), *self.extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.started = time.monotonic()
        deadline = self.started + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Failure(f"redis-server exited with {self.proc.returncode}; see {self.dir}/redis.log")
            try:
                if redis_command(self.port, "PING", timeout=0.5) == "PONG":
                    self.ready = time.monotonic()
                    return
            except (OSError, RedisError):
                pass
            time.sleep(0.005)
        raise Failure(f"redis-server on port {self.port} not ready within {seconds} s")

    def cmd(self, *args):
        return redis_command(self.port, *args)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        if self.running():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def sig(self, sig):
        if self.running():
            os.kill(self.proc.pid, sig)

    def shutdown(self, seconds=10):
        """SIGTERM: Redis writes its append-only file and exits."""
        if self.running():
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                self.kill9()
                raise Failure(f"redis-server {self.proc.pid} did not stop within {seconds} s")

    def wipe(self):
        """Every file of its directory but the log: a Redis that lost its data."""
        for entry in os.listdir(self.dir):
            path = os.path.join(self.dir, entry)
            if entry == "redis.log":
                continue
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)

    def counter(self, zone, key=None):
        v = self.cmd("GET", f"ticket:{zone}" if key is None else f"ticket:{zone}:{key}")
        return None if v is None else int(v)

    def covered(self, zone, key=None):
        """What this server's copy covers of a counter: its count, or its
        durable ceiling (reserve=) if higher, where a restart resumes."""
        r = self.cmd("HGET", f"ticket:{zone};" + ("" if key is None else key), "r")
        return max(self.counter(zone, key) or 0, 0 if r is None else int(r))


class ClusterRun(Run):
    """fault.Run (a base directory, our copy of nginx, every nginx stopped by
    pid) plus the redis-servers started from it."""

    def __init__(self, keep):
        super().__init__(keep)
        os.rmdir(self.base)
        self.base = tempfile.mkdtemp(prefix="ngx-ticket-cluster-")
        self.sbin = os.path.join(self.base, "sbin", "nginx")
        self.module = os.path.join(self.base, "modules", MODULE_NAME)
        self.next_port = 18580
        self.redises = []
        self.forwarders = []

    def stop_everything(self):
        for f in self.forwarders:
            f.stop()
        self.forwarders = []
        for r in self.redises:
            try:
                r.sig(signal.SIGCONT)
                r.kill9()
            except (OSError, subprocess.TimeoutExpired):
                pass
        super().stop_everything()


class Forwarder:
    """A TCP forwarder on loopback, as a virtual IP or a proxy in front of
    Redis: each connection it accepts is relayed to the port it points at
    (one thread per connection). point(port) moves it and closes every
    connection relayed so far; hold() stops passing on what the servers send
    (a replication link that lags: the master's writes stay unread in its
    socket); drop() closes every connection (what was held is lost)."""

    def __init__(self, run, target):
        self.port = run.port()
        self.target = target
        self.held = False
        self.lock = threading.Lock()
        self.pairs = set()
        self.done = threading.Event()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(128)
        self.listener.settimeout(0.1)
        run.forwarders.append(self)
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while not self.done.is_set():
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=1)
            except OSError:
                client.close()  # nothing there: the client sees the connection close
                continue
            for sock in (client, upstream):
                sock.settimeout(5)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = (client, upstream)
            with self.lock:
                if self.done.is_set():
                    client.close()
                    upstream.close()
                    return
                self.pairs.add(pair)
            threading.Thread(target=self.pump, args=(pair,), daemon=True).start()

    def pump(self, pair):
        client, upstream = pair
        try:
            while pair in self.pairs:
                readers = [client] if self.held else [client, upstream]
                ready, _, _ = select.select(readers, [], [], 0.05)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is client else client).sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            self.close(pair)

    def close(self, pair, release=True):
        """Shuts a pair down; only its pump thread releases the sockets
        (another thread may be selecting on them)."""
        with self.lock:
            self.pairs.discard(pair)
        for sock in pair:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            if release:
                sock.close()

    def drop(self):
        with self.lock:
            pairs = list(self.pairs)
        for pair in pairs:
            self.close(pair, release=False)

    def hold(self):
        self.held = True

    def point(self, target):
        """Relay new connections to `target`; close the ones relayed so far."""
        self.target = target
        self.held = False
        self.drop()

    def stop(self):
        self.done.set()
        try:
            self.listener.close()
        except OSError:
            pass
        self.drop()


# ---------------------------------------------------------------------------
# HTTP load

Rec = namedtuple("Rec", "sent done status counter first last node pid conn want body")


class Client:
    """HTTP/1.1 keep-alive client (any method)."""

    def __init__(self, port, timeout=8):
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

    def request(self, method, path):
        length = "Content-Length: 0\r\n" if method == "POST" else ""
        self.sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: cluster\r\n{length}\r\n".encode())
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
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                line = self.read_until(b"\r\n")
                size = int(line.split(b";")[0], 16)
                data = self.read_exactly(size + 2)[:-2]
                if size == 0:
                    break
                body += data
        else:
            body = self.read_exactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body


    def fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the body")
        self.buf += chunk

    def read_exactly(self, n):
        while len(self.buf) < n:
            self.fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_until(self, sep):
        while sep not in self.buf:
            self.fill()
        data, _, self.buf = self.buf.partition(sep)
        return data


def parse_tickets(body):
    """'N' or 'FIRST LAST' -> (first, last), or None."""
    parts = body.split()
    try:
        if len(parts) == 1:
            t = int(parts[0])
            return t, t
        if len(parts) == 2:
            return int(parts[0]), int(parts[1])
    except ValueError:
        pass
    return None


def one(node, method, path, timeout=8):
    """One request on a connection of its own: (status, body)."""
    c = Client(node.port, timeout)
    try:
        status, _, body = c.request(method, path)
        return status, body
    finally:
        c.close()


def take(node, path):
    status, body = one(node, "GET", path)
    if status != 200:
        return f"{status} {body.decode(errors='replace').strip()}"
    return parse_tickets(body)[0]


class Load(fault.Clients):
    """Clients taking tickets over keep-alive connections until stopped,
    keeping every response as a Rec. Client i talks to nodes[i % len(nodes)];
    `choose(rng, elapsed, client)` gives (counter, path, count) or None (nothing
    to do now). A request that got no answer (connection closed or timed out)
    is kept with status 0."""

    def __init__(self, nodes, choose, clients=8, seconds=60, max_requests=300_000, timeout=8):
        super().__init__(nodes, choose, clients, seconds, max_requests, timeout)

    def run_client(self, index):
        rng = random.Random(index * 7919 + int(self.t0 * 1000))
        node = self.targets[index % len(self.targets)]
        records = self.records[index]
        conn, conn_id = None, index << 32
        deadline = self.t0 + self.seconds
        while not self.stop.is_set() and len(records) < self.max_requests:
            now = time.monotonic()
            if now > deadline:
                break
            chosen = self.choose(rng, now - self.t0, index)
            if chosen is None:
                time.sleep(0.005)
                continue
            counter, path, want = chosen
            if conn is None or conn.sock is None:
                try:
                    conn_id += 1
                    conn = Client(node.port, self.timeout)
                except OSError:
                    self.conn_errors[index] += 1
                    conn = None
                    time.sleep(0.01)
                    continue
            sent = time.monotonic()
            try:
                status, headers, body = conn.request("GET", path)
            except (OSError, ValueError, IndexError) as e:
                records.append(Rec(sent, time.monotonic(), 0, counter, None, None, node.name, 0,
                                   conn_id, want, f"{type(e).__name__}: {e}"[:60]))
                conn.close()
                conn = None
                time.sleep(0.005)
                continue
            done = time.monotonic()
            first = last = None
            if status == 200:
                got = parse_tickets(body)
                if got is None:
                    status = -200  # a 200 without a ticket: reported as an unexpected status
                else:
                    first, last = got
            records.append(Rec(sent, done, status, counter, first, last, node.name,
                               int(headers.get("x-pid", 0) or 0), conn_id, want,
                               None if status == 200 else body[:60]))
            if status != 200:
                time.sleep(0.002)  # an unavailable authority answers at once: do not spin
        if conn is not None:
            conn.close()

    def ok_since(self, t):
        return sum(1 for r in self.records for x in r[-3000:] if x.sent > t and x.status == 200)


# ---------------------------------------------------------------------------
# checks


class Check:
    """What one scenario found."""

    def __init__(self, name):
        self.name = name
        self.failures = []
        self.notes = []
        self.stats = {}
        self.records = []
        self.admin = []  # admin operations: Op
        self.checks = 0
        self.t0 = time.monotonic()

    quiet = False

    def fail(self, text):
        self.failures.append(text)
        if not self.quiet:
            print(f"  FAIL: {text}", flush=True)

    def note(self, text):
        self.notes.append(text)
        if not self.quiet:
            print(f"  {text}", flush=True)

    def expect(self, cond, text):
        self.checks += 1
        if not cond:
            self.fail(text)
        return cond

    def absorb(self, load, phase, allowed=(200,)):
        records = load.all()
        self.records.extend(records)
        for crash in load.crashed:
            self.fail(f"load client died: {crash}")
        bad = defaultdict(int)
        for r in records:
            if r.status not in allowed:
                bad[r.status] += 1
        for status, n in sorted(bad.items()):
            example = next(r for r in records if r.status == status)
            self.fail(f"{n} responses with status {status} ({phase}), e.g. {self.describe(example)}")
        return records

    def t(self, when):
        return when - self.t0

    def describe(self, r):
        tickets = "" if r.first is None else (f" ticket {r.first}" if r.first == r.last else f" tickets {r.first}-{r.last}")
        what = "" if r.body is None else f" {r.body!r}"
        return (f"{fmt_counter(r.counter)} node {r.node} pid {r.pid} sent {self.t(r.sent):.3f} s "
                f"answered {self.t(r.done):.3f} s: {r.status}{tickets}{what}")

    def has_records(self):
        return bool(self.records or self.admin)

    def dump(self, path):
        with open(path, "w") as f:
            f.write("# sent\tdone\tstatus\tzone\tkey\tfirst\tlast\tnode\tpid\tconnection\tcount\tbody\n")
            for r in sorted(self.records, key=lambda r: r.sent):
                zone, key = r.counter
                f.write(f"{self.t(r.sent):.4f}\t{self.t(r.done):.4f}\t{r.status}\t{zone}\t{key or '-'}\t"
                        f"{r.first}\t{r.last}\t{r.node}\t{r.pid}\t{r.conn}\t{r.want}\t{r.body!r}\n")
            for op in sorted(self.admin, key=lambda o: o.sent):
                f.write(f"{self.t(op.sent):.4f}\t{self.t(op.done):.4f}\t{op.status}\tadmin\t{op.key}\t"
                        f"{op.op}\t{op.arg}\t{op.node}\t-\t-\t-\t{op.body!r}\n")

    def finish(self, seconds):
        self.stats["seconds"] = round(seconds, 1)
        self.stats["checks"] = self.checks
        return not self.failures


def fmt_counter(counter):
    zone, key = counter
    return zone if key is None else f"{zone}[{key}]"


def by_counter(records):
    out = defaultdict(list)
    for r in records:
        if r.status == 200:
            out[r.counter].append(r)
    return out


def duplicates(recs):
    """Pairs (earlier holder, record) whose tickets overlap."""
    out = []
    hi, owner = None, None
    for r in sorted(recs, key=lambda r: (r.first, r.last)):
        if hi is not None and r.first <= hi:
            out.append((owner, r))
        if hi is None or r.last > hi:
            hi, owner = r.last, r
    return out


def order_violations(recs):
    """Requests B with a request A answered before B was sent and
    ticket(A) >= ticket(B): [(A, B)]. Sort by answer, sweep by send."""
    by_done = sorted(recs, key=lambda r: r.done)
    out = []
    i, best = 0, None
    for b in sorted(recs, key=lambda r: r.sent):
        while i < len(by_done) and by_done[i].done < b.sent:
            if best is None or by_done[i].last > best.last:
                best = by_done[i]
            i += 1
        if best is not None and best.last >= b.first:
            out.append((best, b))
    return out


def missing(recs, first, last):
    """Tickets of first..last that no record holds, as ranges."""
    out = []
    expect = first
    for r in sorted(recs, key=lambda r: r.first):
        if r.first > expect:
            out.append((expect, r.first - 1))
        expect = max(expect, r.last + 1)
    if expect <= last:
        out.append((expect, last))
    return out


def fmt_ranges(ranges, limit=4):
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:limit])
    return text + (f" and {len(ranges) - limit} more" if len(ranges) > limit else "")


def check_unique(check, records, what="the whole run", exclude=()):
    """No ticket twice, per counter, over `records`."""
    total, worst = 0, []
    for counter, recs in by_counter(records).items():
        if counter in exclude:
            continue
        dups = duplicates(recs)
        if dups:
            total += len(dups)
            worst.append((len(dups), counter, dups[0]))
    worst.sort(key=lambda x: -x[0])
    check.expect(not worst, f"{total} tickets issued twice over {what}, in {len(worst)} counters: " +
                 "; ".join(f"{fmt_counter(c)} {n}: {check.describe(a)} / {check.describe(b)}"
                           for n, c, (a, b) in worst[:3]))
    check.stats["duplicates"] = total
    return total


def check_order(check, records, per_node=False, what="", fail=True):
    """Real-time order per counter (and per node when per_node)."""
    groups = defaultdict(list)
    for r in records:
        if r.status == 200:
            groups[(r.counter, r.node) if per_node else (r.counter,)].append(r)
    total, examples = 0, []
    for group, recs in groups.items():
        v = order_violations(recs)
        total += len(v)
        if v:
            examples.append(v[0])
    text = (f"{total} real-time order violations{what} (a ticket not above one answered before the "
            f"request was sent{', same node' if per_node else ''})" +
            (": " + "; ".join(f"{check.describe(a)} then {check.describe(b)}" for a, b in examples[:2])
             if examples else ""))
    if fail:
        check.expect(total == 0, text)
    return total


def count_statuses(records):
    out = defaultdict(int)
    for r in records:
        out[r.status] += 1
    return dict(sorted(out.items()))


def check_batches(check, records):
    """Every 200 of a count=K request holds exactly K tickets."""
    wrong = [r for r in records if r.status == 200 and r.last - r.first + 1 != r.want]
    check.expect(not wrong, f"{len(wrong)} batches with another number of tickets than asked: "
                 + "; ".join(check.describe(r) + f" (asked {r.want})" for r in wrong[:3]))


def unavailable_bodies(check, records, phase):
    bad = [r for r in records if r.status == 503 and r.body != UNAVAILABLE]
    check.expect(not bad, f"{len(bad)} 503s without 'ticket authority unavailable' ({phase}): "
                 + "; ".join(check.describe(r) for r in bad[:2]))


def first_ok_after(records, t, node=None):
    """The first 200 of a request sent at or after t (by answer time)."""
    ok = [r for r in records if r.status == 200 and r.sent >= t and (node is None or r.node == node)]
    return min(ok, key=lambda r: r.done) if ok else None


def lat_stats(values):
    if not values:
        return "none"
    v = sorted(values)
    p = lambda q: v[min(len(v) - 1, int(q * len(v)))]  # noqa: E731
    return f"{len(v)}: p50 {p(0.5) * 1000:.1f} ms, p99 {p(0.99) * 1000:.1f} ms, max {v[-1] * 1000:.1f} ms"


# ---------------------------------------------------------------------------
# nodes


def status(node):
    s, body = one(node, "GET", "/status")
    if s != 200:
        raise Failure(f"node {node.name}: /status answered {s}")
    return json.loads(body)


def redis_status(node, zone="r"):
    return status(node)["zones"][zone]["redis"]


def wait_connected(nodes, zone="r", seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if all(redis_status(n, zone)["connected"] >= n.nworkers for n in nodes):
                return True
        except (OSError, KeyError, ValueError, Failure):
            pass
        time.sleep(0.02)
    seen = {}
    for n in nodes:
        try:
            seen[n.name] = redis_status(n, zone)
        except (OSError, KeyError, ValueError, Failure) as e:
            seen[n.name] = f"{type(e).__name__}: {e}"
    raise Failure(f"nodes not connected to Redis within {seconds} s: {seen}")


def counter_locations(zone, at="", max_=500):
    """The counters chooser(zone=, at=) takes from: the default counter
    (AT/t), keys (AT/k), max= with count=1..5 (AT/max), count=1..10 (AT/b)."""
    return (f"        location = {at}/t {{ ticket_counter zone={zone}; }}\n"
            f"        location = {at}/k {{ ticket_counter zone={zone} key=$arg_k; }}\n"
            f"        location = {at}/max {{ ticket_counter zone={zone} key=$arg_k max={max_} batch=5; }}\n"
            f"        location = {at}/b {{ ticket_counter zone={zone} key=$arg_k batch=10; }}\n")


STD_LOCATIONS = "\n" + counter_locations("r") + """\
        location = /l { ticket_counter zone=loc; }
        location = /status { ticket_status; }
        location = /admin { ticket_admin zone=r; }
"""


def redis_zone(redis, name="r", timeout="1s", extra=""):
    return f"    ticket_zone {name}:1m redis=redis://127.0.0.1:{redis.port} redis_timeout={timeout}{extra};\n"


def start_nodes(run, redis, name, timeout="1s", extra="", count=2, zones="", locations=""):
    """Nodes A, B with zone r (and `extra`), the local zone loc, STD_LOCATIONS;
    `zones` and `locations` are added to every node's configuration."""
    nodes = []
    for label in "AB"[:count]:
        n = Nginx(run, f"{name}-{label.lower()}")
        n.name = label
        n.configure(redis_zone(redis, timeout=timeout, extra=extra) + "    ticket_zone loc:1m;\n" + zones +
                    server(n.port, STD_LOCATIONS + locations))
        n.must_start()
        nodes.append(n)
    wait_connected(nodes)
    return nodes


def chooser(keys=3, seats=False, bulk=True, default_share=0.35, zone="r", at="", names=None):
    """The default counter (/t), keys k0.. (or `names`: /k), count=K batches
    (/b), and with seats the max=500 counter (/max, count 1..5); of zone
    `zone`, at the paths counter_locations(zone, at) made."""
    names = names or [f"k{i}" for i in range(keys)]

    def choose(rng, elapsed, client):
        x = rng.random()
        if x < default_share:
            return (zone, None), f"{at}/t", 1
        x = rng.random()
        if seats and x < 0.3:
            c = rng.randint(1, 5)
            return (zone, "seats"), f"{at}/max?k=seats&count={c}", c
        if bulk and x < 0.5:
            c = rng.randint(1, 10)
            return (zone, "bulk"), f"{at}/b?k=bulk&count={c}", c
        k = rng.choice(names)
        return (zone, k), f"{at}/k?k={k}", 1
    return choose


def error_lines(node, text):
    return sum(1 for line in node.error_log().splitlines() if text in line)


def healthy(check, *nodes):
    fault.check_workers_healthy(check, *nodes)


# ---------------------------------------------------------------------------
# scenarios

SCENARIOS = {}


def scenario(fn):
    SCENARIOS[fn.__name__.replace("_", "-")] = fn
    return fn


@scenario
def order(run, args, check):
    """No fault: no duplicate, real-time order across nodes, no gap, max=500 exact, count=K all or nothing."""
    redis = Redis(run, "order-redis")
    redis.start()
    nodes = start_nodes(run, redis, "order")
    with Load(nodes, chooser(keys=3, seats=True), clients=args.clients, seconds=60) as load:
        time.sleep(args.seconds * 3)
    records = check.absorb(load, "load", allowed=(200, 410))
    sold_out = [r for r in records if r.status == 410]
    check.expect(all(r.counter == ("r", "seats") for r in sold_out),
                 "410 on a counter without max=: " + "; ".join(check.describe(r) for r in sold_out
                                                               if r.counter != ("r", "seats"))[:300])
    check_unique(check, records)
    violations = check_order(check, records, what=" across the two nodes")
    check_batches(check, records)
    per = by_counter(records)
    for counter, recs in sorted(per.items(), key=lambda x: fmt_counter(x[0])):
        held = redis.counter(*counter)
        gaps = missing(recs, 1, held or 0)
        top = max(r.last for r in recs)
        check.expect(not gaps and top == held,
                     f"{fmt_counter(counter)}: Redis holds {held}, answered up to {top}; "
                     f"not handed out: {fmt_ranges(gaps)}")
        nodes_seen = {r.node for r in recs}
        check.expect(nodes_seen == {"A", "B"}, f"{fmt_counter(counter)} answered only by {nodes_seen}")
    seats = per.get(("r", "seats"), [])
    granted = sum(r.last - r.first + 1 for r in seats)
    check.expect(granted == 500 and redis.counter("r", "seats") == 500 and
                 sorted((r.first, r.last) for r in seats)[-1][1] == 500,
                 f"max=500: {granted} seats granted, Redis holds {redis.counter('r', 'seats')}")
    by_node = defaultdict(int)
    for r in seats:
        by_node[r.node] += r.last - r.first + 1
    check.expect(bool(sold_out), "max=500 never sold out")
    st = {n.name: redis_status(n) for n in nodes}
    check.stats.update(requests=len(records), tickets=sum(r.last - r.first + 1 for r in records if r.status == 200),
                       counters=len(per), statuses=count_statuses(records), order_violations=violations)
    check.note(f"seats (max=500, count=1..5): {granted} granted (node A {by_node['A']}, node B {by_node['B']}), "
               f"{len(sold_out)} answered 410; tickets per batch: " +
               ", ".join(f"{k} {v['tickets_per_batch']} ({v['batches']} batches)" for k, v in st.items()))
    healthy(check, *nodes)


def outage_cycle(redis, outage, wipe=False):
    """kill -9 of Redis, `outage` seconds, restart (empty when wipe)."""
    t_kill = time.monotonic()
    redis.kill9()
    time.sleep(outage)
    if wipe:
        redis.wipe()
    t_start = time.monotonic()
    redis.start()
    return t_kill, t_start, redis.ready


def check_outage(check, records, nodes, t_kill, t_start, t_ready, label, bound=2.0):
    """No 200 while Redis was down, 503s during, tickets again within
    `bound` s of the restart on every node. Returns the recovery times."""
    local = [r for r in records if r.status == 200 and r.sent > t_kill + 0.01 and r.done < t_start]
    check.expect(not local, f"{label}: {len(local)} tickets answered while Redis was down: "
                 + "; ".join(check.describe(r) for r in local[:2]))
    during = [r for r in records if t_kill + 0.01 < r.sent < t_start]
    n503 = sum(1 for r in during if r.status == 503)
    check.expect(n503 > 0, f"{label}: no 503 while Redis was down")
    slow = [r.done - r.sent for r in during if r.status == 503]
    recovery = {}
    for n in nodes:
        first = first_ok_after(records, t_start, n.name)
        recovery[n.name] = None if first is None else first.done - t_start
        check.expect(first is not None and first.done - t_start <= bound,
                     f"{label}: node {n.name} answered tickets again "
                     f"{'never' if first is None else f'{first.done - t_start:.2f} s'} after the restart "
                     f"(Redis answered PING {t_ready - t_start:.2f} s after it; bound {bound} s)")
    check.note(f"{label}: down {t_start - t_kill:.2f} s, {n503} answered 503 ({lat_stats(slow)}); "
               f"Redis ready {t_ready - t_start:.3f} s after the restart; tickets again after " +
               ", ".join(f"{k} {'never' if v is None else f'{v:.3f} s'}" for k, v in recovery.items()))
    return recovery


def jumps(records, t_kill, t_start):
    """Per counter: (last before the kill, first after the restart)."""
    out = {}
    for counter, recs in by_counter(records).items():
        before = [r.last for r in recs if r.done <= t_kill + 0.5 and r.sent < t_kill]
        after = [r for r in recs if r.sent >= t_start]
        if before and after:
            first = min(after, key=lambda r: r.first)
            out[counter] = (max(before), first.first, first.node)
    return out


@scenario
def redis_kill9(run, args, check):
    """kill -9 of redis-server (appendonly, appendfsync always) and restart on its directory, twice, under load."""
    redis = Redis(run, "kill9-redis")
    redis.start()
    nodes = start_nodes(run, redis, "kill9")
    cycles = []
    with Load(nodes, chooser(keys=3), clients=args.clients, seconds=60) as load:
        time.sleep(args.seconds)
        # the first outage ends while the reconnect back-off is short, the
        # second once it has reached its 2 s ceiling
        for outage in (args.outage, args.outage + 2.5):
            cycles.append(outage_cycle(redis, outage))
            time.sleep(2.5)
    records = check.absorb(load, "kill -9 of Redis", allowed=(200, 503))
    unavailable_bodies(check, records, "kill -9")
    worst = 0.0
    for i, (t_kill, t_start, t_ready) in enumerate(cycles, 1):
        rec = check_outage(check, records, nodes, t_kill, t_start, t_ready, f"kill -9 #{i}")
        worst = max([worst] + [v for v in rec.values() if v is not None])
        skips = jumps(records, t_kill, t_start)
        check.note(f"kill -9 #{i}: " + ", ".join(f"{fmt_counter(c)} {a} -> {b} (skipped {b - a - 1})"
                                                 for c, (a, b, _) in sorted(skips.items(), key=lambda x: fmt_counter(x[0]))))
        for c, (a, b, _) in skips.items():
            check.expect(b > a, f"kill -9 #{i}: {fmt_counter(c)} went on at {b}, after {a} had been answered")
    check_unique(check, records)
    violations = check_order(check, records, what=" over the restarts")
    for n in nodes:
        lines = error_lines(n, "is unavailable")
        check.expect(1 <= lines <= n.nworkers * len(cycles),
                     f"node {n.name}: {lines} 'is unavailable' lines for {len(cycles)} outages of "
                     f"{n.nworkers} workers (one per state change expected)")
    st = {n.name: redis_status(n) for n in nodes}
    check.stats.update(requests=len(records), tickets=sum(r.last - r.first + 1 for r in records if r.status == 200),
                       statuses=count_statuses(records), order_violations=violations,
                       worst_recovery=f"{worst:.3f} s")
    check.note("status after: " + "; ".join(f"{k}: fences {v['fences']}, errors {v['errors']}, "
                                            f"timeouts {v['timeouts']}, repairs {v['repairs']}" for k, v in st.items()))
    healthy(check, *nodes)


@scenario
def redis_empty(run, args, check):
    """redis-server killed and restarted with an empty directory: no number issued again."""
    redis = Redis(run, "empty-redis")
    redis.start()
    nodes = start_nodes(run, redis, "empty")
    a, b = nodes
    solo = []  # a key only node A knows before the loss
    with Load(nodes, chooser(keys=6), clients=args.clients, seconds=60) as load:
        time.sleep(args.seconds)
        for _ in range(20):
            solo.append(("A", take(a, "/k?k=solo")))
        t_kill, t_start, t_ready = outage_cycle(redis, args.outage, wipe=True)
        time.sleep(2.5)
        solo.append(("B", take(b, "/k?k=solo")))
        solo.append(("A", take(a, "/k?k=solo")))
        time.sleep(0.5)
    records = check.absorb(load, "Redis restarted empty", allowed=(200, 503))
    unavailable_bodies(check, records, "empty restart")
    check_outage(check, records, nodes, t_kill, t_start, t_ready, "empty restart")
    skips = jumps(records, t_kill, t_start)
    for c, (before, after, node) in sorted(skips.items(), key=lambda x: fmt_counter(x[0])):
        check.note(f"  {fmt_counter(c)}: last answered {before} before the loss, first after {after} "
                   f"(node {node}): {'skipped ' + str(after - before - 1) if after > before else 'REISSUED'}")
        check.expect(after > before, f"{fmt_counter(c)}: after Redis lost its data the counter went on at "
                     f"{after} (node {node}), {before} had been answered before")
    check_unique(check, records)
    violations = check_order(check, records, what=" over the empty restart", fail=False)
    check.expect(violations == 0, f"{violations} real-time order violations over the empty restart")
    st = {n.name: redis_status(n) for n in nodes}
    logged = {n.name: error_lines(n, "redis lost data") for n in nodes}
    check.note("status after: " + "; ".join(f"node {k}: repairs {v['repairs']}, fences {v['fences']}, "
                                            f"'lost data' log lines {logged[k]}" for k, v in st.items()))
    before = [t for who, t in solo[:20] if isinstance(t, int)]
    after_b, after_a = solo[20][1], solo[21][1]
    reissued = isinstance(after_b, int) and before and after_b <= max(before)
    check.note(f"note: key 'solo', taken on node A only ({min(before)}..{max(before)}) before the loss: "
               f"first take after it on node B {after_b}, then node A {after_a}"
               + (" -- B reissued numbers A had handed out (B's guard knows only B's own tickets)"
                  if reissued else ""))
    check.stats.update(requests=len(records), statuses=count_statuses(records), order_violations=violations)
    healthy(check, *nodes)


@scenario
def redis_stop(run, args, check):
    """kill -STOP of Redis for 3 s (redis_timeout=500ms): 503 in time, a local zone answers meanwhile; CONT: tickets again."""
    redis = Redis(run, "stop-redis")
    redis.start()
    nodes = start_nodes(run, redis, "stop", timeout="500ms")
    redis_clients = max(2, args.clients - 4)
    base_choose = chooser(keys=3)

    def choose(rng, elapsed, client):
        if client >= redis_clients:
            # a local zone: a counter of each node's own
            return ("loc", f"@{nodes[client % len(nodes)].name}"), "/l", 1
        return base_choose(rng, elapsed, client)
    with Load(nodes, choose, clients=redis_clients + 4, seconds=60) as load:
        time.sleep(args.seconds)
        t_stop = time.monotonic()
        redis.sig(signal.SIGSTOP)
        time.sleep(3.0)
        t_cont = time.monotonic()
        redis.sig(signal.SIGCONT)
        time.sleep(3.0)
    records = check.absorb(load, "STOP/CONT of Redis", allowed=(200, 503))
    unavailable_bodies(check, records, "STOP")
    rrec = [r for r in records if r.counter[0] == "r"]
    lrec = [r for r in records if r.counter[0] == "loc"]
    during = [r for r in rrec if t_stop + 0.01 < r.sent and r.done < t_cont]
    ok = [r for r in during if r.status == 200]
    check.expect(not ok, f"{len(ok)} tickets answered while Redis was stopped: "
                 + "; ".join(check.describe(r) for r in ok[:2]))
    waits = [r.done - r.sent for r in during if r.status == 503]
    check.expect(bool(waits), "no 503 while Redis was stopped")
    slow = [r for r in during if r.status == 503 and r.done - r.sent > 0.5 + 0.15]
    check.expect(not slow, f"{len(slow)} of {len(waits)} requests waited longer than redis_timeout=500ms "
                 f"(+150 ms) for their 503; longest {max(waits, default=0):.3f} s: "
                 + "; ".join(check.describe(r) for r in sorted(slow, key=lambda r: r.sent - r.done)[:2]))
    local_before = [r.done - r.sent for r in lrec if r.sent < t_stop]
    local_during = [r.done - r.sent for r in lrec if t_stop < r.sent < t_cont]
    check.expect(all(r.status == 200 for r in lrec), "the local zone answered other than 200")
    # A worker that waited for Redis would hold its other requests for up to
    # the timeout (500 ms); a loaded 2-core machine shows a few ms, now and
    # then a longer stall of the load clients themselves.
    slowest = sorted((r for r in lrec if t_stop < r.sent < t_cont), key=lambda r: r.sent - r.done)[:3]
    p99 = sorted(local_during)[int(0.99 * len(local_during))] if local_during else None
    check.expect(bool(local_during) and max(local_during) < 0.4 and p99 < 0.05,
                 f"the local zone on the same workers waited while Redis was stopped: {lat_stats(local_during)}")
    check.note(f"while stopped: {len(waits)} Redis-zone requests answered 503 ({lat_stats(waits)}); "
               f"local zone {lat_stats(local_during)} (before: {lat_stats(local_before)}); slowest local: " +
               ", ".join(f"{(r.done - r.sent) * 1000:.0f} ms sent {r.sent - t_stop:.3f} s after STOP (node {r.node})"
                         for r in slowest))
    resumed = {}
    for n in nodes:
        first = first_ok_after(rrec, t_cont, n.name)
        resumed[n.name] = None if first is None else first.done - t_cont
        check.expect(first is not None and first.done - t_cont <= 3.0,
                     f"node {n.name}: tickets again {'never' if first is None else f'{first.done - t_cont:.2f} s'} "
                     f"after CONT")
    check.note("after CONT, tickets again after " + ", ".join(
        f"{k} {'never' if v is None else f'{v:.3f} s'}" for k, v in resumed.items()))
    check_unique(check, records)
    violations = check_order(check, rrec, what=" over STOP/CONT")
    st = {n.name: redis_status(n) for n in nodes}
    check.expect(all(v["timeouts"] > 0 for v in st.values()), f"no timeouts counted: {st}")
    check.stats.update(requests=len(records), statuses=count_statuses(records), order_violations=violations)
    check.note("status after: " + "; ".join(f"{k}: timeouts {v['timeouts']}, errors {v['errors']}, "
                                            f"fences {v['fences']}" for k, v in st.items()))
    healthy(check, *nodes)


def signals_while_waiting(check, redis, a, b):
    """Stops Redis until requests wait for it, reloads node A and quits node
    B, lets Redis go on 0.6 s later, waits for the old workers to leave and
    starts B again. Returns (t_stop, t_signals, t_cont, quit_took, reload_took)."""
    redis.sig(signal.SIGSTOP)
    time.sleep(0.4)
    t_stop = time.monotonic() - 0.4
    waiting = time.monotonic()
    old_a = a.workers()
    quit_group = [b.master] + b.workers()
    rc_reload, out_reload = a.command("-s", "reload")
    rc_quit, out_quit = b.command("-s", "quit")
    check.expect(rc_reload == 0 and rc_quit == 0, f"nginx -s reload: {rc_reload} {out_reload!r}; "
                 f"nginx -s quit: {rc_quit} {out_quit!r}")
    time.sleep(0.6)
    redis.sig(signal.SIGCONT)
    t_cont = time.monotonic()
    gone_b = fault.wait_gone(quit_group, 15)
    quit_took = time.monotonic() - waiting
    gone_a = fault.wait_gone(old_a, 15)
    reload_took = time.monotonic() - waiting
    check.expect(gone_b, "node B did not quit within 15 s")
    check.expect(gone_a, "node A's old workers did not leave within 15 s of the reload")
    b.must_start()
    wait_connected([b])
    return t_stop, waiting, t_cont, quit_took, reload_took


def unanswered_at_signals(check, records, signals):
    """Every request gets an answer, but one sent on an idle keep-alive
    connection just as a signalled worker closes it (HTTP's usual race:
    nginx read nothing of it, so it took no ticket)."""
    unanswered = [r for r in records if r.status == 0 and
                  not any(t - 0.005 <= r.sent <= t + 0.5 for t in signals)]
    check.expect(not unanswered, f"{len(unanswered)} requests got no answer (not sent just at a signal): "
                 + "; ".join(check.describe(r) for r in unanswered[:3]))


@scenario
def reload_quit(run, args, check):
    """nginx -s reload and a graceful quit under load, then while requests wait for a stopped Redis (redis_timeout=3s): waiting requests get their tickets."""
    redis = Redis(run, "reload-redis")
    redis.start()
    nodes = start_nodes(run, redis, "reload", timeout="3s")
    a, b = nodes
    marks = {}
    with Load(nodes, chooser(keys=3), clients=args.clients, seconds=60) as load:
        time.sleep(args.seconds)
        marks["reload under load"] = time.monotonic()
        a.reload()
        time.sleep(0.7)
        t_stop, waiting, t_cont, quit_took, reload_took = signals_while_waiting(check, redis, a, b)
        marks["reload while waiting"] = waiting
        time.sleep(1.0)
        # a quit while Redis stays stopped: nginx must not wait for it forever
        redis.sig(signal.SIGSTOP)
        time.sleep(0.3)
        long_quit = time.monotonic()
        group = [b.master] + b.workers()
        os.kill(b.master, signal.SIGQUIT)
        gone = fault.wait_gone(group, 8)
        long_quit_took = time.monotonic() - long_quit
        redis.sig(signal.SIGCONT)
        check.expect(gone and long_quit_took <= 3.0 + 1.0,
                     f"node B's quit while Redis was stopped took {long_quit_took:.2f} s "
                     f"({'done' if gone else 'still running after 8 s'}; redis_timeout=3s)")
        time.sleep(0.5)
    records = check.absorb(load, "reload and quit", allowed=(200, 503, 0))
    unanswered_at_signals(check, records, [marks["reload under load"], waiting, long_quit])
    waited = [r for r in records if t_stop - 0.5 < r.sent < waiting < r.done]
    # A reload or quit lets a request waiting for Redis have its answer (its
    # command may be on its way: a 503 would make its numbers a gap).
    check.expect(waited and all(r.status == 200 for r in waited),
                 f"requests waiting for Redis at the reload and quit: {count_statuses(waited)} "
                 "(each should have its ticket once Redis went on)")
    around_reload = [r for r in records if marks["reload under load"] - 0.5 < r.sent < t_stop - 0.2]
    check.expect(all(r.status in (200, 0) for r in around_reload),
                 f"requests around the reload under load: {count_statuses(around_reload)} (no 503)")
    check.note(f"requests waiting for the stopped Redis at the signals: {len(waited)}, answered "
               f"{count_statuses(waited)} within {max((r.done - waiting for r in waited), default=0):.3f} s "
               f"of the signals; node B quit in {quit_took:.2f} s, node A's old workers left in "
               f"{reload_took:.2f} s (Redis continued {t_cont - waiting:.2f} s after the signals)")
    check.note(f"a quit of node B while Redis stayed stopped took {long_quit_took:.2f} s")
    check.note(f"503 bodies: {sorted({r.body for r in records if r.status == 503})}; no answer: "
               f"{sum(1 for r in records if r.status == 0)} (idle keep-alive connections closed at a signal)")
    check_unique(check, records)
    violations = check_order(check, records, what=" over reloads and the quit")
    for n in nodes:
        for line in n.error_log().splitlines():
            if "exited on signal" in line or "core dumped" in line:
                check.fail(f"node {n.name}: {line.strip()[-200:]}")
    check.stats.update(requests=len(records), statuses=count_statuses(records), order_violations=violations)


@scenario
def lease(run, args, check):
    """lease=100 on two nodes: unique, ordered per node; kill -9 of Redis and restart: still unique."""
    redis = Redis(run, "lease-redis")
    redis.start()
    nodes = start_nodes(run, redis, "lease", extra=" lease=100")
    base_choose = chooser(keys=3, bulk=False)

    def choose(rng, elapsed, client):
        # a new key every 100 ms: both workers of a node ask for its first lease at once
        if rng.random() < 0.3:
            k = f"n{int(elapsed * 10)}"
            return ("r", k), f"/k?k={k}", 1
        return base_choose(rng, elapsed, client)
    with Load(nodes, choose, clients=args.clients, seconds=60) as load:
        time.sleep(args.seconds * 1.5)
        t_kill, t_start, t_ready = outage_cycle(redis, args.outage)
        time.sleep(2.5)
    records = check.absorb(load, "lease mode", allowed=(200, 503))
    unavailable_bodies(check, records, "lease")
    check_unique(check, records)
    per_node = check_order(check, records, per_node=True, what=" within a node")
    across = check_order(check, records, what=" across nodes", fail=False)
    during = [r for r in records if t_kill + 0.01 < r.sent < t_start]
    served = sum(1 for r in during if r.status == 200)
    recovery = {}
    for n in nodes:
        first = first_ok_after([r for r in records if r.status == 200], t_start, n.name)
        recovery[n.name] = first
    check.note(f"Redis down {t_start - t_kill:.2f} s: {served} answered from leases, "
               f"{sum(1 for r in during if r.status == 503)} answered 503")
    for c, (a, b, node) in sorted(jumps(records, t_kill, t_start).items(), key=lambda x: fmt_counter(x[0])):
        if not c[1] or not c[1].startswith("n"):
            check.note(f"  {fmt_counter(c)}: up to {a} before the kill, {b} first after the restart (node {node})")
    check.note(f"order across nodes (not promised in lease mode): {across} violations")
    st = {n.name: redis_status(n) for n in nodes}
    check.note("status after: " + "; ".join(f"{k}: mode {v['mode']}, batches {v['batches']}, tickets {v['tickets']}, "
                                            f"fences {v['fences']}" for k, v in st.items()))
    check.stats.update(requests=len(records), statuses=count_statuses(records),
                       order_violations_within_a_node=per_node, order_violations_across=across)
    healthy(check, *nodes)


@scenario
def lease_reload(run, args, check):
    """lease=20: nginx -s reload and a graceful quit while requests wait for a lease's refill from a stopped Redis: they get their tickets; a resize reload: nothing twice."""
    redis = Redis(run, "lease-reload-redis")
    redis.start()
    nodes = start_nodes(run, redis, "lease-reload", timeout="3s", extra=" lease=20")
    a, b = nodes
    with Load(nodes, chooser(keys=3, bulk=False), clients=args.clients, seconds=60) as load:
        time.sleep(args.seconds)
        # a lease of 20 runs dry within milliseconds: the requests then wait
        # for the refill sent to the stopped Redis
        t_stop, waiting, t_cont, quit_took, reload_took = signals_while_waiting(check, redis, a, b)
        time.sleep(1.0)
        # again with a reload that resizes the zone: its counters and leases
        # move to the new zone, a refill arriving at the old one is a gap
        conf = a.path("conf", "nginx.conf")
        with open(conf) as f:
            text = f.read()
        with open(conf, "w") as f:
            f.write(text.replace("ticket_zone r:1m ", "ticket_zone r:2m ", 1))
        redis.sig(signal.SIGSTOP)
        time.sleep(0.4)
        resized = time.monotonic()
        old_a = a.workers()
        rc, out = a.command("-s", "reload")
        check.expect(rc == 0, f"nginx -s reload (resize): {rc} {out!r}")
        time.sleep(0.6)
        redis.sig(signal.SIGCONT)
        check.expect(fault.wait_gone(old_a, 15), "node A's old workers did not leave within 15 s of the resize")
        time.sleep(1.0)
    records = check.absorb(load, "reload and quit in lease mode", allowed=(200, 503, 0))
    unanswered_at_signals(check, records, [waiting, resized])
    at_resize = [r for r in records if r.node == "A" and resized - 0.9 < r.sent < resized < r.done]
    check.expect(all(r.status == 200 or (r.body or b"").strip() == b"try again" for r in at_resize),
                 f"node A's requests waiting at the resize: {count_statuses(at_resize)}, 503 bodies "
                 f"{sorted({(r.body or b'').strip().decode() for r in at_resize if r.status == 503})} (200 or 503 try again)")
    check.note(f"node A's requests waiting at the resize: {count_statuses(at_resize)}")
    waited = [r for r in records if t_stop - 0.5 < r.sent < waiting < r.done]
    # A refill comes to the zone the new workers share (a reload that keeps
    # its size) or to a quitting nginx's own: either way the lease is Redis's
    # grant, so the requests that waited for it have their tickets.
    check.expect(waited and all(r.status == 200 for r in waited),
                 f"requests waiting for a lease at the reload and quit: {count_statuses(waited)} "
                 "(each should have its ticket once Redis went on)")
    check.note(f"requests waiting for a refill at the signals: {len(waited)}, answered {count_statuses(waited)} "
               f"within {max((r.done - waiting for r in waited), default=0):.3f} s of the signals; node B quit in "
               f"{quit_took:.2f} s, node A's old workers left in {reload_took:.2f} s (Redis continued "
               f"{t_cont - waiting:.2f} s after the signals)")
    check_unique(check, records)
    per_node = check_order(check, records, per_node=True, what=" within a node")
    check.stats.update(requests=len(records), statuses=count_statuses(records),
                       order_violations_within_a_node=per_node)
    healthy(check, *nodes)


# ---------------------------------------------------------------------------
# non-default redis_prefix=

# zone: (redis_prefix=, more zone arguments, path of its locations); beside
# zone r under the default prefix ticket:, on the same Redis
PREFIX_ZONES = {"s": ("app:tix:", "", "/s"), "p": ("{shop}:", " lease=50", "/p"),
                "g": ("acme/tix v2 [*?]%#:", "", "/g"), "e": ("", "", "/e")}
PREFIX_KEYS = ["k0", "a:b", "x;y", "{h}", "*?[", "p%2Fq"]  # keys as $arg_k gives them, byte for byte
PREFIX_MAX = 200


def redis_keys(redis):
    """Every key of this (private) Redis, by SCAN without a pattern."""
    keys, cursor = [], "0"
    while True:
        cursor, batch = redis.cmd("SCAN", cursor, "COUNT", 1000)
        keys += batch
        if cursor == "0":
            return keys


def prefix_layout(check, redis, stems, used, label):
    """Every Redis key is a zone's stem (PREFIX + zone: its default counter, a
    string), stem:KEY (a counter, a string) or stem;[KEY] (metadata, a hash)
    of a counter the test used. Returns {counter: value}."""
    keys = redis_keys(redis)
    values, stray, wrong, default_prefix = {}, [], [], set()
    for k in keys:
        zone = max((z for z, s in stems.items() if k == s or (k.startswith(s) and k[len(s)] in ":;")),
                   key=lambda z: len(stems[z]), default=None)
        if k.startswith("ticket:"):
            default_prefix.add(zone)
        rest = "" if zone is None else k[len(stems[zone]):]
        counter = (zone, rest[1:] or None)
        if zone is None or rest == ":" or counter not in used:
            stray.append(k)
            continue
        kind = redis.cmd("TYPE", k)
        if kind != ("hash" if rest[:1] == ";" else "string"):
            wrong.append(f"{k!r} is a {kind}")
        elif rest[:1] != ";":
            values[counter] = int(redis.cmd("GET", k))
    check.expect(not stray, f"{label}: {len(stray)} Redis keys outside PREFIX+zone[:key|;key] of the counters "
                 f"used (stems {sorted(stems.values())}): {sorted(stray)[:8]}")
    check.expect(not wrong, f"{label}: Redis keys of the wrong type: {wrong[:5]}")
    check.note(f"{label}: {len(keys)} Redis keys, {len(values)} counters; zones under ticket: "
               f"{sorted(default_prefix, key=str)}")
    return values


@scenario
def prefix(run, args, check):
    """Other redis_prefix= values (app:tix:, {shop}: in lease mode, spaces and glob characters, empty) beside ticket: on one Redis: unique, ordered, every key under its prefix with the last ticket; kill -9."""
    redis = Redis(run, "prefix-redis")
    redis.start()
    stems = {z: p + z for z, (p, _, _) in PREFIX_ZONES.items()}
    stems["r"] = "ticket:r"
    strict = {"r"} | {z for z, (_, extra, _) in PREFIX_ZONES.items() if "lease" not in extra}
    zones = "".join(redis_zone(redis, z, extra=f' "redis_prefix={p}"{extra}')
                    for z, (p, extra, _) in PREFIX_ZONES.items())
    locations = "".join(counter_locations(z, at, PREFIX_MAX) +
                        f"        location = {at}/admin {{ ticket_admin zone={z}; }}\n"
                        for z, (_, _, at) in PREFIX_ZONES.items())
    nodes = start_nodes(run, redis, "prefix", zones=zones, locations=locations)
    for z in PREFIX_ZONES:
        wait_connected(nodes, zone=z)
    a, b = nodes
    pickers = [(0.1, chooser(keys=1, bulk=False))] + [
        (0.9 / len(PREFIX_ZONES), chooser(zone=z, at=at, names=PREFIX_KEYS, seats=z in strict, default_share=0.25))
        for z, (_, _, at) in PREFIX_ZONES.items()]

    def choose(rng, elapsed, client):
        x = rng.random()
        for share, pick in pickers:
            if x < share:
                break
            x -= share
        return pick(rng, elapsed, client)

    def ordered(records, what):
        s = [r for r in records if r.counter[0] in strict]
        return (check_order(check, s, what=f" across nodes{what}") +
                check_order(check, [r for r in records if r.counter[0] not in strict], per_node=True,
                            what=f" within a node, lease mode{what}"))

    # 1. no fault: unique, ordered, no gap, max= exact, Redis holds the last ticket
    with Load(nodes, choose, clients=args.clients, seconds=60) as load:
        time.sleep(args.seconds * 2)
    rec1 = check.absorb(load, "no fault", allowed=(200, 410))
    check.expect(all(r.counter[1] == "seats" for r in rec1 if r.status == 410),
                 "410 on a counter without max=")
    check_unique(check, rec1, "the run without fault")
    violations = ordered(rec1, "")
    check_batches(check, rec1)
    used = {r.counter for r in rec1}
    values = prefix_layout(check, redis, stems, used, "no fault")
    for counter, recs in sorted(by_counter(rec1).items(), key=lambda x: fmt_counter(x[0])):
        held, top = values.get(counter), max(r.last for r in recs)
        if counter[0] in strict:
            gaps = missing(recs, 1, held or 0)
            check.expect(held == top and not gaps, f"{fmt_counter(counter)} at {stems[counter[0]]!r}: Redis holds "
                         f"{held}, answered up to {top}; not handed out: {fmt_ranges(gaps)}")
        else:
            check.expect(held is not None and held >= top, f"{fmt_counter(counter)} (lease) at "
                         f"{stems[counter[0]]!r}: Redis holds {held}, answered up to {top}")
        check.expect(len(recs) < 10 or {r.node for r in recs} == {"A", "B"},
                     f"{fmt_counter(counter)} answered only by {({r.node for r in recs})}")
    for z in strict - {"r"}:
        seats = [r for r in rec1 if r.counter == (z, "seats") and r.status == 200]
        granted = sum(r.last - r.first + 1 for r in seats)
        check.expect(granted == PREFIX_MAX == values.get((z, "seats")) == max((r.last for r in seats), default=None),
                     f"{z}[seats] max={PREFIX_MAX}: {granted} granted, Redis holds {values.get((z, 'seats'))}")

    # 2. admin on the zone with the oddest prefix: a move on B, a take on A, a delete
    g, at = stems["g"], PREFIX_ZONES["g"][2]
    got = [take(a, f"{at}/k?k=adm") for _ in range(3)]
    s1, body1 = one(b, "POST", f"{at}/admin?key=adm&next=5000")
    held1, t1 = redis.cmd("GET", f"{g}:adm"), take(a, f"{at}/k?k=adm")
    s2, body2 = one(a, "DELETE", f"{at}/admin?key=adm")
    gone = redis.cmd("EXISTS", f"{g}:adm", f"{g};adm")
    s3, _ = one(b, "GET", f"{at}/admin?key=adm")
    check.expect((got, s1, held1, t1, s2, gone, s3) == ([1, 2, 3], 200, "4999", 5000, 200, 0, 404),
                 f"admin at {g!r}: takes {got}, POST next=5000 on B {s1} {body1!r}, Redis then {held1!r}, "
                 f"A took {t1}, DELETE on A {s2} {body2!r}, keys left {gone}, GET on B {s3}")

    # 3. kill -9 of Redis and a restart on its directory under load: fenced once, nothing again
    fences = {z: int(redis.cmd("HGET", s + ";", "fence") or 0) for z, s in stems.items()}
    with Load(nodes, choose, clients=args.clients, seconds=60) as load:
        time.sleep(args.seconds)
        t_kill, t_start, t_ready = outage_cycle(redis, args.outage)
        time.sleep(2.5)
    rec2 = check.absorb(load, "kill -9 of Redis", allowed=(200, 410, 503))
    unavailable_bodies(check, rec2, "kill -9")
    strict2 = [r for r in rec2 if r.counter[0] in strict]
    check_outage(check, strict2, nodes, t_kill, t_start, t_ready, "kill -9")
    for c, (before, after, node) in jumps(strict2, t_kill, t_start).items():
        check.expect(after > before, f"{fmt_counter(c)} went on at {after} (node {node}) after {before} was answered")
    records = rec1 + rec2
    check_unique(check, records)
    violations += ordered(records, " over the restart")
    check_batches(check, rec2)
    fences2 = {z: int(redis.cmd("HGET", s + ";", "fence") or 0) for z, s in stems.items()}
    check.expect(all(fences2[z] == fences[z] + 1 for z in stems), f"fence epochs {fences} -> {fences2} (+1 expected)")
    values = prefix_layout(check, redis, stems, used | {r.counter for r in rec2}, "after the restart")
    exact = 0
    for counter, recs in by_counter(records).items():
        held, top = values.get(counter), max(r.last for r in recs)
        first = first_ok_after(recs, t_start)
        settled = counter[0] in strict and counter[1] != "seats" and first is not None and not any(
            r.counter == counter and r.status != 200 and r.sent >= first.sent for r in rec2)
        exact += settled
        check.expect(held is not None and (held == top if settled else held >= top),
                     f"after the restart {fmt_counter(counter)} at {stems[counter[0]]!r}: Redis holds {held}, "
                     f"answered up to {top}")
    over = [r for r in records if r.status == 200 and r.counter[1] == "seats" and r.last > PREFIX_MAX]
    check.expect(not over, f"{len(over)} seats past max={PREFIX_MAX}: "
                 + "; ".join(check.describe(r) for r in over[:2]))
    check.note(f"fence epochs {fences} -> {fences2}; {exact} counters hold exactly their last ticket, the others "
               "at least it; seats after the restart: " +
               ", ".join(f"{z} {values.get((z, 'seats'))}" for z in sorted(strict - {"r"})))
    check.stats.update(requests=len(records), statuses=count_statuses(records), order_violations=violations)
    healthy(check, *nodes)


# ---------------------------------------------------------------------------
# failover to a replica

# a fresh replica's full sync starts at once (Redis 7.0 waits 5 s by default)
SYNC_NOW = ["--repl-diskless-sync-delay", "0"]
RECOVERY = 4.0  # s: the reconnect back-off's 2 s ceiling, on a busy machine
FAILOVER_ZONES = ("r", "le", "rw")
FAILOVER_COUNTERS = ([("r", None)] + [("r", f"k{i}") for i in range(3)] + [("r", "solo")] +
                     [("le", None), ("le", "k0"), ("rw", None)])
FAILOVER_LOCATIONS = """
        location = /t { ticket_counter zone=r; }
        location = /k { ticket_counter zone=r key=$arg_k; }
        location = /le { ticket_counter zone=le; }
        location = /lk { ticket_counter zone=le key=$arg_k; }
        location = /w { ticket_counter zone=rw; }
        location = /status { ticket_status; }
"""


def redis_info(redis, section):
    out = {}
    for line in redis.cmd("INFO", section).splitlines():
        name, sep, value = line.partition(":")
        if sep:
            out[name] = value
    return out


def start_replica(redis, relay):
    """redis-server on its directory as a replica of what `relay` points at;
    returns when it is in sync."""
    redis.extra = SYNC_NOW + ["--replicaof", "127.0.0.1", str(relay.port)]
    redis.start()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            info = redis_info(redis, "replication")
            if info.get("master_link_status") == "up" and info.get("master_sync_in_progress") == "0":
                return time.monotonic()
        except (OSError, RedisError):
            pass
        time.sleep(0.01)
    raise Failure(f"the replica on port {redis.port} not in sync within 15 s; see {redis.dir}/redis.log")


def fence_epochs(redis):
    """Each zone's fence epoch in Redis: how often the nodes saw a new run."""
    return {z: int(redis.cmd("HGET", f"ticket:{z};", "fence") or 0) for z in FAILOVER_ZONES}


class Switch:
    """One failover: when the fault began (the replication link held, or the
    kill), when the master died, when a master was behind the forwarder
    again, when a replica was in sync with it; what the promoted replica
    held, its run id, the replication offsets before the kill."""

    def __init__(self, label, lagged):
        self.label, self.lagged = label, lagged
        self.t_begin = self.t_kill = self.t_service = self.t_synced = None
        self.promoted, self.offsets, self.fences, self.run_id = {}, {}, {}, None
        self.covered = {}
        self.skips = []


@scenario
def failover(run, args, check):
    """kill -9 of the Redis master under load, its replica promoted behind a forwarder; again with a replica that lagged: no ticket twice, fenced."""
    # Two redis-servers (appendonly, appendfsync always), the replica's link
    # through `relay`, a forwarder that can hold it; the nodes reach the
    # master through `vip`, a forwarder repointed at each failover. Zone rw
    # (redis_replicas=1) names r's URL on node A (its WAIT must not hold up
    # r's batches: a connection of its own) and another forwarder's on node B
    # (`vip_w`).
    m, rr = Redis(run, "failover-m"), Redis(run, "failover-r")
    m.extra = list(SYNC_NOW)
    m.start()
    relay = Forwarder(run, m.port)
    start_replica(rr, relay)
    vip, vip_w = Forwarder(run, m.port), Forwarder(run, m.port)
    nodes = []
    for label in "AB":
        n = Nginx(run, f"failover-{label.lower()}")
        n.name = label
        url = f"redis://127.0.0.1:{vip.port}"
        url_w = url if label == "A" else f"redis://127.0.0.1:{vip_w.port}"
        n.configure(f"    ticket_zone r:1m redis={url};\n"
                    f"    ticket_zone le:1m redis={url} lease=20;\n"
                    f"    ticket_zone rw:1m redis={url_w} redis_replicas=1;\n" +
                    server(n.port, FAILOVER_LOCATIONS))
        n.must_start()
        nodes.append(n)
    wait_connected(nodes)
    wait_connected(nodes, zone="rw")
    # Each worker's rw link has its first WAIT behind it before the load: a
    # link's first WAIT under a busy CPU sometimes got no acknowledgement
    # within its timeout (503 at the load's start, with this module's older
    # versions too), which the check below would take for a failover's.
    for n in nodes:
        warm = [Client(n.port) for _ in range(6)]
        for c in warm:
            c.request("GET", "/w")
        for c in warm:
            c.close()
    # key "solo" of zone r: one node takes it until a kill, the other after,
    # so only the fence keeps the second from numbers the first lost
    owner = ["A"]

    def choose(rng, elapsed, client):
        node = nodes[client % len(nodes)].name
        if (client // 2) % 4 == 3:
            return ("rw", None), "/w", 1
        x = rng.random()
        if x < 0.15 and node == owner[0]:
            return ("r", "solo"), "/k?k=solo", 1
        if x < 0.45:
            return ("r", None), "/t", 1
        if x < 0.7:
            k = f"k{rng.randrange(3)}"
            return ("r", k), f"/k?k={k}", 1
        if x < 0.85:
            return ("le", None), "/le", 1
        return ("le", "k0"), "/lk?k=k0", 1

    first, second = Switch("failover", False), Switch("failover after lag", True)
    with Load(nodes, choose, clients=args.clients, seconds=60) as load:
        time.sleep(args.seconds)
        fences0 = fence_epochs(m)
        # 1: the replica in sync. kill -9, promote, repoint; the old master
        # comes back as the new one's replica.
        first.offsets = redis_info(m, "replication")
        first.t_begin = first.t_kill = time.monotonic()
        m.kill9()
        owner[0] = "B"
        rr.cmd("REPLICAOF", "NO", "ONE")
        first.promoted = {c: rr.counter(*c) for c in FAILOVER_COUNTERS}
        first.covered = {c: rr.covered(*c) for c in FAILOVER_COUNTERS}
        first.run_id = redis_info(rr, "server")["run_id"]
        vip.point(rr.port)
        vip_w.point(rr.port)
        first.t_service = time.monotonic()
        relay.point(rr.port)
        first.t_synced = start_replica(m, relay)
        time.sleep(2.5)
        first.fences = fence_epochs(rr)
        # 2: the replica lags (its link held: the master's writes stay
        # unread), the master dies, the forwarder points at the replica
        # before it is promoted (the nodes must refuse it), then it is.
        time.sleep(0.5)
        second.t_begin = time.monotonic()
        relay.hold()
        time.sleep(1.0)
        second.offsets = redis_info(rr, "replication")
        second.t_kill = time.monotonic()
        rr.kill9()
        owner[0] = "A"
        relay.drop()
        second.promoted = {c: m.counter(*c) for c in FAILOVER_COUNTERS}
        second.covered = {c: m.covered(*c) for c in FAILOVER_COUNTERS}
        second.run_id = redis_info(m, "server")["run_id"]
        m.cmd("CONFIG", "RESETSTAT")
        vip.point(m.port)
        vip_w.point(m.port)
        time.sleep(0.6)
        as_replica = redis_info(m, "commandstats")
        m.cmd("REPLICAOF", "NO", "ONE")
        second.t_service = time.monotonic()
        relay.point(m.port)
        second.t_synced = start_replica(rr, relay)
        time.sleep(2.5)
        second.fences = fence_epochs(m)
    records = check.absorb(load, "failover", allowed=(200, 503))
    unavailable_bodies(check, records, "failover")
    ok = [r for r in records if r.status == 200]

    # the role check: the nodes came to the replica and asked, took nothing
    asked = {k[len("cmdstat_"):]: v.split(",")[0] for k, v in as_replica.items() if k.startswith("cmdstat_")}
    check.expect("info" in asked and not any(c in asked for c in ("evalsha", "eval", "incrby", "wait")),
                 f"while the forwarder pointed at a replica, the nodes sent it {asked or 'nothing'} "
                 f"(INFO, and no take, expected)")
    prev = fences0
    for sw in (first, second):
        label = sw.label
        # strict zones: no ticket while no master was behind the forwarder
        early = [r for r in ok if r.counter[0] != "le" and sw.t_kill + 0.01 < r.sent and r.done < sw.t_service]
        check.expect(not early, f"{label}: {len(early)} tickets answered while there was no master: "
                     + "; ".join(check.describe(r) for r in early[:2]))
        # tickets again on every node, in every zone (rw: once a replica is in sync)
        back = {}
        for z in FAILOVER_ZONES:
            since = sw.t_synced if z == "rw" else sw.t_service
            for n in nodes:
                got = first_ok_after([r for r in ok if r.counter[0] == z], since, n.name)
                back[(z, n.name)] = None if got is None else got.done - since
                check.expect(got is not None and got.done - since <= RECOVERY,
                             f"{label}: zone {z} on node {n.name} answered tickets again "
                             f"{'never' if got is None else f'{got.done - since:.2f} s'} after "
                             f"{'a replica was in sync' if z == 'rw' else 'a master was behind the forwarder'}"
                             f" (bound {RECOVERY} s)")
        # what the promoted replica lacked; redis_replicas=1: nothing answered
        lacked, seen = {}, []
        for c in FAILOVER_COUNTERS:
            answered = max((r.last for r in ok if r.counter == c and r.sent < sw.t_kill), default=0)
            held = sw.promoted.get(c) or 0
            lacked[c] = max(0, answered - held)
            seen.append(f"{fmt_counter(c)} {answered}/{held}")
            if c[0] == "rw":
                # the count, or the durable ceiling a count kept in memory
                # below it (reserve=) resumes past
                covered = sw.covered.get(c) or 0
                check.expect(covered >= answered, f"{label}: the promoted replica covers {covered} "
                             f"(count {held}) for {fmt_counter(c)}, but {answered} was answered "
                             f"with redis_replicas=1")
        if sw.lagged:
            check.expect(lacked[("r", None)] > 0 and lacked[("r", "solo")] > 0,
                         f"{label}: the promoted replica did not lack answered tickets of r and r[solo] "
                         f"({', '.join(seen)}): no lag to fence")
        o = sw.offsets
        acked = dict(kv.split("=", 1) for kv in o.get("slave0", "offset=0").split(","))
        check.note(f"{label}: at the kill the replica was {int(o['master_repl_offset']) - int(acked['offset'])} "
                   f"bytes behind; answered/promoted replica held: {', '.join(seen)}; lacked "
                   f"{sum(lacked.values())} answered tickets")
        # every counter went on above everything answered (lease: a node
        # may finish a lease it held, its own numbers)
        for c in FAILOVER_COUNTERS:
            before = [r.last for r in ok if r.counter == c and r.sent < sw.t_kill]
            after = [r for r in ok if r.counter == c and r.sent >= sw.t_service]
            if not before or not after:
                continue
            a, b = max(before), min(after, key=lambda r: r.first)
            if c[0] != "le":
                check.expect(b.first > a, f"{label}: {fmt_counter(c)} went on at {b.first} (node {b.node}), "
                             f"after {a} had been answered")
            sw.skips.append(f"{fmt_counter(c)} {a} -> {b.first} ({b.node})")
        # the fence: the epoch up once per zone, logged once, with the new run id
        for z in FAILOVER_ZONES:
            check.expect(sw.fences[z] == prev[z] + 1, f"{label}: zone {z}'s fence epoch went from "
                         f"{prev[z]} to {sw.fences[z]} (once per failover expected)")
            text = f'ticket zone "{z}": redis restarted or failed over (run_id {sw.run_id})'
            logged = sum(error_lines(n, text) for n in nodes)
            check.expect(logged == 1, f"{label}: zone {z}: {logged} fence lines with run_id {sw.run_id} "
                         f"over both nodes (one expected)")
        prev = sw.fences
        check.note(f"{label}: down {sw.t_service - sw.t_kill:.2f} s (the kill to a master behind the "
                   f"forwarder), a replica in sync {sw.t_synced - sw.t_service:.2f} s later; tickets again after "
                   + ", ".join(f"{z}@{n} {'never' if v is None else f'{v:.2f} s'}" for (z, n), v in back.items()))
        check.note(f"{label}: fence epochs {sw.fences}, logged; last answered -> first after: "
                   + ", ".join(sw.skips))

    # 503s only from the start of a fault until RECOVERY after a master
    # (for rw: and a replica) was back
    outside = [r for r in records if r.status == 503 and not any(
        sw.t_begin - 0.05 <= r.sent <= (sw.t_synced if r.counter[0] == "rw" else sw.t_service) + RECOVERY
        for sw in (first, second))]
    check.expect(not outside, f"{len(outside)} answered 503 away from the failovers: "
                 + "; ".join(check.describe(r) for r in outside[:3]))
    # what rw's WAIT costs zone r on node A, where both name one URL: rw has
    # a connection of its own, so r keeps going while WAIT blocks (it once
    # shared r's: 650 -> 5 tickets/s on such a worker)
    hold = second.t_kill - second.t_begin
    during = [r for r in records if second.t_begin <= r.sent < second.t_kill]
    waits = {(r.node, r.pid) for r in during if r.counter[0] == "rw"}
    rates = []
    for node, pid in sorted({(r.node, r.pid) for r in ok if r.counter[0] == "r" and r.pid}):
        got = [sum(1 for r in ok if r.counter[0] == "r" and r.pid == pid and t <= r.sent < t + hold) / hold
               for t in (second.t_begin - hold, second.t_begin)]
        shared = node == "A" and (node, pid) in waits
        rates.append(f"{node} {pid}{' (rw too)' if shared else ''} {got[0]:.0f} -> {got[1]:.0f}")
        if shared and got[0] >= 50:
            check.expect(got[1] >= got[0] / 4,
                         f"zone r on worker {pid} of node A, which also waited for rw's replica: "
                         f"{got[0]:.0f} -> {got[1]:.0f} tickets/s while the replication link was held "
                         f"(rw's WAIT holding up r's connection?)")
    held_503 = defaultdict(int)
    for r in during:
        held_503[r.counter[0]] += r.status == 503 and r.done < second.t_kill
    check.note(f"while the replication link was held ({hold:.1f} s): 503s per zone {dict(held_503)}; zone r "
               f"tickets/s per worker, before -> during: {', '.join(rates)}")

    check_unique(check, records)
    violations = check_order(check, [r for r in records if r.counter[0] != "le"],
                             what=" in the strict zones r and rw over the failovers")
    per_node = check_order(check, [r for r in records if r.counter[0] == "le"], per_node=True,
                           what=" in the lease zone within a node")
    st = {n.name: status(n)["zones"] for n in nodes}
    check.note("status after: " + "; ".join(
        f"{k}: " + ", ".join(f"{z} fences {v[z]['redis']['fences']} repairs {v[z]['redis']['repairs']} "
                             f"errors {v[z]['redis']['errors']}" for z in FAILOVER_ZONES) for k, v in st.items()))
    check.note(f"log lines 'was below the numbers' (repairs): "
               f"{sum(error_lines(n, 'was below the numbers') for n in nodes)}; "
               f"sent to the replica before its promotion: {asked}")
    check.stats.update(requests=len(records), tickets=sum(r.last - r.first + 1 for r in ok),
                       statuses=count_statuses(records), order_violations=violations,
                       lease_order_violations=per_node)
    healthy(check, *nodes)


@scenario
def failback(run, args, check):
    """Back to a former master that never restarted and lacks the later writes: fenced once, no ticket twice; a master demoted under the nodes (READONLY): reconnect, tickets again."""
    m, rr = Redis(run, "failback-m"), Redis(run, "failback-r")
    m.extra = list(SYNC_NOW)
    m.start()
    relay = Forwarder(run, m.port)
    start_replica(rr, relay)
    vip = Forwarder(run, m.port)
    nodes = []
    for label in "AB":
        n = Nginx(run, f"failback-{label.lower()}")
        n.name = label
        url = f"redis://127.0.0.1:{vip.port}"
        n.configure(f"    ticket_zone r:1m redis={url};\n    ticket_zone le:1m redis={url};\n"
                    f"    ticket_zone rw:1m redis={url};\n" + server(n.port, FAILOVER_LOCATIONS))
        n.must_start()
        nodes.append(n)
    wait_connected(nodes)
    owner = ["A"]  # who takes key "solo"

    def choose(rng, elapsed, client):
        if rng.random() < 0.3 and nodes[client % 2].name == owner[0]:
            return ("r", "solo"), "/k?k=solo", 1
        return ("r", None), "/t", 1
    with Load(nodes, choose, clients=args.clients, seconds=60) as load:
        time.sleep(args.seconds)
        x = redis_info(m, "server")["run_id"]
        # 1: switchover to R; M (run id X, alive) becomes R's replica over a
        # held link, so it never gets R's writes (nor the zone hash's new run)
        rr.cmd("REPLICAOF", "NO", "ONE")
        vip.point(rr.port)
        owner[0] = "B"
        relay.point(rr.port)
        relay.hold()
        m.cmd("REPLICAOF", "127.0.0.1", str(relay.port))
        time.sleep(1.5)
        # 2: R dies; M promoted again: its run id is the one its zone hash holds
        t_kill = time.monotonic()
        rr.kill9()
        relay.drop()
        m.cmd("REPLICAOF", "NO", "ONE")
        vip.point(m.port)
        owner[0] = "A"
        t_back = time.monotonic()
        time.sleep(2.0)
        # 3: a replica again; then the master demoted while the nodes use it
        relay.point(m.port)
        start_replica(rr, relay)
        time.sleep(0.5)
        t_demote = time.monotonic()
        rr.cmd("REPLICAOF", "NO", "ONE")
        relay.point(rr.port)
        m.cmd("REPLICAOF", "127.0.0.1", str(relay.port))
        time.sleep(0.3)
        vip.point(rr.port)
        t_moved = time.monotonic()
        time.sleep(RECOVERY + 1)
    records = check.absorb(load, "failback", allowed=(200, 503))
    ok = [r for r in records if r.status == 200]
    text = f'ticket zone "r": redis restarted or failed over (run_id {x})'
    logged = sum(error_lines(n, text) for n in nodes)
    check.expect(logged == 1, f"back to the former master (run_id {x}, which its zone hash still names): "
                 f"{logged} fence lines for zone r (one expected)")
    solo_b = [r.last for r in ok if r.counter == ("r", "solo") and r.node == "B" and r.sent < t_kill]
    solo_a = sorted(r.first for r in ok if r.counter == ("r", "solo") and r.node == "A" and t_back <= r.sent < t_demote)
    check.note(f"key solo: node B took up to {max(solo_b, default=None)} on the intermediate master; node A "
               f"went on at {solo_a[:1]} on the former one")
    check_unique(check, records)
    check_order(check, records, what=" over the failback")
    # every worker that answered before the demotion answers again after it
    workers = {(r.node, r.pid) for r in ok if r.sent < t_demote}
    for node, pid in sorted(workers):
        mine = [r for r in records if r.node == node and r.pid == pid and r.sent >= t_moved]
        got = first_ok_after(mine, t_moved)
        check.expect(not mine or (got is not None and got.done - t_moved <= RECOVERY),
                     f"after the master was demoted under it, worker {pid} of node {node} answered "
                     f"{count_statuses(mine)} over {RECOVERY + 1:.0f} s (tickets again within {RECOVERY} s "
                     f"expected); its log: " + "; ".join(
                         line[line.find("ticket"):][:110] for n in nodes if n.name == node
                         for line in n.error_log().splitlines() if f"{pid}#" in line and "refused" in line)[:300])
    check.stats.update(requests=len(records), statuses=count_statuses(records))


# ---------------------------------------------------------------------------
# issue 12: lives of keys

NKEYS = 8
BASE = 10 ** 9
SPAN = 10 ** 6
IDLE = 1.0

Op = namedtuple("Op", "sent done status op key arg node body")


def life_locations(zone):
    locs = [f"        location = /s{i} {{ ticket_counter zone={zone} key=$arg_k start={i * BASE + 1}; }}"
            for i in range(NKEYS)]
    locs += [f"        location = /admin {{ ticket_admin zone={zone}; }}",
             "        location = /pub { ticket_counter zone=fz key=$arg_k create=off; }",
             "        location = /fadmin { ticket_admin zone=fz; }",
             "        location = /p { ticket_counter zone=pz key=$arg_k; }",
             "        location = /padmin { ticket_admin zone=pz; }",
             "        location = /status { ticket_status; }"]
    return "\n".join(locs) + "\n"


class Lives:
    """Takers over NKEYS keys; controllers that move them to fresh ranges,
    delete them, look at them and let them expire (takers leave a key alone
    while it is to expire)."""

    def __init__(self, zone, nodes, controllers, deletes=True):
        self.zone = zone
        self.deletes = deletes
        self.nodes = nodes
        self.quiet = [False] * NKEYS
        self.next_range = [1] * NKEYS
        self.ops = []
        self.stop = threading.Event()
        self.crashed = []
        self.threads = [threading.Thread(target=self.controller, args=(i, controllers), daemon=True)
                        for i in range(controllers)]

    def choose(self, rng, elapsed, client):
        active = [i for i in range(NKEYS) if not self.quiet[i]]
        if not active:
            return None
        i = rng.choice(active)
        return (self.zone, f"c{i}"), f"/s{i}?k=c{i}", 1

    def admin(self, conn, node, op, i, method, path, arg=None):
        sent = time.monotonic()
        try:
            status, _, body = conn.request(method, path)
        except (OSError, ValueError, IndexError) as e:
            self.ops.append(Op(sent, time.monotonic(), 0, op, i, arg, node.name, str(e)[:60]))
            return None
        self.ops.append(Op(sent, time.monotonic(), status, op, i, arg, node.name, body[:200]))
        return status

    def controller(self, index, count):
        try:
            self.run_controller(index, count)
        except Exception as e:
            self.crashed.append(f"controller {index}: {type(e).__name__}: {e}")

    def run_controller(self, index, count):
        rng = random.Random(index * 104729 + int(time.monotonic() * 1000))
        node = self.nodes[index % len(self.nodes)]
        mine = [i for i in range(NKEYS) if i % count == index]
        conn = None
        probes = {}  # key -> when to look
        while not self.stop.is_set():
            time.sleep(rng.uniform(0.02, 0.06))
            if conn is None or conn.sock is None:
                conn = Client(node.port)
            now = time.monotonic()
            due = [i for i, t in probes.items() if t <= now]
            if due:
                i = due[0]
                self.admin(conn, node, "probe", i, "GET", f"/admin?key=c{i}")
                del probes[i]
                self.quiet[i] = False
                continue
            i = rng.choice(mine)
            if self.quiet[i]:
                continue
            x = rng.random()
            if x < 0.4:
                j = self.next_range[i]
                self.next_range[i] += 1
                nxt = i * BASE + j * SPAN + 1
                self.admin(conn, node, "move", i, "POST", f"/admin?key=c{i}&next={nxt}&start={i * BASE + 1}", nxt)
            elif x < 0.75 and self.deletes:
                self.admin(conn, node, "delete", i, "DELETE", f"/admin?key=c{i}")
            elif x < 0.85:
                self.admin(conn, node, "get", i, "GET", f"/admin?key=c{i}")
            elif sum(self.quiet) < 2:
                self.quiet[i] = True
                probes[i] = time.monotonic() + IDLE + 0.6
        if conn is not None:
            conn.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=20)


def range_of(i, t):
    """Which range of key i a ticket is in: 0 (a life from start), j (moved
    to i*BASE + j*SPAN + 1), or None (not key i's)."""
    if not (i * BASE + 1 <= t < (i + 1) * BASE + 1):
        return None
    return (t - i * BASE - 1) // SPAN


def check_lives(check, zone, records, ops, nodes_label, per_node=False):
    """Issue 12's rules over one concurrent phase (see the module doc).
    per_node (lease mode): after an operation, only the takes answered by
    the node that made it must be in the range it left; another node may
    still serve a lease it took before (its own numbers, unique)."""
    takes = [r for r in records if r.counter[0] == zone]
    excused = wrong_key = dup_pairs = window_bad = 0
    examples = defaultdict(list)
    moves = deletes = probes = expired = 0
    for i in range(NKEYS):
        key = f"c{i}"
        ok = sorted((r for r in takes if r.counter[1] == key and r.status == 200), key=lambda r: r.sent)
        kops = sorted((o for o in ops if o.key == i), key=lambda o: o.sent)
        for r in ok:
            if range_of(i, r.first) is None:
                wrong_key += 1
                examples["wrong key"].append(check.describe(r))
        # boundaries: deletes that may have happened, quiet spells of idle=
        uses = sorted([(r.sent, r.done) for r in ok] +
                      [(o.sent, o.done) for o in kops if o.op == "move" and o.status == 200])
        quiet = []
        latest = None
        for s, d in uses:
            if latest is not None and s - latest >= 0.9 * IDLE:
                quiet.append((latest, s))
            latest = d if latest is None else max(latest, d)
        # Redis runs a use at some instant between its sending and its
        # answer, so a stall of Redis (a slow fsync) makes a quiet spell
        # the client never saw: from a use's sending to the earliest answer
        # of every use sent after it. (A key that was idle that long in
        # Redis may have expired, as idle= says.)
        # (`uses` is sorted by sending)
        earliest_done_after = [float("inf")] * (len(uses) + 1)
        for j in range(len(uses) - 1, -1, -1):
            earliest_done_after[j] = min(earliest_done_after[j + 1], uses[j][1])
        for j, (s, _) in enumerate(uses[:-1]):
            if earliest_done_after[j + 1] - s >= 0.9 * IDLE:
                quiet.append((s, earliest_done_after[j + 1]))
        bounds = sorted([(o.sent, o.done) for o in kops if o.op == "delete" and o.status != 404] + quiet)

        def separable(a, b):
            for bs, be in bounds:
                if max(a.sent, bs) < min(b.done, be) or max(b.sent, bs) < min(a.done, be):
                    return True
            return False
        same = defaultdict(list)
        for r in ok:
            same[r.first].append(r)
        for t, rs in same.items():
            for x, y in zip(rs, rs[1:]):
                if separable(x, y):
                    excused += 1
                else:
                    dup_pairs += 1
                    examples["duplicate in a life"].append(f"{check.describe(x)} / {check.describe(y)}")
        # windows after an operation: the range every take must be in
        starts = [r.sent for r in ok]
        for n, o in enumerate(kops):
            if o.op == "move":
                moves += 1
                if o.status != 200:
                    check.fail(f"move of {key} to a fresh range {o.arg} answered {o.status} {o.body!r} "
                               f"(node {o.node}, {check.t(o.sent):.3f} s)")
                    continue
                want = (o.arg - i * BASE - 1) // SPAN
            elif o.op == "delete":
                deletes += 1
                if o.status not in (200, 404):
                    check.fail(f"DELETE of {key} answered {o.status} {o.body!r}")
                    continue
                if o.status != 200:
                    continue
                want = 0
            elif o.op == "probe":
                probes += 1
                last_use = max((d for s, d in uses if s < o.sent), default=None)
                quiet_for = None if last_use is None else o.sent - last_use
                if o.status == 404:
                    expired += 1
                    want = 0
                elif o.status == 200 and quiet_for is not None and quiet_for >= IDLE + 0.3:
                    check.fail(f"{key} still there {quiet_for:.2f} s after its last use (idle=1s): "
                               f"{o.body!r} (node {o.node})")
                    continue
                else:
                    continue
            else:
                if o.status not in (200, 404):
                    check.fail(f"GET of {key} answered {o.status} {o.body!r}")
                continue
            # until the next operation that may change the range, or a quiet spell
            end = next((p.sent for p in kops[n + 1:] if p.op in ("move", "delete", "probe")), float("inf"))
            end = min([end] + [qs for qs, _ in quiet if qs >= o.done])
            lo = bisect_left(starts, o.done)
            for r in ok[lo:]:
                if r.sent >= end:
                    break
                if r.done >= end or (per_node and r.node != o.node):
                    continue
                if range_of(i, r.first) != want:
                    window_bad += 1
                    examples["window"].append(
                        f"after {o.op} {o.arg or ''} of {key} answered {check.t(o.done):.3f} s (node {o.node}, "
                        f"{o.status}): {check.describe(r)} (range {range_of(i, r.first)}, expected {want})")
    check.expect(wrong_key == 0, f"{wrong_key} tickets outside their key's range (another key's counter): "
                 + "; ".join(examples["wrong key"][:2]))
    check.expect(dup_pairs == 0, f"{dup_pairs} tickets issued twice within a key's life: "
                 + "; ".join(examples["duplicate in a life"][:2]))
    check.expect(window_bad == 0, f"{window_bad} tickets from another life or range than the last admin "
                 f"operation left: " + "; ".join(examples["window"][:2]))
    statuses = count_statuses(takes)
    check.note(f"{nodes_label}: {statuses.get(200, 0)} tickets over {NKEYS} keys ({statuses}); "
               f"{moves} moves, {deletes} deletes, {probes} expiry probes ({expired} expired); "
               f"{excused} equal tickets in different lives (allowed)")
    check.expect(expired > 0, "no key expired")
    return statuses.get(200, 0)


def run_lives(check, zone, nodes, args, clients, deletes=True):
    lives = Lives(zone, nodes, controllers=2, deletes=deletes)
    with Load(nodes, lives.choose, clients=clients, seconds=60) as load, lives:
        time.sleep(args.life_seconds)
        lives.stop.set()
    for crash in lives.crashed:
        check.fail(f"admin client died: {crash}")
    allowed = (200, 503)
    records = check.absorb(load, "lives", allowed=allowed)
    check.admin.extend(lives.ops)
    try_again = [r for r in records if r.status == 503 and not r.body.startswith(b"try again")]
    check.expect(not try_again, f"{len(try_again)} takes answered 503 other than 'try again': "
                 + "; ".join(check.describe(r) for r in try_again[:2]))
    return records, lives.ops


def keys_of(node, zone):
    return status(node)["zones"][zone]["keys"]


def flood(check, nodes, redis=None, n=1500):
    """create=off: a flood of random keys creates nothing (ticket_status keys;
    Redis keys)."""
    real = []
    for k in range(3):
        s, body = one(nodes[0], "POST", f"/fadmin?key=real{k}&next={100 * (k + 1)}")
        check.expect(s == 200, f"POST /fadmin?key=real{k}: {s} {body!r}")
        real.append(k)
    for node in nodes:
        for k in real:
            got = take(node, f"/pub?k=real{k}")
            check.expect(isinstance(got, int) and got >= 100 * (k + 1),
                         f"create=off on the existing key real{k} (node {node.name}): {got}")
    before = {nd.name: keys_of(nd, "fz") for nd in nodes}
    rkeys = None if redis is None else len(redis.cmd("KEYS", "ticket:fz*"))
    counts = [defaultdict(int) for _ in range(4)]

    def flooder(index, node, count):
        rng = random.Random(index)
        c = Client(node.port)
        try:
            for _ in range(count):
                s, _, _ = c.request("GET", f"/pub?k=junk{index}x{rng.getrandbits(48):x}")
                counts[index][s] += 1
        finally:
            c.close()
    threads = [threading.Thread(target=flooder, args=(i, nodes[i % len(nodes)], n // 4)) for i in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    took = time.monotonic() - t0
    statuses = defaultdict(int)
    for c in counts:
        for k, v in c.items():
            statuses[k] += v
    after = {nd.name: keys_of(nd, "fz") for nd in nodes}
    rkeys_after = None if redis is None else len(redis.cmd("KEYS", "ticket:fz*"))
    check.expect(dict(statuses) == {404: 4 * (n // 4)}, f"create=off flood answered {dict(statuses)}")
    check.expect(after == before, f"create=off flood changed the zone's key count: {before} -> {after}")
    check.expect(rkeys == rkeys_after, f"create=off flood changed Redis's keys: {rkeys} -> {rkeys_after}")
    check.note(f"create=off: {4 * (n // 4)} random keys in {took:.1f} s, {dict(statuses)}; zone keys "
               f"{before} -> {after}" + ("" if redis is None else f"; Redis keys ticket:fz* {rkeys} -> {rkeys_after}"))


@scenario
def life_local(run, args, check):
    """Issue 12 on a local zone (idle=1s), two workers: takes while keys are deleted, moved forward and expire; create=off."""
    n = Nginx(run, "life-local")
    n.name = "A"
    n.configure("    ticket_zone lz:1m idle=1s;\n    ticket_zone fz:1m;\n    ticket_zone pz:1m;\n" +
                server(n.port, life_locations("lz")))
    n.must_start()
    records, ops = run_lives(check, "lz", [n], args, args.clients + 4)
    tickets = check_lives(check, "lz", records, ops, "local zone")
    flood(check, [n])
    check.stats.update(requests=len(records), tickets=tickets, admin_ops=len(ops))
    healthy(check, n)


def persist_durable(check, n, reserve):
    """A move and a delete survive kill -9 and a clean restart."""
    got = {}
    got["m"] = [take(n, "/p?k=m") for _ in range(3)]
    got["g1"] = [take(n, "/p?k=g1") for _ in range(2)]
    got["g2"] = [take(n, "/p?k=g2") for _ in range(2)]
    check.expect(got == {"m": [1, 2, 3], "g1": [1, 2], "g2": [1, 2]}, f"durable keys before: {got}")
    s, body = one(n, "POST", "/padmin?key=m&next=5000")
    check.expect(s == 200, f"POST next=5000: {s} {body!r}")
    check.expect(take(n, "/p?k=m") == 5000, "the move to 5000")
    s, body = one(n, "DELETE", "/padmin?key=g1")
    check.expect(s == 200, f"DELETE g1: {s} {body!r}")
    n.kill_all()
    n.must_start()
    s, body = one(n, "GET", "/padmin?key=g1")
    check.expect(s == 404, f"after kill -9: the deleted key answered {s} {body!r}")
    t1 = take(n, "/p?k=m")
    check.expect(isinstance(t1, int) and 5000 < t1 <= 5001 + reserve,
                 f"after kill -9: the moved key went on at {t1} (moved to 5000, took 5000, reserve={reserve})")
    n2 = (t1 if isinstance(t1, int) else 5000) + 1000
    s, body = one(n, "POST", f"/padmin?key=m&next={n2}")
    check.expect(s == 200, f"POST next={n2}: {s} {body!r}")
    s, body = one(n, "DELETE", "/padmin?key=g2")
    check.expect(s == 200, f"DELETE g2: {s} {body!r}")
    n.quit()
    n.must_start()
    s, body = one(n, "GET", "/padmin?key=g2")
    check.expect(s == 404, f"after a clean restart: the deleted key answered {s} {body!r}")
    t2 = take(n, "/p?k=m")
    check.expect(t2 == n2, f"after a clean restart: the moved key went on at {t2}, moved to {n2}")
    s, body = one(n, "POST", "/padmin?key=m&next=5")
    check.expect(s == 409, f"a move back after the restarts answered {s} {body!r}")
    g1 = take(n, "/p?k=g1")
    check.note(f"durable: moved to 5000, kill -9 -> {t1}; moved to {n2}, clean restart -> {t2}; deleted keys "
               f"404 after both; g1 taken again: {g1}")


@scenario
def life_durable(run, args, check):
    """Issue 12 on a durable zone (idle=1s): the concurrent test; create=off; a move and a delete survive kill -9 and a restart."""
    n = Nginx(run, "life-durable")
    n.name = "A"
    reserve = 50
    n.configure(f"    ticket_zone dz:1m state={n.path('state', 'dz.state')} reserve={reserve} idle=1s;\n"
                f"    ticket_zone fz:1m state={n.path('state', 'fz.state')};\n"
                f"    ticket_zone pz:1m state={n.path('state', 'pz.state')} reserve={reserve};\n" +
                server(n.port, life_locations("dz")))
    n.must_start()
    records, ops = run_lives(check, "dz", [n], args, args.clients + 4)
    tickets = check_lives(check, "dz", records, ops, "durable zone")
    flood(check, [n])
    persist_durable(check, n, reserve)
    check.stats.update(requests=len(records), tickets=tickets, admin_ops=len(ops))
    healthy(check, n)


def persist_redis(check, redis, a, b):
    """A move and a delete done through one node, seen by the other, kept
    over a clean Redis restart, kill -9 of Redis and kill -9 of a node."""
    got = {"m": [take(a, "/p?k=m") for _ in range(3)],
           "g1": [take(b, "/p?k=g1") for _ in range(2)],
           "g2": [take(b, "/p?k=g2") for _ in range(2)]}
    check.expect(got == {"m": [1, 2, 3], "g1": [1, 2], "g2": [1, 2]}, f"Redis keys before: {got}")
    s, body = one(a, "POST", "/padmin?key=m&next=5000")
    check.expect(s == 200, f"POST next=5000 on A: {s} {body!r}")
    tb = take(b, "/p?k=m")
    check.expect(tb == 5000, f"node B after A's move to 5000: {tb}")
    s, body = one(a, "DELETE", "/padmin?key=g1")
    check.expect(s == 200, f"DELETE g1 on A: {s} {body!r}")
    s, body = one(b, "GET", "/padmin?key=g1")
    check.expect(s == 404, f"node B after A's delete: {s} {body!r}")
    redis.shutdown()
    redis.start()
    wait_connected([a, b], zone="pz")
    s, body = one(b, "GET", "/padmin?key=g1")
    check.expect(s == 404, f"after a clean Redis restart: the deleted key answered {s} {body!r} on B")
    t1 = take(a, "/p?k=m")
    check.expect(isinstance(t1, int) and t1 > 5000, f"after a clean Redis restart the moved key went on at {t1}")
    n2 = (t1 if isinstance(t1, int) else 5000) + 1000
    s, body = one(b, "POST", f"/padmin?key=m&next={n2}")
    check.expect(s == 200, f"POST next={n2} on B: {s} {body!r}")
    s, body = one(a, "DELETE", "/padmin?key=g2")
    check.expect(s == 200, f"DELETE g2 on A: {s} {body!r}")
    redis.kill9()
    redis.start()
    wait_connected([a, b], zone="pz")
    s, body = one(a, "GET", "/padmin?key=g2")
    check.expect(s == 404, f"after kill -9 of Redis: the deleted key answered {s} {body!r} on A")
    t2 = take(b, "/p?k=m")
    check.expect(isinstance(t2, int) and t2 >= n2, f"after kill -9 of Redis the moved key went on at {t2}, "
                 f"moved to {n2}")
    a.kill_all()
    a.must_start()
    wait_connected([a], zone="pz")
    t3 = take(a, "/p?k=m")
    check.expect(isinstance(t3, int) and isinstance(t2, int) and t3 > t2,
                 f"after kill -9 of node A: the moved key went on at {t3} on A, after {t2}")
    s, body = one(a, "GET", "/padmin?key=g1")
    check.expect(s == 404, f"after kill -9 of node A: the deleted g1 answered {s} {body!r}")
    s, body = one(a, "POST", "/padmin?key=m&next=5")
    check.expect(s == 409, f"a move back answered {s} {body!r}")
    check.note(f"Redis zone: A moved to 5000, B took {tb}; A deleted g1, B saw 404; clean Redis restart -> {t1} "
               f"(fence); B moved to {n2}, A deleted g2; kill -9 of Redis -> {t2}; kill -9 of node A -> {t3}")


def life_nodes(run, name, extra):
    """A redis-server and nodes A and B with the lives' locations over its
    zones rz (idle=1s and `extra`), fz and pz, connected."""
    redis = Redis(run, name)
    redis.start()
    nodes = []
    for label in "AB":
        n = Nginx(run, f"{name}-{label.lower()}")
        n.name = label
        n.configure(redis_zone(redis, "rz", extra=" idle=1s" + extra) + redis_zone(redis, "fz") +
                    redis_zone(redis, "pz") + server(n.port, life_locations("rz")))
        n.must_start()
        nodes.append(n)
    wait_connected(nodes, zone="rz")
    return redis, nodes


@scenario
def life_redis(run, args, check):
    """Issue 12 on a Redis zone (idle=1s) over two nodes; create=off; moves and deletes survive Redis restarts."""
    redis, nodes = life_nodes(run, "life-redis", "")
    records, ops = run_lives(check, "rz", nodes, args, args.clients + 4)
    tickets = check_lives(check, "rz", records, ops, "Redis zone, two nodes")
    flood(check, nodes, redis)
    persist_redis(check, redis, *nodes)
    check.stats.update(requests=len(records), tickets=tickets, admin_ops=len(ops))
    healthy(check, *nodes)


@scenario
def life_lease(run, args, check):
    """Issue 12 on a Redis zone in lease mode (lease=20, idle=1s) over two nodes, moves and expiry: after a move, the node that made it serves only the new range."""
    _, nodes = life_nodes(run, "life-lease", " lease=20")
    # No deletes: after one, the other node finishes the lease of the old
    # life it holds, numbers the new life hands out again (README, lease mode)
    records, ops = run_lives(check, "rz", nodes, args, args.clients + 4, deletes=False)
    tickets = check_lives(check, "rz", records, ops, "Redis zone in lease mode, two nodes", per_node=True)
    check.stats.update(requests=len(records), tickets=tickets, admin_ops=len(ops))
    healthy(check, *nodes)


# ---------------------------------------------------------------------------


def selftest():
    """The checks themselves, on made-up responses: each must catch what it
    is there to catch, and nothing else. Returns what went wrong."""
    def rec(sent, done, first, last=None, key=None, zone="r", node="A"):
        return Rec(sent, done, 200, (zone, key), first, first if last is None else last, node, 0, 0,
                   1 if last is None else last - first + 1, None)
    wrong = []
    a, b, c = rec(0, 1, 5), rec(2, 3, 4), rec(0.5, 2.5, 3)
    if order_violations([a, b, c]) != [(a, b)]:
        wrong.append(f"order_violations: {order_violations([a, b, c])}")
    if len(duplicates([rec(0, 1, 1, 3), rec(0, 1, 3, 4), rec(0, 1, 5), rec(0, 1, 6, 8)])) != 1:
        wrong.append("duplicates")
    if missing([rec(0, 1, 1, 2), rec(0, 1, 4)], 1, 5) != [(3, 3), (5, 5)]:
        wrong.append("missing")
    # lives of key c0 (range 0: 1.., range 1: SPAN+1..): a duplicate within
    # a life, an allowed one across a delete, a ticket of a moved-from range
    # after the move, one of another key's range
    k = "c0"
    takes = [rec(0.0, 0.01, 1, key=k, zone="z"), rec(0.1, 0.11, 2, key=k, zone="z"),
             rec(0.3, 0.31, 1, key=k, zone="z"), rec(0.4, 0.41, 1, key=k, zone="z"),
             rec(0.6, 0.61, 3, key=k, zone="z"), rec(0.7, 0.71, SPAN + 1, key=k, zone="z"),
             rec(0.8, 0.81, BASE + 7, key=k, zone="z")]
    ops = [Op(0.2, 0.21, 200, "delete", 0, None, "A", b""),
           Op(0.5, 0.51, 200, "move", 0, SPAN + 1, "A", b"")]
    check = Check("selftest")
    check.quiet = True
    check_lives(check, "z", takes, ops, "selftest")
    found = sorted(f.split(" ")[1] + " " + f.split(" ")[2] for f in check.failures)
    want = ["key expired", "tickets from", "tickets issued", "tickets outside"]
    if found != want:
        wrong.append(f"check_lives found {check.failures}")
    # Redis stalled a second (answers late): the key may have expired in
    # Redis meanwhile, so ticket 1 again is a new life, not a duplicate
    stall = [rec(0.0, 0.01, 1, key=k, zone="z"), rec(0.02, 1.2, 2, key=k, zone="z"),
             rec(0.03, 1.21, 1, key=k, zone="z")]
    check = Check("selftest")
    check.quiet = True
    check_lives(check, "z", stall, [], "selftest")
    if any("tickets" in f for f in check.failures):
        wrong.append(f"check_lives, a stall: {check.failures}")
    # the same without the stall: a duplicate
    check = Check("selftest")
    check.quiet = True
    check_lives(check, "z", [rec(0.0, 0.01, 1, key=k, zone="z"), rec(0.02, 0.03, 2, key=k, zone="z"),
                             rec(0.04, 0.05, 1, key=k, zone="z")], [], "selftest")
    if not any("tickets issued twice" in f for f in check.failures):
        wrong.append(f"check_lives, no stall: {check.failures}")
    return wrong


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nginx", default=os.path.join(ROOT, "build/sbin/nginx"))
    ap.add_argument("--module", default=os.path.join(ROOT, "build/modules", MODULE_NAME))
    ap.add_argument("--scenario", action="append", metavar="NAME",
                    help="run only this scenario (repeatable; default: all)")
    ap.add_argument("names", nargs="*", metavar="SCENARIO", help="run only these scenarios (as --scenario)")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    ap.add_argument("--clients", type=int, default=8, help="load clients, spread over the nodes")
    ap.add_argument("--seconds", type=float, default=1.5, help="length of one step of load")
    ap.add_argument("--outage", type=float, default=1.5, help="seconds Redis stays down after kill -9")
    ap.add_argument("--life-seconds", type=float, default=6.0, help="length of the issue 12 concurrent phase")
    ap.add_argument("--workers", type=int, default=2, help="worker_processes of every nginx")
    ap.add_argument("--keep", action="store_true", help="keep the prefixes even when everything passes")
    args = ap.parse_args()

    if args.list:
        for name, fn in SCENARIOS.items():
            print(f"{name:14} {fn.__doc__}")
        return 0
    names = (args.scenario or []) + args.names or list(SCENARIOS)
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario {', '.join(unknown)}; see --list")
    if subprocess.run(["sh", "-c", "command -v redis-server"], stdout=subprocess.DEVNULL).returncode != 0:
        print("redis-server is not installed (scripts/cluster-fault installs it)", file=sys.stderr)
        return 2

    broken = selftest()
    if broken:
        print(f"cluster fault test: the checker's self-test failed: {broken}", file=sys.stderr)
        return 2

    become_subreaper()
    run = ClusterRun(args.keep)
    run.workers = args.workers
    run.install(args.nginx, args.module)
    return fault.run_scenarios("cluster fault test", SCENARIOS, names, run, args, Check,
                               lambda results: "{} requests".format(
                                   sum(c.stats.get("requests", 0) for _, _, c in results)))


if __name__ == "__main__":
    sys.exit(main())

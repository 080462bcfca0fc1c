"""Shared pieces of scripts/bench: nginx instances in their own prefixes,
process bookkeeping (everything is stopped by its pid), wrk runs, small HTTP
clients, CPU accounting from /proc."""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import os
import pwd
import grp
import re
import signal
import socket
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WRK_SCRIPT = ROOT / "scripts" / "bench.lua"

# Every ticket location counts from here, so every body is "NNNNNNNN\n"
# (9 bytes) for the whole run, and the ceiling answers the same 9 bytes.
START = 10_000_000

DEBIAN_LUA_MODULES = [
    "/usr/lib/nginx/modules/ndk_http_module.so",
    "/usr/lib/nginx/modules/ngx_http_lua_module.so",
]

def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- nginx ----


class Nginx:
    """One nginx instance: its own prefix, config, port; started as a daemon."""

    def __init__(self, name, binary, workdir, port, modules, http_extra, locations, limits):
        self.name = name
        self.binary = binary
        self.port = port
        self.prefix = Path(workdir) / name
        self.modules = modules
        self.http_extra = http_extra
        self.locations = locations
        self.limits = limits
        self.master = None

    @property
    def conf_path(self) -> Path:
        return self.prefix / "conf" / "nginx.conf"

    @property
    def error_log(self) -> Path:
        return self.prefix / "logs" / "error.log"

    def config(self) -> str:
        p = self.prefix
        mods = "".join(f"load_module {m};\n" for m in self.modules)
        locs = "".join(
            f"        location {path} {{\n" + "".join(f"            {line}\n" for line in body) + "        }\n"
            for path, body in self.locations
        )
        extra = "".join(f"    {line}\n" for line in self.http_extra)
        return f"""{mods}worker_processes {self.limits['workers']};
worker_rlimit_nofile {self.limits['nofile']};
error_log {p}/logs/error.log warn;
pid {p}/logs/nginx.pid;

events {{
    worker_connections {self.limits['worker_connections']};
}}

http {{
    access_log off;
    default_type text/plain;
    keepalive_requests {self.limits['keepalive_requests']};
    keepalive_timeout 120s;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
{extra}
    server {{
        listen 127.0.0.1:{self.port} backlog=4096;
{locs}    }}
}}
"""

    def write(self) -> None:
        for sub in ("conf", "logs", "tmp"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        # a state= file of this nginx goes here: a directory of the workers'
        worker_owned_dir(self.prefix / "state")
        self.conf_path.write_text(self.config())

    def cmd(self, *extra):
        return [str(self.binary), "-p", f"{self.prefix}/", "-e", str(self.error_log),
                "-c", str(self.conf_path), *extra]

    def test(self) -> tuple[bool, str]:
        self.write()
        r = subprocess.run(self.cmd("-t"), capture_output=True, text=True, timeout=30)
        return r.returncode == 0, (r.stdout + r.stderr).strip()

    def start(self, timeout: float = 10) -> None:
        if port_in_use(self.port):
            raise RuntimeError(f"port 127.0.0.1:{self.port} is already in use")
        ok, out = self.test()
        if not ok:
            raise RuntimeError(f"{self.name}: nginx -t failed:\n{out}")
        self.launch(timeout)

    def launch(self, timeout: float = 10) -> None:
        """Starts the tested configuration and waits until it listens."""
        r = subprocess.run(self.cmd(), capture_output=True, text=True, timeout=30 + timeout)
        if r.returncode != 0:
            raise RuntimeError(f"{self.name}: nginx did not start:\n{r.stdout}{r.stderr}")
        pidfile = self.prefix / "logs" / "nginx.pid"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pidfile.exists() and pidfile.read_text().strip():
                self.master = int(pidfile.read_text())
                if port_in_use(self.port):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: nginx did not come up on port {self.port}")

    def stop(self, timeout: float = 10) -> bool:
        """Stops it; whether it exited by itself within `timeout` seconds."""
        return stop_all([self], timeout)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) its worker processes have used so far."""
        return sum(proc_cpu_seconds(pid) for pid in (children_of(self.master) if self.master else []))

    def errors_logged(self) -> list[str]:
        try:
            lines = self.error_log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []
        return [l for l in lines if re.search(r"\[(warn|error|crit|alert|emerg)\]", l)]


def children_of(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                kids.append(int(d.name))
    return kids


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_all(servers, timeout: float = 10) -> bool:
    """Fast shutdown (SIGTERM) of the nginx masters we started, all at once;
    SIGKILL for any master or worker of theirs still there after `timeout`
    seconds. Returns whether all exited by themselves."""
    procs = []
    for srv in servers:
        if srv.master is None:
            continue
        master, srv.master = srv.master, None
        workers = children_of(master)
        try:
            os.kill(master, signal.SIGTERM)
        except ProcessLookupError:
            continue
        procs.append((master, workers))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for m, ws in procs for p in (m, *ws)):
            return True
        time.sleep(0.01)
    for master, workers in procs:
        for pid in [*children_of(master), *workers, master]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return False


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_get(port: int, path: str, timeout: float = 30) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def raw_response(port: int, path: str) -> bytes:
    """The full response bytes to one keep-alive GET, as wrk would see them."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        if m:
            want = int(m.group(1))
            while len(body) < want:
                chunk = s.recv(65536)
                if not chunk:
                    break
                body += chunk
        return head + b"\r\n\r\n" + body


def version_of(binary) -> str:
    r = subprocess.run([str(binary), "-v"], capture_output=True, text=True)
    return (r.stdout + r.stderr).strip().split("/")[-1]


# ------------------------------------------------------------------ wrk ----


def run_wrk(port: int, path: str, conns: int, duration: int, keys: int | None = None) -> dict:
    threads = min(2, conns)  # wrk needs connections >= threads
    env = dict(os.environ)
    env.pop("BENCH_KEYS", None)
    if keys:
        env["BENCH_KEYS"] = str(keys)
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency", "--timeout", "5s",
           "-s", str(WRK_SCRIPT), f"http://127.0.0.1:{port}{path}"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=duration + 60)
    m = re.search(r"^BENCH (\{.*\})$", r.stdout, re.M)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    d = json.loads(m.group(1))
    secs = d["duration_us"] / 1e6
    errors = d["connect"] + d["read"] + d["write"] + d["status"] + d["timeout"]
    detail = {k: d[k] for k in ("connect", "read", "write", "status", "timeout") if d[k]}
    if d["requests"] == 0:
        # nothing answered in the whole run: wrk counts no error for requests
        # still waiting at the end, so count one per connection
        errors += conns
        detail["no_response"] = conns
    return {
        "rps": d["requests"] / secs if secs else 0.0,
        "requests": d["requests"],
        "seconds": round(secs, 3),
        "p50_ms": d["p50_us"] / 1000,
        "p90_ms": d["p90_us"] / 1000,
        "p99_ms": d["p99_us"] / 1000,
        "max_ms": d["max_us"] / 1000,
        "errors": errors,
        "error_detail": detail,
        "threads": threads,
    }


# ----------------------------------------------------- keep-alive hold ----


def paired_runs(a: tuple, b: tuple, pairs: int, conns: int, duration: int, label: str = "",
                also_cpu=None) -> dict:
    """The ratio a / b of two ways, each given as (name, server, path) or
    (name, server, path, keys) (keys: wrk asks ?k=1..keys), from
    `pairs` back-to-back pairs of wrk runs, alternating which goes first
    (ab, ba, ab, ...). On a shared machine the speed of the whole machine
    drifts between runs a few seconds apart (today's return-200 ceiling moved
    53k-76k between rounds); a pair sees the same machine, so the median of
    the pairs' ratios is what the comparison is worth. Also the ratio of
    nginx worker CPU per request (b's / a's: above 1 when a costs less).
    With `also_cpu` (a function giving another process's CPU seconds, such
    as redis-server's), each run's CPU per request adds that process's, and
    the CPU ratio is of the sums."""
    runs: dict = {a[0]: [], b[0]: []}
    for i in range(pairs):
        for name, srv, path, *keys in ((a, b) if i % 2 == 0 else (b, a)):
            c0 = srv.cpu_seconds()
            o0 = also_cpu() if also_cpu else 0.0
            r = run_wrk(srv.port, path, conns, duration, keys[0] if keys else None)
            n = r["requests"]
            r["nginx_cpu_us_per_req"] = round((srv.cpu_seconds() - c0) * 1e6 / n, 2) if n else None
            if also_cpu:
                r["other_cpu_us_per_req"] = round((also_cpu() - o0) * 1e6 / n, 2) if n else None
            runs[name].append(r)
            log(f"  {label}pair {i + 1}/{pairs} {name:8s} {r['rps']:10.0f} req/s  p99 {r['p99_ms']:.2f} ms  "
                f"nginx {r['nginx_cpu_us_per_req']} cpu-us/req"
                + (f" + {r['other_cpu_us_per_req']}" if also_cpu else "")
                + (f"  errors {r['errors']}" if r["errors"] else ""))
    ra, rb = runs[a[0]], runs[b[0]]
    ratios = [round(x["rps"] / y["rps"], 4) for x, y in zip(ra, rb) if y["rps"]]

    def cost(r):
        if r["nginx_cpu_us_per_req"] is None:
            return None
        return r["nginx_cpu_us_per_req"] + (r.get("other_cpu_us_per_req") or 0.0)

    cpu = [round(cost(y) / cost(x), 4) for x, y in zip(ra, rb) if cost(x) and cost(y)]
    return {
        "ways": [a[0], b[0]], "pairs": pairs, "connections": conns, "duration_s": duration,
        "ratio": round(median(ratios), 4) if ratios else None, "ratio_per_pair": ratios,
        "cpu_ratio": round(median(cpu), 4) if cpu else None, "cpu_ratio_per_pair": cpu,
        "rps": {name: round(median([r["rps"] for r in rs]), 1) for name, rs in runs.items()},
        "errors": sum(r["errors"] for rs in runs.values() for r in rs),
        "runs": runs,
    }


def median(xs):
    return statistics.median(xs) if xs else None


def rps_band(results: dict):
    """A way's results by connection count ({"64": {"rps", "runs"}}) as the
    plots draw them: connection counts, median req/s, and the min and max of
    the rounds."""
    cs = sorted(int(c) for c in results)
    med = [results[str(c)]["rps"] for c in cs]
    lo = [min(r["rps"] for r in results[str(c)]["runs"]) for c in cs]
    hi = [max(r["rps"] for r in results[str(c)]["runs"]) for c in cs]
    return cs, med, lo, hi


def percentile(xs, p: float):
    """The p-th percentile (nearest rank) of xs, or None."""
    if not xs:
        return None
    s = sorted(xs)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def latency_summary(ms: list[float]) -> dict:
    """p50 / p90 / p99 / max of latencies in milliseconds."""
    if not ms:
        return {"n": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    return {"n": len(ms), "p50_ms": round(percentile(ms, 50), 4), "p90_ms": round(percentile(ms, 90), 4),
            "p99_ms": round(percentile(ms, 99), 4), "max_ms": round(max(ms), 4),
            "mean_ms": round(sum(ms) / len(ms), 4)}


def proc_cpu_seconds(pid: int | None) -> float:
    """User + system CPU time a process (all its threads) has used so far."""
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def filesystem_of(path) -> dict:
    """The mount a path lives on: filesystem type, device and mount point."""
    path = os.path.realpath(path)
    best = ("", "?", "?")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, fstype = line.split()[:3]
            mnt = mnt.replace("\\040", " ")
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
                best = (mnt, fstype, dev)
    except OSError:
        pass
    return {"mount": best[0], "type": best[1], "device": best[2]}


def worker_owned_dir(path: Path) -> None:
    """A directory the nginx workers own (mode 0700): a state= directory.
    Running as root, nginx's workers run as nobody; the module refuses a
    directory every user can write unless it is sticky, so the directory is
    given to the worker user rather than opened to everyone."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        uid = pwd.getpwnam("nobody").pw_uid
        try:
            gid = grp.getgrnam("nogroup").gr_gid
        except KeyError:
            gid = pwd.getpwnam("nobody").pw_gid
        os.chown(path, uid, gid)
    os.chmod(path, 0o700)


def fsync_floor(directory: Path, n: int = 200) -> dict:
    """Append + fdatasync of 100 bytes, n times, in a file of our own in
    `directory`: what one durable write on that filesystem cannot go below."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"fsync-probe.{os.getpid()}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
    ms = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            os.write(fd, b"x" * 100)
            os.fdatasync(fd)
            ms.append((time.perf_counter() - t) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    return latency_summary(ms)


def pid_alive_as(pid: int, name: str) -> bool:
    """Whether pid is alive and its command line mentions `name` (a recorded
    pid is never signalled once something else took it over)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return alive(pid) and name.encode() in cmdline


# ------------------------------------------------------ paced client ----


async def paced_load(port: int, next_path, conns: int, rate: float, total: int | None = None,
                     stop: asyncio.Event | None = None, request_timeout: float = 10) -> dict:
    """`conns` keep-alive connections, together sending `rate` requests per
    second (each connection on its own schedule, one request at a time; a
    late one is sent at once), until `total` requests were sent or `stop` is
    set. next_path(n) gives the n-th request's path. Latency is from sending
    to the whole response."""
    loop = asyncio.get_running_loop()
    ms: list[float] = []
    errors: dict[str, int] = {}
    sent = [0]
    late = [0]
    interval = conns / rate
    t0 = loop.time() + 0.05

    def err(kind):
        errors[kind] = errors.get(kind, 0) + 1

    async def one(j):
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), request_timeout)
        except (OSError, asyncio.TimeoutError) as e:
            err(f"connect: {type(e).__name__}")
            return
        i = 0
        try:
            while not (stop and stop.is_set()) and (total is None or sent[0] < total):
                due = t0 + (j / conns + i) * interval
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -interval:
                    late[0] += 1
                if total is not None and sent[0] >= total:
                    break
                n = sent[0]
                sent[0] += 1
                i += 1
                req = f"GET {next_path(n)} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
                t = time.perf_counter()
                try:
                    writer.write(req)
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), request_timeout)
                    m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                    if m:
                        await asyncio.wait_for(reader.readexactly(int(m.group(1))), request_timeout)
                    status = int(head.split(b" ", 2)[1])
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
                    err(type(e).__name__)
                    return
                ms.append((time.perf_counter() - t) * 1000)
                if status != 200:
                    err(f"status {status}")
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(one(j) for j in range(conns)))
    secs = time.monotonic() - started
    return {**latency_summary(ms), "requests": len(ms), "seconds": round(secs, 2),
            "rate_achieved": round(len(ms) / secs, 1) if secs else None, "rate_asked": rate,
            "connections": conns, "late": late[0], "errors": sum(errors.values()), "error_detail": errors}


def fill_keys(port: int, n: int, conns: int, path: str = "/k", time_limit: float = 600) -> dict:
    """Keys 1..n (`path?k=1` ...), each asked once, as fast as `conns`
    connections go: every key exists afterwards (wrk's keyed script starts
    its cycle again at every run, so a run too short to go round would ask
    the same keys again and again)."""
    return asyncio.run(asyncio.wait_for(
        paced_load(port, lambda i: f"{path}?k={i + 1}", conns, 1e9, total=n), time_limit))

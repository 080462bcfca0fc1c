"""Cluster mode with Redis as the authority (issue 11), a part of scripts/bench.

A redis-server of our own (loopback, its own directory under the workdir,
`appendonly yes`, `appendfsync always`: the settings the README recommends),
started and stopped by its pid, and two nginx nodes of 2 workers:

  bundled nginx  local  ticket_counter on a local zone (the ratio's base)
                 strict ticket_zone rz:1m redis=redis://127.0.0.1:PORT
                 lease  ticket_zone rl:1m redis=... lease=1000
  Debian nginx   strict the same, with the module built for Debian's nginx
                 lua    lua-resty-redis INCR per request (libnginx-mod-http-lua,
                        lua-nginx-redis; scripts/bench-redis-incr.lua), keep-alive
                        pool of Redis connections

and, as a control, the bundled node's strict mode with `reserve=0` (every
batch's count written to the AOF, so every Redis turn waits for its
fdatasync) in back-to-back pairs with local: what the reserve saves.

loaded with wrk in interleaved rounds at 1..1024 connections, then the
req/s targets again from back-to-back pairs at 64 connections. For every run,
besides req/s and latency: the Redis commands per ticket (`INFO
commandstats` before and after: what the clients send, EVALSHA or INCR, and
what runs in Redis, including the commands the take script calls), the
take script's time per call as Redis measures it, the module's batches
(`ticket_status`: tickets per batch), and CPU per ticket: the nginx workers'
user + system time plus redis-server's (all its threads, /proc/PID/stat),
divided by the tickets answered.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import json
from pathlib import Path

from bench_common import (
    DEBIAN_LUA_MODULES, ROOT, START, Nginx, filesystem_of, fsync_floor, http_get, log, median, paired_runs,
    pid_alive_as, port_in_use, proc_cpu_seconds, raw_response, rps_band, run_wrk, stop_all,
)

REDIS_PORT = 18120
PORTS = {"bundled": 18110, "system": 18111}
LEASE = 1000
LUA_KEY = "bench:lua"
LUA_FILE = ROOT / "scripts" / "bench-redis-incr.lua"

# (group, way): label; the order of the tables
WAYS = [
    ("bundled", "local", "ticket_counter, local zone"),
    ("bundled", "strict", "redis= strict"),
    ("bundled", "lease", f"redis= lease={LEASE}"),
    ("system", "strict", "redis= strict"),
    ("system", "lua", "lua-resty-redis INCR per request"),
]
ZONES = {("bundled", "strict"): "rz", ("bundled", "lease"): "rl", ("system", "strict"): "rz"}
# what the clients send (the rest of commandstats - HMGET, GET, INCRBY, HSET,
# PEXPIRE - runs inside the module's scripts)
SENT = ("evalsha", "eval", "incr", "ping", "hello", "auth", "select", "script|load", "script",
        "role", "wait")
OURS = ("info", "config|resetstat", "config|get", "set", "config")  # the bench's own probes

TARGETS = {"strict_local": 0.6, "strict_lua": 2.0, "lease_local": 0.85}
# the req/s targets from back-to-back pairs (a full run, --quick)
TARGET_RUNS = {False: 8, True: 2}
TARGET_PAIRS = [
    ("strict/local", ("bundled", "strict"), ("bundled", "local")),
    ("strict/lua", ("system", "strict"), ("system", "lua")),
    ("lease/local", ("bundled", "lease"), ("bundled", "local")),
]


# ---------------------------------------------------------------- redis ----


class RedisServer:
    """A redis-server of our own: its own directory and port, started in its
    own session (a Ctrl-C of the terminal reaches us, not it), stopped by its
    pid. Its pid is also written to DIR/redis.pid for scripts/bench's cleanup."""

    def __init__(self, workdir: Path, port: int, name: str = "cluster-redis", data_dir: Path | None = None):
        # its config, log and pid file; the AOF in data_dir when given
        self.home = Path(workdir) / name
        self.dir = Path(data_dir) if data_dir else self.home
        self.port = port
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        if port_in_use(self.port):
            raise RuntimeError(f"port 127.0.0.1:{self.port} is already in use")
        self.home.mkdir(parents=True, exist_ok=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.home / "redis.conf"
        conf.write_text(f"""bind 127.0.0.1
port {self.port}
protected-mode yes
daemonize no
dir {self.dir}
logfile {self.home}/redis.log
appendonly yes
appendfsync always
save ""
maxclients 10000
""")
        self.proc = subprocess.Popen(["redis-server", str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        (self.home / "redis.pid").write_text(f"{self.proc.pid}\n")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited ({self.proc.returncode}); see {self.home}/redis.log")
            try:
                if self.command("PING") == "PONG":
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        if not self.proc:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None and pid_alive_as(proc.pid, "redis-server"):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        else:
            proc.poll()
        try:
            (self.home / "redis.pid").unlink()
        except OSError:
            pass

    def command(self, *args, timeout: float = 10):
        """One command on a connection of its own; the decoded reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            out = f"*{len(args)}\r\n".encode()
            for a in args:
                a = str(a).encode()
                out += b"$%d\r\n%s\r\n" % (len(a), a)
            s.sendall(out)
            f = s.makefile("rb")
            return _reply(f)

    def info(self, section: str) -> dict:
        text = self.command("INFO", section)
        d = {}
        for line in text.splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                d[k] = v
        return d

    def commandstats(self) -> dict:
        """{command: (calls, usec)}"""
        out = {}
        for k, v in self.info("commandstats").items():
            if k.startswith("cmdstat_"):
                f = dict(x.split("=", 1) for x in v.split(","))
                out[k[len("cmdstat_"):]] = (int(f["calls"]), int(f["usec"]))
        return out

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)


def _reply(f):
    line = f.readline()
    if not line:
        raise OSError("redis closed the connection")
    kind, rest = line[:1], line[1:-2].decode()
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RuntimeError(f"redis: {rest}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2].decode(errors="replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_reply(f) for _ in range(n)]
    raise RuntimeError(f"redis: unexpected reply {line!r}")


# ------------------------------------------------------------------ run ----


def nodes(ctx) -> dict:
    url = f"redis://127.0.0.1:{REDIS_PORT}"
    loc = f"start={START}"
    # the control: strict mode writing every batch (reserve=0)
    control = ([f"ticket_zone r0:1m redis={url} reserve=0;"],
               [("= /strict-every-batch", [f"ticket_counter zone=r0 {loc};"])])
    bundled = Nginx("cluster-bundled", ctx.bundled_bin, ctx.workdir, PORTS["bundled"], [ctx.bundled_mod],
                    ["ticket_zone c:1m;", f"ticket_zone rz:1m redis={url};",
                     f"ticket_zone rl:1m redis={url} lease={LEASE};", *control[0]],
                    [("= /local", [f"ticket_counter zone=c {loc};"]),
                     ("= /strict", [f"ticket_counter zone=rz {loc};"]),
                     ("= /lease", [f"ticket_counter zone=rl {loc};"]),
                     *control[1],
                     ("= /status", ["ticket_status;"])],
                    ctx.limits)
    lua_copy = ctx.workdir / "cluster-system" / "conf" / "bench-redis-incr.lua"
    system = Nginx("cluster-system", ctx.system_bin, ctx.workdir, PORTS["system"],
                   [*DEBIAN_LUA_MODULES, ctx.system_mod],
                   # a prefix of its own: Redis keys apart from the bundled node's
                   [f"ticket_zone rz:1m redis={url} redis_prefix=debian:;",
                    'lua_package_path "/usr/share/lua/5.1/?.lua;;";'],
                   [("= /strict", [f"ticket_counter zone=rz {loc};"]),
                    ("= /lua", [f"set $bench_redis_port {REDIS_PORT};", f"set $bench_redis_key {LUA_KEY};",
                                f"content_by_lua_file {lua_copy};"]),
                    ("= /status", ["ticket_status;"])],
                   ctx.limits)
    return {"bundled": bundled, "system": system, "lua_copy": lua_copy}


def module_counts(port: int, zone: str) -> tuple[int, int]:
    """(batches, tickets) the module reports for a Redis zone, over its workers."""
    r = json.loads(http_get(port, "/status")[2])["zones"][zone]["redis"]
    return r["batches"], r["tickets"]


def run(ctx) -> dict:
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
    redis = RedisServer(ctx.workdir, REDIS_PORT)
    n = nodes(ctx)
    servers = {"bundled": n["bundled"], "system": n["system"]}
    out: dict = {"redis": {"version": redis_version, "port": REDIS_PORT, "appendonly": "yes",
                           "appendfsync": "always", "filesystem": filesystem_of(ctx.workdir)},
                 "lease": LEASE, "nginx": {g: ctx.info["nginx"][g] for g in servers}}
    started = []
    try:
        redis.start()
        cfg = redis.command("CONFIG", "GET", "append*")
        out["redis"]["config"] = dict(zip(cfg[::2], cfg[1::2]))
        redis.command("SET", LUA_KEY, START - 1)
        # appendfsync always: Redis fdatasyncs its AOF in every event-loop
        # turn that wrote, before it answers; this is that call's floor here
        out["redis"]["fsync_floor"] = fsync_floor(redis.dir / "probe")
        log(f"redis-server {REDIS_PORT} (pid {redis.pid}): {redis_version.split(' sha')[0]}, "
            f"{out['redis']['config']}, dir on {out['redis']['filesystem']['type']}")
        n["lua_copy"].parent.mkdir(parents=True, exist_ok=True)
        n["lua_copy"].write_text(LUA_FILE.read_text())
        for g, srv in servers.items():
            srv.start()
            started.append(srv)
        log("started " + ", ".join(f"{s.name}:{s.port}" for s in started))

        ways = [(g, w) for g, w, _ in WAYS]
        responses = {}
        for g, w in ways:
            raw = raw_response(servers[g].port, f"/{w}")
            head, _, body = raw.partition(b"\r\n\r\n")
            status = head.split(b"\r\n", 1)[0].decode()
            if " 200 " not in status + " ":
                raise RuntimeError(f"cluster {g}/{w}: answered {status}: {body[:200]!r}")
            responses[f"{g}/{w}"] = {"bytes": len(raw), "body": body.decode(errors="replace"),
                                     "headers": sorted(l.split(b":", 1)[0].decode().lower()
                                                       for l in head.split(b"\r\n")[1:])}
        for k, v in responses.items():
            log(f"  {k:16s} {v['bytes']} bytes, body {v['body']!r}, headers {', '.join(v['headers'])}")

        log("cluster warm-up")
        for g, w in ways:
            run_wrk(servers[g].port, f"/{w}", 64, ctx.warmup_s)

        runs = {(g, w): {c: [] for c in ctx.conns_list} for g, w in ways}
        total = ctx.rounds * len(ctx.conns_list) * len(ways)
        k = 0
        for rnd in range(ctx.rounds):
            for c in ctx.conns_list:
                shift = (rnd * len(ctx.conns_list) + ctx.conns_list.index(c)) % len(ways)
                for g, w in ways[shift:] + ways[:shift]:
                    srv = servers[g]
                    zone = ZONES.get((g, w))
                    n0 = srv.cpu_seconds()
                    r0 = redis.cpu_seconds()
                    s0 = redis.commandstats()
                    m0 = module_counts(srv.port, zone) if zone else None
                    res = run_wrk(srv.port, f"/{w}", c, ctx.duration)
                    m1 = module_counts(srv.port, zone) if zone else None
                    s1 = redis.commandstats()
                    r1 = redis.cpu_seconds()
                    n1 = srv.cpu_seconds()
                    t = res["requests"]
                    calls = {cmd: (s1[cmd][0] - s0.get(cmd, (0, 0))[0], s1[cmd][1] - s0.get(cmd, (0, 0))[1])
                             for cmd in s1 if cmd not in OURS}
                    calls = {cmd: v for cmd, v in calls.items() if v[0] > 0}
                    res["redis_calls"] = {cmd: v[0] for cmd, v in calls.items()}
                    res["redis_usec"] = {cmd: v[1] for cmd, v in calls.items()}
                    sent = sum(v[0] for cmd, v in calls.items() if cmd in SENT)
                    run_all = sum(v[0] for v in calls.values())
                    res["commands_sent_per_ticket"] = round(sent / t, 4) if t else None
                    res["commands_run_per_ticket"] = round(run_all / t, 4) if t else None
                    ev = calls.get("evalsha")
                    res["script_us_per_call"] = round(ev[1] / ev[0], 1) if ev else None
                    res["nginx_cpu_us_per_ticket"] = round((n1 - n0) * 1e6 / t, 2) if t else None
                    res["redis_cpu_us_per_ticket"] = round((r1 - r0) * 1e6 / t, 2) if t else None
                    res["cpu_us_per_ticket"] = round(((n1 - n0) + (r1 - r0)) * 1e6 / t, 2) if t else None
                    if m0 and m1:
                        batches, tickets = m1[0] - m0[0], m1[1] - m0[1]
                        res["module_batches"] = batches
                        res["module_tickets"] = tickets
                        res["tickets_per_batch"] = round(tickets / batches, 2) if batches else None
                        res["batches_per_s"] = round(batches / res["seconds"], 1) if res["seconds"] else None
                    res["round"] = rnd + 1
                    runs[(g, w)][c].append(res)
                    k += 1
                    log(f"  [{k}/{total}] round {rnd + 1} c={c:<5d} {g:7s} {w:7s} {res['rps']:10.0f} req/s  "
                        f"p50 {res['p50_ms']:.3f} ms  p99 {res['p99_ms']:.3f} ms  "
                        f"cpu/ticket nginx {res['nginx_cpu_us_per_ticket']} + redis {res['redis_cpu_us_per_ticket']} us  "
                        f"cmds/ticket {res['commands_sent_per_ticket']}"
                        + (f"  tickets/batch {res.get('tickets_per_batch')}" if zone else "")
                        + (f"  script {res['script_us_per_call']} us/call" if res["script_us_per_call"] else "")
                        + (f"  errors {res['errors']} {res['error_detail']}" if res["errors"] else ""))

        # the req/s targets again from back-to-back pairs at 64 connections:
        # two ways differ by less than the machine drifts between runs far
        # apart in a round (bench_common.paired_runs)
        pc = 64 if 64 in ctx.conns_list else ctx.conns_list[-1]
        out["pairs"] = {}
        for name, (ga, wa), (gb, wb) in TARGET_PAIRS:
            log(f"cluster {name}: {TARGET_RUNS[ctx.quick]} pairs at {pc} connections")
            # CPU: nginx's and Redis's, as in the rounds
            pr = paired_runs((f"{ga}/{wa}", servers[ga], f"/{wa}"), (f"{gb}/{wb}", servers[gb], f"/{wb}"),
                             TARGET_RUNS[ctx.quick], pc, ctx.duration, also_cpu=redis.cpu_seconds)
            out["pairs"][name] = pr
            log(f"  {name}: {pr['ratio']} (pairs {pr['ratio_per_pair']}); by nginx + Redis CPU per "
                f"request {pr['cpu_ratio']} (pairs {pr['cpu_ratio_per_pair']})")
        out["control"] = run_control(ctx, servers["bundled"], pc)

        ways_out = {}
        for g, w, label in WAYS:
            per_c = {}
            for c in ctx.conns_list:
                rs = runs[(g, w)][c]
                base = median([r["rps"] for r in runs[("bundled", "local")][c]])
                lua = median([r["rps"] for r in runs[("system", "lua")][c]])
                med = median([r["rps"] for r in rs])

                def m(key):
                    vals = [r[key] for r in rs if r.get(key) is not None]
                    return round(median(vals), 4) if vals else None

                per_c[str(c)] = {
                    "rps": round(med, 1), "p50_ms": m("p50_ms"), "p99_ms": m("p99_ms"),
                    "errors": sum(r["errors"] for r in rs),
                    "ratio_to_local": round(med / base, 4) if base else None,
                    "ratio_to_lua": round(med / lua, 4) if lua else None,
                    "nginx_cpu_us_per_ticket": m("nginx_cpu_us_per_ticket"),
                    "redis_cpu_us_per_ticket": m("redis_cpu_us_per_ticket"),
                    "cpu_us_per_ticket": m("cpu_us_per_ticket"),
                    "commands_sent_per_ticket": m("commands_sent_per_ticket"),
                    "commands_run_per_ticket": m("commands_run_per_ticket"),
                    "script_us_per_call": m("script_us_per_call"),
                    "tickets_per_batch": m("tickets_per_batch"),
                    "batches_per_s": m("batches_per_s"),
                    "runs": rs,
                }
            ways_out[f"{g}/{w}"] = {"group": g, "way": w, "label": label, "nginx": ctx.info["nginx"][g],
                                    "port": servers[g].port, "request": f"/{w}",
                                    "response": responses[f"{g}/{w}"], "results": per_c}
        out["ways"] = ways_out
        out["redis"]["info_end"] = {k: v for k, v in redis.info("server").items()
                                    if k in ("redis_version", "process_id", "run_id")}
        out["redis"]["aof_end"] = {k: v for k, v in redis.info("persistence").items()
                                   if k in ("aof_enabled", "aof_last_write_status", "aof_delayed_fsync")}
        # the module's own view of the whole run
        out["status_end"] = {}
        for (g, w), zone in ZONES.items():
            page = json.loads(http_get(servers[g].port, "/status")[2])["zones"]
            out["status_end"][f"{g}/{w}"] = page[zone].get("redis")
    finally:
        stop_all(started)
        redis.stop()
    out["error_log_lines"] = {s.name: [l.replace(str(ctx.workdir), "$TMP") for l in s.errors_logged()][-20:]
                              for s in servers.values() if s.errors_logged()}
    return out


def run_control(ctx, bundled: Nginx, conns: int) -> dict | None:
    """strict mode with reserve=0 / local, in back-to-back pairs."""
    log(f"cluster control: strict with reserve=0 / local, {TARGET_RUNS[ctx.quick]} pairs at {conns} "
        "connections")
    status = raw_response(bundled.port, "/strict-every-batch").split(b"\r\n", 1)[0].decode(errors="replace")
    if " 200 " not in status + " ":
        log(f"  cluster control skipped: /strict-every-batch answered {status!r}")
        return None
    m0 = module_counts(bundled.port, "r0")
    pr = paired_runs(("bundled/strict-every-batch", bundled, "/strict-every-batch"),
                     ("bundled/local", bundled, "/local"), TARGET_RUNS[ctx.quick], conns, ctx.duration)
    m1 = module_counts(bundled.port, "r0")
    batches, tickets = m1[0] - m0[0], m1[1] - m0[1]
    log(f"  strict-every-batch/local: {pr['ratio']} (pairs {pr['ratio_per_pair']}), "
        f"{tickets / batches if batches else 0:.1f} tickets per batch")
    return {"pairs": pr, "tickets_per_batch": round(tickets / batches, 2) if batches else None}


# -------------------------------------------------------------- targets ----


def targets(cl: dict) -> list[dict]:
    ways = cl.get("ways")
    if not ways:
        return []
    c = "64" if "64" in ways["bundled/local"]["results"] else None
    if c is None:
        return []
    r = {k: w["results"][c] for k, w in ways.items()}
    out = []

    def add(name, ratio, goal, detail):
        out.append({"target": name, "ratio": ratio, "goal": goal,
                    "met": ratio is not None and ratio >= goal, "detail": detail})

    def cost(a, b):
        x, y = r[a]["cpu_us_per_ticket"], r[b]["cpu_us_per_ticket"]
        return (round(x / y, 4) if x and y else None), x, y

    st, le, sst, lua = r["bundled/strict"], r["bundled/lease"], r["system/strict"], r["system/lua"]
    bn, sn = cl["nginx"]["bundled"], cl["nginx"]["system"]
    pairs = cl.get("pairs") or {}

    def paired(name, rounds_ratio):
        """The pairs' median if they ran (the rounds' ratio goes into the
        detail), else the rounds' ratio."""
        pr = pairs.get(name)
        if not pr or not pr["ratio_per_pair"]:
            return rounds_ratio, ""
        return pr["ratio"], (f"median of {pr['pairs']} back-to-back pairs (min {min(pr['ratio_per_pair']):.2f}, "
                             f"max {max(pr['ratio_per_pair']):.2f}); the interleaved rounds: "
                             + ("–" if rounds_ratio is None else f"{rounds_ratio:.2f}") + "; ")

    ratio, pd = paired("strict/local", st["ratio_to_local"])
    add("Redis strict / local ticket_counter", ratio, TARGETS["strict_local"],
        f"bundled nginx {bn}, {c} connections, req/s; {pd}{st['tickets_per_batch']} tickets per batch, "
        f"take script {st['script_us_per_call']} µs per call")
    ratio, pd = paired("strict/lua", sst["ratio_to_lua"])
    add("Redis strict / lua-resty-redis INCR", ratio, TARGETS["strict_lua"],
        f"Debian nginx {sn} for both, {c} connections, req/s; {pd}bundled nginx's strict / lua in the rounds: "
        + ("–" if st["ratio_to_lua"] is None else f"{st['ratio_to_lua']:.2f}"))
    def paired_cpu(name, rounds_ratio):
        """The pairs' median CPU ratio if they ran (nginx + Redis, b's cost /
        a's), else the rounds' ratio."""
        pr = pairs.get(name)
        per = (pr or {}).get("cpu_ratio_per_pair") or []
        if not per or not any("other_cpu_us_per_req" in r for rs in pr["runs"].values() for r in rs):
            return rounds_ratio, ""
        return pr["cpu_ratio"], (f"median of {pr['pairs']} back-to-back pairs (min {min(per):.2f}, "
                                 f"max {max(per):.2f}); the interleaved rounds: "
                                 + ("–" if rounds_ratio is None else f"{rounds_ratio:.2f}") + ", where ")

    ratio, x, y = cost("bundled/local", "bundled/strict")
    ratio, pd = paired_cpu("strict/local", ratio)
    add("Redis strict / local, by nginx + Redis CPU per ticket", ratio, TARGETS["strict_local"],
        f"{pd}local costs {x} µs, strict {y} µs (nginx {st['nginx_cpu_us_per_ticket']} + "
        f"Redis {st['redis_cpu_us_per_ticket']}); ratio = local's cost / strict's")
    ratio, x, y = cost("system/lua", "system/strict")
    ratio, pd = paired_cpu("strict/lua", ratio)
    add("Redis strict / lua-resty-redis, by nginx + Redis CPU per ticket", ratio, TARGETS["strict_lua"],
        f"{pd}lua costs {x} µs (nginx {lua['nginx_cpu_us_per_ticket']} + Redis {lua['redis_cpu_us_per_ticket']}), "
        f"strict {y} µs (nginx {sst['nginx_cpu_us_per_ticket']} + Redis {sst['redis_cpu_us_per_ticket']}); "
        f"Debian nginx; ratio = lua's cost / strict's")
    cratio, x, y = cost("bundled/local", "bundled/lease")
    ratio, pd = paired("lease/local", le["ratio_to_local"])
    add(f"Redis lease={LEASE} / local ticket_counter", ratio, TARGETS["lease_local"],
        f"bundled nginx {bn}, {c} connections, req/s; {pd}by nginx + Redis CPU per ticket: "
        + ("–" if cratio is None else f"{cratio:.2f} ({x} / {y} µs)"))
    return out


def summary_lines(cl: dict) -> list[str]:
    ways = cl.get("ways") or {}
    if not ways:
        return []
    cs = list(next(iter(ways.values()))["results"])
    lines = [f"cluster (Redis {cl['redis']['version'].split()[2] if len(cl['redis']['version'].split()) > 2 else ''}"
             f" appendfsync always, AOF on {cl['redis']['filesystem']['type']}):",
             f"{'way':46s} " + " ".join(f"{'c=' + c:>18s}" for c in cs)]
    for key, w in ways.items():
        cells = []
        for c in cs:
            r = w["results"][c]
            cells.append(f"{r['rps'] / 1000:7.1f}k {r['ratio_to_local']:.2f}x" + ("!" if r["errors"] else " "))
        lines.append(f"{w['group'] + ' ' + w['label']:46s} " + " ".join(f"{x:>18s}" for x in cells))
    if "64" in cs:
        for key, w in ways.items():
            r = w["results"]["64"]
            lines.append(f"  c=64 {key:16s} cpu/ticket {r['cpu_us_per_ticket']} us (nginx {r['nginx_cpu_us_per_ticket']}"
                         f" + redis {r['redis_cpu_us_per_ticket']}), commands sent/run per ticket "
                         f"{r['commands_sent_per_ticket']}/{r['commands_run_per_ticket']}, tickets/batch "
                         f"{r['tickets_per_batch']}, script {r['script_us_per_call']} us/call")
    return lines


def plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    cl = res["cluster"]
    fig, ax = plt.subplots(figsize=(8, 5.2))
    styles = {"bundled/local": ("tab:blue", "-", "s"), "bundled/strict": ("tab:orange", "-", "o"),
              "bundled/lease": ("tab:green", "-", "^"), "system/strict": ("tab:orange", ":", "o"),
              "system/lua": ("tab:red", "-", "v")}
    for key, w in cl["ways"].items():
        cs, med, lo, hi = rps_band(w["results"])
        color, ls, marker = styles.get(key, (None, "-", "o"))
        name = ("bundled " if w["group"] == "bundled" else "Debian ") + w["nginx"] + ": " + w["label"]
        ax.plot(cs, med, ls, color=color, marker=marker, label=name)
        ax.fill_between(cs, lo, hi, color=color, alpha=0.12, linewidth=0)
    cs_all = sorted({int(c) for w in cl["ways"].values() for c in w["results"]})
    ax.set_xscale("log")
    ax.set_xticks(cs_all)
    ax.set_xticklabels([str(c) for c in cs_all])
    ax.minorticks_off()
    ax.set_xlabel("concurrent connections (wrk, keep-alive)")
    ax.set_ylabel("requests/s (median of rounds; band: min-max)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:.0f}k"))
    o, m = res["options"], res["meta"]
    ax.set_title(f"one nginx node + local Redis (appendfsync always): {m['nproc']} cores, {o['workers']} workers, "
                 f"{o['rounds']} x {o['duration_s']:g}s, {m['date'][:10]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

#!/usr/bin/env python3
"""Load benchmark of the ticket module; run through scripts/bench.

Three parts (--only picks some), written together to
bench/results/results.json with throughput.png and cluster.png:

  throughput  here: one nginx per way of answering the same location, each
              in its own prefix under --workdir on 127.0.0.1:18080-18099,
              loaded with wrk in interleaved rounds; then each ratio target
              again from back-to-back pairs at 64 connections; many
              keep-alive connections held on ticket_counter; memory per key
  durable     bench_durable.py: a state= zone of 100,000 keys, on a tmpfs
              (--shmdir) and on disk
  cluster     bench_cluster.py: one nginx node and a redis-server of our own

Throughput: two groups, each on one nginx binary, ratios computed within a group:
  bundled  build/sbin/nginx + build/modules/...so:
           ceiling (return 200), counter, keyed (100k keys), state (if
           supported), and ceiling driven by the same wrk Lua client as keyed
  system   /usr/sbin/nginx (Debian) + build/system/...so:
           ceiling, counter, lua (lua_shared_dict + incr)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import http.client
import json
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_cluster  # noqa: E402
import bench_durable  # noqa: E402
from bench_common import (  # noqa: E402
    DEBIAN_LUA_MODULES, ROOT, START, Nginx, fill_keys, http_get, log, median, paired_runs, raw_response, rps_band,
    run_wrk,
    stop_all, version_of,
)

CEILING_BODY = f"{START}\\n"  # as written in nginx.conf: return 200 "10000000\n"
KEYS = 100_000
# The ratio targets at 64 connections, each from back-to-back pairs of runs
# (a full run, --quick): name, (group, way) over (group, way)
TARGET_RUNS = {False: 8, True: 2}
TARGET_PAIRS = [
    ("counter/ceiling", ("bundled", "counter"), ("bundled", "ceiling")),
    ("counter/lua", ("system", "counter"), ("system", "lua")),
    ("keyed/ceiling", ("bundled", "keyed"), ("bundled", "ceiling")),
    ("state/counter", ("bundled", "state"), ("bundled", "counter")),
]
KEYED_ZONE = "32m"

PORTS = {
    ("bundled", "ceiling"): 18080,
    ("bundled", "counter"): 18081,
    ("bundled", "keyed"): 18082,
    ("bundled", "state"): 18083,
    ("bundled", "memory"): 18084,
    ("system", "ceiling"): 18090,
    ("system", "counter"): 18091,
    ("system", "lua"): 18092,
}

LABELS = {
    "ceiling": "return 200 (ceiling)",
    "ceiling_keys": "return 200, ?k= client (ceiling for keyed)",
    "counter": "ticket_counter",
    "keyed": f"ticket_counter key=$arg_k ({KEYS // 1000}k keys)",
    "state": "ticket_counter, zone with state=",
    "lua": "lua_shared_dict incr",
}


# ----------------------------------------------------- keep-alive hold ----


async def hold_connections(port: int, path: str, n: int, requests_each: int, pause: float,
                           time_limit: float) -> dict:
    """Opens n keep-alive connections, takes one ticket on each, then with all of
    them open at once takes requests_each-1 more on every one, in waves `pause`
    seconds apart (all n requests of a wave in flight together)."""
    errors: dict[str, int] = {}
    tickets: list[int] = []
    streams: list = []
    peak = {"server_established": None}

    def err(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()

    async def one_request(reader, writer) -> bool:
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            body = await reader.readexactly(int(m.group(1))) if m else b""
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as e:
            err(type(e).__name__)
            return False
        if status != 200 or not body.strip().isdigit():
            err(f"status {status}")
            return False
        tickets.append(int(body))
        return True

    connect_gate = asyncio.Semaphore(256)

    async def open_one():
        try:
            async with connect_gate:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as e:
            err(f"connect: {e.strerror or type(e).__name__}")
            return
        if await one_request(reader, writer):
            streams.append((reader, writer))
        else:
            writer.close()

    t0 = time.monotonic()
    await asyncio.gather(*(open_one() for _ in range(n)))
    t_open = time.monotonic() - t0
    # all connections are open now: count them on the server side too
    peak["server_established"] = count_established(port)
    t1 = time.monotonic()
    for _ in range(requests_each - 1):
        await asyncio.sleep(pause)
        ok = await asyncio.gather(*(one_request(r, w) for r, w in streams))
        streams[:] = [s for s, good in zip(streams, ok) if good]
    t_requests = time.monotonic() - t1
    still_open = len(streams)
    for _, w in streams:
        w.close()
    await asyncio.gather(*(w.wait_closed() for _, w in streams), return_exceptions=True)
    return {
        "connections": n,
        "requests_per_connection": requests_each,
        "open_at_once": still_open,
        "server_established_at_peak": peak["server_established"],
        "tickets": len(tickets),
        "distinct_tickets": len(set(tickets)),
        "first_ticket": min(tickets) if tickets else None,
        "last_ticket": max(tickets) if tickets else None,
        "errors": sum(errors.values()),
        "error_detail": errors,
        "open_seconds": round(t_open, 2),
        "held_seconds": round(t_requests, 2),
        "time_limit_s": time_limit,
    }


def count_established(port: int) -> int | None:
    """Established TCP connections whose local port is `port` (server side)."""
    try:
        r = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
                           capture_output=True, text=True, timeout=30)
        return len([l for l in r.stdout.splitlines() if l.strip()])
    except (OSError, subprocess.SubprocessError):
        return None


def run_hold(port: int, path: str, n: int, requests_each: int, pause: float, time_limit: float) -> dict:
    try:
        return asyncio.run(asyncio.wait_for(
            hold_connections(port, path, n, requests_each, pause, time_limit), timeout=time_limit))
    except asyncio.TimeoutError:
        return {"connections": n, "errors": 1, "error_detail": {"timed out": time_limit},
                "tickets": None, "time_limit_s": time_limit}


# ------------------------------------------------------------- main -------


def machine_info() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    except (OSError, AttributeError):
        mem_kb = None
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src", "Cargo.toml",
                            "Cargo.lock", "build.rs"], capture_output=True, text=True).stdout.strip()
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 1048576, 1) if mem_kb else None,
        "kernel": platform.release(),
        "os": platform.freedesktop_os_release().get("PRETTY_NAME") if hasattr(platform, "freedesktop_os_release") else "",
        "python": platform.python_version(),
        "wrk": (wrk_v.stdout + wrk_v.stderr).split("\n")[0].strip(),
        "git": git + ("+dirty src" if dirty else ""),
        "loadavg_start": os.getloadavg()[0],
    }


class Context:
    """What every part of the run shares: options, binaries, limits, where to work."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


PARTS = ("throughput", "durable", "cluster")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=3, help="seconds per run (whole seconds: wrk's unit)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default=",".join(PARTS),
                    help="comma-separated parts to run: " + ", ".join(PARTS) + " (default: all)")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--shmdir", help="an empty directory on a tmpfs for the durable part (scripts/bench makes one)")
    ap.add_argument("--out", help="results folder (default bench/results, bench/results/quick with --quick, "
                                  "bench/results/partial with --only)")
    args = ap.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    if not parts or any(p not in PARTS for p in parts):
        ap.error(f"--only takes some of {', '.join(PARTS)}")

    conns_list = [1, 16, 64, 256, 1024]
    hold_n = 10_000
    hold_waves, hold_pause = 5, 1.0  # ~4 s with all connections open
    warmup_s = 2
    if args.quick:
        args.rounds, args.duration = 1, 1
        conns_list = [16, 64]
        hold_n = 1_000
        hold_waves, hold_pause = 3, 0.5
        warmup_s = 1
    if args.workers < 1 or args.rounds < 1 or args.duration <= 0:
        ap.error("--workers, --rounds and --duration must be positive")

    # Every process we start inherits our limits: raise the soft fd limit to the hard one.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    want = min(want, 1 << 20)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    worker_connections = max(1024, min(hold_n + 6000, nofile - 512))
    limits = {
        "workers": args.workers,
        "nofile": nofile,
        "worker_connections": worker_connections,
        "keepalive_requests": 1_000_000,
    }
    if worker_connections < hold_n + 100 or nofile < hold_n + 512:
        log(f"warning: fd limit {nofile} is low for {hold_n} held connections")

    bundled_bin = ROOT / "build" / "sbin" / "nginx"
    bundled_mod = ROOT / "build" / "modules" / "ngx_http_ticket_module.so"
    system_bin = Path("/usr/sbin/nginx")
    system_mod = ROOT / "build" / "system" / "ngx_http_ticket_module.so"
    for f in (bundled_bin, bundled_mod, system_bin, system_mod, *map(Path, DEBIAN_LUA_MODULES)):
        if not f.exists():
            log(f"missing {f}")
            return 2

    workdir = Path(args.workdir)
    # a smoke run (or a partial one) never replaces the results of a full one
    sub = "quick" if args.quick else ("partial" if set(parts) != set(PARTS) else "")
    out = Path(args.out or ROOT / "bench" / "results" / sub)
    out.mkdir(parents=True, exist_ok=True)

    info = machine_info()
    info["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    info["nginx"] = {"bundled": version_of(bundled_bin), "system": version_of(system_bin)}
    ctx = Context(args=args, quick=args.quick, rounds=args.rounds, duration=args.duration,
                  conns_list=conns_list, warmup_s=warmup_s, hold_n=hold_n, hold_waves=hold_waves,
                  hold_pause=hold_pause, limits=limits, workdir=workdir,
                  shmdir=Path(args.shmdir) if args.shmdir else None, info=info,
                  bundled_bin=bundled_bin, bundled_mod=bundled_mod,
                  system_bin=system_bin, system_mod=system_mod)

    results: dict = {"meta": info, "parts": parts}
    if "throughput" in parts:
        run_throughput(ctx, results)
    if "durable" in parts:
        results["durable"] = bench_durable.run(ctx)
    if "cluster" in parts:
        results["cluster"] = bench_cluster.run(ctx)

    info["loadavg_end"] = os.getloadavg()[0]
    results["options"] = {
        "workers": args.workers, "rounds": args.rounds, "duration_s": args.duration,
        "connections": conns_list, "wrk_threads": "min(2, connections)", "quick": args.quick,
        "hold_connections": hold_n, "start": START, "keys": KEYS,
        "worker_connections": worker_connections, "worker_rlimit_nofile": nofile,
        "keepalive_requests": limits["keepalive_requests"],
        "statistic": "median over rounds (req/s, p50, p99); errors summed over rounds; "
                     "ratio = median req/s / median req/s of the group's ceiling",
    }
    results["targets"] = targets(results)

    (out / "results.json.tmp").write_text(json.dumps(results, indent=1) + "\n")
    os.replace(out / "results.json.tmp", out / "results.json")
    written = [out / "results.json"]
    if "groups" in results:
        plot(results, out / "throughput.png")
        written.append(out / "throughput.png")
    if "cluster" in results and results["cluster"].get("ways"):
        bench_cluster.plot(results, out / "cluster.png")
        written.append(out / "cluster.png")
    log("wrote " + ", ".join(str(w) for w in written))
    print_summary(results)
    return 0


def run_throughput(ctx: Context, results: dict) -> None:
    """The first part: one location answered several ways, at 1..1024
    connections; 10,000 held connections; memory per key."""
    args, conns_list, warmup_s = ctx.args, ctx.conns_list, ctx.warmup_s
    hold_n, hold_waves, hold_pause = ctx.hold_n, ctx.hold_waves, ctx.hold_pause
    limits, workdir, info = ctx.limits, ctx.workdir, ctx.info
    worker_connections = limits["worker_connections"]
    bundled_bin, bundled_mod = ctx.bundled_bin, ctx.bundled_mod
    system_bin, system_mod = ctx.system_bin, ctx.system_mod

    ticket = f"ticket_counter zone=%s start={START};"
    ceiling_loc = ["add_header Cache-Control no-store;", f'return 200 "{CEILING_BODY}";']
    # The module answers Content-Type: text/plain (default_type above) and
    # Cache-Control: no-store, so the ceiling and Lua add the same header.
    servers: dict[tuple[str, str], Nginx] = {}

    def add(group, way, binary, modules, http_extra, locations):
        servers[(group, way)] = Nginx(f"{group}-{way}", binary, workdir, PORTS[(group, way)],
                                      modules, http_extra, locations, limits)

    for group, binary, mod in (("bundled", bundled_bin, bundled_mod), ("system", system_bin, system_mod)):
        add(group, "ceiling", binary, [], [], [("= /t", ceiling_loc)])
        add(group, "counter", binary, [mod], ["ticket_zone c:1m;", "ticket_zone hold:1m;"],
            [("= /t", [ticket % "c"]), ("= /hold", ["ticket_counter zone=hold;"]),
             ("= /status", ["ticket_status;"])])
    add("bundled", "keyed", bundled_bin, [bundled_mod], [f"ticket_zone k:{KEYED_ZONE};"],
        [("= /t", [f"ticket_counter zone=k key=$arg_k start={START};"]),
         ("= /status", ["ticket_status zone=k;"])])
    add("bundled", "memory", bundled_bin, [bundled_mod], ["ticket_zone m:1m;"],
        [("= /k", ["ticket_counter zone=m key=$arg_k;"]), ("= /status", ["ticket_status zone=m;"])])
    state_file = workdir / "bundled-state" / "state" / "tickets.state"
    add("bundled", "state", bundled_bin, [bundled_mod],
        [f"ticket_zone s:1m state={state_file} reserve=10000;"],
        [("= /t", [ticket % "s"]), ("= /status", ["ticket_status zone=s;"])])
    add("system", "lua", system_bin, DEBIAN_LUA_MODULES, ["lua_shared_dict tickets 1m;"],
        [("= /t", ["add_header Cache-Control no-store;",
                   "content_by_lua_block {",
                   f"    local s = ngx.shared.tickets:incr(\"n\", 1, {START - 1}) .. \"\\n\"",
                   "    ngx.header[\"Content-Length\"] = #s",
                   "    ngx.print(s)",
                   "}"])])

    # Is state= implemented? nginx -t decides.
    ok, out_t = servers[("bundled", "state")].test()
    emerg = [l for l in out_t.splitlines() if "[emerg]" in l] or out_t.splitlines()[-1:] or [""]
    msg = re.sub(r"^nginx: \[emerg\] (.*?)( in \S+:\d+)?$", r"\1", emerg[0])
    state_info = {"available": ok, "nginx_t": msg.replace(str(workdir), "$TMP"),
                  "directive": "ticket_zone s:1m state=$TMP/bundled-state/state/tickets.state reserve=10000;"}
    if not ok:
        log(f"state= zones: not available ({state_info['nginx_t']})")
        del servers[("bundled", "state")]
    else:
        log("state= zones: available")

    started: list[Nginx] = []
    results["state"] = state_info
    try:
        for key, srv in servers.items():
            srv.start()
            started.append(srv)
        log("started " + ", ".join(f"{s.name}:{s.port}" for s in started))

        # ------------------------------------------------ ways & checks --
        ways = {
            "bundled": ["ceiling", "ceiling_keys", "counter", "keyed"]
            + (["state"] if ("bundled", "state") in servers else []),
            "system": ["ceiling", "counter", "lua"],
        }

        def target(group, way):
            srv = servers[(group, "ceiling" if way == "ceiling_keys" else way)]
            keys = KEYS if way in ("keyed", "ceiling_keys") else None
            return srv.port, "/t", keys

        responses = {}
        for group, wl in ways.items():
            for way in wl:
                port, path, keys = target(group, way)
                p = path + ("?k=1" if keys else "")
                raw = raw_response(port, p)
                head, _, body = raw.partition(b"\r\n\r\n")
                status_line = head.split(b"\r\n", 1)[0].decode()
                if " 200 " not in status_line + " ":
                    raise RuntimeError(f"{group}/{way}: {p} answered {status_line}")
                headers = sorted(l.split(b":", 1)[0].decode().lower() for l in head.split(b"\r\n")[1:])
                responses[f"{group}/{way}"] = {"bytes": len(raw), "body": body.decode(errors="replace"),
                                               "headers": headers}
        for k, v in responses.items():
            log(f"  {k:22s} {v['bytes']} bytes, body {v['body']!r}, headers {', '.join(v['headers'])}")

        # ---------------------------------------------------- warm-up ----
        log("warm-up")
        for group, wl in ways.items():
            for way in wl:
                port, path, keys = target(group, way)
                run_wrk(port, path, 64, warmup_s, keys)
        # keyed: create all 100k keys first (each asked once), so the runs
        # measure steady state
        keyed_port = servers[("bundled", "keyed")].port
        fill = fill_keys(keyed_port, KEYS, 64, "/t")
        st = json.loads(http_get(keyed_port, "/status")[2])["zones"]["k"]
        log(f"  keyed zone: {st['keys']} keys of capacity {st['capacity']} "
            f"(made in {fill['seconds']:.1f} s, {fill['errors']} errors)")
        keyed_zone_info = {k: st[k] for k in ("size", "capacity", "keys")}

        # ----------------------------------------------- measurements ----
        runs: dict = {g: {w: {c: [] for c in conns_list} for w in wl} for g, wl in ways.items()}
        order = [(g, w) for g, wl in ways.items() for w in wl]
        total = args.rounds * len(conns_list) * len(order)
        n = 0
        t_start = time.monotonic()
        for rnd in range(args.rounds):
            for c in conns_list:
                # rotate the order each round and each connection count, and
                # reverse it every other round, so that no way always follows
                # the same one (on a shared machine a run can depend on the
                # one before it)
                shift = (rnd * len(conns_list) + conns_list.index(c)) % len(order)
                this_round = order if rnd % 2 == 0 else order[::-1]
                for group, way in this_round[shift:] + this_round[:shift]:
                    port, path, keys = target(group, way)
                    srv = servers[(group, "ceiling" if way == "ceiling_keys" else way)]
                    cpu0 = srv.cpu_seconds()
                    res = run_wrk(port, path, c, args.duration, keys)
                    cpu = srv.cpu_seconds() - cpu0
                    # nginx workers' CPU per answered request: the server's own cost,
                    # which wrk's share of the 2 cores does not blur
                    res["nginx_cpu_us_per_req"] = round(cpu * 1e6 / res["requests"], 2) if res["requests"] else None
                    res["round"] = rnd + 1
                    runs[group][way][c].append(res)
                    n += 1
                    log(f"  [{n}/{total}] round {rnd + 1} c={c:<5d} {group:7s} {way:13s} "
                        f"{res['rps']:10.0f} req/s  p50 {res['p50_ms']:.3f} ms  p99 {res['p99_ms']:.3f} ms"
                        f"  nginx {res['nginx_cpu_us_per_req']} cpu-us/req"
                        + (f"  errors {res['errors']} {res['error_detail']}" if res["errors"] else ""))
        log(f"measured in {time.monotonic() - t_start:.0f}s")

        # The targets: each ratio again from back-to-back pairs at 64
        # connections. Two ways differ by less than the machine drifts
        # between runs far apart in a round; a pair sees the same machine.
        pc = 64 if 64 in conns_list else conns_list[-1]
        results["pairs"] = {}
        for name, (ga, wa), (gb, wb) in TARGET_PAIRS:
            if wa not in ways[ga] or wb not in ways[gb]:
                continue
            log(f"{name}: {TARGET_RUNS[args.quick]} pairs at {pc} connections")
            pa, pb = target(ga, wa), target(gb, wb)
            pr = paired_runs((wa, servers[(ga, wa)], pa[1], pa[2]), (wb, servers[(gb, wb)], pb[1], pb[2]),
                             TARGET_RUNS[args.quick], pc, args.duration)
            results["pairs"][name] = pr
            log(f"  {name}: {pr['ratio']} (pairs {pr['ratio_per_pair']}); by nginx CPU per request "
                f"{pr['cpu_ratio']}")

        groups_out = {}
        for group, wl in ways.items():
            binary = bundled_bin if group == "bundled" else system_bin
            g = {"nginx": info["nginx"][group], "binary": str(binary),
                 "module": str(bundled_mod if group == "bundled" else system_mod), "ways": {}}
            for way in wl:
                port, path, keys = target(group, way)
                per_c = {}
                for c in conns_list:
                    rs = runs[group][way][c]
                    ceil = runs[group]["ceiling"][c]
                    med = median([r["rps"] for r in rs])
                    cmed = median([r["rps"] for r in ceil])
                    per_c[str(c)] = {
                        "rps": round(med, 1),
                        "p50_ms": round(median([r["p50_ms"] for r in rs]), 4),
                        "p99_ms": round(median([r["p99_ms"] for r in rs]), 4),
                        "errors": sum(r["errors"] for r in rs),
                        "nginx_cpu_us_per_req": median([r["nginx_cpu_us_per_req"] for r in rs
                                                        if r["nginx_cpu_us_per_req"] is not None]),
                        "ratio": round(med / cmed, 4) if cmed else None,
                        "ratio_per_round": [round(r["rps"] / q["rps"], 4) if q["rps"] else None
                                            for r, q in zip(rs, ceil)],
                        "runs": rs,
                    }
                    if way == "keyed":
                        kc = median([r["rps"] for r in runs[group]["ceiling_keys"][c]])
                        per_c[str(c)]["ratio_same_client"] = round(med / kc, 4) if kc else None
                    if way == "state":
                        pc = median([r["rps"] for r in runs[group]["counter"][c]])
                        per_c[str(c)]["ratio_to_counter"] = round(med / pc, 4) if pc else None
                g["ways"][way] = {
                    "label": LABELS[way],
                    "port": port,
                    "request": path + ("?k=1..%d" % keys if keys else ""),
                    "response": responses[f"{group}/{way}"],
                    "results": per_c,
                }
            groups_out[group] = g
        results["groups"] = groups_out
        results["keyed_zone"] = keyed_zone_info

        # counters issued, as the zones report them (sanity: no ticket lost/duplicated is tested in t/)
        for group in ("bundled",):
            st = json.loads(http_get(servers[(group, "counter")].port, "/status")[2])["zones"]["c"]
            results["counter_zone_after"] = st["counters"][0]

        # ------------------------------------------- keep-alive hold -----
        hold_port = servers[("bundled", "counter")].port
        log(f"holding {hold_n} keep-alive connections on ticket_counter (:{hold_port}/hold)")
        hold = run_hold(hold_port, "/hold", hold_n, hold_waves, hold_pause, time_limit=180)
        st = json.loads(http_get(hold_port, "/status")[2])["zones"]["hold"]
        hold["zone_issued"] = st["counters"][0]["issued"]  # the zone's own count: equals tickets
        hold["nginx"] = info["nginx"]["bundled"]
        hold["worker_connections"] = worker_connections
        results["hold"] = hold
        log(f"  {hold}")

        # ------------------------------------------------------ memory ---
        mport = servers[("bundled", "memory")].port
        st = json.loads(http_get(mport, "/status")[2])["zones"]["m"]
        cap = st["capacity"]
        stored, refused = 0, None
        conn = http.client.HTTPConnection("127.0.0.1", mport, timeout=30)
        try:
            for k in range(1, 3 * cap + 2):
                conn.request("GET", f"/k?k=key{k}")
                resp = conn.getresponse()
                resp.read()
                if resp.status == 200:
                    stored += 1
                else:
                    refused = resp.status
                    break
        finally:
            conn.close()
        st2 = json.loads(http_get(mport, "/status")[2])["zones"]["m"]
        results["memory"] = {
            "zone_size": st["size"],
            "capacity": cap,
            "bytes_per_key": round(st["size"] / cap, 1) if cap else None,
            "keys_in_1m_zone": cap,
            "filled": stored,
            "refused_with": refused,
            "keys_after_fill": st2["keys"],
            "keyed_zone": {"size_spec": KEYED_ZONE, **keyed_zone_info},
        }
        log(f"  memory: {results['memory']}")

        # ------------------------------------------------- error logs ----
        # (the memory fill ends on purpose with "ticket zone "m" is full")
        logged = {s.name: [l for l in s.errors_logged()
                           if not (s.name == "bundled-memory" and 'ticket zone "m" is full' in l)]
                  for s in started}
        results["error_log_lines"] = {k: v[-20:] for k, v in logged.items() if v}

    finally:
        stop_all(started)



def targets(res: dict) -> list[dict]:
    """The project's speed targets as measured in this run: ratios at 64
    connections (entries without "kind"), and latencies that must stay below
    a bound (kind "max", with value and unit). `met` is None where a number is
    only reported (the durable zone on disk)."""
    out = throughput_targets(res) if "groups" in res else []
    if "durable" in res:
        out += bench_durable.targets(res["durable"])
    if "cluster" in res:
        out += bench_cluster.targets(res["cluster"])
    return out


def throughput_targets(res: dict) -> list[dict]:
    """Ratios at 64 connections. Each detail also gives the same comparison in
    nginx worker CPU per request (cost of the other way / cost of this one),
    which wrk's share of the cores does not blur."""
    c = "64" if "64" in next(iter(res["groups"]["bundled"]["ways"].values()))["results"] else None
    b = res["groups"]["bundled"]["ways"]
    s = res["groups"]["system"]["ways"]
    out = []

    def add(name, value, goal, detail):
        out.append({"target": name, "ratio": value, "goal": goal,
                    "met": (value is not None and value >= goal), "detail": detail})

    if c is None:
        return out

    def cpu(other, this):
        a, b_ = other["results"][c]["nginx_cpu_us_per_req"], this["results"][c]["nginx_cpu_us_per_req"]
        return f"by nginx CPU per request: {a / b_:.2f} ({a:.2f} / {b_:.2f} µs)" \
            if a and b_ else "nginx CPU per request: n/a"

    pairs = res.get("pairs") or {}

    def paired(name, rounds_ratio, rounds_cpu):
        """The target's ratio: the pairs' median if they ran (the rounds'
        ratio goes into the detail), else the rounds'."""
        pr = pairs.get(name)
        if not pr or not pr["ratio_per_pair"]:
            return rounds_ratio, rounds_cpu
        return pr["ratio"], (
            f"median of {pr['pairs']} back-to-back pairs (min {min(pr['ratio_per_pair']):.2f}, "
            f"max {max(pr['ratio_per_pair']):.2f}), by nginx CPU per request {pr['cpu_ratio']:.2f}; "
            f"the interleaved rounds: " + ("–" if rounds_ratio is None else f"{rounds_ratio:.2f}")
            + f", {rounds_cpu}")

    ratio, detail = paired("counter/ceiling", b["counter"]["results"][c]["ratio"], cpu(b["ceiling"], b["counter"]))
    add("ticket_counter / return-200 ceiling", ratio, 0.95,
        f"bundled nginx {res['groups']['bundled']['nginx']}, {c} connections; " + detail)
    lua = s["lua"]["results"][c]["rps"]
    ratio, detail = paired("counter/lua", round(s["counter"]["results"][c]["rps"] / lua, 4) if lua else None,
                           cpu(s["lua"], s["counter"]))
    add("ticket_counter / lua_shared_dict incr", ratio, 1.2,
        f"Debian nginx {res['groups']['system']['nginx']}, {c} connections; " + detail
        + (f"; return-200 ceiling / lua in the rounds: {s['ceiling']['results'][c]['rps'] / lua:.2f} (return 200 "
           "does no work: the most a handler can expect, noise aside)" if lua else ""))
    k = b["keyed"]["results"][c]
    ratio, detail = paired("keyed/ceiling", k["ratio"], cpu(b["ceiling"], b["keyed"]))
    add(f"keyed ({KEYS // 1000}k keys) / return-200 ceiling", ratio, 0.8,
        f"bundled nginx, {c} connections; " + detail + "; against the ceiling driven by the same "
        f"?k= wrk client in the rounds: {k.get('ratio_same_client'):.2f}")
    if "state" in b:
        more = ""
        for label, fs in (res.get("durable") or {}).get("filesystems", {}).items():
            if fs.get("available") and fs["load"]["ratio"] is not None:
                more += (f"; with {bench_durable.KEYS // 1000}k keys in the zone (state directory on {label}): "
                         f"{fs['load']['ratio']:.2f}")
        ratio, detail = paired("state/counter", b["state"]["results"][c]["ratio_to_counter"],
                               cpu(b["counter"], b["state"]))
        add("state= zone / plain zone", ratio, 0.9, f"bundled nginx, {c} connections; " + detail + more)
    else:
        out.append({"target": "state= zone / plain zone", "ratio": None, "goal": 0.9, "met": None,
                    "detail": "nginx -t: " + res["state"]["nginx_t"]})
    return out


def plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    groups = res["groups"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), sharey=True)
    styles = {
        "ceiling": ("black", "-", "o"), "ceiling_keys": ("gray", ":", "o"),
        "counter": ("tab:blue", "-", "s"), "keyed": ("tab:green", "-", "^"),
        "state": ("tab:purple", "-", "D"), "lua": ("tab:red", "-", "v"),
    }
    for ax, (gname, title) in zip(axes, (("bundled", "bundled nginx"), ("system", "Debian nginx"))):
        g = groups[gname]
        for way, w in g["ways"].items():
            cs, med, lo, hi = rps_band(w["results"])
            color, ls, marker = styles.get(way, (None, "-", "o"))
            ax.plot(cs, med, ls, color=color, marker=marker, label=w["label"])
            ax.fill_between(cs, lo, hi, color=color, alpha=0.12, linewidth=0)
        ax.set_xscale("log")
        cs_all = sorted({int(c) for w in g["ways"].values() for c in w["results"]})
        ax.set_xticks(cs_all)
        ax.set_xticklabels([str(c) for c in cs_all])
        ax.minorticks_off()
        ax.set_xlabel("concurrent connections (wrk, keep-alive)")
        ax.set_title(f"{title} {g['nginx']}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:.0f}k"))
    axes[0].set_ylabel("requests/s (median of rounds; band: min-max)")
    o, m = res["options"], res["meta"]
    fig.suptitle(f"ngx-ticket throughput: {m['nproc']} cores ({m['cpu']}), {o['workers']} workers, "
                 f"{o['rounds']} rounds x {o['duration_s']:g}s, wrk on the same machine, {m['date'][:10]}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_summary(res: dict) -> None:
    print()
    print("== ngx-ticket benchmark summary ==")
    m, o = res["meta"], res["options"]
    print(f"{m['nproc']} cores, {m['cpu']}; nginx {m['nginx']['bundled']} (bundled) / "
          f"{m['nginx']['system']} (Debian); {o['workers']} workers; {o['rounds']} rounds x "
          f"{o['duration_s']:g}s; load average {m['loadavg_start']:.2f} -> {m['loadavg_end']:.2f}")
    if "groups" in res:
        print_throughput(res)
    if "durable" in res:
        print("\n".join(bench_durable.summary_lines(res["durable"])))
    if "cluster" in res:
        print("\n".join(bench_cluster.summary_lines(res["cluster"])))
    print("targets (ratios and latencies from this run):")
    for t in res["targets"]:
        verdict = "n/a" if t["met"] is None else ("met" if t["met"] else "NOT met")
        if t.get("kind") == "max":
            value = "-" if t["value"] is None else f"{t['value']:.2f} {t['unit']}"
            goal = f"<= {t['goal']:g} {t['unit']}"
        else:
            value = "-" if t["ratio"] is None else f"{t['ratio']:.3f}"
            goal = f">= {t['goal']}"
        print(f"  {t['target']:42s} {value:>9s} (goal {goal})  {verdict}   [{t['detail']}]")
    logged = dict(res.get("error_log_lines") or {})
    for label, fs in (res.get("durable") or {}).get("filesystems", {}).items():
        if fs.get("error_log_lines"):
            logged[f"durable-{label}"] = fs["error_log_lines"]
    logged.update((res.get("cluster") or {}).get("error_log_lines") or {})
    if logged:
        print("error-log lines at warn or above:")
        for name, lines in logged.items():
            for line in lines[-5:]:
                print(f"  {name}: {line}")


def print_throughput(res: dict) -> None:
    for gname, g in res["groups"].items():
        print(f"-- {gname} nginx {g['nginx']} --")
        cs = list(next(iter(g["ways"].values()))["results"])
        print(f"{'way':44s} " + " ".join(f"{'c=' + c:>16s}" for c in cs))
        for way, w in g["ways"].items():
            cells = []
            for c in cs:
                r = w["results"][c]
                cells.append(f"{r['rps'] / 1000:7.1f}k {r['ratio']:.2f}x" + ("!" if r["errors"] else " "))
            print(f"{w['label']:44s} " + " ".join(f"{x:>16s}" for x in cells))
        if "64" in cs:
            print("  nginx worker CPU per request at c=64: " + ", ".join(
                f"{way} {w['results']['64']['nginx_cpu_us_per_req']:.1f} us" for way, w in g["ways"].items()
                if w["results"]["64"]["nginx_cpu_us_per_req"] is not None))
    errs = sum(r["errors"] for g in res["groups"].values() for w in g["ways"].values()
               for r in w["results"].values())
    print(f"wrk errors (non-2xx + socket), all runs: {errs}")
    h = res["hold"]
    print(f"{h['connections']} keep-alive connections held: errors {h['errors']}, tickets {h['tickets']}, "
          f"open at once {h.get('open_at_once')} (server side {h.get('server_established_at_peak')})")
    mem = res["memory"]
    print(f"memory: {mem['bytes_per_key']} bytes of shared memory per key; "
          f"a 1 MB zone holds {mem['keys_in_1m_zone']} keys (filled {mem['filled']})")


if __name__ == "__main__":
    def _stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _stop)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        sys.exit(130)

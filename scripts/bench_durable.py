"""Durable zone with 100,000 keys (issue 10), a part of scripts/bench.

One nginx per filesystem (the state directory on a tmpfs, then on disk), each
with three zones:

  d    32m, state=, 100,000 keys filled through `key=$arg_k` (the zone measured)
  one  1m, state=, a single key: the same measurements without the 100k keys
  e    32m, state=, a single key: a zone as large as d, but empty (a write
       walks the zone's table: this separates its size from its keys)
  p    1m, no state: the plain zone the ratio is taken against

and these measurements:

  fill         keys 1..100,000, each asked once over 64 connections
  fsync floor  append + fdatasync of a 100-byte frame, 200 times, on the same
               filesystem: what one write cannot go below
  extension    a sequential client asks `count=10000` (= reserve) of one key, so
               every request finds its reservation used up and waits for one
               state-file write: lock, catch up with the log, plan over the
               zone's counters, append, fdatasync, install, wake. Its latency,
               less one plain request's, is what an extension takes, seen from
               outside. The state log's frames (one per append) confirm one
               write per request. Also on zones `one` and `e`.
  load         wrk at 64 connections on zone d's default counter (single
               tickets, an extension every reserve/2 = 5,000 of them, in the
               background) against the plain zone, in back-to-back pairs: the
               state= / plain ratio with 100k keys in the log (the median of
               the pairs'), and the writes counted
  new keys     a few thousand keys never seen before, 32 connections paced at
               1,000 new keys/s, while 16 connections ask existing keys at
               4,000 req/s: every first request waits for an append + fdatasync
               (requests arriving together share one); p50/p99 of those first
               requests and of the existing keys meanwhile, keys per append
  restart      a clean stop (gives back what was reserved) and a start
               (restores 100k counters, reserves, rewrites the log), timed; the
               next ticket of a key continues without a gap

The state log is read here too (its format: src/core/state/format.rs): one
frame per append, so frames = writes and records per frame = counters per
write; a compaction replaces the file (a new inode), watched every 2 ms.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import random
import shutil
import struct
import threading
import time
import zlib
from pathlib import Path

from bench_common import (
    START, Nginx, filesystem_of, fill_keys, fsync_floor, http_get, latency_summary, log, median, paced_load,
    paired_runs, run_wrk, stop_all, worker_owned_dir,
)

KEYS = 100_000
ZONE = "32m"
RESERVE = 10_000  # the module's default reserve=
PORTS = {"tmpfs": 18100, "disk": 18101}

EXT_TARGET_MS = 50.0
NEW_KEY_TARGET_MS = 20.0
RATIO_TARGET = 0.9

# new-keys phase: (new keys, their rate, their connections), background (rate, connections)
# (32 connections: each asks every 32 ms, so a first request of up to 32 ms
# keeps the pace)
NEW_KEYS = {"full": (3000, 1000, 32), "quick": (500, 1000, 32)}
BACKGROUND = (4000, 16)
EXT_REQUESTS = {"full": 500, "quick": 100}
LOAD_PAIRS = {"full": 6, "quick": 2}  # pairs of state= and plain runs under load

# ------------------------------------------------------------ state log ----

MAGIC = b"NGXTKST2"
HEADER_LEN = 20


def read_frames(path: Path, offset: int = HEADER_LEN) -> tuple[list[list[dict]], int]:
    """The complete frames of a version-2 state log from `offset` (a frame
    boundary): a list of frames, each a list of records; and the offset after
    the last complete frame. A torn or unfinished frame at the end is left out."""
    try:
        data = path.read_bytes()
    except OSError:
        return [], offset
    if data[:8] != MAGIC:
        return [], offset
    frames, pos = [], max(offset, HEADER_LEN)
    while pos + 8 <= len(data):
        length, crc = struct.unpack_from("<II", data, pos)
        payload = data[pos + 8: pos + 8 + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            break
        records, i = [], 0
        while i + 2 <= len(payload):
            tag, klen = payload[i], payload[i + 1]
            key = payload[i + 2: i + 2 + klen] if klen else None
            i += 2 + klen
            if tag == 1:  # mark: instance, start, mark, used
                instance, start, mark, used = struct.unpack_from("<QQQQ", payload, i)
                i += 32
                records.append({"kind": "mark", "key": key, "mark": mark})
            elif tag == 2:  # retire: instance
                i += 8
                records.append({"kind": "retire", "key": key})
            else:
                break
        frames.append(records)
        pos += 8 + length
    return frames, pos


class StateWatch:
    """Watches one state file during a phase: compactions (a new inode) and,
    when there was none, the frames appended meanwhile."""

    def __init__(self, path: Path):
        self.path = path
        self.compactions = 0
        self._stop = threading.Event()
        self._thread = None

    def _ident(self):
        try:
            st = self.path.stat()
            return st.st_ino, st.st_size
        except OSError:
            return None, 0

    def __enter__(self):
        self.ino, self.size0 = self._ident()
        _, self.offset = read_frames(self.path)  # the end of the complete frames now
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        last = self.ino
        while not self._stop.wait(0.002):
            ino, _ = self._ident()
            if ino is not None and ino != last:
                self.compactions += 1
                last = ino

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        ino, size = self._ident()
        if ino != self.ino:
            self.compactions = max(self.compactions, 1)
        self.frames = None if self.compactions else read_frames(self.path, self.offset)[0]
        self.size1 = size
        return False

    def summary(self, key_filter=None) -> dict:
        """Writes (frames) and records; with `key_filter`, only frames holding
        a record it accepts count."""
        if self.frames is None:
            return {"compactions": self.compactions, "writes": None, "records": None}
        frames = self.frames if key_filter is None else \
            [f for f in self.frames if any(key_filter(r) for r in f)]
        records = sum(len(f) for f in frames)
        return {"compactions": 0, "writes": len(frames), "records": records,
                "records_per_write": round(records / len(frames), 2) if frames else None,
                "bytes_appended": self.size1 - self.size0}


# --------------------------------------------------------------- clients ----


def sequential(port: int, path: str, n: int, warmup: int = 5) -> tuple[dict, dict]:
    """n requests one after another on one keep-alive connection: latency
    summary (ms) and error counts."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    ms, errors = [], {}
    try:
        for i in range(warmup + n):
            t = time.perf_counter()
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            dt = (time.perf_counter() - t) * 1000
            if resp.status != 200:
                errors[str(resp.status)] = errors.get(str(resp.status), 0) + 1
            elif i >= warmup:
                ms.append(dt)
    finally:
        conn.close()
    return latency_summary(ms), errors


async def _new_keys(port: int, tag: str, n_new: int, rate: float, conns: int) -> tuple[dict, dict]:
    stop = asyncio.Event()
    bg_rate, bg_conns = BACKGROUND
    background = asyncio.create_task(paced_load(
        port, lambda n: f"/k?k={random.randint(1, KEYS)}", bg_conns, bg_rate, stop=stop))
    await asyncio.sleep(0.5)  # the background load runs before the first new key
    try:
        fresh = await paced_load(port, lambda n: f"/k?k=new-{tag}-{n}", conns, rate, total=n_new)
    finally:
        stop.set()
    return fresh, await background


def new_keys(port: int, tag: str, n_new: int, rate: float, conns: int) -> tuple[dict, dict]:
    limit = n_new / rate * 4 + 60
    return asyncio.run(asyncio.wait_for(_new_keys(port, tag, n_new, rate, conns), limit))


# ------------------------------------------------------------------ run ----


def zone_status(port: int, zone: str, timeout: float = 60) -> dict:
    return json.loads(http_get(port, "/status", timeout)[2])["zones"][zone]


def run(ctx) -> dict:
    mode = "quick" if ctx.quick else "full"
    out = {"keys": KEYS, "zone_size": ZONE, "reserve": RESERVE, "extension_count": RESERVE,
           "new_keys": dict(zip(("keys", "rate", "connections"), NEW_KEYS[mode])),
           "background": dict(zip(("rate", "connections"), BACKGROUND)),
           "extension_requests": EXT_REQUESTS[mode], "filesystems": {}}
    roots = []
    if ctx.shmdir:
        roots.append(("tmpfs", Path(ctx.shmdir) / "state", str(Path(ctx.shmdir).parent)))
    else:
        log("durable: no tmpfs directory given (--shmdir): tmpfs skipped")
    roots.append(("disk", ctx.workdir / "durable-disk-state", str(ctx.workdir.parent)))
    for label, root, under in roots:
        out["filesystems"][label] = run_one(ctx, label, root, mode, under)
    return out


def run_one(ctx, label: str, root: Path, mode: str, under: str) -> dict:
    fs = filesystem_of(root.parent)
    log(f"durable zone, {KEYS:,} keys, state directory on {label}: {root} "
        f"({fs['type']} {fs['device']} at {fs['mount']})")
    for sub in ("d", "one", "e"):
        worker_owned_dir(root / sub)
    d_file, one_file, e_file = root / "d" / "d.state", root / "one" / "one.state", root / "e" / "e.state"
    srv = Nginx(f"durable-{label}", ctx.bundled_bin, ctx.workdir, PORTS[label], [ctx.bundled_mod],
                [f"ticket_zone d:{ZONE} state={d_file} reserve={RESERVE};",
                 f"ticket_zone one:1m state={one_file} reserve={RESERVE};",
                 f"ticket_zone e:{ZONE} state={e_file} reserve={RESERVE};",
                 "ticket_zone p:1m;"],
                [("= /k", [f"ticket_counter zone=d key=$arg_k start={START};"]),
                 ("= /t", [f"ticket_counter zone=d start={START};"]),
                 ("= /x", [f"ticket_counter zone=d key=ext batch={RESERVE} start={START};"]),
                 ("= /x1", [f"ticket_counter zone=one key=ext batch={RESERVE} start={START};"]),
                 ("= /xe", [f"ticket_counter zone=e key=ext batch={RESERVE} start={START};"]),
                 ("= /p", [f"ticket_counter zone=p start={START};"]),
                 ("= /status", ["ticket_status zone=d;"])],
                ctx.limits)
    res: dict = {"state_dir": str(root).replace(str(ctx.workdir), "$TMP"), "filesystem": fs,
                 "under": under}
    ok, out_t = srv.test()
    if not ok:
        res["available"] = False
        res["nginx_t"] = out_t.replace(str(ctx.workdir), "$TMP")
        log(f"  nginx -t failed: {out_t}")
        return res
    res["available"] = True
    port = srv.port
    try:
        srv.start()

        # ---------------------------------------------------------- fill ---
        # Each key asked once, over 64 connections: every request is a new
        # key's first and waits for its append (wrk would start its key cycle
        # again at every run and ask the keys already made).
        with StateWatch(d_file) as w:
            fill = fill_keys(port, KEYS, 64)
        st = zone_status(port, "d")
        res["fill"] = {**{k: fill[k] for k in ("requests", "seconds", "rate_achieved", "p50_ms", "p99_ms",
                                               "max_ms", "errors", "error_detail")},
                       "connections": 64, "keys": st["keys"], "capacity": st["capacity"],
                       "state_log": w.summary(), "state_file_bytes": d_file.stat().st_size}
        log(f"  filled: {st['keys']:,} keys in {fill['seconds']:.1f} s ({fill['rate_achieved']:,.0f} new keys/s, "
            f"p50 {fill['p50_ms']:.2f} ms, p99 {fill['p99_ms']:.2f} ms, errors {fill['errors']}); "
            f"state file {d_file.stat().st_size:,} bytes; {w.summary()}")
        if st["keys"] < KEYS:
            log(f"  warning: only {st['keys']:,} keys in the zone")

        res["fsync_floor"] = fsync_floor(root / "probe")
        shutil.rmtree(root / "probe", ignore_errors=True)
        log(f"  append + fdatasync of 100 bytes: p50 {res['fsync_floor']['p50_ms']:.3f} ms, "
            f"p99 {res['fsync_floor']['p99_ms']:.3f} ms")

        # ----------------------------------------------------- extension ---
        n = EXT_REQUESTS[mode]
        plain, _ = sequential(port, "/p", n)
        ext = {"plain_request": plain}
        for name, path, file in (("one_key", "/x1", one_file), ("one_key_32m", "/xe", e_file),
                                 ("keys_100k", "/x", d_file)):
            with StateWatch(file) as w:
                lat, errors = sequential(port, f"{path}?count={RESERVE}", n)
            ext[name] = {**lat, "errors": errors, **w.summary()}
            # writes per waiting request: one each, if every request waited
            if ext[name]["writes"] is not None:
                ext[name]["writes_per_request"] = round(ext[name]["writes"] / (n + 5), 2)
            log(f"  extension ({name}): p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms, "
                f"max {lat['max_ms']:.2f} ms; {w.summary()}"
                + (f"; errors {errors}" if errors else ""))
        res["extension"] = ext

        # ---------------------------------------------------------- load ---
        # in back-to-back pairs: the two differ by less than the machine
        # drifts between rounds (bench_common.paired_runs)
        with StateWatch(d_file) as w:
            paired = paired_runs(("state", srv, "/t"), ("plain", srv, "/p"), LOAD_PAIRS[mode], 64,
                                 ctx.duration, label="load ")
        load = {}
        for way, rs in paired["runs"].items():
            load[way] = {"rps": round(median([r["rps"] for r in rs]), 1),
                         "p50_ms": median([r["p50_ms"] for r in rs]), "p99_ms": median([r["p99_ms"] for r in rs]),
                         "max_ms": max(r["max_ms"] for r in rs), "errors": sum(r["errors"] for r in rs),
                         "requests": sum(r["requests"] for r in rs),
                         "nginx_cpu_us_per_req": median([r["nginx_cpu_us_per_req"] for r in rs
                                                         if r["nginx_cpu_us_per_req"] is not None]),
                         "runs": rs}
        load["ratio"] = paired["ratio"]
        load["ratio_per_pair"] = paired["ratio_per_pair"]
        load["cpu_ratio"] = paired["cpu_ratio"]
        load["extensions"] = w.summary(key_filter=lambda r: r["key"] is None)
        load["extensions_expected"] = load["state"]["requests"] // (RESERVE // 2)
        load["connections"] = 64
        res["load"] = load
        log(f"  state= (100k keys) / plain at 64 connections: {load['ratio']}; "
            f"extensions written {load['extensions']['writes']} (about {load['extensions_expected']} expected)")

        # ------------------------------------------------------ new keys ---
        n_new, rate, conns = NEW_KEYS[mode]
        with StateWatch(d_file) as w:
            fresh, background = new_keys(port, f"{label}{os.getpid()}", n_new, rate, conns)
        res["new_keys"] = {"first_request": fresh, "existing_keys": background,
                           "state_log": w.summary(key_filter=lambda r: (r["key"] or b"").startswith(b"new-"))}
        log(f"  new keys: {fresh['requests']} first requests at {fresh['rate_achieved']}/s: "
            f"p50 {fresh['p50_ms']} ms, p99 {fresh['p99_ms']} ms, max {fresh['max_ms']} ms, "
            f"errors {fresh['errors']}; existing keys meanwhile ({background['rate_achieved']}/s) "
            f"p50 {background['p50_ms']} ms, p99 {background['p99_ms']} ms; state log: {w.summary()}")

        # ------------------------------------------------------- restart ---
        before = int(http_get(port, "/k?k=1")[2])
        t = time.monotonic()
        clean = srv.stop(timeout=120)
        stop_s = time.monotonic() - t
        t = time.monotonic()
        ok, out_t = srv.test()
        test_s = time.monotonic() - t
        t = time.monotonic()
        srv.launch(timeout=120)
        start_s = time.monotonic() - t
        after = int(http_get(port, "/k?k=1")[2])
        st = zone_status(port, "d")
        res["restart"] = {"stop_s": round(stop_s, 3), "stopped_by_itself": clean, "nginx_t_s": round(test_s, 3),
                          "start_s": round(start_s, 3), "keys_after": st["keys"],
                          "ticket_before": before, "ticket_after": after, "no_gap": after == before + 1,
                          "state_file_bytes": d_file.stat().st_size}
        log(f"  restart: stop {stop_s:.2f} s, nginx -t {test_s:.2f} s, start {start_s:.2f} s; "
            f"key 1: {before} then {after}; {st['keys']:,} keys")
    finally:
        stop_all([srv], timeout=120)
    res["error_log_lines"] = [l.replace(str(ctx.workdir), "$TMP") for l in srv.errors_logged()][-20:]
    return res


# -------------------------------------------------------------- targets ----


def targets(d: dict) -> list[dict]:
    out = []
    for label in ("tmpfs", "disk"):
        fs = d["filesystems"].get(label)
        if not fs or not fs.get("available"):
            continue
        where = f"state directory on {label} ({fs['filesystem']['type']})"
        ext = fs["extension"]["keys_100k"]
        goal = label == "tmpfs"
        out.append({
            "target": f"durable zone, {KEYS // 1000}k keys: an extension, p99 ({label})",
            "kind": "max", "value": ext["p99_ms"], "unit": "ms", "goal": EXT_TARGET_MS,
            "met": (ext["p99_ms"] <= EXT_TARGET_MS) if goal else None,
            "detail": f"{where}; a request that waits for one state-file write, "
                      f"{ext['n']} in a row: p50 {ext['p50_ms']:.2f} ms, max {ext['max_ms']:.2f} ms; "
                      f"a plain request takes {fs['extension']['plain_request']['p50_ms']:.2f} ms; "
                      f"a 1-key zone of 1m: p99 {fs['extension']['one_key']['p99_ms']:.2f} ms, of {ZONE}: "
                      f"{fs['extension']['one_key_32m']['p99_ms']:.2f} ms; "
                      f"append + fdatasync alone p50 {fs['fsync_floor']['p50_ms']:.2f} ms"
                      + ("" if goal else " (reported, the goal is for tmpfs)")})
        nk = fs["new_keys"]["first_request"]
        out.append({
            "target": f"durable zone, {KEYS // 1000}k keys: a new key's first request, p99 ({label})",
            "kind": "max", "value": nk["p99_ms"], "unit": "ms", "goal": NEW_KEY_TARGET_MS,
            "met": (nk["p99_ms"] <= NEW_KEY_TARGET_MS and not nk["errors"]) if goal else None,
            "detail": f"{where}; {nk['requests']:,} new keys at {nk['rate_achieved']:,.0f}/s over "
                      f"{nk['connections']} connections beside {fs['new_keys']['existing_keys']['rate_achieved']:,.0f} "
                      f"req/s on existing keys: p50 {nk['p50_ms']:.2f} ms, max {nk['max_ms']:.2f} ms, "
                      f"{nk['errors']} errors"
                      + ("" if goal else " (reported, the goal is for tmpfs)")})
    return out


def summary_lines(d: dict) -> list[str]:
    lines = [f"durable zone, {KEYS:,} keys ({ZONE}, reserve={RESERVE}):"]
    for label, fs in d["filesystems"].items():
        if not fs.get("available"):
            lines.append(f"  {label}: not available ({fs.get('nginx_t')})")
            continue
        e, nk, ld = fs["extension"], fs["new_keys"], fs["load"]
        lines.append(
            f"  {label} ({fs['filesystem']['type']}): fill {fs['fill']['seconds']} s "
            f"({fs['fill']['rate_achieved']:,.0f} keys/s); "
            f"extension p50/p99/max {e['keys_100k']['p50_ms']:.2f}/{e['keys_100k']['p99_ms']:.2f}/"
            f"{e['keys_100k']['max_ms']:.2f} ms (1 key, {ZONE}: {e['one_key_32m']['p50_ms']:.2f}/"
            f"{e['one_key_32m']['p99_ms']:.2f} ms, 1m: {e['one_key']['p50_ms']:.2f}/{e['one_key']['p99_ms']:.2f} ms; "
            f"fdatasync {fs['fsync_floor']['p50_ms']:.2f} ms); new key p50/p99 "
            f"{nk['first_request']['p50_ms']:.2f}/{nk['first_request']['p99_ms']:.2f} ms; "
            f"state=/plain at 64 conns {ld['ratio']}; restart stop {fs['restart']['stop_s']} s "
            f"start {fs['restart']['start_s']} s")
    return lines

"""The HTTP service under load, side by side with a bare Starlette floor in the same server.

``python -m bench.http [--quick] [--backend sqlite|postgres] [--seconds S] [--workers N]
[--rounds R] [--only all|mixed|reads]``

Needs ``wrk`` (``apt-get install wrk``): a C load generator on epoll, one thread, 64
keep-alive connections -- it takes a fraction of a core, so the server is not starved
the way a Python load generator on the same 2 cores would starve it. The server is
uvicorn in a child process, the same for both sides, with ``--workers`` processes (default
one). With several, the kernel hands wrk's 64 connections to the processes unevenly: in
some rounds nearly all went to one process, halving that side's req/s (ours or the
floor's, at random: 304s at 17,353 / 8,942 / 8,479 req/s in three rounds of the same
code), so the ratios are taken with one process; ``--workers 2`` (one per CPU, as a
deployment here would run) gives the absolute rate, and the CPU per request stays
comparable:

1. **mixed**: 64 clients, 95 % reads spread over ``raw``, ``tree``, a ``log`` page and
   ``commits/{rev}``, 5 % commits (``POST .../commits``, one new file each): p50/p99
   latency (wrk ``--latency``), requests/s, non-2xx answers, after one unmeasured second
   of the same; ``--rounds`` runs, the one of median p99 reported. Seed goal: p99 < 100 ms.
2. **warm raw**: ``GET raw/main/<file>`` over 100 warm files vs the floor (both servers
   up at once, measured alternately for ``--rounds`` rounds, medians): a bare
   Starlette endpoint returning the same bytes from a dict. Target >= 0.7x, and
   >= 10,000 req/s if the machine allows. Also the median of the rounds' paired ratios
   (each round's two runs are back to back), and the server processes' CPU time per
   request (user + system, medians): figures other processes' load moves less.
3. **304**: the same with ``If-None-Match`` (the blob id) vs a floor endpoint comparing
   the header with a dict. Target >= 0.9x.
4. **coalescing**: 64 identical concurrent cold reads in one process (query cache off,
   every statement delayed 50 ms so they overlap), database statements counted, with
   ``coalesce_enabled`` on and off. Target: 1 execution.

The database is a temporary SQLite file, or a new database on ``--pg-url``'s server.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

import govc_db
from bench.suite import DEFAULT_PG_URL
from govc_db import Settings, Signature
from govc_db.http.auth import create_token

__all__ = ["main"]

SIG = Signature("Bench", "bench@example.com", 1_700_000_000, 0)
FILES = 100
ROOT = Path(__file__).resolve().parents[1]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _content(i: int) -> bytes:
    return (f"file {i}\n" + "some text of a config file\n" * (20 + i % 40)).encode()


def seed(url: str) -> str:
    """The bench repository (100 files, 30 commits) and a write token."""
    with govc_db.open(url) as store:
        store.upgrade()
        repo = store.create_repository("bench")
        repo.commit(
            "main",
            {f"dir{i % 5}/file{i:03d}.txt": _content(i) for i in range(FILES)},
            message="seed\n",
            author=SIG,
        )
        for n in range(29):
            repo.commit("main", {f"hist/{n}.txt": b"%d\n" % n}, message=f"h{n}\n", author=SIG)
        return create_token(store, repository="bench", write=True)


# -- the two servers (child processes) ------------------------------------------------------


def floor_app() -> Any:
    """A bare Starlette app returning the same bytes from a dict (and 304 on a match)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    files = {f"dir{i % 5}/file{i:03d}.txt": _content(i) for i in range(FILES)}
    etags = {p: f'"{hash(d) & 0xFFFFFFFF:08x}"' for p, d in files.items()}

    async def raw(request: Request) -> Response:
        path = request.path_params["path"]
        etag = etags[path]
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return Response(files[path], headers={"ETag": etag}, media_type="text/plain")

    return Starlette(routes=[Route("/raw/{path:path}", raw)])


def ours_app() -> Any:
    """Our service on the database of ``GOVC_DB_URL`` (what ``govc-db serve`` runs)."""
    from govc_db.http.cli import app_from_env

    return app_from_env()


# Server process of each base URL, for CPU time per request (see _cpu_seconds).
_PIDS: dict[str, int] = {}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its children (uvicorn's workers): a
    figure the other processes' load moves much less than requests per second."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    todo = [pid]
    while todo:
        here = todo.pop()
        try:
            fields = Path(f"/proc/{here}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            children = Path(f"/proc/{here}/task/{here}/children").read_text().split()
        except OSError:
            continue
        todo += [int(c) for c in children]
    return total


@contextmanager
def server(kind: str, url: str, workers: int) -> Iterator[str]:
    port = _port()
    env = {**os.environ, "GOVC_DB_URL": url, "PYTHONPATH": str(ROOT)}
    env.pop("GOVC_DB_HTTP_PUBLIC_READ", None)
    env["GOVC_DB_HTTP_ACCESS_LOG"] = "0"  # the floor logs nothing either
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "uvicorn", f"bench.http:{kind}_app", "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
            "--no-access-log", "--log-level", "warning",
        ],
        env=env,
        cwd=ROOT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    _PIDS[base] = proc.pid
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(base + "/", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the {kind} server did not start") from None
                time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


# -- wrk ------------------------------------------------------------------------------------

_LUA = """
local paths = {%(paths)s}
local token = "%(token)s"
local mode = "%(mode)s"
local etags = {%(etags)s}
local n = 0
math.randomseed(%(seed)d)
request = function()
  n = n + 1
  local i = math.random(#paths)
  local h = {}
  if token ~= "" then h["Authorization"] = "Bearer " .. token end
  if mode == "304" then
    h["If-None-Match"] = etags[i]
    return wrk.format("GET", paths[i], h)
  end
  if mode == "mixed" then
    local r = math.random(100)
    local base = "/api/v1/repos/bench"
    if r <= 5 then
      h["Content-Type"] = "application/json"
      local body = '{"branch":"main","message":"load\\\\n","author":{"name":"w","email":"w@x"},'
        .. '"changes":{"load/' .. tostring(math.random(1, 1e9)) .. '-' .. n .. '.txt":'
        .. '{"content":"aGVsbG8K"}}}'
      return wrk.format("POST", base .. "/commits", h, body)
    elseif r <= 50 then
      return wrk.format("GET", paths[i], h)
    elseif r <= 70 then
      return wrk.format("GET", base .. "/tree/main/dir" .. (i %% 5), h)
    elseif r <= 85 then
      return wrk.format("GET", base .. "/log?limit=20", h)
    else
      return wrk.format("GET", base .. "/commits/main", h)
    end
  end
  return wrk.format("GET", paths[i], h)
end
done = function(summary, latency, requests)
  io.write(string.format("JSON {\\"p50\\": %%f, \\"p99\\": %%f, \\"requests\\": %%d, " ..
    "\\"seconds\\": %%f, \\"non2xx\\": %%d, \\"errors\\": %%d}\\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.requests,
    summary.duration / 1e6, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def wrk(base: str, paths: list[str], *, seconds: float, mode: str = "get", token: str = "",
        etags: list[str] | None = None, seed: int = 42) -> dict[str, float]:  # fmt: skip
    script = _LUA % {
        "paths": ",".join(json.dumps(p) for p in paths),
        "token": token,
        "mode": mode,
        "etags": ",".join(json.dumps(e) for e in (etags or [])),
        "seed": seed,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    pid = _PIDS.get(base)
    cpu_before = _cpu_seconds(pid) if pid is not None else 0.0
    try:
        out = subprocess.run(
            ["wrk", "-t1", "-c64", f"-d{seconds:g}s", "--timeout", "10s", "--latency",
             "-s", f.name, base],
            capture_output=True, text=True, check=True, timeout=seconds + 60,
        ).stdout  # fmt: skip
    finally:
        os.unlink(f.name)
    found = re.search(r"^JSON (.*)$", out, re.M)
    assert found, out
    stats: dict[str, float] = json.loads(found.group(1))
    stats["rps"] = stats["requests"] / stats["seconds"]
    if pid is not None and stats["requests"]:
        stats["cpu_us"] = (_cpu_seconds(pid) - cpu_before) / stats["requests"] * 1e6
    return stats


# -- coalescing (in process) ---------------------------------------------------------------


def coalescing(url: str, enabled: bool) -> dict[str, int]:
    settings = Settings(cache_enabled=False, coalesce_enabled=enabled, pool_size=8)
    with govc_db.open(url, settings=settings) as store:
        repo = store.repository("bench")
        repo.read("main", "dir0/file000.txt")
        store.engine.dispose()  # cold: new connections, nothing cached
        seen: list[str] = []

        def slow(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            seen.append(statement)
            time.sleep(0.05)

        before = store.metrics().get("coalesce", {}).get("executions", 0)
        sa.event.listen(store.engine, "before_cursor_execute", slow)
        barrier = threading.Barrier(64)

        def read() -> None:
            barrier.wait()
            repo.read("main", "dir0/file000.txt")

        threads = [threading.Thread(target=read) for _ in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = store.metrics().get("coalesce", {}).get("executions", before + 64)
        return {"statements": len(seen), "executions": int(after - before)}


# -- main -----------------------------------------------------------------------------------


@contextmanager
def database(backend: str, pg_url: str) -> Iterator[str]:
    if backend == "sqlite":
        tmp = tempfile.mkdtemp(prefix="govc-bench-http-")
        try:
            yield f"sqlite:///{tmp}/bench.db"
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    name = f"govc_bench_http_{os.getpid()}"
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.http", description=__doc__)
    p.add_argument("--quick", action="store_true", help="3 s per measurement")
    p.add_argument("--seconds", type=float, default=None)
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="postgres")
    p.add_argument("--pg-url", default=os.environ.get("GOVC_DB_BENCH_URL", DEFAULT_PG_URL))
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes of each side (default 1: the ratios; one per CPU for the "
        "absolute rate a deployment gets, see the module docstring)",
    )
    p.add_argument("--rounds", type=int, default=3, help="alternating ours/floor rounds")
    p.add_argument(
        "--only",
        choices=("all", "mixed", "reads"),
        default="all",
        help="measure only the mixed workload, or only the warm raw and 304 reads",
    )
    args = p.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("bench.http needs wrk: apt-get install wrk")
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    results: dict[str, Any] = {"backend": args.backend, "cpus": os.cpu_count(),
                               "load_before": os.getloadavg()[0]}  # fmt: skip
    with database(args.backend, args.pg_url) as url:
        token = seed(url)
        with govc_db.open(url) as store:
            repo = store.repository("bench")
            blobs = {e.path: e.oid for e in repo.walk("main") if e.path.startswith("dir")}
        files = sorted(blobs)
        ours_paths = [f"/api/v1/repos/bench/raw/main/{f}" for f in files]
        floor_paths = [f"/raw/{f}" for f in files]
        etags = [f'"{blobs[f]}"' for f in files]
        with (
            server("ours", url, args.workers) as ours,
            server("floor", url, args.workers) as floor,
        ):
            auth = {"Authorization": f"Bearer {token}"}
            for path in ours_paths:  # warm
                httpx.get(ours + path, headers=auth).raise_for_status()
            tags = [httpx.get(floor + p).headers["etag"] for p in floor_paths]
            # Ours and the floor alternate, round after round, so a change in the load
            # the other processes put on the machine falls on both sides alike.
            samples: dict[str, list[dict[str, float]]] = {
                k: [] for k in ("ours_raw", "floor_raw", "ours_304", "floor_304")
            }
            for _ in range(args.rounds if args.only != "mixed" else 0):
                samples["ours_raw"].append(wrk(ours, ours_paths, seconds=seconds, token=token))
                samples["floor_raw"].append(wrk(floor, floor_paths, seconds=seconds))
                samples["ours_304"].append(
                    wrk(ours, ours_paths, seconds=seconds, token=token, mode="304", etags=etags)
                )
                samples["floor_304"].append(
                    wrk(floor, floor_paths, seconds=seconds, mode="304", etags=tags)
                )
            for key, runs in samples.items():
                if not runs:
                    continue
                results[key] = sorted(runs, key=lambda x: x["rps"])[len(runs) // 2]  # median
                results[key]["all_rps"] = [round(x["rps"]) for x in runs]
            for key, (a, b) in {"raw_ratio": ("ours_raw", "floor_raw"),
                                "304_ratio": ("ours_304", "floor_304")}.items():  # fmt: skip
                # Each round's pair ran back to back: the median of their ratios is the
                # figure least moved by the other processes' load changing between rounds.
                if not samples[a]:
                    continue
                paired = zip(samples[a], samples[b], strict=True)
                pairs = sorted(x["rps"] / y["rps"] for x, y in paired)
                results[key] = {"paired_median": pairs[len(pairs) // 2], "all": pairs}
                cpu = {}
                for side in (a, b):
                    spent = sorted(x.get("cpu_us", 0.0) for x in samples[side])
                    cpu[side] = spent[len(spent) // 2]
                results[key]["cpu_us"] = cpu
            # The mixed routes (tree, log, commit) were never asked yet: one unmeasured
            # second first (another seed: its commits must not repeat the measured ones).
            if args.only != "reads":
                wrk(ours, ours_paths, seconds=1, token=token, mode="mixed", seed=7)
                # --rounds runs (each its own commits): the one of median p99 is reported.
                mixed = [
                    wrk(ours, ours_paths, seconds=seconds, token=token, mode="mixed", seed=42 + n)
                    for n in range(args.rounds)
                ]
                mixed.sort(key=lambda x: x["p99"])
                results["mixed"] = mixed[len(mixed) // 2]
                results["mixed"]["all_p99"] = [round(x["p99"], 1) for x in mixed]
        if args.only == "all":
            results["coalesce_on"] = coalescing(url, True)
            results["coalesce_off"] = coalescing(url, False)
    results["load_after"] = os.getloadavg()[0]
    report(results, args.workers)


def _ratios(r: dict[str, Any]) -> str:
    ours, floor = r["cpu_us"].values()
    return (
        f"{r['paired_median']:.2f}x (of {', '.join(f'{x:.2f}' for x in r['all'])}); "
        f"server CPU per request ours {ours:.0f} us, floor {floor:.0f} us -> "
        f"{floor / ours if ours else 0:.2f}x"
    )


def report(r: dict[str, Any], workers: int) -> None:
    lines = [
        f"backend {r['backend']}, uvicorn x{workers}, wrk -t1 -c64, {r['cpus']} CPUs, "
        f"load average {r['load_before']:.1f} -> {r['load_after']:.1f}",
    ]
    if "mixed" in r:
        m = r["mixed"]
        lines.append(
            f"mixed (5% commits): p50 {m['p50']:.1f} ms, p99 {m['p99']:.1f} ms (goal < 100; "
            f"median run of p99 {m['all_p99']}), {m['rps']:.0f} req/s, "
            f"non-2xx {m['non2xx']:.0f}, errors {m['errors']:.0f}"
        )
    if "ours_raw" in r:
        lines += _read_lines(r)
    if "coalesce_on" in r:
        lines.append(
            f"64 identical cold reads: coalescing on {r['coalesce_on']['executions']} "
            f"execution(s), {r['coalesce_on']['statements']} statements; off "
            f"{r['coalesce_off']['statements']} statements (target: 1 execution)"
        )
    print("\n".join(lines))
    print("JSON " + json.dumps(r))


def _read_lines(r: dict[str, Any]) -> list[str]:
    raw_ratio = r["ours_raw"]["rps"] / r["floor_raw"]["rps"]
    nm_ratio = r["ours_304"]["rps"] / r["floor_304"]["rps"]
    return [
        f"warm raw (median of {r['ours_raw']['all_rps']} / {r['floor_raw']['all_rps']}): ours "
        f"{r['ours_raw']['rps']:.0f} req/s, floor {r['floor_raw']['rps']:.0f} req/s -> "
        f"{raw_ratio:.2f}x (target >= 0.7x; >= 10,000 req/s); paired rounds "
        f"{_ratios(r['raw_ratio'])}",
        f"304 (median of {r['ours_304']['all_rps']} / {r['floor_304']['all_rps']}): ours "
        f"{r['ours_304']['rps']:.0f} req/s, floor {r['floor_304']['rps']:.0f} req/s -> "
        f"{nm_ratio:.2f}x (target >= 0.9x); paired rounds {_ratios(r['304_ratio'])}",
    ]


if __name__ == "__main__":
    main()

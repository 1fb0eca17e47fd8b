"""Threads of one process committing disjoint paths onto one branch (library calls).

``python -m bench.branchcommits --backend sqlite|postgres [--threads 8] [--commits 40]
[--serialize 0|1]``: N threads, each committing ``--commits`` one-file changes to its own
path on ``main`` of one repository through one Store; prints commits/s, the per-call
latency percentiles seen by the caller, and the write pipeline's fallback counters.
``--serialize 0`` runs with ``Settings.commit_serialize`` off (commits of the process
race in the database). On PostgreSQL it uses a fresh database on ``GOVC_DB_BENCH_PG``
(default ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``), dropped afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
import uuid
from contextlib import suppress

from sqlalchemy import create_engine, text

import govc_db
from govc_db import Settings
from govc_db.errors import RefConflict
from govc_db.objects import Signature


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def run(url: str, threads: int, commits: int, serialize: bool) -> dict[str, float]:
    """Time ``threads`` x ``commits`` commits on one branch; the figures."""
    store = govc_db.open(url, Settings(commit_serialize=serialize))
    store.upgrade()
    try:
        repo = store.create_repository("r" + uuid.uuid4().hex[:8])
        sig = Signature("b", "b@example.com", 1_700_000_000, 0)
        repo.commit("main", {"seed": b"0"}, message="seed", author=sig)
        lat: list[float] = []
        conflicts = [0]
        lock = threading.Lock()
        start = threading.Barrier(threads + 1)

        def worker(t: int) -> None:
            start.wait()
            for k in range(commits):
                t0 = time.perf_counter()
                try:
                    repo.commit("main", {f"t{t}/f": str(k).encode()}, message="m", author=sig)
                except RefConflict:
                    with lock:
                        conflicts[0] += 1
                    continue
                dt = time.perf_counter() - t0
                with lock:
                    lat.append(dt)

        ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for th in ts:
            th.start()
        start.wait()
        t0 = time.perf_counter()
        for th in ts:
            th.join()
        wall = time.perf_counter() - t0
        log = list(repo.log("main", limit=threads * commits + 10))
        stats = store.backend.pipeline.get_stats()
        return {
            "commits_per_s": len(lat) / wall,
            "p50_ms": statistics.median(lat) * 1000,
            "p99_ms": _pct(lat, 0.99) * 1000,
            "max_ms": max(lat) * 1000,
            "conflicts": conflicts[0],
            "history_ok": float(len(log) == len(lat) + 1),
            "fallbacks": stats.get("fallbacks_expectation", 0),
        }
    finally:
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.branchcommits")
    ap.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--commits", type=int, default=40)
    ap.add_argument("--serialize", type=int, choices=(0, 1), default=1)
    a = ap.parse_args()
    if a.backend == "sqlite":
        with tempfile.TemporaryDirectory() as d:
            out = run(
                f"sqlite:///{os.path.join(d, 'b.db')}", a.threads, a.commits, bool(a.serialize)
            )
    else:
        base = os.environ.get(
            "GOVC_DB_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        )
        name = "bench_bc_" + uuid.uuid4().hex[:8]
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            out = run(base.rsplit("/", 1)[0] + "/" + name, a.threads, a.commits, bool(a.serialize))
        finally:
            with admin.connect() as c, suppress(Exception):
                c.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            admin.dispose()
    print(
        f"{a.backend} threads={a.threads} serialize={a.serialize}: "
        + " ".join(f"{k}={v:.1f}" for k, v in out.items())
    )


if __name__ == "__main__":
    main()

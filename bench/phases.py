"""Where the time of a commit and of a read goes, ours next to the raw driver's.

``python -m bench.phases [--backend sqlite|postgres|all] [--commits N] [--reads N]``

The peer tables give ratios; this breaks the two hot operations of issue 4 into phases,
measured by wrapping the functions that do each part (so a phase includes everything it
calls), and prints microseconds per call:

* **commit** (one-file commit onto a 1,000-file tree): ours -- the write pipeline
  (statements and their one round trip), ``COMMIT``, ``build_tree`` (trees, hashing,
  compression), ``index_commit`` (changed paths), and the rest (API, validation,
  transaction manager, hooks); the raw psycopg / sqlite3 transaction -- its database part
  (``_write``) and the rest (its in-memory tree, hashing, compression).
* **read**: a warm read at a branch -- ``read_cached`` (the cache lookups) and the rest (API,
  middleware); a cold blob -- the autocommit fetch and the rest; and the raw point
  ``SELECT`` the targets compare with.

The throwaway databases are made as the suite makes them (:mod:`bench.suite`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

import govc_db
import govc_db.api.repository as api_repository
import govc_db.core.commit as core_commit
import govc_db.db.pipeline as pipeline
import govc_db.db.txn as txn
import govc_db.store.sql as store_sql
from bench.harness import T0, Target, changed_path, content, file_path, message, tree
from bench.peers import RawSql, signature
from bench.reads import PointSelect
from bench.suite import DEFAULT_PG_URL, postgres_target, sqlite_target
from govc_db import Settings
from govc_db.store.codec import Codec

__all__ = ["main"]

Acc = defaultdict[str, float]


@contextmanager
def timed(owner: Any, name: str, key: str, acc: Acc) -> Iterator[None]:
    """Replace ``owner.name`` by a wrapper adding its wall time to ``acc[key]``."""
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            acc[key] += time.perf_counter() - t0

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, original)


def _per_call(acc: Acc, total: float, n: int, rest: str) -> list[tuple[str, float]]:
    rows = [(k, v / n * 1e6) for k, v in sorted(acc.items(), key=lambda kv: -kv[1])]
    return [*rows, (rest, (total - sum(acc.values())) / n * 1e6), ("total", total / n * 1e6)]


def commit_phases(t: Target, n: int) -> dict[str, list[tuple[str, float]]]:
    """Per-commit phases of ours and of the raw driver's transaction."""
    out: dict[str, list[tuple[str, float]]] = {}
    acc: Acc = defaultdict(float)
    with govc_db.open(t.url, settings=t.settings) as store:
        store.upgrade()
        repo = store.create_repository("phases")
        repo.commit("main", tree(1000), message="init\n", author=signature(T0))

        def run(first: int, count: int) -> float:
            t0 = time.perf_counter()
            for k in range(first, first + count):
                p = changed_path(k, 1000)
                repo.commit("main", {p: content(p, k)}, message=message(k).decode(),
                            author=signature(T0 + k))  # fmt: skip
            return time.perf_counter() - t0

        run(1, 50)  # warm: prepared statements, caches
        wraps: list[AbstractContextManager[None]] = [
            timed(pipeline.WritePipeline, "run", "write pipeline (round trip)", acc),
            timed(txn.TransactionManager, "_commit", "COMMIT", acc),
            timed(core_commit, "build_tree", "build_tree (trees, hashes, compression)", acc),
            timed(core_commit, "index_commit", "index_commit (changed paths)", acc),
        ]
        for w in wraps:
            w.__enter__()
        try:
            total = run(100, n)
        finally:
            for w in reversed(wraps):
                w.__exit__(None, None, None)
        out["ours"] = _per_call(acc, total, n, "rest (API, validation, txn manager, hooks)")
    raw: RawSql = t.make_raw("phases")
    acc = defaultdict(float)
    try:
        raw.start(tree(1000), b"init\n", T0)
        for k in range(1, 50):
            p = changed_path(k, 1000)
            raw.commit(p, content(p, k), message(k), T0 + k)
        with timed(type(raw), "_write", "database (_write)", acc):
            t0 = time.perf_counter()
            for k in range(100, 100 + n):
                p = changed_path(k, 1000)
                raw.commit(p, content(p, k), message(k), T0 + k)
            total = time.perf_counter() - t0
        out[raw.name] = _per_call(acc, total, n, "rest (tree in memory, hashes, compression)")
    finally:
        raw.close()
    return out


def read_phases(t: Target, n: int) -> dict[str, list[tuple[str, float]]]:
    """Per-read phases: warm at a branch, cold blob, and the raw point SELECTs."""
    out: dict[str, list[tuple[str, float]]] = {}
    paths = [file_path(i) for i in range(1000)]
    with govc_db.open(t.url, settings=t.settings) as store:
        repo = store.create_repository("reads")
        head = repo.commit("main", tree(1000), message="init\n", author=signature(T0))
        blob_ids = [bytes.fromhex(e.oid) for e in repo.walk(head)]
    codec = Codec.from_settings(t.settings)
    with govc_db.open(t.url, settings=t.settings) as store:
        repo = store.repository("reads")
        acc: Acc = defaultdict(float)
        for p in paths[:50]:
            repo.read("main", p)
        # Repository calls read_cached through the name it imported: wrap that binding.
        with timed(api_repository, "read_cached", "read_cached (cache lookups)", acc):
            t0 = time.perf_counter()
            for i in range(n):
                repo.read("main", paths[i % 50])
            total = time.perf_counter() - t0
        out["warm read at a branch"] = _per_call(acc, total, n, "rest (API, middleware)")
    with govc_db.open(t.url, settings=t.settings) as store:
        repo = store.repository("reads")
        for p in paths:
            repo.exists(head, p)  # refs, index row and trees; not the blobs
        acc = defaultdict(float)
        with timed(store_sql.SqlBackend, "fetch_objects", "fetch (checkout + SELECT)", acc):
            t0 = time.perf_counter()
            for p in paths:
                repo.read(head, p)
            total = time.perf_counter() - t0
        rest = "rest (API, revision, path lookup, middleware)"
        out["cold blob"] = _per_call(acc, total, len(paths), rest)
    for prepared in (False, True):
        point = PointSelect(t, "reads", codec, prepared=prepared)
        try:
            for oid in blob_ids[:50]:
                point.read(oid)
            t0 = time.perf_counter()
            for oid in blob_ids:
                point.read(oid)
            total = time.perf_counter() - t0
        finally:
            point.close()
        out[point.name] = [("total", total / len(blob_ids) * 1e6)]
    return out


def _print(console: Console, title: str, phases: dict[str, list[tuple[str, float]]]) -> None:
    console.print(f"[bold]{title}[/bold] (microseconds per call)")
    for who, rows in phases.items():
        console.print(f"  {who}")
        for name, us in rows:
            console.print(f"    {name:<48} {us:9.1f}")


def main(argv: list[str] | None = None) -> None:
    """Print the phase tables for the chosen backends."""
    parser = argparse.ArgumentParser(prog="python -m bench.phases", description=__doc__)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "all"], default="all")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--commits", type=int, default=1000)
    parser.add_argument("--reads", type=int, default=100_000)
    args = parser.parse_args(argv)
    console = Console()
    settings = Settings()
    with tempfile.TemporaryDirectory(prefix="govc_phases_") as tmp:
        targets: list[Callable[[], AbstractContextManager[Target]]] = []
        if args.backend in ("sqlite", "all"):
            targets.append(lambda: sqlite_target(settings, Path(tmp)))
        if args.backend in ("postgres", "all"):
            targets.append(lambda: postgres_target(args.pg_url, settings, Path(tmp), console))
        for make in targets:
            with make() as t:
                console.rule(t.backend)
                _print(console, "one-file commit", commit_phases(t, args.commits))
                _print(console, "read", read_phases(t, args.reads))


if __name__ == "__main__":
    main()

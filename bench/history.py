"""5. Import of a synthetic history, and 7. its stored size.

**Ours** imports through the public API: ``repo.commit()`` in a loop, one transaction per
commit, exactly what an application replaying a history would do. (Wrapping slices of the
loop in ``store.transaction()`` was measured and is not faster: each commit then runs in a
savepoint and the query cache cannot serve refs inside an open transaction.) The loop is
timed in ``Sizes.import_chunks`` consecutive slices, which are its samples.

**The peer** is ``git fast-import`` fed the same commits (same files, signatures, times and
messages) as one prepared stream, built before its clock starts, into a fresh bare
repository; both must end at the same head commit id. Its last repository becomes the git
copy the log, read and diff workloads use: after ``git gc`` (whose ``git count-objects -v``
is the size peer) and ``git commit-graph write --reachable --changed-paths``.

The stored size is measured right after the import, while our database holds nothing
else: on PostgreSQL the sum of ``pg_total_relation_size`` (heap, TOAST and indexes) of the
``govc_*`` tables, on SQLite the database file after ``PRAGMA wal_checkpoint(TRUNCATE)``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from bench.harness import (
    CHANGELOG,
    T0,
    Sizes,
    Target,
    collect,
    content,
    history_path,
    message,
    ours_section,
    tree,
    unsupported,
)
from bench.peers import AUTHOR_EMAIL, AUTHOR_NAME, git, git_env, signature
from bench.report import Result, Stats
from govc_db import Repository, Store

__all__ = ["History", "bench_import", "bench_size", "build_history", "fast_import_stream"]

MIB = 1024 * 1024
FAST_IMPORT = "git fast-import"


@dataclass(slots=True)
class History:
    """The imported history: ours, the timings of both importers, and git's copy."""

    repo: Repository
    commits: list[str]
    git_dir: Path
    ours_rates: list[float]
    ours_total_s: float
    git_rates: list[float] = field(default_factory=list)
    git_totals: list[float] = field(default_factory=list)
    git_head: str = ""
    git_error: BaseException | None = None
    git_size: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


def _history_commits(sizes: Sizes) -> list[tuple[int, dict[str, bytes], bytes]]:
    """(k, changes, message) of every commit: the 1,001-file root, then one file each."""
    files = tree(sizes.tree_files)
    files[CHANGELOG] = content(CHANGELOG, 0)
    out = [(0, files, b"initial import\n")]
    for k in range(1, sizes.history + 1):
        path = history_path(k, sizes.tree_files)
        out.append((k, {path: content(path, k)}, message(k)))
    return out


def fast_import_stream(commits: list[tuple[int, dict[str, bytes], bytes]]) -> bytes:
    """The ``git fast-import`` stream of ``commits`` onto ``refs/heads/main``."""
    ident = f"{AUTHOR_NAME} <{AUTHOR_EMAIL}>".encode()
    out: list[bytes] = []
    for k, changes, msg in commits:
        when = T0 + k
        out.append(b"commit refs/heads/main\n")
        out.append(b"author %s %d +0000\ncommitter %s %d +0000\n" % (ident, when, ident, when))
        out.append(b"data %d\n%s\n" % (len(msg), msg))
        for path, data in changes.items():
            out.append(b"M 100644 inline %s\ndata %d\n%s\n" % (path.encode(), len(data), data))
    out.append(b"done\n")
    return b"".join(out)


def _fast_import(dest: Path, stream: bytes) -> float:
    """Seconds ``git fast-import`` takes to import ``stream`` into a new bare repository."""
    git(Path("/"), "init", "-q", "--bare", "-b", "main", str(dest), env=git_env(dest))
    collect()
    t0 = time.perf_counter()
    git(dest, "fast-import", "--quiet", "--done", input=stream)
    return time.perf_counter() - t0


def _count_objects(git_dir: Path) -> dict[str, Any]:
    """``git count-objects -v`` in bytes, plus the ``-vH`` text as git prints it."""
    fields = {}
    for line in git(git_dir, "count-objects", "-v").decode().splitlines():
        key, _, value = line.partition(": ")
        fields[key] = int(value)
    human = git(git_dir, "count-objects", "-vH").decode().strip().replace("\n", "; ")
    stored = (fields.get("size-pack", 0) + fields.get("size", 0)) * 1024
    return {"bytes": stored, "count_objects_vH": human, "in_pack": fields.get("in-pack")}


def build_history(t: Target, sizes: Sizes, store: Store) -> History:
    """Import the history through ``repo.commit()`` (timed), then through ``git
    fast-import`` ``Sizes.repeats`` times; keep git's last copy for the readers.
    """
    commits = _history_commits(sizes)
    repo = store.create_repository("history")
    ids: list[str] = []
    bounds = [round(i * len(commits) / sizes.import_chunks) for i in range(sizes.import_chunks + 1)]
    rates: list[float] = []
    total = 0.0
    for lo, hi in pairwise(bounds):
        collect()
        with ours_section():
            t0 = time.perf_counter()
            for k, changes, msg in commits[lo:hi]:
                ids.append(
                    repo.commit("main", changes, message=msg.decode(), author=signature(T0 + k))
                )
            elapsed = time.perf_counter() - t0
        total += elapsed
        rates.append((hi - lo) / elapsed)
    h = History(repo, ids, t.workdir / "history.git", rates, total)
    h.notes = {
        "history_commits": len(commits),
        "ours_import": "repo.commit() in a loop, one transaction per commit (public API)",
        "ours_import_total_s": round(total, 2),
    }
    try:
        stream = fast_import_stream(commits)
        for rep in range(sizes.repeats):
            dest = t.workdir / f"fast-import-{rep}.git"
            h.git_totals.append(_fast_import(dest, stream))
            h.git_rates.append(len(commits) / h.git_totals[-1])
            if rep < sizes.repeats - 1:
                shutil.rmtree(dest)
        dest.rename(h.git_dir)
        h.git_head = git(h.git_dir, "rev-parse", "main").decode().strip()
        git(h.git_dir, "gc", "-q")
        h.git_size = _count_objects(h.git_dir)
        git(h.git_dir, "commit-graph", "write", "--reachable", "--changed-paths")
    except Exception as exc:  # the readers' peers then report "peer failed"
        h.git_error = exc
    return h


def bench_import(t: Target, sizes: Sizes, h: History | BaseException) -> list[Result]:
    n = sizes.history + 1
    case = f"{n:,}-commit synthetic history; ours: repo.commit() loop"
    rate = Result("5 import", case, t.backend, "commits/s", True, FAST_IMPORT)
    total = Result("5 import", case, t.backend, "s total", False, FAST_IMPORT)
    if isinstance(h, BaseException):
        return [unsupported(rate, h), unsupported(total, h)]
    same = (h.git_head == h.commits[-1]) if h.git_error is None else None
    for r in (rate, total):
        r.notes.update(h.notes)
        r.notes["ours_samples"] = f"{sizes.import_chunks} consecutive slices of one import"
        r.notes["peer_samples"] = f"{len(h.git_totals)} whole imports from a prepared stream"
        if h.git_error is not None:
            r.notes["peer_error"] = f"{type(h.git_error).__name__}: {h.git_error}"[:160]
        r.check = same
    rate.ours, rate.theirs = Stats.of(h.ours_rates), Stats.of(h.git_rates)
    total.ours, total.theirs = Stats.of([h.ours_total_s]), Stats.of(h.git_totals)
    return [rate, total]


def _postgres_size(url: str) -> tuple[int, dict[str, float]]:
    import psycopg

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'r' AND n.nspname = current_schema() "
            "AND c.relname LIKE 'govc\\_%' ORDER BY 2 DESC"
        ).fetchall()
    by_table = {str(name): round(int(size) / MIB, 3) for name, size in rows}
    return sum(int(size) for _, size in rows), by_table


def _sqlite_size(url: str) -> tuple[int, dict[str, float]]:
    path = make_url(url).database
    assert path is not None
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages, free = (
            conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count")
        )
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    wal = Path(path + "-wal")
    size = os.path.getsize(path) + (wal.stat().st_size if wal.exists() else 0)
    return size, {"free_pages_mib": round(free * page_size / MIB, 3), "pages": pages}


def bench_size(t: Target, sizes: Sizes, h: History | BaseException) -> list[Result]:
    n = sizes.history + 1
    base = Result(
        "7 size",
        f"stored size of the {n:,}-commit history",
        t.backend,
        "MiB",
        False,
        "git count-objects -v after git gc",
    )
    if isinstance(h, BaseException):
        return [unsupported(base, h)]
    try:
        size, detail = (_postgres_size if t.backend == "postgresql" else _sqlite_size)(t.url)
    except Exception as exc:
        return [unsupported(base, exc)]
    base.ours = Stats.of([size / MIB])
    base.notes["ours_detail_mib"] = detail
    base.notes["ours_measure"] = (
        "sum of pg_total_relation_size(govc_* tables)"
        if t.backend == "postgresql"
        else "database file after wal_checkpoint(TRUNCATE)"
    )
    if h.git_size:
        base.theirs = Stats.of([h.git_size["bytes"] / MIB])
        base.notes["git_count_objects_vH"] = h.git_size["count_objects_vH"]
        base.notes["git_objects"] = h.git_size["in_pack"]
    elif h.git_error is not None:
        base.notes["peer_error"] = f"{type(h.git_error).__name__}: {h.git_error}"[:160]
    return [base]

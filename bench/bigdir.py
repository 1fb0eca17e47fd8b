"""One-file commits into one large directory: what a commit costs as the directory grows.

``python -m bench.bigdir [--backend sqlite|postgres] [--entries 100,1000,10000]
[--commits 300] [--pg-url URL]`` fills a directory ``load/`` of a new repository with
that many files in one commit, makes 50 unmeasured one-file commits into it, then times
``--commits`` more: wall and process CPU per commit, for each directory size. The
figure that matters is how the cost grows with the directory: a commit rewrites the
directory's tree (git does too), and the rest of its work -- the edit, the changed paths
of the commit index -- should follow the change, not the directory. The mixed HTTP
workload's commits (``bench/http.py``) land in such a directory.

A diagnostic of our own scaling, not a comparison with a peer: the one-file commit
workload (``python -m bench run --workload commit``) puts the same commit beside git,
dulwich and the raw driver.
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import govc_db
from bench.suite import libpq
from govc_db import Signature

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SIG = Signature("Bench", "bench@example.com", 1_700_000_000, 0)
WARMUP = 50


@contextmanager
def database(backend: str, pg_url: str) -> Iterator[str]:
    """A throwaway database's URL: a temporary SQLite file, or a new PostgreSQL database."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="govc-bigdir-") as d:
            yield f"sqlite:///{d}/bigdir.db"
        return
    import psycopg
    from psycopg import sql
    from sqlalchemy import make_url

    name = f"govc_bigdir_{secrets.token_hex(4)}"
    with psycopg.connect(libpq(pg_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(libpq(pg_url), autocommit=True) as conn:
            stmt = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(stmt.format(sql.Identifier(name)))


def measure(url: str, entries: int, commits: int) -> tuple[float, float]:
    """Wall and CPU milliseconds per one-file commit into a directory of ``entries``."""
    with govc_db.open(url) as store:
        store.upgrade()
        repo = store.create_repository(f"d{entries}")
        files = {f"load/f{i:06d}.txt": b"v%d\n" % i for i in range(entries)}
        repo.commit("main", files, message="fill\n", author=SIG)
        for i in range(WARMUP):
            repo.commit("main", {f"load/w{i:06d}.txt": b"w%d\n" % i}, message="w\n", author=SIG)
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(commits):
            repo.commit("main", {f"load/n{i:06d}.txt": b"n%d\n" % i}, message="n\n", author=SIG)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall / commits * 1000, cpu / commits * 1000


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bigdir", description=__doc__)
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--entries", default="100,1000,10000", help="directory sizes, comma-separated")
    p.add_argument("--commits", type=int, default=300)
    p.add_argument("--pg-url", default=os.environ.get("GOVC_DB_BENCH_URL", DEFAULT_PG_URL))
    args = p.parse_args(argv)
    sizes = [int(x) for x in args.entries.split(",") if x.strip()]
    print(f"backend {args.backend}, {args.commits} one-file commits after {WARMUP} unmeasured")
    print(f"load average {os.getloadavg()[0]:.2f}")
    for entries in sizes:
        with database(args.backend, args.pg_url) as url:
            wall, cpu = measure(url, entries, args.commits)
        print(f"directory of {entries:>7,} entries: {wall:6.2f} ms wall, {cpu:6.2f} ms CPU each")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

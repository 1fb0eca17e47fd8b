"""3. Reading a file at a revision, cold and warm (reads/s).

Against git: a long-running ``git cat-file --batch`` fed ``rev:path`` lines one at a time,
and for the cold case also ``git cat-file blob rev:path`` as a new process per read.

Against the raw driver, on our own database and the same rows (issue 4's targets):

* **warm** ``repo.read("main", path)`` (a branch, through the whole stack, caches warm) vs
  one uncached primary-key ``SELECT`` of the blob row per read, decoded with the same
  codec: psycopg with ``prepare=False`` (parsed and planned each time), sqlite3 with its
  statement cache off;
* **cold** ``repo.read(commit, path)`` on a Store whose query cache is off (connection
  pooled, nothing cached: every lookup reaches the database) vs the same point ``SELECT``
  prepared (psycopg ``prepare=True``; sqlite3's statement cache);
* **cold blob** ``repo.read(commit, path)`` on a new Store (cache on) that has read the
  refs, index rows and trees of those paths (``repo.exists``, untimed) but none of the
  blobs: each read fetches its blob, the state of a warm service reading files it has not
  read before. Against the same prepared point ``SELECT``.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

import govc_db
from bench.harness import Contest, Sizes, Target, file_path, result, unsupported
from bench.history import History
from bench.peers import CatFileBatch, git
from bench.report import Result
from govc_db.db.pipeline import compile_raw
from govc_db.store.codec import DELTA_ENCODINGS, Codec, resolve_rows
from govc_db.store.statements import S_CHAIN_ONE

__all__ = ["bench_reads"]

SELECT_BLOB = "SELECT encoding, size, data FROM govc_objects WHERE repo_id = %s AND oid = %s"
DISTINCT = 50


class PointSelect:
    """One primary-key SELECT of an object row per read, on one connection."""

    def __init__(self, t: Target, repo: str, codec: Codec, *, prepared: bool) -> None:
        self.codec = codec
        self.pg = t.backend == "postgresql"
        self.prepared = prepared
        self.name = self.label(t.backend, prepared)
        self.chain_codec = Codec(cache_bytes=0)
        if self.pg:
            import psycopg

            self.conn: Any = psycopg.connect(t.ours_dsn, autocommit=True)
            self.sql = SELECT_BLOB
            self.chain = compile_raw(S_CHAIN_ONE, pg_dialect.psycopg.dialect(), ())  # type: ignore[no-untyped-call]
        else:
            # cached_statements=0: every execute parses and plans the statement again.
            self.conn = sqlite3.connect(
                t.ours_dsn, isolation_level=None, cached_statements=128 if prepared else 0
            )
            self.sql = SELECT_BLOB.replace("%s", "?")
            self.chain = compile_raw(S_CHAIN_ONE, sqlite_dialect.dialect(), ())
        mark = "%s" if self.pg else "?"
        row = self.conn.execute(
            f"SELECT id FROM govc_repositories WHERE name = {mark}", (repo,)
        ).fetchone()
        self.repo_id = int(row[0])

    @staticmethod
    def label(backend: str, prepared: bool) -> str:
        if backend == "postgresql":
            return f"raw psycopg point SELECT ({'prepared' if prepared else 'prepare=False'})"
        how = "prepared, statement cache" if prepared else "statement cache off"
        return f"raw sqlite3 point SELECT ({how})"

    def read(self, oid: bytes) -> bytes:
        if self.pg:
            row = self.conn.execute(self.sql, (self.repo_id, oid), prepare=self.prepared)
        else:
            row = self.conn.execute(self.sql, (self.repo_id, oid))
        enc, size, data = row.fetchone()
        if enc not in DELTA_ENCODINGS:
            return self.codec.decode(enc, data, size)
        # A delta (storage optimizer): one recursive SELECT of its chain, decoded without
        # any cache (the raw peer remembers nothing between reads).
        decoded = resolve_rows(self.chain_codec, 0, [(oid, 3, size, enc, data)], self._chain)
        return decoded[oid][1]

    def _chain(self, bases: Sequence[bytes]) -> list[Any]:
        out: list[Any] = []
        for base in bases:
            params = {"repo_id": self.repo_id, "oid": base}
            if self.pg:
                out += self.conn.execute(self.chain.sql, params, prepare=self.prepared).fetchall()
            else:
                out += self.conn.execute(self.chain.sql, self.chain.args(params)).fetchall()
        return out

    def close(self) -> None:
        self.conn.close()


def _rate(reads: Sequence[Any], fn: Callable[[Any], Any]) -> float:
    t0 = time.perf_counter()
    for item in reads:
        fn(item)
    return len(reads) / (time.perf_counter() - t0)


def _blob_ids(h: History, pairs: Sequence[tuple[str, str]]) -> list[bytes]:
    out = git(h.git_dir, "rev-parse", *(f"{r}:{p}" for r, p in pairs)).decode().split()
    return [bytes.fromhex(x) for x in out]


def bench_reads(t: Target, sizes: Sizes, h: History | BaseException) -> list[Result]:
    cold_case = "cold: new Store per read (engine, connection, lookup)"
    uncached_case = "cold: query cache off, pooled connection"
    cold_blob_case = "cold blob: refs, index and trees cached, blob not"
    warm_case = f"warm: {sizes.warm_reads} reads at commit ids, same Store"
    branch_case = f"warm: {sizes.warm_reads} reads at branch main, same Store"
    batch_peer = "git cat-file --batch (long-running)"
    codec = Codec.from_settings(t.settings)

    def line(case: str, peer: str) -> Result:
        return Result("3 read", case, t.backend, "reads/s", True, peer)

    bases = {
        "cold_proc": line(cold_case, "git cat-file blob (process per read)"),
        "cold_batch": line(cold_case, batch_peer),
        "uncached_pk": line(uncached_case, PointSelect.label(t.backend, prepared=True)),
        "cold_blob_pk": line(cold_blob_case, PointSelect.label(t.backend, prepared=True)),
        "warm_batch": line(warm_case, batch_peer),
        "branch_batch": line(branch_case, batch_peer),
        "branch_pk": line(branch_case, PointSelect.label(t.backend, prepared=False)),
    }
    if isinstance(h, BaseException):
        return [unsupported(b, h) for b in bases.values()]
    repo, gdir = h.repo, h.git_dir
    rng = random.Random(20240601)
    pairs = [
        (rng.choice(h.commits), file_path(rng.randrange(sizes.tree_files)))
        for _ in range(max(sizes.cold_reads, DISTINCT))
    ]
    cold = pairs[: sizes.cold_reads]
    warm = [pairs[i % DISTINCT] for i in range(sizes.warm_reads)]
    paths = [file_path(i * sizes.tree_files // DISTINCT) for i in range(DISTINCT)]
    at_branch = [("main", paths[i % DISTINCT]) for i in range(sizes.warm_reads)]
    cold_ids = _blob_ids(h, cold)
    branch_ids = _blob_ids(h, [("main", p) for p in paths])
    branch_id_reads = [branch_ids[i % DISTINCT] for i in range(sizes.warm_reads)]

    batch = CatFileBatch(gdir)
    prepared = PointSelect(t, repo.name, codec, prepared=True)
    unprepared = PointSelect(t, repo.name, codec, prepared=False)
    uncached = govc_db.open(t.url, settings=t.settings.replace(cache_enabled=False))
    try:
        # Untimed: the outputs must agree, and this pass warms our caches.
        try:
            check: bool | None = all(repo.read(r, p) == batch.read(r, p) for r, p in pairs)
            check_branch: bool | None = all(
                repo.read("main", p) == unprepared.read(oid) == batch.read("main", p)
                for p, oid in zip(paths, branch_ids, strict=True)
            )
            check_cold: bool | None = all(
                repo.read(r, p) == prepared.read(oid)
                for (r, p), oid in zip(cold, cold_ids, strict=True)
            )
        except Exception:
            check = check_branch = check_cold = None
        uncached_repo = uncached.repository(repo.name)  # connects the pool, untimed

        def cold_ours(rp: tuple[str, str]) -> bytes:
            with govc_db.open(t.url, settings=t.settings) as s:
                return s.repository(repo.name).read(*rp)

        cold_contest = Contest().run(
            sizes.repeats,
            {
                "ours": lambda: _rate(cold, cold_ours),
                "proc": lambda: _rate(cold, lambda rp: git(gdir, "cat-file", "blob", ":".join(rp))),
                "batch": lambda: _rate(cold, lambda rp: batch.read(*rp)),
            },
        )
        uncached_contest = Contest().run(
            sizes.repeats,
            {
                "ours": lambda: _rate(cold, lambda rp: uncached_repo.read(*rp)),
                "pk": lambda: _rate(cold_ids, prepared.read),
            },
        )

        def cold_blob_ours() -> float:
            with govc_db.open(t.url, settings=t.settings) as s:
                r = s.repository(repo.name)
                for rp in cold:  # untimed: refs, index rows and trees, not the blobs
                    r.exists(*rp)
                return _rate(cold, lambda rp: r.read(*rp))

        cold_blob_contest = Contest().run(
            sizes.repeats,
            {
                "ours": cold_blob_ours,
                "pk": lambda: _rate(cold_ids, prepared.read),
            },
        )
        warm_contest = Contest().run(
            sizes.repeats,
            {
                "ours": lambda: _rate(warm, lambda rp: repo.read(*rp)),
                "batch": lambda: _rate(warm, lambda rp: batch.read(*rp)),
            },
        )
        branch_contest = Contest().run(
            sizes.repeats,
            {
                "ours": lambda: _rate(at_branch, lambda rp: repo.read(*rp)),
                "batch": lambda: _rate(at_branch, lambda rp: batch.read(*rp)),
                "pk": lambda: _rate(branch_id_reads, unprepared.read),
            },
        )
    finally:
        batch.close()
        prepared.close()
        unprepared.close()
        uncached.close()
    for key, b in bases.items():
        b.notes["distinct_reads"] = len(cold) if key.startswith(("cold", "uncached")) else DISTINCT
    return [
        result(bases["cold_proc"], "ours", "proc", cold_contest, check),
        result(bases["cold_batch"], "ours", "batch", cold_contest, check),
        result(bases["uncached_pk"], "ours", "pk", uncached_contest, check_cold),
        result(bases["cold_blob_pk"], "ours", "pk", cold_blob_contest, check_cold),
        result(bases["warm_batch"], "ours", "batch", warm_contest, check),
        result(bases["branch_batch"], "ours", "batch", branch_contest, check_branch),
        result(bases["branch_pk"], "ours", "pk", branch_contest, check_branch),
    ]

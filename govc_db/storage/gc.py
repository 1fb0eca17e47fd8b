"""``gc()``: re-deltify and recompress a repository's objects while others work.

How it stays safe with readers and writers running:

* Rows are only ever *re-encoded* (``UPDATE ... SET encoding, data``), never deleted: a
  row's content is the same before and after, so a reader decodes whichever version it
  sees, and a delta written concurrently against any row stays decodable.
* Chains stay acyclic. :func:`govc_db.storage.delta.plan` visits objects so that every
  planned base is visited first, and rows are rewritten in visit order, each small batch
  in its own transaction. A visited row is left as it is only when it is stored whole
  or against a row visited before it; so every chain from a visited row runs through
  visited rows only, towards earlier ones, and cannot come back.
* One ``gc()`` per repository at a time: on PostgreSQL a session advisory lock held for
  the run; on SQLite a lock in this process (SQLite serializes write transactions, but
  two processes running ``gc()`` on one file at once are not supported).
* Interrupting it (an exception, ``KeyboardInterrupt``, or ``should_stop`` returning
  True) loses at most the batch in flight, rolled back; running it again continues.

Space: PostgreSQL gets a plain ``VACUUM`` of ``govc_objects`` afterwards (no exclusive
lock; freed space is reused by later writes, and trailing pages are returned to the OS);
SQLite gets ``PRAGMA incremental_vacuum``, which returns free pages to the file system
when the database was created with ``auto_vacuum=INCREMENTAL`` (govc_db sets it on every
new SQLite file; see docs/storage.md for existing ones).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from cachetools import LRUCache
from sqlalchemy import bindparam, func, literal_column, select, text, update

from govc_db.errors import GovcError
from govc_db.objects import ObjectId
from govc_db.storage.chunks import ENC_CHUNKED
from govc_db.storage.delta import plan
from govc_db.store.codec import DELTA_ENCODINGS, GC_LEVEL, OID_LEN, resolve_rows
from govc_db.store.sql import SqlBackend, SqlUnit
from govc_db.store.statements import S_CHAIN, S_CHAIN_PG, S_OBJ_GET, S_OBJ_GET_PG, T_OBJ

__all__ = ["GcBusy", "GcReport", "run_gc"]

#: A row stored whole is re-encoded when that saves at least this share of it. SQLite
#: reuses the freed pages at once (and gc() vacuums); on PostgreSQL an UPDATE leaves the
#: old version (and its TOAST chunks) as free space inside the files until later writes
#: reuse it, so there a rewrite must save more than the space it leaves behind.
MIN_GAIN: Final = 0.1
#: Measured on a 1,001-commit realistic history on PostgreSQL: at 0.1 gc() rewrote 111
#: rows, saved 49 KB of data and grew the tables 4.74 -> 4.95 MiB (TOAST 1.48 -> 1.78);
#: at 0.5 they shrank 4.81 -> 4.65 MiB.
PG_MIN_GAIN: Final = 0.5
#: Objects rewritten per transaction: short transactions, writers never wait long.
BATCH: Final = 400
_R: Any = bindparam("repo_id")
S_BYTES = select(func.count(), func.coalesce(func.sum(func.length(T_OBJ.c.data)), 0)).where(
    T_OBJ.c.repo_id == _R
)
_HEAD_COLS = (
    T_OBJ.c.oid,
    T_OBJ.c.encoding,
    func.substr(T_OBJ.c.data, literal_column("1"), literal_column(str(OID_LEN))),
    func.length(T_OBJ.c.data),
)
S_ALL_HEADS = select(*_HEAD_COLS).where(T_OBJ.c.repo_id == _R)
S_REWRITE = (
    update(T_OBJ)
    .where(T_OBJ.c.repo_id == bindparam("b_repo"), T_OBJ.c.oid == bindparam("b_oid"))
    .values(encoding=bindparam("b_enc"), data=bindparam("b_data"))
)
_LOCKS: dict[int, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


class GcBusy(GovcError):
    """Another ``gc()`` of the same repository is running."""


@dataclass(slots=True)
class GcReport:
    """What one ``gc()`` did."""

    objects: int = 0
    """Objects of the repository."""
    visited: int = 0
    """Objects the history walk reached (each considered for a better encoding)."""
    rewritten: int = 0
    """Rows re-encoded."""
    bytes_before: int = 0
    """Stored bytes of the repository's objects (``data`` columns) before."""
    bytes_after: int = 0
    """... and after."""
    max_depth: int = 0
    """Longest delta chain among the visited objects."""
    mean_depth: float = 0.0
    """Mean chain depth of the visited objects (0 = stored whole)."""
    depths: dict[int, int] = field(default_factory=dict)
    """Chain depth -> visited objects."""
    seconds: float = 0.0
    interrupted: bool = False
    vacuum: str = ""
    """The space-returning statement that ran."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-serializable."""
        d = asdict(self)
        d["depths"] = {str(k): v for k, v in sorted(self.depths.items())}
        return d


def _lock_key(repo_id: int) -> int:
    digest = hashlib.sha1(b"govc_db.gc").digest()
    return (int.from_bytes(digest[:4], "big") & 0x7FFFFFFF) << 31 | (repo_id & 0x7FFFFFFF)


class _Rewriter:
    """Rewrites one batch of visited objects inside one unit."""

    def __init__(self, backend: SqlBackend, repo_id: int, max_depth: int) -> None:
        self.backend = backend
        self.repo_id = repo_id
        self.codec = backend.codec
        self.max_depth = max_depth
        self.pg = backend.dialect == "postgresql"
        self.depth: dict[bytes, int] = {}
        self.order: dict[bytes, int] = {}
        self.contents: LRUCache[bytes, bytes] = LRUCache(maxsize=64 * 1024 * 1024, getsizeof=len)
        self.rewritten = 0
        self.min_gain = PG_MIN_GAIN if self.pg else MIN_GAIN

    def _rows(self, u: SqlUnit, oids: Sequence[bytes], chain: bool) -> list[Any]:
        stmt = (
            (S_CHAIN_PG if chain else S_OBJ_GET_PG)
            if self.pg
            else (S_CHAIN if chain else S_OBJ_GET)
        )
        out: list[Any] = []
        size = 5000 if self.pg else 500
        for i in range(0, len(oids), size):
            out.extend(tuple(r) for r in u.execute(stmt, {"oids": list(oids[i : i + size])}))
        return out

    def all_heads(self) -> dict[bytes, Any]:
        """The heads of every row of the repository: one scan, outside any write
        transaction.

        Rows are only changed by this gc (one per repository), each visited row once,
        and rows written meanwhile belong to commits the plan does not visit. Per-step
        ``IN`` lists spent most of their time binding ids on SQLite (profiled).
        """
        with self.backend.unit(self.repo_id, what="gc") as u:
            return {bytes(r[0]): tuple(r) for r in u.execute(S_ALL_HEADS)}

    def batch(
        self,
        open_unit: Callable[[], Any],
        step: Sequence[tuple[ObjectId, ObjectId | None]],
        heads: dict[bytes, Any],
    ) -> None:
        """Keep or re-encode one batch of visited rows; a write unit (``open_unit``) is
        opened only when some row is re-encoded."""
        first = len(self.order)
        for i, (oid, _b) in enumerate(step):
            self.order.setdefault(oid, first + i)
        # Which rows to re-encode: a row stored against a base visited before it is kept
        # as it is (the write path chose it) while its chain stays within the depth bound
        # (re-encoding a whole row as a delta earlier in this run deepens every chain
        # through it); full rows are tried against their planned base; a row against
        # anything else must move (the acyclicity rule).
        redo: list[tuple[ObjectId, ObjectId | None]] = []
        kept: list[tuple[ObjectId, bytes, ObjectId | None]] = []
        for oid, planned in step:
            head = heads.get(oid)
            if head is None:
                continue  # not stored here (a gitlink, the implicit empty tree)
            enc, length = int(head[1]), int(head[3])
            if enc == ENC_CHUNKED:
                continue  # a chunked blob's row holds its manifest: never a delta or base
            current = bytes(head[2]) if enc in DELTA_ENCODINGS else None
            mine = self.order[oid]
            if (
                current is not None
                and self.order.get(current, mine) < mine
                and self.depth.get(current, 0) < self.max_depth
            ):
                self.depth[oid] = self.depth.get(current, 0) + 1
                kept.append((oid, current, planned))
            elif current is None and (planned is None or length < 64):
                self.depth[oid] = 0
            else:
                redo.append((oid, planned))
        while redo:
            with open_unit() as u:
                self._rewrite(u, redo)
            # A row re-encoded just now may have deepened the chain of a row kept in this
            # batch (its depth was counted before): re-encode those that now exceed the
            # bound, and recount the rest, in visit order, until nothing moves.
            redone = {o for o, _ in redo}
            redo, still = [], []
            moving: set[bytes] = set()
            for oid, current, planned in kept:
                if oid in redone:
                    continue
                if current in moving or self.depth.get(current, 0) >= self.max_depth:
                    redo.append((oid, planned))
                    moving.add(oid)
                else:
                    self.depth[oid] = self.depth.get(current, 0) + 1
                    still.append((oid, current, planned))
            kept = still

    def _rewrite(self, u: SqlUnit, redo: list[tuple[ObjectId, ObjectId | None]]) -> None:
        rows = {bytes(r[0]): r for r in self._rows(u, [o for o, _ in redo], chain=False)}
        rows_of = [rows[o] for o, _ in redo]
        decoded = resolve_rows(
            self.codec, self.repo_id, rows_of, lambda ids: self._rows(u, ids, True)
        )
        need = [b for _, b in redo if b is not None and b not in self.contents]
        if need:
            usable = [r for r in self._rows(u, need, False) if int(r[3]) != ENC_CHUNKED]
            found = resolve_rows(
                self.codec,
                self.repo_id,
                usable,
                lambda ids: self._rows(u, ids, True),
            )
            for key, (_t, data, _d) in found.items():
                self.contents[key] = data
        updates: list[dict[str, Any]] = []
        for (oid, planned), row in zip(redo, rows_of, strict=True):
            content = decoded[oid][1]
            stored = bytes(row[4])
            valid = int(row[3]) not in DELTA_ENCODINGS
            best: tuple[int, bytes, bytes | None] | None = None
            if planned is not None and self.depth.get(planned, self.max_depth) < self.max_depth:
                base = self.contents.get(planned)
                if base is not None:
                    e, s = self.codec.encode_delta(content, planned, base, level=GC_LEVEL)
                    best = (e, s, planned if e in DELTA_ENCODINGS else None)
            if best is None:
                e, s = self.codec.encode(content, level=GC_LEVEL)
                best = (e, s, None)
            # A valid row is rewritten only when that saves enough to be worth a new row
            # version (PostgreSQL's UPDATE writes one; VACUUM then reuses the old space).
            if valid and len(best[1]) > len(stored) - max(16, int(len(stored) * self.min_gain)):
                self.depth[oid] = 0
            else:
                updates.append(
                    {"b_repo": self.repo_id, "b_oid": oid, "b_enc": best[0], "b_data": best[1]}
                )
                self.depth[oid] = 0 if best[2] is None else self.depth.get(best[2], 0) + 1
            if len(content) <= 1024 * 1024:
                self.contents[oid] = content
        if updates:
            u.conn.execute(S_REWRITE, updates)
            self.rewritten += len(updates)


def _repo_lock(repo_id: int) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(repo_id, threading.Lock())


def run_gc(
    backend: SqlBackend,
    repo_id: int,
    *,
    max_depth: int,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    vacuum: bool = True,
    batch: int = BATCH,
) -> GcReport:
    """Re-deltify and recompress repository ``repo_id``; see the module docstring."""
    local = _repo_lock(repo_id)
    if not local.acquire(blocking=False):
        raise GcBusy("gc() of this repository is already running in this process")
    started = time.perf_counter()
    report = GcReport()
    session: Any = None
    try:
        if backend.dialect == "postgresql":
            session = backend.engine.connect()
            got = session.execute(
                text("SELECT pg_try_advisory_lock(:k)"), {"k": _lock_key(repo_id)}
            ).scalar()
            session.commit()
            if not got:
                raise GcBusy("gc() of this repository is already running")
        with backend.unit(repo_id, what="gc") as u:
            report.objects, report.bytes_before = u.execute(S_BYTES).one()
            entries = list(u.index.iter_all())
            steps = list(plan(entries, lambda ids: u.objects.get_many(ids)))
        total = sum(len(s) for s in steps)
        rw = _Rewriter(backend, repo_id, max_depth)
        done = 0

        def write_unit() -> Any:
            return backend.unit(repo_id, write=True, what="gc")

        heads = rw.all_heads()
        for step in steps:
            for i in range(0, len(step), batch):
                if should_stop is not None and should_stop():
                    report.interrupted = True
                    break
                chunk = step[i : i + batch]
                rw.batch(write_unit, chunk, heads)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
            if report.interrupted:
                break
        report.visited = done
        report.rewritten = rw.rewritten
        for depth in rw.depth.values():
            report.depths[depth] = report.depths.get(depth, 0) + 1
        if rw.depth:
            report.max_depth = max(rw.depth.values())
            report.mean_depth = round(sum(rw.depth.values()) / len(rw.depth), 2)
        if vacuum:
            report.vacuum = _vacuum(backend)
        with backend.unit(repo_id, what="gc") as u:
            _n, report.bytes_after = u.execute(S_BYTES).one()
    except GovcError:
        raise
    except Exception as exc:
        raise GovcError(f"gc() failed: {type(exc).__name__}") from exc
    finally:
        if session is not None:
            try:
                session.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _lock_key(repo_id)})
                session.commit()
            finally:
                session.close()
        local.release()
        report.seconds = round(time.perf_counter() - started, 3)
    backend.codec.last_gc = report.as_dict()
    return report


#: Tables whose indexes gc() rebuilds on PostgreSQL: their keys are object ids, which
#: arrive in random order, so page splits leave their b-trees about 70 % full (measured
#: on the bench history: 20.7 MiB before, 19.0 MiB after rebuilding them).
REINDEXED: Final = ("govc_objects", "govc_commits", "govc_commit_parents", "govc_commit_paths")
#: On SQLite a whole-file ``VACUUM`` (which rebuilds every b-tree densely, about 10 % of
#: a history's file) runs only up to this file size: it holds the write lock while it
#: copies the file (0.1 s for the 11 MiB bench history). Larger files get
#: ``PRAGMA incremental_vacuum`` (free pages returned, no rewrite).
SQLITE_VACUUM_MAX: Final = 64 * 1024 * 1024


def _vacuum(backend: SqlBackend) -> str:
    """Return freed space without long exclusive locks; returns what ran.

    PostgreSQL: plain ``VACUUM`` of the objects (no exclusive lock), then ``REINDEX
    TABLE CONCURRENTLY`` of the tables keyed by object ids (builds each index anew beside
    the old one and swaps it in: readers and writers go on meanwhile). An invalid index
    left by an interrupted rebuild (``*_ccnew``) is dropped first. SQLite: ``VACUUM`` of
    a file up to :data:`SQLITE_VACUUM_MAX`, else ``PRAGMA incremental_vacuum``.
    """
    with backend.engine.connect() as conn:
        if backend.dialect == "postgresql":
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(text("VACUUM govc_objects"))
            leftovers = conn.execute(
                text(
                    "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                    "JOIN pg_class t ON t.oid = i.indrelid WHERE NOT i.indisvalid "
                    "AND t.relname LIKE 'govc\\_%' AND c.relname LIKE '%\\_ccnew%' "
                    "AND t.relnamespace = c.relnamespace "
                    "AND t.relnamespace = current_schema()::regnamespace"
                )
            ).scalars()
            for name in list(leftovers):
                conn.execute(text(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"'))
            for table in REINDEXED:
                conn.execute(text(f"REINDEX TABLE CONCURRENTLY {table}"))
            return "VACUUM govc_objects; REINDEX TABLE CONCURRENTLY " + ", ".join(REINDEXED)
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar() or 0
        page_size = conn.exec_driver_sql("PRAGMA page_size").scalar() or 0
        conn.commit()
        if int(pages) * int(page_size) <= SQLITE_VACUUM_MAX and _sqlite_vacuum(backend):
            return "VACUUM"
        conn.exec_driver_sql("PRAGMA incremental_vacuum")
        conn.commit()
        return "PRAGMA incremental_vacuum"


def _sqlite_vacuum(backend: SqlBackend) -> bool:
    """``VACUUM`` on a pooled connection outside any transaction (the engine's BEGIN
    listener would open one around a SQLAlchemy statement); False when the file stayed
    busy past the busy timeout (then the incremental vacuum runs instead)."""
    raw = backend.engine.raw_connection()
    try:
        cur = raw.cursor()
        try:
            cur.execute("VACUUM")
        except sqlite3.OperationalError:
            return False
        finally:
            cur.close()
        return True
    finally:
        raw.close()

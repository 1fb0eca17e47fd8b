"""Batch executor: coalesced object writes and bulk reads by id.

Writes. A unit's ``put_many`` calls land in one :class:`ObjectBatch` (per unit, used by
one thread, like the unit's connection). It is flushed

* by count, at ``Settings.batch_max_rows`` pending rows;
* by bytes, at ``Settings.batch_max_bytes`` pending bytes, counted *uncompressed*, so the
  limit also bounds the buffer's memory;
* before reads that must see the table (prefix search, listing every id): ``"read"``;
* before a savepoint starts: ``"savepoint"``, so a rolled-back savepoint drops exactly the
  rows buffered inside it (:meth:`ObjectBatch.discard`);
* before the transaction commits: ``"commit"``.

Reads by id (get, has) are answered from the buffer first and from the table for the rest,
so a unit always reads its own writes without forcing a flush.

Strategies, picked per flush by dialect and row count (measured side by side by
``python -m bench.bulk``, whose ``--sweep`` placed the crossover between 128 and 256 rows
of 1 KB):

* PostgreSQL, ``COPY_MIN_ROWS`` rows or more: ``COPY ... (FORMAT BINARY)`` into a session
  temporary table, then ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` from it. Three
  round trips: (create if missing; truncate), COPY, insert. The table is created with
  ``IF NOT EXISTS`` on every COPY flush, which stays correct when the savepoint or
  transaction that created it rolled back, and behind PgBouncer transaction pooling, where
  the next transaction may run on another server session. Not usable in psycopg pipeline
  mode (libpq has no COPY there).
* PostgreSQL below that, and SQLite always: ``executemany`` of ``INSERT ... ON CONFLICT
  DO NOTHING`` (psycopg 3 pipelines it: one round trip; it is prepared like any hot
  statement). For the one-to-three-row batches of a one-file commit this is much faster
  than COPY.

Write-behind (:meth:`ObjectBatch.flush_behind`, used by bulk writers: an import slice, a
pushed pack). On PostgreSQL, a flush that would COPY runs on a thread of its own while the
caller goes on encoding the next rows: the server inserts one batch (index entries,
foreign-key checks: most of an import's database time) while the client prepares the
next. The connection is used by one thread at a time all the same: every other use of
the batch (flush, take, discard, a write) waits for the write in flight first, and the
bulk writer waits before it returns (:meth:`ObjectBatch.wait`), so nothing else in the
unit ever sees one in flight. Not on SQLite, whose driver hands the GIL over for every
row it steps: a thread inserting there stalls the caller (an import measured 2x slower).

Rows are written in id order, so concurrent transactions inserting overlapping objects
take their row locks in the same order and do not deadlock each other within a flush.

Bulk reads. On PostgreSQL ids travel as one ``bytea[]`` parameter (``oid = ANY(:oids)``):
one statement text whatever the count, so psycopg prepares it once. SQLite has no array
type; there ids go in ``IN (...)`` lists of at most ``SQLITE_READ_CHUNK``.

Written by hand because SQLAlchemy has no COPY; the COPY protocol itself is psycopg's.
"""

from __future__ import annotations

import contextvars
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import itemgetter
from typing import Any, Final

from sqlalchemy import Connection

from govc_db.db.pipeline import wrap_driver_error
from govc_db.settings import Settings

__all__ = [
    "COPY_MIN_ROWS",
    "BackgroundCall",
    "FLUSH_REASONS",
    "PG_READ_CHUNK",
    "SQLITE_READ_CHUNK",
    "BatchExecutor",
    "ObjectBatch",
    "Row",
]

#: One ``govc_objects`` row: (repo_id, oid, type, size, encoding, data).
Row = tuple[int, bytes, int, int, int, bytes]

#: Flushes of at least this many rows use COPY on PostgreSQL (see bench/bulk.py).
COPY_MIN_ROWS: Final = 200
#: Ids per ``= ANY(:oids)`` array on PostgreSQL; bounds one result set, not the SQL text.
PG_READ_CHUNK: Final = 5000
#: Ids per ``IN (...)`` list on SQLite.
SQLITE_READ_CHUNK: Final = 500
#: Why a batch was flushed; each is a counter in :meth:`BatchExecutor.get_stats`.
FLUSH_REASONS: Final = ("count", "bytes", "read", "savepoint", "commit")

_COLUMNS = "repo_id, oid, type, size, encoding, data"
_INSERT_PG = (
    f"INSERT INTO govc_objects ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
_INSERT_SQLITE = (
    f"INSERT INTO govc_objects ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_TEMP = "pg_temp.govc_objects_batch"  # qualified: never a permanent table of that name
# Explicit columns rather than LIKE govc_objects: a table left in a pooled session by an
# older schema still matches what COPY and the INSERT below name. ON COMMIT DELETE ROWS
# empties it at commit, which also resets its storage (autovacuum never visits temp tables).
_CREATE_TEMP = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_TEMP} (repo_id bigint, oid bytea, type smallint, "
    "size bigint, encoding smallint, data bytea) ON COMMIT DELETE ROWS"
)
# Before each COPY: the table exists in this session and is empty. One round trip in the
# simple query protocol (two statements cannot be prepared). TRUNCATE rather than DELETE:
# deleted rows of the earlier flushes of a transaction are not vacuumable until it ends,
# and every later flush would scan them again (quadratic in the transaction's size).
_RESET = f"{_CREATE_TEMP}; TRUNCATE {_TEMP}"
_COPY = f"COPY {_TEMP} ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_COPY_TYPES: Final = ("int8", "bytea", "int2", "int8", "int2", "bytea")
# The rows are copied in id order, and a temporary table is never scanned in parallel, so
# this reads them back in that order (the lock order) without an ORDER BY, which costs
# about a tenth of the flush.
_MOVE = (
    f"INSERT INTO govc_objects ({_COLUMNS}) SELECT {_COLUMNS} FROM {_TEMP} ON CONFLICT DO NOTHING"
)

_by_oid = itemgetter(1)


class BatchExecutor:
    """Writes object rows with the fastest strategy for their count; one per engine.

    Thread-safe: it holds only configuration and counters. Per-unit state lives in the
    :class:`ObjectBatch` objects it hands out.
    """

    def __init__(
        self,
        dialect: str,
        *,
        enabled: bool = True,
        max_rows: int = 1000,
        max_bytes: int = 8 * 1024 * 1024,
        copy_min_rows: int = COPY_MIN_ROWS,
    ) -> None:
        self.dialect = dialect
        self.enabled = enabled
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.copy_min_rows = copy_min_rows
        self.read_chunk = PG_READ_CHUNK if dialect == "postgresql" else SQLITE_READ_CHUNK
        self._insert = _INSERT_PG if dialect == "postgresql" else _INSERT_SQLITE
        self._lock = threading.Lock()
        self._stats: Counter[str] = Counter()

    @property
    def insert_sql(self) -> str:
        """The object-row ``INSERT ... ON CONFLICT DO NOTHING`` (positional parameters in
        :data:`Row` order) for this dialect."""
        return self._insert

    @classmethod
    def from_settings(cls, dialect: str, settings: Settings) -> BatchExecutor:
        """The executor configured by ``settings`` (``batch_*`` fields)."""
        return cls(
            dialect,
            enabled=settings.batch_enabled,
            max_rows=settings.batch_max_rows,
            max_bytes=settings.batch_max_bytes,
        )

    def batch(self, conn: Connection) -> ObjectBatch:
        """A new, empty buffer for the unit running on ``conn``."""
        return ObjectBatch(self, conn)

    # writing ---------------------------------------------------------------------------
    def write(self, conn: Connection, rows: Sequence[Row], reason: str) -> None:
        """Insert ``rows`` (distinct ids) with ``ON CONFLICT DO NOTHING`` semantics."""
        if not rows:
            return
        ordered = sorted(rows, key=_by_oid)  # the lock order (see the module docstring)
        if self.dialect == "postgresql" and len(rows) >= self.copy_min_rows and self.enabled:
            self._copy(conn, ordered)
            strategy = "copy"
        else:
            conn.exec_driver_sql(self._insert, ordered)
            strategy = "executemany"
        self.count_write(rows, reason, strategy)

    def count_write(self, rows: Sequence[Row], reason: str, strategy: str) -> None:
        """Account one batch of ``rows`` written (``strategy``: copy, executemany, or
        pipeline when the rows rode in a unit's write pipeline)."""
        size = sum(len(r[5]) for r in rows)
        with self._lock:
            s = self._stats
            s["batches"] += 1
            s["rows"] += len(rows)
            s["bytes"] += size
            s["flush_" + reason] += 1
            s["strategy_" + strategy] += 1
            if len(rows) > s["max_batch_rows"]:
                s["max_batch_rows"] = len(rows)

    def writes_behind(self, rows: int) -> bool:
        """Whether a flush of ``rows`` rows may run on a thread of its own (a COPY on
        PostgreSQL; see the module docstring)."""
        return self.dialect == "postgresql" and self.enabled and rows >= self.copy_min_rows

    def _copy(self, conn: Connection, rows: Sequence[Row]) -> None:
        import psycopg  # only PostgreSQL flushes get here

        # On the driver connection under SQLAlchemy's (same transaction): SQLAlchemy has
        # no COPY, and the reset needs the simple protocol.
        driver: Any = conn.connection.driver_connection
        try:
            with driver.cursor() as cur:
                cur.execute(_RESET, prepare=False)
                with cur.copy(_COPY) as copy:
                    copy.set_types(_COPY_TYPES)
                    for row in rows:
                        copy.write_row(row)
                cur.execute(_MOVE)
        except psycopg.Error as exc:
            raise wrap_driver_error(conn, exc, "COPY (object batch)") from exc

    # reading ---------------------------------------------------------------------------
    def id_chunks(self, ids: Sequence[bytes]) -> Iterator[list[bytes]]:
        """``ids`` cut into the lists one bulk-read statement takes on this dialect."""
        size = self.read_chunk
        for i in range(0, len(ids), size):
            yield list(ids[i : i + size])

    def count_read(self, *, statements: int, ids: int, from_buffer: int) -> None:
        """Account one bulk read (the store calls this once per get_many/has_many)."""
        with self._lock:
            s = self._stats
            s["bulk_reads"] += 1
            s["bulk_read_statements"] += statements
            s["bulk_read_ids"] += ids
            s["buffer_hits"] += from_buffer

    def count_put(self, *, objects: int, duplicates: int) -> None:
        """Account objects handed to put_many and those already pending in the buffer."""
        with self._lock:
            self._stats["objects"] += objects
            self._stats["duplicates"] += duplicates

    def get_stats(self) -> dict[str, Any]:
        """Counters: batches, rows, bytes, flushes by reason, strategies, bulk reads."""
        with self._lock:
            s = Counter(self._stats)
        batches = s["batches"]
        return {
            "enabled": self.enabled,
            "max_rows": self.max_rows,
            "max_bytes": self.max_bytes,
            "objects": s["objects"],
            "duplicates": s["duplicates"],
            "batches": batches,
            "rows": s["rows"],
            "bytes": s["bytes"],
            "avg_batch_rows": s["rows"] / batches if batches else 0.0,
            "max_batch_rows": s["max_batch_rows"],
            "flushes": {r: s["flush_" + r] for r in (*FLUSH_REASONS, "direct")},
            "strategies": {k: s["strategy_" + k] for k in ("copy", "executemany", "pipeline")},
            "bulk_reads": s["bulk_reads"],
            "bulk_read_statements": s["bulk_read_statements"],
            "bulk_read_ids": s["bulk_read_ids"],
            "buffer_hits": s["buffer_hits"],
        }


class ObjectBatch:
    """Object rows of one unit not yet sent to the database.

    Not thread-safe (one unit, one thread). Ids are unique in the buffer: an object put
    twice is buffered and written once.
    """

    __slots__ = ("_behind", "_conn", "_executor", "_nbytes", "_pending")

    def __init__(self, executor: BatchExecutor, conn: Connection) -> None:
        self._executor = executor
        self._conn = conn
        # oid -> (row, uncompressed content); the content answers reads from the buffer.
        self._pending: dict[bytes, tuple[Row, bytes]] = {}
        self._nbytes = 0
        self._behind: BackgroundCall | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, oid: object) -> bool:
        return oid in self._pending

    @property
    def nbytes(self) -> int:
        """Uncompressed bytes pending."""
        return self._nbytes

    def add(self, row: Row, content: bytes) -> str | None:
        """Buffer ``row`` (its id must not be pending); the flush reason if now full."""
        self._pending[row[1]] = (row, content)
        self._nbytes += len(content)
        ex = self._executor
        if len(self._pending) >= ex.max_rows:
            return "count"
        if self._nbytes >= ex.max_bytes:
            return "bytes"
        return None

    def get(self, oid: bytes) -> tuple[int, bytes] | None:
        """``(type number, content)`` of a pending object, or None."""
        hit = self._pending.get(oid)
        return None if hit is None else (hit[0][2], hit[1])

    def flush(self, reason: str) -> None:
        """Send every pending row (nothing to do when empty)."""
        self.wait()
        if not self._pending:
            return
        rows = [row for row, _ in self._pending.values()]
        # Cleared only once written: if the write fails the transaction is lost anyway,
        # and a retry of the flush must not silently skip rows.
        self._executor.write(self._conn, rows, reason)
        self._pending.clear()
        self._nbytes = 0

    def flush_behind(self, reason: str) -> None:
        """As :meth:`flush`, but where the executor allows it (a COPY on PostgreSQL) the
        rows are written on a thread of its own and this returns at once. The caller must
        call :meth:`wait` before it lets anything else use the unit; every method of the
        batch waits first."""
        self.wait()
        ex = self._executor
        if not ex.writes_behind(len(self._pending)):
            self.flush(reason)
            return
        rows = [row for row, _ in self._pending.values()]
        self._pending.clear()
        self._nbytes = 0
        self._behind = BackgroundCall("govc-write-behind", ex.write, self._conn, rows, reason)

    def wait(self, *, raise_error: bool = True) -> None:
        """Wait for the write in flight (:meth:`flush_behind`), if any; raise its error
        (``raise_error``)."""
        behind = self._behind
        if behind is not None:
            try:
                # Returns or raises (an interrupt, the write's error) only once the thread
                # ended: a rollback never runs on the connection while the COPY uses it.
                behind.join(raise_error=raise_error)
            finally:
                self._behind = None

    def take(self, reason: str) -> list[Row]:
        """Hand every pending row, in id order (the lock order), to the caller, which
        writes them in its own statement (a unit's write pipeline); counted as written."""
        self.wait()
        rows = sorted((row for row, _ in self._pending.values()), key=_by_oid)
        if rows:
            self._executor.count_write(rows, reason, "pipeline")
        self._pending.clear()
        self._nbytes = 0
        return rows

    def write_now(self, rows: Iterable[Row]) -> None:
        """Unbuffered write (batching switched off): executemany, as without an executor."""
        self.wait()
        batch = list(rows)
        for i in range(0, len(batch), self._executor.max_rows):
            self._executor.write(self._conn, batch[i : i + self._executor.max_rows], "direct")

    def discard(self) -> None:
        """Drop every pending row (the savepoint or transaction they belong to rolled back)."""
        self.wait(raise_error=False)  # what it wrote is rolled back with the rest
        self._pending.clear()
        self._nbytes = 0


class BackgroundCall:
    """``fn(*args)`` on a daemon thread of its own, in the caller's context (its context
    variables: tracing, metrics); what it raised is handed over by :meth:`join`."""

    def __init__(self, name: str, fn: Callable[..., object], *args: object) -> None:
        self._error: BaseException | None = None
        ctx = contextvars.copy_context()
        self._thread = threading.Thread(
            target=ctx.run, args=(self._run, fn, *args), name=name, daemon=True
        )
        self._thread.start()

    def _run(self, fn: Callable[..., object], *args: object) -> None:
        try:
            fn(*args)
        except BaseException as exc:  # handed to the caller by join()
            self._error = exc

    def join(self, *, raise_error: bool = True) -> None:
        """Wait for the call; raise what it raised (``raise_error``; otherwise drop it).
        An interrupt during the wait is raised only after the thread ended (it may be
        using a connection the caller is about to roll back)."""
        interrupted: BaseException | None = None
        while True:
            try:
                self._thread.join()
                break
            except BaseException as exc:  # KeyboardInterrupt: wait on, then raise it
                interrupted = exc
        if interrupted is not None:
            raise interrupted
        error, self._error = self._error, None
        if error is not None and raise_error:
            raise error

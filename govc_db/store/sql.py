"""The SQL store: objects, refs (compare-and-swap) and the commit index over SQLAlchemy Core.

One :class:`SqlUnit` is one connection in one transaction, scoped to a repository;
it implements the three ports of :mod:`govc_db.store.ports`. Statements are built
once at import so SQLAlchemy's compiled cache hits on every call. Driver errors
are translated into :mod:`govc_db.errors` here and nowhere else.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from hashlib import sha1
from typing import Any, TypeVar

import zstandard
from sqlalchemy import (
    Connection,
    Engine,
    delete,
    literal_column,
)
from sqlalchemy.exc import IntegrityError

from govc_db.db.batch import BatchExecutor, Row
from govc_db.db.cache import TOKEN_KEY, QueryCache, uncached_active
from govc_db.db.cache_ports import CachedIndex, CachedObjects, CachedRefs, ReadMemo
from govc_db.db.engine import WRITE_OPTION
from govc_db.db.notify import NOTIFY_STATEMENT, ref_message, repository_deleted_message
from govc_db.db.pipeline import (
    PipelineStats,
    RawStatement,
    WritePipeline,
    compile_raw,
    wrap_driver_error,
)
from govc_db.db.txn import Transaction, TransactionManager
from govc_db.errors import AlreadyExists, GovcError, InvalidInput, NotFound, StoreUnavailable
from govc_db.objects import TYPE_NAMES, TYPE_NUMBERS, ObjectId, hash_object
from govc_db.store.cached_read import CacheMiss, ReadStats
from govc_db.store.codec import (
    DELTA_ENCODINGS,
    ENC_SMALL,
    ENC_SPLICE,
    OID_LEN,
    Codec,
    DecodedCache,
    parse_splice,
    resolve_rows,
)
from govc_db.store.packs import PackStore
from govc_db.store.ports import IndexEntry, RawObject, RefLogEntry, Splice
from govc_db.store.reflog import moves_of_row
from govc_db.store.statements import (
    DEPENDENT_TABLES,
    PREFIX_RE,
    S_ANCESTRY,
    S_CHAIN,
    S_CHAIN_ONE,
    S_CHAIN_PG,
    S_IDX_ALL,
    S_IDX_PAR_GET,
    S_IDX_PAR_GET_PG,
    S_IDX_WINDOW,
    S_LOG_ADD,
    S_LOG_ADD_PG,
    S_LOG_GET,
    S_OBJ_ALL,
    S_OBJ_GET,
    S_OBJ_GET_ONE,
    S_OBJ_GET_PG,
    S_OBJ_HAS,
    S_OBJ_HAS_ONE,
    S_OBJ_HAS_PG,
    S_OBJ_PREFIX,
    S_PATH_ALL,
    S_PATH_OF,
    S_PATH_TOUCH,
    S_PATH_TOUCH_PG,
    S_REF_ALL,
    S_REF_CAS,
    S_REF_DEL_IF,
    S_REF_GET,
    S_REF_GET_MANY,
    S_REF_LIST,
    S_REF_LIST_PG,
    S_REPO_DEL,
    S_REPO_EXISTS,
    S_REPO_GET,
    S_REPO_LIST,
    S_REPO_NAME,
    T_COMMIT,
    T_OBJ,
    T_REF,
    T_REPO,
    decode_changed,
    encode_changed,
    group_index_rows,
    insert_ignore,
    join_parents,
    touches,
    type_name_of,
)

__all__ = ["RepositoryRecord", "SqlBackend", "SqlUnit"]

log = logging.getLogger("govc_db.store")

T = TypeVar("T")

#: Objects up to this size are remembered in the decoded cache once written.
REMEMBER_MAX = 1024 * 1024

#: Rows :meth:`SqlObjects.put_bulk` buffers before a flush by count (the byte bound of
#: the batch executor still applies). Measured, 20,000 small objects in one unit: 1,000
#: rows per COPY 0.52-1.18 s, 10,000 rows 0.46-0.57 s. On SQLite, the 50,114 objects of
#: the bench's 10,001-commit import (trees mostly splice deltas, 30-60 bytes a row): 1.33
#: s of CPU with 1,000-row executemany batches, 1.25 s with 10,000 (rows sorted by id
#: land closer together in the table's B-tree).
BULK_ROWS = 10_000
#: As :data:`BULK_ROWS` where a flush is written behind (a COPY on PostgreSQL, see
#: ``ObjectBatch.flush_behind``): smaller, so that less of a slice is left to wait for
#: once its last row is encoded.
BULK_BEHIND_ROWS = 5_000

#: The rows of :meth:`SqlObjects.get_bulk`, in the column order of ``resolve_rows``.
_BULK_COLUMNS = "oid, type, size, encoding, data FROM govc_objects WHERE repo_id = "
_BULK_GET_PG = "SELECT " + _BULK_COLUMNS + "%s AND oid = ANY(%s)"
_BULK_GET_SQLITE: dict[int, str] = {}


def _bulk_get_sqlite(n: int) -> str:
    """The SQLite read of ``n`` ids (cached per count: chunks are mostly full)."""
    sql = _BULK_GET_SQLITE.get(n)
    if sql is None:
        sql = _BULK_GET_SQLITE[n] = (
            "SELECT " + _BULK_COLUMNS + "? AND oid IN (" + ",".join("?" * n) + ")"
        )
    return sql


# -- the unit of work -------------------------------------------------------------------
class _Speculation(Exception):
    """A speculative unit's assumption did not hold: a ref it moved by compare-and-swap had
    moved (``refs`` names them). The unit is rolled back and run again without speculation."""

    def __init__(self, refs: Sequence[str]) -> None:
        super().__init__(", ".join(refs))
        self.refs = tuple(refs)


def decoded_first(
    cache: DecodedCache, repo_id: int, oids: Sequence[ObjectId], out: dict[ObjectId, RawObject]
) -> list[ObjectId]:
    """Put in ``out`` the objects among ``oids`` that the decoded cache holds whole
    (written or decoded by this process, with their type): a delta object decoded before
    or just written needs no chain query. Returns the ids still to read. Not under
    :func:`govc_db.db.cache.uncached` (``verify()`` checks the stored rows)."""
    rest: list[ObjectId] = []
    lookup = cache.lookup
    for oid in oids:
        hit = lookup(repo_id, oid)
        if hit is None:
            rest.append(oid)
        else:
            out[oid] = RawObject(type_name_of(hit[0], oid), hit[1])
    return rest


class SqlUnit:
    """One connection, one transaction, one repository: implements all three ports.

    A *speculative* unit (``speculative=True``, see :meth:`SqlBackend.run_unit`) queues
    its writes in a :class:`~govc_db.db.pipeline.WritePipeline` and sends them together at
    :meth:`flush`; its compare-and-swaps report success at once and are checked then.
    """

    def __init__(
        self, conn: Connection, repo_id: int, backend: SqlBackend, *, speculative: bool = False
    ) -> None:
        self.conn = conn
        self.repo_id = repo_id
        self._backend = backend
        self._hooks: list[Callable[[], None]] = []
        self.pipe: WritePipeline | None = (
            WritePipeline(conn, backend.pipeline) if speculative else None
        )
        self.objects: SqlObjects | CachedObjects = SqlObjects(self)
        sql_refs = SqlRefs(self)
        self.refs: SqlRefs | CachedRefs | OptimisticRefs = (
            OptimisticRefs(sql_refs, backend, repo_id) if speculative else sql_refs
        )
        self.index: SqlIndex | CachedIndex = SqlIndex(self)
        #: Set in a cached read unit: remembers resolved reads for :func:`read_cached`.
        self.read_memo: ReadMemo | None = None
        cache = backend.cache
        if cache is None or uncached_active():
            return
        # The wrappers forward what they do not override (flush, discard ...) to the
        # SQL stores. A write transaction reads the database for refs (compare-and-swap
        # must) and hands what it read to the immutable cache only once it committed.
        write = bool(conn.get_execution_options().get(WRITE_OPTION, False))
        defer = self.after_commit if write else None
        self.objects = CachedObjects(self.objects, cache, repo_id, defer)
        self.index = CachedIndex(self.index, cache, repo_id, defer)
        if not write and not speculative:
            # Taken at checkout, before this transaction's first statement (its snapshot).
            token = conn.info.get(TOKEN_KEY)
            if not isinstance(token, int):
                token = cache.token()
            self.refs = CachedRefs(self.refs, cache, repo_id, token)
            self.read_memo = ReadMemo(cache, repo_id, token)

    @contextmanager
    def savepoint(self) -> Iterator[object]:
        """A SAVEPOINT; rolled back (and the error re-raised) if the block raises.

        Batched object writes are flushed first, so the rows still buffered when the
        block raises are exactly the block's own, and are dropped with it; so are the
        after-commit hooks it registered (events of a ref move that was undone, cache
        fills of objects that no longer exist).
        """
        self.objects.flush("savepoint")
        hooks = len(self._hooks)
        with self.conn.begin_nested() as nested:
            try:
                yield nested
            except BaseException:
                self.objects.discard()
                del self._hooks[hooks:]
                raise

    def flush(self) -> None:
        """Write the batched object rows (and, in a speculative unit, everything queued);
        the owner of the transaction calls this before COMMIT (or before releasing the
        savepoint the unit runs in). ``_Speculation`` when a compare-and-swap failed."""
        pipe = self.pipe
        if pipe is None:
            self.objects.flush("commit")
            return
        objects: Any = self.objects
        objects.flush_into(pipe)
        self.drain()

    def drain(self) -> None:
        """Send the queued writes of a speculative unit now (before a read that must see
        them); ``_Speculation`` when a compare-and-swap among them failed."""
        pipe = self.pipe
        if pipe:
            failed = pipe.run()
            if failed:
                raise _Speculation(failed)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` after this unit's transaction committed."""
        self._hooks.append(callback)

    def close(self) -> None:
        """Drop the unit's stores once its transaction is over. They point back at the
        unit (and the cache wrappers at its ``after_commit``), so an unclosed unit is a
        reference cycle of some 70 objects a commit, which only the cyclic collector
        frees: most of what every generation-0 collection of a writer walked and freed."""
        del self.objects, self.refs, self.index
        self._hooks = []  # the transaction's list: its hooks hold the stores

    def execute(self, stmt: Any, params: Any = None) -> Any:
        """Execute with the repository id bound (``params`` may be a dict or a list)."""
        if params is None:
            params = {"repo_id": self.repo_id}
        elif isinstance(params, dict):
            params = {"repo_id": self.repo_id, **params}
        return self.conn.execute(stmt, params)


class SqlObjects:
    """ObjectStore over ``govc_objects``; writes go through the unit's object batch."""

    def __init__(self, unit: SqlUnit) -> None:
        self._u = unit
        self._codec = unit._backend.codec
        self._ex = unit._backend.batch
        self._batch = self._ex.batch(unit.conn)
        self._pg = self._ex.dialect == "postgresql"
        self._streamed: dict[int, tuple[object, ObjectId]] = {}
        #: Chain depth of the rows this unit wrote (the base of a later put may be one).
        self._depths: dict[bytes, int] = {}

    def flush(self, reason: str) -> None:
        """Write the pending rows (``reason`` is counted in the batch stats)."""
        self._batch.flush(reason)

    def discard(self) -> None:
        """Drop the pending rows (their savepoint rolled back)."""
        self._batch.discard()

    def flush_into(self, pipe: WritePipeline) -> None:
        """Queue the pending rows in ``pipe`` (a speculative unit's last step); a batch
        large enough for COPY is written with COPY first instead."""
        batch = self._batch
        if not batch:
            return
        if self._pg and len(batch) >= self._ex.copy_min_rows:
            batch.flush("commit")
            return
        pipe.add(self._u._backend.raw_statements().objects, batch.take("commit"), many=True)

    def get(self, oid: ObjectId) -> RawObject:
        """The object; ``NotFound`` if absent."""
        found = self.get_many([oid])
        if oid not in found:
            raise NotFound(f"object {oid.hex()} not found")
        return found[oid]

    def _buffered(
        self, oids: Iterable[ObjectId]
    ) -> tuple[dict[ObjectId, RawObject], list[ObjectId]]:
        """The objects among ``oids`` (duplicates dropped) that this unit's pending writes
        hold, and the ids left to read from the database, in order."""
        wanted = list(dict.fromkeys(oids))
        out: dict[ObjectId, RawObject] = {}
        batch = self._batch
        if not batch:
            return out, wanted
        rest: list[ObjectId] = []
        for oid in wanted:
            hit = batch.get(oid)
            if hit is None:
                rest.append(oid)
            else:
                out[oid] = RawObject(type_name_of(hit[0], oid), hit[1])
        return out, rest

    def get_many(self, oids: Iterable[ObjectId]) -> dict[ObjectId, RawObject]:
        """The objects that exist among ``oids``; pending writes answer from the buffer."""
        out, wanted = self._buffered(oids)
        hits = len(out)
        asked = hits + len(wanted)
        if self._codec.optimizer and wanted and not uncached_active():
            wanted = decoded_first(self._codec.cache, self._u.repo_id, wanted, out)
        large = self._u._backend.large_blobs
        statements = 0
        rows: list[Any] = []
        # One id (the commonest read): its row and, for a delta, its whole chain in one
        # statement (a cold read of a delta costs no second round trip).
        one = S_CHAIN_ONE if self._codec.optimizer else S_OBJ_GET_ONE
        for stmt, params in self._statements(wanted, one, S_OBJ_GET_PG, S_OBJ_GET):
            statements += 1
            for row in self._u.execute(stmt, params):
                if large is not None and row.encoding == large.encoding:
                    # A chunked blob, asked for whole (get_object, read): assembled here.
                    data = large.read_whole(self._u.conn, self._u.repo_id, row.data, row.size)
                    out[ObjectId(bytes(row.oid))] = RawObject(type_name_of(row.type, row.oid), data)
                else:
                    rows.append(row)
        rows.extend(self._packed([o for o in wanted if o not in out], rows))
        keep = set(wanted)
        for key, (number, data, _depth) in self._resolve(rows).items():
            if key in keep:
                out[ObjectId(key)] = RawObject(type_name_of(number, key), data)
        self._ex.count_read(statements=statements, ids=asked, from_buffer=hits)
        return out

    def get_bulk(self, oids: Sequence[ObjectId]) -> dict[ObjectId, RawObject]:
        """As :meth:`get_many`, for reading many objects once (a clone's or fetch's pack).

        The rows are read on this unit's connection (same transaction) through the
        driver's own cursor, each chunk fetched whole (binary results on PostgreSQL),
        without SQLAlchemy's per-row processing; delta rows are resolved together with
        the chains they need, and nothing decoded goes to the decoded cache (objects read
        once for a pack would only evict the ones that are read again).
        """
        out, wanted = self._buffered(oids)
        hits = len(out)
        if not wanted:
            self._ex.count_read(statements=0, ids=hits, from_buffer=hits)
            return out
        rows, statements = self._bulk_rows(wanted)
        self._bulk_decode(wanted, rows, out)
        self._ex.count_read(statements=statements, ids=hits + len(wanted), from_buffer=hits)
        return out

    def get_bulk_spliced(self, oids: Sequence[ObjectId]) -> dict[ObjectId, RawObject | Splice]:
        """As :meth:`get_bulk`, except that a row stored as a splice (encoding 6) is
        returned as a :class:`Splice` naming its base, not rebuilt: no chain query and
        no decode for it (a clone's pack sends most trees that way, see the port)."""
        found, wanted = self._buffered(oids)
        out: dict[ObjectId, RawObject | Splice] = dict(found)
        if wanted:
            rows, statements = self._bulk_rows(wanted)
            self._spliced(wanted, rows, out)
        else:
            statements = 0
        self._ex.count_read(statements=statements, ids=len(out), from_buffer=len(found))
        return out

    def iter_bulk(
        self, chunks: Iterable[Sequence[ObjectId]], *, spliced: bool = False
    ) -> Generator[dict[ObjectId, RawObject | Splice], None, None]:
        """:meth:`get_bulk` (or, with ``spliced``, :meth:`get_bulk_spliced`) of each
        chunk, in order. On PostgreSQL the rows of the next chunk are read on a helper
        thread while the caller works on this one: the same connection and transaction
        (psycopg serializes its use), so the database's time and the round trips overlap
        the caller's. Close the iterator (``contextlib.closing``) if it is left early:
        that waits for the read in flight."""
        todo = [self._buffered(c) for c in chunks]
        if not self._pg or len(todo) < 2:
            for found, wanted in todo:
                out: dict[ObjectId, RawObject | Splice] = dict(found)
                if wanted:
                    rows, statements = self._bulk_rows(wanted)
                    self._decode_into(wanted, rows, out, spliced)
                    self._ex.count_read(statements=statements, ids=len(out), from_buffer=0)
                yield out
            return
        pool = ThreadPoolExecutor(1, thread_name_prefix="govc-prefetch")
        ahead: Future[tuple[list[Any], int]] | None = None
        try:
            if todo[0][1]:
                ahead = pool.submit(self._bulk_rows, todo[0][1])
            for i, (found, wanted) in enumerate(todo):
                got = ahead.result() if wanted and ahead is not None else ([], 0)
                ahead = None
                if i + 1 < len(todo) and todo[i + 1][1]:
                    ahead = pool.submit(self._bulk_rows, todo[i + 1][1])
                out = dict(found)
                if wanted:
                    self._decode_into(wanted, got[0], out, spliced)
                    self._ex.count_read(statements=got[1], ids=len(out), from_buffer=0)
                yield out
        finally:
            if ahead is not None:
                ahead.cancel()
                with contextlib.suppress(Exception):
                    ahead.result()
            pool.shutdown(wait=True)

    def _decode_into(
        self,
        wanted: Sequence[ObjectId],
        rows: list[Any],
        out: dict[ObjectId, RawObject | Splice],
        spliced: bool,
    ) -> None:
        if spliced:
            self._spliced(wanted, rows, out)
        else:
            decoded: dict[ObjectId, RawObject] = {}
            self._bulk_decode(wanted, rows, decoded)
            out.update(decoded)

    def _spliced(
        self, wanted: Sequence[ObjectId], rows: list[Any], out: dict[ObjectId, RawObject | Splice]
    ) -> None:
        """Decode ``rows`` of ``wanted`` into ``out``, splice rows as :class:`Splice`."""
        rest: list[Any] = []
        names = TYPE_NAMES
        for row in rows:
            if row[3] == ENC_SPLICE:
                name = names.get(row[1]) or type_name_of(row[1], row[0])
                base, prefix, suffix, middle = parse_splice(row[4])
                out[ObjectId(bytes(row[0]))] = Splice(
                    name, row[2], ObjectId(base), prefix, suffix, middle
                )
            else:
                rest.append(row)
        if len(rest) < len(rows):
            wanted = [o for o in wanted if o not in out]
        decoded: dict[ObjectId, RawObject] = {}
        self._bulk_decode(wanted, rest, decoded)
        out.update(decoded)

    def _bulk_rows(self, wanted: Sequence[ObjectId]) -> tuple[list[Any], int]:
        """The stored rows of ``wanted`` (those in ``govc_objects``) read through the
        driver's own cursor, and the number of statements."""
        conn = self._u.conn
        repo_id = self._u.repo_id
        rows: list[Any] = []
        statements = 0
        driver: Any = conn.connection.driver_connection
        try:
            if self._pg:
                with driver.cursor(binary=True) as cur:
                    for chunk in self._ex.id_chunks(wanted):
                        statements += 1
                        cur.execute(_BULK_GET_PG, (repo_id, chunk))
                        rows.extend(cur.fetchall())
            else:
                cur = driver.cursor()
                try:
                    for chunk in self._ex.id_chunks(wanted):
                        statements += 1
                        cur.execute(_bulk_get_sqlite(len(chunk)), (repo_id, *chunk))
                        rows.extend(cur.fetchall())
                finally:
                    cur.close()
        except conn.dialect.loaded_dbapi.Error as exc:
            raise wrap_driver_error(conn, exc, "object read (bulk)") from exc
        return rows, statements

    def _bulk_decode(
        self, wanted: Sequence[ObjectId], rows: list[Any], out: dict[ObjectId, RawObject]
    ) -> None:
        """Decode ``rows`` (of ``wanted``; those missing are looked up in the packs) into
        ``out``, delta chains resolved, nothing put in the decoded cache."""
        conn = self._u.conn
        repo_id = self._u.repo_id
        large = self._u._backend.large_blobs
        plain: list[tuple[Any, ...]] = []
        small = self._codec.small_decompressor()
        names = TYPE_NAMES
        try:
            for row in rows:
                name = names.get(row[1])
                if row[3] == ENC_SMALL and name is not None:  # most rows: decoded here
                    out[ObjectId(bytes(row[0]))] = RawObject(
                        name, small.decompress(row[4], max_output_size=row[2])
                    )
                elif large is not None and row[3] == large.encoding:
                    data = large.read_whole(conn, repo_id, row[4], row[2])
                    out[ObjectId(bytes(row[0]))] = RawObject(type_name_of(row[1], row[0]), data)
                else:
                    plain.append(row)
        except zstandard.ZstdError as exc:
            raise GovcError("stored object data is corrupt (cannot decompress)") from exc
        if len(rows) < len(wanted):
            plain.extend(self._packed(wanted, rows))
        if not plain:
            return
        # A list for ``deferred``: decoded delta objects are collected there, not cached.
        decoded = resolve_rows(self._codec, repo_id, plain, self._fetch_chains, [])
        keep = set(wanted)
        for key, (number, data, _depth) in decoded.items():
            if key in keep:
                out[ObjectId(key)] = RawObject(type_name_of(number, key), data)

    # -- storage optimizer hooks (delta chains; govc_db.store.codec) -----------------------
    def _resolve(self, rows: Iterable[Any]) -> dict[bytes, tuple[int, bytes, int]]:
        """Decode stored rows, fetching the delta bases they need in one chain query.
        In a write transaction, what it decodes reaches the cache only once committed."""
        large = self._u._backend.large_blobs
        if large is not None:
            # A chunked blob is never a delta base, and the chunk store reads it.
            rows = [r for r in rows if r[3] != large.encoding]
        write = bool(self._u.conn.get_execution_options().get(WRITE_OPTION, False))
        deferred: list[tuple[bytes, bytes, int, int]] | None = [] if write else None
        out = resolve_rows(
            self._codec, self._u.repo_id, [tuple(r) for r in rows], self._fetch_chains, deferred
        )
        if deferred:
            self._remember(deferred)
        return out

    def _packed(
        self, wanted: Sequence[bytes], rows: Sequence[Any], *, chains: bool = False
    ) -> list[Any]:
        """The rows of ``wanted`` that ``rows`` lack, from the packs (``gc()`` moved them
        there); with ``chains`` (``rows`` hold whole delta chains), also of the bases
        that ``rows`` name but do not hold. Without it, bases are left to the resolver
        (decoded cache, then a chain query, which comes back here)."""
        present = {bytes(r[0]) for r in rows}
        missing = [o for o in wanted if o not in present]
        for r in rows if chains else ():
            if r[3] in DELTA_ENCODINGS:
                base = bytes(r[4][:OID_LEN])
                if base not in present:
                    missing.append(base)
        if not missing:
            return []
        return list(self._u._backend.packs.rows(self._u.execute, self._u.repo_id, missing))

    def _fetch_chains(self, oids: Sequence[bytes]) -> list[Any]:
        out: list[Any] = []
        ids = [ObjectId(o) for o in oids]
        for stmt, params in self._statements(ids, S_CHAIN_ONE, S_CHAIN_PG, S_CHAIN):
            out.extend(tuple(r) for r in self._u.execute(stmt, params))
        out.extend(self._packed(ids, out, chains=True))
        return out

    def _bases(self, oids: Iterable[ObjectId]) -> dict[bytes, tuple[bytes, int]]:
        """Content and chain depth of the would-be delta bases: from this unit's pending
        rows, the decoded cache, else one query. Missing ones are absent."""
        found: dict[bytes, tuple[bytes, int]] = {}
        fetch: list[ObjectId] = []
        cache = self._codec.cache
        for oid in dict.fromkeys(oids):
            hit = self._batch.get(oid)
            if hit is not None:
                found[oid] = (hit[1], self._depths.get(oid, 0))
                continue
            cached = cache.get(self._u.repo_id, oid)
            if cached is not None:
                found[oid] = cached
            else:
                fetch.append(oid)
        if fetch:
            rows: list[Any] = []
            for stmt, params in self._statements(fetch, S_CHAIN_ONE, S_CHAIN_PG, S_CHAIN):
                rows.extend(tuple(r) for r in self._u.execute(stmt, params))
            rows.extend(self._packed(fetch, rows, chains=True))
            wanted = set(fetch)
            for key, (_n, data, depth) in self._resolve(rows).items():
                if key in wanted:
                    found[key] = (data, depth)
        return found

    def _remember(self, written: list[tuple[bytes, bytes, int, int]]) -> None:
        """Once committed, the objects just written are the likeliest next bases."""
        cache = self._codec.cache
        repo_id = self._u.repo_id

        def fill() -> None:
            for oid, data, depth, kind in written:
                cache.put(repo_id, oid, data, depth, kind)

        self._u.after_commit(fill)

    def has(self, oid: ObjectId) -> bool:
        """Whether the object exists."""
        return bool(self.has_many([oid]))

    def has_many(self, oids: Iterable[ObjectId]) -> set[ObjectId]:
        """The subset of ``oids`` present (pending writes included)."""
        wanted = list(dict.fromkeys(oids))
        batch = self._batch
        out: set[ObjectId] = set()
        if batch:
            out.update(oid for oid in wanted if oid in batch)
            wanted = [oid for oid in wanted if oid not in out]
        hits = len(out)
        statements = 0
        for stmt, params in self._statements(wanted, S_OBJ_HAS_ONE, S_OBJ_HAS_PG, S_OBJ_HAS):
            statements += 1
            out.update(ObjectId(bytes(r[0])) for r in self._u.execute(stmt, params))
        rest = [o for o in wanted if o not in out]
        if rest:
            packs = self._u._backend.packs
            out.update(ObjectId(o) for o in packs.has(self._u.execute, self._u.repo_id, rest))
        self._ex.count_read(statements=statements, ids=hits + len(wanted), from_buffer=hits)
        return out

    def _statements(
        self, ids: list[ObjectId], one: Any, pg: Any, lite: Any
    ) -> Iterator[tuple[Any, dict[str, Any]]]:
        """The bulk-read statements for ``ids``: one id by equality, else per chunk."""
        if len(ids) == 1:
            yield one, {"oid": ids[0]}
            return
        many = pg if self._pg else lite
        for chunk in self._ex.id_chunks(ids):
            yield many, {"oids": chunk}

    def put(self, type_name: bytes, data: bytes, base: ObjectId | None = None) -> ObjectId:
        """Store one object (``base``: a delta hint, see :meth:`put_many`); returns its id."""
        return self.put_many([(type_name, data)], None if base is None else [base])[0]

    def put_many(
        self,
        objects: Iterable[tuple[bytes, bytes]],
        bases: Sequence[ObjectId | None] | None = None,
    ) -> list[ObjectId]:
        """Store objects (deduplicated by id); ids in input order.

        ``bases`` (aligned with ``objects``) hints a related object of this repository for
        each (the previous version of the same path): with the storage optimizer on, a
        new row is stored as a delta against it when that is smaller and the chain stays
        within ``Settings.delta_max_depth``.

        With the batch executor on, rows are buffered in the unit and flushed by count or
        bytes, before prefix/listing reads, savepoints and commit; off, they are written
        before this returns.
        """
        ids: list[ObjectId] = []
        batch = self._batch
        buffered = self._ex.enabled
        direct: dict[bytes, Row] = {}
        repo_id = self._u.repo_id
        codec = self._codec
        hinted = codec.optimizer and bases is not None
        duplicates = 0
        new: list[tuple[ObjectId, int, bytes, ObjectId | None]] = []
        seen: set[bytes] = set()
        for i, (type_name, data) in enumerate(objects):
            number = TYPE_NUMBERS.get(type_name)
            if number is None:
                raise GovcError(f"unknown object type {type_name!r}")
            if type(data) is not bytes:  # a caller's bytearray must not change under us
                data = bytes(data)
            oid = hash_object(type_name, data)
            ids.append(oid)
            if oid in batch or oid in seen:
                duplicates += 1
                continue
            seen.add(oid)
            base = bases[i] if hinted and bases is not None and i < len(bases) else None
            new.append((oid, number, data, base if base != oid else None))
        contents = self._bases(b for *_, b in new if b is not None) if hinted else {}
        written: list[tuple[bytes, bytes, int, int]] = []
        max_depth = codec.max_depth
        counts: dict[str, int] = {"duplicates": duplicates}
        for oid, number, data, base in new:
            depth = 0
            found = contents.get(base) if base is not None else None
            if base is not None and found is not None and found[1] < max_depth:
                enc, stored = codec.encode_delta(data, base, found[0])
                if enc in DELTA_ENCODINGS:
                    depth = found[1] + 1
            else:
                enc, stored = codec.encode(data)
            row = (repo_id, oid, number, len(data), enc, stored)
            kind = type_name_of(number, oid).decode()
            counts[kind + ".objects"] = counts.get(kind + ".objects", 0) + 1
            counts[kind + ".raw"] = counts.get(kind + ".raw", 0) + len(data)
            counts[kind + ".stored"] = counts.get(kind + ".stored", 0) + len(stored)
            if depth:
                counts[kind + ".deltas"] = counts.get(kind + ".deltas", 0) + 1
                counts["depth_sum"] = counts.get("depth_sum", 0) + depth
                counts["depth_max"] = max(counts.get("depth_max", 0), depth)
            if codec.optimizer:
                self._depths[oid] = depth
                if len(data) <= REMEMBER_MAX:
                    written.append((oid, data, depth, number))
            if not buffered:
                direct[oid] = row
                continue
            full = batch.add(row, data)
            if full is not None:
                batch.flush(full)
        if direct:
            batch.write_now(direct.values())
        if written:
            self._remember(written)
        codec.written.add(counts)
        self._ex.count_put(objects=len(ids), duplicates=duplicates)
        return ids

    def put_bulk(
        self,
        objects: Iterable[tuple[bytes, bytes]],
        *,
        bases: Sequence[tuple[ObjectId, bytes] | None] | None = None,
        ids: Sequence[ObjectId] | None = None,
    ) -> list[ObjectId]:
        """As :meth:`put_many`, for writing many objects once (an import slice, a pushed
        pack): each object is encoded as ``put_many`` encodes an unhinted one and goes to
        the unit's batch (COPY on PostgreSQL, executemany on SQLite), flushed as
        ``put_many`` flushes except that a flush by count waits for :data:`BULK_ROWS`
        rows, and nothing goes to the decoded cache.

        ``bases`` (aligned with ``objects``): the id and content of an object each one
        resembles (a pack's delta base). With the storage optimizer on, an object whose
        base was written in this unit (and is less than ``Settings.delta_max_depth``
        deep) is stored as a splice delta when only a small middle differs
        (:meth:`Codec.encode_splice`; no compressor runs); otherwise whole.
        ``ids``: the objects' ids, computed already by the caller (a pack reader hashes
        every object it decodes), so they are not hashed again.

        On PostgreSQL a full batch is written behind (``ObjectBatch.flush_behind``) while
        the next rows are encoded; this waits for it before it returns."""
        try:
            out = self._put_bulk(objects, bases, ids)
        except BaseException:
            self._batch.wait(raise_error=False)  # the unit fails with the first error
            raise
        self._batch.wait()
        return out

    def _put_bulk(
        self,
        objects: Iterable[tuple[bytes, bytes]],
        bases: Sequence[tuple[ObjectId, bytes] | None] | None,
        ids: Sequence[ObjectId] | None,
    ) -> list[ObjectId]:
        """:meth:`put_bulk` but for the wait."""
        out: list[ObjectId] = []
        batch = self._batch
        buffered = self._ex.enabled
        direct: dict[bytes, Row] = {}
        repo_id = self._u.repo_id
        codec = self._codec
        encode = codec.encode
        splice = codec.encode_splice
        numbers = TYPE_NUMBERS
        duplicates = 0
        seen: set[bytes] = set()
        hinted = codec.optimizer and bases is not None
        depths = self._depths
        max_depth = codec.max_depth
        deltas = depth_sum = depth_max = 0
        # type number -> [objects, raw bytes, stored bytes]
        tally: dict[int, list[int]] = {}
        limit = BULK_BEHIND_ROWS if self._ex.writes_behind(BULK_BEHIND_ROWS) else BULK_ROWS
        for i, (type_name, data) in enumerate(objects):
            number = numbers.get(type_name)
            if number is None:
                raise GovcError(f"unknown object type {type_name!r}")
            if type(data) is not bytes:  # a caller's bytearray must not change under us
                data = bytes(data)
            if ids is None:
                # hash_object inlined (one call less per object; the same header).
                h = sha1(b"%s %d\0" % (type_name, len(data)), usedforsecurity=False)
                h.update(data)
                oid = ObjectId(h.digest())
            else:
                oid = ids[i]
            out.append(oid)
            if oid in seen or oid in batch:
                duplicates += 1
                continue
            seen.add(oid)
            depth = 0
            hint = bases[i] if hinted and bases is not None else None
            coded = None
            if hint is not None:
                below = depths.get(hint[0])
                if below is not None and below < max_depth and hint[0] != oid:
                    coded = splice(data, hint[0], hint[1])
                    if coded is not None:
                        depth = below + 1
                        deltas += 1
                        depth_sum += depth
                        depth_max = max(depth_max, depth)
            enc, stored = encode(data) if coded is None else coded
            if hinted:
                depths[oid] = depth
            row = (repo_id, oid, number, len(data), enc, stored)
            t = tally.get(number)
            if t is None:
                t = tally[number] = [0, 0, 0, 0]
            t[0] += 1
            t[1] += len(data)
            t[2] += len(stored)
            t[3] += depth > 0
            if not buffered:
                direct[oid] = row
                continue
            full = batch.add(row, data)
            # By bytes as put_many; by count only every BULK_ROWS rows (fewer, larger
            # COPYs and executemanys; memory stays bounded by the bytes). On PostgreSQL
            # the COPY runs behind, while the next rows are encoded.
            if full is not None and (full != "count" or len(batch) >= limit):
                batch.flush_behind(full)
        if direct:
            batch.write_now(direct.values())
        counts: dict[str, int] = {"duplicates": duplicates}
        for number, (n, raw, stored_bytes, n_deltas) in tally.items():
            kind = type_name_of(number, b"").decode()
            counts[kind + ".objects"] = n
            counts[kind + ".raw"] = raw
            counts[kind + ".stored"] = stored_bytes
            if n_deltas:
                counts[kind + ".deltas"] = n_deltas
        if deltas:
            counts["depth_sum"] = depth_sum
            counts["depth_max"] = depth_max
        codec.written.add(counts)
        self._ex.count_put(objects=len(out), duplicates=duplicates)
        return out

    # large blobs (govc_db.storage.chunks through SqlBackend.large_blobs) ---------------
    def put_stream(self, type_name: bytes, source: Any) -> ObjectId:
        """Store content read from ``source`` (a ``storage.stream.StreamSource``) in
        chunks, in this unit's transaction; returns its git id."""
        large = self._u._backend.large_blobs
        if large is None:
            raise GovcError("chunked storage is not available")
        memo = self._streamed.get(id(source))
        if memo is not None and memo[0] is source:
            return memo[1]  # the same content again (a commit re-applied on a new head)
        number = TYPE_NUMBERS.get(type_name)
        if number is None:
            raise GovcError(f"unknown object type {type_name!r}")
        oid: ObjectId
        oid, size, manifest = large.put_stream(self._u.conn, self._u.repo_id, type_name, source)
        row = {
            "repo_id": self._u.repo_id,
            "oid": oid,
            "type": number,
            "size": size,
            "encoding": large.encoding,
            "data": manifest,
        }
        self._u.conn.execute(self._u._backend.obj_insert, row)
        self._streamed[id(source)] = (source, oid)
        self._ex.count_put(objects=1, duplicates=0)
        return oid

    def open_blob(self, oid: ObjectId) -> Any:
        """A binary reader of blob ``oid``: chunked blobs stream (their windows are read
        later, each in its own short transaction), others are read whole. ``NotFound``."""
        large = self._u._backend.large_blobs
        if large is not None and not self._batch.get(oid):
            row = self._u.execute(S_OBJ_GET_ONE, {"oid": oid}).first()
            if row is not None and row.encoding == large.encoding:
                # Inside store.transaction() the blob may be this transaction's own write:
                # read on its connection while it is open.
                own = self._u.conn if self._u._backend.txn.current() is not None else None
                return large.open(self._u.repo_id, bytes(row.data), row.size, own)
        return io.BytesIO(self.get(oid).data)

    def chunked(self) -> tuple[Any, set[ObjectId]]:
        """``(the chunk store, ids of this repository's chunked blobs)`` for verify."""
        large = self._u._backend.large_blobs
        if large is None:
            return None, set()
        self._batch.flush("read")
        return large, large.chunked_ids(self._u.conn, self._u.repo_id)

    def check_chunked(self, oid: ObjectId) -> list[str]:
        """Problems of chunked blob ``oid`` (each chunk's hash, the whole stream's)."""
        large = self._u._backend.large_blobs
        row = self._u.execute(S_OBJ_GET_ONE, {"oid": oid}).first()
        if large is None or row is None:
            return [f"blob {oid.hex()}: cannot be read"]
        return list(large.check(self._u.conn, self._u.repo_id, oid, bytes(row.data), row.size))

    def find_prefix(self, prefix_hex: str, limit: int = 2) -> list[ObjectId]:
        """Ids starting with ``prefix_hex``; ``InvalidInput`` unless it is 4-40 lowercase hex."""
        if not PREFIX_RE.fullmatch(prefix_hex) or limit < 1:
            raise InvalidInput(f"not an abbreviated object id: {prefix_hex[:60]!r}")
        self._batch.flush("read")
        lo = bytes.fromhex(prefix_hex.ljust(40, "0"))
        hi = bytes.fromhex(prefix_hex.ljust(40, "f"))
        rows = self._u.execute(S_OBJ_PREFIX, {"lo": lo, "hi": hi, "lim": limit})
        found = {bytes(r[0]) for r in rows}
        packs = self._u._backend.packs
        found.update(packs.prefix(self._u.execute, self._u.repo_id, lo, hi))
        return [ObjectId(o) for o in sorted(found)[:limit]]

    def iter_ids(self) -> Iterable[tuple[ObjectId, bytes]]:
        """Every (id, type) of this repository (loose rows and packs)."""
        self._batch.flush("read")
        found = {bytes(r[0]): int(r[1]) for r in self._u.execute(S_OBJ_ALL)}
        packed = self._u._backend.packs.all_ids(self._u.execute, self._u.repo_id)
        for oid, number in packed.items():
            found.setdefault(oid, number)
        return [(ObjectId(o), type_name_of(n, o)) for o, n in sorted(found.items())]


class SqlRefs:
    """RefStore over ``govc_refs`` with a reflog row per successful move."""

    def __init__(self, unit: SqlUnit) -> None:
        self._u = unit

    def get(self, name: str) -> ObjectId | None:
        """The ref's target or None."""
        self._u.drain()
        row = self._u.execute(S_REF_GET, {"name": name}).first()
        return None if row is None else ObjectId(bytes(row[0]))

    def lock(self, name: str) -> ObjectId | None:
        """The ref's target, its row locked until the unit's transaction ends
        (``SELECT ... FOR UPDATE`` on PostgreSQL; a SQLite write transaction holds the
        database's write lock already): a writer of another process that locks it too
        waits here for this transaction, then reads where it moved the ref."""
        u = self._u
        u.drain()
        b = u._backend
        stmt = b.raw_statements().ref_lock
        params = {"repo_id": u.repo_id, "name": name}
        conn = u.conn
        driver: Any = conn.connection.driver_connection
        try:
            if b.dialect == "postgresql":
                # In pipeline mode, so that the transaction's BEGIN (when this is its
                # first statement) goes out with it: one round trip, not two.
                with driver.pipeline():
                    cur = driver.cursor()
                    cur.execute(stmt.sql, params)
            else:  # as the write pipeline runs its statements: on sqlite3 directly
                cur = driver.execute(stmt.sql, stmt.args(params))
            found = cur.fetchone()
        except conn.dialect.loaded_dbapi.Error as exc:
            raise wrap_driver_error(conn, exc, "ref lock") from exc
        return None if found is None else ObjectId(bytes(found[0]))

    def get_many(self, names: Sequence[str]) -> dict[str, ObjectId]:
        """Targets of those of ``names`` that exist, in one statement."""
        if not names:
            return {}
        self._u.drain()
        rows = self._u.execute(S_REF_GET_MANY, {"names": list(dict.fromkeys(names))})
        return {r[0]: ObjectId(bytes(r[1])) for r in rows}

    def list_refs(self, prefix: str = "refs/") -> dict[str, ObjectId]:
        """Refs under ``prefix``, by full name."""
        self._u.drain()
        if prefix:
            hi = prefix[:-1] + chr(ord(prefix[-1]) + 1)
            rows = self._u.execute(self._u._backend.ref_list, {"lo": prefix, "hi": hi})
        else:
            rows = self._u.execute(S_REF_ALL)
        # Sorted here too: the database's order depends on its collation.
        found = sorted((r[0], ObjectId(bytes(r[1]))) for r in rows if r[0].startswith(prefix))
        return dict(found)

    def _log(self, name: str, old: ObjectId | None, new: ObjectId | None, message: str) -> None:
        row = {
            "repo_id": self._u.repo_id,
            "ref": name,
            "old": old,
            "new": new,
            "time": int(self._u._backend.clock() * 1_000_000),
            "message": message,
        }
        pipe = self._u.pipe
        if pipe is not None:
            pipe.add(self._u._backend.raw_statements().reflog, row)
        else:
            self._u.conn.execute(self._u._backend.log_insert, row)
        self._moved(name, old, new)

    def _moved(self, name: str, old: ObjectId | None, new: ObjectId | None) -> None:
        """After a successful CAS: forget the cached ref once committed, and tell other
        processes (PostgreSQL delivers the NOTIFY on commit only, with it, atomically)."""
        b = self._u._backend
        repo_id = self._u.repo_id
        cache = b.cache
        if cache is not None:
            self._u.after_commit(lambda: cache.invalidate_refs(repo_id, (name,)))
            if b.notify_enabled:  # invalidated: its NOTIFY arriving back need not again
                self._u.after_commit(lambda: cache.expect_notice(repo_id, name, new))
        self._u.after_commit(lambda: b.remember_head(repo_id, name, new))
        if b.notify_enabled:
            repo = b.repository_name(self._u.conn, repo_id)
            payload = ref_message(b.store_id, repo_id, repo, name, old, new)
            pipe = self._u.pipe
            if pipe is not None:
                pipe.add(b.raw_statements().notify, {"payload": payload})
            else:
                self._u.conn.execute(NOTIFY_STATEMENT, {"payload": payload})

    def set_if_equals(self, name: str, old: ObjectId | None, new: ObjectId, message: str) -> bool:
        """CAS ``old`` -> ``new``; None as ``old`` means the ref must not exist."""
        if old is None:
            return self.add_if_new(name, new, message)
        params = {"b_repo_id": self._u.repo_id, "b_name": name, "b_old": old, "b_new": new}
        pipe = self._u.pipe
        if pipe is not None:  # checked when the pipeline runs (speculative unit)
            pipe.add(self._u._backend.raw_statements().ref_cas, params, expect=name)
        elif self._u.conn.execute(S_REF_CAS, params).rowcount != 1:
            return False
        self._log(name, old, new, message)
        return True

    def add_if_new(self, name: str, new: ObjectId, message: str) -> bool:
        """Create the ref if absent."""
        params = {"repo_id": self._u.repo_id, "name": name, "target": new}
        pipe = self._u.pipe
        if pipe is not None:  # checked when the pipeline runs (speculative unit)
            pipe.add(self._u._backend.raw_statements().ref_insert, params, expect=name)
        elif self._u.conn.execute(self._u._backend.ref_insert, params).rowcount != 1:
            return False
        self._log(name, None, new, message)
        return True

    def remove_if_equals(self, name: str, old: ObjectId | None, message: str) -> bool:
        """Delete the ref if it is ``old`` (None: whatever it is)."""
        self._u.drain()
        if old is None:
            current = self.get(name)
            if current is None:
                return False
            res = self._u.execute(S_REF_DEL_IF, {"name": name, "old": current})
            old = current
        else:
            res = self._u.execute(S_REF_DEL_IF, {"name": name, "old": old})
        if res.rowcount != 1:
            return False
        self._log(name, old, None, message)
        return True

    def reflog(self, name: str) -> list[RefLogEntry]:
        """Moves of ``name``, oldest first."""
        self._u.drain()
        return [
            RefLogEntry(
                name,
                None if m["old"] is None else ObjectId(bytes(m["old"])),
                None if m["new"] is None else ObjectId(bytes(m["new"])),
                m["time"] / 1_000_000,
                m["message"],
            )
            for r in self._u.execute(S_LOG_GET, {"ref": name})
            for m in moves_of_row(r)
        ]


_UNNEST: dict[tuple[str, tuple[str, ...]], str] = {}


def _unnest_insert(table: Any, columns: list[str], conn: Connection) -> str:
    """``INSERT INTO table (columns) SELECT * FROM unnest(%b::type[], ...) ON CONFLICT DO
    NOTHING`` for the PostgreSQL driver (one array per column, sent in binary: text
    arrays of bytea are escaped element by element), built once per table from the
    model's column types."""
    key = (table.name, tuple(columns))
    found = _UNNEST.get(key)
    if found is None:
        types = [table.c[c].type.compile(dialect=conn.dialect) for c in columns]
        arrays = ", ".join(f"CAST(%b AS {t}[])" for t in types)
        found = _UNNEST[key] = (
            f"INSERT INTO {table.name} ({', '.join(columns)}) "
            f"SELECT * FROM unnest({arrays}) ON CONFLICT DO NOTHING"
        )
    return found


#: The primary-key order of the commit-index tables' rows (as :meth:`SqlIndex.add_many`
#: builds them), by table name.
_INDEX_ORDER: dict[str, Callable[[dict[str, Any]], Any]] = {
    "govc_commits": lambda r: r["oid"],
}


class SqlIndex:
    """CommitIndexStore over ``govc_commits`` (a commit's parents and changed paths in
    its row)."""

    def __init__(self, unit: SqlUnit) -> None:
        self._u = unit
        #: Every changed path of the repository by commit, read once by
        #: :meth:`changed_paths_many` (verify) and dropped by :meth:`add`.
        self._all_paths: dict[ObjectId, dict[int, set[str]]] | None = None

    def add(self, entry: IndexEntry, changed: Mapping[int, Iterable[str]]) -> None:
        """Record a commit and its changed paths (idempotent)."""
        self._all_paths = None
        b = self._u._backend
        r = self._u.repo_id
        commit_row = {
            "repo_id": r,
            "oid": entry.oid,
            "tree": entry.tree,
            "generation": entry.generation,
            "author_time": entry.author_time,
            "committer_time": entry.committer_time,
            "parents": join_parents(entry.parents),
            "changed": encode_changed(changed),
        }
        pipe = self._u.pipe
        if pipe is not None:
            raw = b.raw_statements()
            pipe.add(raw.commit, commit_row)
            return
        self._u.conn.execute(b.commit_insert, commit_row)

    def add_many(self, entries: Sequence[tuple[IndexEntry, Mapping[int, Iterable[str]]]]) -> None:
        """Record many commits (idempotent), one statement per table and slice: on SQLite
        an executemany of up to 5,000 positional rows (the compiled INSERT, without
        SQLAlchemy's per-row bind processing); on PostgreSQL (whose driver sends an
        executemany row by row) one ``INSERT ... SELECT FROM unnest(arrays)`` per table,
        the arrays sent in binary.
        A speculative unit queues them as :meth:`add` does."""
        if self._u.pipe is not None:
            for entry, changed in entries:
                self.add(entry, changed)
            return
        self._all_paths = None
        b = self._u._backend
        r = self._u.repo_id
        commit_rows: list[dict[str, Any]] = []
        for entry, changed in entries:
            oid = entry.oid
            commit_rows.append(
                {
                    "repo_id": r,
                    "oid": oid,
                    "tree": entry.tree,
                    "generation": entry.generation,
                    "author_time": entry.author_time,
                    "committer_time": entry.committer_time,
                    "parents": join_parents(entry.parents),
                    "changed": encode_changed(changed),
                }
            )
        conn = self._u.conn
        pg = b.dialect == "postgresql"
        raw = b.raw_statements()
        for stmt, compiled, rows in ((b.commit_insert, raw.commit, commit_rows),):
            if not rows:
                continue
            # In primary-key order: consecutive rows land in the same pages of the
            # table's B-tree (clustered on that key on SQLite, its index on PostgreSQL).
            rows.sort(key=_INDEX_ORDER[stmt.table.name])
            if pg:
                columns = list(rows[0])
                sql = _unnest_insert(stmt.table, columns, conn)
                driver: Any = conn.connection.driver_connection
                try:
                    with driver.cursor() as cur:
                        cur.execute(sql, [[row[c] for row in rows] for c in columns])
                except conn.dialect.loaded_dbapi.Error as exc:
                    raise wrap_driver_error(conn, exc, "commit index (bulk)") from exc
                continue
            # The compiled INSERT with positional rows: no per-row bind processing.
            args = compiled.args
            for i in range(0, len(rows), 5000):
                conn.exec_driver_sql(compiled.sql, [args(row) for row in rows[i : i + 5000]])

    def get_many(self, oids: Iterable[ObjectId]) -> dict[ObjectId, IndexEntry]:
        """Index rows of ``oids`` that exist, with their parents: one statement per chunk."""
        self._u.drain()
        wanted = list(dict.fromkeys(oids))
        out: dict[ObjectId, IndexEntry] = {}
        ex = self._u._backend.batch
        stmt = S_IDX_PAR_GET_PG if ex.dialect == "postgresql" else S_IDX_PAR_GET
        for chunk in ex.id_chunks(wanted):
            out.update(group_index_rows(self._u.execute(stmt, {"oids": chunk})))
        return out

    def ancestry(
        self, oids: Sequence[ObjectId], min_generation: int = 0
    ) -> dict[ObjectId, IndexEntry]:
        """``oids`` and their ancestors down to ``min_generation``, one recursive query."""
        self._u.drain()
        if not oids:
            return {}
        params = {"oids": list(dict.fromkeys(oids)), "min_gen": min_generation}
        return group_index_rows(self._u.execute(S_ANCESTRY, params))

    def window(self, min_generation: int, max_generation: int) -> dict[ObjectId, IndexEntry]:
        """Every commit with ``min_generation <= generation <= max_generation``.

        One index range scan: unlike the recursive ancestry query, its plan cannot
        degrade to a scan per recursion step, so a log loads its history in a few
        cheap range reads (including any side branches in the range).
        """
        self._u.drain()
        if max_generation < min_generation:
            return {}
        params = {"lo": min_generation, "hi": max_generation}
        return group_index_rows(self._u.execute(S_IDX_WINDOW, params))

    def touching(self, path: str) -> set[tuple[ObjectId, int]]:
        """(commit, position) pairs whose changes touch ``path`` or anything below it:
        the commits whose ``changed`` holds it (one scan of the repository's rows),
        decoded to learn the positions."""
        self._u.drain()
        p = path.encode("utf-8", "surrogateescape")
        pg = self._u._backend.dialect == "postgresql"
        rows = self._u.execute(
            S_PATH_TOUCH_PG if pg else S_PATH_TOUCH,
            {"exact": b"\0" + p + b"\0", "below": b"\0" + p + b"/"},
        )
        return {
            (ObjectId(bytes(oid)), position)
            for oid, changed in rows
            for position in touches(changed, path)
        }

    def iter_all(self) -> Iterable[IndexEntry]:
        """Every index row of this repository."""
        self._u.drain()
        return list(group_index_rows(self._u.execute(S_IDX_ALL)).values())

    def changed_paths(self, oid: ObjectId) -> dict[int, set[str]]:
        """Recorded changed paths of one commit by parent position."""
        self._u.drain()
        blob = self._u.execute(S_PATH_OF, {"oid": oid}).scalar()
        return {} if blob is None else decode_changed(blob)

    def changed_paths_many(self, oids: Iterable[ObjectId]) -> dict[ObjectId, dict[int, set[str]]]:
        """:meth:`changed_paths` of many commits (an optional capability that ``verify``
        uses when the index offers it): the repository's rows are read with one scan the
        first time and kept for the unit's later calls, so verifying N commits in batches
        costs one scan, not one per batch.
        """
        self._u.drain()
        every = self._all_paths
        if every is None:
            every = {
                ObjectId(bytes(oid)): decode_changed(changed)
                for oid, changed in self._u.execute(S_PATH_ALL)
            }
            self._all_paths = every
        return {oid: every[oid] for oid in dict.fromkeys(oids) if oid in every}


class OptimisticRefs:
    """The RefStore of a speculative unit: a ref's target is *assumed* from what this
    Store last committed to it, or from the query cache, without a query; the
    compare-and-swap that moves it checks the assumption when the unit's writes are sent.
    A ref the unit locked (:meth:`lock`) is not assumed: the target read with the lock is
    the database's until the unit ends. Everything else is the wrapped :class:`SqlRefs`.
    """

    def __init__(self, inner: SqlRefs, backend: SqlBackend, repo_id: int) -> None:
        self._inner = inner
        self._backend = backend
        self._repo_id = repo_id
        #: Refs this unit locked, with their targets (and the unit's own moves of them).
        self._locked: dict[str, ObjectId | None] = {}

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("_inner")
        if inner is None:  # not initialized yet (copy, unpickling)
            raise AttributeError(name)
        return getattr(inner, name)

    def lock(self, name: str) -> ObjectId | None:
        """Lock the ref's row (:meth:`SqlRefs.lock`): its target is known from now on."""
        target = self._locked[name] = self._inner.lock(name)
        return target

    def get(self, name: str) -> ObjectId | None:
        """The locked or assumed target of ``name`` (the database's when nothing is)."""
        locked = self._locked
        if name in locked:
            return locked[name]
        assumed = self._backend.assumed_head(self._repo_id, name)
        return self._inner.get(name) if assumed is None else assumed

    def get_many(self, names: Sequence[str]) -> dict[str, ObjectId]:
        """Locked or assumed targets where there are, the database's for the rest."""
        found: dict[str, ObjectId] = {}
        rest: list[str] = []
        locked = self._locked
        for name in names:
            if name in locked:
                target = locked[name]
                if target is not None:
                    found[name] = target
                continue
            assumed = self._backend.assumed_head(self._repo_id, name)
            if assumed is None:
                rest.append(name)
            else:
                found[name] = assumed
        if rest:
            found.update(self._inner.get_many(rest))
        return found

    def list_refs(self, prefix: str = "refs/") -> dict[str, ObjectId]:
        """Refs under ``prefix`` (from the database)."""
        return self._inner.list_refs(prefix)

    def set_if_equals(self, name: str, old: ObjectId | None, new: ObjectId, message: str) -> bool:
        """Queue the compare-and-swap (checked when the unit's writes are sent)."""
        ok = self._inner.set_if_equals(name, old, new, message)
        if ok and name in self._locked:
            self._locked[name] = new
        return ok

    def add_if_new(self, name: str, new: ObjectId, message: str) -> bool:
        """Queue the creation (checked when the unit's writes are sent)."""
        ok = self._inner.add_if_new(name, new, message)
        if ok and name in self._locked:
            self._locked[name] = new
        return ok

    def remove_if_equals(self, name: str, old: ObjectId | None, message: str) -> bool:
        """Delete through the database (after sending what is queued)."""
        ok = self._inner.remove_if_equals(name, old, message)
        if ok and name in self._locked:
            self._locked[name] = None
        return ok

    def reflog(self, name: str) -> list[RefLogEntry]:
        """The reflog (from the database)."""
        return self._inner.reflog(name)


#: A ref's target, its row locked (:meth:`SqlRefs.lock`; SQLite renders no FOR UPDATE).
S_REF_LOCK = S_REF_GET.with_for_update()

_COMMIT_KEYS = (
    "repo_id", "oid", "tree", "generation", "author_time", "committer_time", "parents",
    "changed",
)  # fmt: skip


class RawStatements:
    """The statements a speculative unit queues, compiled once for one dialect."""

    def __init__(self, backend: SqlBackend) -> None:
        d = backend.engine.dialect
        self.objects = RawStatement(backend.batch.insert_sql, None)
        self.ref_cas = compile_raw(S_REF_CAS, d, ())
        self.ref_lock = compile_raw(S_REF_LOCK, d, ())
        self.ref_insert = compile_raw(backend.ref_insert, d, ("repo_id", "name", "target"))
        self.reflog = compile_raw(
            backend.log_insert, d, ("repo_id", "ref", "old", "new", "time", "message")
        )
        self.notify = compile_raw(NOTIFY_STATEMENT, d, ())
        self.commit = compile_raw(backend.commit_insert, d, _COMMIT_KEYS)
        # Object reads outside a transaction (SqlBackend.fetch_objects).
        self.object_one = compile_raw(S_OBJ_GET_ONE, d, ())
        self.object_any: RawStatement | None = (
            compile_raw(S_OBJ_GET_PG, d, ()) if d.name == "postgresql" else None
        )
        # ... and the delta bases they need (storage optimizer).
        self.chain_one = compile_raw(S_CHAIN_ONE, d, ())
        self.chain_any: RawStatement | None = (
            compile_raw(S_CHAIN_PG, d, ()) if d.name == "postgresql" else None
        )


#: Seconds after a failed speculation in a repository during which its writes run as
#: plain units (another writer is moving its refs: a plain unit's compare-and-swap is
#: answered at once, and a lost race is re-applied in the same transaction, where a
#: failed speculation costs a rollback and a second run).
CONTENDED_SECONDS = 1.0
#: Bound of the assumed-heads map (forgetting one costs a query, nothing else).
MAX_HEADS = 10_000


# -- the backend ------------------------------------------------------------------------
class RepositoryRecord:
    """A row of ``govc_repositories``."""

    __slots__ = ("default_branch", "id", "name")

    def __init__(self, id: int, name: str, default_branch: str) -> None:
        self.id = id
        self.name = name
        self.default_branch = default_branch


class SqlBackend:
    """Owns the engine-facing pieces: units of work and the repository catalog."""

    def __init__(
        self,
        engine: Engine,
        codec: Codec,
        *,
        clock: Callable[[], float] = time.time,
        txn: TransactionManager | None = None,
        batch: BatchExecutor | None = None,
    ) -> None:
        self.engine = engine
        self.codec = codec
        #: The pack index of the repositories read (objects ``gc()`` packed).
        self.packs = PackStore(codec.cache)
        self.clock = clock
        #: Every unit of work runs through this (retry, savepoints, after-commit hooks).
        self.txn = txn if txn is not None else TransactionManager(engine)
        self.dialect = engine.dialect.name
        #: Coalesces object writes and reads ids in bulk (govc_db.db.batch).
        self.batch = batch if batch is not None else BatchExecutor(self.dialect)
        self.obj_insert = insert_ignore(self.dialect, T_OBJ)
        # add_if_new reads the INSERT's rowcount, which SQLAlchemy keeps only on request.
        self.ref_insert = insert_ignore(self.dialect, T_REF).execution_options(
            preserve_rowcount=True
        )
        self.commit_insert = insert_ignore(self.dialect, T_COMMIT)
        self.ref_list = S_REF_LIST_PG if self.dialect == "postgresql" else S_REF_LIST
        self.log_insert = S_LOG_ADD_PG if self.dialect == "postgresql" else S_LOG_ADD
        #: Speculative units with a write pipeline (``Settings.write_pipeline``).
        self.pipeline_enabled = True
        #: Counters of the write pipelines and speculative units.
        self.pipeline = PipelineStats()
        #: How reads were answered (the cache alone, a cached read unit, a unit).
        self.reads = ReadStats()
        self._raw: RawStatements | None = None
        # (repo_id, ref) -> the target this Store last committed; repo_id -> the monotonic
        # time of the last failed speculation in that repository.
        self._heads: dict[tuple[int, str], ObjectId] = {}
        self._contended: dict[int, float] = {}

    def raw_statements(self) -> RawStatements:
        """The speculative unit's statements for this dialect (compiled on first use)."""
        raw = self._raw
        if raw is None:
            raw = self._raw = RawStatements(self)
        return raw

    def remember_head(self, repo_id: int, name: str, target: ObjectId | None) -> None:
        """After a committed move of ``name``: what a speculative unit assumes next."""
        heads = self._heads
        if target is None:
            heads.pop((repo_id, name), None)
            return
        if len(heads) >= MAX_HEADS:
            heads.clear()
        heads[(repo_id, name)] = target

    def assumed_head(self, repo_id: int, name: str) -> ObjectId | None:
        """What a speculative unit assumes ``name`` points at, or None (read it): this
        Store's last committed move, else a cached ref."""
        head = self._heads.get((repo_id, name))
        if head is not None:
            return head
        cache = self.cache
        if cache is not None and cache.mutable_enabled():
            hit, target = cache.get_ref(repo_id, name)
            if hit:
                return target
        return None

    @contextmanager
    def unit(
        self, repo_id: int, *, write: bool = False, what: str = "operation"
    ) -> Iterator[SqlUnit]:
        """A transaction scoped to ``repo_id``; commits on success, rolls back on error.

        Inside an open transaction (``store.transaction()``) it is a savepoint of that
        one. It does not retry (a ``with`` block cannot be re-run): :meth:`run_unit` does.
        After-commit hooks run once the outermost transaction committed, outside it.
        """
        with self.txn.begin(write=write, what=what) as tx:
            u = self._open_unit(tx, repo_id)
            try:
                yield u
                u.flush()  # batched object rows, before COMMIT / RELEASE
            finally:
                u.close()

    def run_unit(
        self,
        repo_id: int,
        fn: Callable[[SqlUnit], T],
        *,
        write: bool,
        what: str,
        verify_commit: Callable[[], bool] | None = None,
        speculative: bool = False,
    ) -> T:
        """``fn(unit)`` in a transaction through the manager: retried as a whole on a
        serialization failure, deadlock or lost connection; ``verify_commit`` resolves a
        COMMIT whose outcome was lost with the connection (see :mod:`govc_db.db.txn`).

        ``speculative`` (a write that moves refs only by compare-and-swap, such as a
        commit): outside any open transaction, and with ``pipeline_enabled``, the unit
        first runs speculatively (:class:`SqlUnit`, :class:`OptimisticRefs`): two round
        trips on PostgreSQL when nothing it assumed was wrong, else a plain run decides.
        """
        txn = self.txn

        def attempt(spec: bool) -> T:
            def body(conn: Connection) -> T:
                tx = txn.current()
                assert tx is not None and tx.connection is conn
                u = self._open_unit(tx, repo_id, speculative=spec)
                try:
                    out = fn(u)
                    u.flush()  # batched object rows (and queued writes), before COMMIT
                finally:
                    u.close()
                return out

            return txn.run(body, write=write, what=what, verify_commit=verify_commit)

        if (
            not (speculative and write and self.pipeline_enabled)
            or txn.current() is not None
            or self._contended_now(repo_id)
        ):
            return attempt(False)
        # Speculative first: refs assumed, writes queued and sent in one round trip,
        # compare-and-swaps checked at the end. Whatever the speculation could have got
        # wrong -- a ref that moved, a repository deleted meanwhile, an error decided on an
        # assumed ref -- is rolled back and decided again by a plain unit.
        stats = self.pipeline
        stats.count(speculative_units=1)
        try:
            return attempt(True)
        except _Speculation as exc:
            stats.count(fallbacks_expectation=1)
            self._contended[repo_id] = time.monotonic()
            for name in exc.refs:
                self._heads.pop((repo_id, name), None)
        except StoreUnavailable:
            raise  # retries are spent: running again would only double the wait
        except GovcError:
            stats.count(fallbacks_error=1)
        return attempt(False)

    def _contended_now(self, repo_id: int) -> bool:
        """Whether a speculation in ``repo_id`` failed in the last ``CONTENDED_SECONDS``."""
        failed = self._contended.get(repo_id)
        if failed is None:
            return False
        if time.monotonic() - failed < CONTENDED_SECONDS:
            return True
        self._contended.pop(repo_id, None)
        return False

    def _open_unit(self, tx: Transaction, repo_id: int, *, speculative: bool = False) -> SqlUnit:
        # A handle may outlive delete_repository (in this or another process). A
        # speculative unit does not ask: writing to a deleted repository fails on its
        # foreign keys or finds no ref to move, and the plain unit run then reports it.
        if not speculative and not self.repository_exists(tx.connection, repo_id):
            raise NotFound("the repository was deleted")
        u = SqlUnit(tx.connection, repo_id, self, speculative=speculative)
        # The unit's hooks are the transaction's: they run after the outermost COMMIT,
        # and are dropped with a rolled-back savepoint or attempt.
        u._hooks = tx.hooks
        return u

    def fetch_objects(self, repo_id: int, oids: Sequence[ObjectId]) -> dict[ObjectId, RawObject]:
        """The objects among ``oids`` that exist, read outside any transaction: one
        autocommit statement on a pooled connection (objects never change, so no snapshot
        is needed). For :mod:`govc_db.store.cached_read`: any driver error is
        ``CacheMiss`` (the connection dropped if it was lost), and the caller's ordinary
        unit then decides.
        """
        found: dict[ObjectId, RawObject] = {}
        if self.codec.optimizer:
            oids = decoded_first(self.codec.cache, repo_id, oids, found)
            if not oids:
                return found
        raw = self.raw_statements()
        pg = self.dialect == "postgresql"
        try:
            pooled = self.engine.raw_connection()
        except Exception as exc:
            raise CacheMiss from exc
        try:
            driver: Any = pooled.driver_connection

            def run(
                one: RawStatement, many: RawStatement | None, ids: Sequence[bytes]
            ) -> list[Any]:
                if pg:
                    driver.autocommit = True  # client-side only: no round trip
                    if len(ids) == 1:
                        params: Any = {"repo_id": repo_id, "oid": ids[0]}
                        found = list(driver.execute(one.sql, params).fetchall())
                    else:
                        assert many is not None
                        params = {"repo_id": repo_id, "oids": list(ids)}
                        found = list(driver.execute(many.sql, params).fetchall())
                    # Not reset in a ``finally``: see the handler below.
                    driver.autocommit = False
                    return found
                out: list[Any] = []  # sqlite3 without a transaction open is autocommit
                for oid in ids:
                    args = one.args({"repo_id": repo_id, "oid": oid})
                    out.extend(driver.execute(one.sql, args).fetchall())
                return out

            one = raw.chain_one if self.codec.optimizer else raw.object_one
            rows = run(one, raw.object_any, oids)
            large = self.large_blobs
            if large is not None and any(r[3] == large.encoding for r in rows):
                chunked = True  # an ordinary unit reads (or streams) a chunked blob
            else:
                chunked = False
                decoded = resolve_rows(
                    self.codec,
                    repo_id,
                    rows + self._packed_cached(repo_id, oids, rows, chains=False),
                    lambda bases: self._chains_cached(
                        repo_id, bases, run(raw.chain_one, raw.chain_any, bases)
                    ),
                )
        except BaseException as exc:
            if isinstance(exc, GovcError):
                raise
            # Not resetting autocommit in a ``finally``: after an interrupted statement
            # that reset itself fails, and its error would replace a KeyboardInterrupt.
            # A connection in an unknown state (interrupted, lost, still autocommit) is
            # dropped, never handed out again.
            if not isinstance(exc, Exception) or self._fetch_conn_lost(pooled, exc, pg):
                pooled.invalidate(exc if isinstance(exc, Exception) else None)
            if isinstance(exc, Exception):
                raise CacheMiss from exc
            raise  # KeyboardInterrupt, SystemExit ...: never ours to swallow
        finally:
            pooled.close()
        if chunked:
            raise CacheMiss
        out = found
        keep = set(oids)
        for oid, (type_number, data, _depth) in decoded.items():
            key = ObjectId(oid)
            if key in keep:
                out[key] = RawObject(type_name_of(type_number, key), data)
        self.reads.count(fetches=1, fetched_objects=len(out))
        return out

    def _packed_cached(
        self, repo_id: int, wanted: Sequence[bytes], rows: list[Any], *, chains: bool = True
    ) -> list[Any]:
        """For :meth:`fetch_objects`: the rows ``rows`` lack (of ``wanted``, and with
        ``chains`` of the bases their deltas name), from packs known and decompressed in
        this process; ``CacheMiss`` otherwise (an ordinary unit then reads them)."""
        present = {bytes(r[0]) for r in rows}
        missing = [bytes(o) for o in wanted if bytes(o) not in present]
        if chains:
            missing += [
                bytes(r[4][:OID_LEN])
                for r in rows
                if r[3] in DELTA_ENCODINGS and bytes(r[4][:OID_LEN]) not in present
            ]
        if not missing:
            return []
        found = self.packs.cached_rows(repo_id, missing)
        if found is None:
            raise CacheMiss
        return list(found)

    def _chains_cached(self, repo_id: int, bases: Sequence[bytes], rows: list[Any]) -> list[Any]:
        return rows + self._packed_cached(repo_id, bases, rows)

    def _fetch_conn_lost(self, pooled: Any, exc: Exception, pg: bool) -> bool:
        if pg and getattr(pooled.driver_connection, "autocommit", False):
            return True
        try:
            lost = self.engine.dialect.is_disconnect(exc, pooled.dbapi_connection, None)  # type: ignore[arg-type]
            return bool(lost)
        except Exception:
            return True

    def refs_match(self, repo_id: int, expected: Mapping[str, ObjectId | None]) -> bool:
        """Whether every ref in ``expected`` has that target now (None: absent).

        Read on a new connection, outside any transaction and cache: this is how a
        COMMIT whose acknowledgement was lost with the connection is resolved. Driver
        errors propagate untranslated so the transaction manager can classify them.
        """
        with self.engine.connect() as conn:
            for name, want in expected.items():
                row = conn.execute(S_REF_GET, {"repo_id": repo_id, "name": name}).first()
                have = None if row is None else bytes(row[0])
                if have != want:
                    return False
        return True

    #: Chunked storage of large blobs (``govc_db.storage.chunks.ChunkStore``), wired in by
    #: the Store; None: chunked blobs can be neither written nor read.
    large_blobs: Any = None

    # repository catalog --------------------------------------------------------------
    #: The query-result cache (:mod:`govc_db.db.cache`); None when it is switched off.
    cache: QueryCache | None = None
    #: PostgreSQL with ``Settings.notify_enabled``: ref moves and deletions are announced.
    notify_enabled: bool = False
    #: Identifies this Store in its notifications.
    store_id: str = ""
    _repo_names: dict[int, str] | None = None

    def attach(self, *, cache: QueryCache | None, notify: bool, store_id: str) -> None:
        """Wire the Store's cache and notification settings in (once, at Store creation)."""
        self.cache = cache
        self.notify_enabled = notify and self.dialect == "postgresql"
        self.store_id = store_id
        self._repo_names = {}

    def _remember_name(self, repo_id: int, name: str) -> None:
        names = self._repo_names
        if names is not None:
            if len(names) >= 10_000:  # ids are never reused: forgetting is only a re-read
                names.clear()
            names[repo_id] = name

    def repository_name(self, conn: Connection, repo_id: int) -> str | None:
        """The name of repository ``repo_id`` (for notification payloads), read on ``conn``
        when not already known."""
        names = self._repo_names
        if names is not None and repo_id in names:
            return names[repo_id]
        row = conn.execute(S_REPO_NAME, {"id": repo_id}).first()
        if row is None:
            return None
        self._remember_name(repo_id, row[0])
        return str(row[0])

    def repository_exists(self, conn: Connection, repo_id: int) -> bool:
        """Whether repository ``repo_id`` exists, checked on ``conn`` at the start of a unit.

        A read unit may answer from the cache (a deletion invalidates it); a write unit
        always asks the database.
        """
        cache = self.cache
        usable = (
            cache is not None
            and not conn.get_execution_options().get(WRITE_OPTION, False)
            and not uncached_active()
            and cache.mutable_enabled()
        )
        if usable and cache is not None and cache.get_exists(repo_id):
            return True
        found = conn.execute(S_REPO_EXISTS, {"id": repo_id}).first() is not None
        token = conn.info.get(TOKEN_KEY)
        if found and usable and cache is not None and isinstance(token, int):
            cache.put_exists(token, repo_id)
        return found

    def get_repository(self, name: str) -> RepositoryRecord | None:
        """The catalog row of ``name`` or None (absence is never cached)."""
        cache = self.cache
        usable = cache is not None and cache.mutable_enabled()
        if usable and cache is not None:
            hit = cache.get_repository(name)
            if isinstance(hit, RepositoryRecord):
                return hit

        def body(conn: Connection) -> tuple[Any, Any]:
            return conn.info.get(TOKEN_KEY), conn.execute(S_REPO_GET, {"name": name}).first()

        # Through the transaction manager: retried after a lost connection, joined to an
        # open store.transaction(), and ended by COMMIT (a ROLLBACK would make psycopg
        # drop every prepared statement of the connection).
        token, row = self.txn.run(body, write=False, what="repository lookup")
        if row is None:
            return None
        rec = RepositoryRecord(row.id, row.name, row.default_branch)
        self._remember_name(rec.id, rec.name)
        if usable and cache is not None and isinstance(token, int):
            cache.put_repository(token, name, rec.id, rec)
        return rec

    def create_repository(self, name: str, default_branch: str) -> RepositoryRecord:
        """Insert a catalog row; ``AlreadyExists`` if the name is taken.

        Runs through the transaction manager: inside ``store.transaction()`` it joins it.
        """

        def body(conn: Connection) -> RepositoryRecord:
            try:
                conn.execute(T_REPO.insert().values(name=name, default_branch=default_branch))
            except IntegrityError as exc:
                raise AlreadyExists(f"repository {name!r} already exists") from exc
            row = conn.execute(S_REPO_GET, {"name": name}).one()
            return RepositoryRecord(row.id, row.name, row.default_branch)

        rec = self.txn.run(body, write=True, what="create repository")
        self._remember_name(rec.id, rec.name)
        return rec

    def list_repositories(self) -> list[str]:
        """All repository names, sorted."""

        def body(conn: Connection) -> list[str]:
            # Sorted in Python: ORDER BY follows the database collation, which varies.
            return sorted(r[0] for r in conn.execute(S_REPO_LIST))

        return self.txn.run(body, write=False, what="list repositories")

    def delete_repository(self, name: str) -> RepositoryRecord:
        """Delete a repository and every row that belongs to it; ``NotFound`` if absent.

        Other Stores forget it through NOTIFY (PostgreSQL) or ``data_version`` (SQLite).
        """
        deleted: list[int] = []

        def body(conn: Connection) -> RepositoryRecord:
            deleted.clear()
            row = conn.execute(S_REPO_GET, {"name": name}).first()
            if row is None:
                raise NotFound(f"repository {name!r} not found")
            # Explicit deletes rather than relying on ON DELETE CASCADE, which SQLite
            # honours only with foreign keys switched on for the connection.
            for table in DEPENDENT_TABLES:
                conn.execute(delete(table).where(table.c.repo_id == row.id))
            conn.execute(S_REPO_DEL, {"id": row.id})
            if self.notify_enabled:
                payload = repository_deleted_message(self.store_id, row.id, row.name)
                conn.execute(NOTIFY_STATEMENT, {"payload": payload})
            rec = RepositoryRecord(row.id, row.name, row.default_branch)
            cache = self.cache
            tx = self.txn.current()
            if cache is not None and tx is not None:
                tx.after_commit(lambda: cache.invalidate_repository(rec.id, rec.name))
            deleted.append(rec.id)
            if tx is not None:
                tx.after_commit(lambda: self.packs.forget(rec.id))
            return rec

        def gone() -> bool:  # resolves a COMMIT whose outcome was lost with the connection
            with self.engine.connect() as conn:
                return (
                    bool(deleted) and conn.execute(S_REPO_NAME, {"id": deleted[0]}).first() is None
                )

        return self.txn.run(body, write=True, what="delete repository", verify_commit=gone)


_ = literal_column  # re-exported for extensions building their own statements

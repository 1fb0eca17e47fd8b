"""``gc()``: pack a repository's objects into pack rows while others work.

A *full* run reads the repository's ``govc_objects`` rows and then its existing packs
(nothing but ``gc()`` changes packs, and one runs at a time), decodes every object
(delta chains resolved in memory), orders them so that each version follows the one it
was a delta of (:func:`_order`), cuts the order
into packs of about :data:`govc_db.store.packs.PACK_TARGET` bytes, compresses each as
one zstd frame, and swaps them in: each write transaction inserts a few packs and
deletes the ``govc_objects`` rows of exactly the objects they hold; a last one deletes
the packs of earlier runs (every object of theirs is in a new pack by then). Chunked
blobs and objects over :data:`govc_db.store.packs.PACK_OBJECT_MAX` stay rows. An
*incremental* run (:func:`_repack_pays` decides, or ``full=``) reads only the packs'
index, packs the loose rows alone and leaves the old packs in place.

How it stays safe with readers and writers running:

* An object is always readable: a transaction that deletes rows has inserted the pack
  holding them, and readers look in ``govc_objects`` first, then in the packs
  (:class:`govc_db.store.packs.PackStore` reloads its index when an id or a pack it
  expects is missing). Packed entries are whole, so a delta written meanwhile against
  an object being packed decodes from the pack.
* Rows written meanwhile are not in the run's snapshot and are never deleted; the next
  run packs them.
* One ``gc()`` per repository at a time: on PostgreSQL a session advisory lock held for
  the run; on SQLite a lock in this process (SQLite serializes write transactions, but
  two processes running ``gc()`` on one file at once are not supported).
* Interrupting it (an exception, ``KeyboardInterrupt``, or ``should_stop`` returning
  True) loses at most the transaction in flight, rolled back: the objects already packed
  are in packs, the rest still rows (some maybe in both, which is harmless); running it
  again packs what is left.

Memory: a run holds the decoded content of every object it packs (each at most
``PACK_OBJECT_MAX``; rows that stay loose are read as their first 20 bytes), so it grows
with the repository's small-object bytes; reading contents a window at a time in packing
order is not built yet.

Space: see :func:`_vacuum`.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from sqlalchemy import and_, bindparam, case, delete, func, insert, select, text

from govc_db.errors import GovcError
from govc_db.objects import TYPE_NAMES, TYPE_NUMBERS, ObjectId, hash_object
from govc_db.perf.memory import collector_paused
from govc_db.storage.chunks import ENC_CHUNKED
from govc_db.store.codec import DELTA_ENCODINGS, ENC_RAW, OID_LEN, Codec, StoredRow
from govc_db.store.packs import (
    PACK_OBJECT_MAX,
    PACK_TARGET,
    T_PACK,
    decode_meta,
    decompress,
    encode_pack,
)
from govc_db.store.reflog import compact_reflog
from govc_db.store.sql import SqlBackend
from govc_db.store.statements import T_OBJ

__all__ = ["GcBusy", "GcReport", "run_gc"]

#: Objects packed per write transaction (each transaction inserts the packs holding them
#: and deletes their ``govc_objects`` rows): short transactions, writers never wait long.
BATCH: Final = 4000
#: zstd level of a pack. Measured on the packs of the 2,001-commit bench history and of
#: the 501-commit realistic one: level 3 377 / 1,155 KB, 7 368 / 1,123 KB, 12 357 /
#: 1,104 KB, at about 0.1, 0.3 and 1.1 s per 15 MB of contents.
PACK_LEVEL: Final = 7
#: A run repacks everything once the loose rows are 1/REPACK_LOOSE of the packed objects.
REPACK_LOOSE: Final = 4
#: Packs beyond twice what a repack would write before a run repacks everything.
REPACK_SLACK: Final = 4
#: Bytes of a chain root's content that order the roots (see :func:`_order`).
ROOT_KEY: Final = 64
_R: Any = bindparam("repo_id")
S_BYTES = select(func.count(), func.coalesce(func.sum(func.length(T_OBJ.c.data)), 0)).where(
    T_OBJ.c.repo_id == _R
)
S_PACK_BYTES = select(
    func.coalesce(func.sum(T_PACK.c.count), 0),
    func.coalesce(func.sum(func.length(T_PACK.c.data) + func.length(T_PACK.c.ids)), 0),
).where(T_PACK.c.repo_id == _R)
#: The loose rows; ``data`` whole only for the rows that will be packed: of a row that
#: stays (chunked manifests, objects over ``PACK_OBJECT_MAX``) only its first 20 bytes,
#: the base id of a delta row, so large objects are never held by a run.
S_LOOSE = select(
    T_OBJ.c.oid,
    T_OBJ.c.type,
    T_OBJ.c.size,
    T_OBJ.c.encoding,
    case(
        (
            and_(T_OBJ.c.size <= PACK_OBJECT_MAX, T_OBJ.c.encoding != ENC_CHUNKED),
            T_OBJ.c.data,
        ),
        else_=func.substr(T_OBJ.c.data, 1, OID_LEN),
    ),
).where(T_OBJ.c.repo_id == _R)
S_PACK_META = select(T_PACK.c.pack_id, T_PACK.c.count, T_PACK.c.meta).where(T_PACK.c.repo_id == _R)
S_PACKS_DATA = select(T_PACK.c.pack_id, T_PACK.c.data).where(T_PACK.c.repo_id == _R)
S_PACK_ADD = insert(T_PACK)
_SQLITE_DEL: Final = f"DELETE FROM {T_OBJ.name} WHERE repo_id = ? AND oid = ?"
#: :data:`S_LOOSE` for psycopg's binary cursor.
_PG_LOOSE: Final = (
    f"SELECT oid, type, size, encoding, CASE WHEN size <= {PACK_OBJECT_MAX} AND encoding <> "
    f"{ENC_CHUNKED} THEN data ELSE substr(data, 1, {OID_LEN}) END FROM {T_OBJ.name} "
    "WHERE repo_id = %s"
)
_PG_DEL: Final = f"DELETE FROM {T_OBJ.name} WHERE repo_id = %s AND oid = ANY(%b)"
S_PACKS_DEL = delete(T_PACK).where(T_PACK.c.repo_id == _R, T_PACK.c.pack_id <= bindparam("upto"))
_LOCKS: dict[int, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


class GcBusy(GovcError):
    """Another ``gc()`` of the same repository is running."""


@dataclass(slots=True)
class GcReport:
    """What one ``gc()`` did."""

    objects: int = 0
    """Objects of the repository (loose rows and packed entries)."""
    visited: int = 0
    """Objects read and considered for packing."""
    rewritten: int = 0
    """Objects written into new packs."""
    packs: int = 0
    """Pack rows written."""
    loose: int = 0
    """Objects left in ``govc_objects`` (chunked and large blobs)."""
    bytes_before: int = 0
    """Stored bytes of the repository's objects (``data`` columns, pack ids) before."""
    bytes_after: int = 0
    """... and after."""
    max_depth: int = 0
    """Longest delta chain among the objects left loose."""
    mean_depth: float = 0.0
    """Mean chain depth of the objects left loose (0 = stored whole)."""
    depths: dict[int, int] = field(default_factory=dict)
    """Chain depth -> loose objects."""
    seconds: float = 0.0
    interrupted: bool = False
    vacuum: str = ""
    """The space-returning statement that ran."""
    full: bool = True
    """Whether every object was repacked (else only the loose rows were packed)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-serializable."""
        d = asdict(self)
        d["depths"] = {str(k): v for k, v in sorted(self.depths.items())}
        return d


def _lock_key(repo_id: int) -> int:
    digest = hashlib.sha1(b"govc_db.gc").digest()
    return (int.from_bytes(digest[:4], "big") & 0x7FFFFFFF) << 31 | (repo_id & 0x7FFFFFFF)


#: Entry order inside packs: commits, trees, blobs, tags (similar objects together).
_KIND_ORDER: Final = {1: 0, 2: 1, 3: 2, 4: 3}


def _order(contents: dict[bytes, tuple[int, bytes]], links: dict[bytes, bytes]) -> list[bytes]:
    """The packing order: by kind; each object right after the base its delta row named
    (the write path deltas a version against the previous one of the same path), depth
    first; the chains' roots (objects stored whole: first versions, and every
    ``delta_max_depth``-th version) sorted by their first bytes, which puts the chains of
    one file next to each other (a file's versions mostly start alike).

    Measured against pairing every object with its predecessor at the same path by
    walking the trees of the whole history: that ordering packed the 2,001-commit bench
    history in 316 KB against 357 KB here, and the 501-commit realistic history in
    1,146 KB against 1,111 KB here, but took most of gc()'s time parsing trees.
    """
    pred: dict[bytes, bytes | None] = {}
    for key in contents:
        link = links.get(key)
        pred[key] = link if link in contents else None
    children: dict[bytes, list[bytes]] = {}
    roots: list[bytes] = []
    for key, prev in pred.items():
        if prev is None or contents[prev][0] != contents[key][0]:
            roots.append(key)
        else:
            children.setdefault(prev, []).append(key)
    roots.sort(key=lambda o: (_KIND_ORDER.get(contents[o][0], 9), contents[o][1][:ROOT_KEY]))
    out: list[bytes] = []
    seen: set[bytes] = set()
    for root in roots:
        stack = [root]
        while stack:
            top = stack.pop()
            if top in seen:
                continue
            seen.add(top)
            out.append(top)
            stack.extend(reversed(children.get(top, ())))
    # A cycle of links (impossible for acyclic chains; defensive): the rest in any order.
    out.extend(o for o in pred if o not in seen)
    return out


def _decode_into(
    codec: Codec,
    rows: dict[bytes, StoredRow],
    contents: dict[bytes, tuple[int, bytes]],
    fetch: Callable[[Sequence[bytes]], Sequence[StoredRow]],
) -> None:
    """Decode every one of ``rows`` into ``contents`` (``oid -> (type, content)``, which
    holds the entries of the old packs already): each chain walked down to the first
    object decoded already or stored whole, then decoded back up, every layer once.

    Bases in neither (rows that stay loose, read whole through the store) come from one
    ``fetch`` call. Unlike :func:`govc_db.store.codec.resolve_rows` nothing goes to the
    shared decoded cache (a run decodes every object once; it would only evict what
    readers use) and nothing is looked up there.
    """
    decode = codec.decode
    outside = {
        r[4][:OID_LEN]
        for r in rows.values()
        if r[3] in DELTA_ENCODINGS and r[4][:OID_LEN] not in rows
    }
    outside.difference_update(contents)
    extra: dict[bytes, bytes] = {}
    if outside:
        extra = {r[0]: r[4] for r in fetch(list(outside)) if r[3] == ENC_RAW}
    for oid, row in rows.items():
        if oid in contents:
            continue
        chain: list[StoredRow] = []
        content: bytes | None = None
        while row[3] in DELTA_ENCODINGS:
            chain.append(row)
            if len(chain) > 1000:
                raise GovcError("stored delta chain is corrupt (too deep or a cycle)")
            base = row[4][:OID_LEN]
            hit = contents.get(base)
            if hit is not None:
                content = hit[1]
                break
            below = rows.get(base)
            if below is None:
                content = extra.get(base)
                if content is None:
                    raise GovcError(f"delta base {base.hex()} is missing from the store")
                break
            row = below
        if content is None:
            content = decode(row[3], row[4], row[2])
            contents[row[0]] = (row[1], content)
        for above in reversed(chain):
            content = decode(above[3], above[4], above[2], content)
            contents[above[0]] = (above[1], content)


def _repack_pays(loose: int, packed: int, packs: int, packed_bytes: int, target: int) -> bool:
    """Whether a run repacks everything rather than packing only the ``loose`` rows that
    can be packed: on the first run (nothing packed), when the loose rows are a quarter
    of the packed objects or more, or when the packs are twice as many as a repack would
    write, plus :data:`REPACK_SLACK` (each incremental run adds at least one, and
    versions packed apart compress worse). Otherwise the packs are left as they are,
    neither read nor rewritten: a run after a few hundred commits costs what those
    commits wrote, not the repository."""
    if packed == 0 or loose * REPACK_LOOSE >= packed:
        return True
    return packs > 2 * (packed_bytes // target + 1) + REPACK_SLACK


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
    pack_target: int = PACK_TARGET,
    full: bool | None = None,
) -> GcReport:
    """Pack repository ``repo_id``'s objects; see the module docstring. ``max_depth``
    is the delta bound of the write path (rows left loose keep their chains). ``full``:
    True repacks everything, False packs only the loose rows, None chooses
    (:func:`_repack_pays`)."""
    del max_depth  # packed entries are whole; loose rows are left as they are
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
        with collector_paused():
            _pack_repository(
                backend, repo_id, report, progress, should_stop, batch, pack_target, full
            )
        compact_reflog(backend, repo_id)  # the ref moves, many to a row (store/reflog.py)
        if vacuum:
            report.vacuum = _vacuum(backend, full=report.full)
        with backend.unit(repo_id, what="gc") as u:
            n, loose = u.execute(S_BYTES).one()
            _packed, in_packs = u.execute(S_PACK_BYTES).one()
        report.bytes_after = int(loose) + int(in_packs)
        report.loose = int(n)
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


def _pack_repository(
    backend: SqlBackend,
    repo_id: int,
    report: GcReport,
    progress: Callable[[int, int], None] | None,
    should_stop: Callable[[], bool] | None,
    batch: int,
    pack_target: int,
    full: bool | None,
) -> None:
    """Read everything once, decode, order, compress into packs, and swap them in.

    Run with Python's cyclic collector paused (:func:`collector_paused`, by the caller):
    the run allocates tens of thousands of row tuples that are garbage only at its end,
    and each collection would walk them all (hundreds on the bench history).
    """
    codec = backend.codec
    pg = backend.dialect == "postgresql"
    with backend.unit(repo_id, what="gc") as u:
        _n, loose_bytes = u.execute(S_BYTES).one()
        _p, packed_bytes = u.execute(S_PACK_BYTES).one()
        report.bytes_before = int(loose_bytes) + int(packed_bytes)
        loose: dict[bytes, StoredRow] = {}
        if pg:
            # Binary results on the unit's driver connection: no hex decoding of bytea.
            driver: Any = u.conn.connection.driver_connection
            with driver.cursor(binary=True) as cur:
                found = cur.execute(_PG_LOOSE, (repo_id,)).fetchall()
        else:  # fetchall(): one driver call, not one per row through the result
            found = u.execute(S_LOOSE).fetchall()
        for r in found:
            oid = bytes(r[0])
            loose[oid] = (oid, r[1], r[2], r[3], bytes(r[4]))
        index = [(int(r[0]), int(r[1]), bytes(r[2])) for r in u.execute(S_PACK_META).fetchall()]
    old_max = max((p[0] for p in index), default=0)
    packed = sum(p[1] for p in index)
    # Rows that stay loose: chunked blobs (their row is a manifest) and large objects.
    stay = {o for o, r in loose.items() if r[3] == ENC_CHUNKED or r[2] > PACK_OBJECT_MAX}
    small = [r for o, r in loose.items() if o not in stay]
    if full is None:
        packed_raw = sum(e[2] for p in index for e in decode_meta(p[2]))
        full = _repack_pays(len(small), packed, len(index), packed_raw, pack_target)
    report.full = full
    old: list[tuple[int, bytes]] = []
    if full:
        # Packs change only by gc(), which this run excludes: read after the loose rows.
        with backend.unit(repo_id, what="gc") as u:
            old = [(int(r[0]), bytes(r[1])) for r in u.execute(S_PACKS_DATA).fetchall()]
    metas = {p[0]: p[2] for p in index}
    contents: dict[bytes, tuple[int, bytes]] = {}
    for pid, data in old:
        meta = metas.get(pid)
        if meta is None:
            raise GovcError("a pack changed while gc() ran")
        raw = decompress(data)
        for kind, offset, size in decode_meta(meta):
            content = raw[offset : offset + size]
            name = TYPE_NAMES.get(kind)
            if name is None:
                raise GovcError(f"stored pack entry has an unknown type {kind}")
            # Packs keep only the first bytes of each id: the content gives the rest.
            contents[hash_object(name, content)] = (kind, content)
    del old

    def chains(ids: Sequence[bytes]) -> list[StoredRow]:
        """Rows of ``ids`` and of every base below them: loose rows and packed entries
        (stored whole); a base that stays loose (its data was not read) is read whole
        through the store."""
        out: list[StoredRow] = []
        todo = list(ids)
        done: set[bytes] = set()
        far: list[bytes] = []
        while todo:
            oid = todo.pop()
            if oid in done:
                continue
            done.add(oid)
            if oid in stay:
                far.append(oid)
                continue
            row = loose.get(oid)
            if row is not None:
                out.append(row)
                if row[3] in DELTA_ENCODINGS:
                    todo.append(row[4][:OID_LEN])
                continue
            hit = contents.get(oid)
            if hit is not None:
                out.append((oid, hit[0], len(hit[1]), 0, hit[1]))
            else:  # packed, and the packs were not read (an incremental run)
                far.append(oid)
        if far:
            with backend.unit(repo_id, what="gc") as r:
                found = r.objects.get_many([ObjectId(o) for o in far])
            for oid, obj in found.items():
                out.append((bytes(oid), TYPE_NUMBERS[obj.type], len(obj.data), 0, obj.data))
        return out

    links = {r[0]: r[4][:OID_LEN] for r in small if r[3] in DELTA_ENCODINGS}
    _decode_into(codec, {r[0]: r for r in small}, contents, chains)
    depths: dict[int, int] = {}
    for oid in stay:
        row: StoredRow | None = loose[oid]
        depth = 0
        while row is not None and row[3] in DELTA_ENCODINGS:
            depth += 1
            row = loose.get(row[4][:OID_LEN])
        depths[depth] = depths.get(depth, 0) + 1
    report.depths = depths
    if depths:
        report.max_depth = max(depths)
        report.mean_depth = round(sum(d * n for d, n in depths.items()) / len(stay), 2)
    del small
    report.objects = len(contents) + len(stay) + (0 if full else packed)
    report.visited = len(contents) + len(stay)
    order = _order(contents, links)
    total = len(order)
    next_id = old_max + 1
    pending: list[dict[str, Any]] = []
    pending_ids: list[bytes] = []
    done = 0

    def flush() -> None:
        nonlocal done
        with backend.unit(repo_id, write=True, what="gc") as w:
            w.conn.execute(S_PACK_ADD, pending)
            # In key order: neighbouring b-tree pages, not random ones.
            gone = sorted([o for o in pending_ids if o in loose])
            # On the unit's own driver connection (same transaction): an IN list of
            # hundreds of ids is compiled and converted anew each time, SQLAlchemy's
            # executemany builds a parameter dict per row (a third of a run's time on the
            # bench history), and psycopg escapes a text bytea[] element by element.
            driver: Any = w.conn.connection.driver_connection
            if gone and pg:
                # One statement, the ids as one binary array (%b): the server looks
                # every id up.
                with driver.cursor() as cur:
                    cur.execute(_PG_DEL, (repo_id, gone))
            elif gone:
                cur = driver.cursor()
                try:
                    cur.executemany(_SQLITE_DEL, [(repo_id, o) for o in gone])
                finally:
                    cur.close()
        report.packs += len(pending)
        report.rewritten += len(pending_ids)
        done += len(pending_ids)
        pending.clear()
        pending_ids.clear()
        if progress is not None:
            progress(done, total)

    def groups() -> Iterator[list[tuple[bytes, int, bytes]]]:
        group: list[tuple[bytes, int, bytes]] = []
        size = 0
        for i, oid in enumerate(order):
            kind, content = contents[oid]
            group.append((oid, kind, content))
            size += len(content)
            if size >= pack_target or i + 1 == total:
                yield group
                group, size = [], 0

    # The next pack is compressed on a worker thread (zstd releases the GIL) while this
    # thread writes the one before: on the bench history the writes and the compression
    # take about as long each.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="govc-gc-pack") as pool:
        todo = groups()
        ahead: deque[tuple[list[tuple[bytes, int, bytes]], Future[tuple[bytes, bytes, bytes]]]]
        ahead = deque()

        def submit() -> None:
            group = next(todo, None)
            if group is not None:
                ahead.append((group, pool.submit(encode_pack, group, PACK_LEVEL)))

        submit()
        while ahead:
            group, compressing = ahead.popleft()
            submit()
            ids, meta, data = compressing.result()
            pending.append(
                {
                    "repo_id": repo_id,
                    "pack_id": next_id,
                    "count": len(group),
                    "ids": ids,
                    "meta": meta,
                    "data": data,
                }
            )
            pending_ids.extend(e[0] for e in group)
            next_id += 1
            if len(pending_ids) >= batch or not ahead:
                if should_stop is not None and should_stop():
                    report.interrupted = True
                    return
                flush()
    if old_max and full:
        # Every object of the old packs is in a new one now.
        with backend.unit(repo_id, write=True, what="gc") as w:
            w.execute(S_PACKS_DEL, {"upto": old_max})


#: Tables whose indexes gc() rebuilds on PostgreSQL: their keys are object ids, which
#: arrive in random order, so page splits leave their b-trees about 70 % full (measured
#: on the bench history: 20.7 MiB before, 19.0 MiB after rebuilding them).
REINDEXED: Final = ("govc_objects", "govc_commits")
#: On SQLite a whole-file ``VACUUM`` (which rebuilds every b-tree densely, about 10 % of
#: a history's file) runs only up to this file size: it holds the write lock while it
#: copies the file (0.1 s for the 11 MiB bench history). Larger files get
#: ``PRAGMA incremental_vacuum`` (free pages returned, no rewrite).
SQLITE_VACUUM_MAX: Final = 64 * 1024 * 1024


def _vacuum(backend: SqlBackend, *, full: bool = True) -> str:
    """Return freed space without long exclusive locks; returns what ran. After an
    incremental run (``full`` False) only the plain ``VACUUM`` on PostgreSQL and
    ``PRAGMA incremental_vacuum`` on SQLite.

    PostgreSQL: plain ``VACUUM`` of the objects (no exclusive lock), then ``REINDEX
    TABLE CONCURRENTLY`` of the tables keyed by object ids (builds each index anew beside
    the old one and swaps it in: readers and writers go on meanwhile). An invalid index
    left by an interrupted rebuild (``*_ccnew``) is dropped first. SQLite: ``VACUUM`` of
    a file up to :data:`SQLITE_VACUUM_MAX`, else ``PRAGMA incremental_vacuum``.
    """
    with backend.engine.connect() as conn:
        if backend.dialect == "postgresql":
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(text("VACUUM govc_objects, govc_packs"))
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
            if not full:
                return "VACUUM govc_objects, govc_packs"
            for table in REINDEXED:
                conn.execute(text(f"REINDEX TABLE CONCURRENTLY {table}"))
            return "VACUUM govc_objects, govc_packs; REINDEX TABLE CONCURRENTLY " + ", ".join(
                REINDEXED
            )
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar() or 0
        page_size = conn.exec_driver_sql("PRAGMA page_size").scalar() or 0
        conn.commit()
        small_file = int(pages) * int(page_size) <= SQLITE_VACUUM_MAX
        if full and small_file and _sqlite_vacuum(backend):
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

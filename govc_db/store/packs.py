"""Pack rows: many small objects of a repository in one ``govc_packs`` row.

On PostgreSQL every row costs about 125 bytes besides its data (tuple header, line
pointer, key columns, primary-key entry), more than the stored data of a typical tree,
commit or small blob once it is a delta; on SQLite less, but still tens of bytes.
``gc()`` therefore moves a repository's objects (all but chunked and very large blobs)
into pack rows: the contents of a few hundred objects, ordered so that versions of the
same file follow each other, compressed together as one zstd frame (each version finds
its predecessor in the frame's window: a delta for free, with no chain to follow on
read). A pack row holds:

* ``ids``: the entries' 20-byte ids, in entry order;
* ``meta``: per entry its type number (one byte) and size (a varint): offsets follow;
* ``data``: one zstd frame of the entries' contents concatenated in that order.

Readers look an object up in ``govc_objects`` first and in the packs second, through
:class:`PackStore`: a per-process index (object id -> pack, type, offset, size) loaded
from ``ids`` and ``meta`` (about 23 bytes an object), refreshed when an id is not found
in it (another process's ``gc()`` added packs) and reloaded when a pack it names is gone
(a later ``gc()`` repacked it). Decompressed packs share the decoded-object cache
(:class:`govc_db.store.codec.DecodedCache`) with delta bases, so a read of a packed
object decompresses at most one pack (:data:`PACK_TARGET` bytes) and the next reads of
that pack cost a slice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import zstandard
from sqlalchemy import Table, bindparam, select

from govc_db.errors import GovcError
from govc_db.models import PackRow
from govc_db.store.codec import ENC_RAW, DecodedCache, StoredRow

__all__ = [
    "PACK_OBJECT_MAX",
    "PACK_TARGET",
    "PackStore",
    "decode_meta",
    "encode_pack",
]

T_PACK: Table = PackRow.__table__  # type: ignore[assignment]
#: A pack is closed once its contents reach this many bytes: a cold read of one packed
#: object decompresses at most this much (about 0.3 ms at zstd's speed).
PACK_TARGET: Final = 512 * 1024
#: Objects larger than this stay in ``govc_objects`` (their row overhead is negligible,
#: and a read must not decompress a pack for them).
PACK_OBJECT_MAX: Final = 256 * 1024
OID_LEN: Final = 20
#: Decoders refuse frames whose window exceeds this.
_MAX_WINDOW: Final = 1 << 27

_R: Any = bindparam("repo_id")
S_PACK_INDEX = (
    select(T_PACK.c.pack_id, T_PACK.c.ids, T_PACK.c.meta)
    .where(T_PACK.c.repo_id == _R, T_PACK.c.pack_id > bindparam("after"))
    .order_by(T_PACK.c.pack_id)
)
S_PACK_DATA = select(T_PACK.c.data).where(
    T_PACK.c.repo_id == _R, T_PACK.c.pack_id == bindparam("pack_id")
)

Execute = Callable[[Any, dict[str, Any]], Any]
#: object id -> (pack id, type number, offset, size)
Location = tuple[int, int, int, int]


def _varint(n: int, out: bytearray) -> None:
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)


def encode_pack(
    entries: Sequence[tuple[bytes, int, bytes]], level: int
) -> tuple[bytes, bytes, bytes]:
    """``(ids, meta, data)`` of a pack of ``(oid, type number, content)`` entries."""
    meta = bytearray()
    for _oid, kind, content in entries:
        meta.append(kind)
        _varint(len(content), meta)
    raw = b"".join(e[2] for e in entries)
    params = zstandard.ZstdCompressionParameters.from_level(
        level, source_size=len(raw), write_checksum=0, write_content_size=1
    )
    data = zstandard.ZstdCompressor(compression_params=params).compress(raw)
    return b"".join(e[0] for e in entries), bytes(meta), data


def decode_meta(meta: bytes) -> list[tuple[int, int, int]]:
    """``[(type number, offset, size)]`` of a pack's entries."""
    out: list[tuple[int, int, int]] = []
    i = at = 0
    n_meta = len(meta)
    while i < n_meta:
        kind = meta[i]
        i += 1
        n = shift = 0
        while True:
            if i >= n_meta or shift > 63:
                raise GovcError("stored pack is corrupt (bad entry sizes)")
            b = meta[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        out.append((kind, at, n))
        at += n
    return out


def decompress(data: bytes) -> bytes:
    """The concatenated contents of a pack (``GovcError`` when corrupt)."""
    try:
        return zstandard.ZstdDecompressor(max_window_size=_MAX_WINDOW).decompress(bytes(data))
    except zstandard.ZstdError as exc:
        raise GovcError("stored pack is corrupt (cannot decompress)") from exc


class _RepoPacks:
    __slots__ = ("max_id", "where")

    def __init__(self) -> None:
        self.max_id = 0
        self.where: dict[bytes, Location] = {}


def _pack_key(pack_id: int) -> bytes:
    # 9 bytes: never equal to a 20-byte object id in the shared decoded cache.
    return b"P" + pack_id.to_bytes(8, "big")


class PackStore:
    """The pack index of each repository this process read, and packed-object reads.

    Every method that may query takes ``execute(statement, params)`` (a unit's, so reads
    see that unit's snapshot). Thread-safe.
    """

    def __init__(self, cache: DecodedCache) -> None:
        self._cache = cache
        self._repos: dict[int, _RepoPacks] = {}
        self._lock = threading.Lock()
        self.loads = 0
        self.pack_reads = 0

    # -- the index -------------------------------------------------------------------
    def _load(self, execute: Execute, repo_id: int, *, full: bool) -> _RepoPacks:
        with self._lock:
            state = None if full else self._repos.get(repo_id)
            after = state.max_id if state is not None else 0
        found = [
            (int(r[0]), bytes(r[1]), bytes(r[2]))
            for r in execute(S_PACK_INDEX, {"repo_id": repo_id, "after": after})
        ]
        with self._lock:
            self.loads += 1
            current = self._repos.get(repo_id)
            if full or current is None:
                current = _RepoPacks()
                self._repos[repo_id] = current
            where = current.where
            for pack_id, ids, meta in found:
                entries = decode_meta(meta)
                if len(ids) != OID_LEN * len(entries):
                    raise GovcError("stored pack is corrupt (ids and sizes differ)")
                for i, (kind, offset, size) in enumerate(entries):
                    where[ids[i * OID_LEN : (i + 1) * OID_LEN]] = (pack_id, kind, offset, size)
                current.max_id = max(current.max_id, pack_id)
            return current

    def _locate(
        self, execute: Execute, repo_id: int, oids: Iterable[bytes], *, full: bool = False
    ) -> dict[bytes, Location]:
        wanted = list(oids)
        state = self._repos.get(repo_id)
        if state is None or full:
            state = self._load(execute, repo_id, full=True)
            fresh = True
        else:
            fresh = False
        where = state.where
        out = {o: where[o] for o in wanted if o in where}
        if len(out) < len(wanted) and not fresh:
            # Not in the index this process knows: another gc() may have added packs.
            where = self._load(execute, repo_id, full=False).where
            out = {o: where[o] for o in wanted if o in where}
        return out

    def forget(self, repo_id: int) -> None:
        """Drop what is known of a (deleted) repository."""
        with self._lock:
            self._repos.pop(repo_id, None)

    # -- reads -----------------------------------------------------------------------
    def _pack(self, execute: Execute | None, repo_id: int, pack_id: int) -> bytes | None:
        key = _pack_key(pack_id)
        hit = self._cache.get(repo_id, key)
        if hit is not None:
            return hit[0]
        if execute is None:
            return None
        row = execute(S_PACK_DATA, {"repo_id": repo_id, "pack_id": pack_id}).first()
        if row is None:
            return None
        raw = decompress(row[0])
        self.pack_reads += 1
        self._cache.put(repo_id, key, raw, 0)
        return raw

    def rows(self, execute: Execute, repo_id: int, oids: Iterable[bytes]) -> list[StoredRow]:
        """The packed objects among ``oids`` as whole stored rows ``(oid, type, size,
        0, content)``; absent ones are left out."""
        wanted = list(dict.fromkeys(oids))
        if not wanted:
            return []
        for attempt in range(2):
            locs = self._locate(execute, repo_id, wanted, full=attempt > 0)
            out, gone = self._slice(execute, repo_id, locs)
            if not gone:
                return out
        raise GovcError("a pack vanished twice while being read")

    def _slice(
        self, execute: Execute | None, repo_id: int, locs: dict[bytes, Location]
    ) -> tuple[list[StoredRow], bool]:
        by_pack: dict[int, list[tuple[bytes, Location]]] = {}
        for oid, loc in locs.items():
            by_pack.setdefault(loc[0], []).append((oid, loc))
        out: list[StoredRow] = []
        for pack_id, items in by_pack.items():
            raw = self._pack(execute, repo_id, pack_id)
            if raw is None:
                return out, True  # repacked by a later gc(): reload the index
            for oid, (_p, kind, offset, size) in items:
                if offset + size > len(raw):
                    raise GovcError("stored pack is corrupt (entry past its end)")
                out.append((oid, kind, size, ENC_RAW, raw[offset : offset + size]))
        return out, False

    def cached_rows(self, repo_id: int, oids: Sequence[bytes]) -> list[StoredRow] | None:
        """As :meth:`rows` without any query: None unless every one of ``oids`` is in
        the index this process holds and its pack is in the decoded cache."""
        state = self._repos.get(repo_id)
        if state is None:
            return None
        where = state.where
        locs: dict[bytes, Location] = {}
        for oid in oids:
            loc = where.get(oid)
            if loc is None:
                return None
            locs[oid] = loc
        out, gone = self._slice(None, repo_id, locs)
        return None if gone else out

    def has(self, execute: Execute, repo_id: int, oids: Iterable[bytes]) -> set[bytes]:
        """The packed ones among ``oids``."""
        return set(self._locate(execute, repo_id, oids))

    def prefix(self, execute: Execute, repo_id: int, lo: bytes, hi: bytes) -> list[bytes]:
        """Packed ids between ``lo`` and ``hi`` (inclusive), sorted."""
        state = self._load(execute, repo_id, full=repo_id not in self._repos)
        return sorted(o for o in state.where if lo <= o <= hi)

    def all_ids(self, execute: Execute, repo_id: int) -> dict[bytes, int]:
        """Every packed id of the repository -> its type number."""
        state = self._load(execute, repo_id, full=repo_id not in self._repos)
        return {o: loc[1] for o, loc in state.where.items()}

    def get_stats(self) -> dict[str, Any]:
        """Index loads, packs decompressed, repositories and objects indexed."""
        with self._lock:
            return {
                "index_loads": self.loads,
                "packs_decompressed": self.pack_reads,
                "repositories": len(self._repos),
                "packed_objects": sum(len(s.where) for s in self._repos.values()),
            }

"""Pack rows: many small objects of a repository in one ``govc_packs`` row.

On PostgreSQL every row costs about 125 bytes besides its data (tuple header, line
pointer, key columns, primary-key entry), more than the stored data of a typical tree,
commit or small blob once it is a delta; on SQLite less, but still tens of bytes.
``gc()`` therefore moves a repository's objects (all but chunked and very large blobs)
into pack rows: the contents of about 2 MiB of objects, ordered so that versions of the
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
object decompresses at most one pack (:data:`PACK_TARGET` bytes), only up to the entry
it wants, and the next reads of that part of the pack cost a slice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import zstandard
from sqlalchemy import Table, bindparam, select

from govc_db.errors import GovcError
from govc_db.models import PackRow
from govc_db.objects import TYPE_NAMES, hash_object
from govc_db.store.codec import ENC_RAW, DecodedCache, StoredRow

__all__ = [
    "KEY_LEN",
    "PACK_OBJECT_MAX",
    "PACK_TARGET",
    "PackStore",
    "decode_meta",
    "encode_pack",
]

T_PACK: Table = PackRow.__table__  # type: ignore[assignment]
#: A pack is closed once its contents reach this many bytes. Measured on the 2,001-commit
#: realistic history (the pack data): 512 KiB 2.51 MB, 1 MiB 2.31, 2 MiB 2.20, 4 MiB 2.14
#: (each version's predecessors are more often in the same frame). A cold read
#: decompresses the pack up to the entry it wants (3.1 ms for a whole 2 MiB pack here).
PACK_TARGET: Final = 2 * 1024 * 1024
#: Objects larger than this stay in ``govc_objects`` (their row overhead is negligible,
#: and a read must not decompress a pack for them).
PACK_OBJECT_MAX: Final = 256 * 1024
OID_LEN: Final = 20
#: Bytes of each id a pack row stores: enough to find an entry (a read checks the
#: whole id by hashing the content it found), 16 bytes an object less than whole ids.
#: Two objects of a repository share a key with odds of n**2 / 2**33 (n objects: about
#: 0.3 pairs for the 50,000 of the bench history), which costs a second candidate to
#: hash, never a wrong answer; a lookup of an absent id hashes a candidate with odds of
#: n / 2**32.
KEY_LEN: Final = 4
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
    return b"".join(e[0][:KEY_LEN] for e in entries), bytes(meta), data


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


def id_width(ids: bytes, count: int) -> int:
    """Bytes per id in a pack's ``ids``: :data:`KEY_LEN` (written now) or 20."""
    if count and len(ids) == count * OID_LEN:
        return OID_LEN
    if len(ids) != count * KEY_LEN:
        raise GovcError("stored pack is corrupt (ids and sizes differ)")
    return KEY_LEN


def decompress(data: bytes) -> bytes:
    """The concatenated contents of a pack (``GovcError`` when corrupt)."""
    try:
        return zstandard.ZstdDecompressor(max_window_size=_MAX_WINDOW).decompress(bytes(data))
    except zstandard.ZstdError as exc:
        raise GovcError("stored pack is corrupt (cannot decompress)") from exc


def decompress_to(data: bytes, end: int | None) -> tuple[bytes, bool]:
    """The contents of a pack up to at least ``end`` (all of them when None), and whether
    that is all of them. zstd decodes block by block (128 KiB), so a read of an entry
    near the start of a pack does not pay for the rest."""
    data = bytes(data)
    try:
        total = zstandard.frame_content_size(data)
        if end is None or total < 0 or end >= total:
            return decompress(data), True
        parts: list[bytes] = []
        got = 0
        with zstandard.ZstdDecompressor(max_window_size=_MAX_WINDOW).stream_reader(data) as r:
            while got < end:
                part = r.read(max(end - got, 1 << 17))
                if not part:
                    break
                parts.append(part)
                got += len(part)
    except zstandard.ZstdError as exc:
        raise GovcError("stored pack is corrupt (cannot decompress)") from exc
    return b"".join(parts), got >= total


class _RepoPacks:
    __slots__ = ("full", "max_id", "more", "where")

    def __init__(self) -> None:
        self.max_id = 0
        #: id key -> where the (first) entry with that key is
        self.where: dict[bytes, Location] = {}
        #: id key -> further entries with the same key (distinct objects whose ids share
        #: their first KEY_LEN bytes, or one object packed twice by an interrupted gc)
        self.more: dict[bytes, list[Location]] = {}
        #: full ids computed for entries (prefix lookups, listings)
        self.full: dict[Location, bytes] = {}

    def candidates(self, key: bytes) -> list[Location]:
        first = self.where.get(key)
        if first is None:
            return []
        extra = self.more.get(key)
        return [first] if extra is None else [first, *extra]


def _pack_key(pack_id: int) -> bytes:
    # 9 bytes: never equal to a 20-byte object id in the shared decoded cache.
    return b"P" + pack_id.to_bytes(8, "big")


#: The "depth" a decompressed pack is cached with: all of it, or a prefix of it.
_WHOLE: Final = 0
_PREFIX: Final = 1


def _matches(oid: bytes, kind: int, content: bytes) -> bool:
    name = TYPE_NAMES.get(kind)
    return name is not None and hash_object(name, content) == oid


class PackStore:
    """The pack index of each repository this process read, and packed-object reads.

    The index holds the first :data:`KEY_LEN` bytes of each id (what ``ids`` stores);
    an entry found by them is returned only when its content hashes to the whole id
    asked for, so a read, ``has`` or prefix lookup never answers with another object.

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
            where, more = current.where, current.more
            for pack_id, ids, meta in found:
                entries = decode_meta(meta)
                width = id_width(ids, len(entries))
                for i, (kind, offset, size) in enumerate(entries):
                    key = ids[i * width : i * width + KEY_LEN]
                    loc = (pack_id, kind, offset, size)
                    if width == OID_LEN:
                        current.full[loc] = ids[i * width : (i + 1) * width]
                    first = where.setdefault(key, loc)
                    if first is not loc:
                        more.setdefault(key, []).append(loc)
                current.max_id = max(current.max_id, pack_id)
            return current

    def _state(self, execute: Execute, repo_id: int, *, full: bool = False) -> _RepoPacks:
        state = self._repos.get(repo_id)
        if state is None or full:
            return self._load(execute, repo_id, full=True)
        return state

    def forget(self, repo_id: int) -> None:
        """Drop what is known of a (deleted) repository."""
        with self._lock:
            self._repos.pop(repo_id, None)

    # -- reads -----------------------------------------------------------------------
    def _pack(self, execute: Execute | None, repo_id: int, pack_id: int, end: int) -> bytes | None:
        """The decompressed pack, at least up to ``end``: from the cache, else read and
        decompressed up to ``end`` (or twice the prefix cached already, if further);
        None when the pack is gone (or, without ``execute``, not cached)."""
        key = _pack_key(pack_id)
        hit = self._cache.get(repo_id, key)
        if hit is not None and (hit[1] == _WHOLE or len(hit[0]) >= end):
            return hit[0]
        if execute is None:
            return None
        row = execute(S_PACK_DATA, {"repo_id": repo_id, "pack_id": pack_id}).first()
        if row is None:
            return None
        # Past a cached prefix: at least twice as far, so the work on a pack read
        # piecemeal stays within twice its size.
        raw, whole = decompress_to(row[0], end if hit is None else max(end, 2 * len(hit[0])))
        self.pack_reads += 1
        self._cache.put(repo_id, key, raw, _WHOLE if whole else _PREFIX)
        return raw

    def rows(self, execute: Execute, repo_id: int, oids: Iterable[bytes]) -> list[StoredRow]:
        """The packed objects among ``oids`` as whole stored rows ``(oid, type, size,
        0, content)``; absent ones are left out."""
        wanted = list(dict.fromkeys(oids))
        if not wanted:
            return []
        for attempt in range(2):
            state = self._state(execute, repo_id, full=attempt > 0)
            found, gone = self._find(execute, repo_id, state, wanted)
            if len(found) < len(wanted) and not gone and attempt == 0:
                # Not in the index this process knows: another gc() may have added packs.
                state = self._load(execute, repo_id, full=False)
                found, gone = self._find(execute, repo_id, state, wanted)
            if not gone:
                return found
        raise GovcError("a pack vanished twice while being read")

    def _find(
        self, execute: Execute | None, repo_id: int, state: _RepoPacks, wanted: Sequence[bytes]
    ) -> tuple[list[StoredRow], bool]:
        """Rows of the ``wanted`` ids found in ``state``'s packs (each checked against
        its whole id); True when a pack named there is gone (or, without ``execute``,
        not decompressed in the cache)."""
        out: list[StoredRow] = []
        for oid in wanted:
            for loc in state.candidates(oid[:KEY_LEN]):
                content = self._content(execute, repo_id, loc)
                if content is None:
                    return out, True
                if _matches(oid, loc[1], content):
                    out.append((oid, loc[1], loc[3], ENC_RAW, content))
                    break
        return out, False

    def _content(self, execute: Execute | None, repo_id: int, loc: Location) -> bytes | None:
        pack_id, _kind, offset, size = loc
        raw = self._pack(execute, repo_id, pack_id, offset + size)
        if raw is None:
            return None
        if offset + size > len(raw):
            raise GovcError("stored pack is corrupt (entry past its end)")
        return raw[offset : offset + size]

    def cached_rows(self, repo_id: int, oids: Sequence[bytes]) -> list[StoredRow] | None:
        """As :meth:`rows` without any query: None unless every one of ``oids`` is in
        the index this process holds and its pack is in the decoded cache."""
        state = self._repos.get(repo_id)
        if state is None:
            return None
        found, gone = self._find(None, repo_id, state, oids)
        return None if gone or len(found) < len(oids) else found

    def has(self, execute: Execute, repo_id: int, oids: Iterable[bytes]) -> set[bytes]:
        """The packed ones among ``oids``."""
        return {r[0] for r in self.rows(execute, repo_id, oids)}

    def _ids(
        self, execute: Execute, repo_id: int, pick: Callable[[_RepoPacks], Iterable[Location]]
    ) -> dict[bytes, int]:
        """Whole id -> type of the entries ``pick`` chooses from the index (hashed once,
        then remembered)."""
        for attempt in range(2):
            state = self._state(execute, repo_id, full=attempt > 0)
            out: dict[bytes, int] = {}
            gone = False
            for loc in sorted(pick(state)):
                oid = state.full.get(loc)
                if oid is None:
                    content = self._content(execute, repo_id, loc)
                    if content is None:
                        gone = True  # repacked by a later gc(): reload the index
                        break
                    name = TYPE_NAMES.get(loc[1])
                    if name is None:
                        raise GovcError(f"stored pack entry has an unknown type {loc[1]}")
                    oid = state.full[loc] = hash_object(name, content)
                out[oid] = loc[1]
            if not gone:
                return out
        raise GovcError("a pack vanished twice while being read")

    @staticmethod
    def _all_locations(state: _RepoPacks) -> list[Location]:
        out = list(state.where.values())
        for extra in state.more.values():
            out.extend(extra)
        return out

    def prefix(self, execute: Execute, repo_id: int, lo: bytes, hi: bytes) -> list[bytes]:
        """Packed ids between ``lo`` and ``hi`` (inclusive), sorted."""
        self._load(execute, repo_id, full=repo_id not in self._repos)
        klo, khi = lo[:KEY_LEN], hi[:KEY_LEN]

        def pick(state: _RepoPacks) -> list[Location]:
            locs: list[Location] = []
            for key in state.where:
                if klo <= key <= khi:
                    locs.extend(state.candidates(key))
            return locs

        return sorted(o for o in self._ids(execute, repo_id, pick) if lo <= o <= hi)

    def all_ids(self, execute: Execute, repo_id: int) -> dict[bytes, int]:
        """Every packed id of the repository -> its type number."""
        self._load(execute, repo_id, full=repo_id not in self._repos)
        return self._ids(execute, repo_id, self._all_locations)

    def get_stats(self) -> dict[str, Any]:
        """Index loads, packs decompressed, repositories and objects indexed."""
        with self._lock:
            return {
                "index_loads": self.loads,
                "packs_decompressed": self.pack_reads,
                "repositories": len(self._repos),
                "packed_objects": sum(len(s.where) for s in self._repos.values()),
            }

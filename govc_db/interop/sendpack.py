"""The pack a fetch or clone receives, written in one streaming pass over the plan.

:func:`govc_db.interop.walk.plan_fetch` lists the objects in pack order (commits, tags,
trees, blobs; history newest first) and, for a tree or blob, the version that replaced it at the
same path when that one is sent too. Here the objects are read in batches of that order
(``iter_bulk``, which on PostgreSQL reads the next batch while this one is written). An
object the store keeps as a splice of another (a :class:`~govc_db.store.ports.Splice`)
goes as the git delta that splice is, when its base went out earlier: nothing is decoded
or diffed for it. Otherwise a tree or blob whose planned base went out earlier is sent as
a delta against it (``ofs-delta`` when the client accepts it, else ``ref-delta``) if the
delta is at most half the object; chains stay within ``Settings.fetch_delta_depth``. The
trees are mostly encoded while the planner reads them (:class:`TreeEntries`, handed to
:func:`~govc_db.interop.walk.plan_fetch` as its sink): their entries are copied into the
pack as they are. Everything is deflated with a zlib state
sized to the object (:mod:`govc_db.interop.packfmt`). Contents of recent objects are kept,
bounded by bytes, as the next deltas' bases; a base evicted from them is read again with
its batch. The pack goes out in side-band-sized pieces as it is produced; its SHA-1
trailer is computed on the way. Commits and tags (never a base) go whole in a loop of
their own. The entries of a pack written before can lead the pack (a clone served from
a kept pack, :mod:`govc_db.interop.packcache`), and the entries written can be returned
to be kept.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from collections.abc import Callable
from contextlib import closing
from typing import Final, NamedTuple
from zlib import adler32

from govc_db.errors import GovcError
from govc_db.interop.packfmt import (
    OFS_DELTA,
    REF_DELTA,
    STORE_BELOW,
    STORED_HEADERS,
    deflate,
    delta_within,
    entry_header,
    ofs_offset,
    splice_delta,
)
from govc_db.interop.walk import Plan
from govc_db.objects import TYPE_NUMBERS, ObjectId
from govc_db.store.ports import RawObject, Splice, Unit

__all__ = ["Sent", "TreeEntries", "write_fetch_pack"]

#: Objects read per ``get_many``.
BATCH: Final = 1000
#: Decoded contents kept as delta bases.
RECENT_BYTES: Final = 64 * 1024 * 1024
#: Objects larger than this go whole (as git's ``core.bigFileThreshold``: a delta search
#: over them costs more than it saves, and holds both versions at once).
DELTA_MAX: Final = 16 * 1024 * 1024
#: Tree contents :class:`TreeEntries` keeps as delta bases (a tree's planned base, the
#: newer version at its path, is planned just before it, at the same level of the walk).
TREE_BASE_BYTES: Final = 16 * 1024 * 1024
#: Bytes of tree entries written while planning (:class:`TreeEntries`).
SECTION_BYTES: Final = 64 * 1024 * 1024
#: Bytes handed to ``write`` at a time (one side-band packet).
PIECE: Final = 65515


class Sent(NamedTuple):
    """What :func:`write_fetch_pack` wrote: the number of objects and, when asked for
    (``capture``) and no larger, the pack's entries (between header and trailer)."""

    objects: int
    body: bytes | None


class TreeEntries:
    """The pack entries of a plan's trees, written while the planner reads them (a
    :class:`govc_db.interop.walk.TreeSink`): each tree as the git delta of the splice
    the store keeps it as, when its base went out before it; else as a delta against
    its planned base (:func:`delta_within`); else whole. Offsets are relative to the
    first entry (an ofs-delta's distance stays valid wherever the entries land in the
    pack). Bounded: once the entries reach ``max_bytes``, or a tree's content is no
    longer at hand, the trees after it are left to :func:`write_fetch_pack`."""

    def __init__(
        self,
        *,
        deltas: bool = True,
        max_depth: int = 50,
        ofs: bool = True,
        level: int = 1,
        max_bytes: int = SECTION_BYTES,
    ) -> None:
        self.body = bytearray()
        self.count = 0
        """Trees written: the first ``count`` of ``Plan.trees``."""
        self.offsets: dict[ObjectId, int] = {}
        self.depth: dict[ObjectId, int] = {}
        self.sizes: dict[ObjectId, int] = {}
        self.open = True
        self._deltas = deltas
        self._max_depth = max_depth
        self._ofs = ofs
        self._level = level
        self._max_bytes = max_bytes
        self._recent: OrderedDict[ObjectId, bytes] = OrderedDict()
        self._recent_bytes = 0

    def add(
        self, oid: ObjectId, data: bytes | None, splice: Splice | None, base: ObjectId | None
    ) -> None:
        """Write tree ``oid`` (see :class:`govc_db.interop.walk.TreeSink`)."""
        if not self.open:
            return
        body = self.body
        if data is None or len(body) >= self._max_bytes:
            self.open = False
            return
        at = len(body)
        size = len(data)
        offsets = self.offsets
        delta: bytes | None = None
        base_at: int | None = None
        base_oid = oid
        level_ = 0
        if self._deltas:
            if splice is not None:
                base_at = offsets.get(splice.base)
                if base_at is not None:
                    level_ = self.depth.get(splice.base, 0) + 1
                    if level_ <= self._max_depth:
                        d = splice_delta(
                            self.sizes[splice.base],
                            size,
                            splice.prefix,
                            splice.suffix,
                            splice.middle,
                        )
                        n = len(d)
                        if n <= size >> 1:
                            delta, base_oid = d, splice.base
                            if self._ofs and n < STORE_BELOW:  # the common case, inline
                                self.depth[oid] = level_
                                body += b"".join(
                                    (
                                        entry_header(OFS_DELTA, n),
                                        ofs_offset(at - base_at),
                                        STORED_HEADERS[n],
                                        d,
                                        adler32(d).to_bytes(4, "big"),
                                    )
                                )
                                offsets[oid] = at
                                self.sizes[oid] = size
                                self.count += 1
                                recent = self._recent
                                recent[oid] = data
                                self._recent_bytes += size
                                if self._recent_bytes > TREE_BASE_BYTES:
                                    self._remember(oid, data)
                                return
            if delta is None and base is not None and size <= DELTA_MAX:
                base_at = offsets.get(base)
                source = self._recent.get(base)
                if base_at is not None and source is not None:
                    level_ = self.depth.get(base, 0) + 1
                    if level_ <= self._max_depth:
                        delta = delta_within(source, data, size >> 1)
                        base_oid = base
        if delta is not None:
            self.depth[oid] = level_
            if self._ofs:
                body += entry_header(OFS_DELTA, len(delta))
                body += ofs_offset(at - base_at)  # type: ignore[operator]
            else:
                body += entry_header(REF_DELTA, len(delta))
                body += base_oid
            body += deflate(delta, self._level)
        else:
            body += entry_header(2, size)  # a tree
            body += deflate(data, self._level)
        offsets[oid] = at
        self.sizes[oid] = size
        self.count += 1
        self._remember(oid, data)

    def _remember(self, oid: ObjectId, data: bytes) -> None:
        recent = self._recent
        if oid not in recent:
            recent[oid] = data
            self._recent_bytes += len(data)
        while self._recent_bytes > TREE_BASE_BYTES:
            _, old = recent.popitem(last=False)
            self._recent_bytes -= len(old)


def _read_whole(unit: Unit, oid: ObjectId) -> RawObject:
    raw = unit.objects.get_bulk([oid]).get(oid)
    if raw is None:
        raise GovcError(f"object {oid.hex()} is missing")
    return raw


def write_fetch_pack(
    unit: Unit,
    plan: Plan,
    write: Callable[[bytes], object],
    *,
    deltas: bool = True,
    max_depth: int = 50,
    ofs: bool = True,
    level: int = 1,
    prefix: tuple[bytes, int] | None = None,
    capture: int = 0,
) -> Sent:
    """Write the pack of ``plan`` through ``write``.

    ``prefix``: ``(entries, count)`` of a pack written before (its ofs-deltas point
    within it, so they stay valid anywhere), sent first, then the objects of ``plan``
    (none of which it may hold). ``capture``: return the entries written if they are at
    most that many bytes (0: never).
    """
    bases = plan.bases if deltas else {}
    sha = hashlib.sha1()
    total = len(plan.ids()) + (prefix[1] if prefix is not None else 0)
    out = bytearray(b"PACK" + struct.pack(">II", 2, total))
    written = 0  # bytes flushed
    kept_body: list[bytes] | None = [] if capture > 0 else None
    captured = 0

    def flush() -> None:
        nonlocal written, kept_body, captured
        data = bytes(out)
        out.clear()
        sha.update(data)
        if kept_body is not None:
            piece = data if written else data[12:]  # not the header
            kept_body.append(piece)
            captured += len(piece)
            if captured > capture:
                kept_body = None
        written += len(data)
        for i in range(0, len(data), PIECE):
            write(data[i : i + PIECE])

    def send(body: bytes | bytearray) -> None:
        """Entries encoded before (a kept pack's, the trees' written while planning),
        sent after what ``out`` holds, in pieces of ``PIECE`` bytes."""
        nonlocal written, kept_body, captured
        flush()
        sha.update(body)
        if kept_body is not None:
            kept_body.append(bytes(body))
            captured += len(body)
            if captured > capture:
                kept_body = None
        written += len(body)
        view = memoryview(body)
        for i in range(0, len(body), PIECE):
            write(bytes(view[i : i + PIECE]))
        view.release()

    if prefix is not None:
        send(prefix[0])  # after the header

    header = entry_header
    numbers = TYPE_NUMBERS
    # Commits and tags: whole (never a delta base), in batches of pack order.
    plain = [*plan.commits, *plan.tags]
    chunks = [plain[i : i + BATCH] for i in range(0, len(plain), BATCH)]
    with closing(unit.objects.iter_bulk(chunks)) as reads:
        for chunk, got in zip(chunks, reads, strict=True):
            for oid in chunk:
                item = got.get(oid)
                if not isinstance(item, RawObject):
                    raise GovcError(f"object {oid.hex()} is missing")
                out += header(numbers[item.type], len(item.data))
                out += deflate(item.data, level)
            if len(out) >= PIECE:
                flush()
    # Trees and blobs: a delta against the base the store splices them from when that
    # went out earlier (the delta is the splice, nothing decoded), else against the
    # planned base when that went out earlier.
    offsets: dict[ObjectId, int] = {}
    depth: dict[ObjectId, int] = {}
    sizes: dict[ObjectId, int] = {}
    trees = plan.trees
    entries = plan.sink
    if isinstance(entries, TreeEntries) and entries.count:
        # The trees' entries written while planning, then the trees left and the blobs.
        start = written + len(out)
        send(entries.body)
        trees = trees[entries.count :]
        if trees:  # their bases may be among the trees written
            offsets = {oid: start + at for oid, at in entries.offsets.items()}
            depth = entries.depth
            sizes = entries.sizes
        entries.body = bytearray()
    recent: OrderedDict[ObjectId, bytes] = OrderedDict()
    kept = 0
    keep_max = RECENT_BYTES // 8
    rest = [*trees, *plan.blobs]
    chunks = [rest[i : i + BATCH] for i in range(0, len(rest), BATCH)]
    reads = unit.objects.iter_bulk(chunks, spliced=True)
    try:
        for chunk, found in zip(chunks, reads, strict=True):
            # Whole contents to read: of a splice whose base's content is not at hand and
            # that cannot go as a delta of it (its base is not sent before it), and of a
            # planned base evicted from ``recent``.
            reread: list[ObjectId] = []
            ahead: set[ObjectId] = set()  # this chunk's objects before this one
            for oid in chunk:
                raw = found.get(oid)
                sp = raw if isinstance(raw, Splice) else None
                if (
                    sp is not None
                    and sp.base not in recent
                    and not isinstance(found.get(sp.base), RawObject)
                    and (not deltas or (sp.base not in offsets and sp.base not in ahead))
                ):
                    reread.append(oid)
                ahead.add(oid)
                base = bases.get(oid)
                if base is not None and base in offsets and base not in recent:
                    reread.append(base)  # evicted: read again with the batch
            if reread:
                found.update(unit.objects.get_bulk(reread))
            for oid in chunk:
                at = written + len(out)
                raw = found.get(oid)
                sp = None
                if isinstance(raw, Splice):
                    sp, raw = raw, None
                if raw is None and sp is not None:
                    source = recent.get(sp.base)
                    if source is None:
                        hit = found.get(sp.base)
                        source = hit.data if isinstance(hit, RawObject) else None
                    if source is not None:
                        raw = RawObject(sp.type, sp.apply(source))
                delta: bytes | None = None
                base_at: int | None = None
                base_oid = oid
                level_ = 0
                if sp is not None and deltas:
                    base_at = offsets.get(sp.base)
                    level_ = depth.get(sp.base, 0) + 1
                    if base_at is not None and level_ <= max_depth:
                        d = splice_delta(sizes[sp.base], sp.size, sp.prefix, sp.suffix, sp.middle)
                        if len(d) <= sp.size >> 1:
                            delta, base_oid = d, sp.base
                if raw is None and delta is None:
                    raw = _read_whole(unit, oid)  # rare: its base went out undecoded
                data = raw.data if raw is not None else None
                size = len(data) if data is not None else sp.size if sp is not None else 0
                if delta is None and data is not None:
                    base = bases.get(oid)
                    if base is not None and size <= DELTA_MAX:
                        base_at = offsets.get(base)
                        level_ = depth.get(base, 0) + 1
                        if base_at is not None and level_ <= max_depth:
                            source = recent.get(base)
                            if source is None:
                                hit = found.get(base)
                                source = hit.data if isinstance(hit, RawObject) else None
                            if source is not None:
                                delta = delta_within(source, data, size >> 1)
                                base_oid = base
                if delta is not None:
                    depth[oid] = level_
                    if ofs:
                        out += header(OFS_DELTA, len(delta))
                        out += ofs_offset(at - base_at)  # type: ignore[operator]
                    else:
                        out += header(REF_DELTA, len(delta))
                        out += base_oid
                    out += deflate(delta, level)
                else:
                    assert raw is not None and data is not None
                    out += header(numbers[raw.type], size)
                    out += deflate(data, level)
                offsets[oid] = at
                sizes[oid] = size
                if data is not None and size <= keep_max:
                    recent[oid] = data
                    kept += size
                    while kept > RECENT_BYTES:
                        _, old = recent.popitem(last=False)
                        kept -= len(old)
                if len(out) >= PIECE:
                    flush()
    finally:
        reads.close()
    flush()
    write(sha.digest())
    whole = b"".join(kept_body) if kept_body is not None else None
    return Sent(total, whole)

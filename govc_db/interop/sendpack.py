"""The pack a fetch or clone receives, written in one streaming pass over the plan.

:func:`govc_db.interop.walk.plan_fetch` lists the objects in pack order (commits, tags,
trees, blobs; history newest first) and, for a tree or blob, the version that replaced it at the
same path when that one is sent too. Here the objects are read in batches of that order
(``get_bulk``; the trees the planner already read are reused), each tree or blob whose
base went out earlier is sent as a delta against it (``ofs-delta`` when the client
accepts it, else ``ref-delta``) if the delta is at most half the object and the chain
stays within ``Settings.fetch_delta_depth``; everything is deflated with a zlib state
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
from typing import Final, NamedTuple

from govc_db.errors import GovcError
from govc_db.interop.packfmt import (
    OFS_DELTA,
    REF_DELTA,
    deflate,
    delta_within,
    entry_header,
    ofs_offset,
)
from govc_db.interop.walk import Plan
from govc_db.objects import TYPE_NUMBERS, ObjectId
from govc_db.store.ports import RawObject, Unit

__all__ = ["Sent", "write_fetch_pack"]

#: Objects read per ``get_many``.
BATCH: Final = 1000
#: Decoded contents kept as delta bases.
RECENT_BYTES: Final = 64 * 1024 * 1024
#: Objects larger than this go whole (as git's ``core.bigFileThreshold``: a delta search
#: over them costs more than it saves, and holds both versions at once).
DELTA_MAX: Final = 16 * 1024 * 1024
#: Bytes handed to ``write`` at a time (one side-band packet).
PIECE: Final = 65515


class Sent(NamedTuple):
    """What :func:`write_fetch_pack` wrote: the number of objects and, when asked for
    (``capture``) and no larger, the pack's entries (between header and trailer)."""

    objects: int
    body: bytes | None


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
    known = plan.tree_data
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

    if prefix is not None:
        flush()  # the header
        body = prefix[0]
        sha.update(body)
        if kept_body is not None:
            kept_body.append(body)
            captured += len(body)
            if captured > capture:
                kept_body = None
        written += len(body)
        view = memoryview(body)
        for i in range(0, len(body), PIECE):
            write(bytes(view[i : i + PIECE]))

    header = entry_header
    numbers = TYPE_NUMBERS
    # Commits and tags: whole (never a delta base), in batches of pack order.
    plain = [*plan.commits, *plan.tags]
    for i in range(0, len(plain), BATCH):
        chunk = plain[i : i + BATCH]
        found = unit.objects.get_bulk(chunk)
        for oid in chunk:
            raw = found.get(oid)
            if raw is None:
                raise GovcError(f"object {oid.hex()} is missing")
            data = raw.data
            out += header(numbers[raw.type], len(data))
            out += deflate(data, level)
        if len(out) >= PIECE:
            flush()
    # Trees and blobs: a delta against the planned base when it went out earlier.
    offsets: dict[ObjectId, int] = {}
    depth: dict[ObjectId, int] = {}
    recent: OrderedDict[ObjectId, bytes] = OrderedDict()
    kept = 0
    keep_max = RECENT_BYTES // 8
    rest = [*plan.trees, *plan.blobs]
    for i in range(0, len(rest), BATCH):
        chunk = rest[i : i + BATCH]
        found = {}
        fetch: list[ObjectId] = []
        for oid in chunk:
            tree = known.pop(oid, None)
            if tree is not None:
                found[oid] = RawObject(b"tree", tree)
            else:
                fetch.append(oid)
            base = bases.get(oid)
            if base is not None and base in offsets and base not in recent:
                fetch.append(base)  # evicted: read again with the batch
        if fetch:
            found.update(unit.objects.get_bulk(fetch))
        for oid in chunk:
            raw = found.get(oid)
            if raw is None:
                raise GovcError(f"object {oid.hex()} is missing")
            data = raw.data
            at = written + len(out)
            base = bases.get(oid)
            size = len(data)
            delta = None
            if base is not None and size <= DELTA_MAX:
                base_at = offsets.get(base)
                level_ = depth.get(base, 0) + 1
                if base_at is not None and level_ <= max_depth:
                    source = recent.get(base)
                    if source is None:
                        hit = found.get(base)
                        source = hit.data if hit is not None else None
                    if source is not None:
                        delta = delta_within(source, data, size >> 1)
            if delta is not None:
                depth[oid] = level_
                if ofs:
                    out += header(OFS_DELTA, len(delta))
                    out += ofs_offset(at - base_at)  # type: ignore[operator]
                else:
                    out += header(REF_DELTA, len(delta))
                    out += base  # type: ignore[arg-type]
                out += deflate(delta, level)
            else:
                out += header(numbers[raw.type], size)
                out += deflate(data, level)
            offsets[oid] = at
            if size <= keep_max:
                recent[oid] = data
                kept += size
                while kept > RECENT_BYTES:
                    _, old = recent.popitem(last=False)
                    kept -= len(old)
            if len(out) >= PIECE:
                flush()
    flush()
    write(sha.digest())
    whole = b"".join(kept_body) if kept_body is not None else None
    return Sent(total, whole)

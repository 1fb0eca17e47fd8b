"""git's pack format with tight code: entry headers, zlib streams, git deltas, and a
streaming reader of a whole pack.

Why not dulwich's pack code here: it spends most of its time per object in Python
(generators of chunks, a new full-size zlib state per object, the delta index of every
base); these functions do one call per object where they can:

* :func:`deflate` sizes zlib's window and hash table to the object: a default
  ``zlib.compress`` allocates and clears ~260 KiB of state per call, which costs more than
  compressing a small object (measured: 5-10x).
* :func:`make_delta` encodes a target against a base as *copy prefix, insert middle, copy
  suffix* (the common case of a new version of a file or tree: one region changed), found
  from the XOR of both as integers (C speed); when that leaves more than half of a
  target of 1 KiB or more to insert, dulwich's Rust ``create_delta`` is tried too and the
  shorter is kept.
* :func:`iter_pack` reads a pack spooled to a file through ``mmap``: the trailer checksum
  is checked first (one pass), then every entry is inflated once, deltas (offset and ref,
  thin-pack bases through a callback) applied by dulwich's Rust ``apply_delta``, and
  objects hashed; decoded bases are kept in a cache bounded by bytes and decoded again
  from the pack when evicted, so memory stays bounded whatever the pack size.
"""

from __future__ import annotations

import functools
import hashlib
import mmap
import struct
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import IO, Final, cast

from govc_db.errors import InvalidInput
from govc_db.objects import TYPE_NAMES, TYPE_NUMBERS, ObjectId, hash_object

__all__ = [
    "OFS_DELTA",
    "PackObject",
    "REF_DELTA",
    "STORED_HEADERS",
    "STORE_BELOW",
    "deflate",
    "delta_within",
    "entry_header",
    "iter_pack",
    "iter_pack_deltas",
    "make_delta",
    "ofs_offset",
    "splice_delta",
]

OFS_DELTA: Final = 6
REF_DELTA: Final = 7
#: Decoded objects the reader keeps as possible delta bases (bytes).
BASE_CACHE_BYTES: Final = 64 * 1024 * 1024
_COPY_MAX: Final = 0x10000
#: Payloads shorter than this go as a stored (uncompressed) zlib block.
STORE_BELOW: Final = 64
#: Below this size a target that prefix/suffix does not cover goes whole (small objects
#: gain little from a delta, and searching for one costs more than deflating them).
_RUST_MIN: Final = 1024


#: zlib header and stored-block header of a payload of each length below STORE_BELOW.
STORED_HEADERS: Final = [
    b"\x78\x01\x01" + struct.pack("<HH", n, n ^ 0xFFFF) for n in range(STORE_BELOW)
]


def deflate(data: bytes, level: int = 1) -> bytes:
    """``data`` as one zlib stream, the window and hash table sized to it. Below
    ``STORE_BELOW`` bytes (a delta of a tree entry: an id and two copies) the stream is
    one stored block, built without zlib: deflating that little gains nothing."""
    n = len(data)
    if n < STORE_BELOW:
        return STORED_HEADERS[n] + data + zlib.adler32(data).to_bytes(4, "big")
    wbits = min(15, max(9, (n + 262).bit_length()))
    c = zlib.compressobj(level, zlib.DEFLATED, wbits, 1 if n < 16384 else 8)
    return c.compress(data) + c.flush()


@functools.lru_cache(maxsize=1 << 16)  # a pack repeats sizes: a dict lookup in C
def entry_header(type_num: int, size: int) -> bytes:
    """A pack entry's type-and-size varint."""
    c = (type_num << 4) | (size & 15)
    size >>= 4
    if not size:
        return bytes((c,))
    out = bytearray()
    while size:
        out.append(c | 0x80)
        c = size & 0x7F
        size >>= 7
    out.append(c)
    return bytes(out)


@functools.lru_cache(maxsize=1 << 16)
def ofs_offset(distance: int) -> bytes:
    """An ofs-delta's distance back to its base, in git's big-endian varint."""
    out = bytearray((distance & 0x7F,))
    distance >>= 7
    while distance:
        distance -= 1
        out.append(0x80 | (distance & 0x7F))
        distance >>= 7
    out.reverse()
    return bytes(out)


@functools.lru_cache(maxsize=1 << 16)
def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


def _copy(out: bytearray, offset: int, size: int) -> None:
    while size:
        n = size if size < _COPY_MAX else _COPY_MAX
        out += _copy_op(offset, n)
        offset += n
        size -= n


@functools.lru_cache(maxsize=1 << 16)  # tree versions repeat their copies
def _copy_op(offset: int, n: int) -> bytes:
    """One copy instruction of ``n`` (1 to 64 KiB) bytes from ``offset``."""
    cmd = 0x80
    args = bytearray()
    for i in range(4):
        byte = (offset >> (8 * i)) & 0xFF
        if byte:
            cmd |= 1 << i
            args.append(byte)
    sz = 0 if n == _COPY_MAX else n
    for i in range(3):
        byte = (sz >> (8 * i)) & 0xFF
        if byte:
            cmd |= 0x10 << i
            args.append(byte)
    return bytes((cmd,)) + bytes(args)


def _prefix(a: bytes, b: bytes) -> int:
    """Length of the common prefix: the highest bit of the XOR of both as big-endian
    integers is in the first byte that differs (three passes in C)."""
    n = min(len(a), len(b))
    x = int.from_bytes(a[:n], "big") ^ int.from_bytes(b[:n], "big")
    return n - ((x.bit_length() + 7) >> 3)


def _suffix(a: bytes, b: bytes, limit: int) -> int:
    """Length of the common suffix, at most ``limit`` (as :func:`_prefix`, little-endian)."""
    if limit <= 0:
        return 0
    x = int.from_bytes(a[len(a) - limit :], "little") ^ int.from_bytes(
        b[len(b) - limit :], "little"
    )
    return limit - ((x.bit_length() + 7) >> 3)


def _rust_delta() -> Callable[[bytes, bytes], bytes] | None:
    try:
        from dulwich._pack import create_delta
    except ImportError:  # pragma: no cover - dulwich without its Rust extension
        return None
    return cast("Callable[[bytes, bytes], bytes]", create_delta)


_create_delta = _rust_delta()


def make_delta(base: bytes, target: bytes) -> bytes:
    """A git delta that rebuilds ``target`` from ``base``."""
    delta = delta_within(base, target, -1)
    assert delta is not None
    return delta


def delta_within(base: bytes, target: bytes, limit: int) -> bytes | None:
    """As :func:`make_delta`, or None when the delta would be longer than ``limit``
    bytes (``limit`` < 0: no limit). Decided from the common prefix and suffix before
    any delta is built, so a target that shares little with its base (a file rewritten
    on every line) costs two comparisons in C."""
    lb, lt = len(base), len(target)
    if lb == lt:  # (a tree whose entry ids changed) one XOR gives prefix and suffix
        x = int.from_bytes(base, "big") ^ int.from_bytes(target, "big")
        p = lt - ((x.bit_length() + 7) >> 3)
        s = ((x & -x).bit_length() - 1) >> 3 if x else 0
    else:
        p = _prefix(base, target)
        s = _suffix(base, target, min(lb, lt) - p)
    mid = lt - p - s
    rust = mid * 2 > lt and lt >= _RUST_MIN and _create_delta is not None
    if 0 <= limit < mid and not rust:
        return None  # the inserted middle alone is over the limit
    out = _spliced(lb, lt, p, s, target[p : lt - s])
    if rust:
        assert _create_delta is not None
        other: bytes = _create_delta(base, target)
        if len(other) < len(out):
            return other if limit < 0 or len(other) <= limit else None
    if 0 <= limit < len(out):
        return None
    return bytes(out)


def splice_delta(base_size: int, size: int, prefix: int, suffix: int, middle: bytes) -> bytes:
    """The git delta of an object that is ``base[:prefix] + middle + base[-suffix:]``
    (a store's splice, :class:`govc_db.store.ports.Splice`): copy, insert, copy, built
    without the base's content (only its size)."""
    if 0 < prefix < _COPY_MAX and 0 < suffix < _COPY_MAX and 0 < len(middle) <= 127:
        # A tree with one entry changed: one instruction of each kind.
        return b"".join(
            (
                _varint(base_size),
                _varint(size),
                _copy_op(0, prefix),
                _LENGTH[len(middle)],
                middle,
                _copy_op(base_size - suffix, suffix),
            )
        )
    return bytes(_spliced(base_size, size, prefix, suffix, middle))


#: The insert instruction of each length (1 to 127 bytes).
_LENGTH: Final = [bytes((n,)) for n in range(128)]


def _spliced(lb: int, lt: int, p: int, s: int, middle: bytes) -> bytearray:
    out = bytearray(_varint(lb))
    out += _varint(lt)
    if p:
        if p < _COPY_MAX:
            out += _copy_op(0, p)
        else:
            _copy(out, 0, p)
    mid = len(middle)
    if mid:
        if mid <= 127:
            out.append(mid)
            out += middle
        else:
            for i in range(0, mid, 127):
                piece = middle[i : i + 127]
                out.append(len(piece))
                out += piece
    if s:
        if s < _COPY_MAX:
            out += _copy_op(lb - s, s)
        else:
            _copy(out, lb - s, s)
    return out


def _apply() -> Callable[[bytes, bytes], list[bytes] | bytes]:
    from dulwich.pack import apply_delta

    return cast("Callable[[bytes, bytes], list[bytes] | bytes]", apply_delta)


class _Entry:
    __slots__ = ("base", "data_at", "kind", "oid", "size", "type_num")

    def __init__(self, kind: int, size: int, data_at: int, base: int | bytes | None) -> None:
        self.kind = kind
        self.size = size
        self.data_at = data_at
        self.base = base  # ofs: base offset; ref: base id
        self.type_num = kind if kind < OFS_DELTA else 0
        self.oid: bytes | None = None


def _malformed(what: str) -> InvalidInput:
    return InvalidInput(f"malformed pack: {what}")


class _Reader:
    def __init__(
        self,
        mm: mmap.mmap,
        end: int,
        resolve_base: Callable[[ObjectId], tuple[bytes, bytes] | None],
    ) -> None:
        self.mm = mm
        self.end = end
        self.resolve_base = resolve_base
        self.entries: dict[int, _Entry] = {}
        self.by_oid: dict[bytes, int] = {}
        self.cache: OrderedDict[int, bytes] = OrderedDict()
        self.cached = 0
        self.external: dict[bytes, tuple[int, bytes]] = {}
        self.apply = _apply()

    def inflate(self, pos: int, size: int) -> tuple[bytes, int]:
        """The ``size`` bytes of the zlib stream at ``pos``, and where the stream ends."""
        mm, end = self.mm, self.end
        d = zlib.decompressobj()
        parts: list[bytes] = []
        got = 0
        step = size + (size >> 3) + 64
        p = pos
        while True:
            if p >= end:
                raise _malformed("truncated object data")
            piece = mm[p : min(p + step, end)]
            out = d.decompress(piece, size - got + 1)
            got += len(out)
            parts.append(out)
            if got > size:
                raise _malformed("object larger than its header says")
            if d.eof:
                p += len(piece) - len(d.unused_data)
                break
            if d.unconsumed_tail:
                raise _malformed("object larger than its header says")
            p += len(piece)
            step *= 2
        if got != size:
            raise _malformed("object smaller than its header says")
        return parts[0] if len(parts) == 1 else b"".join(parts), p

    def content(self, offset: int) -> tuple[int, bytes]:
        """Type number and content of the entry at ``offset`` (cache, else decoded)."""
        entry = self.entries[offset]
        hit = self.cache.get(offset)
        if hit is not None:
            self.cache.move_to_end(offset)
            return entry.type_num, hit
        data, _ = self.inflate(entry.data_at, entry.size)
        if entry.kind >= OFS_DELTA:
            base_type, base = self.base_of(entry)
            data = self.patch(base, data)
            entry.type_num = base_type
        self.remember(offset, data)
        return entry.type_num, data

    def base_of(self, entry: _Entry) -> tuple[int, bytes]:
        if entry.kind == OFS_DELTA:
            assert isinstance(entry.base, int)
            return self.content(entry.base)
        assert isinstance(entry.base, bytes)
        at = self.by_oid.get(entry.base)
        if at is not None:
            return self.content(at)
        if not self.known(entry.base):
            raise KeyError(entry.base)
        return self.external[entry.base]

    def known(self, oid: bytes) -> bool:
        """Whether a ref-delta base is available now (in the pack so far, or outside)."""
        if oid in self.by_oid or oid in self.external:
            return True
        found = self.resolve_base(ObjectId(oid))
        if found is None:
            return False
        self.external[oid] = (TYPE_NUMBERS.get(found[0], 0), found[1])
        return True

    def patch(self, base: bytes, delta: bytes) -> bytes:
        out = self.apply(base, delta)
        return out if isinstance(out, bytes) else b"".join(out)

    def remember(self, offset: int, data: bytes) -> None:
        if len(data) > BASE_CACHE_BYTES // 4:
            return
        self.cache[offset] = data
        self.cached += len(data)
        while self.cached > BASE_CACHE_BYTES:
            _, old = self.cache.popitem(last=False)
            self.cached -= len(old)


_ERRORS: tuple[type[BaseException], ...] = (
    AssertionError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    zlib.error,
    struct.error,
    OSError,
)


def _delta_errors() -> tuple[type[BaseException], ...]:
    from dulwich.errors import ApplyDeltaError

    return (ApplyDeltaError,)


def iter_pack(
    file: IO[bytes],
    resolve_base: Callable[[ObjectId], tuple[bytes, bytes] | None] | None = None,
) -> Iterator[tuple[ObjectId, bytes, bytes]]:
    """Yield ``(id, type name, raw)`` of every object of the pack in ``file`` (a real
    file). ``resolve_base(id)`` answers a thin pack's external delta base as
    ``(type, raw)``, or None (then the pack is refused). Anything wrong raises
    ``InvalidInput``.
    """
    for oid, type_name, data, _, _ in iter_pack_deltas(file, resolve_base):
        yield oid, type_name, data


PackObject = tuple[ObjectId, bytes, bytes, ObjectId | None, bytes | None]
"""``(id, type name, raw, delta base id, delta base raw)``; the base is None for an
object the pack holds whole."""


def iter_pack_deltas(
    file: IO[bytes],
    resolve_base: Callable[[ObjectId], tuple[bytes, bytes] | None] | None = None,
) -> Iterator[PackObject]:
    """As :func:`iter_pack`, with each object's delta base in the pack (its id and
    content): the sender found the two alike, which makes the base a good storage hint.
    """
    errors = _ERRORS + _delta_errors()
    file.flush()
    file.seek(0, 2)
    total = file.tell()
    if total < 32:
        raise _malformed("not a pack file")
    try:
        mm = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        raise _malformed("not a pack file") from None
    try:
        end = total - 20
        sha = hashlib.sha1()
        view = memoryview(mm)
        try:
            for i in range(0, end, 1 << 24):
                sha.update(view[i : min(i + (1 << 24), end)])
        finally:
            view.release()
        if mm[:4] != b"PACK":
            raise _malformed("not a pack file")
        if sha.digest() != mm[end:total]:
            raise _malformed("checksum mismatch")
        version, count = struct.unpack(">II", mm[4:12])
        if version not in (2, 3):
            raise _malformed(f"version {version}")
        try:
            yield from _entries(mm, end, count, resolve_base or (lambda _oid: None))
        except InvalidInput:
            raise
        except errors as exc:
            raise _malformed(f"{type(exc).__name__}") from None
    finally:
        mm.close()


def _entries(
    mm: mmap.mmap,
    end: int,
    count: int,
    resolve_base: Callable[[ObjectId], tuple[bytes, bytes] | None],
) -> Iterator[PackObject]:
    r = _Reader(mm, end, resolve_base)
    entries, by_oid = r.entries, r.by_oid
    names = TYPE_NAMES
    later: list[int] = []
    pos = 12
    for _ in range(count):
        start = pos
        if pos >= end:
            raise _malformed("fewer objects than announced")
        c = mm[pos]
        pos += 1
        kind = (c >> 4) & 7
        size = c & 15
        shift = 4
        while c & 0x80:
            c = mm[pos]
            pos += 1
            size |= (c & 0x7F) << shift
            shift += 7
        base: int | bytes | None = None
        if kind == OFS_DELTA:
            c = mm[pos]
            pos += 1
            dist = c & 0x7F
            while c & 0x80:
                c = mm[pos]
                pos += 1
                dist = ((dist + 1) << 7) | (c & 0x7F)
            base = start - dist
            if base not in entries:
                raise _malformed("delta base offset points nowhere")
        elif kind == REF_DELTA:
            base = bytes(mm[pos : pos + 20])
            pos += 20
        elif kind not in names:
            raise _malformed(f"object type {kind}")
        entry = _Entry(kind, size, pos, base)
        entries[start] = entry
        data, pos = r.inflate(pos, size)
        if kind == REF_DELTA and not r.known(base):  # type: ignore[arg-type]
            later.append(start)  # its base may come later in the pack
            continue
        base_oid: ObjectId | None = None
        base_data: bytes | None = None
        if kind >= OFS_DELTA:
            base_type, base_data = r.base_of(entry)
            data = r.patch(base_data, data)
            entry.type_num = base_type
            base_oid = ObjectId(entries[base].oid if kind == OFS_DELTA else base)  # type: ignore[index,arg-type]
        type_name = names.get(entry.type_num)
        if type_name is None:
            raise _malformed(f"object type {entry.type_num}")
        oid = hash_object(type_name, data)
        entry.oid = oid
        by_oid[oid] = start
        r.remember(start, data)
        yield oid, type_name, data, base_oid, base_data
    if pos != end:
        raise _malformed("data after the last object")
    while later:
        waiting, later = later, []
        for start in waiting:
            entry = entries[start]
            if entry.base not in by_oid:
                later.append(start)
                continue
            type_num, data = r.content(start)
            type_name = names[type_num]
            oid = hash_object(type_name, data)
            entry.oid = oid
            by_oid[oid] = start
            assert isinstance(entry.base, bytes)
            yield oid, type_name, data, ObjectId(entry.base), r.content(by_oid[entry.base])[1]
        if len(later) == len(waiting):
            raise _malformed("unresolved deltas")

"""Reading and writing git pack files, through dulwich's pack parser.

Reading: a pack spooled to a file is checked (trailer checksum, object count), its deltas
resolved (thin-pack bases through a caller's resolver, i.e. only from the same
repository), and every object yielded as ``(type, raw content)``. Anything wrong is an
``InvalidInput`` naming the problem, raised before the caller has stored anything if the
caller first drains the iterator (the push path does).

Writing (export): whole objects, zlib-compressed; the pack trailer and the entries of a
version-2 ``.idx`` are computed on the way.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Any

from govc_db.errors import InvalidInput
from govc_db.objects import TYPE_NAMES, TYPE_NUMBERS, ObjectId, hash_object

__all__ = ["PackWriter", "read_pack"]

_ERRORS: tuple[type[BaseException], ...] = (
    AssertionError,
    ValueError,
    KeyError,
    IndexError,
    zlib.error,
    struct.error,
    OSError,
)


def _dulwich_errors() -> tuple[type[BaseException], ...]:
    from dulwich.errors import ApplyDeltaError, ChecksumMismatch, ObjectFormatException
    from dulwich.pack import UnresolvedDeltas

    return (ApplyDeltaError, ChecksumMismatch, ObjectFormatException, UnresolvedDeltas)


def read_pack(
    file: IO[bytes], resolve_base: Callable[[ObjectId], tuple[bytes, bytes] | None] | None = None
) -> Iterator[tuple[ObjectId, bytes, bytes]]:
    """Yield ``(id, type, raw)`` of every object of the pack in ``file`` (a real file).

    ``resolve_base(id)`` answers a thin pack's external delta base as ``(type, raw)``, or
    None when it is not known (then the pack is refused).
    """
    from dulwich.object_format import DEFAULT_OBJECT_FORMAT
    from dulwich.pack import PackData, UnpackedObjectIterator

    errors = _ERRORS + _dulwich_errors()
    file.seek(0)
    try:
        data = PackData.from_file(file, DEFAULT_OBJECT_FORMAT)
    except errors:
        raise InvalidInput("malformed pack: not a pack file") from None

    def ext_ref(sha: bytes) -> tuple[int, list[bytes]]:
        found = resolve_base(ObjectId(bytes(sha))) if resolve_base is not None else None
        if found is None:
            raise KeyError(sha)
        return TYPE_NUMBERS[found[0]], [found[1]]

    try:
        if data.calculate_checksum() != data.get_stored_checksum():
            raise InvalidInput("malformed pack: checksum mismatch")
        expected = len(data)
        seen = 0
        iterator = UnpackedObjectIterator.for_pack_data(data, resolve_ext_ref=ext_ref)
        for unpacked in iterator:
            type_num, chunks = unpacked.obj_type_num, unpacked.obj_chunks
            type_name = TYPE_NAMES.get(type_num) if type_num is not None else None
            if type_name is None or chunks is None:
                raise InvalidInput(f"malformed pack: object type {type_num}")
            raw = b"".join(chunks)
            seen += 1
            yield hash_object(type_name, raw), type_name, raw
        if seen < expected:
            raise InvalidInput(f"malformed pack: {expected} objects announced, {seen} found")
    except InvalidInput:
        raise
    except errors as exc:
        raise InvalidInput(f"malformed pack: {type(exc).__name__}: {exc}") from None
    finally:
        data.close()


def _header(type_num: int, size: int) -> bytes:
    out = bytearray()
    c = (type_num << 4) | (size & 15)
    size >>= 4
    while size:
        out.append(c | 0x80)
        c = size & 0x7F
        size >>= 7
    out.append(c)
    return bytes(out)


class PackWriter:
    """Writes one pack through ``write``; :meth:`finish` writes the trailer."""

    def __init__(self, write: Callable[[bytes], Any], count: int, *, level: int = 1) -> None:
        self._write = write
        self._sha = hashlib.sha1()
        self._offset = 0
        self._level = level
        self._count = count
        self._written = 0
        self.offsets: dict[ObjectId, int] = {}
        self.entries: list[tuple[bytes, int, int]] = []
        self._emit(b"PACK" + struct.pack(">II", 2, count))

    def _emit(self, data: bytes) -> None:
        self._sha.update(data)
        self._write(data)
        self._offset += len(data)

    def add(self, oid: ObjectId, type_name: bytes, raw: bytes) -> None:
        """Append a whole object."""
        self._entry(oid, _header(TYPE_NUMBERS[type_name], len(raw)), raw)

    def _entry(self, oid: ObjectId, head: bytes, payload: bytes) -> None:
        start = self._offset
        body = head + zlib.compress(payload, self._level)
        self.offsets[oid] = start
        self.entries.append((oid, start, zlib.crc32(body) & 0xFFFFFFFF))
        self._emit(body)
        self._written += 1

    def finish(self) -> bytes:
        """Write the trailer; returns the pack checksum."""
        if self._written != self._count:
            raise InvalidInput(f"pack announced {self._count} objects, wrote {self._written}")
        digest = self._sha.digest()
        self._write(digest)
        self._offset += len(digest)
        return digest

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._offset

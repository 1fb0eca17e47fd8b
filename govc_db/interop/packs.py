"""Reading and writing git pack files (the format code is :mod:`govc_db.interop.packfmt`).

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
from govc_db.interop.packfmt import deflate, entry_header, iter_pack
from govc_db.objects import TYPE_NUMBERS, ObjectId

__all__ = ["PackWriter", "read_pack"]


def read_pack(
    file: IO[bytes], resolve_base: Callable[[ObjectId], tuple[bytes, bytes] | None] | None = None
) -> Iterator[tuple[ObjectId, bytes, bytes]]:
    """Yield ``(id, type, raw)`` of every object of the pack in ``file`` (a real file).

    ``resolve_base(id)`` answers a thin pack's external delta base as ``(type, raw)``, or
    None when it is not known (then the pack is refused).
    """
    return iter_pack(file, resolve_base)


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
        self._entry(oid, entry_header(TYPE_NUMBERS[type_name], len(raw)), raw)

    def _entry(self, oid: ObjectId, head: bytes, payload: bytes) -> None:
        start = self._offset
        body = head + deflate(payload, self._level)
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

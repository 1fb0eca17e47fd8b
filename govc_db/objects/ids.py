"""Object ids: raw SHA-1 bytes inside, 40-char lowercase hex at the edges."""

from __future__ import annotations

import hashlib
import re
from typing import NewType

from govc_db.errors import InvalidInput

__all__ = [
    "HEX_LEN",
    "RAW_LEN",
    "ObjectId",
    "hash_object",
    "hex_to_oid",
    "is_hex_id",
    "object_header",
    "oid_to_hex",
]

ObjectId = NewType("ObjectId", bytes)
"""A SHA-1 object id as 20 raw bytes."""

RAW_LEN = 20
HEX_LEN = 40
_HEX_RE = re.compile(r"[0-9a-f]{40}")


def object_header(type_name: bytes, size: int) -> bytes:
    """Return git's loose-object header, e.g. ``b"blob 12\\0"``."""
    return type_name + b" " + str(size).encode("ascii") + b"\0"


def hash_object(type_name: bytes, data: bytes) -> ObjectId:
    """Compute the git id of an object of ``type_name`` with content ``data``."""
    h = hashlib.sha1(object_header(type_name, len(data)), usedforsecurity=False)
    h.update(data)
    return ObjectId(h.digest())


def oid_to_hex(oid: bytes) -> str:
    """Render a raw id as 40 lowercase hex characters."""
    return oid.hex()


def is_hex_id(text: str) -> bool:
    """True when ``text`` is a full 40-char lowercase hex id."""
    return _HEX_RE.fullmatch(text) is not None


def hex_to_oid(text: str) -> ObjectId:
    """Parse a full 40-char hex id (either case) into raw bytes; ``InvalidInput`` otherwise."""
    if not isinstance(text, str):
        raise InvalidInput(f"object id must be a str, got {type(text).__name__}")
    low = text.lower()
    if not _HEX_RE.fullmatch(low):
        raise InvalidInput(f"not a 40-character hex object id: {text[:60]!r}")
    return ObjectId(bytes.fromhex(low))

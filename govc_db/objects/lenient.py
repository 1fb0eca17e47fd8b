"""Reading the objects real histories hold that our strict parsers refuse.

git itself accepts objects that :func:`~govc_db.objects.parse_object` rejects because they
would not re-serialize to the same bytes: signatures with an empty name, trailing spaces,
zero-padded or negative times, ``-0000`` or out-of-range zones; tree entries with old
modes (``100664``, zero-padded ``040000``) or out of order. Imported and pushed objects
are stored byte for byte, so their ids stay exact; to index and read them, this module
parses them *leniently*: the values are the closest canonical ones (mode ``100664`` reads
as ``100644``, a missing name as ``""``) and the object keeps its original bytes in its
``raw`` field, so ``serialize()`` and ``id`` still give back exactly what was stored.

Structurally broken objects (no tree header, a truncated entry, duplicate names) are still
``InvalidInput``.
"""

from __future__ import annotations

import re
from typing import Final

from govc_db.errors import InvalidInput
from govc_db.objects.ids import ObjectId
from govc_db.objects.kinds import (
    MODE_DIR,
    MODE_EXEC,
    MODE_FILE,
    MODE_GITLINK,
    MODE_LINK,
    Commit,
    GitObject,
    Tag,
    Tree,
    commit_fields,
    parse_object,
    scan_tree,
    tag_fields,
)
from govc_db.objects.signature import Signature, parse_signature

__all__ = [
    "canonical_mode",
    "lenient_signature",
    "lenient_tag_target",
    "lenient_tree",
    "parse_lenient",
]

_LOOSE_SIG = re.compile(rb"(.*?)\s*<([^>]*)>\s*(-?[0-9]*)\s*([+-]?)([0-9]*)", re.DOTALL)
_MAX_TIME: Final = 2**63 - 1
_MAX_OFFSET: Final = 14 * 60 + 59


def canonical_mode(mode: int) -> int:
    """The mode git's ``canon_mode`` gives an entry of ``mode`` (as fsck reads it)."""
    kind = mode & 0o170000
    if kind == 0o100000:
        return MODE_EXEC if mode & 0o100 else MODE_FILE
    if kind == 0o120000:
        return MODE_LINK
    if kind == 0o040000:
        return MODE_DIR
    return MODE_GITLINK


def _unchecked_signature(name: str, email: str, when: int, offset: int) -> Signature:
    # Values git accepted but the public constructor refuses (e.g. an empty name):
    # built without validation, for reading only; the object keeps its real bytes.
    sig = object.__new__(Signature)
    for key, value in (("name", name), ("email", email), ("time", when), ("offset", offset)):
        object.__setattr__(sig, key, value)
    return sig


def lenient_signature(raw: bytes) -> Signature:
    """The signature ``raw`` holds, as close as a :class:`Signature` can say it."""
    try:
        return parse_signature(raw)
    except InvalidInput:
        pass
    m = _LOOSE_SIG.match(raw)
    if m is None:
        text = raw.decode("utf-8", "surrogateescape").replace("\n", " ")
        return _unchecked_signature(text, "", 0, 0)
    name, email, when, sign, zone = m.groups()
    try:
        seconds = min(max(int(when), 0), _MAX_TIME) if when else 0
    except ValueError:
        seconds = 0
    offset = 0
    if zone:
        digits = zone[-4:].rjust(4, b"0")
        offset = min(int(digits[:2]) * 60 + min(int(digits[2:]), 59), _MAX_OFFSET)
        if sign == b"-":
            offset = -offset
    return _unchecked_signature(
        name.decode("utf-8", "surrogateescape"),
        email.decode("utf-8", "surrogateescape"),
        seconds,
        offset,
    )


def _lenient_mode(text: bytes) -> int:
    # Old and zero-padded modes read as git's fsck canonicalises them.
    if not text or not all(48 <= c <= 55 for c in text):
        raise InvalidInput(f"malformed tree entry mode {text!r}")
    return canonical_mode(int(text, 8))


def _lenient_tree(raw: bytes) -> Tree:
    return Tree(tuple(scan_tree(raw, _lenient_mode)), raw=raw)


def _lenient_commit(raw: bytes) -> Commit:
    return Commit(*commit_fields(raw, lenient_signature, strict=False), raw=raw)


def _lenient_tag(raw: bytes) -> Tag:
    return Tag(*tag_fields(raw, lenient_signature), raw=raw)


def parse_lenient(type_name: bytes, raw: bytes) -> GitObject:
    """Like :func:`~govc_db.objects.parse_object`, but accepts what git accepts; a value
    that would not re-serialize to ``raw`` keeps ``raw`` (see the module docstring).
    """
    try:
        return parse_object(type_name, raw)
    except InvalidInput:
        if type_name == b"tree":
            return _lenient_tree(raw)
        if type_name == b"commit":
            return _lenient_commit(raw)
        if type_name == b"tag":
            return _lenient_tag(raw)
        raise


def lenient_tree(raw: bytes) -> Tree:
    """:meth:`Tree.parse`, accepting old modes and git's other tolerated oddities."""
    try:
        return Tree.parse(raw)
    except InvalidInput:
        return _lenient_tree(raw)


def lenient_tag_target(raw: bytes) -> ObjectId:
    """The id an annotated tag points at, whatever odd tagger it has."""
    obj = parse_lenient(b"tag", raw)
    assert isinstance(obj, Tag)
    return obj.object

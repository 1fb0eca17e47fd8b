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
from govc_db.objects.ids import RAW_LEN, ObjectId
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
    TreeItem,
    _hex_field,
    _parse_headers,
    parse_object,
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


def _lenient_tree(raw: bytes) -> Tree:
    items: list[TreeItem] = []
    pos, end = 0, len(raw)
    while pos < end:
        space = raw.find(b" ", pos)
        nul = raw.find(b"\0", space + 1) if space >= 0 else -1
        if space < 0 or nul < 0 or nul + 1 + RAW_LEN > end:
            raise InvalidInput("malformed tree object")
        mode_text = raw[pos:space]
        if not mode_text or not all(48 <= c <= 55 for c in mode_text):
            raise InvalidInput(f"malformed tree entry mode {mode_text!r}")
        mode = canonical_mode(int(mode_text, 8))
        items.append(
            TreeItem(raw[space + 1 : nul], mode, ObjectId(raw[nul + 1 : nul + 1 + RAW_LEN]))
        )
        pos = nul + 1 + RAW_LEN
    return Tree(tuple(items), raw=raw)


def _lenient_commit(raw: bytes) -> Commit:
    headers, message = _parse_headers(raw)
    if not headers or headers[0][0] != b"tree":
        raise InvalidInput("malformed commit: first header must be tree")
    tree = _hex_field(headers[0][1])
    i = 1
    parents: list[ObjectId] = []
    while i < len(headers) and headers[i][0] == b"parent":
        parents.append(_hex_field(headers[i][1]))
        i += 1
    sigs: dict[bytes, Signature] = {}
    while i < len(headers) and headers[i][0] in (b"author", b"committer"):
        sigs.setdefault(headers[i][0], lenient_signature(headers[i][1]))
        i += 1
    author = sigs.get(b"author") or _unchecked_signature("", "", 0, 0)
    committer = sigs.get(b"committer") or author
    return Commit(tree, tuple(parents), author, committer, message, tuple(headers[i:]), raw=raw)


def _lenient_tag(raw: bytes) -> Tag:
    headers, message = _parse_headers(raw)
    keys = [k for k, _ in headers]
    if keys[:3] != [b"object", b"type", b"tag"]:
        raise InvalidInput("malformed tag: object, type and tag headers required")
    rest = headers[3:]
    tagger = None
    if rest and rest[0][0] == b"tagger":
        tagger = lenient_signature(rest[0][1])
        rest = rest[1:]
    return Tag(
        _hex_field(headers[0][1]),
        headers[1][1],
        headers[2][1],
        tagger,
        message,
        tuple(rest),
        raw=raw,
    )


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

"""Blob, tree, commit and tag values with git's exact serialization.

Pure functions and frozen dataclasses only: nothing here touches a database.
``parse(kind.serialize()) == kind`` for every value, and ``kind.id`` is the id
``git hash-object -t <type>`` gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import ClassVar, Final

from govc_db.errors import InvalidInput
from govc_db.objects.ids import RAW_LEN, ObjectId, hash_object, hex_to_oid
from govc_db.objects.signature import Signature, parse_signature

__all__ = [
    "MODE_DIR",
    "MODE_EXEC",
    "MODE_FILE",
    "MODE_GITLINK",
    "MODE_LINK",
    "TYPE_NAMES",
    "TYPE_NUMBERS",
    "Blob",
    "Commit",
    "GitObject",
    "Tag",
    "Tree",
    "TreeItem",
    "commit_fields",
    "mode_type",
    "parse_object",
    "scan_tree",
    "tag_fields",
    "tree_sort_key",
]

MODE_FILE: Final = 0o100644
MODE_EXEC: Final = 0o100755
MODE_LINK: Final = 0o120000
MODE_DIR: Final = 0o40000
MODE_GITLINK: Final = 0o160000

#: Modes a tree we build may hold; 160000 (submodule) is accepted only when parsing.
WRITABLE_MODES: Final = frozenset({MODE_FILE, MODE_EXEC, MODE_LINK, MODE_DIR})
PARSEABLE_MODES: Final = WRITABLE_MODES | {MODE_GITLINK}

#: git's pack type numbers, used as the ``type`` column in the database.
TYPE_NUMBERS: Final = {b"commit": 1, b"tree": 2, b"blob": 3, b"tag": 4}
TYPE_NAMES: Final = {v: k for k, v in TYPE_NUMBERS.items()}


def mode_type(mode: int) -> str:
    """The object type a tree entry of ``mode`` points at."""
    if mode == MODE_DIR:
        return "tree"
    if mode == MODE_GITLINK:
        return "commit"
    return "blob"


@dataclass(frozen=True, slots=True)
class Blob:
    """File content."""

    type_name: ClassVar[bytes] = b"blob"
    data: bytes

    def serialize(self) -> bytes:
        """Raw git content (the blob's bytes)."""
        return self.data

    @property
    def id(self) -> ObjectId:
        """The git object id."""
        return hash_object(b"blob", self.data)

    @classmethod
    def parse(cls, raw: bytes) -> Blob:
        """Build from raw git content."""
        return cls(bytes(raw))


_ENTRY_FORMAT: Final = b"%o %s\0%s"
_ENTRY_FIELDS: Final = attrgetter("mode", "name", "oid")


def tree_sort_key(name: bytes, mode: int) -> bytes:
    """Git orders tree entries by name, comparing a directory as ``name + '/'``."""
    return name + b"/" if mode == MODE_DIR else name


@dataclass(frozen=True, slots=True)
class TreeItem:
    """One entry of a tree object."""

    name: bytes
    mode: int
    oid: ObjectId

    def __post_init__(self) -> None:
        if not isinstance(self.name, bytes):
            raise InvalidInput("tree entry name must be bytes")
        if isinstance(self.mode, bool) or not isinstance(self.mode, int):
            raise InvalidInput("tree entry mode must be an int")
        if not isinstance(self.oid, bytes):
            raise InvalidInput("tree entry id must be 20 raw bytes")
        if not self.name or b"/" in self.name or b"\0" in self.name or self.name in (b".", b".."):
            raise InvalidInput(f"invalid tree entry name: {self.name!r}")
        if self.mode not in PARSEABLE_MODES:
            raise InvalidInput(f"invalid tree entry mode: {self.mode:o}")
        if len(self.oid) != RAW_LEN:
            raise InvalidInput("tree entry id must be 20 raw bytes")


@dataclass(frozen=True, slots=True)
class Tree:
    """A directory: entries kept in git's order, names unique."""

    type_name: ClassVar[bytes] = b"tree"
    items: tuple[TreeItem, ...] = ()
    raw: bytes | None = field(default=None, compare=False, repr=False)
    """The exact bytes of a non-canonical tree read leniently (:func:`parse_lenient`)."""
    data: bytes | None = field(default=None, compare=False, repr=False, kw_only=True)
    """The canonical bytes (what :meth:`serialize` gives), when kept at construction
    (:meth:`presorted`: the trees a commit builds or edits): an edit of a few entries
    splices them instead of formatting every entry again. Trusted: never checked against
    ``items``."""

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.items, key=lambda i: tree_sort_key(i.name, i.mode)))
        names = [i.name for i in ordered]
        if len(set(names)) != len(names):
            raise InvalidInput("tree has duplicate entry names")
        object.__setattr__(self, "items", ordered)

    @classmethod
    def of(cls, items: Iterable[TreeItem]) -> Tree:
        """Build from entries in any order."""
        return cls(tuple(items))

    @classmethod
    def presorted(cls, items: tuple[TreeItem, ...], data: bytes | None = None) -> Tree:
        """A canonical tree from entries the caller guarantees are already in git order
        (:func:`tree_sort_key`) with unique names, and ``data`` (when given) their exact
        canonical bytes: none of it is checked, so this is for trusted code that derived
        ``items`` from a tree's items (a merge of a few edits into an existing tree's
        order); untrusted input goes through :meth:`of`."""
        tree = object.__new__(cls)
        object.__setattr__(tree, "items", items)
        object.__setattr__(tree, "raw", None)
        object.__setattr__(tree, "data", data)
        return tree

    def serialize(self) -> bytes:
        """Raw git content: ``<octal mode> <name>\\0<20-byte id>`` per entry."""
        if self.raw is not None:
            return self.raw
        if self.data is not None:
            return self.data
        # C-level map/attrgetter rather than a generator: no Python frame per entry.
        return b"".join(map(_ENTRY_FORMAT.__mod__, map(_ENTRY_FIELDS, self.items)))

    @property
    def id(self) -> ObjectId:
        """The git object id."""
        return hash_object(b"tree", self.serialize())

    def get(self, name: bytes) -> TreeItem | None:
        """The entry called ``name``, or None."""
        for item in self.items:
            if item.name == name:
                return item
        return None

    @classmethod
    def parse(cls, raw: bytes) -> Tree:
        """Build from raw git content; ``InvalidInput`` when malformed."""
        items = tuple(scan_tree(raw, _strict_mode))
        tree = cls(items)
        if tree.items != items:
            # Reordering would change the bytes and so the id: refuse (git fsck: treeNotSorted).
            raise InvalidInput("malformed tree object: entries are not in git order")
        return tree


def _strict_mode(text: bytes) -> int:
    # Canonical modes only: no zero padding (git writes none), octal digits.
    if not text or text.startswith(b"0") or not text.isdigit():
        raise InvalidInput(f"malformed tree entry mode {text!r}")
    try:
        return int(text, 8)
    except ValueError:
        raise InvalidInput(f"malformed tree entry mode {text!r}") from None


def scan_tree(raw: bytes, mode_of: Callable[[bytes], int]) -> Iterator[TreeItem]:
    """The entries of tree content ``raw`` in stored order, each mode read by ``mode_of``
    (strict for :meth:`Tree.parse`, lenient for imported objects); ``InvalidInput`` on a
    truncated entry."""
    pos, end = 0, len(raw)
    while pos < end:
        space = raw.find(b" ", pos)
        nul = raw.find(b"\0", space + 1) if space >= 0 else -1
        if space < 0 or nul < 0 or nul + 1 + RAW_LEN > end:
            raise InvalidInput("malformed tree object")
        mode = mode_of(raw[pos:space])
        yield TreeItem(raw[space + 1 : nul], mode, ObjectId(raw[nul + 1 : nul + 1 + RAW_LEN]))
        pos = nul + 1 + RAW_LEN


def _parse_headers(raw: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Split a commit/tag into (key, value) headers (continuations joined) and message."""
    sep = raw.find(b"\n\n")
    if sep < 0:
        raise InvalidInput("malformed object: no blank line after the headers")
    head, message = raw[:sep], raw[sep + 2 :]
    headers: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\n"):
        if line.startswith(b" "):
            if not headers:
                raise InvalidInput("malformed object: continuation before any header")
            key, value = headers[-1]
            headers[-1] = (key, value + b"\n" + line[1:])
            continue
        key, sp, value = line.partition(b" ")
        if not sp or not key:
            raise InvalidInput(f"malformed object header line {line[:60]!r}")
        headers.append((key, value))
    return headers, message


def _check_extra(extra: object) -> tuple[tuple[bytes, bytes], ...]:
    """Extra headers as a tuple of ``(key, value)`` that serialize and parse back unchanged."""
    if not isinstance(extra, (tuple, list)):
        raise InvalidInput("extra headers must be a sequence of (key, value) pairs")
    out: list[tuple[bytes, bytes]] = []
    for pair in extra:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise InvalidInput("extra headers must be (key, value) pairs")
        key, value = pair
        if not isinstance(key, bytes) or not isinstance(value, bytes):
            raise InvalidInput("extra header keys and values must be bytes")
        if not key or any(c in key for c in b" \n"):
            raise InvalidInput(f"invalid extra header key {key[:60]!r}")
        out.append((key, value))
    return tuple(out)


def _header_lines(key: bytes, value: bytes) -> bytes:
    return key + b" " + value.replace(b"\n", b"\n ") + b"\n"


@dataclass(frozen=True, slots=True)
class Commit:
    """A commit: tree, ordered parents, author, committer, extra headers, message bytes."""

    type_name: ClassVar[bytes] = b"commit"
    tree: ObjectId
    parents: tuple[ObjectId, ...]
    author: Signature
    committer: Signature
    message: bytes
    extra: tuple[tuple[bytes, bytes], ...] = field(default=())
    """Headers after committer (``encoding``, ``gpgsig``, ``mergetag`` ...), kept verbatim."""
    raw: bytes | None = field(default=None, compare=False, repr=False)
    """The exact bytes of a non-canonical commit read leniently (:func:`parse_lenient`)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "parents", tuple(self.parents))
        ids = (self.tree, *self.parents)
        if any(not isinstance(i, bytes) or len(i) != RAW_LEN for i in ids):
            raise InvalidInput("commit tree and parents must be 20-byte ids")
        if not isinstance(self.author, Signature) or not isinstance(self.committer, Signature):
            raise InvalidInput("commit author and committer must be Signatures")
        if not isinstance(self.message, bytes):
            raise InvalidInput("commit message must be bytes")
        object.__setattr__(self, "extra", _check_extra(self.extra))

    def serialize(self) -> bytes:
        """Raw git content."""
        if self.raw is not None:
            return self.raw
        parts = [b"tree " + self.tree.hex().encode() + b"\n"]
        parts.extend(b"parent " + p.hex().encode() + b"\n" for p in self.parents)
        parts.append(b"author " + self.author.serialize() + b"\n")
        parts.append(b"committer " + self.committer.serialize() + b"\n")
        parts.extend(_header_lines(k, v) for k, v in self.extra)
        parts.append(b"\n")
        parts.append(self.message)
        return b"".join(parts)

    @property
    def id(self) -> ObjectId:
        """The git object id."""
        return hash_object(b"commit", self.serialize())

    @classmethod
    def parse(cls, raw: bytes) -> Commit:
        """Build from raw git content; ``InvalidInput`` when malformed."""
        return cls(*commit_fields(raw, parse_signature, strict=True))


CommitFields = tuple[
    ObjectId, tuple[ObjectId, ...], Signature, Signature, bytes, tuple[tuple[bytes, bytes], ...]
]


def commit_fields(
    raw: bytes, signature: Callable[[bytes], Signature], *, strict: bool
) -> CommitFields:
    """Tree, parents, author, committer, message and extra headers of commit content
    ``raw``, signatures read by ``signature``. ``strict``: author then committer must
    follow the parents, as git writes them; otherwise (objects git accepted) the first
    of each in that run of headers is taken, and a missing one is empty."""
    headers, message = _parse_headers(raw)
    if not headers or headers[0][0] != b"tree":
        raise InvalidInput("malformed commit: first header must be tree")
    tree = _hex_field(headers[0][1])
    i = 1
    parents: list[ObjectId] = []
    while i < len(headers) and headers[i][0] == b"parent":
        parents.append(_hex_field(headers[i][1]))
        i += 1
    if strict:
        if i + 1 >= len(headers) or (headers[i][0], headers[i + 1][0]) != (
            b"author",
            b"committer",
        ):
            raise InvalidInput("malformed commit: author and committer required after parents")
        author, committer = signature(headers[i][1]), signature(headers[i + 1][1])
        i += 2
    else:
        sigs: dict[bytes, Signature] = {}
        while i < len(headers) and headers[i][0] in (b"author", b"committer"):
            sigs.setdefault(headers[i][0], signature(headers[i][1]))
            i += 1
        author = sigs.get(b"author") or signature(b"")
        committer = sigs.get(b"committer") or author
    return tree, tuple(parents), author, committer, message, tuple(headers[i:])


def _hex_field(value: bytes) -> ObjectId:
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidInput("malformed object id in header") from None
    if text != text.lower():
        raise InvalidInput("malformed object id in header (uppercase hex)")
    return hex_to_oid(text)


@dataclass(frozen=True, slots=True)
class Tag:
    """An annotated tag: target id and type, tag name, optional tagger, message bytes."""

    type_name: ClassVar[bytes] = b"tag"
    object: ObjectId
    object_type: bytes
    name: bytes
    tagger: Signature | None
    message: bytes
    extra: tuple[tuple[bytes, bytes], ...] = field(default=())
    raw: bytes | None = field(default=None, compare=False, repr=False)
    """The exact bytes of a non-canonical tag read leniently (:func:`parse_lenient`)."""

    def __post_init__(self) -> None:
        if not isinstance(self.object, bytes) or len(self.object) != RAW_LEN:
            raise InvalidInput("tag target must be a 20-byte id")
        if self.object_type not in TYPE_NUMBERS:
            raise InvalidInput(f"invalid tag target type {self.object_type!r}")
        if not isinstance(self.name, bytes):
            raise InvalidInput("tag name must be bytes")
        if not self.name or any(c in self.name for c in b"\n\0 "):
            raise InvalidInput(f"invalid tag name {self.name!r}")
        if self.tagger is not None and not isinstance(self.tagger, Signature):
            raise InvalidInput("tag tagger must be a Signature or None")
        if not isinstance(self.message, bytes):
            raise InvalidInput("tag message must be bytes")
        extra = _check_extra(self.extra)
        if self.tagger is None and extra and extra[0][0] == b"tagger":
            # It would serialize exactly like a tag with a tagger and parse back as one.
            raise InvalidInput("a 'tagger' extra header must be given as the tagger")
        object.__setattr__(self, "extra", extra)

    def serialize(self) -> bytes:
        """Raw git content."""
        if self.raw is not None:
            return self.raw
        parts = [
            b"object " + self.object.hex().encode() + b"\n",
            b"type " + self.object_type + b"\n",
            b"tag " + self.name + b"\n",
        ]
        if self.tagger is not None:
            parts.append(b"tagger " + self.tagger.serialize() + b"\n")
        parts.extend(_header_lines(k, v) for k, v in self.extra)
        parts.append(b"\n")
        parts.append(self.message)
        return b"".join(parts)

    @property
    def id(self) -> ObjectId:
        """The git object id."""
        return hash_object(b"tag", self.serialize())

    @classmethod
    def parse(cls, raw: bytes) -> Tag:
        """Build from raw git content; ``InvalidInput`` when malformed."""
        return cls(*tag_fields(raw, parse_signature))


TagFields = tuple[ObjectId, bytes, bytes, Signature | None, bytes, tuple[tuple[bytes, bytes], ...]]


def tag_fields(raw: bytes, signature: Callable[[bytes], Signature]) -> TagFields:
    """Target, target type, name, tagger (read by ``signature``), message and extra
    headers of tag content ``raw``."""
    headers, message = _parse_headers(raw)
    if [k for k, _ in headers[:3]] != [b"object", b"type", b"tag"]:
        raise InvalidInput("malformed tag: object, type and tag headers required")
    rest = headers[3:]
    tagger = None
    if rest and rest[0][0] == b"tagger":
        tagger = signature(rest[0][1])
        rest = rest[1:]
    return _hex_field(headers[0][1]), headers[1][1], headers[2][1], tagger, message, tuple(rest)


GitObject = Blob | Tree | Commit | Tag

_PARSERS: Final[dict[bytes, Callable[[bytes], GitObject]]] = {
    b"blob": Blob.parse,
    b"tree": Tree.parse,
    b"commit": Commit.parse,
    b"tag": Tag.parse,
}


def parse_object(type_name: bytes, raw: bytes) -> GitObject:
    """Parse raw content of the given git type; ``InvalidInput`` on unknown type or bad bytes."""
    parser = _PARSERS.get(type_name)
    if parser is None:
        raise InvalidInput(f"unknown object type {type_name!r}")
    return parser(raw)


def tree_items_from(entries: Sequence[tuple[bytes, int, ObjectId]]) -> Tree:
    """Convenience: a tree from ``(name, mode, oid)`` triples."""
    return Tree.of(TreeItem(n, m, o) for n, m, o in entries)

"""Fast tree handling for fsck: scan raw tree bytes into tuples, diff them by path.

:meth:`govc_db.objects.Tree.parse` builds a validated frozen dataclass per entry, which
costs more than everything else an fsck does. Here a tree is scanned once into a dict
``name -> (mode, oid)`` with the same checks (entry format, mode, name, git order, no
duplicates); a tree that fails any of them is handed back to ``Tree.parse`` by the
caller for the exact message. The dicts are kept in a byte-bounded memo so the
changed-path recomputation of every commit reuses the scan instead of reading and parsing
each tree again.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, cast

from govc_db.objects import MODE_DIR, MODE_GITLINK, ObjectId
from govc_db.objects.kinds import PARSEABLE_MODES

__all__ = [
    "DIR_TEXT",
    "GITLINK_TEXT",
    "Entries",
    "Scanned",
    "TreeMemo",
    "changed_paths",
    "scan_tree",
]

#: ``name -> (mode as git writes it, e.g. b"100644", id)``
Entries = dict[bytes, tuple[bytes, ObjectId]]

_RAW_LEN = 20
#: The modes a tree may hold, as git writes them.
_MODES = frozenset(b"%o" % m for m in PARSEABLE_MODES)
DIR_TEXT = b"%o" % MODE_DIR
GITLINK_TEXT = b"%o" % MODE_GITLINK


# Every entry in one pass of the regex engine (C).
_ENTRY = re.compile(rb"([0-7]+) ([^\0/]+)\0(.{20})", re.S)
_DOTGIT = re.compile(rb" \.[gG][iI][tT]\0")


class Scanned(NamedTuple):
    """A well-formed tree: its entries, and its modes and ids in entry order."""

    entries: Entries
    modes: tuple[bytes, ...]
    oids: tuple[ObjectId, ...]

    def has_dotgit(self, raw: bytes) -> bool:
        """Whether an entry is named ``.git`` in any case (git fsck: hasDotgit)."""
        # The regex rules out almost every tree in C; a hit is confirmed on the names.
        return _DOTGIT.search(raw) is not None and any(n.lower() == b".git" for n in self.entries)


def scan_tree(raw: bytes) -> Scanned | None:
    """The entries of a well-formed tree, or None if anything is wrong with it."""
    found = _ENTRY.findall(raw)
    if not found:
        return Scanned({}, (), ()) if not raw else None
    modes, names, oids = zip(*found, strict=True)
    # findall skips what does not match: the entries cover the whole object only if
    # their lengths add up to it (mode, space, name, NUL, 20-byte id).
    if sum(map(len, modes)) + sum(map(len, names)) + 22 * len(found) != len(raw):
        return None
    if not _MODES.issuperset(modes) or b"." in names or b".." in names:
        return None
    entries = cast(Entries, dict(zip(names, zip(modes, oids, strict=True), strict=True)))
    if len(entries) != len(names):
        return None  # a name twice (also a file and a directory of one name)
    # git order: a directory sorts as "name/".
    keys = (
        [n + b"/" if m == DIR_TEXT else n for m, n in zip(modes, names, strict=True)]
        if DIR_TEXT in modes
        else list(names)
    )
    if keys != sorted(keys):
        return None
    return Scanned(entries, modes, oids)


class TreeMemo:
    """Scanned trees by id, at most ``max_bytes`` of raw tree data (oldest dropped)."""

    def __init__(self, max_bytes: int) -> None:
        self._trees: OrderedDict[ObjectId, Entries] = OrderedDict()
        self._sizes: dict[ObjectId, int] = {}
        self._bytes = 0
        self._max = max_bytes

    def put(self, oid: ObjectId, entries: Entries, size: int) -> None:
        """Remember one scanned tree of ``size`` raw bytes."""
        if size > self._max or oid in self._trees:
            return
        self._trees[oid] = entries
        self._sizes[oid] = size
        self._bytes += size
        while self._bytes > self._max:
            old, _ = self._trees.popitem(last=False)
            self._bytes -= self._sizes.pop(old)

    def get(self, oid: ObjectId) -> Entries | None:
        """The scanned tree, or None when it was never seen or was dropped."""
        return self._trees.get(oid)


def changed_paths(
    load: Callable[[Sequence[ObjectId]], Mapping[ObjectId, Entries]],
    old: ObjectId | None,
    new: ObjectId | None,
) -> set[str]:
    """The paths ``diff_trees(objects, old, new)`` reports, from scanned trees.

    ``load`` returns the entries of the requested trees (it raises for a missing or
    corrupt one). Same rules as :func:`govc_db.core.diff.diff_trees`: non-directory
    paths that were added, deleted, or changed mode or id; a file<->directory swap
    reports the file and every file below the directory.
    """
    found: set[str] = set()
    frontier: list[tuple[bytes, ObjectId | None, ObjectId | None]] = [(b"", old, new)]
    empty: Entries = {}
    while frontier:
        trees = load([t for _, a, b in frontier for t in (a, b) if t is not None])
        below: list[tuple[bytes, ObjectId | None, ObjectId | None]] = []
        for prefix, a, b in frontier:
            if a == b:
                continue
            olds = trees[a] if a is not None else empty
            news = trees[b] if b is not None else empty
            # Only the names whose (mode, id) differ, found by a set operation in C.
            for name in {name for name, _ in olds.items() ^ news.items()}:
                o, n = olds.get(name), news.get(name)
                old_sub = o[1] if o is not None and o[0] == DIR_TEXT else None
                new_sub = n[1] if n is not None and n[0] == DIR_TEXT else None
                path = prefix + name
                if old_sub != new_sub:
                    below.append((path + b"/", old_sub, new_sub))
                if old_sub is not None:
                    o = None
                if new_sub is not None:
                    n = None
                if o != n:  # added, deleted, or another mode or id
                    found.add(path.decode("utf-8", "surrogateescape"))
        frontier = below
    return found

"""Tree diff with ``git diff-tree -r --no-renames`` semantics (pure logic, no SQL)."""

from __future__ import annotations

from dataclasses import dataclass

from govc_db.core.trees import decode_path, load_trees
from govc_db.objects import MODE_DIR, MODE_EXEC, MODE_FILE, ObjectId, TreeItem
from govc_db.store.ports import ObjectStore

__all__ = ["RawChange", "diff_trees"]


@dataclass(frozen=True, slots=True)
class RawChange:
    """One changed non-directory path; the absent side has mode 0 and oid None."""

    path: str
    status: str  # "A", "D", "M" or "T"
    old_mode: int
    new_mode: int
    old_oid: ObjectId | None
    new_oid: ObjectId | None


def diff_trees(objects: ObjectStore, old: ObjectId | None, new: ObjectId | None) -> list[RawChange]:
    """Changes from tree ``old`` to tree ``new`` (None = empty tree), in the order
    ``git diff-tree -r`` prints them. Descends only into subtrees whose ids differ, and
    fetches each depth's subtrees with one ``get_many``. ``T`` is a change of object kind
    between regular file, symlink and gitlink; a mode change 100644<->100755 is ``M``; a
    file replaced by a directory is ``D`` for the file plus ``A`` for each file below.
    """
    if old == new:
        return []
    found: list[tuple[bytes, RawChange]] = []
    # One entry per pair of subtrees still to compare; None stands for "absent".
    frontier: list[tuple[bytes, ObjectId | None, ObjectId | None]] = [(b"", old, new)]
    while frontier:
        trees = load_trees(objects, (t for _, a, b in frontier for t in (a, b) if t is not None))
        below: list[tuple[bytes, ObjectId | None, ObjectId | None]] = []
        for prefix, a, b in frontier:
            olds = {i.name: i for i in trees[a].items} if a is not None else {}
            news = {i.name: i for i in trees[b].items} if b is not None else {}
            for name in olds.keys() | news.keys():
                o = olds.get(name)
                n = news.get(name)
                # The same entry on both sides (most of a large directory one commit
                # changed): nothing to report, nothing to descend into.
                if o is not None and n is not None and o.oid == n.oid and o.mode == n.mode:
                    continue
                _compare(prefix + name, o, n, found, below)
        frontier = below
    # Collected breadth-first; sorting by path bytes gives git's depth-first order, since
    # git compares a subtree as "name/" and a blob as "name" (so a file "a" replaced by a
    # directory "a" is "D a" first, then the "A a/..." entries in their place).
    found.sort(key=lambda f: f[0])
    return [change for _, change in found]


def _kind(mode: int) -> int:
    # Regular files differ only by the executable bit; symlink and gitlink are kinds of
    # their own (the S_IFMT bits git compares to report "T").
    return MODE_FILE if mode in (MODE_FILE, MODE_EXEC) else mode


def _compare(
    path: bytes,
    o: TreeItem | None,
    n: TreeItem | None,
    found: list[tuple[bytes, RawChange]],
    below: list[tuple[bytes, ObjectId | None, ObjectId | None]],
) -> None:
    old_sub = o.oid if o is not None and o.mode == MODE_DIR else None
    new_sub = n.oid if n is not None and n.mode == MODE_DIR else None
    if old_sub != new_sub:
        below.append((path + b"/", old_sub, new_sub))
    # What is left is the non-directory side(s); in a file<->directory swap the file is
    # reported on its own (A or D) next to the directory's files.
    if old_sub is not None:
        o = None
    if new_sub is not None:
        n = None
    if o is None and n is not None:
        found.append((path, RawChange(decode_path(path), "A", 0, n.mode, None, n.oid)))
    elif n is None and o is not None:
        found.append((path, RawChange(decode_path(path), "D", o.mode, 0, o.oid, None)))
    elif o is not None and n is not None and (o.mode, o.oid) != (n.mode, n.oid):
        status = "M" if _kind(o.mode) == _kind(n.mode) else "T"
        found.append((path, RawChange(decode_path(path), status, o.mode, n.mode, o.oid, n.oid)))

"""Tree diff with ``git diff-tree -r --no-renames`` semantics (pure logic, no SQL)."""

from __future__ import annotations

from dataclasses import dataclass

from govc_db.objects import ObjectId
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
    raise NotImplementedError

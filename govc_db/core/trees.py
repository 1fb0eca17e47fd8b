"""Tree reading and building over the ObjectStore port (pure logic, no SQL).

``build_tree`` rewrites only the trees along the changed paths, so a commit's
cost grows with the size of its change, not with the size of the repository.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from govc_db.objects import ObjectId, Tree, TreeItem
from govc_db.store.ports import ObjectStore
from govc_db.types import File

__all__ = ["build_tree", "find_entry", "list_tree", "load_tree", "walk_files"]


def load_tree(objects: ObjectStore, oid: ObjectId) -> Tree:
    """Read and parse tree ``oid``; ``GovcError`` if it is missing, not a tree, or corrupt."""
    raise NotImplementedError


def find_entry(objects: ObjectStore, root: ObjectId, path: str) -> TreeItem | None:
    """The entry at ``path`` (file, symlink, gitlink or directory) below ``root``, or None
    when it does not exist (including when a leading component is a file).
    """
    raise NotImplementedError


def list_tree(objects: ObjectStore, root: ObjectId, path: str = "") -> list[tuple[str, TreeItem]]:
    """The direct entries ``(full path, item)`` of the directory at ``path`` ("" = root),
    in git order; ``NotFound`` if ``path`` does not exist or is not a directory.
    """
    raise NotImplementedError


def walk_files(
    objects: ObjectStore, root: ObjectId, path: str = ""
) -> Iterator[tuple[str, TreeItem]]:
    """Every non-directory entry below ``path`` recursively, as ``(full path, item)``,
    sorted by path bytes (which is git's recursive order). Subtrees are fetched level by
    level with ``get_many`` (one query per depth, not per tree). ``path`` naming a file
    yields just that file; a missing ``path`` raises ``NotFound``.
    """
    raise NotImplementedError


def build_tree(
    objects: ObjectStore, base: ObjectId | None, changes: Mapping[str, File | None]
) -> ObjectId:
    """Apply ``changes`` (validated paths -> File to write, or None to delete) to tree
    ``base`` (None = empty) and return the new root tree id, writing new blobs and trees.

    Rules: deletions apply before writes. Deleting a path that does not exist is
    ``NotFound``; deleting a directory path removes everything below it. Writing ``a/b``
    where ``a`` is (after deletions) a file, or writing ``a`` where ``a`` is (after
    deletions) a directory, is ``InvalidInput``. Directories left empty disappear (git has
    no empty trees); an empty root is the empty tree. Only the trees on changed paths are
    loaded and rewritten.
    """
    raise NotImplementedError

"""Commit-index rows computed from commit objects (generation, changed paths)."""

from __future__ import annotations

from govc_db.objects import Commit, ObjectId
from govc_db.store.ports import CommitIndexStore, IndexEntry, ObjectStore

__all__ = ["index_commit"]


def index_commit(
    objects: ObjectStore, index: CommitIndexStore, oid: ObjectId, commit: Commit
) -> IndexEntry:
    """Write the index row of ``commit`` (whose parents must already be indexed; ``GovcError``
    otherwise): generation = 1 + max(parents' generations) (1 for a root), and the changed
    file paths against each parent position (``diff_trees``), against the empty tree at
    position 0 for a root commit. Returns the entry written.
    """
    raise NotImplementedError

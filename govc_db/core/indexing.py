"""Commit-index rows computed from commit objects (generation, changed paths)."""

from __future__ import annotations

from govc_db.core.diff import diff_trees
from govc_db.errors import GovcError
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
    rows = index.get_many(commit.parents)
    missing = [p for p in commit.parents if p not in rows]
    if missing:
        raise GovcError(
            f"cannot index commit {oid.hex()}: parent {missing[0].hex()} is not indexed"
        )
    generation = 1 + max((rows[p].generation for p in commit.parents), default=0)
    changed: dict[int, list[str]] = {}
    if not commit.parents:
        changed[0] = [c.path for c in diff_trees(objects, None, commit.tree)]
    for position, parent in enumerate(commit.parents):
        changed[position] = [c.path for c in diff_trees(objects, rows[parent].tree, commit.tree)]
    entry = IndexEntry(
        oid=oid,
        tree=commit.tree,
        parents=commit.parents,
        generation=generation,
        author_time=commit.author.time,
        committer_time=commit.committer.time,
    )
    index.add(entry, changed)
    return entry

"""Commit-index rows computed from commit objects (generation, changed paths)."""

from __future__ import annotations

from collections.abc import Sequence

from govc_db.core.diff import diff_trees
from govc_db.errors import GovcError
from govc_db.objects import Commit, ObjectId
from govc_db.store.ports import CommitIndexStore, IndexEntry, ObjectStore

__all__ = ["index_commit"]


def index_commit(
    objects: ObjectStore,
    index: CommitIndexStore,
    oid: ObjectId,
    commit: Commit,
    first_changed: Sequence[str] | None = None,
) -> IndexEntry:
    """Write the index row of ``commit`` (whose parents must already be indexed; ``GovcError``
    otherwise): generation = 1 + max(parents' generations) (1 for a root), and the changed
    file paths against each parent position (``diff_trees``), against the empty tree at
    position 0 for a root commit. Returns the entry written.

    ``first_changed``: the changed paths at position 0 when the caller knows them (a
    commit built from a change set: ``build_tree_with_paths``), which must be what
    ``diff_trees`` would give; the trees are then not compared again.
    """
    rows = index.get_many(commit.parents)
    missing = [p for p in commit.parents if p not in rows]
    if missing:
        raise GovcError(
            f"cannot index commit {oid.hex()}: parent {missing[0].hex()} is not indexed"
        )
    generation = 1 + max((rows[p].generation for p in commit.parents), default=0)
    changed: dict[int, list[str]] = {}
    if first_changed is not None:
        changed[0] = list(first_changed)
    elif not commit.parents:
        changed[0] = [c.path for c in diff_trees(objects, None, commit.tree)]
    for position, parent in enumerate(commit.parents):
        if position not in changed:
            changed[position] = [
                c.path for c in diff_trees(objects, rows[parent].tree, commit.tree)
            ]
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

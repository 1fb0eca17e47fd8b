"""Commit-index rows for many commits at once (import and push).

``core.indexing.index_commit`` indexes one commit whose parents are indexed, reading its
parents' rows and trees one query at a time. Here a whole batch of new commits is put in
topological order, generations are computed in memory, trees come from the pack being
stored (parsed once, shared across commits), and the rows are written with one
executemany per table and slice instead of three statements per commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from govc_db.core.diff import diff_trees
from govc_db.errors import InvalidInput
from govc_db.objects import Commit, ObjectId, Tree
from govc_db.store.ports import IndexEntry, ObjectStore, RawObject, Unit

__all__ = ["IndexPlan", "TreeSource", "plan_index", "write_index"]


class _Memo:
    """Parsed trees by id, shared by every diff of one import (see ``core.trees.TreeMemo``)."""

    def __init__(self) -> None:
        self.trees: dict[ObjectId, Tree] = {}

    def get_trees(self, oids: Iterable[ObjectId]) -> dict[ObjectId, Tree]:
        return {o: self.trees[o] for o in oids if o in self.trees}

    def put_trees(self, trees: Mapping[ObjectId, Tree]) -> None:
        self.trees.update(trees)


class TreeSource:
    """An ObjectStore for ``diff_trees``: trees of the incoming pack, else the unit's."""

    def __init__(self, pending: Mapping[ObjectId, bytes], fallback: ObjectStore) -> None:
        self._pending = pending
        self._fallback = fallback
        self.tree_memo = _Memo()

    def get_many(self, oids: Iterable[ObjectId]) -> dict[ObjectId, RawObject]:
        """The trees among ``oids``: pending ones first, the rest from the store."""
        out: dict[ObjectId, RawObject] = {}
        rest: list[ObjectId] = []
        for oid in oids:
            raw = self._pending.get(oid)
            if raw is None:
                rest.append(oid)
            else:
                out[oid] = RawObject(b"tree", raw)
        if rest:
            out.update(self._fallback.get_many(rest))
        return out

    def use(self, fallback: ObjectStore) -> None:
        """Read missing trees through another unit's store (one unit per slice)."""
        self._fallback = fallback


class IndexPlan:
    """New commits in parents-first order, with generations."""

    def __init__(self, order: list[ObjectId], commits: Mapping[ObjectId, Commit]) -> None:
        self.order = order
        self.commits = commits
        self.generation: dict[ObjectId, int] = {}
        self.trees: dict[ObjectId, ObjectId] = {}


def plan_index(unit: Unit, commits: Mapping[ObjectId, Commit]) -> IndexPlan:
    """Order the not-yet-indexed ``commits`` parents first; ``InvalidInput`` when a parent
    is neither among them nor indexed in this repository.
    """
    ids = list(commits)
    indexed: set[ObjectId] = set()
    for i in range(0, len(ids), 1000):
        indexed.update(unit.index.get_many(ids[i : i + 1000]))
    todo = {oid: c for oid, c in commits.items() if oid not in indexed}
    outside = {p for c in todo.values() for p in c.parents if p not in todo}
    rows: dict[ObjectId, IndexEntry] = {}
    out_list = list(outside)
    for i in range(0, len(out_list), 1000):
        rows.update(unit.index.get_many(out_list[i : i + 1000]))
    missing = outside - rows.keys()
    if missing:
        raise InvalidInput(
            f"commit parent {min(missing).hex()} is not in this repository (history incomplete)"
        )
    order: list[ObjectId] = []
    state: dict[ObjectId, int] = {}
    for root in todo:
        if root in state:
            continue
        stack: list[tuple[ObjectId, int]] = [(root, 0)]
        while stack:
            oid, i = stack.pop()
            parents = todo[oid].parents
            state[oid] = 1
            while i < len(parents) and (parents[i] not in todo or parents[i] in state):
                if state.get(parents[i]) == 1:
                    raise InvalidInput(f"commit {oid.hex()} is its own ancestor")
                i += 1
            if i < len(parents):
                stack.append((oid, i + 1))
                stack.append((parents[i], 0))
            else:
                state[oid] = 2
                order.append(oid)
    plan = IndexPlan(order, todo)
    for oid, row in rows.items():
        plan.generation[oid] = row.generation
        plan.trees[oid] = row.tree
    for oid in order:
        c = todo[oid]
        plan.generation[oid] = 1 + max((plan.generation[p] for p in c.parents), default=0)
        plan.trees[oid] = c.tree
    return plan


def write_index(unit: Unit, plan: IndexPlan, oids: Sequence[ObjectId], source: TreeSource) -> None:
    """Write the index rows of ``oids`` (a slice of ``plan.order``) in ``unit``."""
    commit_rows: list[dict[str, Any]] = []
    parent_rows: list[dict[str, Any]] = []
    path_rows: list[dict[str, Any]] = []
    entries: list[tuple[IndexEntry, dict[int, list[str]]]] = []
    r = unit.repo_id
    for oid in oids:
        c = plan.commits[oid]
        changed: dict[int, list[str]] = {}
        if not c.parents:
            changed[0] = [x.path for x in diff_trees(source, None, c.tree)]  # type: ignore[arg-type]
        for pos, parent in enumerate(c.parents):
            old = plan.trees[parent]
            changed[pos] = [x.path for x in diff_trees(source, old, c.tree)]  # type: ignore[arg-type]
        entry = IndexEntry(
            oid, c.tree, c.parents, plan.generation[oid], c.author.time, c.committer.time
        )
        entries.append((entry, changed))
        commit_rows.append(
            {
                "repo_id": r,
                "oid": oid,
                "tree": c.tree,
                "generation": entry.generation,
                "author_time": entry.author_time,
                "committer_time": entry.committer_time,
                "parent_count": len(c.parents),
            }
        )
        parent_rows.extend(
            {"repo_id": r, "oid": oid, "position": i, "parent": p} for i, p in enumerate(c.parents)
        )
        path_rows.extend(
            {
                "repo_id": r,
                "oid": oid,
                "position": pos,
                "path": path.encode("utf-8", "surrogateescape"),
            }
            for pos, paths in changed.items()
            for path in paths
        )
    backend = getattr(unit, "_backend", None)
    conn = getattr(unit, "conn", None)
    statements = [getattr(backend, n, None) for n in ("commit_insert", "parent_insert")]
    if conn is None or None in statements or getattr(unit, "pipe", None) is not None:
        for entry, changed in entries:  # any other Unit: its own one-commit path
            unit.index.add(entry, changed)
        return
    assert backend is not None
    # SQL store: the same statements SqlIndex.add runs, as one executemany per table.
    conn.execute(backend.commit_insert, commit_rows) if commit_rows else None
    conn.execute(backend.parent_insert, parent_rows) if parent_rows else None
    for i in range(0, len(path_rows), 5000):
        conn.execute(backend.path_insert, path_rows[i : i + 5000])

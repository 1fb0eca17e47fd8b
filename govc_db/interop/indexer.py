"""Commit-index rows for many commits at once (import and push).

``core.indexing.index_commit`` indexes one commit whose parents are indexed, reading its
parents' rows and trees one query at a time. Here a whole batch of new commits is put in
topological order, generations are computed in memory, the changed paths come from a
light diff of the trees being stored (split once, shared across commits; the same paths
``core.diff.diff_trees`` reports, checked by the tests against ``git log -- path``), and
the rows are written with ``CommitIndexStore.add_many`` (one statement per table and
slice in the SQL store) instead of three statements per commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from govc_db.core.trees import EMPTY_TREE
from govc_db.errors import InvalidInput
from govc_db.interop.walk import raw_entries, split_entries
from govc_db.objects import Commit, ObjectId
from govc_db.store.ports import IndexEntry, ObjectStore, Unit

__all__ = ["IndexPlan", "TreeSource", "plan_index", "write_index"]


_DIR = (b"40000", b"040000")
_GITLINK = b"160000"


class TreeSource:
    """Trees for the changed-path diffs: the incoming ones, else the unit's; each split
    once (names, mode texts, ids) and shared by every commit of the batch.
    """

    def __init__(
        self, pending: Mapping[ObjectId, bytes], fallback: ObjectStore, *, links: bool = False
    ) -> None:
        self._pending = pending
        self._fallback = fallback
        self._split: dict[ObjectId, frozenset[bytes]] = {EMPTY_TREE: frozenset()}
        self.links: set[bytes] | None = set() if links else None
        """With ``links``: the ids named by the entries the diffs found new (gitlinks
        aside), which is every id a new tree links to that its parent's tree does not."""
        self.walked: set[ObjectId] = set()
        """With ``links``: the trees whose new entries went to :attr:`links`."""

    def remember(self, oid: ObjectId, entries: list[bytes]) -> None:
        """Entries of a tree the caller has already split (:func:`raw_entries`)."""
        self._split[oid] = frozenset(entries)

    def use(self, fallback: ObjectStore) -> None:
        """Read missing trees through another unit's store (one unit per slice)."""
        self._fallback = fallback

    def entries(self, oid: ObjectId) -> frozenset[bytes]:
        """The raw entries (``mode name\\0id``) of tree ``oid``."""
        found = self._split.get(oid)
        if found is None:
            raw = self._pending.get(oid)
            if raw is None:
                obj = self._fallback.get_many([oid]).get(oid)
                if obj is None or obj.type != b"tree":
                    raise InvalidInput(f"tree {oid.hex()} is missing")
                raw = obj.data
            found = self._split[oid] = frozenset(raw_entries(raw))
        return found

    def changed(self, old: ObjectId | None, new: ObjectId) -> list[str]:
        """File paths (gitlinks and symlinks included) that differ between two trees, as
        ``diff_trees`` reports them (a file replaced by a directory: both sides)."""
        out: list[str] = []
        self._diff(b"", old, new, out)
        return out

    def _diff(
        self, prefix: bytes, old: ObjectId | None, new: ObjectId | None, out: list[str]
    ) -> None:
        left = self.entries(old) if old is not None else frozenset()
        right = self.entries(new) if new is not None else frozenset()
        # Set differences of whole entries run in C: only the entries that differ are
        # split in Python.
        a = split_entries(left - right)
        b = split_entries(right - left)
        links = self.links
        if links is not None and new is not None:
            self.walked.add(new)
            links.update(o for m, o in b.values() if m != _GITLINK)
        for name in a.keys() | b.keys():
            x, y = a.get(name), b.get(name)
            path = prefix + name
            x_dir = x is not None and x[0] in _DIR
            y_dir = y is not None and y[0] in _DIR
            if x_dir or y_dir:
                self._diff(
                    path + b"/",
                    ObjectId(x[1]) if x is not None and x_dir else None,
                    ObjectId(y[1]) if y is not None and y_dir else None,
                    out,
                )
            if (x is not None and not x_dir) or (y is not None and not y_dir):
                out.append(path.decode("utf-8", "surrogateescape"))


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


def write_index(
    unit: Unit,
    plan: IndexPlan,
    oids: Sequence[ObjectId],
    source: TreeSource,
    known: Mapping[ObjectId, list[str]] | None = None,
) -> None:
    """Write the index rows of ``oids`` (a slice of ``plan.order``) in ``unit``.

    ``known``: the changed paths of some commits with at most one parent, computed
    already (``git diff-tree`` on import); the others are diffed here."""
    entries: list[tuple[IndexEntry, Mapping[int, list[str]]]] = []
    for oid in oids:
        c = plan.commits[oid]
        changed: dict[int, list[str]] = {}
        given = known.get(oid) if known is not None and len(c.parents) <= 1 else None
        if given is not None:
            changed[0] = given
        elif not c.parents:
            changed[0] = source.changed(None, c.tree)
        for pos, parent in enumerate(c.parents if given is None else ()):
            changed[pos] = source.changed(plan.trees[parent], c.tree)
        entry = IndexEntry(
            oid, c.tree, c.parents, plan.generation[oid], c.author.time, c.committer.time
        )
        entries.append((entry, changed))
    unit.index.add_many(entries)

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

import re
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from itertools import accumulate
from typing import NamedTuple

from govc_db.core.trees import EMPTY_TREE
from govc_db.errors import GovcError, InvalidInput
from govc_db.interop.walk import Entries, raw_entries, raw_entries_between, split_entries
from govc_db.objects import Commit, ObjectId
from govc_db.objects.lenient import parse_lenient
from govc_db.store.codec import common_ends
from govc_db.store.ports import IndexEntry, ObjectStore, Unit

__all__ = ["IndexCommit", "IndexPlan", "TreeSource", "index_commit", "plan_index", "write_index"]


class IndexCommit(NamedTuple):
    """What the commit index needs of a commit."""

    tree: ObjectId
    parents: tuple[ObjectId, ...]
    author_time: int
    committer_time: int


# The headers as git writes them: tree, parents, author, committer, each signature
# ending "<email> time +hhmm" (at most 18 digits: any such time is what the strict and
# the lenient parsers both read). Anything else goes to the full lenient parser.
_SIG = rb" [^\n<>]*<[^<>\n]*> (0|[1-9][0-9]{0,17}) [+-][0-9]{4}\n"
_FAST_COMMIT = re.compile(
    rb"tree ([0-9a-f]{40})\n((?:parent [0-9a-f]{40}\n)*)author" + _SIG + rb"committer" + _SIG
)


def index_commit(raw: bytes) -> IndexCommit:
    """The index fields of commit content ``raw`` (as :func:`parse_lenient` reads them:
    ``InvalidInput`` when it would refuse the commit), with one regex in the common
    case instead of the full parse."""
    m = _FAST_COMMIT.match(raw)
    if m is not None:
        end = m.end()
        sep = raw.find(b"\n\n", end - 1)
        # The rest of the headers must be what the full parse accepts: continuation
        # lines (not right after the committer, which would extend it) or "key value".
        if sep >= 0 and raw[end : end + 1] != b" ":
            rest = raw[end:sep]
            if not rest or all(
                line[:1] == b" " or line.find(b" ") > 0 for line in rest.split(b"\n")
            ):
                listed = m.group(2)
                return IndexCommit(
                    ObjectId(bytes.fromhex(m.group(1).decode())),
                    tuple(
                        ObjectId(bytes.fromhex(listed[i + 7 : i + 47].decode()))
                        for i in range(0, len(listed), 48)
                    ),
                    int(m.group(3)),
                    int(m.group(4)),
                )
    obj = parse_lenient(b"commit", raw)
    assert isinstance(obj, Commit)
    return IndexCommit(obj.tree, obj.parents, obj.author.time, obj.committer.time)


_DIR = (b"40000", b"040000")
_GITLINK = b"160000"


class _Parsed:
    """A tree split into its raw entries, with where each starts (and the end)."""

    __slots__ = ("entries", "offsets", "raw")

    def __init__(self, raw: bytes, entries: list[bytes], offsets: list[int]) -> None:
        self.raw = raw
        self.entries = entries
        self.offsets = offsets


def _parse(raw: bytes) -> _Parsed:
    try:
        entries = raw_entries(raw)
    except GovcError:
        raise InvalidInput("malformed tree object") from None
    return _Parsed(raw, entries, list(accumulate(map(len, entries), initial=0)))


def _derive(old: _Parsed, raw: bytes) -> tuple[_Parsed, list[bytes], list[bytes]] | None:
    """Tree ``raw`` split from ``old``'s split: the bytes both share at the start and at
    the end (compared in C) hold the same entries, so only the middle is split; also the
    entries of both middles (every entry that differs is there). None when the middle
    is not whole entries (then ``raw`` is split alone, and refused there if corrupt).

    Entry boundaries are sound: a tree splits one way from its start, the shared start
    holds ``old``'s entries up to the last boundary within it, and if the middle splits
    exactly, ``old``'s entries after it complete the one split of ``raw``."""
    offs = old.offsets
    size = len(old.raw)
    prefix, suffix = common_ends(old.raw, raw)
    i = bisect_right(offs, prefix) - 1
    j = bisect_left(offs, size - suffix)
    a, b = offs[i], offs[j]
    shift = len(raw) - size
    middle = raw_entries_between(raw, a, b + shift)
    if middle is None:
        return None
    entries = old.entries[:i] + middle + old.entries[j:]
    offsets = offs[:i] + list(accumulate(map(len, middle), initial=a))
    offsets += [o + shift for o in offs[j + 1 :]] if shift else offs[j + 1 :]
    return _Parsed(raw, entries, offsets), old.entries[i:j], middle


def _middles(old: _Parsed, new: _Parsed) -> tuple[list[bytes], list[bytes]]:
    """The entries of two split trees that may differ: their middles when the shared
    end starts on an entry boundary of both, else all of them."""
    offs = old.offsets
    size = len(old.raw)
    prefix, suffix = common_ends(old.raw, new.raw)
    i = bisect_right(offs, prefix) - 1
    j = bisect_left(offs, size - suffix)
    end = offs[j] + len(new.raw) - size
    k = bisect_left(new.offsets, end)
    n = len(new.offsets)
    if k < n and i < n and new.offsets[k] == end and new.offsets[i] == offs[i]:
        return old.entries[i:j], new.entries[i:k]
    return old.entries, new.entries


class TreeSource:
    """Trees for the changed-path diffs: the incoming ones, else the unit's; each split
    once (raw entries, ``mode name\\0id``) and shared by every commit of the batch.

    A tree is split from the tree it is diffed against when it can be (a new version
    of a directory shares all but a few entries with its previous version: only the
    bytes between the shared start and end are split, see :func:`_derive`), so a diff
    costs what changed, not the size of the directory.
    """

    def __init__(
        self, pending: Mapping[ObjectId, bytes], fallback: ObjectStore, *, links: bool = False
    ) -> None:
        self._pending = pending
        self._fallback = fallback
        self._split: dict[ObjectId, _Parsed] = {EMPTY_TREE: _Parsed(b"", [], [0])}
        self.links: set[bytes] | None = set() if links else None
        """With ``links``: the ids named by the entries the diffs found new (gitlinks
        aside), which is every id a new tree links to that its parent's tree does not."""
        self.walked: set[ObjectId] = set()
        """With ``links``: the trees whose new entries went to :attr:`links`."""

    def use(self, fallback: ObjectStore) -> None:
        """Read missing trees through another unit's store (one unit per slice)."""
        self._fallback = fallback

    def _raw(self, oid: ObjectId) -> bytes:
        raw = self._pending.get(oid)
        if raw is None:
            obj = self._fallback.get_many([oid]).get(oid)
            if obj is None or obj.type != b"tree":
                raise InvalidInput(f"tree {oid.hex()} is missing")
            raw = obj.data
        return raw

    def _tree(self, oid: ObjectId) -> _Parsed:
        found = self._split.get(oid)
        if found is None:
            found = self._split[oid] = _parse(self._raw(oid))
        return found

    def entries(self, oid: ObjectId) -> list[bytes]:
        """The raw entries (``mode name\\0id``) of tree ``oid``."""
        return self._tree(oid).entries

    def changed(self, old: ObjectId | None, new: ObjectId) -> list[str]:
        """File paths (gitlinks and symlinks included) that differ between two trees, as
        ``diff_trees`` reports them (a file replaced by a directory: both sides)."""
        out: list[str] = []
        self._diff(b"", old, new, out)
        return out

    def _differing(self, old: ObjectId | None, new: ObjectId | None) -> tuple[Entries, Entries]:
        """The entries only ``old`` has and those only ``new`` has, split by name."""
        if new is None:
            assert old is not None
            return split_entries(self._tree(old).entries), {}
        if old is None:
            return {}, split_entries(self._tree(new).entries)
        if old == new:
            return {}, {}
        left_tree = self._tree(old)
        right_tree = self._split.get(new)
        left: list[bytes]
        right: list[bytes]
        if right_tree is None:
            derived = _derive(left_tree, self._raw(new))
            if derived is not None:
                self._split[new], left, right = derived
            else:
                right_tree = self._tree(new)
        if right_tree is not None:
            left, right = _middles(left_tree, right_tree)
        if len(left) > 8 or len(right) > 8:
            # Whole entries compared in C: only the entries that differ are split.
            a, b = set(left), set(right)
            return split_entries(a - b), split_entries(b - a)
        only_left = [e for e in left if e not in right]
        only_right = [e for e in right if e not in left]
        return split_entries(only_left), split_entries(only_right)

    def _diff(
        self, prefix: bytes, old: ObjectId | None, new: ObjectId | None, out: list[str]
    ) -> None:
        a, b = self._differing(old, new)
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

    def __init__(self, order: list[ObjectId], commits: Mapping[ObjectId, IndexCommit]) -> None:
        self.order = order
        self.commits = commits
        self.generation: dict[ObjectId, int] = {}
        self.trees: dict[ObjectId, ObjectId] = {}


def plan_index(unit: Unit, commits: Mapping[ObjectId, IndexCommit]) -> IndexPlan:
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
            oid, c.tree, c.parents, plan.generation[oid], c.author_time, c.committer_time
        )
        entries.append((entry, changed))
    unit.index.add_many(entries)

"""Which objects a fetch must send: the commit set from the commit index, then the trees
and blobs each new commit introduces against its first parent.

Commits: the ancestors of the wants that are not ancestors of the haves, computed with
``CommitIndexStore.ancestry`` bounded by generation (one query per side in the common
case; the bound is lowered only when a commit of the result has a parent below it), or,
for a shallow request, a breadth-first walk that stops at the shallow boundary.

Trees and blobs: for a commit whose first parent the client has (or that we send too),
only the entries that differ from that parent's tree, descending only into subtrees whose
ids differ; for a root commit or a shallow boundary commit, its whole tree. Trees are read
level by level in batches (``iter_bulk``, splices returned as such and rebuilt here from
their base when it was read just before, as the newer version at the same path mostly
is) and parsed once per request; each planned tree is handed to the plan's sink (the
pack writer's :class:`~govc_db.interop.sendpack.TreeEntries`) as it is planned. The result
can hold an object the client already has (a file reverted to an old version), never miss
one it needs.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from contextlib import closing
from typing import Protocol, cast

from govc_db.core.trees import EMPTY_TREE
from govc_db.errors import GovcError
from govc_db.objects import ObjectId
from govc_db.objects.lenient import lenient_tag_target
from govc_db.store.ports import IndexEntry, RawObject, Splice, Unit

__all__ = [
    "Entries",
    "Plan",
    "TreeSink",
    "plan_fetch",
    "raw_entries",
    "raw_entries_between",
    "split_entries",
]

_BATCH = 500
_KEEP_BYTES = 64 * 1024 * 1024


class TreeSink(Protocol):
    """Takes each tree as the planner adds it to ``Plan.trees``, in that order."""

    def add(
        self, oid: ObjectId, data: bytes | None, splice: Splice | None, base: ObjectId | None
    ) -> None:
        """Tree ``oid``: its content (None if no longer at hand), how the store keeps it
        (a splice of another tree, or None), and its planned delta base."""
        ...


class Plan:
    """Objects to send, in pack order (commits, tags, trees, blobs), with types, and for
    trees and blobs the version that replaced it at the same path (a delta base candidate).
    """

    def __init__(self) -> None:
        self.commits: list[ObjectId] = []
        self.tags: list[ObjectId] = []
        self.trees: list[ObjectId] = []
        self.blobs: list[ObjectId] = []
        self.seen: set[ObjectId] = set()
        self.bases: dict[ObjectId, ObjectId] = {}
        self.sink: TreeSink | None = None
        """What the planned trees were handed to as they were read (their pack entries
        are written then, see :class:`govc_db.interop.sendpack.TreeEntries`)."""

    def add(self, bucket: list[ObjectId], oid: ObjectId) -> bool:
        """Add ``oid`` to ``bucket`` unless already planned; whether it was new."""
        if oid in self.seen:
            return False
        self.seen.add(oid)
        bucket.append(oid)
        return True

    def ids(self) -> list[ObjectId]:
        """Everything, in pack order."""
        return [*self.commits, *self.tags, *self.trees, *self.blobs]


def _rows(unit: Unit, oids: Iterable[ObjectId]) -> dict[ObjectId, IndexEntry]:
    ids = list(oids)
    out: dict[ObjectId, IndexEntry] = {}
    for i in range(0, len(ids), _BATCH):
        out.update(unit.index.get_many(ids[i : i + _BATCH]))
    return out


def _commits_between(
    unit: Unit, wants: Sequence[ObjectId], haves: Sequence[ObjectId]
) -> dict[ObjectId, IndexEntry]:
    """Ancestors of ``wants`` that are not ancestors of ``haves`` (index rows)."""
    if not haves:
        return unit.index.ancestry(list(wants), 0)
    have_rows = _rows(unit, haves)
    if not have_rows:
        return unit.index.ancestry(list(wants), 0)
    bound = min(r.generation for r in have_rows.values())
    while True:
        ours = unit.index.ancestry(list(wants), bound)
        theirs = unit.index.ancestry(list(have_rows), bound)
        result = {k: v for k, v in ours.items() if k not in theirs}
        below = [
            p for row in result.values() for p in row.parents if p not in ours and p not in theirs
        ]
        if not below or bound == 0:
            return result
        # A parent under the bound: it may or may not be reachable from the haves.
        bound = max(0, min(r.generation for r in _rows(unit, below).values()) - 1)


def _commits_shallow(
    unit: Unit, wants: Sequence[ObjectId], shallow: set[ObjectId]
) -> dict[ObjectId, IndexEntry]:
    out: dict[ObjectId, IndexEntry] = {}
    frontier = list(wants)
    while frontier:
        rows = _rows(unit, frontier)
        nxt: list[ObjectId] = []
        for oid in frontier:
            row = rows.get(oid)
            if row is None:
                raise GovcError(f"commit {oid.hex()} is not indexed")
            out[oid] = row
            if oid not in shallow:
                nxt.extend(p for p in row.parents if p not in out)
        frontier = list(dict.fromkeys(nxt))
    return out


Entries = dict[bytes, tuple[bytes, ObjectId]]
"""name -> (mode text, id) of one tree."""


_RAW_ENTRY = re.compile(rb"[0-7]+ [^\0]+\0.{20}", re.DOTALL)


def raw_entries(raw: bytes) -> list[bytes]:
    """Every entry of a raw tree as its own bytes (``mode name\\0id``), in one regex pass
    in C; ``GovcError`` if malformed (the matches must tile the whole tree)."""
    parts: list[bytes] = _RAW_ENTRY.findall(raw)
    if sum(map(len, parts)) != len(raw):
        raise GovcError("corrupt tree object")
    return parts


def raw_entries_between(raw: bytes, start: int, end: int) -> list[bytes] | None:
    """The entries of ``raw[start:end]`` as :func:`raw_entries` splits them, or None
    when that span is not whole entries (no copy of the span is made)."""
    parts: list[bytes] = _RAW_ENTRY.findall(raw, start, end)
    return parts if sum(map(len, parts)) == end - start else None


def split_entries(entries: Iterable[bytes]) -> Entries:
    """``name -> (mode text, id)`` of raw entries (from :func:`raw_entries`)."""
    out: Entries = {}
    for e in entries:
        sp = e.index(b" ")
        out[e[sp + 1 : -21]] = (e[:sp], ObjectId(e[-20:]))
    return out


_DIR = (b"40000", b"040000")
_GITLINK = b"160000"


class _Trees:
    """Trees read while planning: their entries (parsed once) and, for the trees read
    last (``_KEEP_BYTES``), their content and how the store keeps them. A tree stored as
    a splice of another is rebuilt from that one's content when it is at hand, as the
    newer version at the same path mostly is (read just before it, at the same level)."""

    def __init__(self, unit: Unit) -> None:
        self._unit = unit
        self.parsed: dict[ObjectId, frozenset[bytes]] = {EMPTY_TREE: frozenset()}
        self.data: OrderedDict[ObjectId, tuple[bytes, Splice | None]] = OrderedDict()
        self._bytes = 0

    def load(self, oids: Iterable[ObjectId]) -> None:
        need = [o for o in dict.fromkeys(oids) if o not in self.parsed]
        chunks = [need[i : i + _BATCH] for i in range(0, len(need), _BATCH)]
        with closing(self._unit.objects.iter_bulk(chunks, spliced=True)) as reads:
            for chunk, found in zip(chunks, reads, strict=True):
                self._take(chunk, found)

    def _take(self, chunk: list[ObjectId], found: dict[ObjectId, RawObject | Splice]) -> None:
        data = self.data
        later: list[ObjectId] = []
        for oid in chunk:
            raw = found.get(oid)
            if raw is None or raw.type != b"tree":
                raise GovcError(f"tree {oid.hex()} is missing")
            if isinstance(raw, Splice):
                base = data.get(raw.base)
                if base is None:
                    later.append(oid)
                    continue
                self._add(oid, raw.apply(base[0]), raw)
            else:
                self._add(oid, raw.data, None)
        if later:  # bases not at hand: the store rebuilds them
            again = self._unit.objects.get_bulk(later)
            for oid in later:
                whole = again.get(oid)
                if whole is None or whole.type != b"tree":
                    raise GovcError(f"tree {oid.hex()} is missing")
                self._add(oid, whole.data, cast(Splice, found[oid]))

    def _add(self, oid: ObjectId, content: bytes, splice: Splice | None) -> None:
        self.parsed[oid] = frozenset(raw_entries(content))
        data = self.data
        data[oid] = (content, splice)
        self._bytes += len(content)
        while self._bytes > _KEEP_BYTES:
            _, old = data.popitem(last=False)
            self._bytes -= len(old[0])


def _new_objects(unit: Unit, pairs: list[tuple[ObjectId, ObjectId | None]], plan: Plan) -> None:
    """Add every tree/blob of each ``new`` tree that is not at the same place in ``old``."""
    trees = _Trees(unit)
    sink = plan.sink
    frontier = [(new, old) for new, old in pairs if new != old]
    bases = plan.bases
    seen = plan.seen
    planned_trees = plan.trees
    planned_blobs = plan.blobs
    parsed = trees.parsed
    data = trees.data
    successor: dict[ObjectId, ObjectId] = {}
    empty: Entries = {}
    while frontier:
        trees.load(t for pair in frontier for t in pair if t is not None)
        nxt: list[tuple[ObjectId, ObjectId | None]] = []
        for new, old in frontier:
            if new in seen:
                continue
            seen.add(new)
            planned_trees.append(new)
            # The base of a version is the one that replaced it, planned before it (the
            # walk goes newest first): recent versions go whole, as git packs them, so a
            # clone reads its tip without applying delta chains. No cycles: a base is
            # always planned before its target.
            later = successor.get(new)
            if later is not None and later in seen:
                bases[new] = later
            else:
                later = None
            if sink is not None:
                got = data.get(new)
                if got is None:
                    sink.add(new, None, None, None)
                else:
                    sink.add(new, got[0], got[1], later)
            now = parsed[new]
            # Whole entries compared in C: only the entries that differ are split.
            if old is not None:
                then = parsed[old]
                added = split_entries(now - then)
                before = split_entries(then - now)
                successor.setdefault(old, new)
            else:
                added, before = split_entries(now), empty
            sibling: ObjectId | None = None  # new files: a delta against the previous one
            for name in sorted(added) if len(added) > 1 else added:
                mode, oid = added[name]
                prior = before.get(name)
                if mode == _GITLINK or (prior is not None and prior[1] == oid):
                    continue
                is_dir = mode in _DIR
                base = None
                if prior is not None and (prior[0] in _DIR) == is_dir and prior[0] != _GITLINK:
                    base = prior[1]
                if is_dir:
                    if oid not in seen:
                        nxt.append((oid, base))
                    elif base is not None:
                        successor.setdefault(base, oid)
                    continue
                if base is not None:
                    successor.setdefault(base, oid)
                if oid not in seen:
                    seen.add(oid)
                    planned_blobs.append(oid)
                    later = successor.get(oid)
                    if later is not None and later in seen and later != oid:
                        bases[oid] = later
                    elif prior is None and sibling is not None:
                        bases[oid] = sibling
                    if prior is None:
                        sibling = oid
        frontier = nxt


def plan_fetch(
    unit: Unit,
    wants: Sequence[ObjectId],
    haves: Sequence[ObjectId],
    shallow: set[ObjectId],
    tags: dict[ObjectId, ObjectId],
    *,
    sink: TreeSink | None = None,
) -> Plan:
    """The objects to send for ``wants`` to a client holding ``haves``.

    ``tags`` maps peeled commit -> annotated tag id, for include-tag. ``sink`` is
    handed every planned tree as it is planned (``Plan.sink``).
    """
    plan = Plan()
    plan.sink = sink
    commit_wants: list[ObjectId] = []
    extra_trees: list[tuple[ObjectId, ObjectId | None]] = []
    pending = list(wants)
    while pending:
        found = unit.objects.get_bulk(pending)
        nxt: list[ObjectId] = []
        for oid in pending:
            raw = found.get(oid)
            if raw is None:
                raise GovcError(f"object {oid.hex()} is missing")
            if raw.type == b"commit":
                commit_wants.append(oid)
            elif raw.type == b"tag":
                if plan.add(plan.tags, oid):
                    nxt.append(lenient_tag_target(raw.data))
            elif raw.type == b"tree":
                extra_trees.append((oid, None))
            else:
                plan.add(plan.blobs, oid)
        pending = nxt
    if shallow:
        rows = _commits_shallow(unit, commit_wants, shallow)
    else:
        rows = _commits_between(unit, commit_wants, haves)
    order = sorted(rows.values(), key=lambda r: -r.generation)
    pairs: list[tuple[ObjectId, ObjectId | None]] = list(extra_trees)
    parent_trees = _rows(
        unit, {r.parents[0] for r in order if r.parents and r.parents[0] not in rows}
    )
    for row in order:
        plan.add(plan.commits, row.oid)
        if not row.parents or row.oid in shallow:
            pairs.append((row.tree, None))
            continue
        first = row.parents[0]
        base = rows.get(first) or parent_trees.get(first)
        pairs.append((row.tree, base.tree if base is not None else None))
    # Newest first, as git orders packs: each version's base is the one that replaced it.
    _new_objects(unit, pairs, plan)
    for commit, tag in tags.items():
        if commit in rows:
            plan.add(plan.tags, tag)
    return plan

"""fsck: check every object, every ref's graph, and the commit index.

The walk reads objects in id order, ``BATCH`` at a time, so memory holds one batch of
object data plus the id -> type map of the repository (ids only, as ``git fsck`` keeps).

Connectivity is checked on the links of *every* object, not only of those reachable
from a ref: every ref target must exist (a branch must name a commit), and every link
(commit -> tree and parents, tree -> entries, tag -> its declared target) must name an
object of the right type. By induction this proves the graph reachable from every ref
complete, in one linear pass with no second read of each object, and like ``git fsck``
it also reports broken links of unreachable objects.

A chunked large blob (``govc_db.storage.chunks``) is checked as a stream: every chunk
of its manifest must exist and hash to its id, and the whole content must hash to the
blob's id; memory holds one window of chunks. Chunks no manifest lists are not problems
(chunks are written in the transaction of the blob that lists them, so none is left by a
failed write; only deleting blobs can leave them, for a gc to sweep).

Every problem is collected, none stops the check. Refs and index rows are read after the
object list; on PostgreSQL (READ COMMITTED) a concurrent commit can add them in between,
so an id absent from the list is looked up again before it is reported missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import compress

from govc_db.core.trees import EMPTY_TREE
from govc_db.core.verify_trees import (
    DIR_TEXT,
    GITLINK_TEXT,
    Entries,
    Scanned,
    TreeMemo,
    changed_paths,
    scan_tree,
)
from govc_db.errors import GovcError
from govc_db.objects import (
    MODE_GITLINK,
    Commit,
    GitObject,
    ObjectId,
    Tag,
    Tree,
    hash_object,
    mode_type,
    parse_object,
)
from govc_db.objects.kinds import PARSEABLE_MODES
from govc_db.store.ports import IndexEntry, RawObject, Unit
from govc_db.types import VerifyReport

__all__ = ["BATCH", "TREE_MEMO_BYTES", "verify"]

#: Objects read per ``get_many``.
BATCH = 1000
#: Raw tree bytes kept scanned for the changed-path check (trees beyond it are re-read).
TREE_MEMO_BYTES = 256 * 1024 * 1024
#: Paths shown per changed-path mismatch (the full lists could be huge).
_SHOWN_PATHS = 5
#: Mode text of a tree entry -> the type of the object it must point at.
_EXPECTED_TYPE = {
    b"%o" % m: mode_type(m).encode("ascii") for m in PARSEABLE_MODES if m != MODE_GITLINK
}


_BLOB_MODES = frozenset(m for m, t in _EXPECTED_TYPE.items() if t == b"blob")


@dataclass(frozen=True, slots=True)
class _CommitFacts:
    """What the index check needs of a commit object (the message is not kept)."""

    tree: ObjectId
    parents: tuple[ObjectId, ...]
    author_time: int
    committer_time: int


@dataclass(frozen=True, slots=True)
class _Kinds:
    """The ids of every blob and every tree, for link checks by set operations."""

    blobs: set[ObjectId]
    trees: set[ObjectId]


def verify(unit: Unit, progress: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Recompute every object's id from its bytes; check that every ref reaches a complete
    graph (commits -> trees -> blobs, tags -> targets); check the commit index agrees with
    the commit objects (tree, parents, generation, changed paths). Collect all problems.

    ``progress(done, total)`` is called after each batch of objects and of commits.
    """
    problems: list[str] = []
    types: dict[ObjectId, bytes] = dict(unit.objects.iter_ids())
    # Large blobs stored in chunks are checked as streams (each chunk's hash, then the
    # whole content's), never read whole; they link to nothing.
    chunked = getattr(unit.objects, "chunked", None)
    large: set[ObjectId] = chunked()[1] if chunked is not None else set()
    for oid in sorted(large):
        problems.extend(unit.objects.check_chunked(oid))  # type: ignore[attr-defined]
    ids = [oid for oid in types if oid not in large]
    memo = TreeMemo(TREE_MEMO_BYTES)
    kinds = _Kinds(
        blobs={o for o, t in types.items() if t == b"blob"},
        trees={o for o, t in types.items() if t == b"tree"},
    )
    commits: dict[ObjectId, _CommitFacts] = {}
    checked = len(large)
    total = len(types)
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        found = _read(unit, chunk, problems)
        checked += len(chunk)
        for oid in chunk:
            raw = found.get(oid)
            if raw is not None:
                _check_object(oid, raw, types, kinds, problems, memo, commits)
        if progress is not None:
            progress(checked, total)
    facts = list(commits.items())
    for start in range(0, len(facts), BATCH):
        _check_index(unit, dict(facts[start : start + BATCH]), commits, types, memo, problems)
    _check_refs(unit, types, problems)
    _check_index_orphans(unit, types, problems)
    return VerifyReport(ok=not problems, problems=problems, objects_checked=checked)


def _read(
    unit: Unit, oids: Sequence[ObjectId], problems: list[str] | None
) -> dict[ObjectId, RawObject]:
    """The objects of ``oids``; one unreadable object (corrupt compression) must not hide
    the others, so a failed batch is retried one object at a time.
    """
    try:
        return unit.objects.get_many(oids)
    except GovcError:
        pass
    out: dict[ObjectId, RawObject] = {}
    for oid in oids:
        try:
            out[oid] = unit.objects.get(oid)
        except GovcError as exc:
            if problems is not None:
                problems.append(f"object {oid.hex()}: cannot be read: {exc}")
    return out


def _check_object(
    oid: ObjectId,
    raw: RawObject,
    types: dict[ObjectId, bytes],
    kinds: _Kinds,
    problems: list[str],
    memo: TreeMemo,
    commits: dict[ObjectId, _CommitFacts],
) -> None:
    """Hash, parse and link checks of one object; trees go to ``memo``, commits' facts
    to ``commits``.
    """
    kind = raw.type.decode("ascii", "replace")
    actual = hash_object(raw.type, raw.data)
    if actual != oid:
        problems.append(f"{kind} {oid.hex()}: hash mismatch: its content hashes to {actual.hex()}")
    if raw.type == b"blob":
        return  # any bytes are a blob
    if raw.type == b"tree":
        scanned = scan_tree(raw.data)
        if scanned is not None:
            if not _links_fine(scanned, kinds):
                _check_tree_links(oid, scanned.entries, types, problems)
            if scanned.has_dotgit(raw.data):
                # git fsck --strict: hasDotgit. Our writer refuses such paths; imports may not.
                problems.append(f"tree {oid.hex()}: has a '.git' entry")
            memo.put(oid, scanned.entries, len(raw.data))
            return
    try:
        obj = parse_object(raw.type, raw.data)
    except GovcError as exc:
        problems.append(f"{kind} {oid.hex()}: cannot be parsed: {exc}")
        return
    for what, target, expected in _links(obj):
        _check_link(f"{kind} {oid.hex()}", what, target, expected, types, problems)
    if isinstance(obj, Tree):  # only a tree the fast scan refused and Tree.parse accepted
        items = {i.name: (b"%o" % i.mode, i.oid) for i in obj.items}
        _check_tree_links(oid, items, types, problems)
        if any(name.lower() == b".git" for name in items):
            problems.append(f"tree {oid.hex()}: has a '.git' entry")
    if isinstance(obj, Commit):
        commits[oid] = _CommitFacts(
            obj.tree, tuple(obj.parents), obj.author.time, obj.committer.time
        )


def _check_tree_links(
    oid: ObjectId, entries: Entries, types: dict[ObjectId, bytes], problems: list[str]
) -> None:
    expected, known = _EXPECTED_TYPE, types.get
    bad = [
        (name, mode, target)
        for name, (mode, target) in entries.items()
        # a gitlink (submodule commit) lives in another repository
        if mode != GITLINK_TEXT and known(target) != expected[mode]
    ]
    for name, mode, target in bad:
        label = f"entry {name.decode('utf-8', 'backslashreplace')!r}"
        _check_link(f"tree {oid.hex()}", label, target, expected[mode], types, problems)


def _links_fine(scanned: Scanned, kinds: _Kinds) -> bool:
    """Whether every entry names an object of the right type (set operations, in C)."""
    modes, oids = scanned.modes, scanned.oids
    if DIR_TEXT not in modes and GITLINK_TEXT not in modes:
        return kinds.blobs.issuperset(oids)
    # compress/map keep the per-entry loop in C.
    return kinds.trees.issuperset(compress(oids, map(DIR_TEXT.__eq__, modes))) and (
        kinds.blobs.issuperset(compress(oids, map(_BLOB_MODES.__contains__, modes)))
    )


def _links(obj: GitObject) -> Iterable[tuple[str, ObjectId, bytes]]:
    """``(description, target, expected type)`` of every outgoing link of a commit or tag."""
    if isinstance(obj, Commit):
        yield "tree", obj.tree, b"tree"
        for i, parent in enumerate(obj.parents):
            yield f"parent {i}", parent, b"commit"
    elif isinstance(obj, Tag):
        yield "target", obj.object, obj.object_type


def _check_link(
    source: str,
    what: str,
    target: ObjectId,
    expected: bytes,
    types: dict[ObjectId, bytes],
    problems: list[str],
) -> None:
    actual = types.get(target)
    if actual is None:
        problems.append(f"{source}: {what}: {expected.decode()} {target.hex()} is missing")
    elif actual != expected:
        problems.append(
            f"{source}: {what}: {target.hex()} is a {actual.decode()}, "
            f"expected a {expected.decode()}"
        )


def _check_index(
    unit: Unit,
    batch: dict[ObjectId, _CommitFacts],
    commits: Mapping[ObjectId, _CommitFacts],
    types: dict[ObjectId, bytes],
    memo: TreeMemo,
    problems: list[str],
) -> None:
    """Compare the index rows of one batch of commits with the commit objects."""
    parent_ids = {p for c in batch.values() for p in c.parents}
    rows = unit.index.get_many([*batch, *(p for p in parent_ids if p not in batch)])
    load = _tree_loader(unit, memo)
    # The SQL index reads the recorded paths of the whole batch at once; any other
    # CommitIndexStore answers one commit at a time.
    many = getattr(unit.index, "changed_paths_many", None)
    recorded_all = many(list(batch)) if many is not None else None
    for oid, commit in batch.items():
        row = rows.get(oid)
        if row is None:
            problems.append(f"commit {oid.hex()}: missing from the commit index")
            continue
        _compare_row(oid, commit, row, rows, problems)
        recorded = (
            recorded_all.get(oid, {}) if recorded_all is not None else unit.index.changed_paths(oid)
        )
        _compare_paths(oid, commit, commits, types, load, recorded, problems)


def _tree_loader(
    unit: Unit, memo: TreeMemo
) -> Callable[[Sequence[ObjectId]], dict[ObjectId, Entries]]:
    """Scanned trees from the memo, the rest with one ``get_many`` (GovcError if unusable)."""

    def load(oids: Sequence[ObjectId]) -> dict[ObjectId, Entries]:
        out: dict[ObjectId, Entries] = {}
        missing = []
        for oid in oids:
            hit = {} if oid == EMPTY_TREE else memo.get(oid)
            if hit is None:
                missing.append(oid)
            else:
                out[oid] = hit
        if missing:
            found = unit.objects.get_many(missing)
            for oid in missing:
                raw = found.get(oid)
                scanned = scan_tree(raw.data) if raw is not None else None
                if raw is None or raw.type != b"tree" or scanned is None:
                    raise GovcError(f"tree {oid.hex()} is missing or corrupt")
                memo.put(oid, scanned.entries, len(raw.data))
                out[oid] = scanned.entries
        return out

    return load


def _compare_row(
    oid: ObjectId,
    commit: _CommitFacts,
    row: IndexEntry,
    rows: dict[ObjectId, IndexEntry],
    problems: list[str],
) -> None:
    name = f"commit {oid.hex()}: index row"
    if row.tree != commit.tree:
        problems.append(f"{name} has tree {row.tree.hex()}, the commit {commit.tree.hex()}")
    if row.parents != commit.parents:
        problems.append(
            f"{name} has parents [{', '.join(p.hex() for p in row.parents)}], "
            f"the commit [{', '.join(p.hex() for p in commit.parents)}]"
        )
    if row.author_time != commit.author_time or row.committer_time != commit.committer_time:
        problems.append(
            f"{name} has times {row.author_time}/{row.committer_time}, "
            f"the commit {commit.author_time}/{commit.committer_time}"
        )
    parent_rows = [rows.get(p) for p in commit.parents]
    # A parent without a row is reported on its own (missing object or missing row).
    if all(r is not None for r in parent_rows):
        expected = 1 + max((r.generation for r in parent_rows if r is not None), default=0)
        if row.generation != expected:
            problems.append(f"{name} has generation {row.generation}, expected {expected}")


def _compare_paths(
    oid: ObjectId,
    commit: _CommitFacts,
    commits: Mapping[ObjectId, _CommitFacts],
    types: dict[ObjectId, bytes],
    load: Callable[[Sequence[ObjectId]], Mapping[ObjectId, Entries]],
    recorded_paths: Mapping[int, set[str]],
    problems: list[str],
) -> None:
    """Recorded changed paths against a recomputation per parent position."""
    # Parent trees come from the parent commit objects (the truth), not from index rows
    # that may themselves be wrong.
    bases: list[ObjectId | None] = [
        commits[p].tree if p in commits else None for p in commit.parents
    ] or [None]
    if commit.parents and any(b is None for b in bases):
        return  # a missing or unparseable parent is reported on its own
    if any(types.get(t) != b"tree" for t in (commit.tree, *bases) if t is not None):
        return  # a missing or mistyped tree is reported as a broken link
    expected: dict[int, set[str]] = {}
    try:
        for pos, base in enumerate(bases):
            paths = changed_paths(load, base, commit.tree)
            if paths:
                expected[pos] = paths
    except GovcError as exc:
        problems.append(f"commit {oid.hex()}: cannot recompute its changed paths: {exc}")
        return
    recorded = {pos: paths for pos, paths in recorded_paths.items() if paths}
    for pos in sorted(expected.keys() | recorded.keys()):
        want, have = expected.get(pos, set()), recorded.get(pos, set())
        if want == have:
            continue
        missing, extra = sorted(want - have), sorted(have - want)
        detail = []
        if missing:
            detail.append(f"{len(missing)} not recorded {_few(missing)}")
        if extra:
            detail.append(f"{len(extra)} recorded but unchanged {_few(extra)}")
        problems.append(
            f"commit {oid.hex()}: changed paths against parent position {pos}: " + "; ".join(detail)
        )


def _few(paths: list[str]) -> str:
    more = ", ..." if len(paths) > _SHOWN_PATHS else ""
    return "(" + ", ".join(repr(p) for p in paths[:_SHOWN_PATHS]) + more + ")"


def _check_refs(unit: Unit, types: dict[ObjectId, bytes], problems: list[str]) -> None:
    refs = unit.refs.list_refs("")
    late = [t for t in refs.values() if t not in types]
    if late:
        # Objects committed after the object list was read (see the module docstring).
        for start in range(0, len(late), BATCH):
            for oid, raw in _read(unit, late[start : start + BATCH], None).items():
                types[oid] = raw.type
    for name, target in refs.items():
        kind = types.get(target)
        if kind is None:
            problems.append(f"ref {name}: target {target.hex()} is missing")
        elif name.startswith("refs/heads/") and kind != b"commit":
            problems.append(f"ref {name}: target {target.hex()} is a {kind.decode()}, not a commit")


def _check_index_orphans(unit: Unit, types: dict[ObjectId, bytes], problems: list[str]) -> None:
    orphans = [e.oid for e in unit.index.iter_all() if types.get(e.oid) != b"commit"]
    present = _read(unit, [o for o in orphans if o not in types], None)
    for oid in orphans:
        kind = types.get(oid) or (present[oid].type if oid in present else None)
        if kind is None:
            problems.append(f"commit index row {oid.hex()}: no such commit object")
        elif kind != b"commit":
            problems.append(f"commit index row {oid.hex()}: the object is a {kind.decode()}")

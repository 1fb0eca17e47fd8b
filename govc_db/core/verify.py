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

from collections.abc import Iterable, Sequence

from govc_db.core.diff import diff_trees
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
from govc_db.store.ports import IndexEntry, RawObject, Unit
from govc_db.types import VerifyReport

__all__ = ["BATCH", "verify"]

#: Objects read per ``get_many``.
BATCH = 500
#: Paths shown per changed-path mismatch (the full lists could be huge).
_SHOWN_PATHS = 5


def verify(unit: Unit) -> VerifyReport:
    """Recompute every object's id from its bytes; check that every ref reaches a complete
    graph (commits -> trees -> blobs, tags -> targets); check the commit index agrees with
    the commit objects (tree, parents, generation, changed paths). Collect all problems.
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
    checked = len(large)
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        found = _read(unit, chunk, problems)
        checked += len(chunk)
        commits: dict[ObjectId, Commit] = {}
        for oid in chunk:
            raw = found.get(oid)
            if raw is None:
                continue
            obj = _check_object(oid, raw, types, problems)
            if isinstance(obj, Commit):
                commits[oid] = obj
        if commits:
            _check_index(unit, commits, types, problems)
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
    oid: ObjectId, raw: RawObject, types: dict[ObjectId, bytes], problems: list[str]
) -> GitObject | None:
    """Hash, parse and link checks of one object; returns the parsed object or None."""
    kind = raw.type.decode("ascii", "replace")
    actual = hash_object(raw.type, raw.data)
    if actual != oid:
        problems.append(f"{kind} {oid.hex()}: hash mismatch: its content hashes to {actual.hex()}")
    try:
        obj = parse_object(raw.type, raw.data)
    except GovcError as exc:
        problems.append(f"{kind} {oid.hex()}: cannot be parsed: {exc}")
        return None
    for what, target, expected in _links(obj):
        _check_link(f"{kind} {oid.hex()}", what, target, expected, types, problems)
    if isinstance(obj, Tree):
        for item in obj.items:
            # git fsck --strict: hasDotgit. Our writer refuses such paths; imports may not.
            if item.name.lower() == b".git":
                problems.append(f"tree {oid.hex()}: has a '.git' entry")
    return obj


def _links(obj: GitObject) -> Iterable[tuple[str, ObjectId, bytes]]:
    """``(description, target, expected type)`` of every outgoing link of ``obj``."""
    if isinstance(obj, Commit):
        yield "tree", obj.tree, b"tree"
        for i, parent in enumerate(obj.parents):
            yield f"parent {i}", parent, b"commit"
    elif isinstance(obj, Tree):
        for item in obj.items:
            if item.mode == MODE_GITLINK:  # a submodule commit lives in another repository
                continue
            name = item.name.decode("utf-8", "backslashreplace")
            yield f"entry {name!r}", item.oid, mode_type(item.mode).encode("ascii")
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
    unit: Unit, commits: dict[ObjectId, Commit], types: dict[ObjectId, bytes], problems: list[str]
) -> None:
    """Compare the index rows of one batch of commits with the commit objects."""
    parent_ids = {p for c in commits.values() for p in c.parents}
    rows = unit.index.get_many([*commits, *(p for p in parent_ids if p not in commits)])
    trees = {oid: c.tree for oid, c in commits.items()}
    # Parent trees come from the parent commit objects (the truth), not from index rows
    # that may themselves be wrong.
    others = [p for p in parent_ids if p not in commits and types.get(p) == b"commit"]
    for start in range(0, len(others), BATCH):
        for oid, raw in _read(unit, others[start : start + BATCH], None).items():
            try:
                parent = parse_object(raw.type, raw.data)
            except GovcError:
                continue  # reported when the parent itself is checked
            if isinstance(parent, Commit):
                trees[oid] = parent.tree
    for oid, commit in commits.items():
        row = rows.get(oid)
        if row is None:
            problems.append(f"commit {oid.hex()}: missing from the commit index")
            continue
        _compare_row(oid, commit, row, rows, problems)
        _compare_paths(unit, oid, commit, trees, types, problems)


def _compare_row(
    oid: ObjectId,
    commit: Commit,
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
    if row.author_time != commit.author.time or row.committer_time != commit.committer.time:
        problems.append(
            f"{name} has times {row.author_time}/{row.committer_time}, "
            f"the commit {commit.author.time}/{commit.committer.time}"
        )
    parent_rows = [rows.get(p) for p in commit.parents]
    # A parent without a row is reported on its own (missing object or missing row).
    if all(r is not None for r in parent_rows):
        expected = 1 + max((r.generation for r in parent_rows if r is not None), default=0)
        if row.generation != expected:
            problems.append(f"{name} has generation {row.generation}, expected {expected}")


def _compare_paths(
    unit: Unit,
    oid: ObjectId,
    commit: Commit,
    trees: dict[ObjectId, ObjectId],
    types: dict[ObjectId, bytes],
    problems: list[str],
) -> None:
    """Recorded changed paths against a recomputation per parent position."""
    bases: list[ObjectId | None] = [trees.get(p) for p in commit.parents] or [None]
    if commit.parents and any(b is None for b in bases):
        return  # a missing or unparseable parent is reported on its own
    if any(types.get(t) != b"tree" for t in (commit.tree, *bases) if t is not None):
        return  # a missing or mistyped tree is reported as a broken link
    expected: dict[int, set[str]] = {}
    try:
        for pos, base in enumerate(bases):
            paths = {c.path for c in diff_trees(unit.objects, base, commit.tree)}
            if paths:
                expected[pos] = paths
    except GovcError as exc:
        problems.append(f"commit {oid.hex()}: cannot recompute its changed paths: {exc}")
        return
    recorded = {pos: paths for pos, paths in unit.index.changed_paths(oid).items() if paths}
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

"""merge, cherry-pick and revert of commits onto a branch (pure logic over the ports).

Each runs inside the caller's unit: the merged tree is computed (see
:mod:`govc_db.core.merge`), and only a clean result writes anything: blobs, trees,
the commit, its index rows, then the branch moves by compare-and-swap. A conflict
raises :class:`~govc_db.errors.MergeConflict` before any write, so nothing changes.

Several merge bases are merged into a virtual base first, oldest first, exactly as
``merge_ort_internal`` does (its inner merges use the labels "Temporary merge branch
1/2", wider conflict markers, and the base's version where a side cannot be chosen).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from govc_db.core import history
from govc_db.core.commit import head_tree
from govc_db.core.indexing import index_commit
from govc_db.core.merge import Blobs, RawConflict, TreeMergeResult, merge_with_blobs
from govc_db.core.trees import EMPTY_TREE
from govc_db.errors import GovcError, InvalidInput, MergeConflict, NotFound, RefConflict
from govc_db.objects import Commit, ObjectId, Signature, hash_object, mode_type, parse_object
from govc_db.store.ports import Unit
from govc_db.types import Conflict, TreeEntry

__all__ = [
    "MergeOutcome",
    "cherry_pick_commit",
    "default_merge_message",
    "merge_commits",
    "merge_into_branch",
    "public_conflicts",
    "revert_commit",
]

_TEMP1 = "Temporary merge branch 1"
_TEMP2 = "Temporary merge branch 2"
#: Nesting of virtual merge bases git would ever build is tiny; this only stops a
#: corrupt graph from looping.
_MAX_DEPTH = 64


@dataclass(frozen=True, slots=True)
class MergeOutcome:
    """What happened to the branch: ``kind`` is up-to-date, fast-forward or merge."""

    oid: ObjectId
    old_head: ObjectId
    kind: str


@dataclass(frozen=True, slots=True)
class _Virtual:
    tree: ObjectId
    parents: tuple[_Node, _Node]


_Node = ObjectId | _Virtual


def _tree_of(unit: Unit, node: _Node) -> ObjectId:
    return node.tree if isinstance(node, _Virtual) else head_tree(unit, node)


def _real(node: _Node) -> list[ObjectId]:
    out: list[ObjectId] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, _Virtual):
            stack.extend(n.parents)
        else:
            out.append(n)
    return out


def _bases_of(unit: Unit, a: _Node, b: _Node) -> list[ObjectId]:
    """Git's merge bases of two nodes, a virtual one standing for its real parents."""
    if not isinstance(a, _Virtual) and not isinstance(b, _Virtual):
        return history.merge_bases(unit.index, a, b)
    found: list[ObjectId] = []
    for x in _real(a):
        for y in _real(b):
            for c in history.merge_bases(unit.index, x, y):
                if c not in found:
                    found.append(c)
    keep = [
        c for c in found if not any(o != c and history.is_ancestor(unit.index, c, o) for o in found)
    ]
    rows = unit.index.get_many(keep)
    keep.sort(key=lambda c: -rows[c].committer_time)
    return keep


def _base_tree(unit: Unit, blobs: Blobs, bases: list[ObjectId], depth: int) -> ObjectId:
    """The tree to merge against: the one base, the empty tree, or a virtual base."""
    if depth > _MAX_DEPTH:
        raise GovcError("merge bases nest too deeply")
    if not bases:
        return EMPTY_TREE
    order: list[_Node] = list(reversed(bases))  # oldest first, as ort pops them
    merged = order[0]
    for nxt in order[1:]:
        inner = _base_tree(unit, blobs, _bases_of(unit, merged, nxt), depth + 1)
        res = merge_with_blobs(
            blobs, inner, _tree_of(unit, merged), _tree_of(unit, nxt), _TEMP1, _TEMP2, depth + 1
        )
        merged = _Virtual(res.tree, (merged, nxt))
    return _tree_of(unit, merged)


def merge_commits(
    unit: Unit,
    ours: ObjectId,
    theirs: ObjectId,
    *,
    base: ObjectId | None,
    ours_label: str,
    theirs_label: str,
    write: bool,
) -> TreeMergeResult:
    """``git merge-tree --write-tree ours theirs`` (``base``: use that commit as the only
    merge base). Unrelated histories without ``base`` are ``InvalidInput`` as in git."""
    blobs = Blobs(unit.objects)
    bases = [base] if base is not None else history.merge_bases(unit.index, ours, theirs)
    if not bases:
        raise InvalidInput("refusing to merge unrelated histories")
    # The trees of both sides and of a single base from one index read.
    rows = unit.index.get_many([ours, theirs, bases[0]])
    trees = {oid: rows[oid].tree if oid in rows else head_tree(unit, oid) for oid in (ours, theirs)}
    if len(bases) == 1:
        base_tree = rows[bases[0]].tree if bases[0] in rows else head_tree(unit, bases[0])
    else:
        base_tree = _base_tree(unit, blobs, bases, 0)
    result = merge_with_blobs(
        blobs, base_tree, trees[ours], trees[theirs], ours_label, theirs_label, 0
    )
    if write or result.clean:
        blobs.flush()
    return result


def _load(unit: Unit, oid: ObjectId) -> Commit:
    obj = parse_object(*unit.objects.get(oid))
    if not isinstance(obj, Commit):
        raise InvalidInput(f"{oid.hex()} is not a commit")
    return obj


class _Moved(RefConflict):
    """The branch moved between reading its head and the compare-and-swap."""


def _retrying(attempts: int, strict: bool, fn: Callable[[], MergeOutcome]) -> MergeOutcome:
    """Run ``fn`` again on the branch's new head when another writer moved it, as
    ``commit()`` re-applies its changes (never with ``expected_head``: strict CAS)."""
    attempt = 0
    while True:
        try:
            return fn()
        except _Moved:
            attempt += 1
            if strict or attempt > attempts:
                raise


def _write_commit(unit: Unit, ref: str, old: ObjectId, commit: Commit, reflog: str) -> ObjectId:
    """Store ``commit`` and its index rows once the branch moved to it (CAS)."""
    raw = commit.serialize()
    oid = hash_object(b"commit", raw)
    if not unit.refs.set_if_equals(ref, old, oid, reflog):
        raise _Moved(f"{ref} moved during the merge")
    unit.objects.put(b"commit", raw)
    index_commit(unit.objects, unit.index, oid, commit)
    return oid


def _branch_head(unit: Unit, ref: str, expected: ObjectId | None) -> ObjectId:
    head = unit.refs.get(ref)
    if head is None:
        raise NotFound(f"branch {ref.removeprefix('refs/heads/')!r} not found")
    if expected is not None and head != expected:
        raise RefConflict(f"{ref} is at {head.hex()}, not the expected {expected.hex()}")
    return head


def _side(path: str, ver: tuple[int, ObjectId | None] | None) -> TreeEntry | None:
    if ver is None or ver[1] is None:
        return None
    return TreeEntry(path.rsplit("/", 1)[-1], path, ver[0], ver[1].hex(), mode_type(ver[0]))


def public_conflicts(raw: list[RawConflict]) -> list[Conflict]:
    """The API's :class:`~govc_db.types.Conflict` values of a merge's conflicts."""
    out: list[Conflict] = []
    for c in raw:
        path = c.path.decode("utf-8", "surrogateescape")
        out.append(
            Conflict(path, c.kind, _side(path, c.base), _side(path, c.ours), _side(path, c.theirs))
        )
    return out


def _raise_conflicts(conflicts: list[RawConflict], what: str) -> None:
    public = public_conflicts(conflicts)
    shown = ", ".join(f"{c.path} ({c.kind})" for c in public[:5])
    more = f" and {len(public) - 5} more" if len(public) > 5 else ""
    if not public:
        shown = "directory renames that cannot be applied (renamed to several places)"
    raise MergeConflict(f"{what}: conflicts in {shown}{more}", conflicts=public)


def default_merge_message(unit: Unit, rev: str, branch: str) -> bytes:
    """Git's ``fmt-merge-msg`` wording: ``Merge branch 'x'`` / ``Merge tag 'v'`` /
    ``Merge commit 'id'``, plus `` into <branch>`` unless that is main or master."""
    if rev.startswith("refs/heads/") or unit.refs.get("refs/heads/" + rev) is not None:
        text = f"Merge branch '{rev.removeprefix('refs/heads/')}'"
    elif rev.startswith("refs/tags/") or unit.refs.get("refs/tags/" + rev) is not None:
        text = f"Merge tag '{rev.removeprefix('refs/tags/')}'"
    else:
        text = f"Merge commit '{rev}'"
    if branch not in ("main", "master"):
        text += f" into {branch}"
    return (text + "\n").encode("utf-8", "surrogateescape")


def merge_into_branch(
    unit: Unit,
    *,
    branch: str,
    rev: str,
    theirs: ObjectId,
    author: Signature,
    committer: Signature,
    message: Callable[[], bytes],
    expected_head: ObjectId | None,
    fast_forward: bool,
    attempts: int = 3,
) -> MergeOutcome:
    """Merge commit ``theirs`` into ``branch``; see the module docstring."""
    ref = "refs/heads/" + branch

    def once() -> MergeOutcome:
        head = _branch_head(unit, ref, expected_head)
        return _merge_once(
            unit, ref, head, branch, rev, theirs, author, committer, message, fast_forward
        )

    return _retrying(attempts, expected_head is not None, once)


def _merge_once(
    unit: Unit,
    ref: str,
    head: ObjectId,
    branch: str,
    rev: str,
    theirs: ObjectId,
    author: Signature,
    committer: Signature,
    message: Callable[[], bytes],
    fast_forward: bool,
) -> MergeOutcome:
    if history.is_ancestor(unit.index, theirs, head):
        return MergeOutcome(head, head, "up-to-date")
    if fast_forward and history.is_ancestor(unit.index, head, theirs):
        if not unit.refs.set_if_equals(ref, head, theirs, f"merge {rev}: Fast-forward"):
            raise _Moved(f"branch {branch!r} moved during the merge")
        return MergeOutcome(theirs, head, "fast-forward")
    result = merge_commits(
        unit, head, theirs, base=None, ours_label=branch, theirs_label=rev, write=False
    )
    if not result.clean:
        _raise_conflicts(result.conflicts, f"merging {rev} into {branch}")
    commit = Commit(result.tree, (head, theirs), author, committer, message())
    oid = _write_commit(unit, ref, head, commit, f"merge {rev}: Merge made by the 'ort' strategy.")
    return MergeOutcome(oid, head, "merge")


def _subject(commit: Commit) -> str:
    return commit.message.split(b"\n", 1)[0].decode("utf-8", "surrogateescape")


def _pick(
    unit: Unit,
    branch: str,
    picked: ObjectId,
    *,
    reverse: bool,
    make: Callable[[Commit, ObjectId], Commit],
    attempts: int,
) -> MergeOutcome:
    return _retrying(
        attempts, False, lambda: _pick_once(unit, branch, picked, reverse=reverse, make=make)
    )


def _pick_once(
    unit: Unit,
    branch: str,
    picked: ObjectId,
    *,
    reverse: bool,
    make: Callable[[Commit, ObjectId], Commit],
) -> MergeOutcome:
    ref = "refs/heads/" + branch
    head = _branch_head(unit, ref, None)
    original = _load(unit, picked)
    if len(original.parents) > 1:
        raise InvalidInput(f"{picked.hex()} is a merge commit; picking one is not supported")
    parent_tree = head_tree(unit, original.parents[0]) if original.parents else EMPTY_TREE
    short = picked.hex()[:7]
    label = f"{short} ({_subject(original)})"
    if reverse:
        base, theirs, theirs_label = original.tree, parent_tree, f"parent of {label}"
    else:
        base, theirs, theirs_label = parent_tree, original.tree, label
    blobs = Blobs(unit.objects)
    ours_tree = head_tree(unit, head)
    result = merge_with_blobs(blobs, base, ours_tree, theirs, "HEAD", theirs_label, 0)
    what = ("reverting " if reverse else "cherry-picking ") + short
    if not result.clean:
        _raise_conflicts(result.conflicts, what)
    if result.tree == ours_tree:
        raise InvalidInput(f"{what}: the result is empty (the change is already there)")
    blobs.flush()
    commit = make(original, result.tree)
    commit = Commit(commit.tree, (head,), commit.author, commit.committer, commit.message)
    kind = "revert" if reverse else "cherry-pick"
    oid = _write_commit(unit, ref, head, commit, f"{kind}: {_subject(commit)}")
    return MergeOutcome(oid, head, kind)


def cherry_pick_commit(
    unit: Unit,
    branch: str,
    picked: ObjectId,
    *,
    author: Signature | None,
    committer: Signature | None,
    message: bytes | None,
    attempts: int = 3,
) -> MergeOutcome:
    """Apply the change ``picked`` made to its parent onto ``branch``, keeping its
    message and author unless given (committer: given, else the author used)."""

    def make(original: Commit, tree: ObjectId) -> Commit:
        who = author if author is not None else original.author
        by = committer if committer is not None else (author or original.committer)
        return Commit(tree, (), who, by, original.message if message is None else message)

    return _pick(unit, branch, picked, reverse=False, make=make, attempts=attempts)


def revert_commit(
    unit: Unit,
    branch: str,
    picked: ObjectId,
    *,
    author: Signature,
    committer: Signature | None,
    message: bytes | None,
    attempts: int = 3,
) -> MergeOutcome:
    """Undo the change ``picked`` made, as a new commit on ``branch``."""

    def make(original: Commit, tree: ObjectId) -> Commit:
        text = message
        if text is None:
            subject = original.message.split(b"\n", 1)[0]
            text = b'Revert "%s"\n\nThis reverts commit %s.\n' % (
                subject,
                picked.hex().encode(),
            )
        return Commit(tree, (), author, committer or author, text)

    return _pick(unit, branch, picked, reverse=True, make=make, attempts=attempts)

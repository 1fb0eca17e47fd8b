"""commit(): build the new tree along the changed paths, write the commit and its index
rows, and move the branch by compare-and-swap, all in the caller's unit (transaction).

Without ``expected_head`` a lost race is handled like a rebase: when the commits that
moved the branch touched paths disjoint from ours, the change set is re-applied on the
new head; when they overlap, ``RefConflict``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from govc_db.core.diff import diff_trees
from govc_db.core.indexing import index_commit
from govc_db.core.trees import EMPTY_TREE, build_tree_with_paths
from govc_db.errors import GovcError, InvalidInput, NotFound, NothingToCommit, RefConflict
from govc_db.objects import Commit, ObjectId, Signature, hash_object
from govc_db.objects.lenient import parse_lenient
from govc_db.store.ports import Unit
from govc_db.types import File

__all__ = ["CommitResult", "commit_changes", "head_tree", "paths_overlap"]


@dataclass(frozen=True, slots=True)
class CommitResult:
    """The new commit and the head it replaced (None for a branch's first commit)."""

    oid: ObjectId
    old_head: ObjectId | None


def head_tree(unit: Unit, commit_oid: ObjectId) -> ObjectId:
    """The root tree of a commit, from the index row (or the object if not indexed)."""
    entry = unit.index.get_many([commit_oid]).get(commit_oid)
    if entry is not None:
        return entry.tree
    obj = parse_lenient(*unit.objects.get(commit_oid))
    if not isinstance(obj, Commit):
        raise GovcError(f"{commit_oid.hex()} is not a commit")
    return obj.tree


def paths_overlap(ours: Iterable[str], theirs: Iterable[str]) -> bool:
    """True when a path of one set equals, contains or lies inside a path of the other."""
    mine = set(ours)
    prefixes: set[str] = set()
    for p in mine:
        parts = p.split("/")
        prefixes.update("/".join(parts[:i]) for i in range(1, len(parts)))
    for q in theirs:
        if q in mine or q in prefixes:
            return True
        parts = q.split("/")
        if any("/".join(parts[:i]) in mine for i in range(1, len(parts))):
            return True
    return False


def commit_changes(
    unit: Unit,
    *,
    default_branch: str,
    branch: str,
    changes: Mapping[str, File | None],
    message: bytes,
    author: Signature,
    committer: Signature,
    expected_head: ObjectId | None,
    allow_empty: bool,
    rebase_attempts: int,
    parents: tuple[ObjectId, ...] | None = None,
) -> CommitResult:
    """Commit ``changes`` onto ``branch`` inside ``unit``; see the module docstring.

    ``parents`` (plumbing for merge commits): the new commit's exact parents; the changes
    apply to the first parent's tree, the branch head (if any) must be one of them, and a
    lost race is a ``RefConflict`` (never re-applied on another head).
    """
    ref = "refs/heads/" + branch
    head = unit.refs.get(ref)
    if expected_head is not None and head != expected_head:
        raise RefConflict(
            f"branch {branch!r} is at {head.hex() if head else 'nothing'}, "
            f"not the expected {expected_head.hex()}"
        )
    if head is None and (branch != default_branch or unit.refs.list_refs("refs/heads/")):
        raise NotFound(f"branch {branch!r} not found")
    if parents is not None:
        if expected_head is not None and head != expected_head:
            raise RefConflict(f"branch {branch!r} is not at the expected head")
        return _commit_with_parents(
            unit, ref, head, parents, changes, message, author, committer, allow_empty
        )
    summary = message.split(b"\n", 1)[0].decode("utf-8", "replace")
    reflog_message = ("commit: " if head else "commit (initial): ") + summary
    attempt = 0
    while True:
        base_tree = head_tree(unit, head) if head is not None else None
        # New blobs and trees go first: content-addressed, they are merely unreferenced
        # (as in git) should the race be lost. The commit object and its index rows are
        # written only once the branch points at it, so a lost race leaves no commit
        # behind, and no savepoint (two round trips) is needed.
        tree, paths = build_tree_with_paths(unit.objects, base_tree, changes)
        if not allow_empty and tree == (base_tree or EMPTY_TREE):
            raise NothingToCommit(
                "nothing to commit: the tree equals the parent's (pass allow_empty=True)"
            )
        commit = Commit(tree, (head,) if head else (), author, committer, message)
        raw = commit.serialize()
        oid = hash_object(b"commit", raw)
        if unit.refs.set_if_equals(ref, head, oid, reflog_message):
            unit.objects.put(b"commit", raw, head)  # the parent: a delta hint
            index_commit(unit.objects, unit.index, oid, commit, paths)
            return CommitResult(oid, head)
        # Lost the race: someone else moved the branch after we read it.
        current = unit.refs.get(ref)
        if expected_head is not None or current is None:
            raise RefConflict(f"branch {branch!r} moved during the commit")
        attempt += 1
        if attempt > rebase_attempts:
            raise RefConflict(f"branch {branch!r} kept moving; gave up after {attempt} attempts")
        current_tree = head_tree(unit, current)
        theirs = [c.path for c in diff_trees(unit.objects, base_tree, current_tree)]
        if paths_overlap(changes.keys(), theirs):
            raise RefConflict(f"branch {branch!r} moved and the new commits touch the same paths")
        head = current


def _commit_with_parents(
    unit: Unit,
    ref: str,
    head: ObjectId | None,
    parents: tuple[ObjectId, ...],
    changes: Mapping[str, File | None],
    message: bytes,
    author: Signature,
    committer: Signature,
    allow_empty: bool,
) -> CommitResult:
    rows = unit.index.get_many(parents)
    for p in parents:
        if p not in rows:
            raise NotFound(f"parent {p.hex()} is not a commit of this repository")
    if head is not None and head not in parents:
        raise InvalidInput(
            f"the branch head {head.hex()} must be one of the parents (commit() only moves "
            "a branch forward)"
        )
    base_tree = rows[parents[0]].tree if parents else None
    tree, paths = build_tree_with_paths(unit.objects, base_tree, changes)
    if not allow_empty and len(parents) < 2 and tree == (base_tree or EMPTY_TREE):
        raise NothingToCommit(
            "nothing to commit: the tree equals the parent's (pass allow_empty=True)"
        )
    commit = Commit(tree, parents, author, committer, message)
    raw = commit.serialize()
    oid = hash_object(b"commit", raw)
    summary = message.split(b"\n", 1)[0].decode("utf-8", "replace")
    kind = "commit (merge): " if len(parents) > 1 else "commit: "
    if not unit.refs.set_if_equals(ref, head, oid, kind + summary):
        raise RefConflict(f"{ref} moved during the commit")
    unit.objects.put(b"commit", raw)
    # The change set applies to the first parent's tree (the empty tree for a root).
    index_commit(unit.objects, unit.index, oid, commit, paths)
    return CommitResult(oid, head)

"""Revision parsing: names, refs, HEAD, full/abbreviated ids, ``~N``, ``^``, ``^N``."""

from __future__ import annotations

from govc_db.objects import ObjectId
from govc_db.store.ports import CommitIndexStore, ObjectStore, RefStore

__all__ = ["resolve_commit", "resolve_object"]


def resolve_object(
    objects: ObjectStore, refs: RefStore, index: CommitIndexStore, default_branch: str, rev: str
) -> ObjectId:
    """Resolve ``rev`` to an object id without peeling the final result (an annotated tag
    name gives the tag object). Grammar (DESIGN.md § Revisions): ``HEAD`` (= the default
    branch), branch or tag short name (branch wins, as in git: refs/heads before
    refs/tags... check git's order: git tries refs/<name>, refs/tags/<name>,
    refs/heads/<name>; follow git), ``refs/...``, full 40-hex or unique abbreviated
    (>= 4 hex) id, followed by any sequence of ``~``, ``~N``, ``^``, ``^N`` (``^0`` peels
    to the commit). Navigation peels annotated tags to their commit first.
    Unknown -> ``NotFound``; malformed or ambiguous -> ``InvalidInput``.
    """
    raise NotImplementedError


def resolve_commit(
    objects: ObjectStore, refs: RefStore, index: CommitIndexStore, default_branch: str, rev: str
) -> ObjectId:
    """Like ``resolve_object`` but peel annotated tags to the commit; a rev naming a tree or
    blob is ``InvalidInput``.
    """
    raise NotImplementedError

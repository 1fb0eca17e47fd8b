"""History over the commit index: log (git rev-list order), merge-base, ancestry."""

from __future__ import annotations

from collections.abc import Iterator

from govc_db.objects import ObjectId
from govc_db.store.ports import CommitIndexStore

__all__ = ["is_ancestor", "log", "merge_base"]


def log(
    index: CommitIndexStore, start: ObjectId, path: str | None = None, limit: int | None = None
) -> Iterator[ObjectId]:
    """Commit ids in exactly the order of ``git rev-list START [-- PATH]``."""
    raise NotImplementedError


def merge_base(index: CommitIndexStore, a: ObjectId, b: ObjectId) -> ObjectId | None:
    """The best common ancestor (as ``git merge-base A B``), or None."""
    raise NotImplementedError


def is_ancestor(index: CommitIndexStore, a: ObjectId, b: ObjectId) -> bool:
    """True when ``a`` is ``b`` or an ancestor of ``b`` (``git merge-base --is-ancestor``)."""
    raise NotImplementedError

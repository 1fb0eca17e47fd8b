"""fsck: check every object, every ref's graph, and the commit index."""

from __future__ import annotations

from govc_db.store.ports import Unit
from govc_db.types import VerifyReport

__all__ = ["verify"]


def verify(unit: Unit) -> VerifyReport:
    """Recompute every object's id from its bytes; check that every ref reaches a complete
    graph (commits -> trees -> blobs, tags -> targets); check the commit index agrees with
    the commit objects (tree, parents, generation, changed paths). Collect all problems.
    """
    raise NotImplementedError

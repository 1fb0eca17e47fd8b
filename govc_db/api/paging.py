"""Streamed log and walk: the port a walk reads, switched from the first unit's to one
whose every read is a short unit of its own (commits, index rows and trees never
change, so reading them outside the first unit's transaction is safe), so the caller's
iteration holds a page, never the whole history or tree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from govc_db.api.repository import Repository

__all__ = ["PAGE", "PagedIndex", "PagedObjects", "Relay"]

T = TypeVar("T")

#: Commits (files) per page of a streamed log (walk).
PAGE = 2000


class Relay:
    """The port a streamed log or walk reads: the first unit's, then a paged one."""

    def __init__(self) -> None:
        self.target: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["target"], name)


class PagedIndex:
    """Commit-index reads, each in a short read unit of its own (rows never change)."""

    def __init__(self, repo: Repository) -> None:
        self._repo = repo

    def _read(self, fn: Callable[[Any], T]) -> T:
        return self._repo._run("log", lambda u: fn(u.index))

    def get_many(self, oids: Any) -> Any:
        """Index rows of ``oids``."""
        ids = list(oids)
        return self._read(lambda i: i.get_many(ids))

    def ancestry(self, oids: Any, min_generation: int = 0) -> Any:
        """``oids`` and their ancestors down to ``min_generation``."""
        return self._read(lambda i: i.ancestry(list(oids), min_generation))

    def window(self, lo: int, hi: int) -> Any:
        """Every commit with a generation in ``[lo, hi]``."""
        return self._read(lambda i: i.window(lo, hi))

    def touching(self, path: str) -> Any:
        """Commits whose changes touch ``path``."""
        return self._read(lambda i: i.touching(path))


class PagedObjects:
    """Object reads (trees, for a streamed walk), each in a short read unit of its own."""

    def __init__(self, repo: Repository) -> None:
        self._repo = repo

    def get_many(self, oids: Any) -> Any:
        """The objects among ``oids``."""
        ids = list(oids)
        return self._repo._run("walk", lambda u: u.objects.get_many(ids))

"""The one error tree of govc_db.

Every exception the library raises is a :class:`GovcError`. Driver errors are
translated once, at the store boundary, with ``raise ... from exc`` so the
cause stays chained but no driver type, SQL text or password reaches a caller.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from govc_db.types import Conflict

__all__ = [
    "AlreadyExists",
    "CircuitOpen",
    "Forbidden",
    "GovcError",
    "InvalidInput",
    "MergeConflict",
    "NotFound",
    "Overloaded",
    "NothingToCommit",
    "RateLimited",
    "RefConflict",
    "StoreUnavailable",
    "Unauthenticated",
]


class GovcError(Exception):
    """Base class of every error raised by govc_db."""


class InvalidInput(GovcError, ValueError):
    """The caller passed something malformed: a bad path, ref name, revision or value."""


class NotFound(GovcError, LookupError):
    """A repository, ref, revision, path or object does not exist."""


class AlreadyExists(GovcError):
    """The thing being created (repository, branch, tag) already exists."""


class RefConflict(GovcError):
    """A compare-and-swap on a ref lost: the ref no longer has the expected value."""


class MergeConflict(GovcError):
    """Two changes touched the same paths and cannot be combined automatically;
    ``conflicts`` lists every conflicted path (nothing was changed)."""

    def __init__(
        self, message: str = "merge conflict", *, conflicts: Iterable[Conflict] = ()
    ) -> None:
        super().__init__(message)
        self.conflicts: list[Conflict] = list(conflicts)


class StoreUnavailable(GovcError):
    """The database cannot be reached or keeps failing after the retry policy ran out."""


class RateLimited(GovcError):
    """The API optimizer refused the call because a rate limit was exceeded."""

    def __init__(self, message: str, *, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# --- http ---


class Overloaded(StoreUnavailable):
    """The concurrency limiter's queue timed out: too many operations in flight."""

    def __init__(self, message: str, *, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CircuitOpen(StoreUnavailable):
    """The circuit breaker is open: the database kept failing, so calls fail fast."""

    def __init__(self, message: str, *, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unauthenticated(GovcError):
    """No valid credentials were presented (HTTP 401)."""


class Forbidden(GovcError):
    """The credentials presented do not allow this action (HTTP 403)."""


class NothingToCommit(InvalidInput):
    """A commit whose tree equals its parent's, without ``allow_empty=True``."""

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
    "AuthenticationFailed",
    "CircuitOpen",
    "ConnectionRefused",
    "DatabaseMissing",
    "DatabaseTimeout",
    "Forbidden",
    "GovcError",
    "InvalidInput",
    "MergeConflict",
    "NotFound",
    "Overloaded",
    "NothingToCommit",
    "RateLimited",
    "ReadOnlyDatabase",
    "RefConflict",
    "SchemaNotReady",
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


class SchemaNotReady(GovcError):
    """The database has no govc_db schema, or an older one than this version needs: a
    call failed on a missing table. ``store.upgrade()`` (or ``govc-db init``) fixes it."""


class StoreUnavailable(GovcError):
    """The database cannot be reached or keeps failing after the retry policy ran out."""


class DatabaseTimeout(StoreUnavailable, TimeoutError):
    """A server-side timeout cancelled the statement (``statement_timeout``,
    ``lock_timeout``), or no pooled connection became free within ``pool_timeout``.
    Not retried: the same statement would time out again."""


class ReadOnlyDatabase(StoreUnavailable):
    """The database refused a write because it is read-only: a standby, or
    ``default_transaction_read_only=on``. Not retried."""


class AuthenticationFailed(StoreUnavailable):
    """The database refused the credentials (wrong password, unknown role, no
    ``pg_hba.conf`` entry). Not retried; the message never contains the password."""


class DatabaseMissing(StoreUnavailable):
    """The database named in the URL does not exist on the server. Not retried."""


class ConnectionRefused(StoreUnavailable):
    """Nothing accepts connections at the database's address (server down or
    restarting). Retried within ``Settings.retry_budget``, then raised."""


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

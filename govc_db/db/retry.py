"""What the transaction manager may retry, and how long it waits before it does.

Decisions use SQLSTATEs and exception classes, never message text: 40001
(serialization_failure) and 40P01 (deadlock_detected) mean "re-run the transaction";
a lost connection means "re-run it on a new one" (when it was lost before COMMIT).
A translated :class:`~govc_db.errors.StoreUnavailable` is looked through to the driver
error it chains, so a failure inside a nested unit is still classified by the outer one.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable

from sqlalchemy import exc as sa_exc

from govc_db.db.errors import PREPARED_CONFLICT_SQLSTATES, connect_failure, sqlstate
from govc_db.db.pool import is_disconnect_sqlstate
from govc_db.errors import InvalidInput, StoreUnavailable

__all__ = [
    "MAX_RETRIES",
    "check_retries",
    "full_jitter",
    "is_disconnect",
    "is_read_only_error",
    "retry_reason",
]

#: Upper bound of ``retries`` anywhere (``Settings.retry_attempts`` allows 100 attempts).
MAX_RETRIES = 99

_REASONS = {"40001": "serialization", "40P01": "deadlock"}
_SQLITE_READONLY = 8
# read_only_sql_transaction, query_canceled, lock_not_available.
_NEVER_RETRIED = frozenset({"25006", "57014", "55P03"})


def check_retries(value: object) -> int:
    """``value`` as a retry count (0-99); ``InvalidInput`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RETRIES:
        raise InvalidInput(f"retries must be an int from 0 to {MAX_RETRIES}, got {value!r}")
    return value


def full_jitter(retry: int, base: float, cap: float, rng: Callable[[], float]) -> float:
    """Delay before retry number ``retry`` (1-based): ``rng() * min(cap, base * 2**(retry-1))``.

    Full jitter (rather than a fixed exponential delay) spreads writers that failed
    together, so they do not collide again on the next attempt.
    """
    return min(cap, base * 2.0 ** min(retry - 1, 60)) * rng()


def _driver_error(exc: BaseException) -> BaseException | None:
    """The driver-level error behind ``exc``: itself, or the cause a translation chained."""
    if isinstance(exc, sa_exc.SQLAlchemyError):
        return exc
    if isinstance(exc, StoreUnavailable) and isinstance(exc.__cause__, sa_exc.SQLAlchemyError):
        return exc.__cause__
    return None


def is_disconnect(exc: BaseException) -> bool:
    """Whether ``exc`` (a driver error or its translation) means the connection is gone."""
    err = _driver_error(exc)
    if err is None:
        return False
    if isinstance(err, sa_exc.DBAPIError) and err.connection_invalidated:
        return True
    code = sqlstate(err)
    if code is not None:
        return is_disconnect_sqlstate(code)
    orig = getattr(err, "orig", None)
    # psycopg raises its base OperationalError (no SQLSTATE) only on the client side of a
    # connection failure: refused, reset, closed by the server; ConnectionTimeout likewise.
    # psycopg is imported only by a PostgreSQL engine: if it is not loaded, the error
    # cannot be one of its (and SQLite-only processes never pay for importing it).
    psycopg = sys.modules.get("psycopg")
    if psycopg is None:
        return False
    return type(orig) is psycopg.OperationalError or isinstance(
        orig, psycopg.errors.ConnectionTimeout
    )


def retry_reason(exc: BaseException) -> str | None:
    """``"serialization"``, ``"deadlock"``, ``"disconnect"``, ``"prepared"`` or None (do
    not retry).

    Only what a new attempt can fix is retried: a conflict, a lost or refused connection
    (a restarting server), a prepared-statement conflict behind a pooler (the engine has
    switched preparation off by then, see db.prepared). Never retried: a read-only
    database (25006), a statement or lock timeout (57014, 55P03), refused credentials
    or a missing database: the next attempt would fail the same way.
    """
    err = _driver_error(exc)
    if err is None:
        return None
    code = sqlstate(err)
    if code in _REASONS:
        return _REASONS[code]
    if code in PREPARED_CONFLICT_SQLSTATES:
        return "prepared"
    if code in _NEVER_RETRIED:
        return None
    failure = connect_failure(err)
    if failure is not None and failure[0] != "refused":
        return None
    return "disconnect" if is_disconnect(err) else None


def is_read_only_error(exc: BaseException) -> bool:
    """A write refused by a read-only transaction (PostgreSQL 25006, SQLITE_READONLY).

    For a transaction the caller asked to be read-only this is the caller's mistake, not a
    failover, so it is reported and never retried.
    """
    err = _driver_error(exc)
    if err is None:
        return False
    if sqlstate(err) == "25006":
        return True
    orig = getattr(err, "orig", None)
    return (
        isinstance(orig, sqlite3.Error)
        and (getattr(orig, "sqlite_errorcode", 0) or 0) & 0xFF == _SQLITE_READONLY
    )

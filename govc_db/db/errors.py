"""Translation of driver errors into :mod:`govc_db.errors`, done once at the store boundary.

Decisions use SQLSTATE codes and exception classes, never message text, and the
messages produced never contain SQL or connection parameters.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc as sa_exc

from govc_db.errors import GovcError, StoreUnavailable

__all__ = ["RETRYABLE_SQLSTATES", "sqlstate", "translate", "translating"]

#: serialization_failure, deadlock_detected: the whole transaction may be retried.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
# Classes 08 (connection exception), 57P0x (admin shutdown / crash / cannot connect now),
# 53 (insufficient resources) and 25006 (read-only transaction after a failover).
_UNAVAILABLE_PREFIXES = ("08", "57P", "53", "25006")
# SQLITE_BUSY, SQLITE_LOCKED, SQLITE_NOMEM, SQLITE_READONLY, SQLITE_IOERR, SQLITE_CORRUPT,
# SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_PROTOCOL, SQLITE_NOTADB (primary result codes).
_SQLITE_UNAVAILABLE = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 15, 26})


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a (wrapped) driver error, if it has one."""
    orig = getattr(error, "orig", error)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code if isinstance(code, str) else None


def translate(error: BaseException, what: str = "database operation") -> GovcError:
    """Map a driver/SQLAlchemy error to the project's error tree (without SQL text)."""
    if isinstance(error, GovcError):
        return error
    code = sqlstate(error)
    if isinstance(error, sa_exc.TimeoutError):
        return StoreUnavailable(f"{what} failed: timed out waiting for a pooled connection")
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return StoreUnavailable(f"{what} failed: the database connection was lost")
    if code is not None and code.startswith(_UNAVAILABLE_PREFIXES):
        return StoreUnavailable(f"{what} failed: database unavailable (SQLSTATE {code})")
    if code in RETRYABLE_SQLSTATES:
        return StoreUnavailable(f"{what} failed: transaction conflict (SQLSTATE {code})")
    if isinstance(error, sa_exc.OperationalError) and isinstance(
        getattr(error, "orig", None), sqlite3.Error
    ):
        # sqlite3 raises OperationalError for plain SQL errors ("no such table") too;
        # only busy/locked/IO/open failures mean the database is unavailable.
        errcode = getattr(error.orig, "sqlite_errorcode", None)
        if isinstance(errcode, int) and errcode & 0xFF in _SQLITE_UNAVAILABLE:
            return StoreUnavailable(f"{what} failed: database unavailable (SQLite code {errcode})")
        return GovcError(f"{what} failed: database error (SQLite code {errcode})")
    if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError):
        kind = type(getattr(error, "orig", error)).__name__
        return StoreUnavailable(f"{what} failed: database unavailable ({kind})")
    if isinstance(error, sa_exc.SQLAlchemyError):
        label = f"SQLSTATE {code}" if code else type(getattr(error, "orig", error)).__name__
        return GovcError(f"{what} failed: database error ({label})")
    if isinstance(error, OSError):
        return StoreUnavailable(f"{what} failed: {type(error).__name__}")
    return GovcError(f"{what} failed: {type(error).__name__}")


@contextmanager
def translating(what: str = "database operation") -> Iterator[None]:
    """Re-raise any non-project error inside the block as its translation (chained)."""
    try:
        yield
    except GovcError:
        raise
    except (sa_exc.SQLAlchemyError, OSError) as exc:
        raise translate(exc, what) from exc

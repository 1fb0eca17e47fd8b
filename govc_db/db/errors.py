"""Translation of driver errors into :mod:`govc_db.errors`, done once at the store boundary.

Decisions use SQLSTATE codes and exception classes, never message text, and the
messages produced never contain SQL or connection parameters.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc as sa_exc

from govc_db.errors import (
    AuthenticationFailed,
    ConnectionRefused,
    DatabaseMissing,
    DatabaseTimeout,
    GovcError,
    ReadOnlyDatabase,
    StoreUnavailable,
)

__all__ = [
    "PREPARED_CONFLICT_SQLSTATES",
    "RETRYABLE_SQLSTATES",
    "connect_failure",
    "schema_mismatch",
    "sqlstate",
    "translate",
    "translating",
]

#: serialization_failure, deadlock_detected: the whole transaction may be retried.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
#: duplicate_prepared_statement, invalid_sql_statement_name: server-side prepared
#: statements that do not survive a pooler in transaction mode (see db.prepared).
PREPARED_CONFLICT_SQLSTATES = frozenset({"42P05", "26000"})
# query_canceled (statement_timeout, a cancel request), lock_not_available (lock_timeout).
_TIMEOUT_SQLSTATES = {"57014": "statement timeout", "55P03": "lock timeout"}
# Classes 08 (connection exception), 57P0x (admin shutdown / crash / cannot connect now),
# 53 (insufficient resources).
_UNAVAILABLE_PREFIXES = ("08", "57P", "53")
# SQLITE_BUSY, SQLITE_LOCKED, SQLITE_NOMEM, SQLITE_READONLY, SQLITE_IOERR, SQLITE_CORRUPT,
# SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_PROTOCOL, SQLITE_NOTADB (primary result codes).
_SQLITE_UNAVAILABLE = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 15, 26})
_SQLITE_READONLY = 8
_SQLITE_ERROR = 1

# libpq reports a failed connection attempt without a SQLSTATE (the server's startup
# error, or the OS error, is only text), so these -- and only these -- decisions read the
# message: the phrases of libpq and of the server's startup errors (lc_messages=C/en).
_AUTH_PHRASES = (
    "password authentication failed", "authentication failed", "no pg_hba.conf entry",
    "no password supplied", "fe_sendauth", "role \"",
)  # fmt: skip


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a (wrapped) driver error, if it has one."""
    orig = getattr(error, "orig", error)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code if isinstance(code, str) else None


def connect_failure(error: BaseException) -> tuple[str, str] | None:
    """For a failed PostgreSQL connection attempt: ``(kind, "host:port")`` with kind
    ``"refused"``, ``"auth"`` or ``"database"``; None for anything else (including a
    connection lost mid-statement, a timeout, or a server still starting up)."""
    orig = getattr(error, "orig", error)
    if sqlstate(orig) is not None:
        return None
    pgconn = getattr(orig, "pgconn", None)
    raw = getattr(pgconn, "error_message", None)
    if not isinstance(raw, bytes) or getattr(pgconn, "status", 0) == 0:
        return None  # not a connection attempt (status 0 is CONNECTION_OK)
    text = raw.decode("utf-8", "replace").lower()
    host = (getattr(pgconn, "host", b"") or b"").decode("utf-8", "replace")
    port = (getattr(pgconn, "port", b"") or b"").decode("utf-8", "replace")
    where = f"{host}:{port}" if host else "the database server"
    if "connection refused" in text:
        return "refused", where
    if 'database "' in text and "does not exist" in text:
        return "database", where
    if any(p in text for p in _AUTH_PHRASES):
        return "auth", where
    return None


def translate(error: BaseException, what: str = "database operation") -> GovcError:
    """Map a driver/SQLAlchemy error to the project's error tree (without SQL text).

    One line each, typed: timeouts (:class:`DatabaseTimeout`), a read-only database
    (:class:`ReadOnlyDatabase`), refused credentials (:class:`AuthenticationFailed`), a
    missing database (:class:`DatabaseMissing`), nothing listening
    (:class:`ConnectionRefused`), else :class:`StoreUnavailable` / :class:`GovcError`.
    """
    if isinstance(error, GovcError):
        return error
    code = sqlstate(error)
    if isinstance(error, sa_exc.TimeoutError):
        return DatabaseTimeout(f"{what} failed: timed out waiting for a pooled connection")
    if code in _TIMEOUT_SQLSTATES:
        return DatabaseTimeout(
            f"{what} failed: the database cancelled the statement "
            f"({_TIMEOUT_SQLSTATES[code]} or a cancel request, SQLSTATE {code})"
        )
    if code == "25006" or _sqlite_code(error) == _SQLITE_READONLY:
        return ReadOnlyDatabase(
            f"{what} failed: the database is read-only (a standby, or "
            f"default_transaction_read_only=on; {f'SQLSTATE {code}' if code else 'SQLite'})"
        )
    if code is not None and code.startswith("28"):
        return AuthenticationFailed(f"{what} failed: the database refused the credentials")
    if code == "3D000":
        return DatabaseMissing(f"{what} failed: the database does not exist")
    if code in PREPARED_CONFLICT_SQLSTATES:
        return StoreUnavailable(
            f"{what} failed: server-side prepared statement conflict (SQLSTATE {code}); a "
            "pooler in transaction mode? set Settings.prepare_threshold=None"
        )
    failure = connect_failure(error)
    if failure is not None:
        kind, where = failure
        if kind == "refused":
            return ConnectionRefused(
                f"{what} failed: connection refused by {where} (is the server running?)"
            )
        if kind == "auth":
            return AuthenticationFailed(
                f"{what} failed: authentication failed at {where} (check user and password)"
            )
        return DatabaseMissing(f"{what} failed: the database does not exist on {where}")
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


def schema_mismatch(error: BaseException) -> bool:
    """Whether ``error`` may come from a statement on a table or column that does not
    exist: PostgreSQL's undefined_table (42P01) or undefined_column (42703), or SQLite's
    generic SQL error (code 1, which "no such table" shares with other mistakes: the
    caller checks the schema revision before saying so)."""
    return sqlstate(error) in ("42P01", "42703") or _sqlite_code(error) == _SQLITE_ERROR


def _sqlite_code(error: BaseException) -> int | None:
    orig = getattr(error, "orig", error)
    if not isinstance(orig, sqlite3.Error):
        return None
    code = getattr(orig, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


@contextmanager
def translating(what: str = "database operation") -> Iterator[None]:
    """Re-raise any non-project error inside the block as its translation (chained)."""
    try:
        yield
    except GovcError:
        raise
    except (sa_exc.SQLAlchemyError, OSError) as exc:
        raise translate(exc, what) from exc

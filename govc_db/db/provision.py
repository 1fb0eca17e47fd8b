"""Reach the database named by a URL, create it when it is missing, and say plainly why not.

``govc-db init`` uses :func:`ensure_database` before migrating; every other command asks
:func:`diagnose` for a one-line reason when the store reports the database unavailable.

libpq reports a failed connection without a SQLSTATE (the server's FATAL text is all the
client gets), so the four cases a user must tell apart (missing database, refused
connection, failed authentication, refused permission) are recognised from that text.
Only the reason is shown, with host, port, user and database; never the password.
"""

from __future__ import annotations

import os
import re
import sqlite3

import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from govc_db.db.engine import normalize_url
from govc_db.db.errors import sqlstate
from govc_db.errors import GovcError, InvalidInput, StoreUnavailable

__all__ = ["Unreachable", "diagnose", "ensure_database", "sqlite_problem"]

CONNECT_TIMEOUT = 5


class Unreachable(StoreUnavailable):
    """The database cannot be used, with the reason already diagnosed in the message."""


# The server's reasons, in libpq's words (C locale; also what PgBouncer relays).
_MISSING_DB = re.compile(r'database "[^"]*" does not exist')
_AUTH = re.compile(
    r"password authentication failed|authentication failed|no password supplied"
    r'|role "[^"]*" does not exist|no pg_hba\.conf entry'
)
_PERMISSION = re.compile(r"permission denied")
_REFUSED = re.compile(r"Connection refused")
# SQLSTATE insufficient_privilege: CREATE DATABASE without CREATEDB.
_INSUFFICIENT_PRIVILEGE = "42501"


def _where(url: URL) -> str:
    return f"{url.host or 'localhost'}:{url.port or 5432}"


def _connect_error(url: URL) -> Exception | None:
    """The error of one plain connection to ``url``, or None when it connects."""
    engine = sa.create_engine(
        url, poolclass=NullPool, connect_args={"connect_timeout": CONNECT_TIMEOUT}
    )
    try:
        with engine.connect():
            return None
    except sa.exc.DBAPIError as exc:
        return exc
    finally:
        engine.dispose()


def _driver_text(exc: BaseException) -> str:
    return str(getattr(exc, "orig", exc))


def _reason(url: URL, exc: BaseException) -> str:
    """One line saying why connecting to ``url`` failed (no password, no SQL)."""
    text = _driver_text(exc)
    where, user, db = _where(url), url.username or "(default user)", url.database or ""
    if _MISSING_DB.search(text):
        return f"database {db!r} does not exist on {where} (run `govc-db init` to create it)"
    if _REFUSED.search(text):
        return f"connection refused by {where}: is PostgreSQL running and listening there?"
    if _AUTH.search(text):
        return f"authentication failed for user {user!r} on {where}"
    if _PERMISSION.search(text):
        return f"permission denied: user {user!r} may not connect to database {db!r} on {where}"
    # Anything else (unknown host, timeout, TLS ...): libpq's own last line, which
    # carries host and port but never the password.
    last = text.strip().splitlines()[-1] if text.strip() else type(exc).__name__
    last = re.sub(r"^.*?failed:\s*(FATAL:\s*)?", "", last).strip()
    return f"cannot connect to {where}: {last or type(exc).__name__}"


def sqlite_problem(url: URL, *, create: bool) -> str | None:
    """Why the SQLite file of ``url`` cannot be opened (``create``: may be created)."""
    path = url.database
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    full = os.path.abspath(path)
    folder = os.path.dirname(full)
    if os.path.isdir(full):
        return f"cannot open SQLite database {path!r}: it is a directory"
    if os.path.exists(full):
        if not os.access(full, os.R_OK | os.W_OK):
            return f"cannot open SQLite database {path!r}: permission denied"
        return None
    if not create:
        return f"database file {path!r} does not exist (run `govc-db init`)"
    probe = folder
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        return f"cannot create SQLite database {path!r}: {probe!r} is not a directory"
    if probe != folder:
        return f"cannot create SQLite database {path!r}: directory {folder!r} does not exist"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot create SQLite database {path!r}: directory {folder!r} is not writable"
    return None


def diagnose(url: str | URL, *, create: bool = False) -> str | None:
    """A one-line reason why the database of ``url`` cannot be used, or None if it can."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        problem = sqlite_problem(parsed, create=create)
        if problem is None and parsed.database not in (None, "", ":memory:"):
            try:
                sqlite3.connect(parsed.database or "").close()
            except sqlite3.Error as exc:
                problem = f"cannot open SQLite database {parsed.database!r}: {exc}"
        return problem
    error = _connect_error(parsed)
    return None if error is None else _reason(parsed, error)


def ensure_database(url: str | URL) -> bool:
    """Make the database of ``url`` exist; True when this call created it.

    PostgreSQL: a missing database is created (``CREATE DATABASE``, through the server's
    ``postgres`` database with the same credentials). SQLite: the file is created by the
    first connection; a path that cannot be created is reported. Raises StoreUnavailable
    (or InvalidInput for a malformed URL) with a one-line reason.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        problem = sqlite_problem(parsed, create=True)
        if problem is not None:
            raise Unreachable(problem)
        return False
    error = _connect_error(parsed)
    if error is None:
        return False
    if not _MISSING_DB.search(_driver_text(error)):
        raise Unreachable(_reason(parsed, error))
    name = parsed.database
    if not name:
        raise InvalidInput("the database URL names no database")
    _create(parsed, name)
    return True


def _create(url: URL, name: str) -> None:
    admin = url.set(database="postgres" if name != "postgres" else "template1")
    engine = sa.create_engine(
        admin,
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": CONNECT_TIMEOUT},
    )
    quoted = '"' + name.replace('"', '""') + '"'
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {quoted}"))
    except sa.exc.DBAPIError as exc:
        if sqlstate(exc) == _INSUFFICIENT_PRIVILEGE:
            raise Unreachable(
                f"permission denied: user {url.username or '(default user)'!r} may not create "
                f"database {name!r} on {_where(url)} (create it, or grant CREATEDB)"
            ) from exc
        if sqlstate(exc) == "42P04":  # duplicate_database: created meanwhile by someone else
            return
        raise Unreachable(
            f"database {name!r} does not exist on {_where(url)} and cannot be created: "
            f"{_reason(admin, exc)}"
        ) from exc
    except GovcError:
        raise
    finally:
        engine.dispose()

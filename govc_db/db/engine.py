"""Engine and pool construction from :class:`~govc_db.Settings`, for both dialects.

PostgreSQL uses psycopg 3 behind SQLAlchemy's ``QueuePool`` (LIFO, recycle, and a
pre-ping of connections idle for longer than ``Settings.pool_pre_ping_idle``);
server-side prepared statements are psycopg's own (``prepare_threshold``, see
:mod:`govc_db.db.prepared`). SQLite runs in WAL mode with a busy timeout, and write
transactions start with ``BEGIN IMMEDIATE`` so concurrent writers queue on the lock
instead of failing with "database is locked" when a read transaction tries to upgrade.

Every engine gets a :class:`~govc_db.db.pool.PoolMonitor` (pool counters, disconnect
classification by SQLSTATE, fork safety) and a
:class:`~govc_db.db.prepared.StatementMonitor`; look them up with
:func:`~govc_db.db.pool.pool_monitor` / :func:`~govc_db.db.prepared.statement_monitor`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry

from govc_db.db.pool import (
    READONLY_OPTION,
    MonitoredQueuePool,
    PoolMonitor,
    install_pool_monitor,
)
from govc_db.db.prepared import install_statement_monitor, share_compiled_cache
from govc_db.errors import InvalidInput
from govc_db.settings import Settings

__all__ = [
    "READONLY_OPTION",
    "WRITE_OPTION",
    "is_sqlite",
    "make_engine",
    "normalize_url",
    "safe_url",
]

log = logging.getLogger("govc_db.db")

_IDLE_SINCE = "govc_db.idle_since"

#: Execution option on a Connection marking its next transaction as a writer.
WRITE_OPTION = "govc_write"


def normalize_url(url: str | URL) -> URL:
    """Parse ``url``; plain ``postgresql://``/``postgres://`` select psycopg 3."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise InvalidInput("malformed database URL") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("postgresql", "sqlite"):
        raise InvalidInput(
            f"unsupported database {parsed.get_backend_name()!r}: use postgresql or sqlite"
        )
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() != "psycopg":
        raise InvalidInput("PostgreSQL URLs must use the psycopg 3 driver (postgresql+psycopg)")
    if parsed.get_backend_name() == "sqlite" and parsed.get_driver_name() != "pysqlite":
        # Other SQLite drivers (aiosqlite, pysqlcipher) would fail later with a raw
        # driver-loading error, or not honour the BEGIN IMMEDIATE handling below.
        raise InvalidInput("SQLite URLs must use the built-in driver (sqlite:///path)")
    return parsed


def safe_url(url: URL) -> str:
    """The URL as text with any password masked, for messages and ``repr``."""
    return url.render_as_string(hide_password=True)


def is_sqlite(engine: Engine) -> bool:
    """True for an SQLite engine."""
    return engine.dialect.name == "sqlite"


def make_engine(url: str | URL, settings: Settings) -> Engine:
    """Create the pooled engine for ``url`` configured by ``settings``."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = _sqlite_engine(parsed, settings)
    else:
        engine = _postgres_engine(parsed, settings)
    # The pool monitor also handles fork safety: after fork() the child drops the
    # parent's pooled connections with dispose(close=False), never using or closing them.
    pool = install_pool_monitor(engine)
    share_compiled_cache(engine)
    install_statement_monitor(engine, settings, pool)
    if settings.pool_pre_ping and settings.pool_pre_ping_idle > 0 and not is_sqlite(engine):
        install_idle_ping(engine, settings.pool_pre_ping_idle, pool)
    return engine


def install_idle_ping(engine: Engine, idle: float, monitor: PoolMonitor) -> None:
    """Pre-ping at checkout only connections idle in the pool for more than ``idle``
    seconds (``Settings.pool_pre_ping_idle``); a failed ping discards the connection, and
    every older one, and the pool hands out a new one (SQLAlchemy's checkout protocol).

    A connection lost while in use is handled by the transaction manager, which re-runs
    the unit; the ping is for connections that died while nobody used them.
    """

    def on_checkin(dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    def on_connect(dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
        record.info.pop(_IDLE_SINCE, None)  # a new connection needs no ping

    def on_checkout(dbapi_conn: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since <= idle:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            monitor.count("disconnects")
            err = DisconnectionError("pre-ping of an idle connection failed")
            err.invalidate_pool = True  # the server went away: the others are gone too
            raise err from exc

    event.listen(engine, "checkin", on_checkin)
    event.listen(engine, "connect", on_connect)
    event.listen(engine, "checkout", on_checkout)


def _postgres_engine(url: URL, settings: Settings) -> Engine:
    connect_args: dict[str, Any] = {
        "connect_timeout": max(1, round(settings.connect_timeout)),
        "prepare_threshold": settings.prepare_threshold,
        "application_name": "govc_db",
    }
    engine = create_engine(
        url,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout,
        pool_recycle=settings.pool_recycle,
        # With an idle window the ping is ours (install_idle_ping), not SQLAlchemy's.
        pool_pre_ping=settings.pool_pre_ping and settings.pool_pre_ping_idle == 0,
        pool_use_lifo=True,
        poolclass=MonitoredQueuePool,
        connect_args=connect_args,
    )
    return engine


def _sqlite_engine(url: URL, settings: Settings) -> Engine:
    memory = url.database in (None, "", ":memory:")
    kwargs: dict[str, Any] = {
        "connect_args": {"timeout": settings.sqlite_busy_timeout, "check_same_thread": False},
    }
    if not memory:
        kwargs.update(
            pool_size=settings.pool_size,
            max_overflow=settings.max_overflow,
            pool_timeout=settings.pool_timeout,
            pool_use_lifo=True,
            poolclass=MonitoredQueuePool,
        )
    else:
        from sqlalchemy.pool import StaticPool

        kwargs["poolclass"] = StaticPool
    engine = create_engine(url, **kwargs)
    busy_ms = int(settings.sqlite_busy_timeout * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
        # Take transaction control away from pysqlite so BEGIN is ours (see "begin" below).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            # Must precede the first table of a new file: lets gc() return freed pages
            # with PRAGMA incremental_vacuum. Only on an empty file: on an existing one
            # the PRAGMA rewrites the header page, a write transaction per connection
            # (and a WAL checkpoint when the last connection closes), measured at ~10 ms.
            cur.execute("PRAGMA page_count")
            if cur.fetchone()[0] == 0:
                cur.execute("PRAGMA auto_vacuum=INCREMENTAL")
            if not memory:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={busy_ms}")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine

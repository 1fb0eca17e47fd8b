"""Pool statistics, disconnect classification and fork safety for one engine.

The pool itself is SQLAlchemy's ``QueuePool``; this module only watches it through
SQLAlchemy's pool and dialect events (checkouts, new connections, invalidations,
disconnects) plus one public-method override (``connect``) for checkout timeouts,
which SQLAlchemy raises without an event. Nothing here re-implements pooling.

Disconnects are decided by SQLSTATE, never by message text. Besides what the psycopg
dialect already detects (a closed or broken connection), these codes mark the connection
as gone, so the pool invalidates it (and, outside pre-ping, every connection opened before
it) instead of handing it out again:

* class ``08`` -- connection exception;
* ``57P01``..``57P05`` -- admin/crash shutdown, cannot connect now, database dropped,
  idle session timeout (``57014`` "query canceled" is *not* a disconnect);
* ``25006`` -- read-only SQL transaction: after a failover the old primary came back as a
  standby, so every pooled connection points at a server that can no longer write
  (except on a Connection carrying the ``READONLY_OPTION`` execution option, whose
  transaction the caller declared READ ONLY);
* ``42P05`` / ``26000`` -- duplicate / unknown prepared statement: a pooler in transaction
  mode shares server connections, so the prepared-statement state of every pooled
  connection is wrong; they are all replaced (see :mod:`govc_db.db.prepared`).
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
import weakref
from collections import Counter
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection, QueuePool, StaticPool

from govc_db.db.errors import sqlstate

__all__ = [
    "DISCONNECT_SQLSTATE_PREFIXES",
    "POOL_COUNTERS",
    "READONLY_OPTION",
    "MonitoredQueuePool",
    "PoolMonitor",
    "install_pool_monitor",
    "is_disconnect_sqlstate",
    "pool_monitor",
]

log = logging.getLogger("govc_db.db")

#: SQLSTATE prefixes that mean "this connection is unusable; replace it".
DISCONNECT_SQLSTATE_PREFIXES = ("08", "57P0", "25006", "42P05", "26000")

#: Execution option on a Connection whose transaction the caller declared READ ONLY: a
#: write in it fails with 25006 too, but that is the caller's mistake on a healthy
#: connection, not a read-only server after a failover, so it is not a disconnect.
READONLY_OPTION = "govc_readonly"

#: Counter names of the pool stats (the Prometheus collector exports the same).
POOL_COUNTERS = (
    "checkouts",
    "checkins",
    "connects",
    "invalidations",
    "soft_invalidations",
    "disconnects",
    "connect_failures",
    "timeouts",
)


def is_disconnect_sqlstate(code: str | None) -> bool:
    """Whether ``code`` means the connection (or the server behind it) is gone."""
    return code is not None and code.startswith(DISCONNECT_SQLSTATE_PREFIXES)


class MonitoredQueuePool(QueuePool):
    """SQLAlchemy's ``QueuePool`` that reports checkout timeouts to its monitor.

    SQLAlchemy raises ``TimeoutError`` from ``connect()`` with no pool event, so this
    is the one place it can be counted. ``recreate()`` (``engine.dispose()``, and the
    fork handler) carries the monitor over to the new pool.
    """

    govc_monitor: PoolMonitor | None = None

    def connect(self) -> PoolProxiedConnection:
        """Check a connection out, counting a timeout if the pool stays exhausted."""
        try:
            return super().connect()
        except sa_exc.TimeoutError:
            if self.govc_monitor is not None:
                self.govc_monitor.count("timeouts")
            raise

    def recreate(self) -> QueuePool:
        """A fresh pool of the same configuration, still reporting to the same monitor."""
        new = super().recreate()
        if isinstance(new, MonitoredQueuePool):
            new.govc_monitor = self.govc_monitor
        return new


class PoolMonitor:
    """Counters of one engine's pool, plus its live gauges in :meth:`get_stats`.

    Counters (since the Store opened, or since fork in a child process):
    ``checkouts``, ``checkins``, ``connects`` (new DBAPI connections), ``invalidations``
    (connections discarded as broken), ``soft_invalidations``, ``disconnects`` (errors
    classified as a lost connection, including pre-ping failures), ``connect_failures``
    (errors while opening a connection) and ``timeouts`` (no connection became free
    within ``pool_timeout``). Gauges: ``size``, ``checked_out``, ``checked_in``,
    ``overflow`` (connections open above ``size``), ``max_overflow``.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine_ref = weakref.ref(engine)
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        # The open DBAPI connections of this pool (by id; sqlite3 connections cannot be
        # weakly referenced), for the prepared-statement count and for fork safety.
        self._dbapi: dict[int, Any] = {}
        self._orphans: list[Any] = []
        pool = engine.pool
        if isinstance(pool, MonitoredQueuePool):
            pool.govc_monitor = self
        self._listen(engine)

    # counting -------------------------------------------------------------------------
    def count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to counter ``key``."""
        with self._lock:
            self._counts[key] += n

    def _listen(self, engine: Engine) -> None:
        # Pool listeners registered through the engine live on the pool's dispatch, which
        # recreate() hands to the replacement pool, so they survive engine.dispose().
        def on_connect(dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
            with self._lock:
                self._counts["connects"] += 1
                self._dbapi[id(dbapi_conn)] = dbapi_conn

        def on_close(dbapi_conn: Any, *record: ConnectionPoolEntry) -> None:
            # "close" (pooled, also after an invalidation) and "close_detached".
            with self._lock:
                self._dbapi.pop(id(dbapi_conn), None)

        def on_checkout(dbapi_conn: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
            self.count("checkouts")

        def on_checkin(dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
            self.count("checkins")

        def on_invalidate(dbapi_conn: Any, record: ConnectionPoolEntry, exc: Any) -> None:
            self.count("invalidations")

        def on_soft_invalidate(dbapi_conn: Any, record: ConnectionPoolEntry, exc: Any) -> None:
            self.count("soft_invalidations")

        event.listen(engine, "connect", on_connect)
        event.listen(engine, "checkout", on_checkout)
        event.listen(engine, "checkin", on_checkin)
        event.listen(engine, "invalidate", on_invalidate)
        event.listen(engine, "soft_invalidate", on_soft_invalidate)
        event.listen(engine, "close", on_close)
        event.listen(engine, "close_detached", on_close)
        event.listen(engine, "handle_error", self._on_error)

    def _on_error(self, ctx: ExceptionContext) -> None:
        # Runs for statement errors, commit/rollback errors, pre-ping failures and
        # errors while connecting. Setting is_disconnect makes SQLAlchemy invalidate the
        # connection and mark the raised error connection_invalidated (which the
        # translation layer and the transaction manager read).
        if not ctx.is_disconnect:
            code = sqlstate(ctx.original_exception)
            if is_disconnect_sqlstate(code) and not (
                code == "25006"
                and ctx.connection is not None
                and ctx.connection.get_execution_options().get(READONLY_OPTION, False)
            ):
                ctx.is_disconnect = True
        if not ctx.is_disconnect:
            return
        if ctx.connection is None and not ctx.is_pre_ping:
            self.count("connect_failures")
        else:
            self.count("disconnects")

    # reading --------------------------------------------------------------------------
    def get_stats(self) -> dict[str, Any]:
        """Counters and the pool's current size, checked-out, checked-in and overflow."""
        with self._lock:
            out: dict[str, Any] = {key: self._counts[key] for key in POOL_COUNTERS}
        engine = self._engine_ref()
        pool = engine.pool if engine is not None else None
        out["pool_class"] = type(pool).__name__ if pool is not None else None
        if isinstance(pool, QueuePool):
            out["size"] = pool.size()
            out["checked_out"] = pool.checkedout()
            out["checked_in"] = pool.checkedin()
            # QueuePool.overflow() is "connections opened - pool_size" (negative while the
            # pool is not yet full); report only the connections above pool_size.
            out["overflow"] = max(0, pool.overflow())
            out["max_overflow"] = pool._max_overflow
        else:  # StaticPool (SQLite in memory): one connection, no queue to measure
            out.update(size=None, checked_out=None, checked_in=None, overflow=None)
            out["max_overflow"] = None
        return out

    def dbapi_connections(self) -> list[Any]:
        """The driver connections this pool currently holds open (idle or checked out)."""
        with self._lock:
            return list(self._dbapi.values())

    def reset(self) -> None:
        """Zero every counter (the gauges follow the pool)."""
        with self._lock:
            self._counts.clear()

    # fork safety ------------------------------------------------------------------------
    def _after_fork_in_child(self) -> None:
        """Forget the parent's pooled connections without touching their sockets.

        ``dispose(close=False)`` drops them from this process's pool; they are also kept
        referenced for the child's lifetime, because garbage-collecting them would close
        an SQLite handle the parent still uses, or make psycopg warn about a connection
        deleted while open (psycopg itself does not close a socket across fork).
        """
        # The lock may have been held by another thread of the parent at fork time.
        self._lock = threading.Lock()
        self._counts = Counter()
        self._orphans.extend(self._dbapi.values())
        self._dbapi = {}
        engine = self._engine_ref()
        if engine is None or isinstance(engine.pool, StaticPool):
            # An in-memory SQLite database lives in its one connection: the child keeps
            # its private copy of it rather than starting from an empty database.
            return
        # Only this thread exists in the child, so catch_warnings is safe here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            engine.dispose(close=False)


_MONITORS: weakref.WeakKeyDictionary[Engine, PoolMonitor] = weakref.WeakKeyDictionary()
_MONITORS_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    # One hook for every engine of the process (not one registered per engine, which
    # os.register_at_fork could never unregister).
    global _MONITORS_LOCK
    _MONITORS_LOCK = threading.Lock()
    for monitor in list(_MONITORS.values()):
        monitor._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def install_pool_monitor(engine: Engine) -> PoolMonitor:
    """Attach a :class:`PoolMonitor` to ``engine`` (once; later calls return it)."""
    with _MONITORS_LOCK:
        monitor = _MONITORS.get(engine)
        if monitor is None:
            monitor = _MONITORS[engine] = PoolMonitor(engine)
        return monitor


def pool_monitor(engine: Engine) -> PoolMonitor | None:
    """The monitor attached to ``engine`` by :func:`install_pool_monitor`, if any."""
    with _MONITORS_LOCK:
        return _MONITORS.get(engine)

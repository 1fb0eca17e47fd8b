"""Prepared statements: psycopg's server-side preparation, and statement statistics.

Preparation is psycopg's own (``prepare_threshold`` as a connect argument,
``prepared_max`` set on each new connection here): a query text executed through the
extended protocol ``prepare_threshold`` times on one connection is prepared on the
server and later executions send only its name and parameters. SQLAlchemy produces the
same text each time because the hot statements are module-level Core constructs
(``govc_db.store.sql``) that hit its compiled cache. Two things defeat preparation and
are worth knowing:

* an expanding ``IN (...)`` list gives a different text per list length (``= ANY(:ids)``
  does not);
* psycopg discards every prepared statement of a connection on ``ROLLBACK`` (and sends
  ``DEALLOCATE ALL``), so a read-only transaction should end with COMMIT: one that ends
  by rollback costs its connection all of them.

``prepare_threshold=None`` switches preparation off. Use it behind a pooler in
*transaction* or *statement* pooling mode (PgBouncer, pgcat, RDS Proxy ...), where the
next transaction of the same client connection may run on a server connection that never
prepared the statement ("prepared statement _pg3_0 does not exist"). PgBouncer >= 1.22
with ``max_prepared_statements`` > 0 tracks protocol-level prepares itself, and psycopg
uses protocol-level Parse/Close with libpq >= 17 (the psycopg[binary] wheel bundles one),
so there it can stay on. Direct connections and session pooling keep it on.

**Pooler detection** (``Settings.pooler_check``, on by default): on the first connection of
an engine, the backend PID the server announced at startup (``BackendKeyData``) is
compared with ``SELECT pg_backend_pid()``. A pooler answers the startup itself with a key
of its own, so they differ behind PgBouncer, pgcat or RDS Proxy; then server-side
preparation is switched off for that engine (a warning is logged once, and
``get_stats()["pooler_detected"]`` says so). This must happen *before* anything is
prepared: in transaction mode psycopg's ``_pg3_N`` names collide between clients sharing
a server connection, and executing another client's ``_pg3_N`` with our parameters is not
always an error -- it can return the other statement's rows (a wrong answer), or fail
with 22021 when a text parameter receives our binary bytea. Should a prepared-statement
conflict still happen (SQLSTATE 42P05/26000: detection off, or a pooler put in front
later), :func:`disable_server_prepares` does the same at runtime, every pooled connection
is replaced (:mod:`govc_db.db.pool` treats those codes as a lost connection) and the
transaction manager re-runs the unit.

Statement statistics come from SQLAlchemy's dialect-level ``do_execute`` events: each
execution reports whether its compiled form came from SQLAlchemy's compiled cache.

**One compiled cache per process** (:class:`SharedCompiledCache`). SQLAlchemy keeps a
compiled-statement cache per engine, keyed by the engine's dialect object, so every new
Store compiles every statement again: a process that opens a Store per request (a CLI
call, a script, a short-lived worker) paid ~0.7 ms of compilation per statement kind,
the delta-chain query most. The engines of this package share one cache instead, keyed by
what decides the SQL text: the dialect's class, its server version and its
paramstyle. The cached objects are the same ``Compiled`` objects SQLAlchemy would build
(bind and result processors are resolved from types, not from connections).
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import Counter
from collections.abc import Iterator, MutableMapping
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine.interfaces import CacheStats, Dialect
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util import LRUCache

from govc_db.db.pool import PoolMonitor
from govc_db.settings import Settings

__all__ = [
    "SharedCompiledCache",
    "share_compiled_cache",
    "StatementMonitor",
    "disable_server_prepares",
    "install_statement_monitor",
    "statement_monitor",
]

log = logging.getLogger("govc_db.db")

_OUTCOME: dict[Any, str] = {
    CacheStats.CACHE_HIT: "compiled_cache_hits",
    CacheStats.CACHE_MISS: "compiled_cache_misses",
}


def _prepared_count(dbapi_conn: Any) -> int | None:
    # psycopg exposes no public count; its PrepareManager keeps the names of the
    # statements prepared on this connection's server session in ``_names``.
    names = getattr(getattr(dbapi_conn, "_prepared", None), "_names", None)
    return len(names) if names is not None else None


def _ping_unprepared(dbapi_conn: Any) -> bool:
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(";", prepare=False)
    finally:
        cursor.close()
    return True


class StatementMonitor:
    """Statement executions, compiled-cache outcomes and prepared statements of an engine.

    ``get_stats()``: ``executions``; ``compiled_cache_hits`` / ``compiled_cache_misses``
    (SQLAlchemy constructs compiled from scratch) / ``uncached`` (driver SQL such as
    ``exec_driver_sql``, DDL); ``compiled_cache_hit_ratio``; ``compiled_cache_entries``;
    on PostgreSQL
    ``server_side_prepare``, ``prepare_threshold``, ``prepared_max`` and
    ``prepared_statements`` (summed over the pool's open connections).
    """

    def __init__(self, engine: Engine, settings: Settings, pool: PoolMonitor | None) -> None:
        self._engine_ref = weakref.ref(engine)
        self._pool = pool
        self._postgres = engine.dialect.name == "postgresql"
        self._threshold = settings.prepare_threshold if self._postgres else None
        self._max = settings.prepared_max
        # None: not checked yet; True/False once the first connection was compared.
        self._pooler: bool | None = None if settings.pooler_check else False
        self._disabled_reason: str | None = None
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._listen(engine)

    def _after_fork_in_child(self) -> None:
        # The lock may have been held by another thread of the parent at fork time.
        self._lock = threading.Lock()
        self._counts = Counter()

    def _listen(self, engine: Engine) -> None:
        # Dialect-level events only: any Connection-level listener (before_cursor_execute,
        # rollback ...) switches SQLAlchemy to its event-dispatching execution path, which
        # measured 8-10 us more per statement here; do_execute costs about 1 us.
        def count(context: Any) -> None:
            key = _OUTCOME.get(getattr(context, "cache_hit", None), "uncached")
            with self._lock:
                self._counts["executions"] += 1
                self._counts[key] += 1

        def do_execute(cursor: Any, statement: str, params: Any, context: Any) -> None:
            count(context)

        def do_execute_no_params(cursor: Any, statement: str, context: Any) -> None:
            count(context)

        event.listen(engine, "do_execute", do_execute)
        event.listen(engine, "do_executemany", do_execute)
        event.listen(engine, "do_execute_no_params", do_execute_no_params)
        if self._postgres:
            prepared_max = self._max

            def on_connect(dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
                # prepare_threshold goes in as a connect argument; prepared_max has none.
                dbapi_conn.prepared_max = prepared_max
                if self._pooler is None and self._threshold is not None:
                    self._check_pooler(dbapi_conn)
                if self._disabled_reason is not None:
                    dbapi_conn.prepare_threshold = None

            event.listen(engine, "connect", on_connect)
            # SQLAlchemy's pre-ping runs ";" (an empty query). With prepare_threshold=0
            # psycopg would prepare it on the server, then drop it from its own cache
            # (an empty query is never cached) without deallocating it: one leaked server
            # statement per checkout. The ping is never worth preparing.
            engine.dialect.do_ping = _ping_unprepared  # type: ignore[method-assign,assignment]

    def _check_pooler(self, dbapi_conn: Any) -> None:
        announced = dbapi_conn.info.backend_pid
        cur = dbapi_conn.cursor()
        try:
            row = cur.execute("SELECT pg_backend_pid()", prepare=False).fetchone()
        finally:
            cur.close()
        dbapi_conn.rollback()  # end the implicit transaction before the pool hands it out
        self._pooler = row is not None and row[0] != announced
        if self._pooler:
            self.disable(
                "a connection pooler sits between this Store and PostgreSQL (the backend "
                "PID differs from the one announced at connect)"
            )

    def disable(self, reason: str) -> None:
        """Switch server-side preparation off for this engine (new connections; the pool
        replaces the open ones), logging ``reason`` once."""
        with self._lock:
            if self._disabled_reason is not None or self._threshold is None:
                return
            self._disabled_reason = reason
        log.warning(
            "server-side prepared statements switched off: %s; set "
            "Settings.prepare_threshold=None to say so explicitly (or pooler_check=False "
            "behind a pooler that tracks prepared statements, PgBouncer >= 1.21 with "
            "max_prepared_statements > 0)",
            reason,
        )
        conns = self._pool.dbapi_connections() if self._pool is not None else []
        for conn in conns:
            # psycopg reads it at each execute: nothing more is prepared on them.
            conn.prepare_threshold = None

    @property
    def server_side_prepare(self) -> bool:
        """Whether statements may be prepared on the server now."""
        return self._threshold is not None and self._disabled_reason is None

    def get_stats(self) -> dict[str, Any]:
        """Execution counters, compiled-cache ratio and prepared-statement counts."""
        with self._lock:
            counts = dict(self._counts)
        hits = counts.get("compiled_cache_hits", 0)
        misses = counts.get("compiled_cache_misses", 0)
        out: dict[str, Any] = {
            "executions": counts.get("executions", 0),
            "compiled_cache_hits": hits,
            "compiled_cache_misses": misses,
            "uncached": counts.get("uncached", 0),
            "compiled_cache_hit_ratio": hits / (hits + misses) if hits + misses else None,
            "compiled_cache_entries": self._cache_entries(),
            "server_side_prepare": self.server_side_prepare,
        }
        if self._postgres:
            out["prepare_threshold"] = self._threshold
            out["pooler_detected"] = self._pooler
            out["prepares_disabled_reason"] = self._disabled_reason
            out["prepared_max"] = self._max
            total = 0
            conns = self._pool.dbapi_connections() if self._pool is not None else []
            for conn in conns:
                total += _prepared_count(conn) or 0
            out["prepared_statements"] = total
            out["connections"] = len(conns)
        return out

    def _cache_entries(self) -> int | None:
        engine = self._engine_ref()
        cache = getattr(engine, "_compiled_cache", None)
        return len(cache) if cache is not None else None


_MONITORS: weakref.WeakKeyDictionary[Engine, StatementMonitor] = weakref.WeakKeyDictionary()


def _after_fork_in_child() -> None:
    for monitor in list(_MONITORS.values()):
        monitor._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def install_statement_monitor(
    engine: Engine, settings: Settings, pool: PoolMonitor | None = None
) -> StatementMonitor:
    """Attach a :class:`StatementMonitor` to ``engine`` (once; later calls return it)."""
    monitor = _MONITORS.get(engine)
    if monitor is None:
        monitor = _MONITORS[engine] = StatementMonitor(engine, settings, pool)
    return monitor


def disable_server_prepares(engine: Engine, reason: str) -> None:
    """Switch server-side preparation off for ``engine`` (see the module docstring)."""
    monitor = _MONITORS.get(engine)
    if monitor is not None:
        monitor.disable(reason)


def statement_monitor(engine: Engine) -> StatementMonitor | None:
    """The monitor attached to ``engine`` by :func:`install_statement_monitor`, if any."""
    return _MONITORS.get(engine)


#: Entries of the process-wide compiled cache (SQLAlchemy's per-engine default is 500).
SHARED_COMPILED_ENTRIES = 1000


def _dialect_signature(dialect: Dialect) -> tuple[Any, ...]:
    """What the SQL text a dialect compiles depends on, beyond the statement."""
    return (
        type(dialect),
        dialect.server_version_info,
        dialect.paramstyle,
        dialect.positional,
        dialect.label_length,
        dialect.max_identifier_length,
        dialect.supports_native_boolean,
    )


class SharedCompiledCache(MutableMapping[Any, Any]):
    """SQLAlchemy's compiled cache for all engines of the process.

    SQLAlchemy's keys start with the dialect *object*; this mapping replaces it with
    :func:`_dialect_signature`, so engines whose dialects compile alike (same class,
    server version and parameter style) find each other's entries. A dialect's
    signature is remembered once its server version is known (after its first
    connection), which is before anything is compiled for it.
    """

    def __init__(self, size: int = SHARED_COMPILED_ENTRIES) -> None:
        self._lru: LRUCache[Any, Any] = LRUCache(size)
        self._sigs: weakref.WeakKeyDictionary[Dialect, tuple[Any, ...]] = (
            weakref.WeakKeyDictionary()
        )

    def _key(self, key: Any) -> Any:
        dialect = key[0]
        if isinstance(dialect, tuple):
            return key  # a key of this mapping already (iteration yields those)
        sig = self._sigs.get(dialect)
        if sig is None:
            sig = _dialect_signature(dialect)
            if dialect.server_version_info is not None:
                self._sigs[dialect] = sig
        return (sig, *key[1:])

    def get(self, key: Any, default: Any = None) -> Any:
        """The compiled statement for SQLAlchemy's ``key``, or ``default``."""
        return self._lru.get(self._key(key), default)

    def __getitem__(self, key: Any) -> Any:
        return self._lru[self._key(key)]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._lru[self._key(key)] = value

    def __delitem__(self, key: Any) -> None:
        del self._lru[self._key(key)]

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._lru))

    def __len__(self) -> int:
        return len(self._lru)

    def clear(self) -> None:
        """Forget every compiled statement (``Engine.clear_compiled_cache``)."""
        self._lru.clear()


_SHARED = SharedCompiledCache()


def share_compiled_cache(engine: Engine) -> None:
    """Give ``engine`` the process-wide compiled cache (an engine built with caching
    off, ``query_cache_size=0``, keeps none)."""
    if engine._compiled_cache is not None:
        engine._compiled_cache = _SHARED

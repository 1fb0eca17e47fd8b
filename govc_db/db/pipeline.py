"""The write pipeline: a unit's writes sent together, in one round trip on PostgreSQL.

A one-file commit writes about eight statements (object rows, the ref's compare-and-swap,
its reflog row, the notification, the commit-index rows). Executed one by one through
SQLAlchemy each is a round trip plus SQLAlchemy's per-statement work, which together cost
more than the commit's own computation. Here they are queued while the unit runs and sent
at its end:

* **PostgreSQL**: psycopg pipeline mode on the unit's own connection, inside its
  transaction. ``BEGIN`` and every queued statement go out together and one ``Sync``
  brings every result back, so the unit costs two round trips with its ``COMMIT``, as a
  hand-written pipelined transaction does.
* **SQLite**: the statements run directly on the ``sqlite3`` connection (no network to
  save; what is saved is SQLAlchemy's per-statement work).

A statement may carry an *expectation*: it must change exactly one row (the ref's
compare-and-swap, a ref created only if absent). :meth:`WritePipeline.run` returns the
expectations that failed; the caller rolls the transaction back and re-runs the unit
without speculation (see :mod:`govc_db.store.sql`). A driver error is raised as
SQLAlchemy would have raised it, so the store's translation (SQLSTATE, disconnects) and
the transaction manager's retry decisions apply unchanged.

Statements are compiled once per dialect from the same Core constructs the store executes
through SQLAlchemy (:func:`compile_raw`), so there is one definition of each.

Written by hand because SQLAlchemy has no pipeline mode; the pipeline protocol itself is
psycopg's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import ClauseElement

from govc_db.db.counters import Counters
from govc_db.db.errors import sqlstate
from govc_db.db.pool import READONLY_OPTION, is_disconnect_sqlstate, pool_monitor

__all__ = ["PipelineStats", "RawStatement", "WritePipeline", "compile_raw", "wrap_driver_error"]


@dataclass(frozen=True, slots=True)
class RawStatement:
    """A statement compiled for one dialect: its SQL text and, for a positional
    paramstyle (SQLite's ``?``), the parameter names in order."""

    sql: str
    names: tuple[str, ...] | None

    def args(self, params: Any) -> Any:
        """``params`` (a mapping, or already a tuple) in the form the driver takes."""
        if self.names is None or isinstance(params, tuple):
            return params
        return tuple(params[n] for n in self.names)


def compile_raw(stmt: ClauseElement, dialect: Dialect, keys: Sequence[str]) -> RawStatement:
    """Compile ``stmt`` for ``dialect``; ``keys`` are the parameters an INSERT is given
    (its column list), as SQLAlchemy compiles it when executed with those keys."""
    # for_executemany: no implicit RETURNING of a generated key (the reflog's id), which
    # nothing here reads.
    compiled: Any = stmt.compile(dialect=dialect, column_keys=list(keys), for_executemany=True)
    names = tuple(compiled.positiontup or ()) if compiled.positional else None
    return RawStatement(str(compiled), names)


def wrap_driver_error(conn: Connection, exc: BaseException, what: str) -> sa_exc.StatementError:
    """A raw driver error as SQLAlchemy would have raised it, classified as the engine's
    ``handle_error`` hook classifies statement errors (:mod:`govc_db.db.pool`): on a lost
    connection -- including a read-only server's 25006 outside a transaction the caller
    declared READ ONLY -- the connection is invalidated and counted, and the error carries
    ``connection_invalidated`` and the SQLSTATE either way."""
    dialect = conn.dialect
    try:
        lost = bool(dialect.is_disconnect(exc, conn.connection.dbapi_connection, None))  # type: ignore[arg-type]
    except Exception:
        lost = False
    code = sqlstate(exc)
    if not lost and is_disconnect_sqlstate(code):
        lost = not (code == "25006" and conn.get_execution_options().get(READONLY_OPTION, False))
    if lost:
        monitor = pool_monitor(conn.engine)
        if monitor is not None:
            monitor.count("disconnects")
        if not conn.invalidated:
            conn.invalidate(exc)
    wrapped: Any = sa_exc.DBAPIError.instance(
        what,
        None,
        exc,
        dialect.loaded_dbapi.Error,
        connection_invalidated=lost,
        dialect=dialect,
    )
    assert isinstance(wrapped, sa_exc.StatementError)
    return wrapped


class PipelineStats(Counters):
    """Pipelines run, statements and rows sent, failed expectations, speculative units,
    and fallbacks to a plain unit by cause (one per store)."""

    KEYS = (
        "pipelines", "statements", "rows", "expectations_failed", "speculative_units",
        "fallbacks_expectation", "fallbacks_error",
    )  # fmt: skip


class WritePipeline:
    """Statements of one unit waiting to be sent (one unit, one thread, like its connection)."""

    __slots__ = ("_conn", "_ops", "_pg", "_stats")

    def __init__(self, conn: Connection, stats: PipelineStats) -> None:
        self._conn = conn
        self._pg = conn.dialect.name == "postgresql"
        self._stats = stats
        # (statement, parameters, executemany?, expectation or None)
        self._ops: list[tuple[RawStatement, Any, bool, str | None]] = []

    def __len__(self) -> int:
        return len(self._ops)

    def add(
        self, stmt: RawStatement, params: Any, *, many: bool = False, expect: str | None = None
    ) -> None:
        """Queue ``stmt`` with one parameter set (a mapping, or a tuple for a positional
        statement), or with a list of them when ``many`` (executemany).

        ``expect`` names a statement that must change exactly one row (not with ``many``).
        """
        if expect is not None and many:
            raise ValueError("an expectation applies to a single-row statement")
        self._ops.append((stmt, params, many, expect))

    def run(self) -> list[str]:
        """Send everything queued; the expectations that failed (in queue order).

        Driver errors are raised wrapped (:func:`wrap_driver_error`). The queue is empty
        afterwards either way: after an error the transaction is lost.
        """
        ops, self._ops = self._ops, []
        if not ops:
            return []
        rows = sum(len(p) if many else 1 for _, p, many, _ in ops)
        driver: Any = self._conn.connection.driver_connection
        try:
            failed = self._run_pg(driver, ops) if self._pg else self._run_sqlite(driver, ops)
        except self._conn.dialect.loaded_dbapi.Error as exc:
            raise wrap_driver_error(self._conn, exc, "write pipeline") from exc
        self._stats.count(
            pipelines=1, statements=len(ops), rows=rows, expectations_failed=len(failed)
        )
        return failed

    @staticmethod
    def _run_pg(driver: Any, ops: list[tuple[RawStatement, Any, bool, str | None]]) -> list[str]:
        checks: list[tuple[Any, str]] = []
        with driver.pipeline() as pipe:
            cur = driver.cursor()
            for stmt, params, many, expect in ops:
                if many:
                    cur.executemany(stmt.sql, [stmt.args(p) for p in params])
                elif expect is None:
                    cur.execute(stmt.sql, stmt.args(params))
                else:
                    checked = driver.cursor()
                    checked.execute(stmt.sql, stmt.args(params))
                    checks.append((checked, expect))
            pipe.sync()  # the one round trip: every result (or the first error) is here
        return [what for c, what in checks if c.rowcount != 1]

    @staticmethod
    def _run_sqlite(
        driver: Any, ops: list[tuple[RawStatement, Any, bool, str | None]]
    ) -> list[str]:
        for stmt, params, many, expect in ops:
            if many:
                driver.executemany(stmt.sql, [stmt.args(p) for p in params])
                continue
            cur = driver.execute(stmt.sql, stmt.args(params))
            if expect is not None and cur.rowcount != 1:
                return [expect]  # the unit is re-run: the rest would only be rolled back
        return []

"""The transaction manager: every unit of work runs through :meth:`TransactionManager.run`.

Written by hand because neither SQLAlchemy nor psycopg does this part: SQLAlchemy gives
transactions and savepoints and psycopg gives SQLSTATEs, but re-running a whole unit of
work after a serialization failure, a deadlock or a lost connection, resolving a COMMIT
whose outcome was lost with the connection, and running after-commit hooks exactly once
are the application's job.

* **Retry.** An error with SQLSTATE 40001 (serialization_failure) or 40P01
  (deadlock_detected), or a lost connection, raised *before* COMMIT rolls the attempt
  back and re-runs the whole function after a capped, fully jittered exponential backoff
  (``sleep(rng() * min(max_delay, base_delay * 2 ** (n - 1)))`` before retry ``n``). The
  decision uses SQLSTATEs and exception classes, never message text
  (:mod:`govc_db.db.retry`). ``sleep``, ``rng`` and ``clock`` are injected so tests are
  deterministic and never sleep. Conflicts are retried ``retries`` times; lost or refused
  connections, with a ``budget`` (``Settings.retry_budget``), for that many seconds from
  the first attempt -- long enough for a server restart, short enough to report an outage.
  A prepared-statement conflict (42P05/26000, a pooler in transaction mode) switches
  server-side preparation off for the engine, then retries. Never retried: timeouts, a
  read-only database, refused credentials, a missing database (see ``retry_reason``).
* **Unknown COMMIT outcome.** When the connection is lost *during* COMMIT, the server may
  or may not have committed. The caller's ``verify_commit()`` (for a ref move: re-read the
  ref on a new connection) decides: True means it committed, False means re-run. Without a
  ``verify_commit`` a write is never re-run blindly: ``StoreUnavailable`` says the outcome is
  unknown.
* **Nesting.** A :class:`contextvars.ContextVar` holds the open transactions of this
  thread (or task). A unit started while one is open joins it as a SAVEPOINT and does not
  retry on its own: the outermost one retries, because after a serialization failure or a
  lost connection only re-running the whole transaction helps.
* **Hooks.** Callbacks registered with :meth:`Transaction.after_commit` run after the
  outermost COMMIT, outside the transaction, once. Hooks of a rolled-back attempt or
  savepoint are dropped; those of a released savepoint join its parent's.
* **Exhaustion.** After the last attempt, :class:`~govc_db.errors.StoreUnavailable`
  (the last driver error chained).

Isolation levels are PostgreSQL's (``SET TRANSACTION``). SQLite transactions are always
serializable (one writer at a time, snapshot reads), so any accepted level gives
SERIALIZABLE semantics there; ``readonly`` is enforced with ``PRAGMA query_only``.
``store.transaction(...)`` wraps this manager (:mod:`govc_db.db.scope`).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, Engine, RootTransaction
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import StaticPool

from govc_db.db.engine import WRITE_OPTION
from govc_db.db.errors import schema_mismatch, sqlstate, translate
from govc_db.db.prepared import disable_server_prepares
from govc_db.db.retry import (
    MAX_RETRIES,
    check_retries,
    full_jitter,
    is_disconnect,
    is_read_only_error,
    retry_reason,
)
from govc_db.errors import GovcError, InvalidInput, NotFound, SchemaNotReady, StoreUnavailable

if TYPE_CHECKING:
    from govc_db.db.replicas import ReplicaRouter
    from govc_db.settings import Settings

__all__ = [
    "ISOLATION_LEVELS",
    "Transaction",
    "TransactionManager",
    "check_isolation",
]

log = logging.getLogger("govc_db.db")

T = TypeVar("T")

#: Accepted isolation levels (case and ``_``/space insensitive on input).
ISOLATION_LEVELS = ("READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE")


def check_isolation(value: object) -> str | None:
    """``value`` as one of :data:`ISOLATION_LEVELS` (or None); ``InvalidInput`` otherwise."""
    if value is None:
        return None
    if isinstance(value, str):
        level = " ".join(value.replace("_", " ").upper().split())
        if level in ISOLATION_LEVELS:
            return level
    raise InvalidInput(
        f"isolation must be None or one of {', '.join(ISOLATION_LEVELS)}, got {value!r}"[:200]
    )


class _CommitUnknown(Exception):
    """Internal: the connection was lost during COMMIT (cause chained)."""


class Transaction:
    """An open transaction, or a savepoint inside one (``parent`` is then set).

    ``connection`` is the SQLAlchemy connection: statements on your own tables executed on
    it are part of the same transaction.
    """

    __slots__ = ("connection", "hooks", "isolation", "manager", "parent", "readonly", "write")

    def __init__(
        self,
        manager: TransactionManager,
        connection: Connection,
        *,
        write: bool,
        isolation: str | None,
        readonly: bool,
        parent: Transaction | None,
    ) -> None:
        self.manager = manager
        self.connection = connection
        self.write = write
        self.isolation = isolation
        self.readonly = readonly
        self.parent = parent
        self.hooks: list[Callable[[], None]] = []

    @property
    def nested(self) -> bool:
        """True for a savepoint inside an outer transaction."""
        return self.parent is not None

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback()`` once the outermost transaction has committed (never on
        rollback). Exceptions it raises are logged, not propagated: the data is committed.
        """
        if not callable(callback):
            raise InvalidInput("callback must be callable")
        self.hooks.append(callback)


_STAT_KEYS = (
    "transactions", "commits", "rollbacks", "savepoints", "savepoint_rollbacks", "disconnects",
    "exhausted", "commit_unknown", "commit_unknown_committed", "commit_unknown_retried",
    "hook_errors",
)  # fmt: skip

_REASON_KEYS = ("serialization", "deadlock", "disconnect", "prepared")

# The open transactions of this thread/task, innermost last (several managers may nest).
_OPEN: ContextVar[tuple[Transaction, ...]] = ContextVar("govc_db_transactions", default=())


class _Opened:
    """What :meth:`TransactionManager._root` opened, kept by its caller: a
    ``KeyboardInterrupt`` raised as the generator yields (a signal handled right at that
    instant) ends the generator's frame without running its handlers, so the caller
    ends what is left open (:meth:`TransactionManager._recover`)."""

    __slots__ = ("conn", "ended", "token")

    def __init__(self) -> None:
        self.conn: Connection | None = None
        self.token: Token[tuple[Transaction, ...]] | None = None
        self.ended = False


class TransactionManager:
    """Runs units of work in transactions with retry, savepoint nesting and hooks.

    ``retries`` is how many times a unit is re-run after its first attempt (so
    ``Settings.retry_attempts - 1``); delays are capped full-jitter exponential backoff.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        retries: int = 4,
        base_delay: float = 0.01,
        max_delay: float = 1.0,
        budget: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.engine = engine
        self.retries = check_retries(retries)
        if not base_delay >= 0 or not max_delay >= 0:
            raise InvalidInput("base_delay and max_delay must be >= 0")
        self.base_delay = float(base_delay)
        self.max_delay = float(max_delay)
        if not budget >= 0:
            raise InvalidInput("budget must be >= 0")
        #: Seconds a unit keeps re-running after lost or refused connections (0: count
        #: ``retries`` only); see :meth:`run`.
        self.budget = float(budget)
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._sqlite = engine.dialect.name == "sqlite"
        self._stats: Counter[str] = Counter()
        self._backoff_total = 0.0
        self._lock = threading.Lock()
        self._schema_at_head = False
        """Set once an error of the kind that may mean an old schema found it at head."""
        # --- http: read replicas (govc_db/db/replicas.py); None: everything on `engine` ---
        self.router: ReplicaRouter | None = None

    @classmethod
    def from_settings(cls, engine: Engine, settings: Settings, **kwargs: Any) -> TransactionManager:
        """A manager with the retry policy of ``settings`` (``kwargs`` inject clock/sleep/rng)."""
        return cls(
            engine,
            retries=settings.retry_attempts - 1,
            base_delay=settings.retry_base_delay,
            max_delay=settings.retry_max_delay,
            budget=settings.retry_budget,
            **kwargs,
        )

    # -- public ------------------------------------------------------------------------
    def current(self) -> Transaction | None:
        """The innermost transaction of this manager open in this thread/task, or None."""
        for tx in reversed(_OPEN.get()):
            if tx.manager is self:
                return tx
        return None

    def backoff(self, retry: int) -> float:
        """The delay before retry number ``retry`` (1-based): capped full jitter."""
        return full_jitter(retry, self.base_delay, self.max_delay, self._rng)

    def get_stats(self) -> dict[str, Any]:
        """Counters: transactions, commits, rollbacks, savepoints, retries by reason,
        disconnects, exhausted, unknown COMMIT outcomes and how they resolved, hook errors.
        """
        with self._lock:
            s = Counter(self._stats)
            backoff = self._backoff_total
        reasons = {r: s[f"retries_{r}"] for r in _REASON_KEYS}
        out: dict[str, Any] = {k: s[k] for k in _STAT_KEYS}
        out.update(retries=sum(reasons.values()), retries_by_reason=reasons)
        out["backoff_seconds"] = backoff
        return out

    @contextmanager
    def begin(
        self,
        *,
        write: bool = True,
        isolation: str | None = None,
        readonly: bool = False,
        what: str = "transaction",
    ) -> Iterator[Transaction]:
        """One transaction around a ``with`` block, **without retry** (a block cannot be
        re-run); inside an open transaction, a savepoint. Driver errors are translated.
        """
        iso = check_isolation(isolation)
        parent = self.current()
        if parent is not None:
            with (
                self._translating(what, parent.readonly),
                self._savepoint(parent, write, iso, readonly) as tx,
            ):
                yield tx
            return
        with self._translating(what, readonly):
            opened = _Opened()
            try:
                with self._root(write, iso, readonly, opened=opened) as tx:
                    yield tx
            except BaseException as exc:
                self._recover(opened)
                if not isinstance(exc, _CommitUnknown):
                    raise
                self._count("commit_unknown")
                raise StoreUnavailable(
                    f"{what} failed: the connection was lost during COMMIT, so whether it "
                    "committed is unknown"
                ) from exc.__cause__
        self._run_hooks(tx)

    def run(
        self,
        fn: Callable[[Connection], T],
        *,
        write: bool,
        isolation: str | None = None,
        readonly: bool = False,
        retries: int | None = None,
        verify_commit: Callable[[], bool] | None = None,
        what: str = "transaction",
    ) -> T:
        """``fn(connection)`` in a transaction, committed, retried as a whole when allowed.

        Inside an open transaction it runs in a savepoint and does not retry on its own.
        Raises the (translated) error of ``fn``, or ``StoreUnavailable`` once ``retries``
        re-runs were used up.
        """
        iso = check_isolation(isolation)
        parent = self.current()
        if parent is not None:
            with (
                self._translating(what, parent.readonly),
                self._savepoint(parent, write, iso, readonly) as nested,
            ):
                return fn(nested.connection)
        limit = self.retries if retries is None else check_retries(retries)
        attempt = 0
        # The result and transaction of an attempt whose COMMIT outcome is unknown.
        pending: tuple[T, Transaction] | None = None
        started = self._clock()
        while True:
            try:
                if pending is not None:
                    assert verify_commit is not None
                    if verify_commit():
                        self._count("commit_unknown_committed")
                        self._run_hooks(pending[1])
                        return pending[0]
                    self._count("commit_unknown_retried")
                    pending = None
                out: list[T] = []
                opened = _Opened()
                try:
                    with self._root(write, iso, readonly, retry=attempt > 0, opened=opened) as tx:
                        out.append(fn(tx.connection))
                except BaseException:
                    self._recover(opened)
                    raise
            except _CommitUnknown as exc:
                self._count("commit_unknown")
                cause: BaseException = exc.__cause__ or exc
                if verify_commit is not None:
                    pending = (out[0], tx)
                elif write:
                    # Re-running could apply the writes twice: report, never guess.
                    raise StoreUnavailable(
                        f"{what} failed: the connection was lost during COMMIT, so whether "
                        "it committed is unknown"
                    ) from cause
                reason = "disconnect"
            except Exception as exc:
                found = retry_reason(exc)
                if found is None or (readonly and is_read_only_error(exc)):
                    if isinstance(exc, GovcError) or not isinstance(
                        exc, sa_exc.SQLAlchemyError | OSError
                    ):
                        raise
                    raise self._translate(exc, what, readonly) from exc
                reason, cause = found, exc
                if reason == "prepared":
                    disable_server_prepares(
                        self.engine,
                        f"the server reported a prepared-statement conflict (SQLSTATE "
                        f"{sqlstate(exc)}), the sign of a pooler in transaction mode",
                    )
            else:
                self._run_hooks(tx)
                return out[0]
            attempt += 1
            elapsed = self._clock() - started
            # Conflicts are bounded by count. Lost or refused connections, by time when a
            # budget is set (and no explicit ``retries``): a restarting server refuses
            # connections for a second or two, however many attempts fit in that window.
            by_time = reason == "disconnect" and self.budget > 0 and retries is None
            over = elapsed >= self.budget or attempt > MAX_RETRIES if by_time else attempt > limit
            if over:
                self._count("exhausted")
                raise self._exhausted(
                    cause, what, readonly, reason, attempt, elapsed, pending
                ) from cause
            self._count(f"retries_{reason}")
            delay = self.backoff(attempt)
            if by_time:
                delay = min(delay, max(0.0, self.budget - elapsed))
            log.info("%s: retry %d after %s, in %.3f s", what, attempt, reason, delay)
            with self._lock:
                self._backoff_total += delay
            self._sleep(delay)

    def _exhausted(
        self,
        cause: BaseException,
        what: str,
        readonly: bool,
        reason: str,
        attempt: int,
        elapsed: float,
        pending: object,
    ) -> StoreUnavailable:
        """The error a unit raises once its retries are spent: the translation of the last
        failure (typed: refused, lost, conflict ...) with how long it tried."""
        outcome = " (the outcome of the last COMMIT is unknown)" if pending else ""
        base = self._translate(cause, what, readonly)
        kind = type(base) if isinstance(base, StoreUnavailable) else StoreUnavailable
        text = str(base) if isinstance(base, StoreUnavailable) else f"{what} failed: {reason}"
        return kind(f"{text}{outcome}; gave up after {attempt} attempts over {elapsed:.3f} s")

    # -- internals ---------------------------------------------------------------------
    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] += n

    def _commit(self, trans: RootTransaction) -> None:
        """The COMMIT step (a seam for fault tests: the database stays real)."""
        trans.commit()

    def _recover(self, opened: _Opened) -> None:
        """End what :meth:`_root` left open when its generator was cut at its ``yield``
        (see :class:`_Opened`); nothing when it ended normally. Every step is guarded:
        it runs while an interrupt is already on its way to the caller."""
        if opened.ended or opened.conn is None:
            return
        opened.ended = True
        self._count("rollbacks")
        if opened.token is not None:
            with suppress(ValueError, RuntimeError):  # reset already, or another context
                _OPEN.reset(opened.token)
        # Dropped, not returned to the pool: closing the driver's connection ends its
        # transaction, and no per-transaction setting (SQLite's query_only) outlives it.
        try:
            opened.conn.invalidate()
        finally:
            opened.conn.close()

    @contextmanager
    def _root(
        self,
        write: bool,
        isolation: str | None,
        readonly: bool,
        *,
        retry: bool = False,
        opened: _Opened | None = None,
    ) -> Iterator[Transaction]:
        # --- http: a read may run on a replica; a retried one runs on the primary ---
        router = self.router
        if router is None or write:
            connecting = self.engine.connect()
        else:
            connecting = router.connect(primary=retry or isolation is not None)
        try:
            with connecting as conn:
                self._count("transactions")
                if write:
                    # SQLite: BEGIN IMMEDIATE (see db.engine), so writers queue on the lock
                    # instead of failing to upgrade a read transaction.
                    conn = conn.execution_options(**{WRITE_OPTION: True})
                tx = Transaction(
                    self, conn, write=write, isolation=isolation, readonly=readonly, parent=None
                )
                token = _OPEN.set((*_OPEN.get(), tx))
                try:
                    trans = conn.begin()
                    if opened is not None:
                        opened.conn, opened.token = conn, token
                    try:
                        self._configure(conn, isolation, readonly)
                        yield tx
                    except (NotFound, InvalidInput) as exc:
                        if write:
                            self._abandon(conn, trans, exc)
                        else:
                            self._end_read(conn, trans, exc)
                        raise
                    except BaseException as exc:
                        self._abandon(conn, trans, exc)
                        raise
                    try:
                        self._commit(trans)
                    except Exception as exc:
                        self._count("rollbacks")
                        if is_disconnect(exc):
                            self._count("disconnects")
                            raise _CommitUnknown() from exc
                        raise
                    self._count("commits")
                    if write and router is not None:
                        router.note_write(conn)  # --- http: read-your-writes position ---
                finally:
                    _OPEN.reset(token)
                    if opened is not None:
                        opened.token = None
                    if readonly and self._sqlite:
                        self._sqlite_query_only_off(conn)
        finally:
            # Not run when the generator is cut at its yield (see _Opened): then the
            # caller's _recover() ends what is open.
            if opened is not None:
                opened.ended = True

    @contextmanager
    def _savepoint(
        self, parent: Transaction, write: bool, isolation: str | None, readonly: bool
    ) -> Iterator[Transaction]:
        if isolation is not None and isolation != parent.isolation:
            raise InvalidInput(
                "a nested transaction cannot change the isolation level of the outer one"
            )
        if readonly and not parent.readonly:
            raise InvalidInput("a read-only transaction cannot be nested in a read-write one")
        if write and parent.readonly:
            raise GovcError("cannot write in a read-only transaction")
        self._count("savepoints")
        conn = parent.connection
        tx = Transaction(
            self,
            conn,
            write=parent.write,
            isolation=parent.isolation,
            readonly=parent.readonly,
            parent=parent,
        )
        token = _OPEN.set((*_OPEN.get(), tx))
        try:
            savepoint = conn.begin_nested()
            try:
                yield tx
            except BaseException:
                self._count("savepoint_rollbacks")
                try:
                    savepoint.rollback()
                except Exception:  # the connection is gone; the outer rollback handles it
                    log.debug("savepoint rollback failed", exc_info=True)
                raise
            savepoint.commit()
            parent.hooks.extend(tx.hooks)
        finally:
            _OPEN.reset(token)

    def _configure(self, conn: Connection, isolation: str | None, readonly: bool) -> None:
        if self._sqlite:
            if readonly:
                conn.exec_driver_sql("PRAGMA query_only = ON")
            return
        modes = [] if isolation is None else [f"ISOLATION LEVEL {isolation}"]
        if readonly:
            modes.append("READ ONLY")
        if modes:
            # Values come from ISOLATION_LEVELS only; SET TRANSACTION must be the first
            # statement of the transaction, which it is here.
            conn.exec_driver_sql("SET TRANSACTION " + ", ".join(modes))

    def _end_read(self, conn: Connection, trans: RootTransaction, exc: BaseException) -> None:
        """End a read that failed with our own error (the database is fine) by COMMIT:
        nothing was written, so it undoes nothing, and unlike ROLLBACK it keeps the
        connection's prepared statements, which psycopg deallocates on every rollback."""
        try:
            trans.commit()
        except Exception:
            self._abandon(conn, trans, exc)

    def _abandon(self, conn: Connection, trans: RootTransaction, exc: BaseException) -> None:
        self._count("rollbacks")
        if is_disconnect(exc):
            self._count("disconnects")
            if not conn.invalidated:
                # SQLAlchemy only invalidates when the driver marks the connection broken;
                # a 25006 (standby) or 57P0x answer may leave it looking healthy.
                conn.invalidate(exc)
        try:
            trans.rollback()
        except Exception:
            log.debug("rollback failed; dropping the connection", exc_info=True)
            if not conn.invalidated:
                conn.invalidate()

    def _sqlite_query_only_off(self, conn: Connection) -> None:
        try:
            if not conn.invalidated and not conn.closed:
                conn.connection.driver_connection.execute(  # type: ignore[union-attr]
                    "PRAGMA query_only = OFF"
                )
        except Exception:
            # Never hand a query-only connection back to the pool.
            log.debug("could not reset query_only", exc_info=True)
            conn.invalidate()

    def _run_hooks(self, tx: Transaction) -> None:
        for hook in tx.hooks:
            try:
                hook()
            except Exception:  # a subscriber's failure must not fail a committed write
                self._count("hook_errors")
                log.exception("after-commit hook failed")

    def _translate(self, exc: BaseException, what: str, readonly: bool) -> GovcError:
        if readonly and is_read_only_error(exc):
            return GovcError(f"{what} failed: the transaction is read-only")
        if schema_mismatch(exc) and self._schema_unchecked():
            from govc_db.db.migrate import schema_problem  # Alembic: only on this path

            problem = schema_problem(self.engine)
            if problem is None:
                self._schema_at_head = True  # other errors of the kind: checked once
            else:
                return SchemaNotReady(f"{what} failed: {problem}")
        return translate(exc, what)

    def _schema_unchecked(self) -> bool:
        """Whether the schema revision may be read to explain an error: not once it was
        found at head, not inside an open transaction (a second connection could wait for
        the pool; with a single shared connection -- in-memory SQLite -- its use would end
        the caller's transaction), and not on a single-connection pool."""
        return (
            not self._schema_at_head
            and self.current() is None
            and not isinstance(self.engine.pool, StaticPool)
        )

    @contextmanager
    def _translating(self, what: str, readonly: bool) -> Iterator[None]:
        try:
            yield
        except GovcError:
            raise
        except (sa_exc.SQLAlchemyError, OSError) as exc:
            raise self._translate(exc, what, readonly) from exc

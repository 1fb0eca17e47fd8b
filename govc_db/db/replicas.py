"""Read replicas (the seed's load balancer) with read-your-writes by WAL position.

:class:`ReplicaRouter` decides which engine a *read* unit runs on; the transaction
manager asks it (``TransactionManager.router``) for every root read transaction and
tells it about every committed write. Writes, retried reads and reads with an explicit
isolation level always run on the primary.

Read-your-writes, the GitLab way minus its known bugs:

* After every write this Store commits, the primary's ``pg_current_wal_insert_lsn()``
  (an upper bound of the commit record's end) and timeline are remembered. A replica
  serves a read only if *that replica* has replayed up to that position on the same
  timeline -- checked on the connection about to run the read, or known from an earlier
  check of the same replica (a replica's replay position only grows within a timeline).
  There is no global "caught up" flag, so stickiness to the primary ends only when the
  replica actually chosen has caught up (GitLab dropped it when *any* replica had).
* Positions are compared only within one timeline: a replica on another timeline (a
  failover happened) never counts as caught up, and a replica that is no longer in
  recovery (promoted) is ejected.
* A read cancelled on a replica by a recovery conflict (SQLSTATE 40001) or a connection
  lost there is retried by the transaction manager, and retries run on the primary.
* A replica that cannot be reached or checked is ejected (the read goes to the next
  replica or the primary in the same call: nothing fails) and checked again after
  ``Settings.replica_check_interval`` seconds; it is re-admitted when it answers.
* Mutable query-cache fills (refs) are refused from replica connections: a lagging
  replica must not put an old ref into the cache after an invalidation. Immutable
  objects are cached as usual.

Written by hand: neither SQLAlchemy nor psycopg routes by replay position.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import URL

from govc_db.db.cache import TOKEN_KEY
from govc_db.db.engine import make_engine, normalize_url, safe_url
from govc_db.errors import InvalidInput

if TYPE_CHECKING:
    from govc_db.db.txn import TransactionManager
    from govc_db.settings import Settings

__all__ = ["Replica", "ReplicaRouter", "install_replicas", "parse_lsn"]

log = logging.getLogger("govc_db.db")

#: A WAL position: (timeline, LSN as an int).
Position = tuple[int, int]

_UNKNOWN_WRITE: Position = (-1, 2**64)  # never reached: reads stay on the primary

_CHECK_SQL = (
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,"
    " (SELECT received_tli FROM pg_stat_wal_receiver)"
)
_WRITE_SQL = (
    "SELECT pg_current_wal_insert_lsn()::text, pg_walfile_name(pg_current_wal_insert_lsn())"
)

_REPLICA_COUNTERS = (
    "reads", "checks", "lagging", "ejections", "readmissions", "retried_on_primary",
)  # fmt: skip

# The replica the last read of this context ran on (to count retries moved to the primary).
_LAST: ContextVar[Replica | None] = ContextVar("govc_db_last_replica", default=None)


def parse_lsn(text: str) -> int:
    """``'16/B374D848'`` -> int."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


class Replica:
    """One replica: its engine, health and the last replay position seen."""

    def __init__(self, name: str, engine: Engine) -> None:
        self.name = name
        self.engine = engine
        self.healthy = True
        self.checked_at = float("-inf")
        self.replayed: Position | None = None
        self.probing = False
        self.stats: Counter[str] = Counter()


class ReplicaRouter:
    """Chooses the engine of each read unit; see the module docstring."""

    def __init__(
        self,
        primary: Engine,
        replicas: list[Replica],
        *,
        interval: float,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.replicas = replicas
        self.interval = interval
        self._timer = timer
        self._lock = threading.Lock()
        self._written: Position | None = None
        self._turn = itertools.count()
        self._stats: Counter[str] = Counter()
        for r in replicas:
            event.listen(r.engine, "checkout", _refuse_mutable_fills)

    # -- the transaction manager's two hooks --------------------------------------------
    def connect(self, *, primary: bool = False) -> Connection:
        """A connection for a read unit: a caught-up healthy replica's, else the primary's."""
        last = _LAST.get()
        if primary:
            if last is not None:
                _LAST.set(None)
                self._count(last, "retried_on_primary")
            with self._lock:
                self._stats["primary_reads"] += 1
            return self.primary.connect()
        target = self._written
        n = len(self.replicas)
        start = next(self._turn)
        for i in range(n):
            replica = self.replicas[(start + i) % n]
            conn = self._try(replica, target)
            if conn is not None:
                _LAST.set(replica)
                return conn
        if last is not None:
            _LAST.set(None)
        with self._lock:
            self._stats["primary_reads"] += 1
        return self.primary.connect()

    def note_write(self, conn: Connection) -> None:
        """After a write committed on ``conn``: remember the primary's WAL position."""
        try:
            driver: Any = conn.connection.driver_connection
            driver.autocommit = True  # one statement, no transaction: no extra round trip
            try:
                lsn, walfile = driver.execute(_WRITE_SQL).fetchone()
            finally:
                driver.autocommit = False
            pos: Position = (int(walfile[:8], 16), parse_lsn(lsn))
        except Exception:
            # Position unknown: reads stay on the primary until a later write is noted.
            log.debug("could not read the WAL position after a write", exc_info=True)
            pos = _UNKNOWN_WRITE
        with self._lock:
            self._stats["writes_noted"] += 1
            old = self._written
            if old is None or pos == _UNKNOWN_WRITE or old == _UNKNOWN_WRITE or pos > old:
                self._written = pos

    # -- internals ---------------------------------------------------------------------
    def _try(self, replica: Replica, target: Position | None) -> Connection | None:
        now = self._timer()
        with self._lock:
            if not replica.healthy:
                if replica.probing or now - replica.checked_at < self.interval:
                    return None
                replica.probing = True  # one caller re-checks an ejected replica
            fresh = now - replica.checked_at < self.interval
            known = replica.replayed
            need_check = not (fresh and (target is None or _caught_up(known, target)))
        try:
            conn = replica.engine.connect()
        except Exception as exc:
            self._eject(replica, exc)
            return None
        if not need_check:
            self._count(replica, "reads")
            return conn
        try:
            # First statement of the read's own transaction: its snapshot is taken after
            # the replay position was read, so it holds everything up to that position.
            driver: Any = conn.connection.driver_connection
            recovering, replay, tli = driver.execute(_CHECK_SQL).fetchone()
        except Exception as exc:
            conn.invalidate()
            conn.close()
            self._eject(replica, exc)
            return None
        if not recovering:
            conn.close()
            self._eject(replica, None, why="is not in recovery (promoted?)")
            return None
        pos = None if replay is None or tli is None else (int(tli), parse_lsn(replay))
        with self._lock:
            replica.checked_at = self._timer()
            replica.replayed = pos
            replica.probing = False
            replica.stats["checks"] += 1
            if not replica.healthy:
                replica.healthy = True
                replica.stats["readmissions"] += 1
                log.info("replica %s re-admitted", replica.name)
        if target is not None and not _caught_up(pos, target):
            # Rolled back by the pool; the read goes to the next replica or the primary.
            conn.close()
            self._count(replica, "lagging")
            return None
        self._count(replica, "reads")
        return conn

    def _eject(self, replica: Replica, exc: BaseException | None, why: str = "") -> None:
        with self._lock:
            was = replica.healthy
            replica.healthy = False
            replica.probing = False
            replica.checked_at = self._timer()
            if was:
                replica.stats["ejections"] += 1
        if was:
            reason = why or (type(exc).__name__ if exc is not None else "unreachable")
            log.warning("replica %s ejected: %s", replica.name, reason)

    def _count(self, replica: Replica, key: str) -> None:
        with self._lock:
            replica.stats[key] += 1

    def get_stats(self) -> dict[str, Any]:
        """Reads sent to the primary, writes noted, and per replica (by masked URL):
        healthy, reads, checks, lagging refusals, ejections, re-admissions, retries moved
        to the primary, and the replay position seen last."""
        with self._lock:
            out: dict[str, Any] = {
                "primary_reads": self._stats["primary_reads"],
                "writes_noted": self._stats["writes_noted"],
                "replicas": {},
            }
            for r in self.replicas:
                out["replicas"][r.name] = {
                    "healthy": r.healthy,
                    **{k: r.stats[k] for k in _REPLICA_COUNTERS},
                    "replay_lsn": None if r.replayed is None else r.replayed[1],
                    "timeline": None if r.replayed is None else r.replayed[0],
                }
            return out

    def close(self) -> None:
        """Dispose of the replicas' engines."""
        for r in self.replicas:
            r.engine.dispose()


def _caught_up(pos: Position | None, target: Position) -> bool:
    return pos is not None and pos[0] == target[0] and pos[1] >= target[1]


def _refuse_mutable_fills(dbapi_conn: Any, record: Any, proxy: Any) -> None:
    # A token older than any flush: the query cache refuses mutable puts made with it.
    record.info[TOKEN_KEY] = -1


def install_replicas(txn: TransactionManager, url: URL, settings: Settings) -> ReplicaRouter | None:
    """Route ``txn``'s reads over ``settings.replica_urls`` (None when there are none)."""
    if not settings.replica_urls:
        return None
    if normalize_url(url).get_backend_name() != "postgresql":
        raise InvalidInput(
            "Settings.replica_urls is set but the database is SQLite, which has no read "
            "replicas: leave replica_urls empty"
        )
    replicas: list[Replica] = []
    for raw in settings.replica_urls:
        parsed = normalize_url(raw)
        if parsed.get_backend_name() != "postgresql":
            raise InvalidInput("Settings.replica_urls must be PostgreSQL URLs")
        replicas.append(Replica(safe_url(parsed), make_engine(parsed, settings)))
    router = ReplicaRouter(txn.engine, replicas, interval=settings.replica_check_interval)
    txn.router = router
    return router

"""Ctrl-C (``KeyboardInterrupt``) injected at many points of a commit and of reads, on
both backends. The database stays real: a profile hook (``sys.setprofile``) raises
``KeyboardInterrupt`` at the N-th Python or C call of the operation -- before or right
after a driver's ``execute``/``executemany``/``commit``, inside SQLAlchemy, inside ours.

After every interruption: the ``KeyboardInterrupt`` reached the caller (never swallowed,
never turned into a GovcError or a cache miss), no connection is left holding a
transaction (SQLite: another connection takes the write lock at once; PostgreSQL: no
session of ours idle in transaction), the commit is all or nothing, and the same Store
keeps working. ``verify()`` is clean at the end.
"""

from __future__ import annotations

import gc
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest
import sqlalchemy as sa
from _faults import SIG

import govc_db
from govc_db import Repository, Store
from govc_db.perf.memory import REDELIVER_AFTER, GcMonitor

pytestmark = pytest.mark.faults

POINTS = 40  # injection points per operation (plus every driver call seen)
_GC_ENTRY = GcMonitor.callback.__code__
DRIVER_CALLS = {
    "execute", "executemany", "commit", "rollback", "fetchall", "fetchone", "wait", "copy",
}  # fmt: skip


class Injector:
    """Count the injection points of a call, or raise KeyboardInterrupt at point ``at``.

    Points are every call into and return from govc_db code, and every driver call
    (``execute``, ``executemany``, ``commit``, psycopg's ``wait`` for the server's
    answer ...: on entry, and right after it returned). Not inside SQLAlchemy's or the
    standard library's own code, nor in our listeners SQLAlchemy calls from there, nor
    in the driver calls its pool makes (the rollback resetting a returned connection): a
    Ctrl-C there is theirs to handle (SQLAlchemy's pool, for one, loses a pool slot when
    interrupted between taking a record and wrapping it), and CPython drops anything
    raised in a finalizer or a gc callback run in the middle (GcMonitor's callback is
    tested below).
    """

    def __init__(self, at: int | None = None) -> None:
        self.at = at
        self.events = 0
        self.fired = False
        self.driver_events: list[int] = []
        self.where = ""

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        code = frame.f_code
        if event in ("c_call", "c_return"):
            if getattr(arg, "__name__", "") not in DRIVER_CALLS:  # sqlite3's are C
                return
            if _in_pool(frame):
                return
        elif "/psycopg/" in code.co_filename:  # psycopg's are Python
            if code.co_name not in DRIVER_CALLS or _in_pool(frame.f_back):
                return
        elif (
            "/govc_db/" not in code.co_filename or code is _GC_ENTRY or _called_by_sqlalchemy(frame)
        ):
            return
        self.events += 1
        if self.at is None:
            if event == "c_call" or (event == "call" and "/psycopg/" in code.co_filename):
                self.driver_events.append(self.events)
            return
        if self.events == self.at:
            self.fired = True
            name = getattr(arg, "__qualname__", "")
            self.where = f"{event} {name} in {frame.f_code.co_qualname}:{frame.f_lineno}"
            sys.setprofile(None)
            raise KeyboardInterrupt

    def run(self, fn: Callable[[], object]) -> None:
        gc.disable()  # no collection (and its finalizers) in the middle of the run
        sys.setprofile(self)
        try:
            fn()
        finally:
            sys.setprofile(None)
            gc.enable()


def _called_by_sqlalchemy(frame: FrameType) -> bool:
    """Whether this govc_db frame runs inside SQLAlchemy's own code (a pool or engine
    event listener of ours, such as the pool monitor's checkout counter): that is
    SQLAlchemy's critical section, as out of scope as its own lines."""
    caller = frame.f_back
    while caller is not None and "/govc_db/" in caller.f_code.co_filename:
        caller = caller.f_back
    return caller is not None and "/sqlalchemy/" in caller.f_code.co_filename


def _in_pool(frame: FrameType | None) -> bool:
    """Whether a driver call is made by SQLAlchemy's pool (the rollback that resets a
    returned connection, say): the pool's critical section, out of scope as above."""
    for _ in range(8):
        if frame is None:
            return False
        if "/sqlalchemy/pool/" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def points(fn: Callable[[], object]) -> list[int]:
    """Event numbers to interrupt at: ``POINTS`` spread over the whole call, plus each
    driver call and the events right around it (before the C call, right after it)."""
    counter = Injector()
    counter.run(fn)
    step = max(1, counter.events // POINTS)
    spread = set(range(1, counter.events, step))
    near = {e + d for e in counter.driver_events for d in (0, 1)}
    return sorted(p for p in spread | near if 0 < p < counter.events)


def no_open_transaction(store: Store, url: str) -> None:
    if store.engine.dialect.name == "sqlite":
        path = sa.make_url(url).database
        assert path
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # "database is locked" if a writer is left
            other.execute("ROLLBACK")
        finally:
            other.close()
    else:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                left = conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                        "current_database() AND application_name = 'govc_db' AND state "
                        "LIKE 'idle in transaction%'"
                    )
                ).scalar_one()
            assert left == 0
        finally:
            engine.dispose()
    assert store.metrics()["pool"]["checked_out"] in (0, None)


def interrupt_everywhere(
    store: Store, url: str, op: Callable[[int], object], after: Callable[[int], None]
) -> int:
    """Run ``op(i)`` interrupted at every point found; ``after(i)`` checks the aftermath.
    Returns how many interruptions reached the caller."""
    op(-1)  # warm up: the counted run should look like the interrupted ones
    where = points(lambda: op(0))
    hits = 0
    for i, at in enumerate(where, start=1):
        injector = Injector(at)
        try:
            injector.run(lambda i=i: op(i))  # type: ignore[misc]
        except KeyboardInterrupt:
            hits += 1

        else:
            assert not injector.fired, (
                f"KeyboardInterrupt at event {at} was swallowed: {injector.where}"
            )
        try:
            no_open_transaction(store, url)
        except AssertionError:
            raise AssertionError(f"left behind by a Ctrl-C at {injector.where}") from None
        after(i)
    assert hits >= len(where) * 3 // 4, (hits, len(where))
    print(
        f"FAULT-FIGURES Ctrl-C ({store.engine.dialect.name}): {len(where)} points, {hits} "
        "interrupted, every KeyboardInterrupt reached the caller, no transaction or lock "
        "left, Store usable at once"
    )
    return hits


@pytest.fixture
def repo(store: Store) -> Repository:
    r = store.create_repository("ctrl-c")
    r.commit("main", {"base.txt": b"base\n", "dir/x": b"x\n"}, message="base\n", author=SIG)
    return r


def test_ctrl_c_in_a_commit(store: Store, db_url: str, repo: Repository) -> None:
    def op(i: int) -> object:
        files = {f"c/{i}/{n}.txt": f"{i}.{n}\n".encode() for n in range(30)}
        return repo.commit("main", files, message=f"{i}\n", author=SIG)

    def after(i: int) -> None:
        head = repo.resolve("main")
        tree = {e.path for e in repo.walk(head)}
        mine = {p for p in tree if p.startswith(f"c/{i}/")}
        assert len(mine) in (0, 30)  # all or nothing
        # The same Store works at once (no reopen, no waiting on a lock).
        oid = repo.commit("main", {f"after/{i}": b"ok"}, message="after\n", author=SIG)
        assert repo.read(oid, f"after/{i}") == b"ok"

    assert interrupt_everywhere(store, db_url, op, after) >= POINTS
    report = repo.verify()
    assert report.ok, report.problems


def test_ctrl_c_in_reads(store: Store, db_url: str, repo: Repository) -> None:
    first = repo.resolve("main")
    # Written by another Store, so this one's cache has none of these objects: every
    # read below fetches (the cached read unit's autocommit fetch, or a unit).
    with govc_db.open(db_url) as other:
        files = {f"r/{i}": f"r{i}\n".encode() for i in range(400)}
        second = other.repository("ctrl-c").commit("main", files, message="r\n", author=SIG)

    def op(i: int) -> object:
        assert repo.read("main", f"r/{i % 400}") == f"r{i % 400}\n".encode()
        assert [c.oid for c in repo.log("main", limit=2)] == [second, first]
        return repo.diff(first, second)

    def after(i: int) -> None:
        assert repo.read("main", "dir/x") == b"x\n"

    assert interrupt_everywhere(store, db_url, op, after) >= POINTS
    assert repo.verify().ok


def test_ctrl_c_in_the_gc_monitor_callback_reaches_the_program() -> None:
    calls = 0

    def timer() -> float:
        nonlocal calls
        calls += 1
        raise KeyboardInterrupt

    # A process started in the background by a shell without job control (`cmd &` in a
    # script) inherits SIGINT ignored, and Python then installs no handler: Ctrl-C cannot
    # reach such a program at all, and interrupt_main() does nothing. The test installs
    # Python's own handler, as an interactive start has it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    monitor = GcMonitor(timer=timer)
    monitor.install()
    try:
        gc.collect()
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                # Handed back to this (the main) thread by a timer thread.
                time.sleep(REDELIVER_AFTER)
        except KeyboardInterrupt:
            pass
        else:
            threads = [t.name for t in threading.enumerate()]
            pytest.fail(f"no KeyboardInterrupt: {calls} callback call(s); threads {threads}")
    finally:
        monitor.uninstall()
        signal.signal(signal.SIGINT, previous)
    assert calls == 1


@pytest.mark.postgres
@pytest.mark.parametrize("warm_refs", [True, False], ids=["cached-read", "unit"])
def test_real_ctrl_c_while_a_read_waits_on_the_server(pg_url: str, warm_refs: bool) -> None:
    """A real signal while the statement runs on the server (blocked behind a lock): the
    query is cancelled, the KeyboardInterrupt reaches the caller (the cached read path
    once turned it into a cache miss and completed the read), nothing is left open."""
    with govc_db.open(pg_url) as store, govc_db.open(pg_url) as other:
        assert store.listener is not None and store.listener.wait_connected(10)
        repo = store.create_repository("sigint")
        repo.commit("main", {"a": b"a\n"}, message="a\n", author=SIG)
        other.repository("sigint").commit("main", {"b": b"b\n"}, message="b\n", author=SIG)
        if warm_refs:
            repo.resolve("main")  # refs cached: the read takes the autocommit fetch path
        blocker = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)

        def interrupt(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGALRM, interrupt)
        try:
            with blocker.connect() as conn:
                conn.exec_driver_sql("LOCK TABLE govc_objects IN ACCESS EXCLUSIVE MODE")
                signal.setitimer(signal.ITIMER_REAL, 0.5)
                with pytest.raises(KeyboardInterrupt):
                    repo.read("main", "b")
                conn.rollback()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            blocker.dispose()
        no_open_transaction(store, pg_url)
        assert repo.read("main", "b") == b"b\n"
        assert repo.verify().ok

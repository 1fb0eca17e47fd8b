"""Engine and pool: pool statistics, disconnects (incl. SQLSTATE 25006), fork safety, and
SQLite's pragmas and writer serialization, against real SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import multiprocessing
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from multiprocessing.connection import Connection as PipeEnd
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

import govc_db
from govc_db import Settings, Signature, Store
from govc_db.db.engine import WRITE_OPTION
from govc_db.db.pool import READONLY_OPTION, is_disconnect_sqlstate, pool_monitor
from govc_db.errors import StoreUnavailable

SIG = Signature("Pool", "pool@example.com", 1_700_000_000, 0)


def pool_stats(store: Store) -> dict[str, Any]:
    monitor = pool_monitor(store.engine)
    assert monitor is not None
    return monitor.get_stats()


@contextmanager
def opened(url: str, **settings: Any) -> Iterator[Store]:
    store = govc_db.open(url, Settings(**settings))
    try:
        yield store
    finally:
        store.close()


def seed(store: Store) -> govc_db.Repository:
    repo = store.create_repository("r")
    repo.commit("main", {"a.txt": b"a\n"}, message="seed\n", author=SIG)
    return repo


# -- classification ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("25006", True),  # read-only transaction: a standby after failover
        ("08006", True),  # connection failure
        ("08003", True),  # connection does not exist
        ("57P01", True),  # admin shutdown (pg_terminate_backend)
        ("57P02", True),
        ("57P03", True),  # cannot connect now (starting up)
        ("57014", False),  # query canceled: the connection is fine
        ("40001", False),  # serialization failure: retry, do not reconnect
        ("25P02", False),  # in failed transaction
        ("23505", False),
        (None, False),
    ],
)
def test_disconnect_sqlstates(code: str | None, expected: bool) -> None:
    assert is_disconnect_sqlstate(code) is expected


# -- pool statistics (both backends) ----------------------------------------------------------


def test_pool_stats_move(store: Store) -> None:
    before = pool_stats(store)
    repo = seed(store)
    assert repo.read("main", "a.txt") == b"a\n"
    after = pool_stats(store)
    assert after["checkouts"] > before["checkouts"]
    assert after["connects"] >= 1
    assert after["checkins"] == after["checkouts"]  # nothing leaked
    assert after["checked_out"] == 0
    assert after["size"] == store.settings.pool_size
    assert after["timeouts"] == after["disconnects"] == after["invalidations"] == 0
    with store.engine.connect():
        held = pool_stats(store)
        assert held["checked_out"] == 1
        assert store.metrics()["concurrency"]["pool_checked_out"] == 1
    assert pool_stats(store)["checked_out"] == 0
    assert store.metrics()["pool"]["checkouts"] >= after["checkouts"] + 1


def test_overflow_is_reported(db_url: str) -> None:
    with opened(db_url, pool_size=1, max_overflow=2) as store, ExitStack() as stack:
        for _ in range(3):
            stack.enter_context(store.engine.connect())
        stats = pool_stats(store)
        assert stats["checked_out"] == 3
        assert stats["overflow"] == 2
        assert stats["max_overflow"] == 2


def test_checkout_timeout_is_counted(db_url: str) -> None:
    with opened(db_url, pool_size=1, max_overflow=0, pool_timeout=0.0) as store:
        store.create_repository("r")
        with store.engine.connect(), pytest.raises(StoreUnavailable):
            store.list_repositories()
        assert pool_stats(store)["timeouts"] >= 1
        assert store.list_repositories() == ["r"]  # the pool recovers once one is free


# -- disconnects (PostgreSQL) ------------------------------------------------------------


def _backend_pid(store: Store) -> int:
    with store.engine.connect() as conn:
        pid = conn.exec_driver_sql("select pg_backend_pid()").scalar_one()
    return int(pid)


def _terminate(admin_url: str, pid: int) -> None:
    # Autocommit: pg_stat_activity is a snapshot taken once per transaction.
    engine = sa.create_engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select pg_terminate_backend(:p)"), {"p": pid})
            # pg_terminate_backend only signals: wait until the backend is really gone so
            # the store's next use meets a dead connection, whatever the scheduling.
            for _ in range(500):
                gone = conn.execute(
                    sa.text("select count(*) from pg_stat_activity where pid = :p"), {"p": pid}
                ).scalar_one()
                if not gone:
                    return
                time.sleep(0.01)
        raise AssertionError(f"backend {pid} did not exit")
    finally:
        engine.dispose()


@pytest.mark.parametrize("pre_ping", [True, False], ids=["pre_ping", "no_pre_ping"])
def test_terminated_backend_counts_as_disconnect(pg_url: str, pre_ping: bool) -> None:
    with opened(pg_url, pool_size=1, max_overflow=0, pool_pre_ping=pre_ping) as store:
        repo = seed(store)
        pid = _backend_pid(store)
        _terminate(pg_url, pid)
        try:
            assert repo.read("main", "a.txt") == b"a\n"
        except StoreUnavailable:
            # Without pre-ping the first statement meets the dead socket; a retrying
            # transaction manager may still hide it, so either outcome is correct.
            assert not pre_ping
        stats = pool_stats(store)
        assert stats["disconnects"] >= 1
        assert stats["invalidations"] >= 1
        # The same Store keeps working on a fresh connection.
        assert repo.read("main", "a.txt") == b"a\n"
        repo.commit("main", {"b.txt": b"b\n"}, message="after\n", author=SIG)
        assert _backend_pid(store) != pid
        assert pool_stats(store)["connects"] >= 2
        assert repo.verify().ok


def test_sqlstate_25006_is_a_disconnect(pg_url: str) -> None:
    with opened(pg_url, pool_size=1, max_overflow=0) as store:
        repo = seed(store)
        pid = _backend_pid(store)
        with (
            pytest.raises(sa.exc.DBAPIError) as info,
            store.engine.connect() as conn,
        ):
            conn.exec_driver_sql("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '25006'; END $$")
        assert info.value.connection_invalidated
        stats = pool_stats(store)
        assert stats["disconnects"] == 1
        assert stats["invalidations"] == 1
        # The invalidated connection is replaced, not handed out again.
        assert repo.read("main", "a.txt") == b"a\n"
        assert _backend_pid(store) != pid


def test_write_in_a_declared_read_only_transaction_is_not_a_disconnect(pg_url: str) -> None:
    with opened(pg_url, pool_size=1, max_overflow=0) as store:
        seed(store)
        pid = _backend_pid(store)
        with pytest.raises(sa.exc.DBAPIError) as info, store.engine.connect() as conn:
            conn = conn.execution_options(**{READONLY_OPTION: True})
            with conn.begin():
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                conn.exec_driver_sql("DELETE FROM govc_refs")
        assert info.value.orig is not None
        assert getattr(info.value.orig, "sqlstate", None) == "25006"
        assert not info.value.connection_invalidated
        stats = pool_stats(store)
        assert stats["disconnects"] == stats["invalidations"] == 0
        assert _backend_pid(store) == pid  # the healthy connection was kept


def test_read_only_server_after_failover_is_replaced(pg_url: str) -> None:
    """A pooled connection that now reaches a read-only server (25006 on write) is dropped."""
    with opened(pg_url, pool_size=1, max_overflow=0) as store:
        repo = seed(store)
        with store.engine.connect() as conn:
            # What a demoted primary looks like to an open session: writes fail with 25006.
            conn.exec_driver_sql("SET SESSION default_transaction_read_only = on")
            conn.commit()
        # Reported as unavailable, never as a driver error (or retried to success).
        with contextlib.suppress(StoreUnavailable):
            repo.commit("main", {"b.txt": b"b\n"}, message="b\n", author=SIG)
        assert pool_stats(store)["disconnects"] >= 1
        repo.commit("main", {"c.txt": b"c\n"}, message="c\n", author=SIG)
        assert repo.read("main", "c.txt") == b"c\n"
        assert repo.verify().ok


# -- fork safety (both backends) -----------------------------------------------------------


def _child(store: Store, out: PipeEnd) -> None:
    try:
        repo = store.repository("r")
        data = repo.read("main", "a.txt")
        repo.create_branch("child", "main")
        oid = repo.commit("child", {"child.txt": b"from child\n"}, message="c\n", author=SIG)
        out.send(("ok", data, oid, pool_stats(store)["disconnects"]))
    except BaseException as exc:  # report anything to the parent, then fail
        out.send(("error", repr(exc), "", -1))
        raise


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_child_uses_the_store(store: Store) -> None:
    repo = seed(store)
    assert repo.read("main", "a.txt") == b"a\n"  # the parent's pool holds a connection
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(store, send))
    child.start()
    send.close()
    try:
        assert receive.poll(60), "the child did not answer"
        kind, data, oid, disconnects = receive.recv()
    finally:
        child.join(60)
    assert kind == "ok", data
    assert child.exitcode == 0
    assert data == b"a\n"
    assert disconnects == 0
    # The parent's pooled connections were neither used nor closed by the child.
    assert repo.read("child", "child.txt") == b"from child\n"
    assert repo.resolve("child") == oid
    repo.commit("main", {"p.txt": b"parent\n"}, message="p\n", author=SIG)
    stats = pool_stats(store)
    assert stats["disconnects"] == 0
    assert stats["invalidations"] == 0
    assert repo.verify().ok


# -- SQLite ---------------------------------------------------------------------------


def test_sqlite_pragmas(sqlite_url: str) -> None:
    with opened(sqlite_url, sqlite_busy_timeout=12.5) as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 12500
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1


def test_sqlite_new_connections_write_nothing(tmp_path: Path) -> None:
    """Opening a Store and reading from an existing file writes nothing to it: a
    connection's set-up PRAGMAs must not rewrite the header (a write transaction per
    connection, contending with real writers)."""
    path = tmp_path / "existing.db"
    sqlite_url = f"sqlite:///{path}"
    with opened(sqlite_url) as store:
        store.upgrade()
        store.create_repository("r").commit(
            "main", {"f": b"x"}, author=Signature("a", "a@example.com", 0, 0), message="m"
        )
    watcher = sqlite3.connect(path, isolation_level=None)
    try:
        before = watcher.execute("PRAGMA data_version").fetchone()
        for _ in range(3):
            with opened(sqlite_url) as store:
                assert store.repository("r").read("main", "f") == b"x"
        assert watcher.execute("PRAGMA data_version").fetchone() == before
    finally:
        watcher.close()


def test_sqlite_new_file_returns_freed_pages(tmp_path: Path) -> None:
    """A file govc_db creates is INCREMENTAL auto-vacuum (set before its first table)."""
    path = tmp_path / "new.db"
    with govc_db.open(f"sqlite:///{path}") as store:
        store.upgrade()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA auto_vacuum").fetchone() == (2,)
    finally:
        conn.close()


def test_sqlite_writers_begin_immediate(sqlite_url: str) -> None:
    """A writer holds the write lock from BEGIN, before its first write."""
    path = sa.make_url(sqlite_url).database
    assert path is not None
    with opened(sqlite_url) as store, store.engine.connect() as conn:
        conn = conn.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            conn.exec_driver_sql("SELECT 1").all()
            other = sqlite3.connect(path, timeout=0, isolation_level=None)
            try:
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
                # Readers are not blocked by the writer in WAL mode.
                assert other.execute("SELECT count(*) FROM govc_repositories").fetchone()
            finally:
                other.close()


@pytest.mark.parametrize("cache", [False, True], ids=["uncached", "cached"])
@pytest.mark.parametrize("same_branch", [False, True], ids=["own_branch", "one_branch"])
def test_sqlite_threaded_writers_never_see_locked(
    sqlite_url: str, same_branch: bool, cache: bool
) -> None:
    threads, commits = 8, 4
    # Uncached, every read and write reaches SQLite's write lock and busy handling. Cached,
    # a reader may be handed a ref newer than its snapshot and must still read back the
    # commit (a regression test: that used to be NotFound now and then).
    with opened(sqlite_url, commit_rebase_attempts=1000, cache_enabled=cache) as store:
        repo = seed(store)
        for t in range(threads):
            repo.create_branch(f"t{t}", "main")
        errors: list[BaseException] = []
        start = threading.Barrier(threads)

        def writer(t: int) -> None:
            branch = "main" if same_branch else f"t{t}"
            try:
                start.wait()
                for i in range(commits):
                    path = f"t{t}/f{i}.txt"
                    repo.commit(branch, {path: f"{t}.{i}\n".encode()}, message="w\n", author=SIG)
                    assert repo.read(branch, path) == f"{t}.{i}\n".encode()
            except BaseException as exc:
                errors.append(exc)

        workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert errors == []
        for t in range(threads):
            branch = "main" if same_branch else f"t{t}"
            for i in range(commits):
                assert repo.read(branch, f"t{t}/f{i}.txt") == f"{t}.{i}\n".encode()
        expected = 1 + threads * commits if same_branch else 1 + commits
        assert len(list(repo.log("main" if same_branch else "t0"))) == expected
        assert pool_stats(store)["timeouts"] == 0
        assert repo.verify().ok

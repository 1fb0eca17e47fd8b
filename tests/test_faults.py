"""Fault tests: lost connections before and during COMMIT, pg_terminate_backend in the
middle of a stream of commits and reads, and a PostgreSQL cluster restarted under a
running Store (more in ``test_fault_*.py``).

The database is always real. The one test double replaces the manager's COMMIT *step*
(``TransactionManager._commit``) to lose the acknowledgement of a COMMIT that did (or did
not) happen, which a real server cannot be made to do on cue.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pg
import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

import govc_db
from govc_db import Repository, Settings, Signature, Store
from govc_db.db.txn import TransactionManager
from govc_db.errors import GovcError, InvalidInput, StoreUnavailable
from govc_db.models import CommitIndex, RefLog
from govc_db.types import RefUpdated

pytestmark = pytest.mark.faults

SIG = Signature("Grace Hopper", "grace@example.com", 1_700_000_000, 0)
T_COMMITS: sa.Table = CommitIndex.__table__  # type: ignore[assignment]
T_REFLOG: sa.Table = RefLog.__table__  # type: ignore[assignment]
KILL = sa.text(
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
    "current_database() AND pid <> pg_backend_pid() AND application_name = 'govc_db'"
)


def commit(repo: Repository, path: str, data: bytes) -> str:
    return repo.commit("main", {path: data}, message=f"{path}\n", author=SIG)


def row_count(store: Store, table: sa.Table) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def lost_connection() -> sa.exc.OperationalError:
    """What SQLAlchemy raises when the server connection drops under a statement."""
    return sa.exc.OperationalError(
        "COMMIT",
        None,
        psycopg.OperationalError("server closed the connection unexpectedly"),
        connection_invalidated=True,
    )


def quiet(store: Store) -> list[float]:
    sleeps: list[float] = []
    store.backend.txn = TransactionManager.from_settings(
        store.engine, store.settings, sleep=sleeps.append
    )
    return sleeps


def fail_commit_once(
    monkeypatch: pytest.MonkeyPatch, store: Store, step: Callable[[sa.RootTransaction], None]
) -> list[int]:
    """Replace the manager's COMMIT step by ``step`` for the first write, then restore it."""
    txn = store.backend.txn
    real = txn._commit
    used: list[int] = []

    def commit_step(trans: sa.RootTransaction) -> None:
        if used:
            real(trans)
            return
        used.append(1)
        step(trans)

    monkeypatch.setattr(txn, "_commit", commit_step)
    return used


@pytest.fixture
def repo(store: Store) -> Repository:
    r = store.create_repository("faults")
    commit(r, "base.txt", b"base\n")
    return r


@pytest.fixture
def admin(pg_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(pg_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        yield engine
    finally:
        engine.dispose()


# -- unknown COMMIT outcome ----------------------------------------------------------------


def test_lost_ack_of_a_commit_that_happened_is_not_redone(
    store: Store, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps = quiet(store)
    events: list[RefUpdated] = []
    store.subscribe(events.append)
    before = row_count(store, T_COMMITS)

    def committed_but_lost(trans: sa.RootTransaction) -> None:
        trans.commit()  # the server committed ...
        raise lost_connection()  # ... and the acknowledgement was lost

    used = fail_commit_once(monkeypatch, store, committed_but_lost)
    oid = commit(repo, "a.txt", b"a")
    assert used == [1]
    assert repo.resolve("main") == oid
    assert row_count(store, T_COMMITS) == before + 1
    assert [e.new for e in events] == [oid]  # hooks ran once
    stats = store.backend.txn.get_stats()
    assert stats["commit_unknown"] == 1 and stats["commit_unknown_committed"] == 1
    assert stats["commit_unknown_retried"] == 0 and len(sleeps) == 1
    assert repo.verify().ok


def test_lost_ack_of_a_commit_that_did_not_happen_is_redone(
    store: Store, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    quiet(store)
    events: list[RefUpdated] = []
    store.subscribe(events.append)
    before = row_count(store, T_REFLOG)

    def lost_before_commit(trans: sa.RootTransaction) -> None:
        trans.rollback()
        raise lost_connection()

    used = fail_commit_once(monkeypatch, store, lost_before_commit)
    oid = repo.create_branch("topic")
    assert used == [1]
    assert repo.branches() == {"main": oid, "topic": oid}
    assert row_count(store, T_REFLOG) == before + 1
    assert [(e.ref, e.new) for e in events] == [("refs/heads/topic", oid)]
    stats = store.backend.txn.get_stats()
    assert stats["commit_unknown"] == 1 and stats["commit_unknown_retried"] == 1


def test_unknown_outcome_without_a_way_to_verify_is_reported(
    store: Store, repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps = quiet(store)
    calls: list[int] = []

    def committed_but_lost(trans: sa.RootTransaction) -> None:
        trans.commit()
        raise lost_connection()

    fail_commit_once(monkeypatch, store, committed_but_lost)

    @store.transaction(retries=5)
    def work() -> None:
        calls.append(1)
        commit(repo, "a.txt", b"a")

    with pytest.raises(StoreUnavailable, match="unknown"):
        work()
    assert calls == [1] and sleeps == []  # never re-run blindly


def test_connection_killed_at_commit_is_resolved_by_rereading_the_ref(
    pg_url: str, admin: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with govc_db.open(pg_url) as store:
        quiet(store)
        repo = store.create_repository("faults")
        commit(repo, "base.txt", b"base\n")
        before = row_count(store, T_COMMITS)

        def kill_then_commit(trans: sa.RootTransaction) -> None:
            pid = trans.connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            with admin.connect() as conn:
                # The timeout form waits until the backend is gone (PostgreSQL 14+).
                gone = conn.execute(sa.text("SELECT pg_terminate_backend(:p, 5000)"), {"p": pid})
                assert gone.scalar_one() is True
            trans.commit()

        used = fail_commit_once(monkeypatch, store, kill_then_commit)
        oid = commit(repo, "a.txt", b"a")
        assert used == [1]
        assert repo.resolve("main") == oid
        assert row_count(store, T_COMMITS) == before + 1
        stats = store.backend.txn.get_stats()
        assert stats["commit_unknown"] == 1 and stats["commit_unknown_retried"] == 1
        assert repo.verify().ok


# -- lost connection before COMMIT ---------------------------------------------------------


def test_connection_killed_mid_transaction_is_retried(pg_url: str, admin: sa.Engine) -> None:
    with govc_db.open(pg_url) as store:
        quiet(store)
        repo = store.create_repository("faults")
        commit(repo, "base.txt", b"base\n")
        attempts: list[int] = []

        @store.transaction()
        def work() -> str:
            attempts.append(1)
            commit(repo, "a.txt", b"a")
            if len(attempts) == 1:
                tx = store.backend.txn.current()
                assert tx is not None
                pid = tx.connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
                with admin.connect() as conn:
                    conn.execute(sa.text("SELECT pg_terminate_backend(:p, 5000)"), {"p": pid})
            return commit(repo, "b.txt", b"b")

        oid = work()
        assert len(attempts) == 2
        assert repo.resolve("main") == oid
        assert len(list(repo.log("main"))) == 3
        assert store.backend.txn.get_stats()["retries_by_reason"]["disconnect"] == 1


@pytest.mark.slow
def test_terminating_backends_during_a_stream(pg_url: str, admin: sa.Engine) -> None:
    with govc_db.open(pg_url) as store:
        repo = store.create_repository("faults")
        commit(repo, "base.txt", b"base\n")
        stop = threading.Event()
        ok: list[tuple[str, bytes]] = []
        failed: list[GovcError] = []
        unexpected: list[BaseException] = []
        lock = threading.Lock()

        def worker(w: int) -> None:
            i = 0
            while i < 400 and (i < 20 or not stop.is_set()):
                path, data = f"w{w}/{i:03d}.txt", f"worker {w} #{i}\n".encode()
                i += 1
                try:
                    oid = commit(repo, path, data)
                    assert repo.read(oid, path) == data
                    repo.log("main", limit=3)
                    with lock:
                        ok.append((path, data))
                except GovcError as exc:  # allowed: a clean failure
                    with lock:
                        failed.append(exc)
                except BaseException as exc:  # a driver error leaked, or a wrong read
                    with lock:
                        unexpected.append(exc)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(2)]
        for t in threads:
            t.start()
        killed = 0
        try:
            with admin.connect() as conn:
                for _ in range(5):
                    time.sleep(0.05)  # pacing only; nothing is asserted on time
                    killed += sum(1 for (done,) in conn.execute(KILL) if done)
        finally:
            stop.set()
            for t in threads:
                t.join()

        assert unexpected == []
        assert killed > 0
        assert ok, f"no call succeeded; failures: {failed[:3]}"
        # Every reported success is there, exactly once; nothing half-done is visible.
        assert all(repo.read("main", path) == data for path, data in ok)
        files = [e.path for e in repo.walk("main")]
        assert len(files) == len(list(repo.log("main")))  # one new file per commit
        assert repo.verify().ok
        # The same Store keeps working.
        oid = commit(repo, "final.txt", b"final\n")
        assert repo.read(oid, "final.txt") == b"final\n"


# -- cluster restart -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.postgres
def test_store_recovers_after_a_cluster_restart(cluster: pg._LocalCluster) -> None:
    url = cluster.start()
    settings = Settings(retry_attempts=3, retry_max_delay=0.05, connect_timeout=2, retry_budget=0.3)
    with govc_db.open(url, settings=settings) as store:
        store.upgrade()
        repo = store.create_repository("restart")
        c1 = commit(repo, "a.txt", b"1\n")

        cluster.pg_ctl("-m", "fast", "stop")
        with pytest.raises(StoreUnavailable):
            commit(repo, "b.txt", b"2\n")
        with pytest.raises(StoreUnavailable):
            repo.read("main", "a.txt")
        with pytest.raises(StoreUnavailable):
            store.repository("restart")
        assert store.backend.txn.get_stats()["exhausted"] >= 2

        cluster.pg_ctl("-l", str(cluster.log), "-o", f"-p {cluster.port}", "start")
        c2 = commit(repo, "b.txt", b"2\n")
        assert repo.read("main", "a.txt") == b"1\n"
        assert repo.get_commit(c2).parents == [c1]
        assert store.repository("restart").verify().ok


@pytest.mark.parametrize(
    ("field", "value"),
    [("retry_budget", -1.0), ("retry_budget", 601.0), ("listener_probe_interval", -0.5)],
)
def test_fault_settings_are_validated(field: str, value: float) -> None:
    with pytest.raises(InvalidInput, match=field):
        Settings().replace(**{field: value})


def test_nul_in_a_message_is_invalid_input_on_every_backend(repo: Repository) -> None:
    message = "a\0b\n"
    head = repo.resolve("main")
    with pytest.raises(InvalidInput, match="NUL"):
        repo.commit("main", {"n.txt": b"n"}, message=message, author=SIG)
    with pytest.raises(InvalidInput, match="NUL"):
        repo.create_tag("t", message=message, tagger=SIG)
    assert repo.resolve("main") == head and repo.tags() == {}

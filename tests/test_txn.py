"""The transaction manager: store.transaction() as context manager and decorator, retry on
injected (real) serialization failures and deadlocks, backoff through injected sleep/rng,
after-commit hooks, savepoint nesting, read-only and isolation.

Failures are injected on PostgreSQL with ``RAISE EXCEPTION USING ERRCODE = ...`` inside
the unit, so the driver, SQLAlchemy and the manager all see a genuine server error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

import govc_db
from govc_db import InvalidInput, Repository, Settings, Signature, Store
from govc_db.db.txn import Transaction, TransactionManager
from govc_db.errors import GovcError, RefConflict, StoreUnavailable
from govc_db.models import CommitIndex, ObjectRow, Ref, RefLog
from govc_db.types import RefUpdated

SIG = Signature("Ada Lovelace", "ada@example.com", 1_700_000_000, 0)
T_REF: sa.Table = Ref.__table__  # type: ignore[assignment]
TABLES = {
    "objects": ObjectRow.__table__,
    "refs": Ref.__table__,
    "reflog": RefLog.__table__,
    "commits": CommitIndex.__table__,
}


def counts(store: Store) -> dict[str, int]:
    """Row counts of the tables a commit writes, read on a fresh connection."""
    with store.engine.connect() as conn:
        return {
            name: int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
            for name, t in TABLES.items()
        }


def commit(repo: Repository, path: str, data: bytes, branch: str = "main") -> str:
    return repo.commit(branch, {path: data}, message=f"{path}\n", author=SIG)


def raise_sqlstate(store: Store, code: str) -> None:
    """Make the server raise ``code`` inside the caller's (ambient) transaction."""
    with store.transaction() as tx:
        tx.connection.exec_driver_sql(
            f"DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '{code}'; END $$"
        )


def quiet_manager(store: Store, **kwargs: Any) -> list[float]:
    """Give ``store`` a manager whose backoff sleeps are recorded instead of slept."""
    sleeps: list[float] = []
    store.backend.txn = TransactionManager.from_settings(
        store.engine, store.settings, sleep=sleeps.append, **kwargs
    )
    return sleeps


class Recorder:
    def __init__(self) -> None:
        self.events: list[RefUpdated] = []

    def __call__(self, event: RefUpdated) -> None:
        self.events.append(event)


@pytest.fixture
def repo(store: Store) -> Repository:
    r = store.create_repository("txn")
    commit(r, "base.txt", b"base\n")
    return r


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    opened = govc_db.open(pg_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def pg_repo(pg_store: Store) -> Repository:
    r = pg_store.create_repository("txn")
    commit(r, "base.txt", b"base\n")
    return r


# -- context manager -----------------------------------------------------------------------


def test_context_manager_commits_calls_together(store: Store, repo: Repository) -> None:
    other = govc_db.open(store.engine.url)
    try:
        with store.transaction() as tx:
            assert isinstance(tx, Transaction) and not tx.nested
            a = commit(repo, "a.txt", b"a")
            b = commit(repo, "b.txt", b"b")
            repo.create_branch("topic", a)
            # Inside, the transaction sees its own writes ...
            assert repo.read("main", "a.txt") == b"a"
            assert repo.resolve("main") == b
            # ... and nobody else does yet.
            assert "topic" not in other.repository("txn").branches()
        assert other.repository("txn").branches() == {"main": b, "topic": a}
        assert [c.oid for c in repo.log("main", limit=2)] == [b, a]
        assert repo.verify().ok
    finally:
        other.close()


def test_exception_in_the_block_rolls_back_every_call(store: Store, repo: Repository) -> None:
    head = repo.resolve("main")
    before = counts(store)
    rec = Recorder()
    store.subscribe(rec)
    with pytest.raises(RuntimeError, match="boom"), store.transaction():
        commit(repo, "a.txt", b"a")
        commit(repo, "b.txt", b"b")
        repo.create_branch("topic")
        raise RuntimeError("boom")
    assert repo.resolve("main") == head
    assert repo.branches() == {"main": head}
    assert counts(store) == before
    assert rec.events == []
    assert repo.verify().ok
    # The store is usable afterwards.
    commit(repo, "c.txt", b"c")


def test_events_are_published_after_the_outer_commit(store: Store, repo: Repository) -> None:
    rec = Recorder()
    store.subscribe(rec)
    with store.transaction():
        a = commit(repo, "a.txt", b"a")
        b = commit(repo, "b.txt", b"b")
        assert rec.events == []
    assert [(e.ref, e.new) for e in rec.events] == [("refs/heads/main", a), ("refs/heads/main", b)]


def test_retries_is_refused_for_a_with_block(store: Store) -> None:
    scope = store.transaction(retries=3)
    with pytest.raises(InvalidInput, match="decorator"), scope:
        pass


# -- after-commit hooks --------------------------------------------------------------------


def test_hooks_run_once_after_commit_and_never_on_rollback(store: Store, repo: Repository) -> None:
    calls: list[str] = []

    def seen_by_others() -> bool:
        with store.engine.connect() as conn:
            n = conn.execute(sa.select(sa.func.count()).select_from(T_REF)).scalar_one()
        return int(n) == 2

    with store.transaction() as tx:
        repo.create_branch("topic")
        tx.after_commit(lambda: calls.append(f"committed, visible={seen_by_others()}"))
        assert calls == []
    assert calls == ["committed, visible=True"]

    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.after_commit(lambda: calls.append("rolled back"))
        raise RuntimeError
    assert calls == ["committed, visible=True"]


def test_a_failing_hook_does_not_fail_the_transaction(
    store: Store, repo: Repository, caplog: pytest.LogCaptureFixture
) -> None:
    def explode() -> None:
        raise RuntimeError("hook failed")

    with store.transaction() as tx:
        tx.after_commit(explode)
        commit(repo, "a.txt", b"a")
    assert repo.read("main", "a.txt") == b"a"
    assert store.backend.txn.get_stats()["hook_errors"] == 1
    assert "after-commit hook failed" in caplog.text
    with pytest.raises(InvalidInput):
        tx.after_commit("not callable")  # type: ignore[arg-type]


# -- nesting -------------------------------------------------------------------------------


def test_nested_failure_rolls_back_only_the_savepoint(store: Store, repo: Repository) -> None:
    rec = Recorder()
    store.subscribe(rec)
    with store.transaction() as outer:
        a = commit(repo, "a.txt", b"a")
        with pytest.raises(RuntimeError), store.transaction() as inner:
            assert inner.nested and inner.parent is outer
            assert inner.connection is outer.connection
            commit(repo, "lost.txt", b"lost")
            inner.after_commit(lambda: rec(RefUpdated("x", "dropped", None, None)))
            raise RuntimeError
        # A repository call that fails inside the transaction is undone alone.
        with pytest.raises(RefConflict):
            repo.commit("main", {"x": b"x"}, message="m\n", author=SIG, expected_head="0" * 40)
        c = commit(repo, "c.txt", b"c")
    assert repo.resolve("main") == c
    assert repo.get_commit(c).parents == [a]
    assert not repo.exists("main", "lost.txt")
    assert [e.new for e in rec.events] == [a, c]
    assert repo.verify().ok


def test_nested_hooks_join_the_outer_transaction(store: Store, repo: Repository) -> None:
    calls: list[str] = []
    with store.transaction():
        with store.transaction() as inner:
            inner.after_commit(lambda: calls.append("inner"))
        assert calls == []
    assert calls == ["inner"]


def test_nested_decorated_call_is_a_savepoint(store: Store, repo: Repository) -> None:
    @store.transaction()
    def add(path: str) -> str:
        return commit(repo, path, b"x")

    assert add.__name__ == "add"
    with pytest.raises(RuntimeError), store.transaction():
        add("a.txt")
        raise RuntimeError
    assert not repo.exists("main", "a.txt")
    oid = add("b.txt")
    assert repo.resolve("main") == oid


def test_nested_transaction_cannot_change_isolation_or_readonly(
    store: Store, repo: Repository
) -> None:
    with store.transaction(isolation="SERIALIZABLE"):
        with store.transaction(isolation="serializable"):
            pass
        with pytest.raises(InvalidInput), store.transaction(isolation="READ COMMITTED"):
            pass
        with pytest.raises(InvalidInput), store.transaction(readonly=True):
            pass


def test_units_and_transactions_of_other_threads_are_separate(
    store: Store, repo: Repository
) -> None:
    seen: list[Transaction | None] = []
    with store.transaction():
        t = threading.Thread(target=lambda: seen.append(store.backend.txn.current()))
        t.start()
        t.join()
    assert seen == [None]


# -- read-only and isolation ---------------------------------------------------------------


def test_readonly_rejects_writes(store: Store, repo: Repository) -> None:
    head = repo.resolve("main")
    with store.transaction(readonly=True) as tx:
        assert repo.read("main", "base.txt") == b"base\n"
        with pytest.raises(GovcError) as err:
            commit(repo, "a.txt", b"a")
        assert not isinstance(err.value, StoreUnavailable)
    with pytest.raises(GovcError) as err, store.transaction(readonly=True) as tx:
        tx.connection.execute(sa.delete(T_REF))
    assert "read-only" in str(err.value)
    assert not isinstance(err.value, StoreUnavailable)
    assert repo.resolve("main") == head
    # The pooled connection is writable again afterwards (SQLite: query_only reset).
    for i in range(3):
        commit(repo, f"after{i}.txt", b"ok")


def test_readonly_decorator_is_not_retried(store: Store, repo: Repository) -> None:
    sleeps = quiet_manager(store)
    attempts: list[int] = []

    @store.transaction(readonly=True)
    def sneaky() -> None:
        attempts.append(1)
        tx = store.backend.txn.current()
        assert tx is not None and tx.readonly
        tx.connection.execute(sa.delete(T_REF))

    with pytest.raises(GovcError, match="read-only"):
        sneaky()
    assert attempts == [1] and sleeps == []
    assert len(repo.branches()) == 1


@pytest.mark.parametrize(
    ("given", "level"),
    [
        ("serializable", "serializable"),
        ("REPEATABLE_READ", "repeatable read"),
        ("Read Committed", "read committed"),
    ],
)
def test_isolation_level_is_set_on_postgres(pg_store: Store, given: str, level: str) -> None:
    with pg_store.transaction(isolation=given) as tx:
        shown = tx.connection.exec_driver_sql("SHOW transaction_isolation").scalar_one()
    assert shown == level
    with pg_store.transaction(readonly=True) as tx:
        assert tx.connection.exec_driver_sql("SHOW transaction_read_only").scalar_one() == "on"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"isolation": "READ UNCOMMITTED"},
        {"isolation": "bogus"},
        {"isolation": 3},
        {"readonly": "yes"},
        {"retries": -1},
        {"retries": 1000},
        {"retries": True},
        {"retries": 1.5},
    ],
)
def test_arguments_are_validated(store: Store, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        store.transaction(**kwargs)


def test_every_isolation_level_is_accepted(store: Store, repo: Repository) -> None:
    # SQLite accepts them all and is always serializable.
    for level in ("READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE", None):
        with store.transaction(isolation=level):
            commit(repo, "f.txt", str(level).encode())
    assert repo.read("main", "f.txt") == b"None"


def test_settings_feed_the_retry_policy(db_url: str) -> None:
    settings = Settings(retry_attempts=3, retry_base_delay=0.5, retry_max_delay=2.0)
    with govc_db.open(db_url, settings=settings) as store:
        txn = store.backend.txn
        assert (txn.retries, txn.base_delay, txn.max_delay) == (2, 0.5, 2.0)


def test_closed_store_refuses_transactions(db_url: str) -> None:
    store = govc_db.open(db_url)
    store.close()
    with pytest.raises(GovcError, match="closed"):
        store.transaction()


# -- retry (PostgreSQL: real server errors) ------------------------------------------------


@pytest.mark.parametrize(("code", "reason"), [("40001", "serialization"), ("40P01", "deadlock")])
def test_decorator_retries_to_success_without_duplicates(
    pg_store: Store, pg_repo: Repository, code: str, reason: str
) -> None:
    sleeps = quiet_manager(pg_store, rng=lambda: 1.0)
    rec = Recorder()
    pg_store.subscribe(rec)
    before = counts(pg_store)
    attempts: list[int] = []
    hooks: list[int] = []

    @pg_store.transaction(retries=3)
    def work() -> tuple[str, str]:
        attempts.append(len(attempts) + 1)
        n = len(attempts)
        a = commit(pg_repo, "a.txt", b"a")
        pg_repo.create_branch("topic", a)
        with pg_store.transaction() as tx:
            tx.after_commit(lambda: hooks.append(n))
        b = commit(pg_repo, "b.txt", b"b")
        if n <= 2:
            raise_sqlstate(pg_store, code)
        return a, b

    a, b = work()
    assert attempts == [1, 2, 3]
    assert hooks == [3]
    assert pg_repo.branches() == {"main": b, "topic": a}
    assert [c.oid for c in pg_repo.log("main")][:2] == [b, a]
    after = counts(pg_store)
    # Exactly one run's worth: 2 commits x (blob + tree + commit), 1 new ref, 3 reflog rows.
    assert {k: after[k] - before[k] for k in after} == {
        "objects": 6,
        "refs": 1,
        "reflog": 3,
        "commits": 2,
    }
    assert len(rec.events) == 3
    stats = pg_store.backend.txn.get_stats()
    assert stats["retries_by_reason"][reason] == 2 and stats["retries"] == 2
    assert sleeps == [0.01, 0.02]
    assert pg_repo.verify().ok


def test_repository_calls_retry_on_their_own(pg_store: Store, pg_repo: Repository) -> None:
    quiet_manager(pg_store)
    fired: list[int] = []
    real_run_unit = pg_store.backend.run_unit

    # Inject at the unit level: the first attempt of the commit closure hits a deadlock
    # after the commit was written; the manager rolls it back and re-runs the closure.
    def run_unit(repo_id: int, fn: Callable[[Any], Any], **kw: Any) -> Any:
        def flaky(unit: Any) -> Any:
            result = fn(unit)
            if not fired:
                fired.append(1)
                unit.conn.exec_driver_sql(
                    "DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '40P01'; END $$"
                )
            return result

        return real_run_unit(repo_id, flaky, **kw)

    pg_store.backend.run_unit = run_unit  # type: ignore[method-assign]
    before = counts(pg_store)
    oid = commit(pg_repo, "a.txt", b"a")
    assert fired == [1]
    assert pg_repo.resolve("main") == oid
    after = counts(pg_store)
    assert after["commits"] - before["commits"] == 1
    assert after["reflog"] - before["reflog"] == 1
    assert pg_store.backend.txn.get_stats()["retries_by_reason"]["deadlock"] == 1


def test_backoff_follows_the_injected_rng_and_sleep(pg_store: Store) -> None:
    sleeps: list[float] = []
    ticks = iter(range(100))
    manager = TransactionManager(
        pg_store.engine,
        retries=4,
        base_delay=0.1,
        max_delay=0.25,
        sleep=sleeps.append,
        rng=lambda: 0.5,
        clock=lambda: float(next(ticks)),
    )
    attempts: list[int] = []

    def fn(conn: sa.Connection) -> int:
        attempts.append(1)
        if len(attempts) <= 4:
            conn.exec_driver_sql("DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '40001'; END $$")
        return int(conn.exec_driver_sql("SELECT 41 + 1").scalar_one())

    assert manager.run(fn, write=True) == 42
    # rng() * min(max_delay, base_delay * 2 ** (n - 1))
    assert sleeps == pytest.approx([0.05, 0.1, 0.125, 0.125])
    stats = manager.get_stats()
    assert stats["backoff_seconds"] == pytest.approx(0.4)
    assert stats["transactions"] == 5 and stats["commits"] == 1 and stats["rollbacks"] == 4


def test_exhausted_retries_raise_store_unavailable(pg_store: Store, pg_repo: Repository) -> None:
    sleeps = quiet_manager(pg_store)
    head = pg_repo.resolve("main")
    before = counts(pg_store)
    attempts: list[int] = []

    @pg_store.transaction(retries=2)
    def doomed() -> None:
        attempts.append(1)
        commit(pg_repo, "a.txt", b"a")
        raise_sqlstate(pg_store, "40001")

    with pytest.raises(StoreUnavailable, match="after 3 attempts") as err:
        doomed()
    assert attempts == [1, 1, 1] and len(sleeps) == 2
    assert isinstance(err.value.__cause__, StoreUnavailable)  # the last (translated) error
    assert isinstance(err.value.__cause__.__cause__, sa.exc.DBAPIError)
    assert pg_repo.resolve("main") == head
    assert counts(pg_store) == before
    assert pg_store.backend.txn.get_stats()["exhausted"] == 1


def test_non_retryable_errors_are_not_retried(pg_store: Store, pg_repo: Repository) -> None:
    sleeps = quiet_manager(pg_store)
    attempts: list[int] = []

    @pg_store.transaction()
    def bad() -> None:
        attempts.append(1)
        raise_sqlstate(pg_store, "22012")  # division_by_zero

    with pytest.raises(GovcError) as err:
        bad()
    assert "22012" in str(err.value) and not isinstance(err.value, StoreUnavailable)
    assert attempts == [1] and sleeps == []


def test_real_serialization_conflict_is_retried(pg_store: Store, pg_repo: Repository) -> None:
    quiet_manager(pg_store)
    barrier = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []

    @pg_store.transaction(isolation="SERIALIZABLE", retries=5)
    def grow(name: str, first: list[bool]) -> None:
        n = len(pg_repo.branches())  # both read the same refs ...
        if first:
            first.clear()
            barrier.wait()  # ... before either writes: a read/write dependency cycle
        pg_repo.create_branch(f"{name}-{n}")

    def worker(name: str) -> None:
        try:
            grow(name, [True])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    names = set(pg_repo.branches()) - {"main"}
    assert sorted(n.split("-")[1] for n in names) == ["1", "2"]
    assert pg_store.backend.txn.get_stats()["retries_by_reason"]["serialization"] >= 1

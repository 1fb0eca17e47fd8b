"""Speculative commits with the write pipeline (govc_db/db/pipeline.py, store/sql.py).

A commit assumes where its branch is, queues its writes and sends them together; whatever
the assumption got wrong is rolled back and decided again by a plain unit. These tests
make the assumption wrong in every way a real deployment can -- another Store or process
moved the branch, deleted the repository, the connection died -- and check the result is
exactly what a plain commit gives.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa
from test_pool import _backend_pid, _terminate, opened, pool_stats

import govc_db
from govc_db import NotFound, RefConflict, Signature, Store
from govc_db.errors import InvalidInput
from govc_db.models import ObjectRow

SIG = Signature("Pipe", "pipe@example.com", 1_700_000_000, 0)


def stats(store: Store) -> dict[str, int]:
    out: dict[str, int] = store.metrics()["pipeline"]
    return out


def commit(repo: govc_db.Repository, path: str, data: bytes, **kw: Any) -> str:
    return repo.commit("main", {path: data}, message=f"{path}\n", author=SIG, **kw)


def test_commit_sends_its_writes_as_one_pipeline(store: Store) -> None:
    repo = store.create_repository("r")
    first = commit(repo, "a.txt", b"1")
    commit(repo, "a.txt", b"2")
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", seen)
    before = stats(store)
    oid = commit(repo, "d/b.txt", b"3")
    after = stats(store)
    sa.event.remove(store.engine, "before_cursor_execute", seen)
    # Nothing ran statement by statement through SQLAlchemy (SQLite's BEGIN IMMEDIATE is
    # the transaction's own start), and exactly one pipeline carried the writes.
    assert [s for s in statements if not s.startswith("BEGIN")] == []
    assert after["pipelines"] == before["pipelines"] + 1
    assert after["speculative_units"] == before["speculative_units"] + 1
    assert after["fallbacks_expectation"] == after["fallbacks_error"] == 0
    # Everything a plain commit writes is there.
    assert repo.resolve("main") == oid
    assert repo.read("main", "d/b.txt") == b"3"
    assert [c.oid for c in repo.log("main")][-1] == first
    assert repo.reflog("main")[0].new == oid
    assert repo.verify().ok


def test_branch_moved_by_another_store_is_detected_and_rebased(db_url: str) -> None:
    # Without the row lock (which reads the head first: tests/test_commit_processes.py)
    # the stale assumption is what the compare-and-swap catches.
    with opened(db_url, commit_row_lock=False) as a, opened(db_url) as b:
        ra = a.create_repository("r")
        commit(ra, "a.txt", b"1")
        commit(ra, "a.txt", b"2")  # a now assumes main is here
        rb = b.repository("r")
        theirs = commit(rb, "b.txt", b"b")
        ours = commit(ra, "c.txt", b"c")
        assert stats(a)["fallbacks_expectation"] == 1
        assert ra.get_commit(ours).parents == [theirs]
        assert ra.read("main", "b.txt") == b"b"
        # The repository is contended now: the next commit is a plain one.
        theirs2 = commit(rb, "b.txt", b"b2")
        units = stats(a)["speculative_units"]
        ours2 = commit(ra, "d.txt", b"d")
        assert stats(a)["fallbacks_expectation"] == 1
        assert stats(a)["speculative_units"] == units
        assert ra.get_commit(ours2).parents == [theirs2]
        assert [c.oid for c in ra.log("main", limit=4)] == [ours2, theirs2, ours, theirs]
        assert ra.verify().ok


def test_expected_head_is_decided_by_the_database(db_url: str) -> None:
    with opened(db_url) as a, opened(db_url) as b:
        ra = a.create_repository("r")
        c1 = commit(ra, "a.txt", b"1")
        rb = b.repository("r")
        c2 = commit(rb, "a.txt", b"2")
        # a assumes c1; the database says c2, which is what the caller expects.
        c3 = commit(ra, "a.txt", b"3", expected_head=c2)
        assert ra.get_commit(c3).parents == [c2]
        with pytest.raises(RefConflict):
            commit(ra, "a.txt", b"4", expected_head=c1)
        assert ra.resolve("main") == c3
        assert ra.verify().ok


def test_commit_to_a_repository_deleted_elsewhere_is_not_found(db_url: str) -> None:
    with opened(db_url) as a, opened(db_url) as b:
        ra = a.create_repository("r")
        commit(ra, "a.txt", b"1")
        commit(ra, "a.txt", b"2")
        b.delete_repository("r")
        with pytest.raises(NotFound):
            commit(ra, "a.txt", b"3")
        assert b.list_repositories() == []
        t_obj: sa.Table = ObjectRow.__table__  # type: ignore[assignment]
        with b.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(t_obj)).scalar() == 0


def test_errors_decided_on_an_assumption_are_confirmed(store: Store) -> None:
    repo = store.create_repository("r")
    head = commit(repo, "a.txt", b"1")
    with pytest.raises(InvalidInput):
        commit(repo, "a.txt", b"1")  # nothing to commit
    with pytest.raises(NotFound):
        repo.commit("main", {"missing.txt": None}, message="rm\n", author=SIG)
    assert stats(store)["fallbacks_error"] == 2
    assert repo.resolve("main") == head
    assert len(repo.reflog("main")) == 1


def test_inside_a_transaction_commits_are_plain(store: Store) -> None:
    repo = store.create_repository("r")
    commit(repo, "a.txt", b"0")
    before = stats(store)["speculative_units"]
    with store.transaction():
        c1 = commit(repo, "a.txt", b"1")
        c2 = commit(repo, "a.txt", b"2")  # reads the first one's move
    assert stats(store)["speculative_units"] == before
    assert repo.get_commit(c2).parents == [c1]
    assert repo.verify().ok


def test_write_pipeline_off(db_url: str) -> None:
    with opened(db_url, write_pipeline=False) as store:
        repo = store.create_repository("r")
        c1 = commit(repo, "a.txt", b"1")
        c2 = commit(repo, "a.txt", b"2")
        assert stats(store)["speculative_units"] == stats(store)["pipelines"] == 0
        assert repo.get_commit(c2).parents == [c1]


def test_first_commit_and_new_branch(store: Store) -> None:
    repo = store.create_repository("r")
    c1 = commit(repo, "a.txt", b"1")  # creates main: an insert-if-absent expectation
    repo.create_branch("dev", "main")
    c2 = repo.commit("dev", {"b.txt": b"2"}, message="dev\n", author=SIG)
    with pytest.raises(NotFound):
        repo.commit("nope", {"b.txt": b"2"}, message="x\n", author=SIG)
    assert repo.branches() == {"main": c1, "dev": c2}
    assert stats(store)["fallbacks_expectation"] == 0
    assert repo.verify().ok


@pytest.mark.postgres
def test_connection_lost_under_the_pipeline_is_retried(pg_url: str) -> None:
    # A long idle window: the dead connection is handed out unpinged, so the pipeline
    # itself meets it, and the transaction manager must re-run the unit.
    with opened(pg_url, pool_size=1, max_overflow=0, pool_pre_ping_idle=3600.0) as store:
        repo = store.create_repository("r")
        commit(repo, "a.txt", b"1")
        _terminate(pg_url, _backend_pid(store))
        oid = commit(repo, "a.txt", b"2")
        assert store.metrics()["txn"]["retries_by_reason"]["disconnect"] >= 1
        assert pool_stats(store)["disconnects"] >= 1
        assert repo.resolve("main") == oid
        assert repo.verify().ok


@pytest.mark.postgres
@pytest.mark.parametrize("idle", [0.05, 0.0], ids=["idle_window", "every_checkout"])
def test_idle_connection_is_pinged_and_replaced(pg_url: str, idle: float) -> None:
    # 0.0: SQLAlchemy's own pre-ping at every checkout; otherwise ours, after the window.
    with opened(pg_url, pool_size=1, max_overflow=0, pool_pre_ping_idle=idle) as store:
        repo = store.create_repository("r")
        commit(repo, "a.txt", b"1")
        _terminate(pg_url, _backend_pid(store))
        time.sleep(0.1)
        assert repo.read("main", "a.txt") == b"1"
        oid = commit(repo, "a.txt", b"2")
        # The ping found the dead connection at checkout: no statement failed.
        assert store.metrics()["txn"]["retries"] == 0
        assert pool_stats(store)["disconnects"] >= 1
        assert repo.resolve("main") == oid


@pytest.mark.postgres
def test_catalog_reads_are_retried_after_a_lost_connection(pg_url: str) -> None:
    with opened(
        pg_url, pool_size=1, max_overflow=0, pool_pre_ping_idle=3600.0, cache_enabled=False
    ) as store:
        store.create_repository("r")
        _terminate(pg_url, _backend_pid(store))
        assert store.list_repositories() == ["r"]
        _terminate(pg_url, _backend_pid(store))
        assert store.repository("r").name == "r"
        assert store.metrics()["txn"]["retries_by_reason"]["disconnect"] == 2


def test_catalog_reads_join_an_open_transaction(db_url: str) -> None:
    # One pooled connection: a lookup on a second connection would wait for the first.
    with opened(db_url, pool_size=1, max_overflow=0, pool_timeout=1.0) as store:
        with store.transaction():
            store.create_repository("r")
            assert store.list_repositories() == ["r"]
            assert store.repository("r").name == "r"
        assert store.list_repositories() == ["r"]

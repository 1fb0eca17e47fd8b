"""PgBouncer in transaction pooling mode, started from the local binary in front of a
fresh database: default govc settings, the recommended ones, a prepared-statement conflict
met at runtime, and the LISTEN listener that cannot hear through the pooler.

Each test asserts: no acknowledged commit lost, no wrong answer, no error at all (a
pooler is not a fault), ``verify()`` clean.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pg
import pytest
from _faults import SIG, PgBouncer, need_pgbouncer, run_workload
from conftest import migrate_to_head

import govc_db
from govc_db import Settings, Store

pytestmark = [pytest.mark.faults, pytest.mark.postgres]


@pytest.fixture
def target(pg_admin_url: str) -> Iterator[str]:
    url = pg.create_database(pg_admin_url)
    try:
        migrate_to_head(url)
        yield url
    finally:
        pg.drop_database(pg_admin_url, url)


def bouncer(target: str, **settings: str | int) -> PgBouncer:
    return PgBouncer(need_pgbouncer(), target, **settings)


@pytest.fixture
def pgbouncer(target: str) -> Iterator[str]:
    b = bouncer(target)
    try:
        yield b.start()
    finally:
        b.stop()


def workload(store: Store, seconds: float = 1.5, name: str = "pooled") -> None:
    """Four writers/readers through the pooler; prints the closing note's figures."""
    repo = store.create_repository(name)
    repo.commit("main", {"README": b"pooled\n"}, message="init\n", author=SIG)
    out = run_workload(repo, 4, lambda: time.sleep(seconds), min_steps=20)
    assert out.wrong == []
    assert out.errors == [], [str(e) for e in out.errors[:3]]
    assert len(out.acked) >= 40
    lost = out.check(repo)
    assert lost == 0
    print(
        f"FAULT-FIGURES pooler ({name}, prepare_threshold="
        f"{store.settings.prepare_threshold}): errors seen by callers none; wrong answers "
        f"0; commits acknowledged {len(out.acked)}; lost {lost}"
    )
    # Every branch answers, also by relative revision (the symptoms of the issue).
    for name in repo.branches():
        if name != "main":
            assert repo.resolve(f"{name}~1") == repo.get_commit(name).parents[0]


def test_default_settings_adapt_and_answer_right(
    pgbouncer: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "govc_db"), govc_db.open(pgbouncer) as store:
        workload(store)
        stats = store.metrics()["statements"]
        assert stats["pooler_detected"] is True
        assert stats["server_side_prepare"] is False
        assert stats["prepared_statements"] == 0
    assert any("prepare_threshold=None" in r.getMessage() for r in caplog.records)


def test_recommended_settings(pgbouncer: str) -> None:
    settings = Settings(prepare_threshold=None)
    with govc_db.open(pgbouncer, settings=settings) as store:
        workload(store)
        assert store.metrics()["statements"]["server_side_prepare"] is False


def test_pooler_check_off_keeps_prepares_direct(target: str) -> None:
    # The setting is what decides: straight to PostgreSQL nothing is detected either way.
    for check, detected in ((True, False), (False, False)):
        with govc_db.open(target, settings=Settings(pooler_check=check)) as store:
            workload(store, 0.3, name=f"direct-{check}")
            stats = store.metrics()["statements"]
            assert stats["pooler_detected"] is detected
            assert stats["server_side_prepare"] is True


def test_pooler_check_off_behind_a_pooler_keeps_prepares_on(pgbouncer: str) -> None:
    # Off means "trust prepare_threshold": nothing is detected, nothing switched off
    # (until a conflict says otherwise, see the next test).
    with govc_db.open(pgbouncer, settings=Settings(pooler_check=False)) as store:
        assert store.list_repositories() == []
        stats = store.metrics()["statements"]
        assert stats["pooler_detected"] is False
        assert stats["server_side_prepare"] is True


def test_prepared_statement_conflict_at_runtime_is_adapted(target: str) -> None:
    """Detection off, statements prepared at first use, one server connection shared by
    two Stores: the second one's prepare collides (42P05). It must switch preparation off,
    re-run the unit and answer right -- never report the failure as "not found"."""
    b = bouncer(target, default_pool_size=1)
    url = b.start()
    settings = Settings(pooler_check=False, prepare_threshold=0, notify_enabled=False)
    try:
        with (
            govc_db.open(url, settings=settings) as one,
            govc_db.open(url, settings=settings) as two,
        ):
            r1 = one.create_repository("a")
            r2 = two.create_repository("b")
            for i in range(15):
                c1 = r1.commit("main", {f"{i}": b"one"}, message=f"{i}\n", author=SIG)
                c2 = r2.commit("main", {f"{i}": b"two"}, message=f"{i}\n", author=SIG)
                assert one.repository("a").resolve("main") == c1
                assert two.repository("b").read("main", f"{i}") == b"two"
                assert r2.resolve("main") == c2
            stats = [s.metrics() for s in (one, two)]
            disabled = [m["statements"]["server_side_prepare"] is False for m in stats]
            assert any(disabled)
            retried = [m["txn"]["retries_by_reason"]["prepared"] for m in stats]
            assert sum(retried) >= 1
            assert r1.verify().ok and r2.verify().ok
    finally:
        b.stop()


def test_listener_that_cannot_hear_turns_ref_caching_off(
    pgbouncer: str, target: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(listener_probe_interval=0.5)
    with (
        caplog.at_level(logging.WARNING, "govc_db"),
        govc_db.open(pgbouncer, settings=settings) as reader,
        govc_db.open(target) as writer,
    ):
        deadline = time.monotonic() + 10
        while reader.metrics()["listener"]["probe_failures"] == 0:
            assert time.monotonic() < deadline, reader.metrics()["listener"]
            time.sleep(0.05)
        listener = reader.metrics()["listener"]
        assert listener["listening"] is True
        assert listener["verified"] is False and listener["connected"] is False
        assert "not cached" in listener["staleness"]
        assert any("does not hear its own NOTIFY" in r.getMessage() for r in caplog.records)
        # A direct listener hears itself.
        assert writer.listener is not None and writer.listener.wait_connected(10)
        assert writer.metrics()["listener"]["verified"] is True

        repo_w = writer.create_repository("stale")
        repo_w.commit("main", {"a": b"1"}, message="1\n", author=SIG)
        repo_r = reader.repository("stale")
        for i in range(2, 6):
            assert repo_r.read("main", "a") == str(i - 1).encode()  # warm whatever caches
            oid = repo_w.commit("main", {"a": str(i).encode()}, message=f"{i}\n", author=SIG)
            # No staleness at all: the very next read sees the other Store's commit.
            assert repo_r.resolve("main") == oid
            assert repo_r.read("main", "a") == str(i).encode()
        assert reader.metrics()["listener"]["probes_sent"] >= 2  # it keeps checking

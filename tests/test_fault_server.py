"""Server faults against a throwaway cluster (local binaries, free loopback port) and
fresh databases: ``pg_ctl restart -m fast`` and ``kill -9`` of a backend in the middle of
a workload; a read-only database; ``statement_timeout``; refused connections, a missing
database and a wrong password.

Every test asserts: no acknowledged commit lost, no wrong answer, each error a GovcError
of the right subclass with a one-line message and no password, the same Store usable
afterwards without reopening, ``verify()`` clean. The figures of the closing note (time
to recover, errors callers saw) are printed on lines starting ``FAULT-FIGURES`` (``-s``).
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Iterator

import pg
import pytest
import sqlalchemy as sa
from _faults import SIG, Outcome, run_workload
from conftest import migrate_to_head
from sqlalchemy.pool import NullPool

import govc_db
from govc_db import Settings, Store
from govc_db.errors import (
    AuthenticationFailed,
    ConnectionRefused,
    DatabaseMissing,
    DatabaseTimeout,
    ReadOnlyDatabase,
    StoreUnavailable,
)

pytestmark = [pytest.mark.faults, pytest.mark.postgres]

PASSWORD = "s3cret-Pa55"


def figures(name: str, out: Outcome, started: float, lost: int, store: Store) -> None:
    """Print the closing note's figures: recovery = the longest wait between two
    acknowledged commits around the fault (the callers' view of the outage)."""
    times = sorted(out.ack_times)
    after = [t for t in times if t > started]
    assert after, "no commit was acknowledged after the fault"
    before = [t for t in times if t <= started]
    window = ([before[-1]] if before else [started]) + after
    recovery = max(b - a for a, b in itertools.pairwise(window))
    retried = store.metrics()["txn"]["retries_by_reason"]["disconnect"]
    print(
        f"FAULT-FIGURES {name}: recovery {recovery:.2f} s (longest gap between acknowledged "
        f"commits); errors seen by callers {out.error_kinds() or 'none'}; commits "
        f"acknowledged {len(out.acked)}; lost {lost}; calls re-run after a lost or refused "
        f"connection {retried}"
    )
    assert retried >= 1 or out.errors, "the fault did not reach the Store"


def check_errors(out: Outcome) -> None:
    assert out.wrong == []
    for e in out.errors:
        assert isinstance(e, StoreUnavailable), repr(e)
        assert "\n" not in str(e) and PASSWORD not in str(e)


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[pg._LocalCluster, str]]:
    c = pg.new_local_cluster()
    try:
        admin = c.start()
        # tests/pg.py turns durability off for speed; a crash (kill -9 of a backend makes
        # the postmaster reinitialize shared memory) then loses commits acknowledged
        # before their WAL was written, which is what these tests look for. fsync can
        # stay off: the operating system does not crash.
        admin_exec(admin, "ALTER SYSTEM SET synchronous_commit = on")
        c.pg_ctl("reload")
        yield c, admin
    finally:
        c.stop()


@pytest.fixture
def cluster_db(cluster: tuple[pg._LocalCluster, str]) -> Iterator[str]:
    url = pg.create_database(cluster[1])
    try:
        migrate_to_head(url)
        yield url
    finally:
        pg.drop_database(cluster[1], url)


def admin_exec(url: str, *statements: str) -> list[object]:
    engine = sa.create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            results = [conn.exec_driver_sql(s) for s in statements]
            return [r.scalar() if r.returns_rows else None for r in results]
    finally:
        engine.dispose()


def seeded(store: Store, name: str = "faults") -> govc_db.Repository:
    repo = store.create_repository(name)
    repo.commit("main", {"README": b"faults\n"}, message="init\n", author=SIG)
    return repo


# -- restarts and crashes ------------------------------------------------------------------


def test_fast_restart_mid_workload(cluster: tuple[pg._LocalCluster, str], cluster_db: str) -> None:
    c = cluster[0]
    with govc_db.open(cluster_db) as store:  # default settings: retry_budget 3 s
        repo = seeded(store)
        started: list[float] = []

        def restart() -> None:
            started.append(time.monotonic())
            c.pg_ctl("-l", str(c.log), "-o", f"-p {c.port}", "-m", "fast", "restart")

        out = run_workload(repo, 3, restart)
        check_errors(out)
        lost = out.check(repo)
        assert lost == 0
        figures("pg_ctl restart -m fast", out, started[0], lost, store)
        oid = repo.commit("main", {"after": b"1"}, message="after\n", author=SIG)
        assert repo.read(oid, "after") == b"1"


def test_backend_killed_mid_commit(cluster: tuple[pg._LocalCluster, str], cluster_db: str) -> None:
    with govc_db.open(cluster_db) as store:
        repo = seeded(store)
        started: list[float] = []

        def kill_a_backend() -> None:
            (pid,) = admin_exec(
                cluster[1],
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'govc_db' "
                "ORDER BY state = 'active' DESC, pid LIMIT 1",
            )
            assert isinstance(pid, int)
            started.append(time.monotonic())
            # The postmaster then restarts every backend (crash recovery).
            os.kill(pid, signal.SIGKILL)
            time.sleep(1.0)  # keep the workload running through the recovery

        out = run_workload(repo, 3, kill_a_backend)
        check_errors(out)
        lost = out.check(repo)
        assert lost == 0
        figures("kill -9 of a backend", out, started[0], lost, store)


def test_wrong_password_is_authentication_failed(cluster: tuple[pg._LocalCluster, str]) -> None:
    c, admin = cluster
    admin_exec(admin, f"CREATE ROLE govc_pw LOGIN PASSWORD '{PASSWORD}'")
    hba = c.data / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text("host all govc_pw 127.0.0.1/32 scram-sha-256\n" + original)
    c.pg_ctl("reload")
    try:
        time.sleep(0.3)  # the postmaster re-reads pg_hba.conf on SIGHUP
        url = sa.make_url(admin).set(username="govc_pw", password="wrong-" + PASSWORD)
        with govc_db.open(url.render_as_string(hide_password=False)) as store:
            t0 = time.monotonic()
            with pytest.raises(AuthenticationFailed) as err:
                store.list_repositories()
            took = time.monotonic() - t0
            assert "authentication failed" in str(err.value)
            assert PASSWORD not in str(err.value) and "\n" not in str(err.value)
            assert store.metrics()["txn"]["retries"] == 0  # a retry cannot fix it
        print(f"FAULT-FIGURES wrong password: AuthenticationFailed after {took:.2f} s")
    finally:
        hba.write_text(original)
        c.pg_ctl("reload")


# -- configuration faults on the shared server ---------------------------------------------


@pytest.fixture
def fresh_db(pg_admin_url: str) -> Iterator[str]:
    url = pg.create_database(pg_admin_url)
    try:
        migrate_to_head(url)
        yield url
    finally:
        pg.drop_database(pg_admin_url, url)


def test_read_only_database(pg_admin_url: str, fresh_db: str) -> None:
    name = sa.make_url(fresh_db).database
    with govc_db.open(fresh_db) as store:
        repo = seeded(store)
        head = repo.resolve("main")
        admin_exec(pg_admin_url, f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        store.engine.dispose()  # new sessions pick the setting up
        try:
            t0 = time.monotonic()
            with pytest.raises(ReadOnlyDatabase) as err:
                repo.commit("main", {"x": b"x"}, message="x\n", author=SIG)
            took = time.monotonic() - t0
            assert "read-only" in str(err.value) and "\n" not in str(err.value)
            assert store.metrics()["txn"]["retries"] == 0  # not retried
            assert repo.read("main", "README") == b"faults\n"  # reads still work
            assert repo.resolve("main") == head
            print(f"FAULT-FIGURES read-only database: ReadOnlyDatabase after {took:.2f} s")
        finally:
            admin_exec(pg_admin_url, f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        store.engine.dispose()
        oid = repo.commit("main", {"x": b"x"}, message="x\n", author=SIG)  # same Store
        assert repo.read(oid, "x") == b"x"
        assert repo.verify().ok


def test_statement_timeout(pg_admin_url: str, fresh_db: str) -> None:
    name = sa.make_url(fresh_db).database
    admin_exec(pg_admin_url, f"ALTER DATABASE \"{name}\" SET statement_timeout = '300ms'")
    with govc_db.open(fresh_db) as store:
        repo = seeded(store)
        head = repo.resolve("main")
        blocker = sa.create_engine(fresh_db, poolclass=NullPool)
        try:
            with blocker.connect() as conn:
                conn.exec_driver_sql("SET statement_timeout = 0")
                conn.exec_driver_sql("LOCK TABLE govc_refs IN ACCESS EXCLUSIVE MODE")
                t0 = time.monotonic()
                with pytest.raises(DatabaseTimeout) as err:
                    repo.commit("main", {"x": b"x"}, message="x\n", author=SIG)
                took = time.monotonic() - t0
                assert isinstance(err.value, TimeoutError)
                assert "statement timeout" in str(err.value) and "\n" not in str(err.value)
                assert store.metrics()["txn"]["retries"] == 0  # the same wait would recur
                conn.rollback()
        finally:
            blocker.dispose()
        print(f"FAULT-FIGURES statement_timeout=300ms: DatabaseTimeout after {took:.2f} s")
        assert repo.resolve("main") == head  # nothing half-done
        oid = repo.commit("main", {"x": b"x"}, message="x\n", author=SIG)
        assert repo.read(oid, "x") == b"x"
        assert repo.verify().ok


def test_missing_database(pg_admin_url: str) -> None:
    url = sa.make_url(pg_admin_url).set(database="govc_no_such_database", password=PASSWORD)
    with govc_db.open(url.render_as_string(hide_password=False)) as store:
        with pytest.raises(DatabaseMissing) as err:
            store.list_repositories()
        assert "does not exist" in str(err.value) and PASSWORD not in str(err.value)
        assert store.metrics()["txn"]["retries"] == 0


def test_refused_connection_is_reported_within_the_budget() -> None:
    port = pg._free_port()
    url = f"postgresql+psycopg://govc:{PASSWORD}@127.0.0.1:{port}/x"
    for budget in (0.0, 0.6):
        with govc_db.open(url, settings=Settings(retry_budget=budget)) as store:
            t0 = time.monotonic()
            with pytest.raises(ConnectionRefused) as err:
                store.list_repositories()
            took = time.monotonic() - t0
            text = str(err.value)
            assert f"127.0.0.1:{port}" in text and "refused" in text
            assert PASSWORD not in text and PASSWORD not in repr(err.value)
            retries = store.metrics()["txn"]["retries"]
            if budget == 0.0:
                assert retries == store.settings.retry_attempts - 1  # count-based
            else:
                # Retried for the budget, then reported: bounded, never much longer.
                assert budget <= took < budget + 2.0
                print(f"FAULT-FIGURES refused connection: ConnectionRefused after {took:.2f} s")

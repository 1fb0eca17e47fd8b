"""Read replicas with read-your-writes, against real streaming standbys.

A throwaway primary and two ``pg_basebackup -R`` standbys are started from the local
PostgreSQL binaries on free ports (``tests/pg.py``). The tests check: a read right after
a write sees it; a paused replica is never read by a Store that wrote after the pause,
and stickiness ends only when the chosen replica has caught up; a stopped replica is
ejected without a failed call and re-admitted when it returns; a read cancelled by a
recovery conflict is retried on the primary; a promoted standby (a new timeline) is
ejected. SQLite refuses replica URLs (see test_middleware).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pg
import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

import govc_db
from govc_db import Settings, Signature, Store
from govc_db.db.replicas import _caught_up, parse_lsn

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SIG = Signature("Ada", "ada@example.com", 1_700_000_000, 0)


def test_lsn_and_timeline_comparison() -> None:
    assert parse_lsn("0/0") == 0
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert _caught_up((1, 100), (1, 100)) and _caught_up((1, 101), (1, 100))
    assert not _caught_up((1, 99), (1, 100))
    assert not _caught_up((2, 500), (1, 100))  # another timeline: never comparable
    assert not _caught_up(None, (1, 1))


class Standby(pg._LocalCluster):
    """A standby made by pg_basebackup -R from a running primary."""

    def start_from(self, primary: pg._LocalCluster) -> str:
        self._run(
            "pg_basebackup", "-D", str(self.data), "-R", "-X", "stream", "-c", "fast",
            "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
        )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nunix_socket_directories = '{self.root}'\n"
                "hot_standby = on\nmax_standby_streaming_delay = 0\n"
                "wal_receiver_status_interval = 1s\n"
            )
        self.port = pg._free_port()
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-o", f"-p {self.port}", "start")  # fmt: skip
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def ctl(self, *args: str) -> None:
        extra = ("-l", str(self.log), "-o", f"-p {self.port}") if args[0] == "start" else ()
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", *args[:1], *extra, *args[1:])


class Topology:
    def __init__(self) -> None:
        bindir = pg.find_pg_bindir()
        if bindir is None:
            message = "PostgreSQL server binaries are needed for the replica tests"
            if pg.in_ci():
                pytest.fail(message, pytrace=False)
            pytest.skip(message)
        self.primary = pg._LocalCluster(bindir)
        self.standbys = [Standby(bindir), Standby(bindir)]
        self.url = ""
        self.replica_urls: list[str] = []

    def start(self) -> None:
        self.url = self.primary.start()
        with govc_db.open(self.url) as s:
            s.upgrade()
        self.replica_urls = [s.start_from(self.primary) for s in self.standbys]

    def sql(self, url: str, statement: str) -> Any:
        engine = sa.create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                return conn.exec_driver_sql(statement).scalar()
        finally:
            engine.dispose()

    def wait_replayed(self, index: int, timeout: float = 30) -> None:
        """Until standby ``index`` has replayed everything the primary has written."""
        target = self.sql(self.url, "SELECT pg_current_wal_insert_lsn()::text")
        deadline = time.monotonic() + timeout
        while True:
            done = self.sql(
                self.replica_urls[index],
                f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn",
            )
            if done:
                return
            assert time.monotonic() < deadline, "the standby did not catch up"
            time.sleep(0.05)

    def stop(self) -> None:
        for s in self.standbys:
            s.stop()
        self.primary.stop()


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    t = Topology()
    try:
        t.start()
        yield t
    finally:
        t.stop()


@pytest.fixture
def open_store(topo: Topology) -> Iterator[Callable[..., Store]]:
    stores: list[Store] = []

    def make(replicas: list[str] | None = None, **settings: Any) -> Store:
        options: dict[str, Any] = {
            "cache_enabled": False,  # every read reaches a database
            "replica_check_interval": 0.2,
            "connect_timeout": 2,
            **settings,
        }
        store = govc_db.open(
            topo.url,
            settings=Settings(
                replica_urls=tuple(topo.replica_urls if replicas is None else replicas),
                **options,
            ),
        )
        stores.append(store)
        return store

    yield make
    for s in stores:
        s.close()


def _replica_stats(store: Store, index: int, topo: Topology) -> dict[str, Any]:
    stats: dict[str, Any] = store.metrics()["replicas"]["replicas"]
    name = next(n for n in stats if f":{topo.standbys[index].port}/" in n)
    out: dict[str, Any] = stats[name]
    return out


def _fresh_repo(store: Store, name: str) -> govc_db.Repository:
    if name in store.list_repositories():
        store.delete_repository(name)
    return store.create_repository(name)


def test_a_read_right_after_a_write_sees_it(
    topo: Topology, open_store: Callable[..., Store]
) -> None:
    store = open_store()
    repo = _fresh_repo(store, "ryw")
    for i in range(30):
        oid = repo.commit("main", {"n.txt": b"%d" % i}, message=f"c{i}\n", author=SIG)
        assert repo.resolve("main") == oid
        assert repo.read("main", "n.txt") == b"%d" % i
    topo.wait_replayed(0)
    topo.wait_replayed(1)
    for _ in range(10):
        assert repo.read("main", "n.txt") == b"29"
    stats = store.metrics()["replicas"]
    assert stats["writes_noted"] >= 30
    # Once the standbys had replayed the last write, reads went to them.
    assert sum(r["reads"] for r in stats["replicas"].values()) >= 10


def test_a_paused_replica_is_never_read_after_a_write(
    topo: Topology, open_store: Callable[..., Store]
) -> None:
    store = open_store()
    repo = _fresh_repo(store, "paused")
    repo.commit("main", {"a.txt": b"0"}, message="0\n", author=SIG)
    topo.wait_replayed(0)
    topo.wait_replayed(1)
    topo.sql(topo.replica_urls[0], "SELECT pg_wal_replay_pause()")
    try:
        oid = repo.commit("main", {"a.txt": b"1"}, message="1\n", author=SIG)
        before = _replica_stats(store, 0, topo)["reads"]
        for _ in range(40):
            # Round-robin offers the paused replica half of the time: it must refuse it
            # (it has not replayed the write), and the live one serves the read.
            assert repo.resolve("main") == oid
            assert repo.read("main", "a.txt") == b"1"
        paused = _replica_stats(store, 0, topo)
        assert paused["reads"] == before
        assert paused["lagging"] >= 1
        topo.wait_replayed(1)
        # The live replica having caught up does not end the stickiness for the
        # paused one (GitLab's bug): it is still refused while paused.
        for _ in range(20):
            assert repo.read("main", "a.txt") == b"1"
        assert _replica_stats(store, 0, topo)["reads"] == before
        assert _replica_stats(store, 1, topo)["reads"] > 0
    finally:
        topo.sql(topo.replica_urls[0], "SELECT pg_wal_replay_resume()")
    topo.wait_replayed(0)
    for _ in range(10):
        assert repo.read("main", "a.txt") == b"1"
    assert _replica_stats(store, 0, topo)["reads"] > before  # caught up: used again


def test_a_stopped_replica_is_ejected_without_a_failed_call(
    topo: Topology, open_store: Callable[..., Store]
) -> None:
    store = open_store()
    repo = _fresh_repo(store, "stopped")
    repo.commit("main", {"a.txt": b"a"}, message="a\n", author=SIG)
    topo.wait_replayed(1)
    for _ in range(6):
        repo.read("main", "a.txt")  # connections to both replicas in the pools
    topo.standbys[1].ctl("stop", "-m", "fast")
    try:
        for _ in range(20):
            assert repo.read("main", "a.txt") == b"a"
        stats = _replica_stats(store, 1, topo)
        assert stats["ejections"] >= 1 and stats["healthy"] is False
    finally:
        topo.standbys[1].ctl("start")
    topo.wait_replayed(1)
    deadline = time.monotonic() + 30
    while not _replica_stats(store, 1, topo)["healthy"]:
        assert time.monotonic() < deadline, "the replica was not re-admitted"
        assert repo.read("main", "a.txt") == b"a"
        time.sleep(0.05)
    assert _replica_stats(store, 1, topo)["readmissions"] >= 1


def test_a_read_cancelled_by_a_recovery_conflict_is_retried_on_the_primary(
    topo: Topology, open_store: Callable[..., Store]
) -> None:
    store = open_store(replicas=[topo.replica_urls[0]], retry_base_delay=0.0)
    topo.wait_replayed(0)
    ran_on: list[bool] = []

    def long_read(conn: sa.Connection) -> int:
        ran_on.append(bool(conn.exec_driver_sql("SELECT pg_is_in_recovery()").scalar()))
        count = conn.exec_driver_sql("SELECT count(*) FROM govc_repositories").scalar()
        conn.exec_driver_sql("SELECT pg_sleep(2)")
        return int(count or 0)

    result: list[int] = []
    reader = threading.Thread(
        target=lambda: result.append(store.backend.txn.run(long_read, write=False))
    )
    reader.start()
    time.sleep(0.5)  # the read holds its lock on govc_repositories on the standby
    engine = sa.create_engine(topo.url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("LOCK TABLE govc_repositories IN ACCESS EXCLUSIVE MODE")
            conn.exec_driver_sql("SELECT pg_switch_wal()")  # ship the lock record now
            time.sleep(1.0)
    finally:
        engine.dispose()
    reader.join(30)
    assert result, "the read failed"
    assert ran_on[0] is True and ran_on[-1] is False  # replica first, then the primary
    assert _replica_stats(store, 0, topo)["retried_on_primary"] >= 1
    assert store.backend.txn.get_stats()["retries"] >= 1


def test_a_promoted_standby_on_a_new_timeline_is_ejected(
    topo: Topology, open_store: Callable[..., Store]
) -> None:
    # Destructive (the standby leaves the topology): the module's last test.
    store = open_store(replicas=[topo.replica_urls[1]])
    repo = _fresh_repo(store, "failover")
    repo.commit("main", {"a.txt": b"1"}, message="1\n", author=SIG)
    topo.wait_replayed(1)
    assert repo.read("main", "a.txt") == b"1"
    topo.standbys[1].ctl("promote")
    time.sleep(0.5)
    # The promoted server is on timeline 2 and no longer follows the primary: writes
    # made now never reach it, so it must not serve reads.
    oid = repo.commit("main", {"a.txt": b"2"}, message="2\n", author=SIG)
    for _ in range(10):
        assert repo.resolve("main") == oid
        assert repo.read("main", "a.txt") == b"2"
        time.sleep(0.05)
    stats = _replica_stats(store, 1, topo)
    assert stats["healthy"] is False and stats["ejections"] >= 1
    assert Path(topo.standbys[1].data / "standby.signal").exists() is False

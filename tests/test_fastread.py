"""Reads answered by the cache alone (``read_cached``): no unit, no connection.

What a read unit resolved -- the commit a revision string named, the entry at a path --
is remembered, and the next read of the same revision and path needs three cache
lookups. These tests check it never answers what a unit would answer differently:
after writes here, in another Store, on another SQLite connection, inside a transaction,
after expiry, and for every error case.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from test_cache import SIG, FakeTimer, commit, oid, opened, settle
from test_pool import _backend_pid, _terminate, pool_stats

from govc_db import InvalidInput, NotFound, Store
from govc_db.db.cache import QueryCache
from govc_db.objects import MODE_FILE
from govc_db.objects.kinds import TreeItem


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with opened(db_url, cache_ref_ttl=3600.0) as s:
        yield s


def checkouts(store: Store) -> int:
    return int(store.metrics()["pool"]["checkouts"])


def test_a_repeated_read_takes_no_connection(store: Store) -> None:
    repo = store.create_repository("r")
    commit(repo, "d/a.txt", b"1")
    settle(store, 1)
    assert repo.read("main", "d/a.txt") == b"1"
    before = checkouts(store)
    for _ in range(5):
        assert repo.read("main", "d/a.txt") == b"1"
        assert repo.open("main", "d/a.txt").read() == b"1"
    assert checkouts(store) == before
    stats = store.metrics()["metrics"]["operations"]
    assert stats["read"]["calls"] == 6 and stats["open"]["calls"] == 5  # still counted


def test_a_commit_here_is_read_at_once(store: Store) -> None:
    repo = store.create_repository("r")
    commit(repo, "a.txt", b"1")
    for i in range(2, 6):
        assert repo.read("main", "a.txt") == b"%d" % (i - 1)
        assert repo.read("main", "a.txt") == b"%d" % (i - 1)
        commit(repo, "a.txt", b"%d" % i)
    assert repo.read("main", "a.txt") == b"5"
    assert repo.read("HEAD~1", "a.txt") == b"4"


def test_another_store_in_this_process(db_url: str) -> None:
    with opened(db_url, cache_ref_ttl=3600.0) as a, opened(db_url, cache_ref_ttl=3600.0) as b:
        ra = a.create_repository("r")
        commit(ra, "a.txt", b"1")
        rb = b.repository("r")
        for _ in range(2):
            assert rb.read("main", "a.txt") == b"1"
        commit(ra, "a.txt", b"2")
        assert rb.read("main", "a.txt") == b"2"
        a.delete_repository("r")
        with pytest.raises(NotFound):
            rb.read("main", "a.txt")


def test_sqlite_sees_a_raw_write_on_another_connection_at_once(sqlite_url: str) -> None:
    # The documented bound on SQLite is "none", even for writes that bypass govc_db:
    # the data_version watch sees any other connection's commit.
    with opened(sqlite_url, cache_ref_ttl=3600.0) as store:
        repo = store.create_repository("r")
        first = commit(repo, "a.txt", b"1")
        commit(repo, "a.txt", b"2")
        for _ in range(2):
            assert repo.read("main", "a.txt") == b"2"
        path = sa.make_url(sqlite_url).database
        assert path is not None
        raw = sqlite3.connect(path)
        try:
            raw.execute(
                "UPDATE govc_refs SET target = ? WHERE name = 'refs/heads/main'",
                (bytes.fromhex(first),),
            )
            raw.commit()
        finally:
            raw.close()
        assert repo.read("main", "a.txt") == b"1"


def test_inside_a_transaction_its_own_writes_are_read(store: Store) -> None:
    repo = store.create_repository("r")
    commit(repo, "a.txt", b"1")
    for _ in range(2):
        assert repo.read("main", "a.txt") == b"1"
    with store.transaction():
        commit(repo, "a.txt", b"2")
        assert repo.read("main", "a.txt") == b"2"
    assert repo.read("main", "a.txt") == b"2"


def test_errors_are_decided_by_a_unit_every_time(store: Store) -> None:
    repo = store.create_repository("r")
    commit(repo, "d/a.txt", b"1")
    repo.create_branch("b", "main")
    for _ in range(2):
        with pytest.raises(InvalidInput):
            repo.read("main", "d")  # a directory: remembered, never served
        with pytest.raises(NotFound):
            repo.read("main", "d/missing.txt")
        with pytest.raises(NotFound):
            repo.read("nope", "d/a.txt")
        with pytest.raises(InvalidInput):
            repo.read("main", "/d/a.txt")
        with pytest.raises(InvalidInput):
            repo.read(5, "d/a.txt")  # type: ignore[arg-type]
        with pytest.raises(InvalidInput):
            repo.read("main", ["d/a.txt"])  # type: ignore[arg-type]
    assert repo.read("b", "d/a.txt") == b"1"
    repo.delete_branch("b")
    with pytest.raises(NotFound):
        repo.read("b", "d/a.txt")


def test_revision_memo_expires_and_follows_invalidation() -> None:
    timer = FakeTimer()
    cache = QueryCache(max_bytes=1 << 20, ref_ttl=5.0, timer=timer)
    token = cache.token()
    cache.put_revision(token, 1, "main", oid(1), oid(2))
    assert cache.get_revision(1, "main") == (oid(1), oid(2))
    assert cache.get_revision(2, "main") is None  # another repository
    timer.now += 5.0
    assert cache.get_revision(1, "main") is None  # expired
    cache.put_revision(cache.token(), 1, "main", oid(1), oid(2))
    cache.invalidate_refs(1, ["refs/heads/main"])
    assert cache.get_revision(1, "main") is None
    # A unit that read before an invalidation cannot store what it read.
    stale = cache.token()
    cache.invalidate_refs(1, None)
    cache.put_revision(stale, 1, "main", oid(1), oid(2))
    assert cache.get_revision(1, "main") is None
    cache.put_revision(cache.token(), 1, "main", oid(3), oid(4))
    cache.flush_mutable()
    assert cache.get_revision(1, "main") is None
    stats = cache.get_stats()["revisions"]
    assert stats["hits"] == 1 and stats["misses"] == 5


def test_path_memo_is_immutable_and_bounded() -> None:
    cache = QueryCache(max_bytes=4096, ref_ttl=5.0)
    item = TreeItem(b"a.txt", MODE_FILE, oid(9))
    cache.put_path(1, oid(1), "d/a.txt", item)
    assert cache.get_path(1, oid(1), "d/a.txt") == item
    assert cache.get_path(1, oid(1), "d/b.txt") is None
    assert cache.get_path(2, oid(1), "d/a.txt") is None
    cache.flush_mutable()
    assert cache.get_path(1, oid(1), "d/a.txt") == item  # trees never change
    for i in range(100):
        cache.put_path(1, oid(2), f"f{i}", item)
    assert cache.get_stats()["immutable"]["bytes"] <= 4096


def transactions(store: Store) -> int:
    return int(store.metrics()["txn"]["transactions"])


def test_cold_blob_is_one_fetch_without_a_transaction(db_url: str) -> None:
    with opened(db_url, cache_ref_ttl=3600.0) as store:
        repo = store.create_repository("r")
        head = commit(repo, "d/a.txt", b"a" * 300)
    with opened(db_url, cache_ref_ttl=3600.0) as store:
        repo = store.repository("r")
        assert repo.exists(head, "d/a.txt")  # refs, index row and trees: not the blob
        assert repo.exists(head, "d/a.txt")
        before, reads = transactions(store), store.metrics()["reads"]
        assert repo.read(head, "d/a.txt") == b"a" * 300
        after = store.metrics()["reads"]
        assert transactions(store) == before
        assert after["fetches"] == reads["fetches"] + 1
        assert after["fetched_objects"] == reads["fetched_objects"] + 1
        assert after["cached_units"] == reads["cached_units"] + 1
        # Other reads the cache can serve take no transaction either.
        assert repo.resolve(head) == head
        assert [e.path for e in repo.tree(head, "d")] == ["d/a.txt"]
        assert repo.get_commit(head).oid == head
        assert transactions(store) == before


def test_an_evicted_blob_is_fetched_alone(db_url: str) -> None:
    big = 40_960  # 160 x 256
    with opened(db_url, cache_ref_ttl=3600.0, cache_max_bytes=64_000) as store:
        repo = store.create_repository("r")
        repo.commit(
            "main",
            {"a.bin": bytes(range(256)) * (big // 256), "b.bin": b"b" * big},
            message="two\n",
            author=SIG,
        )
        settle(store, 1)
        assert len(repo.read("main", "a.bin")) == big
        assert len(repo.read("main", "b.bin")) == big  # evicts a.bin's blob
        # The storage optimizer's decoded cache still holds it as written: cleared, so
        # the read fetches it.
        store.backend.codec.cache.clear()
        before, fetches = transactions(store), store.metrics()["reads"]["fetches"]
        assert repo.read("main", "a.bin") == bytes(range(256)) * (big // 256)
        assert store.metrics()["reads"]["fetches"] == fetches + 1
        assert transactions(store) == before


@pytest.mark.postgres
def test_a_fetch_on_a_lost_connection_falls_back(pg_url: str) -> None:
    with opened(pg_url, pool_size=1, max_overflow=0, pool_pre_ping_idle=3600.0) as store:
        repo = store.create_repository("r")
        head = commit(repo, "a.txt", b"1")
    with opened(pg_url, pool_size=1, max_overflow=0, pool_pre_ping_idle=3600.0) as store:
        repo = store.repository("r")
        assert repo.exists(head, "a.txt")
        _terminate(pg_url, _backend_pid(store))
        assert repo.read(head, "a.txt") == b"1"  # the fetch failed; a unit retried
        assert pool_stats(store)["invalidations"] >= 1
        assert repo.read(head, "a.txt") == b"1"


def test_threads_read_their_own_commits(db_url: str) -> None:
    # Commits and cache-answered reads from several threads on one Store: after a commit
    # returns, a read at the branch sees it (the memo was invalidated before it returned).
    import threading

    with opened(db_url, cache_ref_ttl=3600.0) as store:
        repo = store.create_repository("r")
        commit(repo, "seed.txt", b"seed")
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                for i in range(15):
                    data = b"%d-%d" % (n, i)
                    oid = commit(repo, f"t{n}/f.txt", data)
                    assert repo.read("main", f"t{n}/f.txt") == data
                    assert repo.read(oid, f"t{n}/f.txt") == data
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(list(repo.log("main"))) == 1 + 4 * 15
        assert repo.verify().ok

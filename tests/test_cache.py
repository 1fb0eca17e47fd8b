"""The query-result cache: counters, the byte bound, invalidation, and never a stale ref.

Unit tests drive :class:`QueryCache` directly with an injected timer; the rest run a real
Store on SQLite and PostgreSQL. A Store's cache can be detached from the in-process peer
registry (``cache.close()``) so that only NOTIFY (PostgreSQL) or ``data_version`` (SQLite)
can tell it about another Store's writes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

import govc_db
from govc_db import NotFound, RefConflict, Repository, Settings, Signature, Store
from govc_db.db.cache import QueryCache
from govc_db.models import Base
from govc_db.objects import ObjectId, hash_object
from govc_db.store.ports import IndexEntry, RawObject

SIG = Signature("Ada Lovelace", "ada@example.com", 1_700_000_000, 0)
T_OBJ = Base.metadata.tables["govc_objects"]
T_REF = Base.metadata.tables["govc_refs"]


class FakeTimer:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def oid(n: int) -> ObjectId:
    return ObjectId(bytes([n]) * 20)


def blob(data: bytes) -> RawObject:
    return RawObject(b"blob", data)


@contextmanager
def opened(url: str, **settings: Any) -> Iterator[Store]:
    store = govc_db.open(url, Settings(**settings))
    try:
        ready(store)
        yield store
    finally:
        store.close()


def ready(store: Store) -> None:
    """On PostgreSQL, mutable results are cached only once the listener is connected."""
    if store.listener is not None:
        assert store.listener.wait_connected(10), store.listener.get_stats()


def settle(store: Store, moves: int) -> None:
    """On PostgreSQL, wait until our own ``moves`` NOTIFYs came back: they invalidate too
    (harmlessly), which would turn an expected hit into a miss."""
    listener = store.listener
    if listener is not None:
        assert eventually(lambda: listener.get_stats()["notifications"] >= moves, 10)


def cache_of(store: Store) -> QueryCache:
    cache = store.cache
    assert cache is not None
    return cache


def commit(repo: Repository, path: str, data: bytes, branch: str = "main") -> str:
    return repo.commit(branch, {path: data}, message=f"{path}\n", author=SIG)


def delta(before: dict[str, Any], after: dict[str, Any], part: str, key: str) -> int:
    return int(after[part][key]) - int(before[part][key])


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with opened(db_url, cache_ref_ttl=3600.0) as s:
        yield s


# -- QueryCache on its own ------------------------------------------------------------------


def test_byte_bound_evicts_least_recently_used() -> None:
    cache = QueryCache(max_bytes=4096, ref_ttl=1.0)
    for n in range(10):
        cache.put_objects(1, [(oid(n), blob(bytes(1000)))])
        assert cache.get_stats()["immutable"]["bytes"] <= 4096
    stats = cache.get_stats()
    assert stats["objects"]["evictions"] == 7
    assert stats["objects"]["entries"] == 3 == stats["immutable"]["entries"]
    assert stats["objects"]["bytes"] == stats["immutable"]["bytes"] <= 4096
    assert set(cache.get_objects(1, [oid(n) for n in range(10)])) == {oid(7), oid(8), oid(9)}
    # Reading one makes it the most recent: the next insert evicts another.
    cache.get_objects(1, [oid(7)])
    cache.put_objects(1, [(oid(10), blob(bytes(1000)))])
    assert set(cache.get_objects(1, [oid(7), oid(8), oid(9), oid(10)])) == {
        oid(7),
        oid(9),
        oid(10),
    }
    # Larger than the whole budget: not stored, nothing evicted for it.
    cache.put_objects(1, [(oid(99), blob(bytes(5000)))])
    assert cache.get_objects(1, [oid(99)]) == {}
    assert cache.get_stats()["objects"]["entries"] == 3


def test_index_chain_follows_single_parents_while_cached() -> None:
    cache = QueryCache(max_bytes=1 << 20, ref_ttl=1.0)
    # 10 <- 11 <- 12 <- 13 (13 a merge of 12 and 20); 10 is not cached.
    rows = {
        13: IndexEntry(oid(13), oid(99), (oid(12), oid(20)), 4, 0, 0),
        12: IndexEntry(oid(12), oid(99), (oid(11),), 3, 0, 0),
        11: IndexEntry(oid(11), oid(99), (oid(10),), 2, 0, 0),
    }
    cache.put_index(1, [(oid(k), r) for k, r in rows.items()])
    assert cache.get_index_chain(1, oid(12), 10) == [rows[12], rows[11]]  # stops at a miss
    assert cache.get_index_chain(1, oid(12), 1) == [rows[12]]  # at the limit
    assert cache.get_index_chain(1, oid(13), 10) == [rows[13]]  # a merge ends the run
    assert cache.get_index_chain(2, oid(12), 10) == []  # scoped to its repository
    stats = cache.get_stats()["index"]
    assert (stats["hits"], stats["misses"]) == (4, 2)


def test_hits_and_misses_are_counted_per_kind() -> None:
    cache = QueryCache(max_bytes=1 << 20, ref_ttl=1.0)
    entry = IndexEntry(oid(1), oid(2), (oid(3),), 2, 0, 0)
    assert cache.get_index(1, [oid(1)]) == {}
    cache.put_index(1, [(oid(1), entry)])
    assert cache.get_index(1, [oid(1), oid(5)]) == {oid(1): entry}
    assert cache.get_index(2, [oid(1)]) == {}  # scoped to its repository
    stats = cache.get_stats()
    assert (stats["index"]["hits"], stats["index"]["misses"]) == (1, 3)
    assert (stats["objects"]["hits"], stats["objects"]["misses"]) == (0, 0)


def test_zero_bytes_caches_nothing() -> None:
    cache = QueryCache(max_bytes=0, ref_ttl=1.0)
    cache.put_objects(1, [(oid(1), blob(b""))])
    assert cache.get_objects(1, [oid(1)]) == {}


def test_refs_expire_after_the_ttl() -> None:
    timer = FakeTimer()
    cache = QueryCache(max_bytes=0, ref_ttl=5.0, timer=timer)
    cache.put_ref(cache.token(), 1, "refs/heads/main", oid(1))
    assert cache.get_ref(1, "refs/heads/main") == (True, oid(1))
    timer.now += 4.9
    assert cache.get_ref(1, "refs/heads/main") == (True, oid(1))
    timer.now += 0.2
    assert cache.get_ref(1, "refs/heads/main") == (False, None)


def test_valid_since_is_per_repository() -> None:
    cache = QueryCache(max_bytes=0, ref_ttl=60.0)
    token = cache.token()
    assert cache.valid_since(token, 1) and cache.valid_since(token, 2)
    cache.invalidate_refs(2, ["refs/heads/main"])
    assert cache.valid_since(token, 1)  # another repository's write does not count
    assert not cache.valid_since(token, 2)
    assert cache.valid_since(cache.token(), 2)  # taken after it: valid again
    later = cache.token()
    cache.flush_mutable()  # a flush counts for every repository
    assert not cache.valid_since(later, 1) and not cache.valid_since(later, 2)
    after_flush = cache.token()
    cache.invalidate_repository(3, "gone")  # so does a catalog change
    assert not cache.valid_since(after_flush, 1)


def test_an_own_notice_is_skipped_only_once_and_only_when_expected() -> None:
    cache = QueryCache(max_bytes=0, ref_ttl=60.0)
    # A move whose after-commit hook never ran: its NOTIFY must invalidate.
    assert not cache.own_notice(1, "refs/heads/main", oid(1).hex())
    cache.expect_notice(1, "refs/heads/main", oid(1))
    assert not cache.own_notice(1, "refs/heads/main", oid(2).hex())  # another target
    assert not cache.own_notice(2, "refs/heads/main", oid(1).hex())  # another repository
    assert cache.own_notice(1, "refs/heads/main", oid(1).hex())
    assert not cache.own_notice(1, "refs/heads/main", oid(1).hex())  # consumed
    cache.expect_notice(1, "refs/heads/gone", None)  # a deletion
    assert cache.own_notice(1, "refs/heads/gone", None)
    assert cache.get_stats()["own_notices_skipped"] == 2


def test_a_read_from_before_an_invalidation_is_not_stored() -> None:
    cache = QueryCache(max_bytes=0, ref_ttl=60.0)
    token = cache.token()  # a reader starts its transaction ...
    cache.invalidate_refs(1, ["refs/heads/main"])  # ... a writer commits and invalidates ...
    cache.put_ref(token, 1, "refs/heads/main", oid(1))  # ... the reader's old value: refused
    cache.put_ref_list(token, 1, "refs/heads/", {"refs/heads/main": oid(1)})
    cache.put_exists(token, 1)
    assert cache.get_ref(1, "refs/heads/main") == (False, None)
    assert cache.get_ref_list(1, "refs/heads/") is None
    assert not cache.get_exists(1)
    assert cache.get_stats()["stale_puts_refused"] == 3
    # Another repository's entries are unaffected by the invalidation.
    cache.put_ref(token, 2, "refs/heads/main", oid(2))
    assert cache.get_ref(2, "refs/heads/main") == (True, oid(2))
    # A flush refuses every earlier token.
    token = cache.token()
    cache.flush_mutable()
    cache.put_ref(token, 2, "refs/heads/x", oid(3))
    assert cache.get_ref(2, "refs/heads/x") == (False, None)


def test_a_ref_write_drops_every_listing_of_its_repository() -> None:
    cache = QueryCache(max_bytes=0, ref_ttl=60.0)
    cache.put_ref_list(cache.token(), 1, "refs/heads/", {"refs/heads/a": oid(1)})
    cache.put_ref_list(cache.token(), 1, "refs/", {"refs/heads/a": oid(1)})
    cache.put_ref_list(cache.token(), 2, "refs/heads/", {"refs/heads/a": oid(2)})
    cache.put_ref(cache.token(), 1, "refs/heads/b", None)  # a cached absence
    listing = cache.get_ref_list(1, "refs/heads/")
    assert listing == {"refs/heads/a": oid(1)}
    listing["refs/heads/z"] = oid(9)  # callers get a copy
    assert cache.get_ref_list(1, "refs/heads/") == {"refs/heads/a": oid(1)}
    cache.invalidate_refs(1, ["refs/heads/b"])
    assert cache.get_ref_list(1, "refs/heads/") is None
    assert cache.get_ref_list(1, "refs/") is None
    assert cache.get_ref(1, "refs/heads/b") == (False, None)
    assert cache.get_ref_list(2, "refs/heads/") == {"refs/heads/a": oid(2)}


def test_ttl_zero_or_a_closed_gate_switches_mutable_caching_off() -> None:
    assert not QueryCache(max_bytes=0, ref_ttl=0.0).mutable_enabled()
    cache = QueryCache(max_bytes=0, ref_ttl=1.0)
    assert cache.mutable_enabled()
    cache.gate = lambda: False
    assert not cache.mutable_enabled()
    assert not cache.get_stats()["mutable_enabled"]


# -- through a Store ------------------------------------------------------------------------


def test_reads_are_answered_from_the_cache(store: Store) -> None:
    repo = store.create_repository("r")
    commit(repo, "dir/a.txt", b"a" * 200)
    settle(store, 1)
    cache = cache_of(store)

    s0 = cache.get_stats()
    assert repo.read("main", "dir/a.txt") == b"a" * 200
    s1 = cache.get_stats()
    assert repo.read("main", "dir/a.txt") == b"a" * 200
    s2 = cache.get_stats()
    # First read: the blob and the ref from the database (the trees were read, and so
    # remembered, by the commit itself); it remembers what "main" resolved to and what
    # the path is. Second read: the cache alone -- no unit, no connection checked out.
    assert delta(s0, s1, "objects", "misses") >= 1
    assert delta(s0, s1, "refs", "misses") >= 1
    for part in ("objects", "trees", "index", "refs", "exists", "revisions", "paths"):
        assert delta(s1, s2, part, "misses") == 0, part
    assert delta(s1, s2, "revisions", "hits") == 1
    assert delta(s1, s2, "paths", "hits") == 1
    assert delta(s1, s2, "objects", "hits") == 1
    checkouts = store.metrics()["pool"]["checkouts"]
    assert repo.read("main", "dir/a.txt") == b"a" * 200
    assert store.metrics()["pool"]["checkouts"] == checkouts
    # A call the memo does not answer runs in a unit, itself served from the cache.
    s3 = cache.get_stats()
    assert repo.exists("main", "dir/a.txt")
    s4 = cache.get_stats()
    for part in ("objects", "trees", "index", "refs", "exists"):
        assert delta(s3, s4, part, "misses") == 0, part
    assert delta(s3, s4, "trees", "hits") >= 2
    assert delta(s3, s4, "refs", "hits") >= 1
    assert delta(s3, s4, "exists", "hits") == 1
    assert s2["immutable"]["bytes"] > 0
    assert store.metrics()["cache"]["objects"]["hits"] == cache.get_stats()["objects"]["hits"]
    assert store.repository("r").name == store.repository("r").name == "r"
    assert cache.get_stats()["repositories"]["hits"] >= 1


def test_the_byte_bound_holds_for_a_store(db_url: str) -> None:
    with opened(db_url, cache_max_bytes=3000) as store:
        repo = store.create_repository("r")
        files = {f"f{i}.bin": bytes([i]) * 1000 for i in range(6)}
        repo.commit("main", files, message="m\n", author=SIG)
        for path, data in files.items():
            assert repo.read("main", path) == data
        stats = cache_of(store).get_stats()
        assert stats["immutable"]["bytes"] <= 3000
        assert stats["objects"]["evictions"] + stats["trees"]["evictions"] >= 3


def test_immutable_entries_survive_writes(store: Store) -> None:
    repo = store.create_repository("r")
    first = commit(repo, "a.txt", b"one")
    assert repo.read(first, "a.txt") == b"one"
    cache = cache_of(store)
    kept = cache.get_stats()
    for i in range(3):
        commit(repo, "b.txt", b"%d" % i)
    s1 = cache.get_stats()
    assert s1["objects"]["entries"] >= kept["objects"]["entries"]
    assert repo.read(first, "a.txt") == b"one"
    s2 = cache.get_stats()
    assert delta(s1, s2, "objects", "misses") == 0
    assert delta(s1, s2, "trees", "misses") == 0
    assert delta(s1, s2, "objects", "hits") >= 1


def test_a_ref_is_never_stale_after_a_write_returned(store: Store) -> None:
    # A one-hour TTL: only invalidation can make these reads right.
    repo = store.create_repository("r")
    head = commit(repo, "a.txt", b"0")
    for i in range(1, 4):
        assert repo.resolve("main") == head
        assert repo.branches() == {"main": head}
        head = commit(repo, "a.txt", b"%d" % i)
        assert repo.resolve("main") == head
        assert repo.read("main", "a.txt") == b"%d" % i
    first = repo.log("main").__next__().parents[0]
    repo.create_branch("topic", first)
    assert repo.branches() == {"main": head, "topic": first}
    repo.move_branch("topic", head)
    assert repo.resolve("topic") == head
    tag = repo.create_tag("v1", "topic")
    assert repo.tags() == {"v1": tag}
    repo.delete_branch("topic")
    assert repo.branches() == {"main": head}
    with pytest.raises(NotFound):
        repo.resolve("topic")
    repo.delete_tag("v1")
    assert repo.tags() == {}
    assert cache_of(store).get_stats()["invalidations"] >= 8


def test_concurrent_readers_never_see_a_ref_older_than_a_returned_write(store: Store) -> None:
    repo = store.create_repository("r")
    heads = [commit(repo, "a.txt", b"start")]
    done = threading.Event()
    problems: list[str] = []

    def reader() -> None:
        # Keeps the cache busy with reads racing the writes (and their invalidations).
        handle = store.repository("r")
        while not done.is_set():
            try:
                handle.resolve("main")
                handle.branches()
            except Exception as exc:
                problems.append(repr(exc))

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(15):
            new = commit(repo, "a.txt", b"%d" % i)
            heads.append(new)
            # The writer's call returned: every fresh read, from any thread, sees it.
            assert repo.resolve("main") == new
            assert store.repository("r").resolve("main") == new
            assert repo.branches() == {"main": new}
    finally:
        done.set()
        for t in threads:
            t.join(30)
    assert problems == []


def test_a_rolled_back_write_leaves_nothing_stale(store: Store) -> None:
    repo = store.create_repository("r")
    head = commit(repo, "a.txt", b"a")
    other = commit(repo, "a.txt", b"b", branch="main")
    assert repo.resolve("main") == other
    rid = store.backend.get_repository("r")
    assert rid is not None
    phantom = hash_object(b"blob", b"never committed")
    with pytest.raises(RuntimeError), store.backend.unit(rid.id, write=True) as unit:
        target = ObjectId(bytes.fromhex(head))
        assert unit.refs.set_if_equals(
            "refs/heads/main", ObjectId(bytes.fromhex(other)), target, "x"
        )
        assert unit.refs.get("refs/heads/main") == target
        unit.objects.put(b"blob", b"never committed")
        assert unit.objects.get(phantom).data == b"never committed"
        raise RuntimeError("roll back")
    assert repo.resolve("main") == other
    assert repo.branches() == {"main": other}
    with pytest.raises(NotFound):
        repo.get_object(phantom.hex())
    # A failed commit (lost compare-and-swap) changes nothing either.
    with pytest.raises(RefConflict):
        repo.commit("main", {"c": b"c"}, message="m\n", author=SIG, expected_head=head)
    assert repo.resolve("main") == other


def test_compare_and_swap_reads_the_database_not_the_cache(store: Store) -> None:
    repo = store.create_repository("r")
    first = commit(repo, "a.txt", b"1")
    second = commit(repo, "a.txt", b"2")
    assert repo.resolve("main") == second  # cached
    rid = store.backend.get_repository("r")
    assert rid is not None
    # Moved behind the library's back (not announced: cached reads may lag until the TTL).
    with store.engine.begin() as conn:
        conn.execute(
            sa.update(T_REF)
            .where(T_REF.c.repo_id == rid.id, T_REF.c.name == "refs/heads/main")
            .values(target=bytes.fromhex(first))
        )
    with pytest.raises(RefConflict):
        repo.commit("main", {"b": b"x"}, message="m\n", author=SIG, expected_head=second)
    repo.move_branch("main", second)  # a fast-forward from the real head
    assert repo.resolve("main") == second


def test_verify_reads_past_the_cache(store: Store) -> None:
    repo = store.create_repository("r")
    commit(repo, "a.txt", b"content")
    entry = repo.tree("main")[0]
    assert repo.read("main", "a.txt") == b"content"  # cached now
    rid = store.backend.get_repository("r")
    assert rid is not None
    with store.engine.begin() as conn:
        conn.execute(
            sa.update(T_OBJ)
            .where(T_OBJ.c.repo_id == rid.id, T_OBJ.c.oid == bytes.fromhex(entry.oid))
            .values(encoding=0, data=b"tampered", size=8)
        )
    report = repo.verify()
    assert not report.ok
    assert any(entry.oid in p for p in report.problems)


def test_cache_disabled_means_no_cache(db_url: str) -> None:
    with opened(db_url, cache_enabled=False) as store:
        assert store.cache is None
        assert store.backend.cache is None
        assert store.listener is None  # nothing to invalidate, no subscriber yet
        repo = store.create_repository("r")
        head = commit(repo, "a.txt", b"x")
        assert repo.read("main", "a.txt") == b"x"
        assert repo.resolve("main") == head
        assert "cache" not in store.metrics()


def test_two_stores_in_one_process_see_each_other_at_once(db_url: str) -> None:
    with opened(db_url, cache_ref_ttl=3600.0) as a, opened(db_url, cache_ref_ttl=3600.0) as b:
        repo_a = a.create_repository("r")
        head = commit(repo_a, "a.txt", b"1")
        repo_b = b.repository("r")
        for _ in range(2):  # warm both
            assert repo_a.resolve("main") == repo_b.resolve("main") == head
            assert repo_b.branches() == {"main": head}
        new = commit(repo_a, "a.txt", b"2")
        assert repo_b.resolve("main") == new
        assert repo_b.branches() == {"main": new}
        a.delete_repository("r")
        with pytest.raises(NotFound):
            b.repository("r")
        with pytest.raises(NotFound):
            repo_b.resolve("main")


def test_sqlite_sees_another_connections_commit_through_data_version(sqlite_url: str) -> None:
    # Detached from the in-process peers, b is in the position of another process: only
    # PRAGMA data_version can tell it that a committed.
    with (
        opened(sqlite_url, cache_ref_ttl=3600.0) as a,
        opened(sqlite_url, cache_ref_ttl=3600.0) as b,
    ):
        cache_of(b).close()
        repo_a = a.create_repository("r")
        head = commit(repo_a, "a.txt", b"1")
        repo_b = b.repository("r")
        assert repo_b.resolve("main") == repo_b.resolve("main") == head
        hits = cache_of(b).get_stats()["refs"]["hits"]
        assert hits >= 1
        for i in range(3):
            new = commit(repo_a, "a.txt", b"x%d" % i)
            assert repo_b.resolve("main") == new
        assert cache_of(b).get_stats()["data_version_changes"] >= 3
        a.delete_repository("r")
        with pytest.raises(NotFound):
            b.repository("r")


def eventually(check: Callable[[], bool], timeout: float) -> bool:
    """Poll ``check`` until it holds or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)


def test_postgres_store_sees_another_stores_commit_through_notify(pg_url: str) -> None:
    with opened(pg_url, cache_ref_ttl=3600.0) as a, opened(pg_url, cache_ref_ttl=3600.0) as b:
        cache_of(b).close()  # only NOTIFY can reach b now
        repo_a = a.create_repository("r")
        head = commit(repo_a, "a.txt", b"1")
        repo_b = b.repository("r")
        settle(b, 1)
        assert repo_b.resolve("main") == repo_b.resolve("main") == head
        assert cache_of(b).get_stats()["refs"]["hits"] >= 1
        for i in range(3):
            new = commit(repo_a, "a.txt", b"x%d" % i)
            # The bound: visible within 1 s while both caches are warm.
            assert eventually(lambda: repo_b.resolve("main") == new, 1.0)  # noqa: B023
            assert repo_b.branches() == {"main": new}
        a.delete_repository("r")
        assert eventually(lambda: not b.list_repositories(), 1.0)

        def gone() -> bool:
            try:
                b.repository("r")
            except NotFound:
                return True
            return False

        assert eventually(gone, 1.0)

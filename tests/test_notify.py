"""Cross-process invalidation and events over LISTEN/NOTIFY (PostgreSQL), and the payloads.

Processes are started with ``spawn`` so each has its own interpreter, Store, pool and
listener, exactly as separate application processes would.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

import govc_db
from govc_db import RefUpdated, Repository, Settings, Signature, Store
from govc_db.db.notify import (
    MAX_PAYLOAD,
    Message,
    connect_kwargs,
    parse_message,
    ref_message,
    repository_deleted_message,
)
from govc_db.objects import ObjectId

SIG = Signature("Ada Lovelace", "ada@example.com", 1_700_000_000, 0)
#: The issue's bound for a commit in one process to be visible in another with warm caches.
VISIBLE_WITHIN = 1.0
#: Generous deadlines for things with no stated bound (process start, reconnect, events).
PATIENCE = 30.0


def eventually(check: Callable[[], bool], timeout: float) -> bool:
    """Poll ``check`` until it holds (True) or ``timeout`` seconds passed (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)


@contextmanager
def opened(url: str, **settings: Any) -> Iterator[Store]:
    store = govc_db.open(url, Settings(**{"cache_ref_ttl": 3600.0, **settings}))
    try:
        if store.listener is not None:
            assert store.listener.wait_connected(PATIENCE), store.listener.get_stats()
        yield store
    finally:
        store.close()


def commit(repo: Repository, data: bytes, branch: str = "main") -> str:
    return repo.commit(branch, {"a.txt": data}, message="m\n", author=SIG)


# -- payloads (no database) -----------------------------------------------------------------


def test_ref_payload_round_trips() -> None:
    old, new = ObjectId(b"\x01" * 20), ObjectId(b"\x02" * 20)
    msg = parse_message(ref_message("s1", 7, "docs", "refs/heads/é", old, new))
    assert msg is not None
    assert msg.store == "s1" and msg.repo_id == 7 and msg.repo == "docs"
    assert (msg.ref, msg.old, msg.new, msg.deleted) == ("refs/heads/é", old.hex(), new.hex(), False)
    created = parse_message(ref_message("s1", 7, "docs", "refs/tags/v1", None, new))
    assert created is not None and created.old is None
    gone = parse_message(repository_deleted_message("s1", 7, "docs"))
    assert gone is not None
    assert gone == Message(store="s1", pid=gone.pid, repo_id=7, repo="docs", deleted=True)


def test_payloads_stay_under_the_limit_and_junk_is_ignored() -> None:
    huge = ref_message("s", 1, "r", "refs/heads/" + "\u20ac" * 2000, None, None)
    assert len(huge) <= MAX_PAYLOAD
    msg = parse_message(huge)
    assert msg is not None and msg.ref is None  # degraded to "every ref of the repository"
    for junk in ("", "x", "[]", '{"v": 2}', '{"v": 1, "store": "s"}', '{"v":1,"pid":"x"}'):
        assert parse_message(junk) is None


def test_connect_kwargs_come_from_the_url() -> None:
    url = sa.make_url("postgresql+psycopg://bob:s3cret@db.example:6543/app?sslmode=require")
    kw = connect_kwargs(url, connect_timeout=2.4)
    assert kw["host"] == "db.example" and kw["port"] == 6543
    assert (kw["user"], kw["password"], kw["dbname"]) == ("bob", "s3cret", "app")
    assert kw["sslmode"] == "require" and kw["connect_timeout"] == 2
    assert kw["application_name"] == "govc_db_listener"


# -- one process, two Stores ----------------------------------------------------------------


def test_own_notifications_do_not_repeat_events(pg_url: str) -> None:
    with opened(pg_url) as store:
        assert store.listener is not None
        events: list[RefUpdated] = []
        store.subscribe(events.append)
        repo = store.create_repository("r")
        before = store.listener.get_stats()["notifications"]
        head = commit(repo, b"1")
        assert events == [RefUpdated("r", "refs/heads/main", None, head)]
        # Our own notification arrives too; it is not delivered again.
        assert eventually(
            lambda: (
                store.listener is not None and store.listener.get_stats()["notifications"] > before
            ),
            PATIENCE,
        )
        assert events == [RefUpdated("r", "refs/heads/main", None, head)]


def test_own_notifications_do_not_invalidate_twice(pg_url: str) -> None:
    """A move this Store committed was invalidated by its after-commit hook: the NOTIFY
    arriving back is recognised and does not invalidate again (a NOTIFY that arrives
    before the hook ran still invalidates, so only most are counted as skipped)."""
    with opened(pg_url) as store:
        assert store.listener is not None and store.cache is not None
        repo = store.create_repository("r")
        listener = store.listener
        # Which comes first, the after-commit hook or the NOTIFY arriving back, is a race
        # between two threads; commit until one notice came after its hook (each commit's
        # notice waited for, so every round is a fresh try), at most 60 times.
        for n in range(60):
            before: int = listener.get_stats()["notifications"]
            commit(repo, str(n).encode())

            def arrived(before: int = before) -> bool:
                return bool(listener.get_stats()["notifications"] > before)

            assert eventually(arrived, PATIENCE)
            if store.cache.get_stats()["own_notices_skipped"] >= 1:
                break
        assert store.cache.get_stats()["own_notices_skipped"] >= 1
        # Every skipped notice was one the hook had invalidated: never stale.
        head = repo.resolve("main")
        assert store.cache.get_ref(repo.id, "refs/heads/main") in (
            (False, None),
            (True, bytes.fromhex(head)),
        )


def test_listener_reconnects_flushes_and_keeps_delivering(pg_url: str) -> None:
    with opened(pg_url) as store, opened(pg_url) as writer:
        listener = store.listener
        assert listener is not None
        cache = store.cache
        assert cache is not None
        repo = writer.create_repository("r")
        head = commit(repo, b"1")
        # The writer's NOTIFY must have arrived before we warm up, or it empties the cache.
        assert eventually(lambda: listener.get_stats()["notifications"] >= 1, PATIENCE)
        mine = store.repository("r")
        assert mine.resolve("main") == mine.resolve("main") == head
        assert cache.get_stats()["refs"]["entries"] >= 1
        flushes = cache.get_stats()["flushes"]
        pid = listener.get_stats()["backend_pid"]
        assert isinstance(pid, int)

        admin = sa.create_engine(pg_url, poolclass=NullPool)
        try:
            with admin.connect() as conn:
                killed = conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                assert killed.scalar() is True
        finally:
            admin.dispose()

        def reconnected() -> bool:
            s = listener.get_stats()
            return bool(s["connected"]) and s["reconnects"] >= 1 and s["backend_pid"] != pid

        assert eventually(reconnected, PATIENCE), listener.get_stats()
        stats = listener.get_stats()
        assert stats["last_error"] is not None and stats["errors"] >= 1
        # Flushed when the connection was lost and again once listening again.
        assert cache.get_stats()["flushes"] >= flushes + 2
        assert cache.get_stats()["refs"]["entries"] == 0

        events: list[RefUpdated] = []
        store.subscribe(events.append)
        assert mine.resolve("main") == head  # warm again
        new = commit(repo, b"2")  # through the other Store: reaches us by NOTIFY only
        assert eventually(lambda: mine.resolve("main") == new, VISIBLE_WITHIN)
        assert eventually(lambda: bool(events), PATIENCE)
        assert events == [RefUpdated("r", "refs/heads/main", head, new)]


def test_notify_disabled_means_no_listener_and_no_cached_refs(pg_url: str) -> None:
    with opened(pg_url, notify_enabled=False) as store, opened(pg_url) as writer:
        assert store.listener is None
        cache = store.cache
        assert cache is not None
        cache.close()  # not even the in-process shortcut
        assert not cache.mutable_enabled()
        events: list[RefUpdated] = []
        store.subscribe(events.append)
        assert store.listener is None
        repo = writer.create_repository("r")
        mine = store.repository("r")
        for i in range(3):
            head = commit(repo, b"%d" % i)
            assert mine.resolve("main") == head  # always read from the database
        assert cache.get_stats()["refs"]["hits"] == 0
        assert events == []


def test_subscribe_starts_the_listener_even_without_a_cache(pg_url: str) -> None:
    with opened(pg_url, cache_enabled=False) as store, opened(pg_url) as writer:
        assert store.listener is None  # nothing to invalidate: started on demand
        events: list[RefUpdated] = []
        store.subscribe(events.append)
        listener = store.listener
        assert listener is not None and listener.wait_connected(PATIENCE)
        repo = writer.create_repository("r")
        head = commit(repo, b"1")
        assert eventually(lambda: bool(events), PATIENCE)
        assert events == [RefUpdated("r", "refs/heads/main", None, head)]


def test_close_stops_the_listener_and_its_connection(pg_url: str) -> None:
    with opened(pg_url) as store:
        listener = store.listener
        assert listener is not None
        pid = listener.get_stats()["backend_pid"]
    assert not listener.connected
    admin = sa.create_engine(pg_url, poolclass=NullPool)
    query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p")
    try:
        with admin.connect() as conn:
            assert eventually(lambda: conn.execute(query, {"p": pid}).scalar() == 0, PATIENCE)
    finally:
        admin.dispose()


# -- two processes --------------------------------------------------------------------------


def other_process(url: str, inbox: Any, outbox: Any) -> None:
    """Child body (spawned): a warm Store that waits for the parent's commit, then commits."""
    try:
        with opened(url) as store:
            repo = store.repository("shared")
            first = repo.resolve("main")
            for _ in range(3):
                assert repo.resolve("main") == first
                assert repo.branches() == {"main": first}
            cache = store.cache
            assert cache is not None
            warm_hits = cache.get_stats()["refs"]["hits"]
            assert warm_hits >= 2
            outbox.put(("ready", first))
            kind, expected = inbox.get(timeout=PATIENCE)
            assert kind == "committed"
            # Measured from when the parent's commit had returned (before it told us).
            seen = eventually(lambda: repo.resolve("main") == expected, VISIBLE_WITHIN)
            outbox.put(("seen", seen, repo.branches()))
            kind, _ = inbox.get(timeout=PATIENCE)
            assert kind == "your turn"
            mine = commit(repo, b"from the child")
            topic = repo.create_branch("topic", expected)
            outbox.put(("child committed", mine, topic))
            inbox.get(timeout=PATIENCE)  # the parent is done with us
    except BaseException as exc:  # reported to the parent, which fails the test
        outbox.put(("error", repr(exc)))


def test_two_processes_with_warm_caches(pg_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    inbox, outbox = ctx.Queue(), ctx.Queue()
    with opened(pg_url) as store:
        repo = store.create_repository("shared")
        first = commit(repo, b"1")
        events: list[RefUpdated] = []
        store.subscribe(events.append, repository="shared")
        proc = ctx.Process(target=other_process, args=(pg_url, inbox, outbox), name="govc-peer")
        proc.start()
        try:

            def receive() -> tuple[Any, ...]:
                try:
                    msg: tuple[Any, ...] = outbox.get(timeout=PATIENCE * 2)
                except queue.Empty:
                    pytest.fail("the other process did not report back in time")
                assert msg[0] != "error", msg[1]
                return msg

            assert receive() == ("ready", first)
            for _ in range(3):  # our cache is warm too
                assert repo.resolve("main") == first
            second = commit(repo, b"2")
            inbox.put(("committed", second))
            assert receive() == ("seen", True, {"main": second})

            inbox.put(("your turn", None))
            _, third, topic = receive()
            assert topic == second
            # Their commit is visible here within the bound, through our warm cache.
            assert eventually(lambda: repo.resolve("main") == third, VISIBLE_WITHIN)
            assert repo.branches() == {"main": third, "topic": second}
            # ... and their ref moves reached our subscriber (ours was delivered in-process).
            assert eventually(lambda: len(events) == 3, PATIENCE), events
            assert events == [
                RefUpdated("shared", "refs/heads/main", first, second),
                RefUpdated("shared", "refs/heads/main", second, third),
                RefUpdated("shared", "refs/heads/topic", None, second),
            ]
            inbox.put(("done", None))
            proc.join(PATIENCE)
            assert proc.exitcode == 0
        finally:
            if proc.is_alive():
                proc.kill()
                proc.join(10)
            proc.close()
            for q in (inbox, outbox):
                q.close()
                q.join_thread()

"""The API optimizer as operation middleware: rate limiter, circuit breaker, request
coalescing, concurrency limiter, the caller identity and ``store.map``.

Unit tests drive each middleware with an injected clock; the store tests run the same
layers against real SQLite and PostgreSQL, switched on and off through ``Settings``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

import govc_db
from govc_db import Settings, Signature, Store
from govc_db.errors import (
    CircuitOpen,
    InvalidInput,
    NotFound,
    Overloaded,
    RateLimited,
    StoreUnavailable,
)
from govc_db.middleware.base import MiddlewareSpec, Operation, build_chain
from govc_db.middleware.breaker import BreakerMiddleware
from govc_db.middleware.caller import current_caller
from govc_db.middleware.coalesce import CoalesceMiddleware
from govc_db.middleware.limiter import LimiterMiddleware
from govc_db.middleware.ratelimit import RateLimitMiddleware

SIG = Signature("Ada", "ada@example.com", 1_700_000_000, 0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def op(name: str = "read", repo: str = "r", write: bool = False, **args: Any) -> Operation:
    return Operation(name, repo, lambda: name, write=write, args=args)


def opened(url: str, **settings: Any) -> Store:
    return govc_db.open(url, settings=Settings(**settings))


@pytest.fixture
def seeded(db_url: str) -> str:
    with govc_db.open(db_url) as s:
        repo = s.create_repository("demo")
        repo.commit("main", {"a.txt": b"A" * 100, "b.txt": b"B"}, message="m\n", author=SIG)
    return db_url


# -- caller ---------------------------------------------------------------------------------


def test_caller_identity_nests_and_is_validated() -> None:
    assert current_caller() == "library"
    with govc_db.caller("alice"):
        assert current_caller() == "alice"
        with govc_db.caller("bob"):
            assert current_caller() == "bob"
        assert current_caller() == "alice"
    assert current_caller() == "library"
    with pytest.raises(InvalidInput), govc_db.caller(""):
        pass


# -- rate limiter ---------------------------------------------------------------------------


def test_token_bucket_refills_at_the_rate() -> None:
    clock = Clock()
    handler, (mw,) = build_chain(
        [MiddlewareSpec(RateLimitMiddleware, {"rate": 2.0, "burst": 3, "timer": clock})]
    )
    for _ in range(3):
        assert handler(op()) == "read"
    with pytest.raises(RateLimited) as info:
        handler(op())
    assert info.value.retry_after == pytest.approx(0.5)
    clock.now += 0.5
    assert handler(op()) == "read"  # one token came back
    with pytest.raises(RateLimited):
        handler(op())
    clock.now += 100  # refills only up to the burst
    for _ in range(3):
        handler(op())
    with pytest.raises(RateLimited):
        handler(op())
    assert mw.get_stats()["limited"] == 3


def test_buckets_are_per_caller_and_per_repository() -> None:
    handler, _ = build_chain(
        [MiddlewareSpec(RateLimitMiddleware, {"rate": 0.001, "burst": 1, "timer": Clock()})]
    )
    handler(op(repo="r1"))
    with pytest.raises(RateLimited):
        handler(op(repo="r1"))
    handler(op(repo="r2"))  # another repository: its own bucket
    with govc_db.caller("someone-else"):
        handler(op(repo="r1"))  # another caller: its own bucket
        with pytest.raises(RateLimited):
            handler(op(repo="r1"))


def test_store_rate_limit_setting(seeded: str) -> None:
    with opened(seeded, rate_limit=0.01, rate_burst=3) as s:
        repo = s.repository("demo")  # 1
        repo.read("main", "a.txt")  # 2
        repo.read("main", "b.txt")  # 3
        with pytest.raises(RateLimited) as info:
            repo.read("main", "a.txt")
        assert info.value.retry_after > 0
        with govc_db.caller("other"):
            assert repo.read("main", "b.txt") == b"B"
        assert s.metrics()["ratelimit"]["limited"] == 1
    with opened(seeded, rate_burst=3) as s:  # rate_limit None: no limiter at all
        repo = s.repository("demo")
        for _ in range(10):
            repo.read("main", "a.txt")
        assert "ratelimit" not in s.metrics()


# -- circuit breaker ------------------------------------------------------------------------


class Flaky:
    def __init__(self) -> None:
        self.error: BaseException | None = StoreUnavailable("down")
        self.calls = 0

    def __call__(self, o: Operation) -> Any:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return "ok"


def breaker(
    clock: Clock, failures: int = 3, reset: float = 10.0
) -> tuple[Flaky, BreakerMiddleware]:
    app = Flaky()
    return app, BreakerMiddleware(app, failures=failures, reset=reset, timer=clock)


def test_breaker_opens_fails_fast_then_probes() -> None:
    clock = Clock()
    app, mw = breaker(clock)
    handler = mw
    for _ in range(3):
        with pytest.raises(StoreUnavailable):
            handler(op())
    assert mw.state == "open" and app.calls == 3
    with pytest.raises(CircuitOpen) as info:
        handler(op())
    assert app.calls == 3  # failed fast: the database was not asked
    assert info.value.retry_after == pytest.approx(10.0)
    clock.now += 10
    with pytest.raises(StoreUnavailable):  # the probe fails: open again
        handler(op())
    assert mw.state == "open" and app.calls == 4
    with pytest.raises(CircuitOpen):
        handler(op())
    clock.now += 10
    app.error = None
    assert handler(op()) == "ok"  # the probe succeeds: closed
    assert mw.state == "closed"
    assert handler(op()) == "ok"
    stats = mw.get_stats()
    assert stats["opened"] == 2 and stats["closed"] == 1 and stats["probes"] == 2


def test_breaker_counts_failures_in_a_window_and_ignores_other_errors() -> None:
    clock = Clock()
    app, mw = breaker(clock, failures=2, reset=5.0)
    handler = mw
    with pytest.raises(StoreUnavailable):
        handler(op())
    clock.now += 6  # the first failure has left the window
    with pytest.raises(StoreUnavailable):
        handler(op())
    assert mw.state == "closed"
    app.error = NotFound("nope")  # the database answered
    for _ in range(5):
        with pytest.raises(NotFound):
            handler(op())
    app.error = Overloaded("queue full")  # not the database failing
    for _ in range(5):
        with pytest.raises(Overloaded):
            handler(op())
    assert mw.state == "closed"


def test_only_one_probe_at_a_time() -> None:
    clock = Clock()
    release = threading.Event()
    entered = threading.Event()

    def slow(o: Operation) -> str:
        entered.set()
        release.wait(5)
        return "ok"

    mw = BreakerMiddleware(slow, failures=1, reset=1.0, timer=clock)
    mw._open(clock.now)
    clock.now += 1
    results: list[object] = []
    t = threading.Thread(target=lambda: results.append(mw(op())))
    t.start()
    assert entered.wait(5)
    with pytest.raises(CircuitOpen):
        mw(op())
    release.set()
    t.join(5)
    assert results == ["ok"] and mw.state == "closed"


# -- coalescing -----------------------------------------------------------------------------


class Gate:
    """An app whose calls block until released; counts executions."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.executions = 0
        self.value: Any = ["x"]

    def __call__(self, o: Operation) -> Any:
        if o.write:
            return "written"
        self.executions += 1
        self.entered.set()
        self.release.wait(5)
        return self.value


def run_threads(n: int, fn: Callable[[], Any]) -> tuple[list[Any], list[threading.Thread]]:
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(fn())) for _ in range(n)]
    for t in threads:
        t.start()
    return results, threads


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.005)


def test_identical_concurrent_reads_share_one_execution() -> None:
    app = Gate()
    mw = CoalesceMiddleware(app)
    results, threads = run_threads(10, lambda: mw(op(rev="main", path="a")))
    wait_for(lambda: mw.get_stats()["coalesced"] == 9)
    _other, more = run_threads(1, lambda: mw(op(rev="main", path="b")))  # other args
    wait_for(lambda: app.executions == 2)
    app.release.set()
    for t in threads + more:
        t.join(5)
    assert app.executions == 2
    assert results == [["x"]] * 10
    assert len({id(r) for r in results}) == 10  # each caller got its own list


def test_a_read_after_a_write_does_not_join_an_older_read() -> None:
    app = Gate()
    mw = CoalesceMiddleware(app)
    _, first = run_threads(1, lambda: mw(op(rev="main")))
    assert app.entered.wait(5)
    assert mw(op("commit", write=True)) == "written"
    _, second = run_threads(1, lambda: mw(op(rev="main")))
    wait_for(lambda: app.executions == 2)  # ran on its own
    app.release.set()
    for t in first + second:
        t.join(5)
    assert mw.get_stats()["coalesced"] == 0
    # A ref moved by another Store (an event) starts a new generation too.
    app.release.clear()
    _, third = run_threads(1, lambda: mw(op(rev="dev")))
    wait_for(lambda: app.executions == 3)
    mw.on_ref_updated(govc_db.RefUpdated("r", "refs/heads/dev", None, "a" * 40))
    _, fourth = run_threads(1, lambda: mw(op(rev="dev")))
    wait_for(lambda: app.executions == 4)
    app.release.set()
    for t in third + fourth:
        t.join(5)


def test_coalescing_steps_aside_when_bypassed_and_shares_errors() -> None:
    app = Gate()
    inside = threading.local()
    mw = CoalesceMiddleware(app, bypass=lambda: getattr(inside, "yes", False))

    def in_tx() -> Any:
        inside.yes = True
        return mw(op())

    _, threads = run_threads(3, in_tx)
    wait_for(lambda: app.executions == 3)
    app.release.set()
    for t in threads:
        t.join(5)

    def failing(o: Operation) -> Any:
        time.sleep(0.2)
        raise NotFound("gone")

    mw2 = CoalesceMiddleware(failing)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            mw2(op())
        except NotFound as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(errors) == 4 and all(str(e) == "gone" for e in errors)
    assert mw2.get_stats()["executions"] + mw2.get_stats()["coalesced"] == 4


@pytest.fixture
def slow_statements() -> Iterator[Callable[[Store, float], list[str]]]:
    """Make every statement of a store's engine take ``delay`` seconds longer (so
    concurrent calls overlap) and record them."""
    undo: list[Callable[[], None]] = []

    def install(store: Store, delay: float) -> list[str]:
        seen: list[str] = []

        def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            seen.append(statement)
            time.sleep(delay)

        sa.event.listen(store.engine, "before_cursor_execute", before)
        undo.append(lambda: sa.event.remove(store.engine, "before_cursor_execute", before))
        return seen

    yield install
    for u in undo:
        u()


@pytest.mark.parametrize("enabled", [True, False])
def test_store_coalesces_64_identical_cold_reads(
    seeded: str, enabled: bool, slow_statements: Callable[[Store, float], list[str]]
) -> None:
    with opened(seeded, cache_enabled=False, coalesce_enabled=enabled, pool_size=8) as s:
        repo = s.repository("demo")
        repo.read("main", "a.txt")  # warm the connection; count one read's statements
        seen = slow_statements(s, 0.0)
        repo.read("main", "a.txt")
        one_read = len(seen)
        seen.clear()
        s.engine.dispose()
        seen = slow_statements(s, 0.02)
        barrier = threading.Barrier(64)

        def read() -> bytes:
            barrier.wait(10)
            return repo.read("main", "a.txt")

        results, threads = run_threads(64, read)
        for t in threads:
            t.join(30)
        assert results == [b"A" * 100] * 64
        reads = [q for q in seen if "govc_objects" in q]
        if enabled:
            assert len(seen) <= one_read + 2  # one execution (plus session setup)
            assert s.metrics()["coalesce"]["coalesced"] >= 1
        else:
            assert len(reads) >= 64
            assert "coalesce" not in s.metrics()


def test_store_reads_in_a_transaction_are_not_coalesced(seeded: str) -> None:
    with opened(seeded, coalesce_enabled=True) as s:
        repo = s.repository("demo")
        with s.transaction():
            repo.commit("main", {"c.txt": b"C"}, message="c\n", author=SIG)
            assert repo.read("main", "c.txt") == b"C"
        before = s.metrics()["coalesce"]["executions"]
        with s.transaction():
            repo.read("main", "a.txt")
        assert s.metrics()["coalesce"]["executions"] == before


# -- concurrency limiter --------------------------------------------------------------------


def test_limiter_queues_then_rejects() -> None:
    app = Gate()
    mw = LimiterMiddleware(app, limit=2, timeout=0.05)
    _, threads = run_threads(2, lambda: mw(op()))
    wait_for(lambda: mw.get_stats()["running"] == 2)
    with pytest.raises(Overloaded) as info:
        mw(op())
    assert info.value.retry_after > 0
    assert isinstance(info.value, StoreUnavailable)
    # A queued call gets the slot a finished one frees.
    mw.timeout = 5.0
    results, waiting = run_threads(1, lambda: mw(op()))
    wait_for(lambda: mw.get_stats()["waiting"] == 1)
    app.release.set()
    for t in threads + waiting:
        t.join(5)
    assert results == [["x"]]
    stats = mw.get_stats()
    assert stats["rejected"] == 1 and stats["queued"] == 2 and stats["running"] == 0


def test_limiter_nested_calls_do_not_take_a_second_slot() -> None:
    inner: list[Any] = []
    mw: LimiterMiddleware

    def app(o: Operation) -> Any:
        if o.name == "outer":
            inner.append(mw(op("inner")))
        return o.name

    mw = LimiterMiddleware(app, limit=1, timeout=0.05)
    assert mw(op("outer")) == "outer" and inner == ["inner"]


def test_store_max_in_flight_setting(
    seeded: str, slow_statements: Callable[[Store, float], list[str]]
) -> None:
    with opened(
        seeded, cache_enabled=False, coalesce_enabled=False, max_in_flight=1, queue_timeout=0.05
    ) as s:
        repo = s.repository("demo")
        slow_statements(s, 0.3)
        results, threads = run_threads(1, lambda: repo.read("main", "a.txt"))
        wait_for(lambda: s.metrics()["limiter"]["running"] == 1)
        with pytest.raises(Overloaded):
            repo.read("main", "b.txt")
        for t in threads:
            t.join(10)
        assert results == [b"A" * 100]
    with opened(seeded, cache_enabled=False, coalesce_enabled=False) as s:
        repo = s.repository("demo")
        slow_statements(s, 0.1)
        results, threads = run_threads(3, lambda: repo.read("main", "a.txt"))
        for t in threads:
            t.join(10)
        assert results == [b"A" * 100] * 3
        assert "limiter" not in s.metrics()


# -- worker pool ----------------------------------------------------------------------------


def test_store_map_runs_in_order_on_workers(seeded: str) -> None:
    with opened(seeded, map_workers=4) as s:
        repo = s.repository("demo")
        threads: set[str] = set()
        callers: set[str] = set()

        def read(path: str) -> bytes:
            threads.add(threading.current_thread().name)
            callers.add(current_caller())
            time.sleep(0.02)
            return repo.read("main", path)

        paths = ["a.txt", "b.txt"] * 8
        with govc_db.caller("batch-job"):
            out = s.map(read, paths)
        assert out == [b"A" * 100, b"B"] * 8
        assert len(threads) > 1 and all(t.startswith("govc_db-map") for t in threads)
        assert callers == {"batch-job"}
        with pytest.raises(NotFound):
            s.map(lambda p: repo.read("main", p), ["a.txt", "missing.txt", "b.txt"])
    with opened(seeded, map_workers=1) as s:
        repo = s.repository("demo")
        names: set[str] = set()

        def where(path: str) -> bytes:
            names.add(threading.current_thread().name)
            return repo.read("main", path)

        assert s.map(where, ["a.txt", "b.txt", "a.txt"]) == [b"A" * 100, b"B", b"A" * 100]
        assert names == {threading.current_thread().name}


def test_new_settings_are_validated() -> None:
    cases: list[tuple[str, Any]] = [
        ("max_in_flight", 0),
        ("queue_timeout", -1.0),
        ("map_workers", 0),
        ("replica_check_interval", -1.0),
        ("coalesce_enabled", "yes"),
    ]
    for name, value in cases:
        with pytest.raises(InvalidInput, match=name):
            Settings(**{name: value})


def test_replica_urls_are_refused_on_sqlite(sqlite_url: str) -> None:
    settings = Settings(replica_urls=("postgresql+psycopg://u@127.0.0.1:1/x",))
    with pytest.raises(InvalidInput, match="SQLite"):
        govc_db.open(sqlite_url, settings=settings)


@pytest.mark.parametrize(("interval", "expected_attempts"), [(1000.0, 1), (0.0, 4)])
def test_replica_check_interval_bounds_retries_of_an_ejected_replica(
    pg_url: str, interval: float, expected_attempts: int
) -> None:
    # A replica that never answers (nothing listens on port 1): the reads go to the
    # primary without failing; the interval decides how often the replica is tried again.
    settings = Settings(
        replica_urls=("postgresql+psycopg://postgres@127.0.0.1:1/none",),
        replica_check_interval=interval,
        cache_enabled=False,
        connect_timeout=1,
    )
    with govc_db.open(pg_url, settings=settings) as s:
        assert s.replicas is not None
        attempts: list[int] = []
        sa.event.listen(s.replicas.replicas[0].engine, "do_connect", lambda *a: attempts.append(1))
        repo = s.create_repository("r")
        repo.commit("main", {"a.txt": b"a"}, message="m\n", author=SIG)
        for _ in range(4):
            assert repo.read("main", "a.txt") == b"a"
        assert len(attempts) == expected_attempts
        stats = s.metrics()["replicas"]
        replica = next(iter(stats["replicas"].values()))
        assert replica["healthy"] is False and replica["ejections"] == 1
        assert stats["primary_reads"] >= 4
        assert "127.0.0.1:1/none" in next(iter(stats["replicas"]))


def test_a_listing_after_a_create_does_not_join_an_older_listing() -> None:
    app = Gate()
    mw = CoalesceMiddleware(app)
    _, first = run_threads(1, lambda: mw(op("list_repositories", repo="")))
    assert app.entered.wait(5)
    mw(op("create_repository", repo="new", write=True))
    _, second = run_threads(1, lambda: mw(op("list_repositories", repo="")))
    wait_for(lambda: app.executions == 2)
    app.release.set()
    for t in first + second:
        t.join(5)

"""The memory optimizer (middleware) and the memory metrics, on SQLite and PostgreSQL."""

from __future__ import annotations

import gc
import io
import random
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

import govc_db
from govc_db import Settings, Signature
from govc_db.middleware import memory as memory_optimizer
from govc_db.middleware.memory import AUTOMATIC, YOUNG_COLLECTIONS

SIG = Signature("Ada", "ada@example.com", 1700000000, 0)


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()  # the next tests' garbage must be collectable as usual
    # ... and the next test's first Store freezes the start-up heap again, as in a new
    # process (the optimizer freezes it once per process).
    memory_optimizer._STATE.started = False


def optimizer(store: govc_db.Store) -> dict[str, Any]:
    stats: dict[str, Any] = store.metrics()["memory"]["optimizer"]
    return stats


def young_ids() -> set[int]:
    """Ids of the objects the collector walks (the frozen ones are not listed)."""
    return {id(o) for o in gc.get_objects()}


def test_the_optimizer_freezes_tunes_and_reports(db_url: str, restore_gc: None) -> None:
    before = gc.get_threshold()
    with govc_db.open(db_url, settings=Settings(memory_optimizer=False)) as plain:
        assert gc.get_threshold() == before
        assert plain.metrics()["memory"]["optimizer"] == {"enabled": False}
    with govc_db.open(
        db_url, settings=Settings(memory_optimizer=True, memory_gc_threshold=5000)
    ) as st:
        automatic = (5000 * AUTOMATIC, YOUNG_COLLECTIONS, gc.get_threshold()[2])
        assert gc.get_threshold() == automatic
        assert gc.get_threshold()[2] > 10**8  # no automatic full collection
        assert gc.get_freeze_count() > 0
        memory = st.metrics()["memory"]
        assert memory["optimizer"]["enabled"] is True
        assert memory["optimizer"]["young_collection_after"] == 5000
        assert memory["optimizer"]["thresholds"][0] == 5000 * AUTOMATIC
        assert memory["optimizer"]["freeze_growth"] == Settings().memory_freeze_growth
        assert memory["optimizer"]["frozen_after_last_full_collection"] > 0
        assert memory["rss_bytes"] > 10 * 1024 * 1024
        assert memory["peak_rss_bytes"] >= memory["rss_bytes"] // 2
        assert len(memory["gc"]["max_pause_ms_by_generation"]) == 3
        gc.collect(0)
        cpu = st.metrics()["memory"]["gc"]
        assert cpu["max_pause_cpu_ms"] >= 0 and len(cpu["max_pause_cpu_ms_by_generation"]) == 3
        with govc_db.open(
            db_url, settings=Settings(memory_optimizer=True, memory_gc_threshold=700)
        ) as second:
            # The collector is process-wide: the first Store's tuning stands; the bound on
            # frozen objects makes room for the second Store's cache too.
            assert gc.get_threshold()[0] == 5000 * AUTOMATIC
            both = optimizer(second)
            assert both["enabled"] is True
            assert both["frozen_limit"] == (
                memory["optimizer"]["frozen_limit"] + Settings().cache_max_bytes // 100
            )
    assert gc.get_threshold() == before  # given back when the last one closed


def test_survivors_are_frozen_between_operations(db_url: str, restore_gc: None) -> None:
    with govc_db.open(
        db_url, settings=Settings(memory_optimizer=True, memory_gc_threshold=100)
    ) as st:
        repo = st.create_repository("r")
        repo.commit("main", {"a": b"a"}, message="m\n", author=SIG)
        done = optimizer(st)
        # Long-lived containers, enough for automatic collections to promote some to
        # generation 2: a young collection and a freeze are due.
        kept: list[Any] = [[i] for i in range(100 * AUTOMATIC * (YOUNG_COLLECTIONS + 2) * 2)]
        assert gc.get_count()[2] > 0
        assert id(kept[0]) in young_ids()
        assert repo.read("main", "a") == b"a"  # an operation ends, none other in flight
        after = optimizer(st)
        assert after["refreezes_between_operations"] > done["refreezes_between_operations"]
        full = "full_collections_between_operations"
        assert after[full] == done[full]
        assert after["frozen_objects"] >= done["frozen_objects"] + len(kept)
        assert gc.is_tracked(kept[0]) and id(kept[0]) not in young_ids()
        # Young garbage is collected before the freeze, not frozen.
        cycle: list[Any] = []
        cycle.append(cycle)
        probe = weakref.ref(_Box(cycle))
        del cycle
        for _ in range(3):
            kept.append([[0] for _ in range(300)])  # promotions: a re-freeze is due
            repo.read("main", "a")
        assert probe() is None


class _Box:
    """A weak-referenceable object kept alive only by a reference cycle."""

    def __init__(self, cycle: list[Any]) -> None:
        cycle.append(self)


def frozen_cycles(n: int, repo: govc_db.Repository) -> list[weakref.ref[_Box]]:
    """``n`` objects in reference cycles, alive when an operation ends (the optimizer's
    re-freeze moves them to the permanent generation), then dropped: frozen garbage."""
    boxes = [_Box([]) for _ in range(n)]
    for b in boxes:
        b.self = b  # type: ignore[attr-defined]
    repo.read("main", "a")  # n allocations: a young collection and a re-freeze are due
    assert all(id(b) not in young_ids() for b in boxes[:10])
    refs = [weakref.ref(b) for b in boxes]
    del boxes
    return refs


@pytest.mark.parametrize("growth", [1.1, None])
def test_frozen_garbage_is_bounded(db_url: str, restore_gc: None, growth: float | None) -> None:
    settings = Settings(
        memory_optimizer=True,
        memory_gc_threshold=100,
        memory_freeze_growth=growth,
        cache_max_bytes=64 * 1024,  # its share of the bound: 655 objects
    )
    with govc_db.open(db_url, settings=settings) as st:
        repo = st.create_repository("r")
        repo.commit("main", {"a": b"a"}, message="m\n", author=SIG)
        done = optimizer(st)
        base = done["frozen_after_last_full_collection"]
        if growth is not None:
            assert done["frozen_limit"] == int(growth * base) + 64 * 1024 // 100
        # Enough frozen garbage to pass the bound (a tenth of the frozen heap) twice over.
        dead = frozen_cycles(base // 5 + 1000, repo)
        assert gc.get_freeze_count() > 1.1 * base + 655
        kept = [[i] for i in range(100 * YOUNG_COLLECTIONS * 4)]  # a re-freeze is due
        repo.read("main", "a")
        after = optimizer(st)
        full = "full_collections_between_operations"
        if growth is None:  # no bound: the garbage stays frozen
            assert after[full] == done[full]
            assert all(r() is not None for r in dead[:10])
        else:
            assert after[full] == done[full] + 1
            assert after["last_full_collection_freed"] >= len(dead)
            assert all(r() is None for r in dead)
            assert after["frozen_objects"] <= after["frozen_after_last_full_collection"] + 100
            assert after["frozen_objects"] < base + len(dead)
            assert gc.is_tracked(kept[0]) and id(kept[0]) not in young_ids()


def test_operations_leave_no_cyclic_garbage(db_url: str) -> None:
    """Every operation's objects are freed by reference counting: nothing for the cyclic
    collector to find (what it would find, the memory optimizer would freeze)."""
    with govc_db.open(db_url) as st:
        repo = st.create_repository("r")
        first = repo.commit("main", {"a/x": b"1", "b": b"2"}, message="m\n", author=SIG)

        def work(k: int) -> None:
            repo.commit("main", {"a/x": b"%d" % k}, message=f"c{k}\n", author=SIG)
            with repo.changes("main", message=f"d{k}\n", author=SIG) as c:
                c.write(f"n/{k}", b"new")
            assert repo.read("main", "a/x") == b"%d" % k
            with repo.open("main", "b") as f:
                assert f.read() == b"2"
            list(repo.log("main", limit=5))
            list(repo.log("main", path="a/x"))
            repo.diff(first, "main")
            list(repo.walk("main"))
            repo.tree("main", "a")
            repo.branches()
            repo.get_commit("main~1")
            repo.create_branch(f"b{k}", "main")
            repo.delete_branch(f"b{k}")

        work(0)  # warm: caches, compiled statements, lazy imports
        gc.collect()
        gc.disable()
        try:
            for k in range(1, 4):
                work(k)
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
        finally:
            gc.set_debug(0)
            gc.enable()
        found = [
            f"{type(o).__module__}.{type(o).__qualname__}"
            for o in gc.garbage
            if str(getattr(type(o), "__module__", "")).startswith(("govc_db", "sqlalchemy"))
            or str(getattr(o, "__module__", "")).startswith("govc_db")
        ]
        gc.garbage.clear()
        assert found == []


def test_bytes_in_flight_while_a_large_file_is_read(db_url: str) -> None:
    data = random.Random(3).randbytes(3 * 1024 * 1024)
    small = Settings(chunk_threshold=1024 * 1024, chunk_avg_size=256 * 1024)
    with govc_db.open(db_url, settings=small) as st:
        repo = st.create_repository("r")
        repo.commit("main", {"big": io.BytesIO(data)}, message="m\n", author=SIG)
        idle = st.metrics()["memory"]["bytes_in_flight"]
        with repo.open("main", "big") as f:
            f.read(10)
            held = st.metrics()["memory"]
            assert held["bytes_in_flight"] > idle
            assert held["peak_bytes_in_flight"] >= held["bytes_in_flight"]
            # The current window and the one read ahead (chunk_read_window chunks each, a
            # chunk at most twice the average), never the file.
            assert held["bytes_in_flight"] - idle <= 2 * 4 * 2 * 256 * 1024
        assert st.metrics()["memory"]["bytes_in_flight"] == idle
        assert repo.read("main", "big") == data


def test_a_store_per_request_does_not_freeze_the_last_ones_remains(
    db_url: str, restore_gc: None
) -> None:
    # The start-up freeze happens once per process: a later Store opening (a process that
    # opens one per request) must not freeze whatever the previous one left to collect.
    settings = Settings(memory_optimizer=True)
    with govc_db.open(db_url, settings=settings) as first:
        assert first.metrics()["memory"]["optimizer"]["enabled"] is True
    cycle: list[Any] = []
    cycle.append(cycle)
    probe = weakref.ref(_Box(cycle))  # garbage left behind, in a cycle
    del cycle
    with govc_db.open(db_url, settings=settings):
        gc.collect()
        assert probe() is None  # still collectable: not frozen by the second open

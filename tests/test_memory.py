"""The memory optimizer (middleware) and the memory metrics, on SQLite and PostgreSQL."""

from __future__ import annotations

import gc
import io
import random
from collections.abc import Iterator
from typing import Any

import pytest

import govc_db
from govc_db import Settings, Signature
from govc_db.middleware.memory import FULL_AFTER

SIG = Signature("Ada", "ada@example.com", 1700000000, 0)


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)


def test_the_optimizer_freezes_tunes_and_reports(db_url: str, restore_gc: None) -> None:
    before = gc.get_threshold()
    with govc_db.open(db_url, settings=Settings(memory_optimizer=False)) as plain:
        assert gc.get_threshold() == before
        assert plain.metrics()["memory"]["optimizer"] == {"enabled": False}
    with govc_db.open(
        db_url, settings=Settings(memory_optimizer=True, memory_gc_threshold=5000)
    ) as st:
        assert gc.get_threshold()[0] == 5000
        assert gc.get_freeze_count() > 0
        memory = st.metrics()["memory"]
        assert memory["optimizer"]["enabled"] is True
        assert memory["optimizer"]["thresholds"][0] == 5000
        assert memory["rss_bytes"] > 10 * 1024 * 1024
        assert memory["peak_rss_bytes"] >= memory["rss_bytes"] // 2
        assert len(memory["gc"]["max_pause_ms_by_generation"]) == 3
        gc.collect(0)
        cpu = st.metrics()["memory"]["gc"]
        assert cpu["max_pause_cpu_ms"] >= 0 and len(cpu["max_pause_cpu_ms_by_generation"]) == 3
        with govc_db.open(
            db_url, settings=Settings(memory_optimizer=True, memory_gc_threshold=700)
        ) as second:
            # The collector is process-wide: the first Store's tuning stands.
            assert gc.get_threshold()[0] == 5000
            assert second.metrics()["memory"]["optimizer"]["enabled"] is True
    assert gc.get_threshold() == before  # given back when the last one closed


def test_full_collections_run_between_operations(db_url: str, restore_gc: None) -> None:
    with govc_db.open(
        db_url, settings=Settings(memory_optimizer=True, memory_gc_threshold=100)
    ) as st:
        repo = st.create_repository("r")
        repo.commit("main", {"a": b"a"}, message="m\n", author=SIG)
        done = st.metrics()["memory"]["optimizer"]["full_collections_between_operations"]
        # Enough container allocations for FULL_AFTER generation-1 collections.
        garbage: list[Any] = []
        for i in range(100 * 100 * (FULL_AFTER + 2)):
            cycle: list[Any] = [i]
            cycle.append(cycle)
            garbage.append(cycle) if i % 1000 == 0 else None
        assert gc.get_count()[2] >= FULL_AFTER  # automatic full collections are off
        assert repo.read("main", "a") == b"a"
        after = st.metrics()["memory"]["optimizer"]
        assert after["full_collections_between_operations"] == done + 1
        assert gc.get_count()[2] == 0
        assert after["max_full_pause_ms"] >= 0


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

"""The PerformanceManager: store.metrics(), store.performance_report(), GC pauses,
tracemalloc, component registration and discovery, and the Prometheus collector."""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

import govc_db
from govc_db import Settings, Signature, Store
from govc_db.errors import InvalidInput, NotFound
from govc_db.middleware.base import Operation
from govc_db.perf import GcMonitor, PerformanceManager, gc_monitor, jsonable
from govc_db.perf.manager import with_hit_ratios
from govc_db.perf.prometheus import StoreCollector

SIG = Signature("Perf", "perf@example.com", 1_700_000_000, 0)


class Widget:
    """A stand-in for a component another part of the Store builds (a cache, say)."""

    def __init__(self) -> None:
        self.hits = 3
        self.misses = 1

    def get_stats(self) -> dict[str, Any]:
        return {"hits": self.hits, "misses": self.misses, "nested": {"bytes": 10}}


class Broken:
    def get_stats(self) -> dict[str, Any]:
        raise RuntimeError("boom")


@pytest.fixture
def busy(store: Store) -> Store:
    repo = store.create_repository("r")
    repo.commit("main", {"a.txt": b"a\n"}, message="m\n", author=SIG)
    repo.read("main", "a.txt")
    with pytest.raises(NotFound):
        repo.read("main", "missing.txt")
    return store


# -- the metrics dict ---------------------------------------------------------------------


def test_metrics_dict_contents(busy: Store) -> None:
    m = busy.metrics()
    assert m["dialect"] == busy.dialect
    assert isinstance(m["pid"], int)
    for key in ("metrics", "pool", "statements", "api", "concurrency", "memory"):
        assert key in m, key
    assert {"metrics", "pool", "statements"} <= set(m["components"])
    # API: per-operation latency percentiles, from the metrics middleware.
    read = m["api"]["operations"]["read"]
    assert read["calls"] == 2
    assert read["errors"] == 1
    assert 0 <= read["p50_ms"] <= read["p95_ms"] <= read["p99_ms"] <= read["max_ms"]
    assert m["api"]["errors"] >= 1
    assert 0 < m["api"]["error_rate"] < 1
    # Concurrency: nothing in flight between calls.
    assert m["concurrency"]["in_flight"] == 0
    assert m["concurrency"]["pool_checked_out"] == 0
    assert m["concurrency"]["threads"] >= 1
    # Pool and statements.
    assert m["pool"]["checkouts"] > 0
    assert m["statements"]["executions"] > 0
    # Memory: GC per generation and the maximum pause.
    g = m["memory"]["gc"]
    assert len(g["collections"]) == 3
    assert "max_pause_ms" in g
    assert g["max_pause_ms"] >= 0
    assert len(g["max_pause_ms_by_generation"]) == 3
    assert m["memory"]["tracemalloc"]["enabled"] is False
    # JSON-serializable as it is, with no NaN or infinity.
    assert json.loads(json.dumps(m, allow_nan=False)) == m


def test_in_flight_counts_the_running_operation(store: Store) -> None:
    seen = store.run(Operation("probe", "", lambda: store.metrics()["concurrency"]))
    assert seen["in_flight"] == 1
    assert store.metrics()["concurrency"]["in_flight"] == 0


def test_gc_pause_is_measured(store: Store) -> None:
    before = store.metrics()["memory"]["gc"]
    gc.collect()
    after = store.metrics()["memory"]["gc"]
    assert after["pauses"] > before["pauses"]
    assert after["collections"][2] > before["collections"][2]
    assert after["max_pause_ms"] >= max(after["max_pause_ms_by_generation"])
    assert after["max_pause_ms_by_generation"][2] > 0
    assert after["total_pause_ms"] >= after["max_pause_ms"]


def test_gc_callback_is_installed_once(db_url: str, store: Store) -> None:
    with govc_db.open(db_url) as other:
        other.metrics()
        monitor = gc_monitor()
        assert monitor.installed
        assert gc.callbacks.count(monitor.callback) == 1


def test_gc_monitor_with_an_injected_timer() -> None:
    now = [10.0]
    monitor = GcMonitor(timer=lambda: now[0])
    monitor.callback("stop", {"generation": 0})  # installed mid-collection: ignored
    for generation, pause in ((1, 0.5), (0, 0.2), (2, 0.25)):
        monitor.callback("start", {"generation": generation})
        now[0] += pause
        monitor.callback("stop", {"generation": generation})
    stats = monitor.get_stats()
    assert stats["pauses"] == 3
    assert stats["max_pause_ms"] == pytest.approx(500.0)
    assert stats["max_pause_ms_by_generation"] == pytest.approx([200.0, 500.0, 250.0])
    assert stats["total_pause_ms"] == pytest.approx(950.0)
    assert stats["last_pause_ms"] == pytest.approx(250.0)
    assert not monitor.installed  # never added to gc.callbacks


# -- tracemalloc ----------------------------------------------------------------------------


def test_tracemalloc_off_by_default(store: Store) -> None:
    tm = store.metrics()["memory"]["tracemalloc"]
    assert tm["enabled"] is False
    assert "peak_bytes" not in tm
    assert "tracemalloc: off" in store.performance_report()


def test_tracemalloc_on(db_url: str) -> None:
    was_tracing = tracemalloc.is_tracing()
    store = govc_db.open(db_url, Settings(perf_tracemalloc=True))
    try:
        assert tracemalloc.is_tracing()
        repo = store.create_repository("r")
        repo.commit("main", {"big.bin": b"x" * 200_000}, message="m\n", author=SIG)
        tm = store.metrics()["memory"]["tracemalloc"]
        assert tm["enabled"] is True
        assert tm["tracing"] is True
        assert tm["peak_bytes"] >= tm["current_bytes"] > 0
        assert tm["peak_bytes"] >= 200_000
        assert tm["blocks"] > 0
        assert tm["top"]
        assert all(site["size_bytes"] > 0 and ":" in site["where"] for site in tm["top"])
        report = store.performance_report()
        assert "tracemalloc: current" in report
        assert "peak" in report
    finally:
        store.close()
    # Tracing stops with the Store that started it (unless something else had started it).
    assert tracemalloc.is_tracing() is was_tracing


# -- report ---------------------------------------------------------------------------------


def test_report_has_sections(busy: Store) -> None:
    busy.perf.register("widget", Widget())
    report = busy.performance_report()
    assert report.startswith(f"govc_db performance report ({busy.dialect})\nprocess ")
    for title in ("API", "Concurrency", "Pool", "Statements", "Widget", "Memory"):
        assert f"== {title} ==" in report, title
    assert report.index("== API ==") < report.index("== Memory ==")
    assert "create_repository" in report
    assert "read" in report
    assert "gc pauses:" in report
    assert "max " in report
    # Generic components get a hit ratio where they report hits and misses.
    assert "hit_ratio" in report
    assert "0.75" in report
    assert "nested.bytes" in report


def test_report_without_the_metrics_middleware(db_url: str) -> None:
    with govc_db.open(db_url, Settings(metrics_enabled=False)) as store:
        store.list_repositories()
        m = store.metrics()
        assert m["api"]["enabled"] is False
        assert m["api"]["operations"] == {}
        assert m["concurrency"]["in_flight"] is None
        report = store.performance_report()
        assert "no operations recorded" in report
        assert "== Pool ==" in report


# -- registration and discovery ------------------------------------------------------------


def test_register_rejects_bad_components(store: Store) -> None:
    store.perf.register("widget", Widget())
    with pytest.raises(InvalidInput):
        store.perf.register("widget", Widget())  # taken
    with pytest.raises(InvalidInput):
        store.perf.register("memory", Widget())  # reserved
    with pytest.raises(InvalidInput):
        store.perf.register("", Widget())
    with pytest.raises(InvalidInput):
        store.perf.register("thing", object())  # no get_stats
    store.perf.unregister("widget")
    assert "widget" not in store.metrics()


def test_a_failing_component_does_not_break_metrics(store: Store) -> None:
    store.perf.register("broken", Broken())
    m = store.metrics()
    assert m["broken"] == {"error": "RuntimeError"}
    assert "pool" in m
    assert "== Broken ==" in store.performance_report()


def test_components_built_later_are_discovered(store: Store) -> None:
    assert "widget" not in store.metrics()
    store._widget = Widget()  # type: ignore[attr-defined]  # as a later component would
    try:
        m = store.metrics()
        assert m["widget"]["hits"] == 3
        assert "widget" in m["components"]
    finally:
        del store._widget  # type: ignore[attr-defined]
    assert "widget" not in store.metrics()


def test_manager_without_store() -> None:
    manager = PerformanceManager(discover=lambda: [("found", Widget()), ("plain", object())])
    manager.register("w", Widget())
    out = manager.collect()
    assert out["w"]["hits"] == 3
    assert out["w"]["hit_ratio"] == 0.75  # derived by the manager
    assert out["found"]["misses"] == 1
    assert "plain" not in out
    assert out["api"]["enabled"] is False
    manager.close()


def test_hit_ratios_are_derived_at_every_level() -> None:
    stats = with_hit_ratios(
        {"hits": 1, "misses": 3, "a": {"hits": 0, "misses": 0}, "b": {"hits": 2}, "c": 1}
    )
    assert stats["hit_ratio"] == 0.25
    assert stats["a"]["hit_ratio"] is None  # no lookup yet
    assert "hit_ratio" not in stats["b"]
    assert with_hit_ratios({"hits": 1, "misses": 1, "hit_ratio": 0.9})["hit_ratio"] == 0.9


def test_jsonable() -> None:
    assert jsonable({1: (1, 2.5), "s": {3, 1}, "b": b"\x01", "n": float("nan")}) == {
        "1": [1, 2.5],
        "s": [1, 3],
        "b": "01",
        "n": None,
    }


# -- Prometheus ---------------------------------------------------------------------------


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    yield CollectorRegistry()


def test_prometheus_collector(busy: Store, registry: CollectorRegistry) -> None:
    busy.perf.register("widget", Widget())
    StoreCollector(busy, registry=registry, labels={"store": "main"})
    text = generate_latest(registry).decode()
    lab = {"store": "main"}
    value = registry.get_sample_value
    assert value("govc_db_info", {**lab, "dialect": busy.dialect}) == 1.0
    assert value("govc_db_operations_total", {**lab, "operation": "read"}) == 2.0
    assert value("govc_db_operation_errors_total", {**lab, "operation": "read"}) == 1.0
    p99 = value(
        "govc_db_operation_latency_seconds", {**lab, "operation": "read", "quantile": "0.99"}
    )
    assert p99 is not None and p99 >= 0
    assert value("govc_db_operations_in_flight", lab) == 0.0
    m = busy.metrics()
    assert value("govc_db_pool_timeouts_total", lab) == m["pool"]["timeouts"]
    assert value("govc_db_pool_disconnects_total", lab) == m["pool"]["disconnects"]
    assert value("govc_db_pool_size", lab) == m["pool"]["size"]
    assert (
        value("govc_db_statements_compiled_cache_misses_total", lab)
        == (m["statements"]["compiled_cache_misses"])
    )
    assert (value("govc_db_pool_checkouts_total", lab) or 0) > 0
    assert value("govc_db_gc_pause_max_seconds", lab) is not None
    assert value("govc_db_gc_collections_total", {**lab, "generation": "2"}) is not None
    assert value("govc_db_widget_hits", lab) == 3.0
    assert value("govc_db_widget_nested_bytes", lab) == 10.0
    assert value("govc_db_widget_hit_ratio", lab) == 0.75
    assert "# TYPE govc_db_pool_checkouts_total counter" in text
    assert "# TYPE govc_db_pool_checked_out gauge" in text


def test_prometheus_two_stores_in_one_registry(
    store: Store, db_url: str, registry: CollectorRegistry
) -> None:
    with govc_db.open(db_url) as other:
        StoreCollector(store, registry=registry, labels={"store": "a"})
        StoreCollector(other, registry=registry, labels={"store": "b"})
        store.list_repositories()
        text = generate_latest(registry).decode()
        ops = registry.get_sample_value(
            "govc_db_operations_total", {"store": "a", "operation": "list_repositories"}
        )
        assert ops == 1.0
        assert 'store="b"' in text


def test_perf_tracemalloc_setting() -> None:
    assert Settings().perf_tracemalloc is False
    assert Settings.from_env({"GOVC_DB_PERF_TRACEMALLOC": "on"}).perf_tracemalloc is True
    with pytest.raises(InvalidInput):
        Settings(perf_tracemalloc="yes")  # type: ignore[arg-type]

"""Prometheus exposition of a Store's metrics (optional: ``pip install 'govc_db[prom]'``).

:class:`StoreCollector` is a custom collector: on every scrape it reads
``store.metrics()`` and yields the same numbers as metric families, so nothing is
counted twice and the report, the dict and Prometheus always agree::

    from prometheus_client import REGISTRY, start_http_server
    from govc_db.perf.prometheus import StoreCollector

    StoreCollector(store, registry=REGISTRY)
    start_http_server(9100)

Counters the pool and statement monitors, the API and the GC own are typed as counters;
the numeric stats of any other component (cache, batch executor, transaction manager
...) are exposed as gauges named ``govc_db_<component>_<key>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from govc_db.db.pool import POOL_COUNTERS

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector, CollectorRegistry
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "govc_db.perf.prometheus needs prometheus_client: pip install 'govc_db[prom]'"
    ) from exc

if TYPE_CHECKING:
    from govc_db.api.store import Store

__all__ = ["StoreCollector"]

_POOL_COUNTERS = POOL_COUNTERS
_POOL_GAUGES = ("size", "checked_out", "checked_in", "overflow", "max_overflow")
_STATEMENT_COUNTERS = (
    "executions",
    "compiled_cache_hits",
    "compiled_cache_misses",
    "uncached",
)
_STATEMENT_GAUGES = ("compiled_cache_entries", "prepared_statements", "connections")
_QUANTILES = (("0.5", "p50_ms"), ("0.95", "p95_ms"), ("0.99", "p99_ms"), ("1", "max_ms"))
_NOT_COMPONENTS = frozenset({"dialect", "pid", "components", "api", "concurrency", "memory"})
_BAD = re.compile(r"[^a-zA-Z0-9_]")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


class StoreCollector(Collector):
    """Yields a Store's metrics as Prometheus families on each scrape.

    ``registry``: register there (e.g. ``prometheus_client.REGISTRY``); None leaves
    registration to the caller. ``labels`` are added to every sample (use them to tell
    several Stores of one process apart).
    """

    def __init__(
        self,
        store: Store,
        *,
        registry: CollectorRegistry | None = None,
        namespace: str = "govc_db",
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self._store = store
        self._ns = namespace
        self._label_names = list(labels or {})
        self._label_values = [str(v) for v in (labels or {}).values()]
        if registry is not None:
            registry.register(self)

    # families -------------------------------------------------------------------------
    def _name(self, *parts: str) -> str:
        name = _BAD.sub("_", "_".join((self._ns, *parts)))
        return name if not name[:1].isdigit() else "_" + name

    def _gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=[*self._label_names, *labels])

    def _counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> CounterMetricFamily:
        return CounterMetricFamily(name, doc, labels=[*self._label_names, *labels])

    def _one(self, family: GaugeMetricFamily | CounterMetricFamily, value: Any) -> Metric | None:
        number = _number(value)
        if number is None:
            return None
        family.add_metric(self._label_values, number)
        return family

    def collect(self) -> Iterator[Metric]:
        """The families of one ``store.metrics()`` snapshot."""
        m = self._store.metrics()
        info = self._gauge(self._name("info"), "govc_db store (value 1)", ("dialect",))
        info.add_metric([*self._label_values, str(m.get("dialect"))], 1.0)
        yield info
        yield from self._api(m.get("api") or {})
        yield from self._concurrency(m.get("concurrency") or {})
        yield from self._known(m.get("pool") or {}, "pool", _POOL_COUNTERS, _POOL_GAUGES)
        yield from self._known(
            m.get("statements") or {}, "statements", _STATEMENT_COUNTERS, _STATEMENT_GAUGES
        )
        yield from self._memory(m.get("memory") or {})
        skip = _NOT_COMPONENTS | {"pool", "statements", "metrics"}
        for name, stats in m.items():
            if name not in skip and isinstance(stats, Mapping):
                yield from self._generic(name, stats)

    def _api(self, api: Mapping[str, Any]) -> Iterator[Metric]:
        ops: Mapping[str, Mapping[str, Any]] = api.get("operations") or {}
        calls = self._counter(self._name("operations"), "Operations run", ("operation",))
        errors = self._counter(
            self._name("operation_errors"), "Operations that raised", ("operation",)
        )
        latency = self._gauge(
            self._name("operation_latency_seconds"),
            "Operation latency over a sliding window (quantile 1 is the maximum)",
            ("operation", "quantile"),
        )
        for op, s in ops.items():
            calls.add_metric([*self._label_values, op], float(s.get("calls", 0)))
            errors.add_metric([*self._label_values, op], float(s.get("errors", 0)))
            for q, key in _QUANTILES:
                latency.add_metric([*self._label_values, op, q], float(s.get(key, 0.0)) / 1000.0)
        yield from (calls, errors, latency)

    def _concurrency(self, c: Mapping[str, Any]) -> Iterator[Metric]:
        for name, key, doc in (
            ("operations_in_flight", "in_flight", "Operations in flight"),
            ("threads", "threads", "Live threads of the process"),
        ):
            family = self._one(self._gauge(self._name(name), doc), c.get(key))
            if family is not None:
                yield family

    def _known(
        self,
        stats: Mapping[str, Any],
        part: str,
        counters: tuple[str, ...],
        gauges: tuple[str, ...],
    ) -> Iterator[Metric]:
        for key in counters:
            family = self._one(
                self._counter(self._name(part, key), f"{part} {key}"), stats.get(key)
            )
            if family is not None:
                yield family
        for key in gauges:
            family = self._one(self._gauge(self._name(part, key), f"{part} {key}"), stats.get(key))
            if family is not None:
                yield family

    def _memory(self, memory: Mapping[str, Any]) -> Iterator[Metric]:
        gc = memory.get("gc") or {}
        for key, doc in (
            ("collections", "GC collections per generation"),
            ("collected", "Objects collected by the GC per generation"),
            ("uncollectable", "Uncollectable objects found by the GC per generation"),
        ):
            per_gen = self._counter(self._name("gc", key), doc, ("generation",))
            for generation, value in enumerate(gc.get(key) or []):
                per_gen.add_metric([*self._label_values, str(generation)], float(value))
            yield per_gen
        for key, name, doc, counter in (
            ("max_pause_ms", "gc_pause_max_seconds", "Longest GC pause measured", False),
            ("total_pause_ms", "gc_pause_seconds", "Time spent in GC pauses", True),
        ):
            value = _number(gc.get(key))
            if value is not None:
                fam = (self._counter if counter else self._gauge)(self._name(name), doc)
                fam.add_metric(self._label_values, value / 1000.0)
                yield fam
        pauses = self._one(
            self._counter(self._name("gc_pauses"), "GC pauses measured"), gc.get("pauses")
        )
        if pauses is not None:
            yield pauses
        tm = memory.get("tracemalloc") or {}
        for key in ("current_bytes", "peak_bytes", "blocks"):
            family = self._one(
                self._gauge(self._name("tracemalloc", key), f"tracemalloc {key}"), tm.get(key)
            )
            if family is not None:
                yield family

    def _generic(self, component: str, stats: Mapping[str, Any]) -> Iterator[Metric]:
        for path, value in _leaves(stats):
            family = self._one(
                self._gauge(self._name(component, *path), f"{component} {'.'.join(path)}"),
                value,
            )
            if family is not None:
                yield family


def _leaves(
    stats: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Any]]:
    for key, value in stats.items():
        if isinstance(value, Mapping):
            yield from _leaves(value, (*prefix, str(key)))
        elif _number(value) is not None:
            yield (*prefix, str(key)), value

"""The PerformanceManager: collects every component's ``get_stats()`` into one dict.

Components only count; they never format. The manager gathers their stats (adding a
``hit_ratio`` wherever a component counts ``hits`` and ``misses``), adds the
process-level figures no component owns (memory: GC collections and pauses, tracemalloc;
concurrency; API latency percentiles, taken from the metrics middleware), and makes the
result JSON-serializable. :mod:`govc_db.perf.report` renders it as text and
:mod:`govc_db.perf.prometheus` exposes it to Prometheus.

Components are found two ways: registered by name (:meth:`PerformanceManager.register`),
and discovered at collection time by a callable that yields ``(name, object)`` pairs --
for a Store, every attribute of the Store and of its backend whose value has a callable
``get_stats``. Discovery is lazy, so a component another part of the Store builds later
(a cache, a batch executor, a transaction manager, a listener) is reported without any
change here.
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from govc_db.errors import InvalidInput
from govc_db.perf.memory import GcMonitor, TracemallocProbe, gc_monitor, in_flight, rss_stats

if TYPE_CHECKING:
    from govc_db.api.store import Store

__all__ = [
    "RESERVED_NAMES",
    "PerformanceManager",
    "StatsSource",
    "jsonable",
    "store_manager",
    "with_hit_ratios",
]

log = logging.getLogger("govc_db.perf")

#: Top-level keys of the metrics dict that are not component names.
RESERVED_NAMES = frozenset({"dialect", "pid", "components", "api", "concurrency", "memory"})

Discover = Callable[[], Iterable[tuple[str, object]]]


class StatsSource(Protocol):
    """Anything with a ``get_stats()`` returning a mapping of plain values."""

    def get_stats(self) -> Mapping[str, Any]:
        """The component's counters and gauges."""
        ...


def _has_stats(obj: object) -> bool:
    return not isinstance(obj, type) and callable(getattr(obj, "get_stats", None))


def jsonable(value: Any) -> Any:
    """``value`` with containers made JSON types (non-finite floats become None)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((jsonable(v) for v in value), key=repr)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Enum):
        return value.name
    return str(value)


def with_hit_ratios(stats: Mapping[str, Any]) -> dict[str, Any]:
    """``stats`` with ``hit_ratio`` added to every level that counts ``hits`` and
    ``misses`` (None before the first lookup) and does not report a ratio itself."""
    out: dict[str, Any] = {
        k: with_hit_ratios(v) if isinstance(v, Mapping) else v for k, v in stats.items()
    }
    hits, misses = out.get("hits"), out.get("misses")
    if (
        "hit_ratio" not in out
        and isinstance(hits, int | float)
        and isinstance(misses, int | float)
        and not isinstance(hits, bool)
    ):
        total = hits + misses
        out["hit_ratio"] = hits / total if total else None
    return out


class PerformanceManager:
    """Collects the stats of registered and discovered components.

    ``api_source`` and ``pool_source`` name the components the API and concurrency
    sections are derived from (the metrics middleware and the pool monitor).
    """

    def __init__(
        self,
        *,
        tracemalloc: bool = False,
        discover: Discover | None = None,
        gc: GcMonitor | None = None,
        api_source: str = "metrics",
        pool_source: str = "pool",
    ) -> None:
        self._lock = threading.Lock()
        self._components: dict[str, StatsSource] = {}
        self._discover = discover
        self._gc = gc if gc is not None else gc_monitor()
        self._tracemalloc = TracemallocProbe(tracemalloc)
        self._tracemalloc.start()
        # A Store that is never closed must not keep tracemalloc running forever.
        self._finalizer = weakref.finalize(self, self._tracemalloc.stop)
        self.api_source = api_source
        self.pool_source = pool_source

    # registry -------------------------------------------------------------------------
    def register(self, name: str, component: object) -> None:
        """Report ``component.get_stats()`` under ``name``; ``InvalidInput`` if the name
        is taken or reserved, or the component has no ``get_stats``."""
        if not isinstance(name, str) or not name or name in RESERVED_NAMES:
            raise InvalidInput(f"invalid or reserved component name {name!r}")
        if not _has_stats(component):
            raise InvalidInput(f"component {name!r} has no get_stats() method")
        with self._lock:
            if name in self._components:
                raise InvalidInput(f"a component named {name!r} is already registered")
            self._components[name] = component  # type: ignore[assignment]

    def unregister(self, name: str) -> None:
        """Stop reporting ``name`` (no error if absent)."""
        with self._lock:
            self._components.pop(name, None)

    def components(self) -> dict[str, StatsSource]:
        """Registered components, then discovered ones not already present, by name."""
        with self._lock:
            found: dict[str, StatsSource] = dict(self._components)
        seen = {id(c) for c in found.values()}
        for name, obj in self._discovered():
            if id(obj) in seen or not _has_stats(obj):
                continue
            key = name
            while key in found or key in RESERVED_NAMES:
                key += "_"
            found[key] = obj  # type: ignore[assignment]
            seen.add(id(obj))
        return found

    def _discovered(self) -> Iterable[tuple[str, object]]:
        if self._discover is None:
            return ()
        try:
            return list(self._discover())
        except Exception:  # metrics must never fail the caller
            log.exception("component discovery failed")
            return ()

    # collection -----------------------------------------------------------------------
    def collect(self) -> dict[str, Any]:
        """Every component's stats plus ``api``, ``concurrency`` and ``memory``."""
        out: dict[str, Any] = {}
        for name, component in self.components().items():
            try:
                out[name] = with_hit_ratios(component.get_stats())
            except Exception as exc:  # one broken component must not hide the others
                log.exception("get_stats() of %s failed", name)
                out[name] = {"error": type(exc).__name__}
        out["components"] = sorted(out)
        out["api"] = self._api(out.get(self.api_source))
        out["concurrency"] = self._concurrency(out.get(self.api_source), out.get(self.pool_source))
        out["memory"] = {
            "gc": self._gc.get_stats(),
            "tracemalloc": self._tracemalloc.get_stats(),
            **rss_stats(),
            **in_flight().get_stats(),
            # The memory middleware (govc_db.middleware.memory), registered under this name.
            "optimizer": out.get("memory_middleware", {"enabled": False}),
        }
        result: dict[str, Any] = jsonable(out)
        return result

    @staticmethod
    def _api(source: Mapping[str, Any] | None) -> dict[str, Any]:
        if not source or "operations" not in source:
            return {"enabled": False, "calls": 0, "errors": 0, "error_rate": None, "operations": {}}
        calls = int(source.get("calls", 0))
        errors = int(source.get("errors", 0))
        return {
            "enabled": True,
            "calls": calls,
            "errors": errors,
            "error_rate": errors / calls if calls else None,
            "operations": source["operations"],
        }

    @staticmethod
    def _concurrency(
        api: Mapping[str, Any] | None, pool: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        api = api or {}
        pool = pool or {}
        return {
            "in_flight": api.get("in_flight"),
            "pool_checked_out": pool.get("checked_out"),
            "pool_size": pool.get("size"),
            "pool_overflow": pool.get("overflow"),
            "threads": threading.active_count(),
        }

    def close(self) -> None:
        """Release what the manager started (tracemalloc); collecting still works."""
        self._finalizer()


def _attributes(obj: object) -> list[tuple[str, object]]:
    try:
        items = list(vars(obj).items())
    except TypeError:  # no __dict__
        return []
    return [(name.lstrip("_"), value) for name, value in items if _has_stats(value)]


def store_manager(store: Store) -> PerformanceManager:
    """The manager of a Store: its middleware, pool and statement monitors, and whatever
    other component the Store or its backend holds as an attribute."""
    from govc_db.db.pool import pool_monitor
    from govc_db.db.prepared import statement_monitor

    ref = weakref.ref(store)

    def discover() -> list[tuple[str, object]]:
        st = ref()
        if st is None:
            return []
        found = _attributes(st)
        backend = getattr(st, "backend", None)
        if backend is not None:
            found += _attributes(backend)
        return found

    manager = PerformanceManager(tracemalloc=store.settings.perf_tracemalloc, discover=discover)
    taken = set(RESERVED_NAMES) | {"pool", "statements"}
    for mw in getattr(store, "_middleware", ()):
        # "metrics" for MetricsMiddleware: the key the metrics dict has always used.
        name = type(mw).__name__.removesuffix("Middleware").lower() or "middleware"
        while name in taken:
            name += "_middleware"
        taken.add(name)
        manager.register(name, mw)
    pool = pool_monitor(store.engine)
    if pool is not None:
        manager.register("pool", pool)
    statements = statement_monitor(store.engine)
    if statements is not None:
        manager.register("statements", statements)
    return manager

"""Performance metrics: the PerformanceManager collects every component's ``get_stats()``.

``store.metrics()`` returns the collected dict and ``store.performance_report()`` the
text rendering; :mod:`govc_db.perf.prometheus` (optional extra ``prom``) exposes the same
numbers to Prometheus.
"""

from govc_db.perf.manager import PerformanceManager, StatsSource, jsonable, store_manager
from govc_db.perf.memory import GcMonitor, TracemallocProbe, gc_monitor
from govc_db.perf.report import render_report

__all__ = [
    "GcMonitor",
    "PerformanceManager",
    "StatsSource",
    "TracemallocProbe",
    "gc_monitor",
    "jsonable",
    "render_report",
    "store_manager",
]

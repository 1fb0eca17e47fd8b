"""Metrics middleware: per-operation count, errors and latency percentiles."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from govc_db.middleware.base import Handler, Operation

__all__ = ["MetricsMiddleware", "percentile"]

#: Latency samples kept per operation for percentiles (a sliding window).
WINDOW = 2048


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


class MetricsMiddleware:
    """Counts calls and errors and keeps a latency window per operation name."""

    def __init__(self, app: Handler, *, timer: Callable[[], float] = time.perf_counter) -> None:
        self._app = app
        self._timer = timer
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._latency: dict[str, deque[float]] = {}
        # One token per call in flight: list append/pop are atomic, so counting calls in
        # flight takes no lock (the one lock below is taken once per call).
        self._active: list[None] = []

    def __call__(self, op: Operation) -> Any:
        """Time ``op`` and count it (and its failure, if it raises)."""
        start = self._timer()
        active = self._active
        active.append(None)
        ok = False
        try:
            result = self._app(op)
            ok = True
            return result
        finally:
            elapsed = self._timer() - start
            active.pop()
            with self._lock:
                self._calls[op.name] += 1
                if not ok:
                    self._errors[op.name] += 1
                window = self._latency.get(op.name)
                if window is None:
                    window = self._latency[op.name] = deque(maxlen=WINDOW)
                window.append(elapsed)

    def get_stats(self) -> dict[str, Any]:
        """Per operation: calls, errors and p50/p95/p99/max latency in milliseconds."""
        with self._lock:
            ops: dict[str, Any] = {}
            for name, count in sorted(self._calls.items()):
                samples = sorted(self._latency.get(name, ()))
                ops[name] = {
                    "calls": count,
                    "errors": self._errors[name],
                    "p50_ms": percentile(samples, 50) * 1000,
                    "p95_ms": percentile(samples, 95) * 1000,
                    "p99_ms": percentile(samples, 99) * 1000,
                    "max_ms": (samples[-1] if samples else 0.0) * 1000,
                }
            return {
                "in_flight": len(self._active),
                "calls": sum(self._calls.values()),
                "errors": sum(self._errors.values()),
                "operations": ops,
            }

"""Where a process's GC pauses come from: ``GOVC_BENCH_GC_TRACE=1``.

A diagnosis tool, off by default (it costs a walk of the collected generations before
every collection of generation 1 or 2): with the variable set, the writer processes of
workload 6 (and the bench process, see :func:`bench.workloads.run_backend`) record, for
every collection, its generation, wall and CPU time, how many objects it collected and
whether the scheduler preempted the thread meanwhile (involuntary context switches),
and for the slowest ones the tracked objects the collection had to walk (count and the
most common types). The slowest are in the GC line's notes (``trace``).

The walk runs in the "start" phase of a :data:`gc.callbacks` hook placed first, before
the pause is timed (by this hook and by :class:`govc_db.perf.memory.GcMonitor`), so the
recorded pauses are the collector's own; the process as a whole runs slower, so figures
from a traced run are for diagnosis, not for the results.
"""

from __future__ import annotations

import gc
import os
import resource
import time
from collections import Counter
from typing import Any, Final

__all__ = ["GcTrace", "process_trace", "trace_enabled"]

#: Slowest collections kept (by CPU time), with what they walked.
KEEP: Final = 8
#: Types listed per kept collection.
TYPES: Final = 10


def trace_enabled() -> bool:
    """Whether ``GOVC_BENCH_GC_TRACE`` asks for tracing."""
    return os.environ.get("GOVC_BENCH_GC_TRACE", "0") not in ("", "0")


def _preemptions() -> int:
    """Involuntary context switches of this thread so far: the scheduler took the CPU
    away (a wall-clock pause longer than its CPU time was spent descheduled)."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw


def _type_name(obj: object) -> str:
    t = type(obj)
    module = t.__module__
    return t.__qualname__ if module == "builtins" else f"{module}.{t.__qualname__}"


class GcTrace:
    """A :data:`gc.callbacks` hook recording every collection (see the module docstring)."""

    def __init__(self) -> None:
        self._start: tuple[float, float, int, int, list[tuple[str, int]]] | None = None
        self.slowest: list[dict[str, Any]] = []
        self.buckets: dict[int, Counter[str]] = {0: Counter(), 1: Counter(), 2: Counter()}

    def install(self) -> None:
        gc.callbacks.insert(0, self.callback)

    def uninstall(self) -> None:
        if self.callback in gc.callbacks:
            gc.callbacks.remove(self.callback)

    def callback(self, phase: str, info: dict[str, int]) -> None:
        generation = info.get("generation", 0)
        if phase == "start":
            walked = 0
            types: list[tuple[str, int]] = []
            if generation >= 1:
                counts: Counter[str] = Counter()
                for g in range(generation + 1):
                    objs = gc.get_objects(g)
                    walked += len(objs)
                    counts.update(_type_name(o) for o in objs)
                    del objs
                types = counts.most_common(TYPES)
            else:
                walked = len(gc.get_objects(0))
            switches = _preemptions()
            self._start = (time.perf_counter(), time.thread_time(), switches, walked, types)
            return
        if self._start is None:
            return
        wall0, cpu0, switches0, walked, types = self._start
        wall = (time.perf_counter() - wall0) * 1000
        cpu = (time.thread_time() - cpu0) * 1000
        preempted = _preemptions() - switches0
        self._start = None
        bucket = "<1" if cpu < 1 else "1-5" if cpu < 5 else "5-10" if cpu < 10 else ">10"
        self.buckets.setdefault(generation, Counter())[f"cpu {bucket} ms"] += 1
        if wall > 10:
            self.buckets[generation]["wall >10 ms"] += 1
            if preempted:
                self.buckets[generation]["wall >10 ms, preempted"] += 1
        if len(self.slowest) < KEEP or cpu > self.slowest[-1]["cpu_ms"]:
            self.slowest.append(
                {
                    "generation": generation,
                    "wall_ms": round(wall, 2),
                    "cpu_ms": round(cpu, 2),
                    "tracked_objects_walked": walked,
                    "collected": info.get("collected", 0),
                    "preempted": preempted,
                    "frozen": gc.get_freeze_count(),
                    "types": types,
                }
            )
            self.slowest.sort(key=lambda r: -float(r["cpu_ms"]))
            del self.slowest[KEEP:]

    def report(self) -> dict[str, Any]:
        """The slowest collections and a histogram of CPU pauses per generation."""
        return {
            "by_generation": {str(g): dict(c) for g, c in self.buckets.items()},
            "slowest": list(self.slowest),
        }


_PROCESS: GcTrace | None = None


def process_trace() -> GcTrace | None:
    """The bench process's trace when ``GOVC_BENCH_GC_TRACE`` asks for one (installed on
    the first call), else None."""
    global _PROCESS
    if _PROCESS is None and trace_enabled():
        _PROCESS = GcTrace()
        _PROCESS.install()
    return _PROCESS

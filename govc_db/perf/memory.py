"""Process memory probes: garbage-collector pauses and tracemalloc.

Both are process-wide, so they are shared by every Store of the process. The GC pause is
measured between the ``"start"`` and ``"stop"`` phases of :data:`gc.callbacks`; the
callback is installed once per process (:func:`gc_monitor`). tracemalloc is started
only when a Store asks for it (``Settings.perf_tracemalloc``), since tracing slows every
allocation; it is stopped again when the last Store that started it closes.
"""

from __future__ import annotations

import _thread
import gc
import os
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = [
    "REDELIVER_AFTER",
    "SLOW_PAUSE",
    "BytesInFlight",
    "GcMonitor",
    "TracemallocProbe",
    "collector_paused",
    "gc_monitor",
    "in_flight",
    "rss_stats",
]

#: A pause longer than this (seconds) is counted as slow, by wall clock and by CPU time
#: (the seed's goal for the longest pause).
SLOW_PAUSE = 0.010
#: Seconds after which a Ctrl-C caught in the gc callback is raised in the main thread.
REDELIVER_AFTER = 0.01


class GcMonitor:
    """Counts collections and measures their pauses through :data:`gc.callbacks`.

    The callback needs no lock: CPython runs one collection at a time (a collection that
    would start while another runs is skipped), so "start" and "stop" of one collection
    are never interleaved with another's, and readers only read plain numbers.
    """

    def __init__(
        self,
        *,
        timer: Callable[[], float] = time.perf_counter,
        cpu_timer: Callable[[], float] = time.thread_time,
    ) -> None:
        self._timer = timer
        # The collecting thread's CPU time as well: on a loaded machine a wall-clock pause
        # also holds time the process spent descheduled, which the collector did not cause.
        self._cpu_timer = cpu_timer
        self._cpu_start = 0.0
        self.max_cpu_pause = 0.0
        self.max_cpu_by_generation = [0.0, 0.0, 0.0]
        self._install_lock = threading.Lock()
        self._installed = False
        self._start: float | None = None
        self._interrupted = False
        self.pauses = 0
        self.total_pause = 0.0
        self.max_pause = 0.0
        self.last_pause = 0.0
        self.max_by_generation = [0.0, 0.0, 0.0]
        self.slow_pauses = 0
        self.slow_cpu_pauses = 0

    @property
    def installed(self) -> bool:
        """Whether the callback is in :data:`gc.callbacks`."""
        return self._installed

    def install(self) -> None:
        """Add the callback to :data:`gc.callbacks` (once)."""
        with self._install_lock:
            if not self._installed:
                gc.callbacks.append(self.callback)
                self._installed = True

    def uninstall(self) -> None:
        """Remove the callback again."""
        with self._install_lock:
            if self._installed:
                gc.callbacks.remove(self.callback)
                self._installed = False
                self._start = None

    def callback(self, phase: str, info: dict[str, int]) -> None:
        """The gc.callbacks hook: time from "start" to "stop" of each collection.

        CPython reports and then drops whatever a gc callback raises (it runs inside the
        allocation that triggered the collection), so a Ctrl-C landing here would be
        lost: it is handed back to the main thread, where the program is. Not at once --
        a signal re-raised during the collection would be handled inside this callback or
        a finalizer and dropped again -- but once the collection is over ("stop"), from a
        timer thread a moment later (:data:`REDELIVER_AFTER`). (A Ctrl-C handled on the
        very entry to the callback, before its first line, CPython drops beyond reach.)
        """
        try:
            self._measure(phase, info)
        except KeyboardInterrupt:
            self._interrupted = True
        if self._interrupted and phase == "stop":
            self._interrupted = False
            timer = threading.Timer(REDELIVER_AFTER, _thread.interrupt_main)
            timer.daemon = True
            timer.start()

    def _measure(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = self._timer()
            self._cpu_start = self._cpu_timer()
            return
        start, self._start = self._start, None
        if start is None:  # installed while a collection was running
            return
        pause = self._timer() - start
        cpu = self._cpu_timer() - self._cpu_start
        self.pauses += 1
        if pause > SLOW_PAUSE:
            self.slow_pauses += 1
        if cpu > SLOW_PAUSE:
            self.slow_cpu_pauses += 1
        self.total_pause += pause
        self.last_pause = pause
        if pause > self.max_pause:
            self.max_pause = pause
        generation = info.get("generation", 0)
        if 0 <= generation < len(self.max_by_generation) and (
            pause > self.max_by_generation[generation]
        ):
            self.max_by_generation[generation] = pause
        if cpu > self.max_cpu_pause:
            self.max_cpu_pause = cpu
        if 0 <= generation < len(self.max_cpu_by_generation) and (
            cpu > self.max_cpu_by_generation[generation]
        ):
            self.max_cpu_by_generation[generation] = cpu

    def get_stats(self) -> dict[str, Any]:
        """Collections per generation (``gc.get_stats``) and pause times in milliseconds.

        Pauses count only collections since the callback was installed; the per-generation
        collection counts are the interpreter's own, since process start.
        """
        per_gen = gc.get_stats()
        return {
            "enabled": gc.isenabled(),
            "collections": [g["collections"] for g in per_gen],
            "collected": [g["collected"] for g in per_gen],
            "uncollectable": [g["uncollectable"] for g in per_gen],
            "pending": list(gc.get_count()),
            "thresholds": list(gc.get_threshold()),
            "pauses": self.pauses,
            "max_pause_ms": self.max_pause * 1000,
            "max_pause_ms_by_generation": [p * 1000 for p in self.max_by_generation],
            "max_pause_cpu_ms": self.max_cpu_pause * 1000,
            "max_pause_cpu_ms_by_generation": [p * 1000 for p in self.max_cpu_by_generation],
            "total_pause_ms": self.total_pause * 1000,
            "pauses_over_10ms": self.slow_pauses,
            "cpu_pauses_over_10ms": self.slow_cpu_pauses,
            "last_pause_ms": self.last_pause * 1000,
        }


_GC_MONITOR = GcMonitor()


def gc_monitor() -> GcMonitor:
    """The process's GC monitor, installed on first use."""
    _GC_MONITOR.install()
    return _GC_MONITOR


class BytesInFlight:
    """Bytes of large content held by the process right now (chunk buffers being written
    or read), and the most ever held: what a stream costs in memory, whatever its size."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current = 0
        self.peak = 0

    def add(self, nbytes: int) -> None:
        """Count ``nbytes`` more (negative: released)."""
        if not nbytes:
            return
        with self._lock:
            self.current += nbytes
            if self.current > self.peak:
                self.peak = self.current

    def get_stats(self) -> dict[str, int]:
        """Current and peak bytes."""
        return {"bytes_in_flight": self.current, "peak_bytes_in_flight": self.peak}


_IN_FLIGHT = BytesInFlight()


def in_flight() -> BytesInFlight:
    """The process's bytes-in-flight counter."""
    return _IN_FLIGHT


def rss_stats() -> dict[str, int | None]:
    """Resident set size of the process now and at its peak, in bytes (None if unknown)."""
    current: int | None = None
    try:
        with open("/proc/self/statm", "rb") as f:
            current = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    peak: int | None = None
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    except (ImportError, OSError):
        pass
    return {"rss_bytes": current, "peak_rss_bytes": peak}


# tracemalloc is process-wide: count the Stores that asked for it, and stop it only if
# it was started here (not by -X tracemalloc, PYTHONTRACEMALLOC or the application).
_TRACE_LOCK = threading.Lock()
_TRACE_USERS = 0
_TRACE_STARTED_HERE = False


class TracemallocProbe:
    """tracemalloc figures for the report, when ``enabled``.

    ``start()``/``stop()`` are reference counted across probes of the process.
    """

    def __init__(self, enabled: bool, *, top: int = 5, frames: int = 1) -> None:
        self.enabled = enabled
        self._top = top
        self._frames = frames
        self._active = False

    def start(self) -> None:
        """Start tracing (if enabled and not already started by this probe)."""
        global _TRACE_USERS, _TRACE_STARTED_HERE
        if not self.enabled or self._active:
            return
        with _TRACE_LOCK:
            if _TRACE_USERS == 0 and not tracemalloc.is_tracing():
                tracemalloc.start(self._frames)
                _TRACE_STARTED_HERE = True
            _TRACE_USERS += 1
            self._active = True

    def stop(self) -> None:
        """Release this probe's use; tracing stops when no probe uses it."""
        global _TRACE_USERS, _TRACE_STARTED_HERE
        with _TRACE_LOCK:
            if not self._active:
                return
            self._active = False
            _TRACE_USERS -= 1
            if _TRACE_USERS == 0 and _TRACE_STARTED_HERE:
                _TRACE_STARTED_HERE = False
                tracemalloc.stop()

    def get_stats(self) -> dict[str, Any]:
        """Current and peak traced bytes, live allocated blocks and the top allocation sites."""
        out: dict[str, Any] = {"enabled": self.enabled, "tracing": tracemalloc.is_tracing()}
        if not (self.enabled and out["tracing"]):
            return out
        with _TRACE_LOCK:  # another Store's close() must not stop tracing in between
            if not tracemalloc.is_tracing():
                out["tracing"] = False
                return out
            current, peak = tracemalloc.get_traced_memory()
            snapshot = tracemalloc.take_snapshot()
        snapshot = snapshot.filter_traces((tracemalloc.Filter(False, tracemalloc.__file__),))
        stats = snapshot.statistics("lineno")
        out.update(
            current_bytes=current,
            peak_bytes=peak,
            blocks=sum(s.count for s in stats),
            overhead_bytes=tracemalloc.get_tracemalloc_memory(),
            top=[
                {
                    "where": f"{s.traceback[0].filename}:{s.traceback[0].lineno}",
                    "size_bytes": s.size,
                    "blocks": s.count,
                }
                for s in stats[: self._top]
            ],
        )
        return out


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic collector paused for the block, for bulk jobs (an import, a
    ``gc()`` run) that allocate tens of thousands of tuples living until their end: each
    of the hundreds of collections they would trigger walks them all again. Such a job
    makes next to no cyclic garbage. Left as it was found (a caller that had disabled it
    keeps it disabled)."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()

"""The memory optimizer: garbage-collector management around operations.

CPython's cyclic collector stops the process for as long as it takes to walk the objects
of the generation it collects -- each object, each reference it holds (a dict of 50,000
entries is one object and 100,000 visits), and the garbage it frees. A full collection
walks every tracked object of the process, so its pause grows with the heap: 50-60 ms
measured in the bench process, 300 ms of wall clock in a loaded writer process. What this
middleware does, once per process and only while a Store with
``Settings.memory_optimizer`` is open:

* **start-up**: ``gc.freeze()`` -- everything alive once the first such Store of the
  process opened (modules, SQLAlchemy metadata, compiled statements) moves to the
  permanent generation, which no collection walks. Once per process: a Store opened
  later (one per request) does not freeze what the previous one left to collect. No
  collection first: on a grown heap (a Store opened late in a process) that collection
  was itself the longest pause measured (48 ms).
* **young collections between operations**: when an operation ends with none other in
  flight and ``Settings.memory_gc_threshold`` containers (net) were allocated since the
  last collection -- or an automatic collection promoted survivors since the last time
  -- the young generations are collected (``gc.collect(1)``) and everything left is
  frozen. Long-lived objects (cache entries, the application's data) are walked once or
  twice while young and never again, so no pause grows with the heap; and collections
  run between operations, not inside them.
* **automatic collections as a fallback**: generation 0 every :data:`AUTOMATIC` times
  the threshold (an operation that allocates a lot, code outside operations, operations
  always in flight on several threads), generation 1 every :data:`YOUNG_COLLECTIONS` of
  those; automatic full collections never run.

  It never runs a full collection between operations: a full collection *untracks* a
  dict whose keys and values are all atomic (a cache's dict keyed by ``(repo, id)`` with
  bytes values), the next insert tracks it again in generation 0, and every collection
  until the next full one walked the whole dict -- pauses that grew with the caches (up to
  20 ms of CPU in a writer process). A frozen dict stays frozen.
* **the bound**: cyclic garbage among frozen objects is not reclaimed (objects freed by
  reference counting -- nearly all: rows, chunks, evicted cache entries -- are
  unaffected). The library's own operations leave no cyclic garbage (tested), so what
  freezing keeps is the application's: a cycle that outlived two young collections and
  died later. When the frozen objects exceed ``Settings.memory_freeze_growth`` times their
  number after the last full collection (start-up's freeze counts as one), plus what the
  open Stores' query caches can hold (``cache_max_bytes`` / :data:`CACHE_BYTES_PER_OBJECT`:
  bounded and live by construction, and a full 64 MiB cache of parsed trees is a few
  hundred thousand tracked objects, several times a bare process's ~70,000), the next
  idle moment runs a full collection over everything (``gc.unfreeze()``, ``gc.collect()``,
  ``gc.freeze()``): a pause proportional to the whole heap (0.7-1 us of CPU per tracked
  object measured: 70-90 ms for 100,000, 345 ms for 343,000), paid so that frozen garbage
  never exceeds ``growth - 1`` times the heap plus the caches' share. With the default
  4.0 a heap that only grows pays it at every quadrupling (a logarithmic number of
  times); one that stays the same size, never.

Large content never reaches the collector: chunk buffers are ``bytes``, released by
reference counting. Buffer pools for chunk I/O are not built: a chunk is one ``bytes``
allocation freed as soon as it is written or read past, and the bench
(``bench/memory.py``) showed RSS flat at a few chunks; a pool would only save allocator
calls the profile does not show.

Metrics (``store.metrics()["memory"]["optimizer"]``, process-wide like the collector):
frozen objects, re-freezes and full collections run between operations with their
longest pauses, what the last full collection freed, thresholds. Pauses by generation,
RSS and bytes in flight are in the same ``memory`` section (:mod:`govc_db.perf.memory`).
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from govc_db.middleware.base import Handler, Operation

__all__ = [
    "AUTOMATIC",
    "CACHE_BYTES_PER_OBJECT",
    "YOUNG_COLLECTIONS",
    "MemoryMiddleware",
    "process_stats",
]

#: The automatic generation-0 threshold is this many times ``memory_gc_threshold``: the
#: young collection normally runs between operations, at the threshold; the automatic
#: one bounds what an operation (or code outside any) lets pile up meanwhile.
AUTOMATIC: Final = 2
#: Generation-0 collections per automatic generation-1 collection (Python's is 10). An
#: operation that keeps what it allocates (a long listing) has each generation-1
#: collection walk ``AUTOMATIC * threshold * (YOUNG_COLLECTIONS + 1)`` objects: 6,000
#: (about 5 ms of CPU here, 0.85 us an object); at 4x and 3, 16,000 took 9-14 ms.
YOUNG_COLLECTIONS: Final = 2
#: Bytes the query cache charges, at least, per tracked object it holds: a cached tree
#: is charged 120 bytes plus 150 per entry (:mod:`govc_db.db.cache`) for the Tree, its
#: tuple, the LRU's value tuple and one TreeItem per entry; a commit-index row 200+ for
#: two objects. A full cache of ``cache_max_bytes`` holds at most that many.
CACHE_BYTES_PER_OBJECT: Final = 100
#: Threshold 2 while the optimizer runs: automatic full collections never trigger.
_NEVER: Final = 1_000_000_000


class _Process:
    """The collector's state for the whole process (it is process-wide)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.saved: tuple[int, int, int] | None = None
        self.active = 0
        """Operations in flight, process-wide."""
        self.busy = threading.Lock()
        """Held while a re-freeze or full collection runs (one at a time)."""
        self.mark = 0
        """``gc.get_count()[2]`` (generation-1 collections since the last full one) when
        the young generations were last frozen."""
        self.young = 1_000
        """Net container allocations after which a young collection is due."""
        self.growth: float | None = 4.0
        self.base = 0
        """Frozen objects after the last full collection (or the start-up freeze)."""
        self.frozen = 0
        """Frozen objects, counted: ``base`` plus the survivors each re-freeze moved.
        ``gc.get_freeze_count()`` walks the whole permanent generation (14 ms with a
        Store's heap frozen), too slow to ask at every operation."""
        self.started = False
        """Whether the start-up freeze ran (once per process)."""
        self.allowance = 0
        """Tracked objects the open Stores' query caches may hold, all live: frozen
        growth up to this much on top of the bound is theirs, not garbage."""
        self.refreezes = 0
        self.max_refreeze = 0.0
        self.total_refreeze = 0.0
        self.full = 0
        self.max_full = 0.0
        self.total_full = 0.0
        self.last_full_freed = 0

    def limit(self) -> int | None:
        """Frozen objects past which the next idle moment runs a full collection."""
        if self.growth is None:
            return None
        return int(self.growth * max(self.base, 1)) + self.allowance

    def stats(self) -> dict[str, Any]:
        return {
            "frozen_objects": gc.get_freeze_count(),
            "frozen_after_last_full_collection": self.base,
            "freeze_growth": self.growth,
            "frozen_limit": self.limit(),
            "young_collection_after": self.young,
            "thresholds": list(gc.get_threshold()),
            "refreezes_between_operations": self.refreezes,
            "max_refreeze_pause_ms": self.max_refreeze * 1000,
            "total_refreeze_pause_ms": self.total_refreeze * 1000,
            "full_collections_between_operations": self.full,
            "max_full_pause_ms": self.max_full * 1000,
            "total_full_pause_ms": self.total_full * 1000,
            "last_full_collection_freed": self.last_full_freed,
        }


_STATE = _Process()


def process_stats() -> dict[str, Any]:
    """The optimizer's process-wide figures (what ``get_stats()`` reports)."""
    return _STATE.stats()


def _acquire(threshold: int, growth: float | None, cache_objects: int) -> bool:
    """Tune the process for the first user; True if this call froze the start-up heap."""
    s = _STATE
    with s.lock:
        s.users += 1
        s.allowance += cache_objects
        if s.users > 1:
            return False
        s.saved = gc.get_threshold()
        gc.set_threshold(threshold * AUTOMATIC, YOUNG_COLLECTIONS, _NEVER)
        s.young = threshold
        s.mark = gc.get_count()[2]
        s.growth = growth
        if s.started:
            # Once per process: a process that opens a Store per request would otherwise
            # freeze each closed Store's remains with the next one (frozen garbage), and
            # pay a walk of the permanent generation per open. What lived on meanwhile is
            # frozen by the next re-freeze.
            return False
        gc.freeze()
        s.base = s.frozen = gc.get_freeze_count()
        s.started = True
        return True


def _release(cache_objects: int) -> None:
    s = _STATE
    with s.lock:
        if s.users == 0:
            return
        s.users -= 1
        s.allowance -= cache_objects
        if s.users == 0 and s.saved is not None:
            # What is frozen stays frozen (gc.unfreeze() gives it back): an application
            # may have frozen objects of its own before, for its own reasons.
            gc.set_threshold(*s.saved)
            s.saved = None


def _due() -> bool:
    """Whether a young collection is due: enough allocations, or survivors promoted
    since the last freeze (cheap: no lock)."""
    count = gc.get_count()
    return count[0] >= _STATE.young or count[2] != _STATE.mark


def _between_operations(timer: Callable[[], float]) -> None:
    """Re-freeze the young survivors, or run the bounded full collection when due."""
    s = _STATE
    if not s.busy.acquire(blocking=False):
        return  # another thread is at it
    try:
        if not _due() or s.users == 0:
            return
        limit = s.limit()
        full = limit is not None and s.frozen > limit
        start = timer()
        if full:
            gc.unfreeze()
            freed = gc.collect()
            gc.freeze()
        else:
            gc.collect(1)
            # The survivors are all in the old generation now: what the freeze moves.
            moved = len(gc.get_objects(2))
            gc.freeze()
        pause = timer() - start
        with s.lock:
            s.mark = gc.get_count()[2]
            if full:
                s.base = s.frozen = gc.get_freeze_count()
                s.full += 1
                s.total_full += pause
                s.max_full = max(s.max_full, pause)
                s.last_full_freed = freed
            else:
                s.frozen += moved
                s.refreezes += 1
                s.total_refreeze += pause
                s.max_refreeze = max(s.max_refreeze, pause)
    finally:
        s.busy.release()


class MemoryMiddleware:
    """Re-freezes survivors between operations (see the module docstring)."""

    def __init__(
        self,
        app: Handler,
        *,
        gc_threshold: int = 1_000,
        freeze_growth: float | None = 4.0,
        cache_bytes: int = 0,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._app = app
        self._timer = timer
        self._cache_objects = cache_bytes // CACHE_BYTES_PER_OBJECT
        self.froze_startup = _acquire(gc_threshold, freeze_growth, self._cache_objects)
        self._open = True

    def __call__(self, op: Operation) -> Any:
        """Run ``op``; then, if nothing else is in flight and one is due, a re-freeze."""
        s = _STATE
        with s.lock:
            s.active += 1
        try:
            return self._app(op)
        finally:
            with s.lock:
                s.active -= 1
                idle = s.active == 0
            if idle and _due():
                _between_operations(self._timer)

    def close(self) -> None:
        """Give the process its collector thresholds back when the last user closes."""
        if self._open:
            self._open = False
            _release(self._cache_objects)

    def get_stats(self) -> dict[str, Any]:
        """Frozen objects, re-freezes and full collections between operations, pauses."""
        return {
            "enabled": True,
            **_STATE.stats(),
            "buffer_pool": {"enabled": False, "hits": 0, "misses": 0},
        }

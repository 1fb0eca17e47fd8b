"""The memory optimizer: garbage-collector management around operations.

CPython's cyclic collector pauses every thread for as long as it takes to walk the
objects of the generation it collects; a full collection walks every tracked object of
the process, so its pause grows with the heap (caches, ORM metadata, the application's
own data): 94 ms measured in the bench process, 700 ms in a PostgreSQL writer. What this
middleware does, once per process and only while a Store with
``Settings.memory_optimizer`` is open:

* at start-up, ``gc.freeze()``: everything alive once the Store opened (modules,
  SQLAlchemy metadata, compiled statements) moves to the permanent generation, which no
  collection walks again (without a full collection first: that collection was itself a
  48 ms pause when a Store opened late in a grown process);
* generation 0 collects every ``Settings.memory_gc_threshold`` allocations (Python: 700),
  and automatic full collections are switched off (threshold 2 set out of reach);
* full collections run *between* operations instead: when an operation ends with none
  other in flight and at least ``FULL_AFTER`` generation-1 collections happened since the
  last one. The survivors are frozen too, so the next full collection walks only what
  was allocated since.

The cost of freezing: cyclic garbage among frozen objects is not reclaimed (objects freed
by reference counting, which is nearly all of them -- cache entries, rows, chunks -- are
unaffected). Large content never reaches the collector: chunk buffers are ``bytes``
released by reference counting.

Buffer pools for chunk I/O are not built: a chunk is one ``bytes`` allocation freed as
soon as it is written or read past, and the bench (``bench/memory.py``) showed RSS flat
at a few chunks; a pool would only save allocator calls the profile does not show.

Metrics (``store.metrics()["memory"]["optimizer"]``): frozen objects, collections run
between operations and their longest pause, thresholds. Pauses by generation, RSS and
bytes in flight are in the same ``memory`` section (:mod:`govc_db.perf.memory`).
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Any, Final

from govc_db.middleware.base import Handler, Operation

__all__ = ["FULL_AFTER", "MemoryMiddleware"]

#: Generation-1 collections after which a full collection is due (Python's threshold 2
#: is 10). Each full collection walks what survived since the last one froze its
#: survivors, so running them often keeps each short: on a commit loop with generation-0
#: threshold 1,000, 10 made them 15 ms of CPU, 3 about 5-9 ms.
FULL_AFTER: Final = 3
#: Threshold 2 while the optimizer runs: automatic full collections never trigger.
_NEVER: Final = 1_000_000_000

_LOCK = threading.Lock()
_USERS = 0
_SAVED: tuple[int, int, int] | None = None
_ACTIVE = 0  # operations in flight, process-wide (the collector is process-wide)


def _acquire(threshold: int) -> bool:
    """Tune the process for the first user; True if this call froze the start-up heap."""
    global _USERS, _SAVED
    with _LOCK:
        _USERS += 1
        if _USERS > 1:
            return False
        _SAVED = gc.get_threshold()
        # No collection first: on a grown heap (a second Store opened late in a process)
        # it was itself the longest pause measured (48 ms); cyclic garbage alive at this
        # moment is frozen with the rest, a one-time cost.
        gc.freeze()
        gc.set_threshold(threshold, FULL_AFTER, _NEVER)
        return True


def _release() -> None:
    global _USERS, _SAVED
    with _LOCK:
        if _USERS == 0:
            return
        _USERS -= 1
        if _USERS == 0 and _SAVED is not None:
            gc.set_threshold(*_SAVED)
            _SAVED = None


class MemoryMiddleware:
    """Runs full collections between operations (see the module docstring)."""

    def __init__(
        self,
        app: Handler,
        *,
        gc_threshold: int = 1_000,
        full_after: int = FULL_AFTER,
        timer: Any = time.perf_counter,
    ) -> None:
        self._app = app
        self._full_after = full_after
        self._timer = timer
        self._lock = threading.Lock()
        self.froze_startup = _acquire(gc_threshold)
        self._open = True
        self.full_collections = 0
        self.max_full_pause = 0.0
        self.total_full_pause = 0.0

    def __call__(self, op: Operation) -> Any:
        """Run ``op``; then, if nothing else is in flight and one is due, a full collection."""
        global _ACTIVE
        with _LOCK:
            _ACTIVE += 1
        try:
            return self._app(op)
        finally:
            with _LOCK:
                _ACTIVE -= 1
                idle = _ACTIVE == 0
            if idle and gc.get_count()[2] >= self._full_after:
                self._collect()

    def _collect(self) -> None:
        start = self._timer()
        gc.collect()
        gc.freeze()
        pause = self._timer() - start
        with self._lock:
            self.full_collections += 1
            self.total_full_pause += pause
            self.max_full_pause = max(self.max_full_pause, pause)

    def close(self) -> None:
        """Give the process its collector thresholds back when the last user closes."""
        if self._open:
            self._open = False
            _release()

    def get_stats(self) -> dict[str, Any]:
        """Frozen objects, full collections run between operations and their pauses."""
        with self._lock:
            return {
                "enabled": True,
                "frozen_objects": gc.get_freeze_count(),
                "thresholds": list(gc.get_threshold()),
                "full_collections_between_operations": self.full_collections,
                "max_full_pause_ms": self.max_full_pause * 1000,
                "total_full_pause_ms": self.total_full_pause * 1000,
                "buffer_pool": {"enabled": False, "hits": 0, "misses": 0},
            }

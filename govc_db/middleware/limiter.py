"""Concurrency limiter: at most ``Settings.max_in_flight`` operations at once.

Callers beyond the bound queue (a semaphore) for up to ``queue_timeout`` seconds, then
fail with :class:`~govc_db.errors.Overloaded` (a StoreUnavailable with ``retry_after``).
An operation started inside another one in the same thread or task (a nested call) does
not take a second slot, so nesting can never deadlock on the bound.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from govc_db.errors import Overloaded
from govc_db.middleware.base import Handler, Operation

__all__ = ["LimiterMiddleware"]

_HOLDING: ContextVar[frozenset[int]] = ContextVar("govc_db_limiter_slots", default=frozenset())


class LimiterMiddleware:
    """Bounds operations in flight; queues the rest for ``timeout`` seconds."""

    def __init__(
        self,
        app: Handler,
        *,
        limit: int,
        timeout: float,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._app = app
        self.limit = int(limit)
        self.timeout = float(timeout)
        self._timer = timer
        self._slots = threading.BoundedSemaphore(self.limit)
        self._lock = threading.Lock()
        self._running = 0
        self._waiting = 0
        self._max_waiting = 0
        self._waited = 0.0
        self._stats: Counter[str] = Counter()

    def __call__(self, op: Operation) -> Any:
        """Run ``op`` once a slot is free, or raise Overloaded after the timeout."""
        held = _HOLDING.get()
        if id(self) in held:
            return self._app(op)
        if not self._slots.acquire(blocking=False):
            start = self._timer()
            with self._lock:
                self._waiting += 1
                self._max_waiting = max(self._max_waiting, self._waiting)
                self._stats["queued"] += 1
            try:
                got = self._slots.acquire(timeout=self.timeout)
            finally:
                with self._lock:
                    self._waiting -= 1
                    self._waited += self._timer() - start
            if not got:
                with self._lock:
                    self._stats["rejected"] += 1
                raise Overloaded(
                    f"{self.limit} operations in flight and none finished within "
                    f"{self.timeout:g} s",
                    retry_after=1.0,
                )
        token = _HOLDING.set(held | {id(self)})
        with self._lock:
            self._running += 1
        try:
            return self._app(op)
        finally:
            _HOLDING.reset(token)
            with self._lock:
                self._running -= 1
            self._slots.release()

    def get_stats(self) -> dict[str, Any]:
        """Running and waiting operations, the deepest queue, rejections, time queued."""
        with self._lock:
            return {
                "limit": self.limit,
                "running": self._running,
                "waiting": self._waiting,
                "max_waiting": self._max_waiting,
                "queued": self._stats["queued"],
                "rejected": self._stats["rejected"],
                "queued_seconds": self._waited,
            }

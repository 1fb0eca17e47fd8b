"""Circuit breaker: ``Settings.breaker_failures`` / ``breaker_reset``.

Closed: calls pass; each :class:`~govc_db.errors.StoreUnavailable` is remembered for
``reset`` seconds. When ``failures`` of them are remembered the breaker opens: calls fail
at once with :class:`~govc_db.errors.CircuitOpen` (a StoreUnavailable, with
``retry_after``), sparing a database that is down the connection attempts and the
callers the timeouts. After ``reset`` seconds it is half-open: one call goes through as
a probe while the others still fail fast; the probe's success (any answer but
StoreUnavailable: a NotFound proves the database answered) closes the breaker, its
failure opens it again for another ``reset`` seconds.

Only StoreUnavailable counts: a bad argument or a missing file says nothing about the
database. Overloaded (the limiter's queue timeout) is not the database failing either.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from govc_db.errors import CircuitOpen, GovcError, Overloaded, StoreUnavailable
from govc_db.middleware.base import Handler, Operation

__all__ = ["BreakerMiddleware"]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class BreakerMiddleware:
    """Fails fast after ``failures`` StoreUnavailable errors within ``reset`` seconds."""

    def __init__(
        self,
        app: Handler,
        *,
        failures: int,
        reset: float,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._app = app
        self.failures = int(failures)
        self.reset = float(reset)
        self._timer = timer
        self._lock = threading.Lock()
        self._recent: deque[float] = deque()
        self.state = CLOSED
        self._opened_at = 0.0
        self._probing = False
        self._stats: Counter[str] = Counter()

    def __call__(self, op: Operation) -> Any:
        """Run ``op`` unless the breaker is open (or half-open with a probe under way)."""
        probe = self._admit()
        try:
            result = self._app(op)
        except StoreUnavailable as exc:
            if isinstance(exc, Overloaded):
                self._settle(probe, ok=None)
            else:
                self._settle(probe, ok=False)
            raise
        except GovcError:
            self._settle(probe, ok=True)
            raise
        except BaseException:
            self._settle(probe, ok=None)
            raise
        self._settle(probe, ok=True)
        return result

    def _admit(self) -> bool:
        """Whether this call is the half-open probe; raises CircuitOpen to fail fast."""
        with self._lock:
            if self.state == CLOSED:
                return False
            now = self._timer()
            remaining = self._opened_at + self.reset - now
            if self.state == OPEN and remaining <= 0 and not self._probing:
                self.state = HALF_OPEN
                self._probing = True
                self._stats["probes"] += 1
                return True
            self._stats["rejected"] += 1
        raise CircuitOpen(
            "the database is failing: circuit breaker open, calls fail fast"
            f" for {max(remaining, 0.0):.1f} s more",
            retry_after=max(remaining, 0.0),
        )

    def _settle(self, probe: bool, *, ok: bool | None) -> None:
        with self._lock:
            now = self._timer()
            if probe:
                self._probing = False
                if ok is None:  # the probe proved nothing: the next call probes again
                    self.state = OPEN
                elif ok:
                    self.state = CLOSED
                    self._recent.clear()
                    self._stats["closed"] += 1
                else:
                    self._open(now)
                return
            if ok is False and self.state == CLOSED:
                self._stats["failures"] += 1
                self._recent.append(now)
                while self._recent and self._recent[0] <= now - self.reset:
                    self._recent.popleft()
                if len(self._recent) >= self.failures:
                    self._open(now)

    def _open(self, now: float) -> None:
        self.state = OPEN
        self._opened_at = now
        self._recent.clear()
        self._stats["opened"] += 1

    def get_stats(self) -> dict[str, Any]:
        """State (0 closed, 1 half-open, 2 open), openings, closings, probes, rejections."""
        with self._lock:
            return {
                "state": {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}[self.state],
                "opened": self._stats["opened"],
                "closed": self._stats["closed"],
                "probes": self._stats["probes"],
                "rejected": self._stats["rejected"],
                "failures": self._stats["failures"],
            }

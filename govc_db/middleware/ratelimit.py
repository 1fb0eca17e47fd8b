"""Rate limiter: a token bucket per (caller, repository), ``Settings.rate_limit``.

Each bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per second; a
call takes one token or fails with :class:`~govc_db.errors.RateLimited`, whose
``retry_after`` is when the next token will be there. Buckets live in an LRU map so
many callers cannot grow memory without bound (a forgotten bucket is a full one, which
is what an idle caller's bucket would be anyway). Written by hand: the bucket is ten
lines, and the maintained libraries (limits, pyrate-limiter) bring storage backends and
async machinery this in-process check does not need.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from cachetools import LRUCache

from govc_db.errors import RateLimited
from govc_db.middleware.base import Handler, Operation
from govc_db.middleware.caller import current_caller

__all__ = ["RateLimitMiddleware"]

#: Buckets kept (least recently used ones are forgotten).
MAX_BUCKETS = 100_000


class RateLimitMiddleware:
    """Refuses calls past ``rate`` per second (``burst`` at once) per caller and repository."""

    def __init__(
        self,
        app: Handler,
        *,
        rate: float,
        burst: int,
        timer: Callable[[], float] = time.monotonic,
        max_buckets: int = MAX_BUCKETS,
    ) -> None:
        self._app = app
        self.rate = float(rate)
        self.burst = int(burst)
        self._timer = timer
        self._lock = threading.Lock()
        # key -> [tokens, last refill time]
        self._buckets: LRUCache[tuple[str, str], list[float]] = LRUCache(max_buckets)
        self._stats: Counter[str] = Counter()

    def __call__(self, op: Operation) -> Any:
        """Take a token for ``op``'s caller and repository, or raise RateLimited."""
        self.take(current_caller(), op.repository)
        return self._app(op)

    def take(self, caller: str, repository: str) -> None:
        """Take a token of ``caller``'s bucket for ``repository``, or raise RateLimited
        (for answers served without an operation, e.g. from an HTTP response cache)."""
        key = (caller, repository)
        with self._lock:
            now = self._timer()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = [float(self.burst), now]
            tokens = min(float(self.burst), bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
            if tokens < 1.0:
                bucket[0] = tokens
                self._stats["limited"] += 1
                wait = (1.0 - tokens) / self.rate
                raise RateLimited(
                    f"rate limit of {self.rate:g}/s exceeded for {repository or 'the store'!r}",
                    retry_after=wait,
                )
            bucket[0] = tokens - 1.0
            self._stats["allowed"] += 1

    def get_stats(self) -> dict[str, Any]:
        """Calls allowed and limited, the number of buckets, and the configuration."""
        with self._lock:
            return {
                "allowed": self._stats["allowed"],
                "limited": self._stats["limited"],
                "buckets": len(self._buckets),
                "rate": self.rate,
                "burst": self.burst,
            }

"""Named counters behind one lock, the shape of the small ``get_stats()`` components."""

from __future__ import annotations

import threading
from collections import Counter
from typing import ClassVar

__all__ = ["Counters"]


class Counters:
    """Thread-safe counters; :meth:`get_stats` reports every name of ``KEYS`` (0 if unset)."""

    KEYS: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def count(self, **counts: int) -> None:
        """Add to the named counters, in one locked step."""
        with self._lock:
            self._counts.update(counts)

    def get_stats(self) -> dict[str, int]:
        """The counters of ``KEYS``."""
        with self._lock:
            return {k: self._counts[k] for k in self.KEYS}

"""``store.metrics()["storage"]``: what the storage optimizer stored and how reads fared.

Counters only (cheap, live): bytes by kind as written (raw and stored), the compression
ratio, delta objects and chain depths, dedup hits, whether zstd deltas run through
libzstd's prefix API (:mod:`govc_db.store.zprefix`), the decoded-base cache, the pack
index of this process, and the last ``gc()`` report (objects, packs, bytes before and
after).
"""

from __future__ import annotations

from typing import Any

from govc_db.store.codec import Codec
from govc_db.store.packs import PackStore

__all__ = ["StorageStats"]


class StorageStats:
    """The ``storage`` component of the performance manager."""

    def __init__(self, codec: Codec, packs: PackStore | None = None) -> None:
        self._codec = codec
        self._packs = packs

    def get_stats(self) -> dict[str, Any]:
        """Write-path counters, the decoded-base cache and the last gc() report."""
        codec = self._codec
        return {
            "optimizer": codec.optimizer,
            "max_depth": codec.max_depth,
            # libzstd's version number when zstd deltas run through it (else None:
            # python-zstandard, a context per delta).
            "native_zstd": codec.native.version if codec.native is not None else None,
            **codec.written.get_stats(),
            "delta_cache": codec.cache.get_stats(),
            "packs": self._packs.get_stats() if self._packs is not None else None,
            "last_gc": codec.last_gc,
        }

"""Per-object compression for the ``encoding`` column: 0 raw, 1 zlib, 2 zstd."""

from __future__ import annotations

import threading
import zlib
from typing import Final

import zstandard

from govc_db.errors import GovcError
from govc_db.settings import Settings

__all__ = ["ENC_RAW", "ENC_ZLIB", "ENC_ZSTD", "Codec"]

ENC_RAW: Final = 0
ENC_ZLIB: Final = 1
ENC_ZSTD: Final = 2


class Codec:
    """Encodes object content for storage and decodes it back.

    Content that does not shrink is stored raw, so reads of incompressible data
    (images, archives) pay nothing.
    """

    def __init__(self, *, method: str = "zlib", level: int = 3, min_size: int = 64) -> None:
        self.method = method
        self.level = level
        self.min_size = min_size
        # zstd contexts are not thread-safe; keep one per thread.
        self._local = threading.local()

    @classmethod
    def from_settings(cls, settings: Settings) -> Codec:
        """The codec ``settings`` ask for (compression, level, minimum size)."""
        return cls(
            method=settings.compression,
            level=settings.compression_level,
            min_size=settings.compression_min_size,
        )

    def _zstd_c(self) -> zstandard.ZstdCompressor:
        c: zstandard.ZstdCompressor | None = getattr(self._local, "c", None)
        if c is None:
            c = self._local.c = zstandard.ZstdCompressor(level=self.level)
        return c

    def _zstd_d(self) -> zstandard.ZstdDecompressor:
        d: zstandard.ZstdDecompressor | None = getattr(self._local, "d", None)
        if d is None:
            d = self._local.d = zstandard.ZstdDecompressor()
        return d

    def encode(self, data: bytes) -> tuple[int, bytes]:
        """Return ``(encoding, stored bytes)`` for ``data``."""
        if self.method == "none" or len(data) < self.min_size:
            return ENC_RAW, data
        if self.method == "zstd":
            packed = self._zstd_c().compress(data)
            enc = ENC_ZSTD
        else:
            packed = zlib.compress(data, self.level)
            enc = ENC_ZLIB
        if len(packed) >= len(data):
            return ENC_RAW, data
        return enc, packed

    def decode(self, encoding: int, stored: bytes, size: int) -> bytes:
        """Return the original content; ``GovcError`` when the stored bytes are corrupt."""
        stored = bytes(stored)
        try:
            if encoding == ENC_RAW:
                return stored
            if encoding == ENC_ZLIB:
                return zlib.decompress(stored)
            if encoding == ENC_ZSTD:
                return self._zstd_d().decompress(stored, max_output_size=size)
        except (zlib.error, zstandard.ZstdError) as exc:
            raise GovcError("stored object data is corrupt (cannot decompress)") from exc
        raise GovcError(f"stored object has unknown encoding {encoding}")

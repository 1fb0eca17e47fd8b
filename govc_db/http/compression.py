"""Response compression (ASGI middleware): gzip, and zstd when asked.

Applies to a response when the client accepts an encoding we have, the content type is
compressible (text, JSON, XML, JavaScript, SVG), it is larger than ``minimum_size``
bytes (or of unknown length, i.e. streamed), and it is not already encoded. Never for
``Range`` requests or 206 answers (byte ranges address the identity representation),
for already-compressed types (images, archives, ``application/octet-stream``) or for
git's protocol answers. Passes straight through otherwise; like starlette's
``GZipMiddleware``, plus zstd and those exclusions. (Brotli is left out: zstd is already a
dependency, and browsers that send ``br`` also send ``gzip``.)

Preference when the client accepts both: zstd, then gzip (a q-value of 0 refuses).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CompressionMiddleware", "available_encodings"]

_COMPRESSIBLE_PREFIXES = ("text/",)
_COMPRESSIBLE = frozenset(
    {
        "application/json",
        "application/javascript",
        "application/xml",
        "application/x-ndjson",
        "image/svg+xml",
        "application/toml",
        "application/yaml",
    }
)


class _Encoder:
    """A streaming compressor: ``compress(chunk)`` and ``flush()``."""

    def __init__(self, compress: Callable[[bytes], bytes], flush: Callable[[], bytes]) -> None:
        self.compress = compress
        self.flush = flush


def _gzip() -> _Encoder:
    c = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: gzip container
    return _Encoder(c.compress, c.flush)


def _zstd() -> _Encoder:
    import zstandard

    c = zstandard.ZstdCompressor(level=3).compressobj()
    return _Encoder(c.compress, c.flush)


def available_encodings() -> dict[str, Callable[[], _Encoder]]:
    """The encodings this process can produce, by preference."""
    found: dict[str, Callable[[], _Encoder]] = {}
    try:
        import zstandard  # noqa: F401

        found["zstd"] = _zstd
    except ImportError:  # pragma: no cover - zstandard is a dependency
        pass
    found["gzip"] = _gzip
    return found


def _accepted(header: str) -> set[str]:
    out: set[str] = set()
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        q = 1.0
        for p in params.split(";"):
            key, _, value = p.strip().partition("=")
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0:
            out.add(name.strip().lower())
    return out


def compressible(content_type: str) -> bool:
    """Whether a content type is worth compressing."""
    base = content_type.split(";", 1)[0].strip().lower()
    return base.startswith(_COMPRESSIBLE_PREFIXES) or base in _COMPRESSIBLE


class CompressionMiddleware:
    """Compresses eligible responses with the best encoding the client accepts."""

    def __init__(self, app: ASGIApp, *, minimum_size: int = 1024) -> None:
        self.app = app
        self.minimum_size = minimum_size
        self.encodings = available_encodings()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if "range" in headers:
            await self.app(scope, receive, send)
            return
        accepted = _accepted(headers.get("accept-encoding", ""))
        choice = next((name for name in self.encodings if name in accepted), None)
        if choice is None:
            await self.app(scope, receive, send)
            return
        await _Responder(self, choice, send).run(scope, receive)


class _Responder:
    def __init__(self, mw: CompressionMiddleware, encoding: str, send: Send) -> None:
        self.mw = mw
        self.encoding = encoding
        self.send = send
        self.start: Message | None = None
        self.encoder: _Encoder | None = None
        self.passthrough = False

    async def run(self, scope: Scope, receive: Receive) -> None:
        await self.mw.app(scope, receive, self.on_send)

    async def on_send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.start = message
            return
        if kind != "http.response.body" or self.passthrough:
            await self.send(message)
            return
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        if self.start is not None:
            start, self.start = self.start, None
            if not self._eligible(start, body, more):
                self.passthrough = True
                await self.send(start)
                await self.send(message)
                return
            self.encoder = self.mw.encodings[self.encoding]()
            h = MutableHeaders(raw=start["headers"])
            h["Content-Encoding"] = self.encoding
            h.add_vary_header("Accept-Encoding")
            etag = h.get("etag")
            if etag and not etag.startswith("W/"):
                h["ETag"] = "W/" + etag
            if more:
                del h["Content-Length"]
                await self.send(start)
            else:
                data = self.encoder.compress(body) + self.encoder.flush()
                h["Content-Length"] = str(len(data))
                await self.send(start)
                await self.send({"type": "http.response.body", "body": data})
                return
        assert self.encoder is not None
        data = self.encoder.compress(body)
        if not more:
            data += self.encoder.flush()
        if data or not more:
            await self.send({"type": "http.response.body", "body": data, "more_body": more})

    def _eligible(self, start: Message, body: bytes, more: bool) -> bool:
        status: int = start["status"]
        if status in (204, 206, 304) or status < 200:
            return False
        h = Headers(raw=start["headers"])
        if "content-encoding" in h or not compressible(h.get("content-type", "")):
            return False
        length: Any = h.get("content-length")
        size = int(length) if length is not None else (None if more else len(body))
        return size is None or size >= self.mw.minimum_size

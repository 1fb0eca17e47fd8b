"""``raw`` answers: a file's bytes by revision and path, streamed in chunks through
``repo.open()``; ``ETag: "<blob id>"``, 304 on a match, single ``Range`` requests (206,
416). Small blobs are kept in the response cache by blob id (immutable)."""

from __future__ import annotations

import mimetypes
from collections.abc import Callable, Iterator
from typing import BinaryIO

from starlette.responses import Response, StreamingResponse

from govc_db.api.repository import Repository
from govc_db.errors import InvalidInput, NotFound
from govc_db.http.caching import IMMUTABLE, REVALIDATE, Answer, matches, repo_id
from govc_db.http.context import Ctx

__all__ = ["raw"]

#: Bytes per chunk of a streamed file answer.
CHUNK = 64 * 1024
#: Blobs up to this size are kept in the response cache (by blob id).
CACHE_BLOB_MAX = 256 * 1024


def _blob_meta(ctx: Ctx, repo: Repository, commit: str, path: str) -> tuple[str, int]:
    """``(blob id, mode)`` of ``path`` at ``commit``, from the response cache or a tree."""
    key = ("blob", repo.name, commit, path)
    found: tuple[str, int] | None = ctx.cache.get(key)
    if found is not None:
        return found
    parent, _, name = path.rpartition("/")
    for entry in repo.tree(commit, parent):
        if entry.name == name:
            if entry.type != "blob":
                raise InvalidInput(f"path {path!r} is a {entry.type}, not a file")
            found = (entry.oid, entry.mode)
            ctx.cache.put(key, found, 128 + len(path))
            return found
    raise NotFound(f"path {path!r} not found at {commit}")


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` inclusive of a single ``bytes=`` range, None to send everything;
    ``(-1, -1)`` when unsatisfiable."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[6:].strip().partition("-")
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                return (-1, -1)
            return (max(0, size - n), size - 1)
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size or end < start:
        return (-1, -1)
    return (start, min(end, size - 1))


def _chunks(stream: BinaryIO, remaining: int | None) -> Iterator[bytes]:
    try:
        while remaining is None or remaining > 0:
            want = CHUNK if remaining is None else min(CHUNK, remaining)
            data = stream.read(want)
            if not data:
                break
            if remaining is not None:
                remaining -= len(data)
            yield data
    finally:
        stream.close()


def raw(ctx: Ctx) -> Response:
    """The file's bytes, streamed; ETag = blob id; 304 and ``Range`` answered."""
    rest = ctx.rest()
    if len(rest) < 2 or not rest[0]:
        raise InvalidInput("use /raw/{rev}/{path}")
    rev, path = rest[0], "/".join(rest[1:])
    repo = ctx.repo()
    commit, immutable = ctx.resolve(repo, rev)
    blob, _mode = _blob_meta(ctx, repo, commit, path)
    etag = f'"{blob}"'
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE if immutable else REVALIDATE}
    if matches(ctx.request.headers.get("if-none-match"), etag):
        # ETag and Cache-Control only (RFC 9110, 15.4.5), as the fast path's 304.
        return Response(status_code=304, headers=headers)
    headers["Accept-Ranges"] = "bytes"
    media = mimetypes.guess_type(path)[0] or "application/octet-stream"
    range_header = ctx.request.headers.get("range")
    data: bytes | None = ctx.cache.get(("data", repo.name, blob))
    stream: BinaryIO | None = None
    if data is None:
        stream = repo.open(commit, path)
        first = stream.read(CHUNK)
        if len(first) < CHUNK:  # the whole file: answer (and cache) it in one piece
            stream.close()
            stream, data = None, first
            if len(data) <= CACHE_BLOB_MAX:
                ctx.cache.put(("data", repo.name, blob), data, len(data))
    if data is not None:
        span = _byte_range(range_header, len(data))
        whole = Response(data, headers=headers, media_type=media)
        if len(data) <= CACHE_BLOB_MAX:
            answer = Answer(etag, whole.headers["content-type"], data, raw=True)
            ctx.remember(("raw", repo_id(repo), commit, path), answer)
        if span is None:
            return whole
        return _partial(headers, media, len(data), span, lambda a, b: iter([data[a : b + 1]]))
    assert stream is not None
    size = _size(stream)
    span = None if size is None else _byte_range(range_header, size)
    if span == (-1, -1):
        stream.close()
    if span is not None and size is not None:
        live = stream

        def part(a: int, b: int) -> Iterator[bytes]:
            live.seek(a)
            return _chunks(live, b - a + 1)

        return _partial(headers, media, size, span, part)
    if size is not None:
        headers["Content-Length"] = str(size)
    return StreamingResponse(
        _prepend(first, _chunks(stream, None)), headers=headers, media_type=media
    )


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _size(stream: BinaryIO) -> int | None:
    if not stream.seekable():
        return None
    here = stream.tell()
    size = stream.seek(0, 2)
    stream.seek(here)
    return size


def _partial(
    headers: dict[str, str],
    media: str,
    size: int,
    span: tuple[int, int],
    part: Callable[[int, int], Iterator[bytes]],
) -> Response:
    if span == (-1, -1):
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    a, b = span
    headers = {
        **headers,
        "Content-Range": f"bytes {a}-{b}/{size}",
        "Content-Length": str(b - a + 1),
    }
    return StreamingResponse(part(a, b), status_code=206, headers=headers, media_type=media)

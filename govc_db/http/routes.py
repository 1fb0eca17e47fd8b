"""The REST routes, as one table (:data:`ENDPOINTS`), and their handlers.

Every handler is a plain function of a :class:`Ctx` run in the worker thread pool
(the library is synchronous): authentication, the library calls and the answer are one
thread hop. Revisions and paths in URLs are percent-decoded from the raw path, so a
branch ``feature/x`` is written ``feature%2Fx`` in ``tree`` and ``raw`` URLs.
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from govc_db.api.repository import Repository
from govc_db.api.store import Store
from govc_db.errors import InvalidInput, NotFound
from govc_db.http.auth import Identity
from govc_db.http.caching import (
    IMMUTABLE,
    REVALIDATE,
    ResponseCache,
    etag_for,
    is_full_id,
    matches,
)
from govc_db.objects import Signature
from govc_db.types import Change, CommitInfo, File, TreeEntry

__all__ = ["ENDPOINTS", "Ctx", "Endpoint"]

#: Bytes per chunk of a streamed file answer.
CHUNK = 64 * 1024
#: Blobs up to this size are kept in the response cache (by blob id).
CACHE_BLOB_MAX = 256 * 1024
LOG_LIMIT_DEFAULT = 50
LOG_LIMIT_MAX = 1000


@dataclass
class Ctx:
    """What a handler gets: the request, the body read beforehand, and the service."""

    request: Request
    body: bytes
    store: Store
    identity: Identity
    cache: ResponseCache
    metrics: Callable[[], bytes]

    @property
    def repo_name(self) -> str:
        """The ``{repo}`` of the URL."""
        return str(self.request.path_params["repo"])

    def repo(self) -> Repository:
        """The repository of the URL (NotFound if absent)."""
        return self.store.repository(self.repo_name)

    def query(self, name: str) -> str | None:
        """A query parameter, or None."""
        return self.request.query_params.get(name)

    def rest(self) -> list[str]:
        """The raw URL segments after the route's fixed part, percent-decoded one by one."""
        raw = self.request.scope.get("raw_path")
        text = raw.decode("latin-1") if isinstance(raw, bytes) else self.request.url.path
        segments = text.split("?", 1)[0].split("/")
        # ['', 'api', 'v1', 'repos', '<repo>', '<kind>', ...rest]
        return [unquote(s, errors="surrogateescape") for s in segments[6:]]


Handler = Callable[[Ctx], Response]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One row of the route table. ``access``: ``public`` (anyone), ``token`` (any valid
    token, or anonymous under ``public_read``), ``read`` or ``write`` (of the URL's
    repository)."""

    method: str
    path: str
    handler: Handler
    access: str


# -- answers ------------------------------------------------------------------------------


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _json(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status, headers=headers, media_type="application/json")


def _cached_json(
    ctx: Ctx, etag: str, key: tuple[Any, ...], build: Callable[[], Any], immutable: bool
) -> Response:
    """A JSON answer identified by ``etag``: 304 when the client has it, else from the
    response cache or ``build()`` (and cached: ``key`` names the commits it came from)."""
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE if immutable else REVALIDATE}
    if matches(ctx.request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    body = ctx.cache.get(key)
    if body is None:
        body = _dumps(build())
        ctx.cache.put(key, body, len(body))
    return _json(body, headers=headers)


def _sig(s: Signature) -> dict[str, Any]:
    return {"name": s.name, "email": s.email, "time": s.time, "offset": s.offset}


def _commit(c: CommitInfo) -> dict[str, Any]:
    return {
        "oid": c.oid,
        "tree": c.tree,
        "parents": c.parents,
        "author": _sig(c.author),
        "committer": _sig(c.committer),
        "message": c.message,
    }


def _entry(e: TreeEntry) -> dict[str, Any]:
    return {"name": e.name, "path": e.path, "mode": e.mode, "oid": e.oid, "type": e.type}


def _change(c: Change) -> dict[str, Any]:
    return {
        "path": c.path,
        "status": c.status,
        "old_mode": c.old_mode,
        "new_mode": c.new_mode,
        "old_oid": c.old_oid,
        "new_oid": c.new_oid,
    }


def _resolve(repo: Repository, rev: str) -> tuple[str, bool]:
    """``(commit id, immutable)``: immutable when ``rev`` is that full id itself."""
    oid = repo.resolve(rev)
    return oid, oid == rev and is_full_id(rev)


# -- handlers -----------------------------------------------------------------------------


def healthz(ctx: Ctx) -> Response:
    """Liveness: the process answers (the database is not asked)."""
    return _json(b'{"status":"ok"}')


def metrics(ctx: Ctx) -> Response:
    """Prometheus text exposition of ``store.metrics()``."""
    return Response(ctx.metrics(), media_type="text/plain; version=0.0.4; charset=utf-8")


def list_repos(ctx: Ctx) -> Response:
    """``[{"name", "default_branch"}]`` (a repository-scoped token sees its own only)."""
    only = ctx.identity.repository
    out = []
    for name in ctx.store.list_repositories():
        if only is not None and name != only:
            continue
        out.append({"name": name, "default_branch": ctx.store.repository(name).default_branch})
    return _json(_dumps(out))


def _body_json(ctx: Ctx) -> dict[str, Any]:
    try:
        value = json.loads(ctx.body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("the request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise InvalidInput("the request body must be a JSON object")
    return value


def create_repo(ctx: Ctx) -> Response:
    """201 with the new repository."""
    data = _body_json(ctx)
    name = data.get("name")
    branch = data.get("default_branch", "main")
    if not isinstance(name, str) or not isinstance(branch, str):
        raise InvalidInput("name and default_branch must be strings")
    repo = ctx.store.create_repository(name, default_branch=branch)
    return _json(_dumps({"name": repo.name, "default_branch": repo.default_branch}), 201)


def _refs(ctx: Ctx, which: str) -> Response:
    repo = ctx.repo()
    refs = repo.branches() if which == "branches" else repo.tags()
    body = _dumps(refs)
    etag = etag_for(which, body.decode("utf-8"))
    headers = {"ETag": etag, "Cache-Control": REVALIDATE}
    if matches(ctx.request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return _json(body, headers=headers)


def branches(ctx: Ctx) -> Response:
    """``{"<branch>": "<id>"}``."""
    return _refs(ctx, "branches")


def tags(ctx: Ctx) -> Response:
    """``{"<tag>": "<id>"}``."""
    return _refs(ctx, "tags")


def get_commit(ctx: Ctx) -> Response:
    """The CommitInfo fields of ``{rev}``."""
    rev = "/".join(ctx.rest())
    repo = ctx.repo()
    oid, immutable = _resolve(repo, rev)
    key = ("commit", repo.name, oid)
    return _cached_json(ctx, etag_for(*key), key, lambda: _commit(repo.get_commit(oid)), immutable)


def _int_query(ctx: Ctx, name: str, default: int, high: int) -> int:
    raw = ctx.query(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer") from None
    if not 0 <= value <= high:
        raise InvalidInput(f"{name} must be between 0 and {high}")
    return value


def _cursor(oid: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"{oid}:{offset}".encode()).decode().rstrip("=")


def _parse_cursor(text: str) -> tuple[str, int]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
        oid, _, offset = raw.partition(":")
        if is_full_id(oid) and offset.isdigit():
            return oid, int(offset)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise InvalidInput("malformed cursor")


def log(ctx: Ctx) -> Response:
    """``{"commits": [...], "next": cursor or null}``; ``rev``, ``path``, ``limit``,
    ``cursor`` (a cursor pins the start commit, so pages never shift under a writer)."""
    repo = ctx.repo()
    limit = _int_query(ctx, "limit", LOG_LIMIT_DEFAULT, LOG_LIMIT_MAX)
    path = ctx.query("path") or None
    cursor = ctx.query("cursor")
    if cursor:
        start, offset = _parse_cursor(cursor)
        start, _ = _resolve(repo, start)
        immutable = True
    else:
        start, immutable = _resolve(repo, ctx.query("rev") or "HEAD")
        offset = 0
    key = ("log", repo.name, start, path or "", str(offset), str(limit))

    def build() -> Any:
        found = list(repo.log(start, path=path, limit=offset + limit + 1))[offset:]
        more = len(found) > limit
        return {
            "commits": [_commit(c) for c in found[:limit]],
            "next": _cursor(start, offset + limit) if more else None,
        }

    return _cached_json(ctx, etag_for(*key), key, build, immutable)


def tree(ctx: Ctx) -> Response:
    """``[{"name","path","mode","oid","type"}]`` of the directory ``{path}`` at ``{rev}``."""
    rest = ctx.rest()
    if not rest or not rest[0]:
        raise InvalidInput("a revision is needed: /tree/{rev}/{path}")
    rev, path = rest[0], "/".join(rest[1:]).strip("/")
    repo = ctx.repo()
    oid, immutable = _resolve(repo, rev)
    key = ("tree", repo.name, oid, path)
    return _cached_json(
        ctx, etag_for(*key), key, lambda: [_entry(e) for e in repo.tree(oid, path)], immutable
    )


def diff(ctx: Ctx) -> Response:
    """``[{"path","status","old_mode","new_mode","old_oid","new_oid"}]`` from ``from`` to ``to``."""
    old, new = ctx.query("from"), ctx.query("to")
    if not old or not new:
        raise InvalidInput("from and to are required")
    repo = ctx.repo()
    a, imm_a = _resolve(repo, old)
    b, imm_b = _resolve(repo, new)
    key = ("diff", repo.name, a, b)
    return _cached_json(
        ctx, etag_for(*key), key, lambda: [_change(c) for c in repo.diff(a, b)], imm_a and imm_b
    )


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
    commit, immutable = _resolve(repo, rev)
    blob, _mode = _blob_meta(ctx, repo, commit, path)
    etag = f'"{blob}"'
    headers = {
        "ETag": etag,
        "Cache-Control": IMMUTABLE if immutable else REVALIDATE,
        "Accept-Ranges": "bytes",
    }
    if matches(ctx.request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
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
        if span is None:
            return Response(data, headers=headers, media_type=media)
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


def _signature(value: Any, what: str) -> Signature:
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be an object with name and email")
    now = int(time.time())
    try:
        return Signature(
            value["name"], value["email"], int(value.get("time", now)), int(value.get("offset", 0))
        )
    except (KeyError, TypeError, ValueError):
        raise InvalidInput(f"{what} needs name, email and integer time/offset") from None


def _changes(value: Any) -> dict[str, File | None]:
    if not isinstance(value, dict) or not value:
        raise InvalidInput("changes must be a non-empty object of path -> {content} or null")
    out: dict[str, File | None] = {}
    for path, spec in value.items():
        if spec is None:
            out[path] = None
            continue
        if not isinstance(spec, dict) or not isinstance(spec.get("content"), str):
            raise InvalidInput(f"change of {path!r} must be null or {{'content': base64}}")
        try:
            data = base64.b64decode(spec["content"], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"content of {path!r} is not valid base64") from None
        mode = spec.get("mode", 0o100644)
        if isinstance(mode, str):
            try:
                mode = int(mode, 8)
            except ValueError:
                raise InvalidInput(f"mode of {path!r} is not an octal number") from None
        if not isinstance(mode, int) or mode not in (0o100644, 0o100755, 0o120000):
            raise InvalidInput(f"mode of {path!r} must be 100644, 100755 or 120000")
        out[path] = File(data, mode)
    return out


def create_commit(ctx: Ctx) -> Response:
    """201 ``{"oid"}``: the changes committed on ``branch``."""
    data = _body_json(ctx)
    branch, message = data.get("branch"), data.get("message")
    if not isinstance(branch, str) or not isinstance(message, str):
        raise InvalidInput("branch and message must be strings")
    author = _signature(data.get("author"), "author")
    committer = (
        None if data.get("committer") is None else _signature(data["committer"], "committer")
    )
    expected = data.get("expected_head")
    if expected is not None and not isinstance(expected, str):
        raise InvalidInput("expected_head must be a commit id")
    oid = ctx.repo().commit(
        branch,
        _changes(data.get("changes")),
        message=message,
        author=author,
        committer=committer,
        expected_head=expected,
    )
    return _json(_dumps({"oid": oid}), 201)


R = "/api/v1/repos/{repo}"

#: The routes: method, path, handler, access.
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/healthz", healthz, "public"),
    Endpoint("GET", "/metrics", metrics, "token"),
    Endpoint("GET", "/api/v1/repos", list_repos, "token"),
    Endpoint("POST", "/api/v1/repos", create_repo, "write"),
    Endpoint("GET", R + "/branches", branches, "read"),
    Endpoint("GET", R + "/tags", tags, "read"),
    Endpoint("POST", R + "/commits", create_commit, "write"),
    Endpoint("GET", R + "/commits/{rest:path}", get_commit, "read"),
    Endpoint("GET", R + "/log", log, "read"),
    Endpoint("GET", R + "/tree/{rest:path}", tree, "read"),
    Endpoint("GET", R + "/raw/{rest:path}", raw, "read"),
    Endpoint("GET", R + "/diff", diff, "read"),
)

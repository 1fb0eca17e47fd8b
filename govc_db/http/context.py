"""What every route handler gets (:class:`Ctx`), the route table's row type, and the
JSON answer helpers the handlers share."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response

from govc_db.api.repository import Repository
from govc_db.api.store import Store
from govc_db.http.auth import Identity
from govc_db.http.caching import (
    ANSWER_OVERHEAD,
    IMMUTABLE,
    REVALIDATE,
    Answer,
    Derivations,
    ResponseCache,
    RevisionMemo,
    is_full_id,
    matches,
    repo_id,
)
from govc_db.objects import Signature
from govc_db.types import Change, CommitInfo, TreeEntry

__all__ = [
    "Ctx",
    "Endpoint",
    "Handler",
    "RepoHandles",
    "cached_json",
    "change_json",
    "commit_json",
    "dumps",
    "entry_json",
    "json_response",
    "resolve_rev",
    "signature_json",
]


@dataclass
class Ctx:
    """What a handler gets: the request, the body read beforehand, and the service."""

    request: Request
    body: bytes
    store: Store
    identity: Identity
    cache: ResponseCache
    metrics: Callable[[], bytes]
    handles: RepoHandles
    revisions: RevisionMemo | None = None
    derivations: Derivations | None = None

    @property
    def repo_name(self) -> str:
        """The ``{repo}`` of the URL."""
        return str(self.request.path_params["repo"])

    def repo(self) -> Repository:
        """The repository of the URL (NotFound if absent)."""
        return self.handles.get(self.repo_name)

    def resolve(self, repo: Repository, rev: str) -> tuple[str, bool]:
        """``(commit id, immutable)`` of ``rev`` (see :func:`resolve_rev`), remembered
        for the fast path."""
        return resolve_rev(repo, rev, self.revisions)

    def remember(self, key: tuple[Any, ...], answer: Answer) -> None:
        """Keep ``answer`` for the fast path (``key`` names the commit it came from)."""
        self.cache.put(key, answer, ANSWER_OVERHEAD + len(answer.body))

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


class RepoHandles:
    """Repository handles by name, reused for ``ttl`` seconds instead of a lookup per
    request. A handle outlives its repository by at most ``ttl``: calls on it then fail
    with NotFound (the database checks the id), so a repository deleted and created
    again under the same name answers 404 for at most ``ttl`` seconds. 0 disables."""

    def __init__(
        self, store: Store, ttl: float = 1.0, timer: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.ttl = ttl
        self._timer = timer
        self._handles: dict[str, tuple[float, Repository]] = {}

    def peek(self, name: str) -> Repository | None:
        """The live handle of ``name``, or None (no database trip)."""
        hit = self._handles.get(name)
        if hit is not None and hit[0] > self._timer():
            return hit[1]
        return None

    def get(self, name: str) -> Repository:
        """The handle of ``name`` (NotFound if there is no such repository)."""
        now = self._timer()
        hit = self._handles.get(name)  # dict reads and writes are atomic: no lock
        if hit is not None and hit[0] > now:
            return hit[1]
        repo = self.store.repository(name)
        if self.ttl > 0:
            if len(self._handles) > 10_000:
                self._handles.clear()
            self._handles[name] = (now + self.ttl, repo)
        return repo


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


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def json_response(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A JSON answer of already encoded ``body``."""
    return Response(body, status, headers=headers, media_type="application/json")


def cached_json(
    ctx: Ctx, etag: str, key: tuple[Any, ...], build: Callable[[], Any], immutable: bool
) -> Response:
    """A JSON answer identified by ``etag``: 304 when the client has it, else from the
    response cache or ``build()``, and cached under ``key`` (the fast path's key of the
    answer, which names the commits it came from)."""
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE if immutable else REVALIDATE}
    if matches(ctx.request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    answer: Answer | None = ctx.cache.get(key)
    if answer is None:
        answer = Answer(etag, "application/json", dumps(build()))
        ctx.remember(key, answer)
    return json_response(answer.body, headers=headers)


def signature_json(s: Signature) -> dict[str, Any]:
    """A Signature as JSON."""
    return {"name": s.name, "email": s.email, "time": s.time, "offset": s.offset}


def commit_json(c: CommitInfo) -> dict[str, Any]:
    """The CommitInfo fields as JSON."""
    return {
        "oid": c.oid,
        "tree": c.tree,
        "parents": c.parents,
        "author": signature_json(c.author),
        "committer": signature_json(c.committer),
        "message": c.message,
    }


def entry_json(e: TreeEntry) -> dict[str, Any]:
    """A tree entry as JSON."""
    return {"name": e.name, "path": e.path, "mode": e.mode, "oid": e.oid, "type": e.type}


def change_json(c: Change) -> dict[str, Any]:
    """A diff entry as JSON."""
    return {
        "path": c.path,
        "status": c.status,
        "old_mode": c.old_mode,
        "new_mode": c.new_mode,
        "old_oid": c.old_oid,
        "new_oid": c.new_oid,
    }


def resolve_rev(
    repo: Repository, rev: str, revisions: RevisionMemo | None = None
) -> tuple[str, bool]:
    """``(commit id, immutable)``: immutable when ``rev`` is that full id itself. Other
    revisions are remembered in ``revisions`` (taken before resolving: see
    :class:`~govc_db.http.caching.RevisionMemo`)."""
    if revisions is None or is_full_id(rev):
        oid = repo.resolve(rev)
        return oid, oid == rev
    token = revisions.begin()
    oid = repo.resolve(rev)
    revisions.put(token, repo_id(repo), rev, oid)
    return oid, False

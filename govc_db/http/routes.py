"""The REST routes, as one table (:data:`ENDPOINTS`), and their handlers.

Every handler is a plain function of a :class:`~govc_db.http.context.Ctx` run in the
app's thread pool (the library is synchronous): authentication, the library calls and the
answer are one thread hop. ``raw`` lives in :mod:`govc_db.http.files`. Revisions and
paths in URLs are percent-decoded from the raw path, so a branch ``feature/x`` is written
``feature%2Fx`` in ``tree`` and ``raw`` URLs.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any

from starlette.responses import Response

from govc_db.errors import InvalidInput
from govc_db.http.caching import REVALIDATE, etag_for, is_full_id, matches, repo_id
from govc_db.http.context import (
    Ctx,
    Endpoint,
    cached_json,
    change_json,
    commit_json,
    dumps,
    entry_json,
    json_response,
    resolve_rev,
)
from govc_db.http.files import raw
from govc_db.objects import Signature
from govc_db.types import File

__all__ = ["ENDPOINTS", "LOG_LIMIT_DEFAULT", "LOG_LIMIT_MAX", "log_key", "parse_cursor"]

LOG_LIMIT_DEFAULT = 50
LOG_LIMIT_MAX = 1000


# -- handlers -----------------------------------------------------------------------------


def healthz(ctx: Ctx) -> Response:
    """Liveness: the process answers (the database is not asked)."""
    return json_response(b'{"status":"ok"}')


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
    return json_response(dumps(out))


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
    return json_response(dumps({"name": repo.name, "default_branch": repo.default_branch}), 201)


def _refs(ctx: Ctx, which: str) -> Response:
    repo = ctx.repo()
    refs = repo.branches() if which == "branches" else repo.tags()
    body = dumps(refs)
    etag = etag_for(which, body.decode("utf-8"))
    headers = {"ETag": etag, "Cache-Control": REVALIDATE}
    if matches(ctx.request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return json_response(body, headers=headers)


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
    oid, immutable = ctx.resolve(repo, rev)
    etag = etag_for("commit", repo.name, oid)
    rid = repo_id(repo)
    key = ("commits", rid, oid, "")

    def build() -> Any:
        info = repo.get_commit(oid)
        if ctx.derivations is not None:
            ctx.derivations.learn(rid, info.oid, info.parents)
        return commit_json(info)

    return cached_json(ctx, etag, key, build, immutable)


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


def log_key(rid: int, start: str, path: str, offset: int, limit: int) -> tuple[Any, ...]:
    """The response-cache key of a log page (shared with the fast path)."""
    return ("log", rid, start, path, offset, limit)


def parse_cursor(text: str) -> tuple[str, int]:
    """``(start commit, offset)`` of a log cursor; InvalidInput if malformed."""
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
        start, offset = parse_cursor(cursor)
        start, _ = resolve_rev(repo, start)
        immutable = True
    else:
        start, immutable = ctx.resolve(repo, ctx.query("rev") or "HEAD")
        offset = 0
    etag = etag_for("log", repo.name, start, path or "", str(offset), str(limit))
    rid = repo_id(repo)
    key = log_key(rid, start, path or "", offset, limit)

    def build() -> Any:
        found = list(repo.log(start, path=path, limit=offset + limit + 1))[offset:]
        more = len(found) > limit
        if ctx.derivations is not None:
            for c in found:
                ctx.derivations.learn(rid, c.oid, c.parents)
        return {
            "commits": [commit_json(c) for c in found[:limit]],
            "next": _cursor(start, offset + limit) if more else None,
        }

    return cached_json(ctx, etag, key, build, immutable)


def tree(ctx: Ctx) -> Response:
    """``[{"name","path","mode","oid","type"}]`` of the directory ``{path}`` at ``{rev}``."""
    rest = ctx.rest()
    if not rest or not rest[0]:
        raise InvalidInput("a revision is needed: /tree/{rev}/{path}")
    rev, path = rest[0], "/".join(rest[1:]).strip("/")
    repo = ctx.repo()
    oid, immutable = ctx.resolve(repo, rev)
    etag = etag_for("tree", repo.name, oid, path)
    key = ("tree", repo_id(repo), oid, path)
    return cached_json(
        ctx, etag, key, lambda: [entry_json(e) for e in repo.tree(oid, path)], immutable
    )


def diff(ctx: Ctx) -> Response:
    """``[{"path","status","old_mode","new_mode","old_oid","new_oid"}]`` from ``from`` to ``to``."""
    old, new = ctx.query("from"), ctx.query("to")
    if not old or not new:
        raise InvalidInput("from and to are required")
    repo = ctx.repo()
    a, imm_a = ctx.resolve(repo, old)
    b, imm_b = ctx.resolve(repo, new)
    etag = etag_for("diff", repo.name, a, b)
    key = ("diff", repo_id(repo), a, b)
    return cached_json(
        ctx, etag, key, lambda: [change_json(c) for c in repo.diff(a, b)], imm_a and imm_b
    )


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
    repo = ctx.repo()
    changes = _changes(data.get("changes"))
    oid = repo.commit(
        branch,
        changes,
        message=message,
        author=author,
        committer=committer,
        expected_head=expected,
    )
    if ctx.derivations is not None:
        # The parent is the branch's old target in this commit's ref move (an event of
        # this Store), else learnt when the commit is next read (commits/{rev}, log):
        # reading it back here would cost every commit a read transaction.
        ctx.derivations.note(
            repo_id(repo), oid, frozenset(changes), (repo.name, "refs/heads/" + branch)
        )
    return json_response(dumps({"oid": oid}), 201)


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

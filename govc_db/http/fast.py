"""The fast path (ASGI middleware): ``GET`` answers the process already holds, sent from
the event loop without a thread hop, a database trip or Starlette's request machinery.

It answers ``raw``, ``tree``, ``commits/{rev}`` and ``log`` requests when everything is
in memory, and passes every other request (and every miss) to the app behind it, which
answers as it always does -- and records what this path may reuse:

* **Answers** (:class:`Answer`: ETag, content type, body, and its compressed forms) are
  kept in the response cache under the commit they were computed from, so they never
  change: ``("raw", repo id, commit, path)``, ``("tree", ...)``, ``("commit", ...)``,
  ``("log", ...)``. Keys carry the repository's id, so a repository deleted and created
  again under the same name never gets its predecessor's answers.
* **Answers a commit did not change** (:class:`~govc_db.http.caching.Derivations`):
  a commit made through this service is remembered with its parent and the paths it
  changed; a ``raw`` or ``tree`` answer of a path it did not touch is the parent's.
* **What a revision resolved to** (:class:`RevisionMemo`): ``(repo id, rev) -> commit``
  for revisions that are not full ids (branches, tags, ``HEAD``, ``main~1`` ...). An
  entry is used only while the Store's query cache has seen no invalidation of that
  repository, nor a flush, since the revision was resolved (its token), its refs are
  usable now (on PostgreSQL the NOTIFY listener is connected), and ``cache_ref_ttl``
  has not passed; on SQLite the ``PRAGMA data_version`` check runs first. So a commit
  through this service, another Store of this process, or another process (NOTIFY on
  PostgreSQL, ``data_version`` on SQLite, which flushes every repository's) makes every
  remembered revision of the repository unusable at once, and the next request
  resolves again -- the staleness bound is the query cache's (see
  :mod:`govc_db.db.cache`). A full commit id needs no memo: an answer
  stored under it was computed from that very commit.

A revision not known now (a write moved something since) is resolved once in the
thread pool, however many requests ask for it meanwhile: they all wait for that one
resolution and then answer from memory, instead of each taking the slow way; if it
fails, they all answer its error (as the slow path would, without asking again).

Before answering, the fast path applies what the slow path would: the bearer token must
be one verified recently (:meth:`TokenAuth.known`; anything else goes the slow way,
which answers 401/403), the access rules, and the rate limiter of the Store (the same
buckets as the library's calls; a refusal is the same 429). Conditional GETs are
answered with 304 from the remembered ETag. ``Range`` requests go the slow way.
Compression follows :mod:`govc_db.http.compression` (same types, threshold, encodings,
weak ETags); each encoded form is computed once per answer.

Off with ``create_app(..., fast_path=False)``.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote

from starlette.types import ASGIApp, Receive, Scope, Send

from govc_db.api.repository import Repository
from govc_db.errors import GovcError, RateLimited
from govc_db.http.auth import TokenAuth
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
)
from govc_db.http.compression import _accepted, available_encodings, compressible
from govc_db.http.context import RepoHandles
from govc_db.http.errors import error_response
from govc_db.middleware.caller import caller

__all__ = ["FastPath"]

_PREFIX = "/api/v1/repos/"
_KINDS = frozenset({"raw", "tree", "commits", "log"})
_IMMUTABLE = IMMUTABLE.encode()
_REVALIDATE = REVALIDATE.encode()
#: The body message of every 304 (servers only read the messages they are sent).
_EMPTY_BODY: dict[str, Any] = {"type": "http.response.body", "body": b""}


class _Unknown(Exception):
    """Internal: the revision memo does not know ``rev`` now (it must be resolved)."""

    def __init__(self, rev: str) -> None:
        super().__init__(rev)
        self.rev = rev


def _state(scope: Scope) -> dict[str, Any]:
    state: dict[str, Any] | None = scope.get("state")
    if state is None:
        state = scope["state"] = {}
    return state


class _Target(NamedTuple):
    """The repository a request addresses and who asks (the rate limiter's caller)."""

    repo: Repository
    rid: int
    caller: str


def _headers(scope: Scope) -> dict[bytes, bytes]:
    # The few request headers this path reads; the first of a repeated one, as
    # Starlette's Headers.get() reads it.
    out: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name not in out:
            out[name] = value
    return out


class FastPath:
    """Answers remembered ``GET`` requests; passes everything else to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        auth: TokenAuth,
        handles: RepoHandles,
        cache: ResponseCache,
        revisions: RevisionMemo,
        derivations: Derivations | None = None,
        rate_limiter: Any = None,
        compress_min_size: int = 1024,
        pool: Executor | None = None,
    ) -> None:
        self.app = app
        self.auth = auth
        self.handles = handles
        self.cache = cache
        self.revisions = revisions
        self.derivations = derivations
        self.rate_limiter = rate_limiter
        self.compress_min_size = compress_min_size
        self.encodings = available_encodings()
        self.pool = pool
        self._pending: dict[tuple[int, str], asyncio.Future[None]] = {}
        # SQLite's data_version check made in this pass of the event loop (see _fresh).
        self._checked = False
        self._watched = revisions.watched
        self.resolves = 0
        self.checks = 0  # SQLite data_version checks (one per event-loop pass at most)
        self.answered = 0
        self.passed = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and scope["path"].startswith(_PREFIX)
            and await self._answer(scope, send)
        ):
            return
        self.passed += 1
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, send: Send) -> bool:
        raw_path = scope.get("raw_path")
        text = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else scope["path"]
        segments = text.split("?", 1)[0].split("/")
        # ['', 'api', 'v1', 'repos', '<repo>', '<kind>', ...rest]
        if len(segments) < 6 or segments[5] not in _KINDS:
            return False
        headers = _headers(scope)
        if b"range" in headers:
            return False
        name = segments[4]
        if "%" in name:
            name = unquote(name)
        repo = self.handles.peek(name)
        if repo is None:
            return False
        identity = self.auth.known_header(headers.get(b"authorization"))
        if identity is None or not self.auth.allowed(identity, name, False):
            return False
        if identity.token_id is None:
            who = "anonymous"
            client = scope.get("client")
            key = f"ip:{client[0] if client else '?'}"
        else:
            who = key = f"token:{identity.token_id}"
        target = _Target(repo, repo.id, key)
        kind, rest = segments[5], segments[6:]
        try:
            try:
                found = self._lookup(target, kind, rest, scope)
            except _Unknown as unknown:
                # Not known now (a write moved something since): resolved once in the
                # pool, then looked up again (the slow path decides if it moved again).
                if not await self._resolve(target, unknown.rev):
                    return False
                try:
                    found = self._lookup(target, kind, rest, scope)
                except _Unknown:
                    return False
        except GovcError as exc:
            # The revision did not resolve (unknown, malformed, database down): the
            # answer the slow path would give, without asking the library again.
            _state(scope)["govc_who"] = who
            await error_response(exc)(scope, _no_body, send)
            return True
        if found is None:
            return False
        answer, immutable = found
        _state(scope)["govc_who"] = who
        self.answered += 1  # before sending: a client reading metrics next sees it
        if self.rate_limiter is not None:
            try:
                self.rate_limiter.take(key, name)
            except RateLimited as exc:
                await error_response(exc)(scope, _no_body, send)
                return True
        start, body = self._messages(answer, immutable, headers)
        await send(start)
        await send(body)
        return True

    def _lookup(
        self, target: _Target, kind: str, rest: list[str], scope: Scope
    ) -> tuple[Answer, bool] | None:
        """The remembered answer, or None; ``_Unknown`` when a revision must be resolved."""
        rid = target.rid
        if kind == "log":
            return self._lookup_log(target, scope)
        parts = [unquote(s, errors="surrogateescape") if "%" in s else s for s in rest]
        if not parts or not parts[0]:
            return None
        if kind == "raw":
            if len(parts) < 2:
                return None
            rev, tail = parts[0], "/".join(parts[1:])
        elif kind == "tree":
            rev, tail = parts[0], "/".join(parts[1:]).strip("/")
        else:  # commits/{rev}
            rev, tail = "/".join(parts), ""
        commit, immutable = self._known(target, rev)
        key: tuple[Any, ...] = (kind, rid, commit, tail)
        answer: Answer | None = self.cache.get(key)
        if answer is None and kind != "commits" and self.derivations is not None:
            answer = self.derivations.find(self.cache, kind, rid, commit, tail)
            if answer is not None:
                self.cache.put(key, answer, ANSWER_OVERHEAD + len(answer.body))
        return None if answer is None else (answer, immutable)

    def _lookup_log(self, target: _Target, scope: Scope) -> tuple[Answer, bool] | None:
        from govc_db.http.routes import LOG_LIMIT_DEFAULT, LOG_LIMIT_MAX, log_key, parse_cursor

        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), True))
        limit_text = query.get("limit")
        if limit_text is None or limit_text == "":
            limit = LOG_LIMIT_DEFAULT
        elif limit_text.isdigit() and int(limit_text) <= LOG_LIMIT_MAX:
            limit = int(limit_text)
        else:
            return None
        cursor = query.get("cursor")
        if cursor:
            try:
                start, offset = parse_cursor(cursor)
            except ValueError:
                return None
            immutable = True
        else:
            start, immutable = self._known(target, query.get("rev") or "HEAD")
            offset = 0
        answer: Answer | None = self.cache.get(
            log_key(target.rid, start, query.get("path") or "", offset, limit)
        )
        return None if answer is None else (answer, immutable)

    def _fresh(self) -> None:
        """SQLite's ``data_version`` check, once per pass of the event loop.

        Every request handled in a pass arrived before the pass began: asyncio runs in
        one pass only the callbacks ready when it started, and a request's handler is
        scheduled by the callback that read it. So a check made during the pass, after
        all of them arrived, is as fresh for each of them as a check of its own: the
        answer reflects every commit that finished before the request came. The flag is
        cleared by a callback scheduled now, which runs in the next pass, after the
        handlers scheduled before it (requests that came before this check) and before
        those scheduled after it."""
        if self._checked:
            return
        self.revisions.refresh()
        self.checks += 1
        self._checked = True
        asyncio.get_running_loop().call_soon(self._uncheck)

    def _uncheck(self) -> None:
        self._checked = False

    def _known(self, target: _Target, rev: str) -> tuple[str, bool]:
        """The commit ``rev`` names now and whether the answer is immutable (a full id);
        ``_Unknown`` when the memo does not know it now."""
        if is_full_id(rev):
            return rev, True
        if self._watched:
            self._fresh()
        found = self.revisions.get(target.rid, rev, refresh=False)
        if found is None:
            raise _Unknown(rev)
        return found, False

    async def _resolve(self, target: _Target, rev: str) -> bool:
        """Resolve ``rev`` in the pool, once however many requests ask meanwhile; False
        when nothing can be remembered (the slow path resolves) or the resolution failed
        for a reason that is not the request's (the slow path decides)."""
        if self.pool is None or self.revisions.begin() is None:
            return False
        key = (target.rid, rev)
        pending = self._pending.get(key)
        if pending is None:
            loop = asyncio.get_running_loop()
            pending = loop.run_in_executor(self.pool, self._resolve_now, target, rev)
            self._pending[key] = pending
            pending.add_done_callback(lambda done: self._forget(key, done))
            self.resolves += 1
        try:
            await asyncio.shield(pending)
        except RateLimited:  # the first asker's bucket, not necessarily this one's
            return False
        except GovcError:
            raise
        except Exception:  # not a library error: the slow path decides
            return False
        return True

    def _forget(self, key: tuple[int, str], done: asyncio.Future[None]) -> None:
        if self._pending.get(key) is done:
            del self._pending[key]

    def _resolve_now(self, target: _Target, rev: str) -> None:
        with caller(target.caller):
            token = self.revisions.begin()
            commit = target.repo.resolve(rev)
            self.revisions.put(token, target.rid, rev, commit)

    def _messages(
        self, answer: Answer, immutable: bool, request: dict[bytes, bytes]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The two ASGI messages of the answer: 304 when ``If-None-Match`` matches."""
        etag = answer.etag_header
        cache_control = _IMMUTABLE if immutable else _REVALIDATE
        inm = request.get(b"if-none-match")
        # (The commonest If-None-Match is the ETag itself: compared before parsing.)
        if inm is not None and (inm == etag or matches(inm.decode("latin-1"), answer.etag)):
            return answer.not_modified[immutable], _EMPTY_BODY
        body = answer.body
        encoding = self._encoding(answer, request.get(b"accept-encoding"))
        out = [(b"content-type", answer.content_type_header)]
        if encoding is not None:
            body = answer.encoded.get(encoding) or self._encode(answer, encoding)
            out += [
                (b"etag", b"W/" + etag),
                (b"content-encoding", encoding.encode()),
                (b"vary", b"Accept-Encoding"),
            ]
        else:
            out.append((b"etag", etag))
        out += [(b"cache-control", cache_control), (b"content-length", b"%d" % len(body))]
        if answer.raw:
            out.append((b"accept-ranges", b"bytes"))
        return (
            {"type": "http.response.start", "status": 200, "headers": out},
            {"type": "http.response.body", "body": body},
        )

    def _encoding(self, answer: Answer, accept: bytes | None) -> str | None:
        if not accept or len(answer.body) < self.compress_min_size:
            return None
        if not compressible(answer.content_type):
            return None
        accepted = _accepted(accept.decode("latin-1"))
        return next((name for name in self.encodings if name in accepted), None)

    def _encode(self, answer: Answer, encoding: str) -> bytes:
        encoder = self.encodings[encoding]()
        data = encoder.compress(answer.body) + encoder.flush()
        answer.encoded[encoding] = data  # one writer wins; both values are equal
        return data

    def get_stats(self) -> dict[str, Any]:
        """Requests answered here and passed on; revision memo hits and misses;
        resolutions run in the pool; SQLite ``data_version`` checks made."""
        return {
            "answered": self.answered,
            "passed": self.passed,
            "revision_hits": self.revisions.hits,
            "revision_misses": self.revisions.misses,
            "resolves": self.resolves,
            "data_version_checks": self.checks,
            "carried": 0 if self.derivations is None else self.derivations.carried,
        }


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}

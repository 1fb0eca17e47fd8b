"""``create_app(store, ...)``: the ASGI application of the HTTP service.

The stack, outermost first (data, as in starlette): request log -> git smart-HTTP
dispatch (``/<name>.git/...``, when :mod:`govc_db.interop.smart_http` exists) -> the
fast path (remembered GETs answered on the event loop, :mod:`govc_db.http.fast`) ->
compression -> the router built from :data:`~govc_db.http.routes.ENDPOINTS`, each
endpoint wrapped with authentication and authorization and run in the thread pool.
Errors become JSON answers (:mod:`govc_db.http.errors`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from govc_db.api.store import Store
from govc_db.http.access import AccessLogMiddleware
from govc_db.http.auth import TokenAuth
from govc_db.http.caching import Derivations, ResponseCache, RevisionMemo
from govc_db.http.compression import CompressionMiddleware
from govc_db.http.context import Ctx, Endpoint, RepoHandles
from govc_db.http.errors import error_response, handle_error
from govc_db.http.fast import FastPath
from govc_db.http.routes import ENDPOINTS
from govc_db.middleware.caller import caller
from govc_db.middleware.ratelimit import RateLimitMiddleware

__all__ = ["create_app"]

_GIT_PATH = re.compile(r"^/[A-Za-z0-9._-]+\.git(/|$)")


def _metrics_renderer(store: Store) -> Callable[[], bytes]:
    try:
        from prometheus_client import CollectorRegistry, generate_latest

        from govc_db.perf.prometheus import StoreCollector
    except ImportError:  # pragma: no cover - prometheus_client is in the http extra

        def missing() -> bytes:
            return b"# prometheus_client is not installed\n"

        return missing
    registry = CollectorRegistry(auto_describe=False)
    StoreCollector(store, registry=registry)

    def render() -> bytes:
        return bytes(generate_latest(registry))

    return render


def _route(
    ep: Endpoint,
    store: Store,
    auth: TokenAuth,
    cache: ResponseCache,
    metrics: Callable[[], bytes],
    pool: ThreadPoolExecutor,
    handles: RepoHandles,
    revisions: RevisionMemo,
    derived: Derivations | None,
) -> Route:
    write = ep.access == "write"

    async def endpoint(request: Request) -> Response:
        body = await request.body() if ep.method == "POST" else b""

        def work() -> Response:
            identity = auth.identify(request.headers.get("authorization"))
            who = "anonymous" if identity.token_id is None else f"token:{identity.token_id}"
            request.scope.setdefault("state", {})["govc_who"] = who
            if ep.access == "token":
                if identity.token_id is None:
                    auth.check(identity, None, False)  # 401 unless public_read
            elif ep.access != "public":
                # POST /api/v1/repos names its repository in the body.
                repo = request.path_params.get("repo") or (_posted_name(body) if write else None)
                auth.check(identity, repo, write)
            client = request.client.host if request.client else "unknown"
            with caller(who if identity.token_id is not None else f"ip:{client}"):
                ctx = Ctx(
                    request, body, store, identity, cache, metrics, handles, revisions, derived
                )
                return ep.handler(ctx)

        try:
            return await asyncio.get_running_loop().run_in_executor(pool, work)
        except Exception as exc:
            return error_response(exc)

    return Route(ep.path, endpoint, methods=[ep.method], name=ep.handler.__name__)


def _posted_name(body: bytes) -> str | None:
    import json

    try:
        value = json.loads(body)
    except ValueError:
        return None
    name = value.get("name") if isinstance(value, dict) else None
    return name if isinstance(name, str) else None


class _GitDispatch:
    """Sends ``/<name>.git/...`` to git's smart-HTTP app, everything else to the API."""

    def __init__(self, api: ASGIApp, git: ASGIApp | None) -> None:
        self.api = api
        self.git = git

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.git is not None and scope["type"] == "http" and _GIT_PATH.match(scope["path"]):
            await self.git(scope, receive, send)
        else:
            await self.api(scope, receive, send)


def _git_app(store: Store, auth: TokenAuth, allow_push: bool) -> ASGIApp | None:
    try:
        from govc_db.interop.smart_http import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
            make_git_app,
        )
    except ImportError:
        return None

    def check_access(scope: dict[str, Any], repo_name: str, write: bool) -> int | None:
        return auth.check_access(Headers(scope=scope).get("authorization"), repo_name, write)

    app: ASGIApp = make_git_app(store, allow_push=allow_push, check_access=check_access)
    return app


def create_app(
    store: Store,
    *,
    public_read: bool = False,
    allow_push: bool = False,
    cache_bytes: int = 32 * 1024 * 1024,
    token_ttl: float = 30.0,
    compress_min_size: int = 1024,
    threads: int | None = None,
    write_threads: int = 16,
    repo_ttl: float = 1.0,
    close_store: bool = False,
    fast_path: bool = True,
) -> ASGIApp:
    """The HTTP service for ``store``.

    ``public_read``: anonymous reads allowed (writes always need a write token).
    ``allow_push``: git pushes accepted (with a write token) on the smart-HTTP routes.
    ``cache_bytes``: bound of the response cache of immutable answers. ``token_ttl``:
    seconds a verified token is remembered. ``compress_min_size``: smallest answer
    compressed. ``threads``: worker threads running the (synchronous) library calls of
    reads (default: as many as the Store's connection pool opens at most, ``pool_size +
    max_overflow``: more would only wait for a connection, or open and close overflow
    connections, while taking turns for the GIL); ``write_threads``: those of writes (a
    pool of their own, so commits waiting for their branch never hold the threads reads
    need; commits queued together are written as one group, on one connection).
    ``repo_ttl``: seconds a repository handle is reused (see
    :class:`~govc_db.http.context.RepoHandles`). ``close_store``: close the store when
    the server shuts down. ``fast_path``: answer remembered GETs on the event loop
    (:mod:`govc_db.http.fast`).
    """
    auth = TokenAuth(store, public_read=public_read, ttl=token_ttl)
    cache = ResponseCache(cache_bytes)
    store.perf.unregister("http_cache")  # the newest app of this store reports
    store.perf.register("http_cache", cache)
    metrics = _metrics_renderer(store)
    # The library is synchronous: each request runs in this pool (one hop). A plain
    # executor costs less per hop than anyio's worker threads.
    if threads is None:
        threads = store.settings.pool_size + store.settings.max_overflow
    pool = ThreadPoolExecutor(threads, thread_name_prefix="govc_db-http")
    writes = ThreadPoolExecutor(write_threads, thread_name_prefix="govc_db-http-write")
    handles = RepoHandles(store, repo_ttl)
    revisions = RevisionMemo(store.cache)
    derived = Derivations() if fast_path else None
    moves = store.subscribe(derived.moved) if derived is not None else None
    routes = [
        _route(
            ep,
            store,
            auth,
            cache,
            metrics,
            writes if ep.method == "POST" else pool,
            handles,
            revisions,
            derived,
        )
        for ep in ENDPOINTS
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            pool.shutdown(wait=True)
            writes.shutdown(wait=True)
            if moves is not None:
                moves.close()
            if close_store:
                store.close()

    api = Starlette(routes=routes, exception_handlers={Exception: handle_error}, lifespan=lifespan)
    stack: ASGIApp = CompressionMiddleware(api, minimum_size=compress_min_size)
    store.perf.unregister("http_fast")
    if fast_path:
        limiter = store.perf.components().get("ratelimit")
        fast = FastPath(
            stack,
            auth=auth,
            handles=handles,
            cache=cache,
            revisions=revisions,
            derivations=derived,
            rate_limiter=limiter if isinstance(limiter, RateLimitMiddleware) else None,
            compress_min_size=compress_min_size,
            pool=pool,
        )
        store.perf.register("http_fast", fast)
        stack = fast
    stack = _GitDispatch(stack, _git_app(store, auth, allow_push))
    return AccessLogMiddleware(stack)

"""git's smart-HTTP protocol (v0/v1) as an ASGI application: ``git clone``, ``fetch``,
``ls-remote`` and ``push`` against ``http://HOST:PORT/<name>.git``.

Protocol: dulwich's upload-pack and receive-pack handlers (a maintained implementation of
the wire protocol, its negotiation, shallow and side-band), run on the repository adapter
of :mod:`govc_db.interop.adapter` and the push path of :mod:`govc_db.interop.receive`.
dulwich's handlers are synchronous: each request runs its handler on a worker thread,
which pulls the request body from the event loop chunk by chunk (gunzipped when git sends
``Content-Encoding: gzip``) and pushes the response back in ~256 KiB pieces, so neither a
pushed pack nor a cloned one is ever held whole in memory by this layer.

``make_git_app(store)`` serves every repository of ``store``; pushing is refused unless
``allow_push``. ``check_access(scope, repository, write)`` (the HTTP service's auth)
returns None to allow, or the HTTP status (401/403) to answer.
"""

from __future__ import annotations

import asyncio
import logging
import re
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast
from urllib.parse import parse_qs

from dulwich.errors import GitProtocolError, HangupException
from dulwich.protocol import CAPABILITY_NO_DONE, CAPABILITY_OFS_DELTA, ReceivableProtocol, pkt_line
from dulwich.server import UploadPackHandler, _ProtocolGraphWalker

from govc_db.api.repository import Repository
from govc_db.api.store import Store
from govc_db.errors import GovcError, NotFound
from govc_db.interop.adapter import GovcBackendRepo
from govc_db.interop.packcache import PackCache
from govc_db.interop.receive import GovcReceivePackHandler

__all__ = ["make_git_app"]

log = logging.getLogger("govc_db.interop")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
CheckAccess = Callable[[dict[str, Any], str, bool], int | None]

_ROUTE = re.compile(
    r"/([A-Za-z0-9_-][A-Za-z0-9._-]{0,99})\.git/(info/refs|git-upload-pack|git-receive-pack)"
)
_SERVICES = ("git-upload-pack", "git-receive-pack")
#: Response bytes the worker thread hands to the event loop at a time. Each hand-off
#: blocks the worker until the loop has sent it: measured on a 4.4 MB clone pack (load
#: 3.3), the worker waited 0.08-0.10 s over 53 hand-offs of 64 KiB, 0.05-0.07 s over 20
#: of 256 KiB.
_FLUSH_AT = 256 * 1024


class _Disconnected(HangupException):
    """The client went away mid-request."""


class GovcUploadPackHandler(UploadPackHandler):
    """dulwich's upload-pack (ref advertisement, negotiation, shallow, side-band) without
    partial-clone filters, the pack written by :mod:`govc_db.interop.sendpack` from the
    plan of :meth:`GovcBackendRepo.find_missing_objects` instead of by dulwich's writer.
    """

    def capabilities(self) -> list[bytes]:
        """The upload-pack capabilities of dulwich, ``filter`` left out."""
        return [c for c in super().capabilities() if c != b"filter"]

    def handle(self) -> None:
        """As dulwich's ``UploadPackHandler.handle`` up to the pack, then our writer."""
        self._processing_have_lines = True
        repo = cast(GovcBackendRepo, self.repo)
        graph_walker = _ProtocolGraphWalker(
            self, cast(Any, repo.object_store), repo.get_peeled, repo.refs.get_symrefs
        )
        wants: list[Any] = []

        def wants_wrapper(refs: Any, depth: int | None = None) -> list[Any]:
            wants.extend(graph_walker.determine_wants(refs, depth))
            return wants

        missing = repo.find_missing_objects(
            wants_wrapper,
            graph_walker,
            self.progress,
            get_tagged=self.get_tagged,
            ofs=lambda: self.has_capability(CAPABILITY_OFS_DELTA),
        )
        if not wants or missing is None:
            return
        if not graph_walker.handle_done(
            not self.has_capability(CAPABILITY_NO_DONE), self._done_received
        ):
            return
        self._start_pack_send_phase()
        self.progress(b"counting objects: %d, done.\n" % missing)
        repo.write_pack(self.write_pack_data)
        self.proto.write_pkt_line(None)


class _Backend:
    """dulwich's ``Backend``: hands out the one repository view of this request."""

    def __init__(self, view: Any, repository: Repository) -> None:
        self._view = view
        self.govc_repository = repository

    def open_repository(self, path: str) -> Any:
        return self._view


class _RefsOnly:
    """What receive-pack's POST needs of the repository view (refs are not re-sent)."""

    def __init__(self, repository: Repository) -> None:
        from dulwich.object_format import DEFAULT_OBJECT_FORMAT

        self.object_format = DEFAULT_OBJECT_FORMAT
        self.govc_repository = repository
        self.hooks: dict[str, Any] = {}  # no server-side hooks

    def get_refs(self) -> dict[bytes, bytes]:
        return {}


class _Bridge:
    """Blocking ``read``/``write`` for the worker thread over the ASGI receive/send."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        receive: Receive,
        send: Send,
        content_type: str,
        gzipped: bool,
    ) -> None:
        self._loop = loop
        self._receive = receive
        self._send = send
        self._content_type = content_type
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None
        self._in = bytearray()
        self._eof = False
        self._out = bytearray()
        self.started = False

    def _call(self, coro: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()  # type: ignore[arg-type]

    def read(self, n: int = -1) -> bytes:
        while not self._eof and (n < 0 or len(self._in) < n):
            message = self._call(self._receive())
            if message["type"] == "http.disconnect":
                raise _Disconnected()
            body = message.get("body", b"")
            if self._inflate is not None:
                try:
                    body = self._inflate.decompress(body)
                    if not message.get("more_body", False):
                        body += self._inflate.flush()
                except zlib.error:
                    raise GitProtocolError("request body is not valid gzip") from None
            self._in += body
            if not message.get("more_body", False):
                self._eof = True
        if n < 0:
            n = len(self._in)
        out = bytes(self._in[:n])
        del self._in[:n]
        return out

    def write(self, data: bytes) -> int:
        self._out += data
        if len(self._out) >= _FLUSH_AT:
            self.flush()
        return len(data)

    def flush(self, *, more: bool = True) -> None:
        if not self.started:
            self.started = True
            self._call(
                self._send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [
                            (b"content-type", self._content_type.encode()),
                            (b"cache-control", b"no-cache, max-age=0, must-revalidate"),
                        ],
                    }
                )
            )
        if self._out or not more:
            body, self._out = bytes(self._out), bytearray()
            self._call(self._send({"type": "http.response.body", "body": body, "more_body": more}))


async def _plain(
    send: Send, status: int, text: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": text.encode() + b"\n"})


def _route_path(scope: Scope) -> str:
    """The request path below where the app is mounted (Starlette's ``Mount`` keeps the
    full ``path`` and sets ``root_path``)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root + "/"):
        return path[len(root) :]
    return path


def _serve(
    repo: Repository, service: str, advertise: bool, bridge: _Bridge, cache: PackCache
) -> None:
    """The worker thread: one dulwich handler over a repository view."""
    proto = ReceivableProtocol(bridge.read, bridge.write)
    if advertise:
        bridge.write(pkt_line(b"# service=" + service.encode() + b"\n") + pkt_line(None))
    backend = repo._store.backend
    if service == "git-receive-pack" and not advertise:
        only = _Backend(_RefsOnly(repo), repo)
        GovcReceivePackHandler(only, [repo.name], proto, stateless_rpc=True).handle()
        return
    with backend.unit(repo._id, write=False, what=service) as unit:
        settings = repo._store.settings
        view = GovcBackendRepo(
            unit,
            repo.default_branch,
            deltas=settings.fetch_deltas,
            max_depth=settings.fetch_delta_depth,
            pack_cache=cache,
        )
        handler_cls: Any = (
            GovcUploadPackHandler if service == "git-upload-pack" else GovcReceivePackHandler
        )
        handler_cls(
            _Backend(view, repo), [repo.name], proto, stateless_rpc=True, advertise_refs=advertise
        ).handle()


def make_git_app(
    store: Store,
    *,
    allow_push: bool = False,
    check_access: CheckAccess | None = None,
    pack_cache: PackCache | None = None,
) -> ASGIApp:
    """An ASGI app serving git's smart HTTP for every repository of ``store``.

    ``pack_cache``: where the packs of whole-history clones are kept for the next clone
    (:mod:`govc_db.interop.packcache`); by default one of its own, sized by
    ``Settings.clone_pack_cache_bytes``.
    """
    pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="govc-git")
    cache = pack_cache or PackCache(store.settings.clone_pack_cache_bytes)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    pool.shutdown(wait=False)
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        m = _ROUTE.fullmatch(_route_path(scope))
        if m is None:
            await _plain(send, 404, "not found")
            return
        name, what = m.group(1), m.group(2)
        method = scope.get("method", "GET")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if what == "info/refs":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            service = query.get("service", [""])[0]
            if method not in ("GET", "HEAD"):
                await _plain(send, 405, "method not allowed")
                return
            if service not in _SERVICES:
                await _plain(send, 403, "only git's smart HTTP protocol is served")
                return
            advertise = True
            content_type = f"application/x-{service}-advertisement"
        else:
            service, advertise = what, False
            if method != "POST":
                await _plain(send, 405, "method not allowed")
                return
            if headers.get("content-type") != f"application/x-{service}-request":
                await _plain(send, 415, "unexpected content type")
                return
            content_type = f"application/x-{service}-result"
        write = service == "git-receive-pack"
        if check_access is not None:
            denied = check_access(dict(scope), name, write)
            if denied is not None:
                extra = [(b"www-authenticate", b'Basic realm="govc-db"')] if denied == 401 else []
                await _plain(
                    send, denied, "authentication required" if denied == 401 else "forbidden", extra
                )
                return
        if write and not allow_push:
            await _plain(send, 403, "pushing is disabled on this server")
            return
        loop = asyncio.get_running_loop()
        try:
            repo = await loop.run_in_executor(pool, store.repository, name)
        except NotFound:
            await _plain(send, 404, f"repository {name!r} not found")
            return
        except GovcError:
            await _plain(send, 503, "store unavailable")
            return
        bridge = _Bridge(
            loop, receive, send, content_type, headers.get("content-encoding") == "gzip"
        )

        def run() -> None:
            _serve(repo, service, advertise, bridge, cache)
            bridge.flush(more=False)

        try:
            await loop.run_in_executor(pool, run)
        except _Disconnected:
            log.info("git %s of %s: client disconnected", service, name)
        except Exception as exc:  # the boundary: nothing but a short text leaves
            text = str(exc) if isinstance(exc, GovcError | GitProtocolError) else type(exc).__name__
            log.warning("git %s of %s failed: %s", service, name, text)
            if not isinstance(exc, GovcError | GitProtocolError | HangupException):
                log.debug("git %s of %s failed", service, name, exc_info=True)
            if not bridge.started:
                await _plain(send, 400 if isinstance(exc, GitProtocolError) else 500, text)
            else:
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app

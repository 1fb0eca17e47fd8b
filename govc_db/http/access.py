"""Request logging (ASGI middleware): one line per request on ``govc_db.http.access``.

Method, path (no query string), status, bytes sent, milliseconds and who: the token
id or ``anonymous``. Never a header, a token, a query string or a body.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["AccessLogMiddleware"]

log = logging.getLogger("govc_db.http.access")


class AccessLogMiddleware:
    """Logs each HTTP request once its answer is complete (or failed)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http" or not log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0
        sent = 0

        async def on_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, on_send)
        finally:
            who = scope.get("state", {}).get("govc_who", "anonymous")
            log.info(
                "%s %s %d %dB %.1fms %s",
                scope["method"],
                scope["path"],
                status or 500,
                sent,
                (time.perf_counter() - start) * 1000,
                who,
            )

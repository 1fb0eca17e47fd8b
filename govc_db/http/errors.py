"""Errors as HTTP answers: ``{"error": "<GovcError subclass>", "message": "..."}``.

The status comes from the first class of the error's MRO found in :data:`STATUS`.
Anything that is not a GovcError is a 500 with a fixed message: no traceback, SQL or
secret ever reaches a response (the log gets the exception type only).
"""

from __future__ import annotations

import logging
import math

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from govc_db.errors import (
    AlreadyExists,
    Forbidden,
    GovcError,
    InvalidInput,
    MergeConflict,
    NotFound,
    RateLimited,
    RefConflict,
    StoreUnavailable,
    Unauthenticated,
)

__all__ = ["STATUS", "error_response", "handle_error"]

log = logging.getLogger("govc_db.http")

STATUS: dict[type[GovcError], int] = {
    InvalidInput: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    AlreadyExists: 409,
    RefConflict: 409,
    MergeConflict: 409,
    RateLimited: 429,
    StoreUnavailable: 503,
}


def error_response(exc: BaseException) -> Response:
    """The JSON answer for ``exc``."""
    if not isinstance(exc, GovcError):
        log.error("unhandled %s while answering a request", type(exc).__name__)
        return JSONResponse({"error": "InternalError", "message": "internal error"}, 500)
    status = next((STATUS[c] for c in type(exc).__mro__ if c in STATUS), 500)
    headers: dict[str, str] = {}
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, int | float) and status in (429, 503):
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="govc_db"'
    message = str(exc) if status != 500 else "internal error"
    return JSONResponse({"error": type(exc).__name__, "message": message}, status, headers=headers)


async def handle_error(request: Request, exc: Exception) -> Response:
    """Starlette exception handler (registered for ``Exception``)."""
    return error_response(exc)

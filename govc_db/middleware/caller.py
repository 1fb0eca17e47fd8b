"""Who is calling: the identity the rate limiter keys its buckets by.

Library calls run as ``"library"`` unless wrapped in ``with govc_db.caller("id"):``; the
HTTP service sets it per request (the token's id, or the client address when anonymous).
A :class:`contextvars.ContextVar`, so it follows threads started with a copied context
(``store.map`` does that) and asyncio tasks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from govc_db.errors import InvalidInput

__all__ = ["DEFAULT_CALLER", "caller", "current_caller"]

DEFAULT_CALLER = "library"

_CALLER: ContextVar[str] = ContextVar("govc_db_caller", default=DEFAULT_CALLER)


@contextmanager
def caller(identity: str) -> Iterator[str]:
    """Run the calls of the ``with`` block as ``identity`` (1-200 characters)."""
    if not isinstance(identity, str) or not 0 < len(identity) <= 200:
        raise InvalidInput("caller identity must be a str of 1 to 200 characters")
    token = _CALLER.set(identity)
    try:
        yield identity
    finally:
        _CALLER.reset(token)


def current_caller() -> str:
    """The identity calls made here run as."""
    return _CALLER.get()

"""The HTTP service: ``create_app(store, ...)`` (Starlette), run by ``govc-db serve``.

``create_app`` is imported on first use, so the ``govc-db`` command (which registers
``serve`` from :mod:`govc_db.http.cli`) starts without loading Starlette.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from govc_db.http.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from govc_db.http.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

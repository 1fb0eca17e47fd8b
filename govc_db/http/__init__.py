"""The HTTP service: ``create_app(store, ...)`` (Starlette), run by ``govc-db serve``."""

from govc_db.http.app import create_app

__all__ = ["create_app"]

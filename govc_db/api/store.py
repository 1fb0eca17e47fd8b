"""The Store: one database, many repositories; the entry point of the library."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from sqlalchemy.engine import URL

from govc_db.db.engine import make_engine, normalize_url, safe_url
from govc_db.db.errors import translating
from govc_db.errors import GovcError, InvalidInput, NotFound
from govc_db.middleware.base import Handler, Middleware, Operation, build_chain, default_stack
from govc_db.objects import check_repository_name, check_short_ref_name
from govc_db.settings import Settings
from govc_db.store.codec import Codec
from govc_db.store.sql import RepositoryRecord, SqlBackend
from govc_db.types import RefUpdated

__all__ = ["DEFAULT_URL", "Store", "Subscription", "open_store"]

log = logging.getLogger("govc_db.store")

DEFAULT_URL = "sqlite:///govc.db"


@dataclass(eq=False)
class Subscription:
    """A registered event callback; ``close()`` (or ``with``) unsubscribes it."""

    callback: Callable[[RefUpdated], None]
    repository: str | None
    _store: Store

    def close(self) -> None:
        """Stop delivering events to this callback."""
        self._store._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Store:
    """A govc_db database: repositories, the pipeline, metrics and events.

    Create with :func:`govc_db.open`. Thread-safe; one per process per database.
    """

    def __init__(self, url: str | URL, settings: Settings) -> None:
        self._url = normalize_url(url)
        self.settings = settings
        self.engine = make_engine(self._url, settings)
        self.backend = SqlBackend(
            self.engine,
            Codec(
                method=settings.compression,
                level=settings.compression_level,
                min_size=settings.compression_min_size,
            ),
        )
        self._pipeline: Handler
        self._middleware: list[Middleware]
        self._pipeline, self._middleware = build_chain(default_stack(settings))
        self._subs: list[Subscription] = []
        self._subs_lock = threading.Lock()
        self._closed = False

    # lifecycle ------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"<Store {safe_url(self._url)}>"

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release every pooled connection; the Store cannot be used afterwards."""
        if not self._closed:
            self._closed = True
            self.engine.dispose()

    @property
    def url(self) -> str:
        """The database URL with any password masked."""
        return safe_url(self._url)

    @property
    def dialect(self) -> str:
        """``"postgresql"`` or ``"sqlite"``."""
        return self.engine.dialect.name

    def upgrade(self) -> None:
        """Migrate the schema to the newest revision (Alembic ``upgrade head``); idempotent."""
        from govc_db.db import migrate

        migrate.upgrade(self.engine)

    # repositories ---------------------------------------------------------------------
    def run(self, op: Operation) -> Any:
        """Send an operation through the middleware chain."""
        if self._closed:
            raise GovcError("the store is closed")
        return self._pipeline(op)

    def create_repository(self, name: str, default_branch: str = "main") -> Repository:
        """Create an empty repository; ``AlreadyExists`` / ``InvalidInput``."""
        check_repository_name(name)
        check_short_ref_name(default_branch, "branch")
        if len(default_branch.encode("utf-8")) > 255:
            # govc_repositories.default_branch is VARCHAR(255); only PostgreSQL enforces it.
            raise InvalidInput("default branch name is longer than 255 bytes")
        rec = self.run(
            Operation(
                "create_repository",
                name,
                lambda: self.backend.create_repository(name, default_branch),
                write=True,
            )
        )
        return Repository(self, rec)

    def repository(self, name: str) -> Repository:
        """Open an existing repository; ``NotFound``."""
        check_repository_name(name)

        def lookup() -> RepositoryRecord:
            rec = self.backend.get_repository(name)
            if rec is None:
                raise NotFound(f"repository {name!r} not found")
            return rec

        return Repository(self, self.run(Operation("repository", name, lookup)))

    def list_repositories(self) -> list[str]:
        """Every repository name, sorted."""
        names: list[str] = self.run(
            Operation("list_repositories", "", self.backend.list_repositories)
        )
        return names

    def delete_repository(self, name: str) -> None:
        """Delete a repository and everything in it; ``NotFound``."""
        check_repository_name(name)
        self.run(
            Operation(
                "delete_repository", name, lambda: self.backend.delete_repository(name), write=True
            )
        )

    # events ---------------------------------------------------------------------------
    def subscribe(
        self, callback: Callable[[RefUpdated], None], repository: str | None = None
    ) -> Subscription:
        """Deliver :class:`RefUpdated` to ``callback`` after every committed ref move
        (of ``repository`` only, when given). Callbacks run in the writing thread after the
        commit; an exception in one is logged and does not affect the write.
        """
        if not callable(callback):
            raise InvalidInput("callback must be callable")
        if repository is not None:
            check_repository_name(repository)
        sub = Subscription(callback, repository, self)
        with self._subs_lock:
            self._subs.append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._subs_lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def _publish(self, event: RefUpdated) -> None:
        with self._subs_lock:
            targets = [s for s in self._subs if s.repository in (None, event.repository)]
        for sub in targets:
            try:
                sub.callback(event)
            except Exception:
                log.exception("event subscriber failed")

    # metrics --------------------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        """Stats of every component: pipeline middleware, pool."""
        out: dict[str, Any] = {"dialect": self.dialect, "pid": os.getpid()}
        for mw in self._middleware:
            out[type(mw).__name__.removesuffix("Middleware").lower()] = mw.get_stats()
        pool = self.engine.pool
        status: dict[str, Any] = {"status": pool.status()}
        for attr in ("size", "checkedout", "overflow", "checkedin"):
            fn = getattr(pool, attr, None)
            if callable(fn):
                with translating("pool stats"):
                    status[attr] = fn()
        out["pool"] = status
        return out

    def performance_report(self) -> str:
        """The metrics as readable text."""
        m = self.metrics()
        lines = [f"govc_db performance report ({m['dialect']})"]
        ops = m.get("metrics", {}).get("operations", {})
        if ops:
            lines.append(
                f"{'operation':<20}{'calls':>8}{'errors':>8}{'p50 ms':>10}{'p95 ms':>10}"
                f"{'p99 ms':>10}{'max ms':>10}"
            )
            for name, s in ops.items():
                lines.append(
                    f"{name:<20}{s['calls']:>8}{s['errors']:>8}{s['p50_ms']:>10.2f}"
                    f"{s['p95_ms']:>10.2f}{s['p99_ms']:>10.2f}{s['max_ms']:>10.2f}"
                )
        else:
            lines.append("(no operations recorded; metrics middleware off or idle)")
        lines.append(f"pool: {m['pool']['status']}")
        return "\n".join(lines)


def open_store(url: str | URL | None = None, settings: Settings | None = None) -> Store:
    """Open a Store: ``url`` argument, else ``GOVC_DB_URL``, else ``sqlite:///govc.db``.

    Without ``settings``, :meth:`Settings.from_env` supplies them.
    """
    if url is None:
        url = os.environ.get("GOVC_DB_URL") or DEFAULT_URL
    if settings is not None and not isinstance(settings, Settings):
        raise InvalidInput("settings must be a govc_db.Settings")
    return Store(url, settings if settings is not None else Settings.from_env())


from govc_db.api.repository import Repository  # noqa: E402  (mutual reference)

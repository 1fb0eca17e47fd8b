"""The Store: one database, many repositories; the entry point of the library."""

from __future__ import annotations

import contextvars
import functools
import hashlib
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.engine import URL

from govc_db.db.batch import BatchExecutor
from govc_db.db.branchlocks import BranchLocks
from govc_db.db.cache import QueryCache, uncached_active
from govc_db.db.cache import install as install_cache
from govc_db.db.engine import make_engine, normalize_url, safe_url
from govc_db.db.notify import Listener, connect_kwargs, parse_message, send_probe
from govc_db.db.scope import TransactionScope
from govc_db.db.txn import TransactionManager
from govc_db.errors import GovcError, InvalidInput, NotFound
from govc_db.middleware.base import Handler, Middleware, Operation, build_chain, default_stack
from govc_db.objects import check_repository_name, check_short_ref_name
from govc_db.perf.manager import PerformanceManager, store_manager
from govc_db.perf.report import render_report
from govc_db.settings import Settings
from govc_db.storage.chunks import ChunkStore
from govc_db.storage.gc import GcReport
from govc_db.storage.metrics import StorageStats
from govc_db.store.codec import Codec
from govc_db.store.sql import RepositoryRecord, SqlBackend
from govc_db.types import RefUpdated

if TYPE_CHECKING:
    from govc_db.interop.types import ImportReport

__all__ = ["DEFAULT_URL", "Store", "Subscription", "open_store"]

log = logging.getLogger("govc_db.store")

DEFAULT_URL = "sqlite:///govc.db"

T = TypeVar("T")
R = TypeVar("R")


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
            Codec.from_settings(settings),
            txn=TransactionManager.from_settings(self.engine, settings),
            batch=BatchExecutor.from_settings(self.engine.dialect.name, settings),
        )
        self.backend.pipeline_enabled = settings.write_pipeline
        self.backend.large_blobs = ChunkStore.from_settings(self.engine, settings)
        self._pipeline: Handler
        self._middleware: list[Middleware]
        self._pipeline, self._middleware = build_chain(
            default_stack(settings, in_transaction=self._in_transaction)
        )
        self.perf: PerformanceManager = store_manager(self)
        self.perf.register("storage", StorageStats(self.backend.codec, self.backend.packs))
        #: Commits of this Store to one branch, one at a time (``Settings.commit_serialize``).
        #: Commits queued for one branch are written in groups (``Settings.commit_group``).
        self.branch_locks: BranchLocks | None = (
            BranchLocks(group=settings.commit_group) if settings.commit_serialize else None
        )
        if self.branch_locks is not None:
            self.perf.register("branch_locks", self.branch_locks.stats)
        self._subs: list[Subscription] = []
        self._subs_lock = threading.Lock()
        self._closed = False
        self._listener: Listener | None = None
        self._listener_lock = threading.Lock()
        self._wire_cache_and_events(settings)
        self._wire_optimizers(settings)

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
            with self._listener_lock:
                listener, self._listener = self._listener, None
            if listener is not None:
                listener.stop()
            if self.backend.cache is not None:
                self.backend.cache.close()
            self._close_optimizers()
            self.backend.large_blobs.close()
            for mw in self._middleware:
                closer = getattr(mw, "close", None)
                if closer is not None:
                    closer()
            self.perf.close()
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

    # transactions ---------------------------------------------------------------------
    def transaction(
        self, isolation: str | None = None, readonly: bool = False, retries: int | None = None
    ) -> TransactionScope:
        """One database transaction around several calls, as a context manager or decorator.

        ``with store.transaction() as tx:`` -- repository calls inside join it (each as a
        savepoint) and commit together at the end of the block, or all roll back if it
        raises; ``tx.connection`` runs your own statements in the same transaction and
        ``tx.after_commit(callback)`` defers side effects until it committed. A block
        cannot be re-run, so this form does not retry (``retries`` is ``InvalidInput``
        here) and a serialization failure or lost connection surfaces as StoreUnavailable.

        ``@store.transaction(retries=5)`` -- each call of the decorated function is one
        transaction, re-run as a whole (after a jittered backoff) on SQLSTATE 40001/40P01
        or a connection lost before COMMIT; ``retries`` defaults to
        ``Settings.retry_attempts - 1``. Keep the function free of outside side effects.

        ``isolation``: None (the server default), ``"READ COMMITTED"``, ``"REPEATABLE
        READ"`` or ``"SERIALIZABLE"``; SQLite accepts them all and is always serializable.
        ``readonly=True`` makes writes fail with a GovcError. Transactions nest (inner ones
        are savepoints and keep the outer one's isolation). Events and other after-commit
        callbacks run once the outermost transaction committed.
        """
        if self._closed:
            raise GovcError("the store is closed")
        return TransactionScope(
            self.backend.txn, isolation=isolation, readonly=readonly, retries=retries
        )

    # cache and cross-process events -----------------------------------------------------
    def _wire_cache_and_events(self, settings: Settings) -> None:
        self.store_id = secrets.token_hex(8)
        postgres = self.engine.dialect.name == "postgresql"
        self._notify = postgres and settings.notify_enabled
        cache: QueryCache | None = None
        if settings.cache_enabled:
            database = hashlib.sha256(
                self._url.render_as_string(hide_password=False).encode()
            ).hexdigest()
            cache = QueryCache(
                max_bytes=settings.cache_max_bytes,
                ref_ttl=settings.cache_ref_ttl,
                database=database,
            )
            install_cache(self.engine, cache)
            if postgres:
                # Other processes' writes are known only through the listener: without
                # it (off, not yet connected, reconnecting) mutable results are not used.
                cache.gate = self._listening if self._notify else (lambda: False)
        self.backend.attach(cache=cache, notify=self._notify, store_id=self.store_id)
        if cache is not None and self._notify and cache.ref_ttl > 0:
            self._start_listener()

    @property
    def cache(self) -> QueryCache | None:
        """The query-result cache (None when ``Settings.cache_enabled`` is off)."""
        return self.backend.cache

    @property
    def listener(self) -> Listener | None:
        """The LISTEN/NOTIFY listener (PostgreSQL), once started."""
        return self._listener

    def _start_listener(self) -> None:
        with self._listener_lock:
            if self._closed or (self._listener is not None and not self._listener.orphaned):
                return
            # In a forked child the parent's thread does not exist: start a new one (the
            # old object's connection belongs to the parent and is left alone).
            kwargs = connect_kwargs(self._url, connect_timeout=self.settings.connect_timeout)
            self._listener = Listener(
                kwargs,
                on_payload=self._on_payload,
                on_connect=self._on_listen_change,
                on_disconnect=self._on_listen_change,
                probe=functools.partial(send_probe, kwargs),
                probe_interval=self.settings.listener_probe_interval,
            )
            self._listener.start()

    def _listening(self) -> bool:
        listener = self._listener
        if listener is None:
            return False
        if listener.connected:
            return True
        if listener.orphaned and not self._closed:
            self._start_listener()
        return False

    def _on_listen_change(self) -> None:
        # Notifications may have been missed while not listening: forget what they would
        # have invalidated (runs before "connected" turns true, and after it turned false).
        cache = self.backend.cache
        if cache is not None:
            cache.flush_mutable()

    def _on_payload(self, payload: str) -> None:
        msg = parse_message(payload)
        if msg is None:
            return
        cache = self.backend.cache
        if cache is not None:
            # Our own messages too, unless the move's after-commit hook invalidated it
            # already (a second invalidation would only make every result remembered
            # since unusable); they cover a commit whose hooks never ran (its outcome
            # was lost with the connection).
            if msg.deleted:
                cache.invalidate_repository(msg.repo_id, msg.repo, peers=False)
            elif (
                msg.store == self.store_id
                and msg.ref is not None
                and cache.own_notice(msg.repo_id, msg.ref, msg.new)
            ):
                pass
            else:
                names = None if msg.ref is None else (msg.ref,)
                cache.invalidate_refs(msg.repo_id, names, peers=False)
        if msg.store != self.store_id and msg.ref is not None and msg.repo is not None:
            self._publish(RefUpdated(msg.repo, msg.ref, msg.old, msg.new))

    # events ---------------------------------------------------------------------------
    def subscribe(
        self, callback: Callable[[RefUpdated], None], repository: str | None = None
    ) -> Subscription:
        """Deliver :class:`RefUpdated` to ``callback`` after every committed ref move
        (of ``repository`` only, when given). Moves made through this Store are delivered
        in the writing thread after the commit (for commits written together in a group,
        the thread that wrote the group); on PostgreSQL, moves committed by other
        Stores and processes arrive through LISTEN/NOTIFY in the listener thread. An
        exception in a callback is logged and does not affect the write.
        """
        if not callable(callback):
            raise InvalidInput("callback must be callable")
        if repository is not None:
            check_repository_name(repository)
        sub = Subscription(callback, repository, self)
        with self._subs_lock:
            self._subs.append(sub)
        if self._notify:
            self._start_listener()
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
        """Stats of every component, JSON-serializable: ``dialect``, ``pid``, one key per
        component (``metrics`` middleware, ``pool``, ``statements``, and the cache, batch
        executor, transaction manager ... when present), ``api`` (per-operation latency
        percentiles), ``concurrency`` (operations in flight) and ``memory`` (GC collections
        and maximum pause, tracemalloc when ``Settings.perf_tracemalloc``).
        """
        return {"dialect": self.dialect, "pid": os.getpid(), **self.perf.collect()}

    def performance_report(self) -> str:
        """The metrics as readable text, one section per part."""
        return render_report(self.metrics(), api_source=self.perf.api_source)

    # --- http: API optimizer wiring, worker pool, read replicas ------------------------
    def _in_transaction(self) -> bool:
        # Coalescing steps aside where a read must see this context's own state.
        return self.backend.txn.current() is not None or uncached_active()

    def _wire_optimizers(self, settings: Settings) -> None:
        from govc_db.db.replicas import install_replicas
        from govc_db.middleware.coalesce import CoalesceMiddleware

        self._map_pool: ThreadPoolExecutor | None = None
        self._map_lock = threading.Lock()
        try:
            self.replicas = install_replicas(self.backend.txn, self._url, settings)
        except GovcError:
            self.replicas = None
            self.close()
            raise
        if self.replicas is not None:
            self.perf.register("replicas", self.replicas)
        for mw in self._middleware:
            if isinstance(mw, CoalesceMiddleware) and self._listener is not None:
                # Other Stores' ref moves start a new generation of coalesced reads.
                self.subscribe(mw.on_ref_updated)

    def _close_optimizers(self) -> None:
        pool, self._map_pool = getattr(self, "_map_pool", None), None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        replicas = getattr(self, "replicas", None)
        if replicas is not None:
            replicas.close()

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``[fn(item) for item in items]``, run by a pool of ``Settings.map_workers``
        threads, results in the order of ``items``: many reads at once, e.g.
        ``store.map(lambda p: repo.read("main", p), paths)``.

        Each item runs with the caller's context (``govc_db.caller`` identity). The first
        exception raised by ``fn`` is raised once every started item finished; items not
        started yet are cancelled. Inside ``store.transaction()`` the items run one after
        another in this thread, so they see the transaction's writes.
        """
        if self._closed:
            raise GovcError("the store is closed")
        if not callable(fn):
            raise InvalidInput("fn must be callable")
        work = list(items)
        if self.settings.map_workers == 1 or len(work) <= 1 or self.backend.txn.current():
            return [fn(item) for item in work]
        with self._map_lock:
            if self._map_pool is None:
                self._map_pool = ThreadPoolExecutor(
                    self.settings.map_workers, thread_name_prefix="govc_db-map"
                )
            pool = self._map_pool
        ctx = contextvars.copy_context()
        futures = [pool.submit(ctx.copy().run, fn, item) for item in work]
        try:
            return [f.result() for f in futures]
        finally:
            for f in futures:
                f.cancel()
            wait(futures)

    def import_git(
        self,
        name: str,
        source: str | os.PathLike[str],
        *,
        refs: Sequence[str] | None = None,
        force: bool = False,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> ImportReport:
        """Import the branches and tags of the local git repository at ``source`` (bare or
        not) into repository ``name`` (created if missing), every object byte-identical.

        ``refs`` limits the import to those refs (full or short names). Running it again
        imports only what is new; a ref moved in govc_db meanwhile to a commit the source
        does not descend from is a ``RefConflict`` with nothing changed, unless ``force``.
        ``progress(stage, done, total)`` is called along the way. Needs ``git`` on PATH.
        """
        # The facade only forwards: the work lives in interop/, which imports api/.
        from govc_db.interop.importer import import_git

        return import_git(self, name, source, refs=refs, force=force, progress=progress)

    def gc(
        self,
        name: str | None = None,
        *,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> dict[str, GcReport]:
        """``repo.gc()`` of repository ``name``, or of every repository; reports by name.
        ``progress(name, done, total)`` follows each repository's batches."""
        names = [name] if name is not None else self.list_repositories()
        out: dict[str, GcReport] = {}
        for n in names:
            each = None if progress is None else functools.partial(progress, n)
            out[n] = self.repository(n).gc(progress=each)
        return out


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

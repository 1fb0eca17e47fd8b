"""The query-result cache: immutable lookups by size, mutable lookups briefly and invalidated.

Caches follow the data (CONVENTIONS 6):

* **Immutable** results are never invalidated: objects by ``(repository, id)``, parsed trees
  by tree id (the memo behind every path lookup), commit-index rows by commit id, and the
  entry at a path below a root tree (what a read found there). They share one LRU bounded
  by bytes (``Settings.cache_max_bytes``; an entry's size is its
  payload plus a fixed overhead). Negative lookups are not cached: an object may arrive
  later. Reads inside a write transaction populate the cache only after it commits, so a
  rolled-back write never leaves an object the database does not hold.
* **Mutable** results -- refs by name, ref listings by prefix, what a revision string
  resolved to, repository rows by name and existence by id -- live at most
  ``Settings.cache_ref_ttl`` seconds and are invalidated on every successful write, after
  commit. A read of a revision and path resolved before needs nothing else: it is answered
  without a connection (:func:`govc_db.db.cache_ports.read_cached`). Reads inside a write
  transaction bypass them (compare-and-swap must read the database); a speculative commit
  may *assume* a cached ref, which its compare-and-swap then checks (govc_db.store.sql).

A reader that read the database before an invalidation must not store what it read after
it. Every connection checkout takes a *token* (a sequence number) before its first
statement, hence before its snapshot; a store is refused when the repository (or the
whole mutable cache) was invalidated after the token was taken.

Staleness bound (what a reader can see after another writer's call has returned):

* **Same Store, and other Stores of this process on the same URL**: none. Invalidation
  runs, in this cache and directly in its peers', before the writing call returns.
* **Another process on PostgreSQL**: the notification latency, typically milliseconds.
  The writing transaction runs ``pg_notify('govc_db', ...)``, which PostgreSQL delivers
  only on commit, atomically with it; every other Store's listener invalidates the keys
  when it arrives (its own Store's too: harmless, and it covers a commit whose
  after-commit hooks never ran because its outcome was lost with the connection). While
  a listener is not connected (not yet, reconnecting, or ``Settings.notify_enabled`` off)
  mutable results are neither served nor stored, and every disconnect and reconnect
  flushes the mutable cache, since notifications may have been lost. A listener
  connection that died silently (no TCP reset) is noticed by keepalives and an idle
  check; until then staleness is bounded by ``cache_ref_ttl``.
* **Another process on SQLite**: none. ``PRAGMA data_version`` on a connection changes
  whenever another connection committed; it is read at every checkout, outside any
  transaction, and a change flushes the mutable cache before the token is taken. Reads
  that take no connection check it first on a connection of their own
  (:class:`DataVersionWatch`). (It
  also sees this process's own commits made on other pooled connections, so with
  concurrent writers mutable hits are rarer on SQLite; immutable entries are unaffected.)
* Writes that bypass govc_db (raw SQL on the govc tables) are not announced: they are seen
  after ``cache_ref_ttl`` at most (on SQLite, at once when made on another connection).
  ``Repository.verify`` reads past the cache entirely.

``Settings.cache_enabled=False`` switches all of it off; ``cache_ref_ttl=0`` keeps only the
immutable part. cachetools supplies the caches (LRU by size, TTL with an injected timer);
what is written here is the locking and the tokens; :mod:`govc_db.db.cache_ports` wraps
the store's ports with it.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sqlite3
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypeVar

from cachetools import LRUCache, TTLCache
from sqlalchemy import Engine, event

from govc_db.objects import ObjectId

if TYPE_CHECKING:
    from govc_db.objects import Tree
    from govc_db.objects.kinds import TreeItem
    from govc_db.store.ports import IndexEntry, RawObject

__all__ = ["TOKEN_KEY", "QueryCache", "install", "uncached", "uncached_active"]

#: Key of the checkout token in a pooled connection's ``info`` dict.
TOKEN_KEY = "govc_db.cache_token"
_DATA_VERSION_KEY = "govc_db.data_version"

#: Bytes charged per immutable entry on top of its payload (key tuple, record, LRU links).
ENTRY_OVERHEAD = 120
#: Bytes charged per parsed tree entry on top of its name (TreeItem, id bytes, tuple slot).
TREE_ITEM_OVERHEAD = 150
#: Count bounds of the mutable caches (refs held across all listings count one each).
MAX_REFS = 100_000
MAX_LISTED_REFS = 200_000
MAX_REPOSITORIES = 10_000
#: Own ref moves awaiting their NOTIFY; emptied when full (a forgotten one costs one
#: invalidation more, nothing else).
MAX_NOTICES = 10_000

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# Live caches by database identity (a digest of the full URL), for direct invalidation.
_PEERS: dict[str, weakref.WeakSet[QueryCache]] = {}
_PEERS_LOCK = threading.Lock()

_bypass: contextvars.ContextVar[bool] = contextvars.ContextVar("govc_db_uncached", default=False)


@contextmanager
def uncached() -> Iterator[None]:
    """Units opened inside the block read the database only (``verify`` uses it: an fsck
    checks what is stored, not what this process remembers)."""
    reset = _bypass.set(True)
    try:
        yield
    finally:
        _bypass.reset(reset)


def uncached_active() -> bool:
    """Whether the current context asked for :func:`uncached` reads."""
    return _bypass.get()


class _CountingLRU(LRUCache[K, V]):
    """An LRU that reports each eviction (cachetools evicts through ``popitem``)."""

    def __init__(
        self,
        maxsize: int,
        getsizeof: Callable[[V], float] | None,
        on_evict: Callable[[K, V], None],
    ) -> None:
        super().__init__(maxsize, getsizeof)
        self._on_evict = on_evict

    def popitem(self) -> tuple[K, V]:
        key, value = super().popitem()
        self._on_evict(key, value)
        return key, value


class _CountingTTL(TTLCache[K, V]):
    """A TTL cache that counts capacity evictions (expiry is not an eviction)."""

    def __init__(
        self,
        maxsize: int,
        ttl: float,
        timer: Callable[[], float],
        getsizeof: Callable[[V], float] | None = None,
    ) -> None:
        super().__init__(maxsize, ttl, timer, getsizeof)
        self.evictions = 0

    def popitem(self) -> tuple[K, V]:
        item = super().popitem()
        self.evictions += 1
        return item


def _object_size(raw: RawObject) -> int:
    return ENTRY_OVERHEAD + len(raw.data)


_NAME = attrgetter("name")


def _tree_size(tree: Tree) -> int:
    # Per entry its overhead and name, plus the bytes a tree keeps beside its entries
    # (canonical ``data``, a lenient tree's ``raw``). With ``data`` known the names need
    # no count: each record is at least 27 bytes besides its name (``40000 name\0`` and a
    # 20-byte id), so ``len(data) - 27 * n`` bounds their total from above.
    items = tree.items
    n = len(items)
    data = tree.data
    # (Without ``data``, a C-level map: no Python frame per entry.)
    names = len(data) - 27 * n if data is not None else sum(map(len, map(_NAME, items)))
    kept = len(data or b"") + len(tree.raw or b"")
    return ENTRY_OVERHEAD + TREE_ITEM_OVERHEAD * n + names + kept


def _index_size(entry: IndexEntry) -> int:
    return ENTRY_OVERHEAD + 40 * (2 + len(entry.parents))


#: Bytes charged per path-lookup entry on top of its path (key, TreeItem, id bytes).
PATH_ENTRY_OVERHEAD = 220
#: Count bound of the resolved-revision memo.
MAX_REVISIONS = 100_000

_KINDS = ("objects", "trees", "index", "paths")
#: The mutable TTL caches (the resolved-revision memo is reported beside them).
_MUTABLE = ("refs", "ref_lists", "repositories", "exists")


def _noop() -> None:
    return None


def _data_version(dbapi_conn: Any) -> int:
    """SQLite's ``PRAGMA data_version`` on ``dbapi_conn``: it changes whenever another
    connection committed."""
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA data_version")
        return int(cur.fetchone()[0])
    finally:
        cur.close()


class QueryCache:
    """The per-Store cache. Thread-safe: one lock for each half, held only briefly.

    ``gate`` says whether mutable results may be used now (on PostgreSQL: the listener
    is connected); the Store sets it. ``timer`` drives the TTLs (injected in tests).
    """

    def __init__(
        self,
        *,
        max_bytes: int,
        ref_ttl: float,
        timer: Callable[[], float] = time.monotonic,
        database: str | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.ref_ttl = ref_ttl
        self.gate: Callable[[], bool] = lambda: True
        self._ilock = threading.Lock()
        self._imm: _CountingLRU[tuple[str, int, Any], tuple[int, Any]] = _CountingLRU(
            max_bytes, lambda v: v[0], self._evicted
        )
        self._kind_bytes: Counter[str] = Counter()
        self._kind_entries: Counter[str] = Counter()
        # One counter per lock: a dict copied under one lock must not grow under the other.
        self._istats: Counter[str] = Counter()
        self._mstats: Counter[str] = Counter()
        self._mlock = threading.Lock()
        self._refs: _CountingTTL[tuple[int, str], ObjectId | None] = _CountingTTL(
            MAX_REFS, ref_ttl, timer
        )
        self._lists: _CountingTTL[tuple[int, int, str], dict[str, ObjectId]] = _CountingTTL(
            MAX_LISTED_REFS, ref_ttl, timer, lambda v: 1 + len(v)
        )
        self._repos: _CountingTTL[str, Any] = _CountingTTL(MAX_REPOSITORIES, ref_ttl, timer)
        self._exists: _CountingTTL[int, bool] = _CountingTTL(MAX_REPOSITORIES, ref_ttl, timer)
        # (repo_id, the repository's invalidation sequence, revision) -> (commit, its tree,
        # expiry): what a revision string resolved to, unreachable after any ref write of
        # the repository, like the listings. A plain dict rather than a TTLCache: it is on
        # the path of every cache-answered read, where a TTLCache lookup costs more than
        # the rest of the read; expiry is checked on lookup, and the dict is emptied when
        # full (entries are cheap to recompute).
        self._timer = timer
        self._revs: dict[tuple[int, int, str], tuple[ObjectId, ObjectId, float]] = {}
        #: Called before a read answered from the cache alone; SQLite's Store sets it to a
        #: ``PRAGMA data_version`` check (:class:`DataVersionWatch`).
        self.refresh: Callable[[], None] = _noop
        self.watch: DataVersionWatch | None = None
        # Invalidation bookkeeping: a global sequence; per repository, the sequence of its
        # last invalidation; the last flush; the last catalog change (delete).
        self._seq = 0
        self._flush_seq = 0
        self._catalog_seq = 0
        self._repo_seq: dict[int, int] = {}
        # (repo_id, ref, new target hex) -> own moves invalidated whose NOTIFY has not
        # arrived back yet (expect_notice / own_notice).
        self._notices: dict[tuple[int, str, str | None], int] = {}
        # Stores of this process on the same database invalidate each other directly, at
        # once: NOTIFY (or data_version) would reach them too, but only after a delay.
        self._database = database
        if database is not None:
            with _PEERS_LOCK:
                _PEERS.setdefault(database, weakref.WeakSet()).add(self)

    # -- immutable half ---------------------------------------------------------------
    def _evicted(self, key: tuple[str, int, Any], value: tuple[int, Any]) -> None:
        # Called under _ilock from inside the LRU's __setitem__.
        kind = key[0]
        self._kind_bytes[kind] -= value[0]
        self._kind_entries[kind] -= 1
        self._istats[kind + ".evictions"] += 1

    def _get_many(self, kind: str, repo_id: int, oids: Sequence[ObjectId]) -> dict[ObjectId, Any]:
        out: dict[ObjectId, Any] = {}
        with self._ilock:
            for oid in oids:
                hit = self._imm.get((kind, repo_id, oid))
                if hit is not None:
                    out[oid] = hit[1]
            self._istats[kind + ".hits"] += len(out)
            self._istats[kind + ".misses"] += len(oids) - len(out)
        return out

    def _put_many(
        self, kind: str, repo_id: int, items: Iterable[tuple[ObjectId, Any]], size: Any
    ) -> None:
        sized = [(oid, value, size(value)) for oid, value in items]
        with self._ilock:
            for oid, value, nbytes in sized:
                if nbytes > self.max_bytes:
                    continue  # would evict everything and still not fit
                key = (kind, repo_id, oid)
                old = self._imm.pop(key, None)
                if old is not None:
                    self._kind_bytes[kind] -= old[0]
                    self._kind_entries[kind] -= 1
                self._imm[key] = (nbytes, value)
                self._kind_bytes[kind] += nbytes
                self._kind_entries[kind] += 1

    def _get_one(self, kind: str, repo_id: int, key: Any) -> Any:
        # One lookup without building a list and a dict: this is on the path of every
        # read the cache answers alone.
        with self._ilock:
            try:
                hit = self._imm[(kind, repo_id, key)]
            except KeyError:
                self._istats[kind + ".misses"] += 1
                return None
            self._istats[kind + ".hits"] += 1
        return hit[1]

    def get_object(self, repo_id: int, oid: ObjectId) -> RawObject | None:
        """One cached object, or None."""
        found: RawObject | None = self._get_one("objects", repo_id, oid)
        return found

    def get_path(self, repo_id: int, tree: ObjectId, path: str) -> TreeItem | None:
        """The remembered entry at ``path`` (validated) below root tree ``tree``, or None."""
        found: TreeItem | None = self._get_one("paths", repo_id, (tree, path))
        return found

    def put_path(self, repo_id: int, tree: ObjectId, path: str, item: TreeItem) -> None:
        """Remember the entry at ``path`` below ``tree`` (trees never change: no invalidation)."""
        key: Any = (tree, path)  # the immutable half is keyed by id; a path lookup by both
        self._put_many("paths", repo_id, [(key, item)], lambda _: PATH_ENTRY_OVERHEAD + len(path))

    def get_objects(self, repo_id: int, oids: Sequence[ObjectId]) -> dict[ObjectId, RawObject]:
        """Cached objects among ``oids`` (misses are absent)."""
        return self._get_many("objects", repo_id, oids)

    def put_objects(self, repo_id: int, items: Iterable[tuple[ObjectId, RawObject]]) -> None:
        """Remember objects read from the database."""
        self._put_many("objects", repo_id, items, _object_size)

    def has_object(self, repo_id: int, oid: ObjectId) -> bool:
        """Whether the object (or its parsed tree) is cached; no hit/miss counted."""
        with self._ilock:
            return ("objects", repo_id, oid) in self._imm or ("trees", repo_id, oid) in self._imm

    def get_trees(self, repo_id: int, oids: Sequence[ObjectId]) -> dict[ObjectId, Tree]:
        """Cached parsed trees among ``oids``."""
        return self._get_many("trees", repo_id, oids)

    def put_trees(self, repo_id: int, items: Iterable[tuple[ObjectId, Tree]]) -> None:
        """Remember parsed trees."""
        self._put_many("trees", repo_id, items, _tree_size)

    def get_index(self, repo_id: int, oids: Sequence[ObjectId]) -> dict[ObjectId, IndexEntry]:
        """Cached commit-index rows among ``oids``."""
        return self._get_many("index", repo_id, oids)

    def get_index_row(self, repo_id: int, oid: ObjectId) -> IndexEntry | None:
        """One cached commit-index row, or None (a walk's step: no list, no dict)."""
        found: IndexEntry | None = self._get_one("index", repo_id, oid)
        return found

    def get_index_chain(self, repo_id: int, oid: ObjectId, limit: int) -> list[IndexEntry]:
        """Cached commit-index rows along first parents: ``oid``'s, then while the last
        row has exactly one parent, that parent's, up to ``limit`` rows; it stops at the
        first row not cached. One lock for the whole chain (a history walk's run of
        single-parent commits)."""
        out: list[IndexEntry] = []
        imm = self._imm
        missed = 0
        with self._ilock:
            while len(out) < limit:
                try:  # one lookup (get() would test membership first)
                    hit = imm[("index", repo_id, oid)]
                except KeyError:
                    missed = 1
                    break
                row: IndexEntry = hit[1]
                out.append(row)
                if len(row.parents) != 1:
                    break
                oid = row.parents[0]
            self._istats["index.hits"] += len(out)
            self._istats["index.misses"] += missed
        return out

    def put_index(self, repo_id: int, items: Iterable[tuple[ObjectId, IndexEntry]]) -> None:
        """Remember commit-index rows."""
        self._put_many("index", repo_id, items, _index_size)

    # -- tokens and gating -------------------------------------------------------------
    def token(self) -> int:
        """A token to take before a transaction's first statement (see the module doc)."""
        return self._seq  # an int read is atomic; a stale (smaller) token is only stricter

    def valid_since(self, token: int, repo_id: int) -> bool:
        """Whether nothing can have moved in repository ``repo_id`` since ``token`` was
        taken: no invalidation of that repository, no flush and no catalog change since
        (an invalidation of another repository does not count). Lock-free: read before
        using a result remembered under ``token``."""
        return (
            self._flush_seq <= token
            and self._catalog_seq <= token
            and self._repo_seq.get(repo_id, 0) <= token
        )

    def mutable_enabled(self) -> bool:
        """Whether mutable results may be served and stored right now."""
        return self.ref_ttl > 0 and self.gate()

    def _valid(self, token: int, repo_id: int | None) -> bool:
        # Caller holds _mlock.
        if self._flush_seq > token or self._catalog_seq > token:
            return False
        return repo_id is None or self._repo_seq.get(repo_id, 0) <= token

    def _refused(self) -> None:
        self._mstats["stale_puts_refused"] += 1

    # -- mutable half -----------------------------------------------------------------
    def get_ref(self, repo_id: int, name: str) -> tuple[bool, ObjectId | None]:
        """``(hit, target)``; a hit may be a cached absence (target None)."""
        key = (repo_id, name)
        with self._mlock:
            if key in self._refs:
                self._mstats["refs.hits"] += 1
                return True, self._refs[key]
            self._mstats["refs.misses"] += 1
        return False, None

    def put_ref(self, token: int, repo_id: int, name: str, target: ObjectId | None) -> None:
        """Remember a ref read under ``token`` unless it was invalidated since."""
        with self._mlock:
            if self._valid(token, repo_id):
                self._refs[(repo_id, name)] = target
            else:
                self._refused()

    def get_ref_list(self, repo_id: int, prefix: str) -> dict[str, ObjectId] | None:
        """A copy of the cached listing of ``prefix``, or None."""
        with self._mlock:
            key = (repo_id, self._repo_seq.get(repo_id, 0), prefix)
            found = self._lists.get(key)
            self._mstats["ref_lists.hits" if found is not None else "ref_lists.misses"] += 1
            return None if found is None else dict(found)

    def put_ref_list(
        self, token: int, repo_id: int, prefix: str, refs: Mapping[str, ObjectId]
    ) -> None:
        """Remember a listing read under ``token`` unless it was invalidated since."""
        with self._mlock:
            if not self._valid(token, repo_id):
                self._refused()
                return
            # Listings are keyed by the repository's invalidation sequence: a ref write
            # makes every listing of the repository unreachable without scanning for them.
            key = (repo_id, self._repo_seq.get(repo_id, 0), prefix)
            with contextlib.suppress(ValueError):  # larger than the whole listing budget
                self._lists[key] = dict(refs)

    def get_revision(self, repo_id: int, rev: str) -> tuple[ObjectId, ObjectId] | None:
        """``(commit, root tree)`` revision ``rev`` resolved to, or None."""
        with self._mlock:
            found = self._revs.get((repo_id, self._repo_seq.get(repo_id, 0), rev))
            if found is not None and found[2] <= self._timer():
                found = None
            self._mstats["revisions.hits" if found is not None else "revisions.misses"] += 1
            return None if found is None else (found[0], found[1])

    def put_revision(
        self, token: int, repo_id: int, rev: str, commit: ObjectId, tree: ObjectId
    ) -> None:
        """Remember what ``rev`` resolved to under ``token`` unless invalidated since."""
        with self._mlock:
            if not self._valid(token, repo_id):
                self._refused()
                return
            revs = self._revs
            if len(revs) >= MAX_REVISIONS:
                revs.clear()
                self._mstats["revisions.clears"] += 1
            key = (repo_id, self._repo_seq.get(repo_id, 0), rev)
            revs[key] = (commit, tree, self._timer() + self.ref_ttl)

    def get_repository(self, name: str) -> Any:
        """The cached repository record of ``name``, or None."""
        with self._mlock:
            found = self._repos.get(name)
            self._mstats["repositories.hits" if found is not None else "repositories.misses"] += 1
            return found

    def put_repository(self, token: int, name: str, repo_id: int, record: Any) -> None:
        """Remember a repository record (and that its id exists)."""
        with self._mlock:
            if self._valid(token, repo_id):
                self._repos[name] = record
                self._exists[repo_id] = True
            else:
                self._refused()

    def get_exists(self, repo_id: int) -> bool:
        """True when the repository is known to exist (absence is never cached)."""
        with self._mlock:
            hit = repo_id in self._exists
            self._mstats["exists.hits" if hit else "exists.misses"] += 1
            return hit

    def put_exists(self, token: int, repo_id: int) -> None:
        """Remember that ``repo_id`` exists."""
        with self._mlock:
            if self._valid(token, repo_id):
                self._exists[repo_id] = True
            else:
                self._refused()

    # -- invalidation -----------------------------------------------------------------
    def invalidate_refs(
        self, repo_id: int, names: Iterable[str] | None, *, peers: bool = True
    ) -> None:
        """Forget refs ``names`` of a repository (None: all of them) and its listings,
        here and (``peers``) in the other Stores of this process on the same database."""
        keys = None if names is None else tuple(names)
        for cache in [self, *self._peers()] if peers else [self]:
            cache._invalidate_refs(repo_id, keys)

    def expect_notice(self, repo_id: int, name: str, target: ObjectId | None) -> None:
        """Record that this Store's own move of ``name`` to ``target`` committed and was
        invalidated here already (an after-commit hook, after :meth:`invalidate_refs`):
        its NOTIFY, when it arrives back, need not invalidate again (:meth:`own_notice`)."""
        with self._mlock:
            notices = self._notices
            if len(notices) >= MAX_NOTICES:
                notices.clear()
            key = (repo_id, name, None if target is None else target.hex())
            notices[key] = notices.get(key, 0) + 1

    def own_notice(self, repo_id: int, name: str, target: str | None) -> bool:
        """Whether a NOTIFY of this Store's own move (``target`` in hex) was expected by
        :meth:`expect_notice`, i.e. invalidated already; consumes the expectation. False
        for a move whose after-commit hooks never ran (its outcome lost with the
        connection): that NOTIFY must invalidate."""
        key = (repo_id, name, target)
        with self._mlock:
            left = self._notices.get(key, 0)
            if left <= 0:
                return False
            if left == 1:
                del self._notices[key]
            else:
                self._notices[key] = left - 1
            self._mstats["own_notices_skipped"] += 1
            return True

    def _invalidate_refs(self, repo_id: int, names: tuple[str, ...] | None) -> None:
        with self._mlock:
            self._seq += 1
            self._repo_seq[repo_id] = self._seq
            if names is None:
                for key in [k for k in self._refs.keys() if k[0] == repo_id]:  # noqa: SIM118
                    self._refs.pop(key, None)
            else:
                for name in names:
                    self._refs.pop((repo_id, name), None)
            self._mstats["invalidations"] += 1

    def invalidate_repository(self, repo_id: int, name: str | None, *, peers: bool = True) -> None:
        """Forget a deleted repository's row, existence, refs and listings (here and in the
        peers, as :meth:`invalidate_refs`)."""
        for cache in [self, *self._peers()] if peers else [self]:
            cache._invalidate_repository(repo_id, name)

    def _invalidate_repository(self, repo_id: int, name: str | None) -> None:
        with self._mlock:
            self._seq += 1
            self._repo_seq[repo_id] = self._catalog_seq = self._seq
            self._exists.pop(repo_id, None)
            if name is not None:
                self._repos.pop(name, None)
            for rname in [n for n, rec in self._repos.items() if rec.id == repo_id]:
                self._repos.pop(rname, None)
            for key in [k for k in self._refs.keys() if k[0] == repo_id]:  # noqa: SIM118
                self._refs.pop(key, None)
            self._mstats["invalidations"] += 1

    def _peers(self) -> list[QueryCache]:
        if self._database is None:
            return []
        with _PEERS_LOCK:
            return [c for c in _PEERS.get(self._database, ()) if c is not self]

    def close(self) -> None:
        """Leave the peer registry and close the data_version watch (the Store is closing)."""
        if self.watch is not None:
            self.watch.close()
        if self._database is not None:
            with _PEERS_LOCK:
                group = _PEERS.get(self._database)
                if group is not None:
                    group.discard(self)
                    if not group:
                        del _PEERS[self._database]

    def flush_mutable(self) -> None:
        """Forget every mutable result (after a listener reconnect, or another connection's
        commit on SQLite). Immutable entries stay: they cannot be wrong."""
        with self._mlock:
            self._seq += 1
            self._flush_seq = self._seq
            for cache in (self._refs, self._lists, self._repos, self._exists, self._revs):
                cache.clear()
            self._mstats["flushes"] += 1

    def check_data_version(self, dbapi_conn: Any, info: dict[str, Any]) -> None:
        """SQLite: flush when another connection committed since this one last looked.

        Runs at checkout, outside any transaction, so the version read is the newest.
        A connection seen for the first time flushes too: nothing is known of its past.
        """
        try:
            version = _data_version(dbapi_conn)
        except Exception:  # unknown state: be safe, and let the real query report errors
            info.pop(_DATA_VERSION_KEY, None)
            self.flush_mutable()
            return
        seen = info.get(_DATA_VERSION_KEY)
        info[_DATA_VERSION_KEY] = (dbapi_conn, version)
        if seen is None or seen[0] is not dbapi_conn or seen[1] != version:
            with self._mlock:
                self._mstats["data_version_changes"] += 1
            self.flush_mutable()

    # -- stats ------------------------------------------------------------------------
    def get_stats(self) -> dict[str, Any]:
        """Hits, misses, evictions, bytes and entries per cache; invalidations, flushes."""
        out: dict[str, Any] = {}
        with self._ilock:
            s = dict(self._istats)
            for kind in _KINDS:
                out[kind] = {
                    "hits": s.get(kind + ".hits", 0),
                    "misses": s.get(kind + ".misses", 0),
                    "evictions": s.get(kind + ".evictions", 0),
                    "bytes": self._kind_bytes[kind],
                    "entries": self._kind_entries[kind],
                }
            out["immutable"] = {
                "bytes": int(self._imm.currsize),
                "max_bytes": self.max_bytes,
                "entries": len(self._imm),
            }
        with self._mlock:
            s = dict(self._mstats)
            caches: tuple[_CountingTTL[Any, Any], ...] = (
                self._refs,
                self._lists,
                self._repos,
                self._exists,
            )
            for name, cache in zip(_MUTABLE, caches, strict=True):
                out[name] = {
                    "hits": s.get(name + ".hits", 0),
                    "misses": s.get(name + ".misses", 0),
                    "evictions": cache.evictions,
                    "entries": len(cache),
                }
            out["revisions"] = {
                "hits": s.get("revisions.hits", 0),
                "misses": s.get("revisions.misses", 0),
                "evictions": s.get("revisions.clears", 0),
                "entries": len(self._revs),
            }
            for name in (
                "invalidations",
                "flushes",
                "stale_puts_refused",
                "data_version_changes",
                "own_notices_skipped",
            ):
                out[name] = s.get(name, 0)
        out["mutable_enabled"] = self.mutable_enabled()
        out["ref_ttl"] = self.ref_ttl
        return out


class DataVersionWatch:
    """SQLite: notices other connections' commits for reads that take no connection.

    A read answered from the cache alone never checks out a pooled connection, so the
    checkout's ``data_version`` check (:meth:`QueryCache.check_data_version`) does not run
    for it. This keeps one connection of its own for ``PRAGMA data_version`` (about
    1.5 µs: it reads the WAL index in shared memory) and flushes the mutable cache
    when the value moved, so such reads keep the staleness bound of the module docstring:
    none. Reopened after a fork (a SQLite connection must not cross one).
    """

    def __init__(self, path: str, cache: QueryCache) -> None:
        self._path = path
        self._cache = cache
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        # One cursor kept for the PRAGMA: about a third of a new cursor's cost per check.
        self._cursor: sqlite3.Cursor | None = None
        self._pid = 0
        self._seen: int | None = None

    def check(self) -> None:
        """Flush the mutable cache if the database changed since the last check (or this
        is the first one); on any error, flush too (nothing is known)."""
        with self._lock:
            try:
                cur = self._cursor
                if cur is None or self._pid != os.getpid():
                    self._conn = sqlite3.connect(
                        self._path, isolation_level=None, check_same_thread=False
                    )
                    self._cursor = cur = self._conn.cursor()
                    self._pid = os.getpid()
                    self._seen = None
                cur.execute("PRAGMA data_version")
                version = int(cur.fetchone()[0])
            except sqlite3.Error:
                self._close()
                version = None
            changed = version is None or version != self._seen
            self._seen = version
        if changed:
            self._cache.flush_mutable()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        self._cursor = None
        if conn is not None and self._pid == os.getpid():
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def close(self) -> None:
        """Close the connection (the Store is closing)."""
        with self._lock:
            self._close()


def install(engine: Engine, cache: QueryCache) -> None:
    """Take a token at every checkout (after SQLite's ``data_version`` check)."""
    sqlite = engine.dialect.name == "sqlite"

    def on_checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        if sqlite:
            cache.check_data_version(dbapi_conn, record.info)
        record.info[TOKEN_KEY] = cache.token()

    event.listen(engine, "checkout", on_checkout)
    database = engine.url.database
    if sqlite and database not in (None, "", ":memory:") and not database.startswith("file:"):
        # In-memory databases have no other connection to watch.
        watch = DataVersionWatch(database, cache)
        cache.refresh = watch.check
        cache.watch = watch

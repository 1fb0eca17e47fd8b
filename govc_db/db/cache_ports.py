"""The store's ports answered through the :class:`~govc_db.db.cache.QueryCache`.

:class:`CachedObjects`, :class:`CachedIndex` and :class:`CachedRefs` wrap the SQL
implementations of the ports of :mod:`govc_db.store.ports` for one unit of work: hits come
from the cache, misses go to the wrapped store and are remembered. Inside a write
transaction what was read is remembered only once it committed (``defer`` is the unit's
``after_commit``), and refs are not wrapped at all: compare-and-swap reads the database.
Anything a wrapper does not override (the batch executor's ``flush`` ...) is forwarded.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from govc_db.db.cache import QueryCache
from govc_db.objects import MODE_EXEC, MODE_FILE, MODE_LINK, ObjectId

if TYPE_CHECKING:
    from govc_db.objects import Tree
    from govc_db.objects.kinds import TreeItem
    from govc_db.store.ports import (
        CommitIndexStore,
        IndexEntry,
        ObjectStore,
        RawObject,
        RefLogEntry,
        RefStore,
        Splice,
    )

__all__ = [
    "CachedIndex",
    "CachedObjects",
    "CachedRefs",
    "CachedTreeMemo",
    "ReadMemo",
    "read_cached",
]

Defer = Callable[[Callable[[], None]], None]

#: Modes whose entry is a blob (a file, an executable, a symlink).
_BLOB_MODES = frozenset({MODE_FILE, MODE_EXEC, MODE_LINK})


class _Wrapper:
    """Delegates what it does not override to the wrapped store (extensions included)."""

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("_inner")
        if inner is None:  # not initialized yet (copy, unpickling)
            raise AttributeError(name)
        return getattr(inner, name)


class CachedTreeMemo:
    """Parsed trees by id for ``core.trees.load_trees`` (duck-typed ``tree_memo``).

    In a write transaction the trees it is given reach the shared cache only once the
    transaction committed; until then they are remembered for this unit alone.
    """

    __slots__ = ("_cache", "_defer", "_local", "_repo_id")

    def __init__(self, cache: QueryCache, repo_id: int, defer: Defer | None) -> None:
        self._cache = cache
        self._repo_id = repo_id
        self._defer = defer
        self._local: dict[ObjectId, Tree] = {}

    def get_trees(self, oids: Sequence[ObjectId]) -> dict[ObjectId, Tree]:
        """The remembered trees among ``oids`` (this unit's own first)."""
        local = self._local
        if not local:
            return self._cache.get_trees(self._repo_id, oids)
        out = {o: local[o] for o in oids if o in local}
        rest = [o for o in oids if o not in out]
        if rest:
            out.update(self._cache.get_trees(self._repo_id, rest))
        return out

    def put_trees(self, trees: Mapping[ObjectId, Tree]) -> None:
        """Remember parsed trees (for this unit now, for everyone once it committed)."""
        items = list(trees.items())
        if self._defer is None:
            self._cache.put_trees(self._repo_id, items)
        else:
            self._local.update(items)
            self._defer(lambda: self._cache.put_trees(self._repo_id, items))


class CachedObjects(_Wrapper):
    """ObjectStore that answers reads from the cache and remembers what it read.

    Trees are remembered parsed (``tree_memo``), not raw: path lookups go through the
    memo, and keeping both forms would spend the byte budget twice. ``defer`` (the unit's
    ``after_commit``) is given inside write transactions.
    """

    def __init__(
        self, inner: ObjectStore, cache: QueryCache, repo_id: int, defer: Defer | None
    ) -> None:
        self._inner: ObjectStore = inner
        self._cache = cache
        self._repo_id = repo_id
        self._defer = defer
        self.tree_memo = CachedTreeMemo(cache, repo_id, defer)

    def _remember(self, found: Mapping[ObjectId, RawObject]) -> None:
        items = [(oid, raw) for oid, raw in found.items() if raw.type != b"tree"]
        if not items:
            return
        if self._defer is None:
            self._cache.put_objects(self._repo_id, items)
        else:
            self._defer(lambda: self._cache.put_objects(self._repo_id, items))

    def get(self, oid: ObjectId) -> RawObject:
        """The object; ``NotFound`` from the database when absent."""
        hit = self._cache.get_objects(self._repo_id, [oid])
        if oid in hit:
            return hit[oid]
        raw = self._inner.get(oid)
        self._remember({oid: raw})
        return raw

    def get_many(self, oids: Iterable[ObjectId]) -> dict[ObjectId, RawObject]:
        """The objects that exist among ``oids``; only misses reach the database."""
        wanted = list(dict.fromkeys(oids))
        out = self._cache.get_objects(self._repo_id, wanted)
        missing = [o for o in wanted if o not in out]
        if missing:
            found = self._inner.get_many(missing)
            self._remember(found)
            out.update(found)
        return out

    def has(self, oid: ObjectId) -> bool:
        """Whether the object exists (a cached object certainly does)."""
        return self._cache.has_object(self._repo_id, oid) or self._inner.has(oid)

    def has_many(self, oids: Iterable[ObjectId]) -> set[ObjectId]:
        """The subset of ``oids`` that exists."""
        wanted = list(dict.fromkeys(oids))
        known = {o for o in wanted if self._cache.has_object(self._repo_id, o)}
        rest = [o for o in wanted if o not in known]
        return known | (self._inner.has_many(rest) if rest else set())

    def put(self, type_name: bytes, data: bytes, base: ObjectId | None = None) -> ObjectId:
        """Store one object (not cached: it is only known to exist once committed)."""
        return self._inner.put(type_name, data, base)

    def put_many(
        self,
        objects: Iterable[tuple[bytes, bytes]],
        bases: Sequence[ObjectId | None] | None = None,
    ) -> list[ObjectId]:
        """Store many objects (``bases``: delta hints, see the ObjectStore port)."""
        return self._inner.put_many(objects, bases)

    def get_bulk(self, oids: Sequence[ObjectId]) -> dict[ObjectId, RawObject]:
        """Many objects read once (a clone's pack): cached ones answer, the rest come from
        the database's bulk read, and nothing read is remembered."""
        wanted = list(dict.fromkeys(oids))
        out = self._cache.get_objects(self._repo_id, wanted)
        if len(out) < len(wanted):
            out.update(self._inner.get_bulk([o for o in wanted if o not in out]))
        return out

    def get_bulk_spliced(self, oids: Sequence[ObjectId]) -> dict[ObjectId, RawObject | Splice]:
        """As :meth:`get_bulk`; objects stored as splices come as :class:`Splice`."""
        wanted = list(dict.fromkeys(oids))
        out: dict[ObjectId, RawObject | Splice] = dict(
            self._cache.get_objects(self._repo_id, wanted)
        )
        if len(out) < len(wanted):
            out.update(self._inner.get_bulk_spliced([o for o in wanted if o not in out]))
        return out

    def iter_bulk(
        self, chunks: Iterable[Sequence[ObjectId]], *, spliced: bool = False
    ) -> Generator[dict[ObjectId, RawObject | Splice], None, None]:
        """As the inner store's, cached objects answered first."""
        hits: list[dict[ObjectId, RawObject | Splice]] = []
        rest: list[list[ObjectId]] = []
        for chunk in chunks:
            wanted = list(dict.fromkeys(chunk))
            cached: dict[ObjectId, RawObject | Splice] = dict(
                self._cache.get_objects(self._repo_id, wanted)
            )
            hits.append(cached)
            rest.append([o for o in wanted if o not in cached])
        inner = self._inner.iter_bulk(rest, spliced=spliced)
        try:
            for got, more in zip(hits, inner, strict=True):
                got.update(more)
                yield got
        finally:
            inner.close()

    def put_bulk(
        self,
        objects: Iterable[tuple[bytes, bytes]],
        *,
        bases: Sequence[tuple[ObjectId, bytes] | None] | None = None,
        ids: Sequence[ObjectId] | None = None,
    ) -> list[ObjectId]:
        """Store many objects written once (not cached, see the ObjectStore port)."""
        return self._inner.put_bulk(objects, bases=bases, ids=ids)

    def find_prefix(self, prefix_hex: str, limit: int = 2) -> list[ObjectId]:
        """Ids starting with ``prefix_hex`` (always the database: new ids may match)."""
        return self._inner.find_prefix(prefix_hex, limit)

    def iter_ids(self) -> Iterable[tuple[ObjectId, bytes]]:
        """Every ``(id, type)``."""
        return self._inner.iter_ids()


class CachedIndex(_Wrapper):
    """CommitIndexStore whose ``get_many`` is answered from the cache where it can."""

    def __init__(
        self, inner: CommitIndexStore, cache: QueryCache, repo_id: int, defer: Defer | None
    ) -> None:
        self._inner: CommitIndexStore = inner
        self._cache = cache
        self._repo_id = repo_id
        self._defer = defer

    def get_many(self, oids: Iterable[ObjectId]) -> dict[ObjectId, IndexEntry]:
        """Index rows of ``oids`` that exist."""
        wanted = list(dict.fromkeys(oids))
        out = self._cache.get_index(self._repo_id, wanted)
        missing = [o for o in wanted if o not in out]
        if missing:
            found = self._inner.get_many(missing)
            items = list(found.items())
            if self._defer is None:
                self._cache.put_index(self._repo_id, items)
            elif items:
                self._defer(lambda: self._cache.put_index(self._repo_id, items))
            out.update(found)
        return out

    def add(self, entry: IndexEntry, changed: Mapping[int, Iterable[str]]) -> None:
        """Record a commit; its row is cached once the transaction commits, so the next
        commit on the branch finds its parent's row without a query."""
        self._inner.add(entry, changed)
        items = [(entry.oid, entry)]
        if self._defer is None:
            self._cache.put_index(self._repo_id, items)
        else:
            self._defer(lambda: self._cache.put_index(self._repo_id, items))

    def add_many(self, entries: Sequence[tuple[IndexEntry, Mapping[int, Iterable[str]]]]) -> None:
        """Record many commits (an import, a push): not cached, a later read fetches the
        rows it needs."""
        self._inner.add_many(entries)

    def cached_row(self, oid: ObjectId) -> IndexEntry | None:
        """The row of ``oid`` if the cache holds it, without a query: a history walk
        tries this before it reads a generation window from the database."""
        return self._cache.get_index_row(self._repo_id, oid)

    def cached_chain(self, oid: ObjectId, limit: int) -> list[IndexEntry]:
        """Cached rows along first parents from ``oid`` (see
        :meth:`~govc_db.db.cache.QueryCache.get_index_chain`), without a query."""
        return self._cache.get_index_chain(self._repo_id, oid, limit)

    def ancestry(
        self, oids: Sequence[ObjectId], min_generation: int = 0
    ) -> dict[ObjectId, IndexEntry]:
        """One recursive query (not cached: its result depends on the whole graph walk)."""
        return self._inner.ancestry(oids, min_generation)

    def touching(self, path: str) -> set[tuple[ObjectId, int]]:
        """Commits whose changes touch ``path`` (new commits may be added: not cached)."""
        return self._inner.touching(path)

    def iter_all(self) -> Iterable[IndexEntry]:
        """Every index row."""
        return self._inner.iter_all()

    def changed_paths(self, oid: ObjectId) -> dict[int, set[str]]:
        """Changed paths of one commit."""
        return self._inner.changed_paths(oid)


class CachedRefs(_Wrapper):
    """RefStore of a read transaction: reads through the mutable cache under ``token``.

    A write through it (not expected in a read transaction, but allowed by the port) turns
    caching off for the rest of the unit, so it always reads its own writes.
    """

    def __init__(self, inner: RefStore, cache: QueryCache, repo_id: int, token: int) -> None:
        self._inner: RefStore = inner
        self._cache = cache
        self._repo_id = repo_id
        self._token = token
        self._wrote = False

    def _on(self) -> bool:
        return not self._wrote and self._cache.mutable_enabled()

    def get(self, name: str) -> ObjectId | None:
        """The ref's target, or None."""
        if not self._on():
            return self._inner.get(name)
        hit, target = self._cache.get_ref(self._repo_id, name)
        if hit:
            return target
        target = self._inner.get(name)
        self._cache.put_ref(self._token, self._repo_id, name, target)
        return target

    def get_many(self, names: Sequence[str]) -> dict[str, ObjectId]:
        """Targets of those of ``names`` that exist: cached answers (absent ones too),
        one lookup for the rest, remembered as ``get`` remembers them."""
        if not self._on():
            return self._inner.get_many(names)
        found: dict[str, ObjectId] = {}
        missed: list[str] = []
        for name in names:
            hit, target = self._cache.get_ref(self._repo_id, name)
            if not hit:
                missed.append(name)
            elif target is not None:
                found[name] = target
        if missed:
            fetched = self._inner.get_many(missed)
            for name in missed:
                target = fetched.get(name)
                self._cache.put_ref(self._token, self._repo_id, name, target)
                if target is not None:
                    found[name] = target
        return found

    def list_refs(self, prefix: str = "refs/") -> dict[str, ObjectId]:
        """Refs under ``prefix``."""
        if not self._on():
            return self._inner.list_refs(prefix)
        found = self._cache.get_ref_list(self._repo_id, prefix)
        if found is not None:
            return found
        refs = self._inner.list_refs(prefix)
        self._cache.put_ref_list(self._token, self._repo_id, prefix, refs)
        return refs

    def set_if_equals(self, name: str, old: ObjectId | None, new: ObjectId, message: str) -> bool:
        """CAS through the database."""
        self._wrote = True
        return self._inner.set_if_equals(name, old, new, message)

    def add_if_new(self, name: str, new: ObjectId, message: str) -> bool:
        """Create through the database."""
        self._wrote = True
        return self._inner.add_if_new(name, new, message)

    def remove_if_equals(self, name: str, old: ObjectId | None, message: str) -> bool:
        """Delete through the database."""
        self._wrote = True
        return self._inner.remove_if_equals(name, old, message)

    def reflog(self, name: str) -> list[RefLogEntry]:
        """The reflog (appended by every move: never cached)."""
        return self._inner.reflog(name)


class ReadMemo:
    """What a read unit learned, for reads that need no unit at all (:func:`read_cached`):
    the commit and root tree a revision string resolved to (mutable: stored under the
    unit's token, unreachable after any ref write of the repository, like ref listings)
    and the entry at a path below a root tree (immutable)."""

    __slots__ = ("_cache", "_repo_id", "_token")

    def __init__(self, cache: QueryCache, repo_id: int, token: int) -> None:
        self._cache = cache
        self._repo_id = repo_id
        self._token = token

    def remember(
        self, rev: str, commit: ObjectId, tree: ObjectId, path: str, item: TreeItem | None
    ) -> None:
        """``rev`` resolved to ``commit`` (root ``tree``), where ``path`` (validated) is
        ``item`` (None: absent, which is not remembered)."""
        cache = self._cache
        if cache.mutable_enabled():
            cache.put_revision(self._token, self._repo_id, rev, commit, tree)
        if item is not None:
            cache.put_path(self._repo_id, tree, path, item)


Fetch = Callable[[int, Sequence[ObjectId]], Mapping[ObjectId, "RawObject"]]


def read_cached(
    cache: QueryCache, repo_id: int, rev: object, path: object, fetch: Fetch | None = None
) -> bytes | None:
    """The content of the file at ``path`` in ``rev`` when the cache knows where it is
    (what :class:`ReadMemo` remembered), else None: the caller then runs the read in a
    unit, which decides everything else, errors included.

    No transaction: a few locked dictionary lookups, and when the blob itself is not
    cached (evicted), ``fetch(repo_id, [id])`` -- one autocommit point SELECT -- whose
    failure of any kind is also None. Only exact strings a unit already resolved and
    validated can hit, so nothing needs validating here. The staleness bound is the
    mutable cache's (see :mod:`govc_db.db.cache`).
    """
    if type(rev) is not str or type(path) is not str:
        return None
    cache.refresh()
    if not cache.mutable_enabled():
        return None
    resolved = cache.get_revision(repo_id, rev)
    if resolved is None:
        return None
    item = cache.get_path(repo_id, resolved[1], path)
    if item is None or item.mode not in _BLOB_MODES:
        return None
    raw = cache.get_object(repo_id, item.oid)
    if raw is not None:
        return raw.data
    if fetch is None:
        return None
    try:
        found = fetch(repo_id, [item.oid]).get(item.oid)
    except Exception:  # lost connection, anything: the unit decides
        return None
    if found is None:
        return None
    cache.put_objects(repo_id, [(item.oid, found)])
    return found.data

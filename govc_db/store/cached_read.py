"""Read units that open no transaction: refs and index rows from the query cache, objects
from the cache or, for what it lacks, one autocommit point SELECT.

A read unit costs a pool checkout, ``BEGIN``, the repository check, one statement per
lookup and ``COMMIT``. When the cache holds the repository's refs and index rows -- the
usual state of a warm Store -- only object contents can be missing, and objects never
change: an object read needs no snapshot shared with anything else, so it can be one
autocommit statement on a pooled connection, prepared like any hot statement.

:class:`CachedReadUnit` offers the ports of a read unit on those terms. Anything it cannot
answer that way (a ref or index row not cached, a listing, a prefix search, an error of
any kind) raises :class:`CacheMiss` or fails, and the caller runs the same function in an
ordinary unit, which decides; so this path only ever returns what that unit would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from govc_db.db.cache import QueryCache
from govc_db.db.cache_ports import CachedTreeMemo, ReadMemo
from govc_db.db.counters import Counters
from govc_db.objects import ObjectId
from govc_db.store.ports import IndexEntry, RawObject, RefLogEntry

if TYPE_CHECKING:
    from govc_db.store.sql import SqlBackend

__all__ = ["CacheMiss", "CachedReadUnit", "ReadStats", "run_cached"]

T = TypeVar("T")


class CacheMiss(Exception):
    """The cache cannot answer this lookup: run the function in an ordinary unit."""


def _miss(*_: object, **__: object) -> NoReturn:
    raise CacheMiss


class ReadStats(Counters):
    """How reads were answered: by a cached read unit (with the objects it fetched), or by
    an ordinary unit after a miss. Reads answered by the cache alone are not counted here
    (a lock per read would be a tenth of their cost): they are the cache's ``revisions``
    hits."""

    KEYS = ("cached_units", "cached_unit_misses", "fetches", "fetched_objects")


class _Refs:
    """Refs from the mutable cache only."""

    def __init__(self, cache: QueryCache, repo_id: int) -> None:
        self._cache = cache
        self._repo_id = repo_id

    def get(self, name: str) -> ObjectId | None:
        hit, target = self._cache.get_ref(self._repo_id, name)
        if not hit:
            raise CacheMiss
        return target

    def get_many(self, names: Sequence[str]) -> dict[str, ObjectId]:
        found: dict[str, ObjectId] = {}
        for name in names:
            target = self.get(name)
            if target is not None:
                found[name] = target
        return found

    def list_refs(self, prefix: str = "refs/") -> dict[str, ObjectId]:
        found = self._cache.get_ref_list(self._repo_id, prefix)
        if found is None:
            raise CacheMiss
        return found

    def reflog(self, name: str) -> list[RefLogEntry]:
        raise CacheMiss

    set_if_equals = add_if_new = remove_if_equals = _miss


class _Index:
    """Commit-index rows from the cache only."""

    def __init__(self, cache: QueryCache, repo_id: int) -> None:
        self._cache = cache
        self._repo_id = repo_id

    def get_many(self, oids: Iterable[ObjectId]) -> dict[ObjectId, IndexEntry]:
        wanted = list(dict.fromkeys(oids))
        found = self._cache.get_index(self._repo_id, wanted)
        if len(found) != len(wanted):
            raise CacheMiss
        return found

    def ancestry(self, oids: Sequence[ObjectId], min_generation: int = 0) -> NoReturn:
        raise CacheMiss

    add = add_many = window = touching = iter_all = changed_paths = _miss


class _Objects:
    """Objects from the cache, the rest fetched by one autocommit statement."""

    def __init__(self, backend: SqlBackend, cache: QueryCache, repo_id: int) -> None:
        self._backend = backend
        self._cache = cache
        self._repo_id = repo_id
        self.tree_memo = CachedTreeMemo(cache, repo_id, None)

    def get(self, oid: ObjectId) -> RawObject:
        found = self.get_many([oid])
        if oid not in found:
            raise CacheMiss  # absent: the ordinary unit says NotFound
        return found[oid]

    def get_many(self, oids: Iterable[ObjectId]) -> dict[ObjectId, RawObject]:
        wanted = list(dict.fromkeys(oids))
        out = self._cache.get_objects(self._repo_id, wanted)
        missing = [o for o in wanted if o not in out]
        if missing:
            fetched = self._backend.fetch_objects(self._repo_id, missing)
            # Committed rows of immutable objects: remembered at once. Trees are kept
            # parsed by the caller (tree_memo), not raw.
            self._cache.put_objects(
                self._repo_id, [(o, r) for o, r in fetched.items() if r.type != b"tree"]
            )
            out.update(fetched)
        return out

    def has(self, oid: ObjectId) -> bool:
        # A cached object, parsed tree or commit-index row exists; else fetch it.
        cache = self._cache
        if cache.has_object(self._repo_id, oid) or cache.get_index(self._repo_id, [oid]):
            return True
        self.get(oid)  # CacheMiss when absent: the ordinary unit decides
        return True

    # get_bulk: many objects read once go to the ordinary unit's bulk read (here each
    # would be fetched alone).
    has_many = get_bulk = put = put_many = put_bulk = find_prefix = iter_ids = flush = _miss


class CachedReadUnit:
    """The ports of a read unit, answered as the module docstring says."""

    def __init__(self, backend: SqlBackend, cache: QueryCache, repo_id: int, token: int) -> None:
        self.repo_id = repo_id
        self.objects = _Objects(backend, cache, repo_id)
        self.refs = _Refs(cache, repo_id)
        self.index = _Index(cache, repo_id)
        self.read_memo = ReadMemo(cache, repo_id, token)

    savepoint = after_commit = _miss


def run_cached(
    backend: SqlBackend, repo_id: int, fn: Callable[[Any], T], stats: ReadStats
) -> tuple[bool, T | None]:
    """``(True, fn(unit))`` on a :class:`CachedReadUnit`, or ``(False, None)`` when the
    cache cannot serve it (refs not usable now, the repository not known to exist, any
    miss or error inside): then run ``fn`` in an ordinary unit."""
    cache = backend.cache
    if cache is None:
        return False, None
    cache.refresh()
    if not cache.mutable_enabled() or not cache.get_exists(repo_id):
        return False, None
    # Taken before the first lookup: what this unit remembers is refused if anything of
    # the repository was invalidated meanwhile.
    unit = CachedReadUnit(backend, cache, repo_id, cache.token())
    try:
        out = fn(unit)
    except Exception:  # a miss, or an error the ordinary unit must decide
        stats.count(cached_unit_misses=1)
        return False, None
    stats.count(cached_units=1)
    return True, out

"""HTTP caching: ETags, conditional GETs, Cache-Control, and the response cache.

* An answer addressed by an id (a full commit id in the URL, or a blob id) never
  changes: it is cached here (an LRU bounded by bytes) and sent with
  ``Cache-Control: public, max-age=31536000, immutable``.
* An answer addressed by a branch, tag or other revision carries an ETag derived from
  the commit the revision resolves to now (the "ref state") and ``Cache-Control:
  no-cache``; resolving a branch is answered by the library's query cache while it
  knows the ref, so a conditional GET that matches is a 304 without a database trip.
* ``raw`` answers carry ``ETag: "<blob id>"`` (the same bytes under any revision).

* For the fast path (:mod:`govc_db.http.fast`): :class:`Answer` (a remembered 200),
  :class:`RevisionMemo` (what a revision resolved to, valid while the Store's query cache
  saw no invalidation) and :class:`Derivations` (commits made through the service, so
  answers of paths they did not touch carry over).

ETags are strong; the compression middleware weakens them (``W/``) on the encoded
representation, and :func:`matches` compares weakly, as RFC 9110 asks for
``If-None-Match``.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache

if TYPE_CHECKING:
    from govc_db.api.repository import Repository
    from govc_db.db.cache import QueryCache
    from govc_db.types import RefUpdated

__all__ = [
    "ANSWER_OVERHEAD",
    "IMMUTABLE",
    "REVALIDATE",
    "Answer",
    "Derivations",
    "ResponseCache",
    "RevisionMemo",
    "etag_for",
    "is_full_id",
    "matches",
    "repo_id",
]

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
_HEX = frozenset("0123456789abcdef")
#: Bytes charged per remembered answer on top of its body (headers, key, record).
ANSWER_OVERHEAD = 200
#: Revisions remembered; the memo is emptied when full (entries are cheap to recompute).
MAX_REVISIONS = 50_000
#: Commits made through this service whose parent and changed paths are remembered.
MAX_DERIVED = 10_000
#: Parents followed at most when looking for an answer a commit did not change.
MAX_CARRY = 32


def is_full_id(rev: str) -> bool:
    """Whether ``rev`` is a full 40-hex object id (lowercase)."""
    return len(rev) == 40 and _HEX.issuperset(rev)


def etag_for(*parts: str) -> str:
    """A strong ETag naming an answer computed from ``parts`` (ids and route arguments)."""
    digest = hashlib.sha1("\0".join(parts).encode("utf-8", "surrogateescape")).hexdigest()
    return f'"{digest}"'


def matches(if_none_match: str | None, etag: str) -> bool:
    """Weak comparison of ``etag`` with an ``If-None-Match`` header value."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    want = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == want for tag in if_none_match.split(","))


class ResponseCache:
    """Immutable answers (bytes or small values) by key, bounded by ``max_bytes``."""

    def __init__(self, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._data: LRUCache[Any, tuple[int, Any]] = LRUCache(
            max(1, max_bytes), getsizeof=lambda v: v[0]
        )
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Any) -> Any:
        """The cached value or None."""
        with self._lock:
            found = self._data.get(key)
            if found is None:
                self.misses += 1
                return None
            self.hits += 1
            return found[1]

    def put(self, key: Any, value: Any, size: int = 64) -> None:
        """Remember ``value`` (``size`` bytes counted); too large values are skipped."""
        if self.max_bytes <= 0 or size > self.max_bytes // 4:
            return
        with self._lock:
            self._data[key] = (max(1, size), value)

    def get_stats(self) -> dict[str, Any]:
        """Hits, misses, entries and bytes held."""
        with self._lock:
            return {
                "hits": self.hits,
                "misses": self.misses,
                "entries": len(self._data),
                "bytes": int(self._data.currsize),
            }


def repo_id(repo: Repository) -> int:
    """The database id of a repository handle (keys answers to one incarnation of a name)."""
    return repo.id


@dataclass(slots=True)
class Answer:
    """A 200 answer computed from one commit: sent again as is, or as 304. Its size in
    the response cache is its body's; the encoded forms kept with it (one per encoding,
    each smaller than the body for the types compressed) are not counted."""

    etag: str
    content_type: str
    body: bytes
    raw: bool = False  # a file answer (Accept-Ranges)
    encoded: dict[str, bytes] = field(default_factory=dict)
    #: The header values, encoded once (sent on every request that reuses the answer).
    etag_header: bytes = field(init=False, repr=False, compare=False)
    content_type_header: bytes = field(init=False, repr=False, compare=False)
    #: The 304's ASGI start message, built once: (revalidated, immutable). Servers only
    #: read a message, so every conditional GET matching this answer sends the same one.
    #: ETag and Cache-Control only: RFC 9110 (15.4.5) asks a 304 for those (and Date,
    #: the server's) and not to repeat other metadata, such as Accept-Ranges.
    not_modified: tuple[dict[str, Any], dict[str, Any]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self.etag_header = etag = self.etag.encode()
        self.content_type_header = self.content_type.encode()

        def start(cache_control: str) -> dict[str, Any]:
            headers = ((b"etag", etag), (b"cache-control", cache_control.encode()))
            return {"type": "http.response.start", "status": 304, "headers": headers}

        self.not_modified = (start(REVALIDATE), start(IMMUTABLE))


class RevisionMemo:
    """``(repo id, rev) -> commit``, usable while the query cache saw no invalidation of
    that repository (nor a flush).

    Use: ``token = memo.begin()`` *before* resolving, then ``memo.put(token, ...)``; an
    invalidation in between makes the entry unusable from the start.
    """

    def __init__(
        self, cache: QueryCache | None, *, timer: Callable[[], float] = time.monotonic
    ) -> None:
        self._cache = cache
        self._timer = timer
        self._ttl = cache.ref_ttl if cache is not None else 0.0
        self._revs: dict[tuple[int, str], tuple[str, int, float]] = {}
        self.hits = 0
        self.misses = 0

    def begin(self) -> int | None:
        """The query cache's token now (after SQLite's ``data_version`` check), or None
        when refs cannot be remembered (no cache, refs uncached, listener down)."""
        cache = self._cache
        if cache is None:
            return None
        cache.refresh()
        if not cache.mutable_enabled():
            return None
        return cache.token()

    def put(self, token: int | None, repo: int, rev: str, commit: str) -> None:
        """Remember that ``rev`` resolved to ``commit`` (resolved after ``begin``)."""
        if token is None:
            return
        revs = self._revs
        if len(revs) >= MAX_REVISIONS:
            revs.clear()
        revs[(repo, rev)] = (commit, token, self._timer() + self._ttl)

    @property
    def watched(self) -> bool:
        """Whether :meth:`refresh` asks the database (SQLite's ``data_version``)."""
        return self._cache is not None and self._cache.watch is not None

    def refresh(self) -> None:
        """SQLite's ``data_version`` check (a commit of another process flushes)."""
        if self._cache is not None:
            self._cache.refresh()

    def get(self, repo: int, rev: str, *, refresh: bool = True) -> str | None:
        """The commit ``rev`` resolves to now, when nothing can have moved it since.

        ``refresh=False``: the caller made :meth:`refresh` after the request arrived."""
        found = self._revs.get((repo, rev))
        if found is None:
            self.misses += 1
            return None
        cache = self._cache
        if cache is None:
            self.misses += 1
            return None
        if refresh:
            cache.refresh()
        if (
            not cache.mutable_enabled()
            or not cache.valid_since(found[1], repo)
            or found[2] <= self._timer()
        ):
            self.misses += 1
            return None
        self.hits += 1
        return found[0]


def _touches(path: str, changed: frozenset[str]) -> bool:
    """Whether changing the paths ``changed`` can change what is at ``path`` or below
    (the path itself, something below it, or a file replacing a directory above it)."""
    if not path:
        return True
    if path in changed:
        return True
    below = path + "/"
    return any(p.startswith(below) or path.startswith(p + "/") for p in changed)


class Derivations:
    """Commits made through this service: ``commit -> (parent, changed paths)``.

    A file or directory listing the commit did not touch is what it was in the parent,
    so an answer remembered for the parent is the answer for the commit too: after a
    commit the fast path keeps answering every path it did not change (commits made
    elsewhere are not known here; their answers are computed again). The parent is
    learnt from the commit itself when it is next read (:meth:`learn`); until then,
    and for merges, nothing carries over.
    """

    def __init__(self) -> None:
        self._parents: dict[tuple[int, str], tuple[str | None, frozenset[str]]] = {}
        # (repository name, ref, new) -> the ref's old target, "" once it moved there
        # from two different commits (then nothing is known).
        self._moves: dict[tuple[str, str, str], str] = {}
        self._lock = threading.Lock()
        self.carried = 0

    def moved(self, event: RefUpdated) -> None:
        """A ref move committed by this Store (an event of ``store.subscribe``). The move
        that made a noted commit the head of its branch came from its parent: commits
        written together (group commit) are then all known at once, not only the one
        read next."""
        if event.old is None or event.new is None:
            return
        key = (event.repository, event.ref, event.new)
        with self._lock:
            seen = self._moves.get(key)
            if seen is None:
                if len(self._moves) >= MAX_DERIVED:
                    del self._moves[next(iter(self._moves))]  # the oldest
                self._moves[key] = event.old
            elif seen != event.old:
                self._moves[key] = ""

    def note(
        self, repo: int, commit: str, changed: frozenset[str], moved: tuple[str, str] | None = None
    ) -> None:
        """``commit`` (of repository ``repo``) was made with the paths ``changed``;
        ``moved``: (repository name, branch ref) it was committed on. Its parent is the
        branch's old target in the one move to it seen (:meth:`moved`), if any."""
        parent = None
        with self._lock:
            if moved is not None:
                parent = self._moves.get((*moved, commit)) or None
            if len(self._parents) >= MAX_DERIVED:
                self._parents.clear()
            self._parents[(repo, commit)] = (parent, changed)

    def learn(self, repo: int, commit: str, parents: list[str]) -> None:
        """The parents of ``commit``, read from the commit (a noted one gets its parent)."""
        found = self._parents.get((repo, commit))
        if found is not None and found[0] is None and len(parents) == 1:
            self._parents[(repo, commit)] = (parents[0], found[1])

    def find(self, cache: ResponseCache, kind: str, repo: int, commit: str, path: str) -> Any:
        """The remembered answer ``(kind, repo, c, path)`` of the nearest ancestor ``c``
        of ``commit`` along noted commits none of which touched ``path``, or None."""
        here = commit
        for _ in range(MAX_CARRY):
            step = self._parents.get((repo, here))
            if step is None or step[0] is None or _touches(path, step[1]):
                return None
            here = step[0]
            found = cache.get((kind, repo, here, path))
            if found is not None:
                self.carried += 1
                return found
        return None

"""The two small ports the version-control core uses, plus the commit index.

Implementations: :mod:`govc_db.store.sql` (SQLite and PostgreSQL). The interface is
kept narrow on purpose so a packed or chunked layout can replace row-per-object
storage later without touching the core.

All ids are raw :class:`~govc_db.objects.ObjectId` bytes; ref names are full names
(``refs/heads/main``). Every call happens inside one :class:`Unit` (one connection,
one transaction), so a commit's objects, index rows and ref move land together.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from govc_db.errors import GovcError
from govc_db.objects import ObjectId

__all__ = [
    "CommitIndexStore",
    "IndexEntry",
    "ObjectStore",
    "RawObject",
    "RefLogEntry",
    "RefStore",
    "Splice",
    "Unit",
]


class RawObject(NamedTuple):
    """A git object as stored: its type name (``b"blob"`` ...) and raw git content."""

    type: bytes
    data: bytes


class Splice(NamedTuple):
    """An object the store keeps as a *splice* of another one, its ``base`` (same
    repository): its content is ``base[:prefix] + middle + base[len(base) - suffix:]``.
    A reader holding the base rebuilds it with two slices; a pack writer that sent the
    base already sends it as a git delta (copy, insert, copy) without rebuilding it."""

    type: bytes
    size: int
    base: ObjectId
    prefix: int
    suffix: int
    middle: bytes

    def apply(self, base: bytes) -> bytes:
        """The object's content, given its base's; ``GovcError`` if they do not fit."""
        cut = len(base) - self.suffix
        if self.prefix > cut or self.prefix + len(self.middle) + self.suffix != self.size:
            raise GovcError("stored object data is corrupt (splice size mismatch)")
        return b"".join((base[: self.prefix], self.middle, base[cut:]))


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One commit-index row with its ordered parents."""

    oid: ObjectId
    tree: ObjectId
    parents: tuple[ObjectId, ...]
    generation: int
    author_time: int
    committer_time: int


@dataclass(frozen=True, slots=True)
class RefLogEntry:
    """One ref move; ``old``/``new`` are None when the ref was created/deleted."""

    ref: str
    old: ObjectId | None
    new: ObjectId | None
    time: float
    message: str


class ObjectStore(Protocol):
    """Content-addressed objects of one repository."""

    def get(self, oid: ObjectId) -> RawObject:
        """The object; ``NotFound`` when this repository has no such object."""
        ...

    def get_many(self, oids: Iterable[ObjectId]) -> dict[ObjectId, RawObject]:
        """The objects that exist among ``oids`` (missing ones are simply absent)."""
        ...

    def has(self, oid: ObjectId) -> bool:
        """Whether the object exists."""
        ...

    def has_many(self, oids: Iterable[ObjectId]) -> set[ObjectId]:
        """The subset of ``oids`` that exists."""
        ...

    def put(self, type_name: bytes, data: bytes, base: ObjectId | None = None) -> ObjectId:
        """Store one object (deduplicated) and return its id; ``base`` as in put_many."""
        ...

    def put_many(
        self,
        objects: Iterable[tuple[bytes, bytes]],
        bases: Sequence[ObjectId | None] | None = None,
    ) -> list[ObjectId]:
        """Store many ``(type, data)`` objects (deduplicated); ids in input order.

        ``bases``, aligned with ``objects``, is an optional hint: for each object, an
        object of this repository it probably resembles (the previous version of the
        same path, the parent's tree, the parent commit), or None. The store may keep
        the object as a delta against it (the storage optimizer) or ignore the hint;
        what is read back is the same either way.
        """
        ...

    def get_bulk(self, oids: Sequence[ObjectId]) -> dict[ObjectId, RawObject]:
        """As :meth:`get_many`, for reading many objects once (the pack of a clone or a
        fetch): the same contents, read the cheapest way the store has, and nothing read
        is remembered in a cache. The caller bounds memory by the size of ``oids``."""
        ...

    def get_bulk_spliced(self, oids: Sequence[ObjectId]) -> dict[ObjectId, RawObject | Splice]:
        """As :meth:`get_bulk`, except that an object stored as a splice of another is
        returned as that :class:`Splice`, not rebuilt (its base is not read for it)."""
        ...

    def iter_bulk(
        self, chunks: Iterable[Sequence[ObjectId]], *, spliced: bool = False
    ) -> Generator[dict[ObjectId, RawObject | Splice], None, None]:
        """:meth:`get_bulk` (with ``spliced``, :meth:`get_bulk_spliced`) of each chunk,
        in order; the store may read the next chunk while the caller works on this one.
        Close the iterator if it is left before its end."""
        ...

    def put_bulk(
        self,
        objects: Iterable[tuple[bytes, bytes]],
        *,
        bases: Sequence[tuple[ObjectId, bytes] | None] | None = None,
        ids: Sequence[ObjectId] | None = None,
    ) -> list[ObjectId]:
        """As :meth:`put_many`, for writing many objects once (an import, a pushed
        pack): nothing written is remembered in a cache (a later read fetches it). Ids in
        input order; as with ``put_many``, the rows are visible to other transactions
        only once this one commits.

        ``bases`` (aligned with ``objects``): an optional hint, the id *and content* of
        an object each one resembles (a pack's delta base), which the store may use to
        keep it as a cheap delta or ignore. ``ids``: the objects' ids when the caller
        computed them already (they are then trusted, not recomputed)."""
        ...

    def find_prefix(self, prefix_hex: str, limit: int = 2) -> list[ObjectId]:
        """Ids starting with ``prefix_hex`` (lowercase hex, >= 4 chars), at most ``limit``."""
        ...

    def iter_ids(self) -> Iterable[tuple[ObjectId, bytes]]:
        """Every ``(id, type)`` of this repository (for verify)."""
        ...


class RefStore(Protocol):
    """Named refs of one repository, changed only by compare-and-swap."""

    def get(self, name: str) -> ObjectId | None:
        """The ref's target, or None."""
        ...

    def get_many(self, names: Sequence[str]) -> dict[str, ObjectId]:
        """The targets of those of ``names`` that exist (one lookup for several names,
        as revision parsing tries ``refs/<n>``, ``refs/tags/<n>``, ``refs/heads/<n>`` ...)."""
        ...

    def list_refs(self, prefix: str = "refs/") -> dict[str, ObjectId]:
        """All refs whose full name starts with ``prefix``."""
        ...

    def set_if_equals(self, name: str, old: ObjectId | None, new: ObjectId, message: str) -> bool:
        """Point ``name`` at ``new`` if it currently is ``old`` (None: absent). False if not."""
        ...

    def add_if_new(self, name: str, new: ObjectId, message: str) -> bool:
        """Create ``name`` if it does not exist. False if it does."""
        ...

    def remove_if_equals(self, name: str, old: ObjectId | None, message: str) -> bool:
        """Delete ``name`` if it is ``old`` (None: any value). False if not."""
        ...

    def reflog(self, name: str) -> list[RefLogEntry]:
        """Every recorded move of ``name``, oldest first."""
        ...


class CommitIndexStore(Protocol):
    """Commit-index rows (parents, generation, times, tree) and changed paths."""

    def add(self, entry: IndexEntry, changed: Mapping[int, Iterable[str]]) -> None:
        """Record a commit; ``changed[i]`` = file paths changed against parent ``i``
        (``changed[0]`` for a root commit: every path it holds). Idempotent.
        """
        ...

    def add_many(self, entries: Sequence[tuple[IndexEntry, Mapping[int, Iterable[str]]]]) -> None:
        """Record many commits at once (an import slice, a pushed pack), each as
        :meth:`add` would; a commit's parents must be recorded already or come earlier
        in ``entries``. Idempotent; the rows are not remembered in a cache."""
        ...

    def get_many(self, oids: Iterable[ObjectId]) -> dict[ObjectId, IndexEntry]:
        """Index rows of the given commits (missing ones absent)."""
        ...

    def ancestry(
        self, oids: Sequence[ObjectId], min_generation: int = 0
    ) -> dict[ObjectId, IndexEntry]:
        """``oids`` and every ancestor with ``generation >= min_generation``, in one query."""
        ...

    def window(self, min_generation: int, max_generation: int) -> dict[ObjectId, IndexEntry]:
        """Every commit of the repository whose generation lies in the closed range."""
        ...

    def touching(self, path: str) -> set[tuple[ObjectId, int]]:
        """``(commit, parent position)`` pairs whose change set touches ``path``
        (the path itself, or anything below it when it is a directory).
        """
        ...

    def iter_all(self) -> Iterable[IndexEntry]:
        """Every index row of this repository (for verify)."""
        ...

    def changed_paths(self, oid: ObjectId) -> dict[int, set[str]]:
        """The recorded changed paths of one commit, by parent position."""
        ...


class Unit(Protocol):
    """One connection and one transaction, scoped to one repository."""

    @property
    def repo_id(self) -> int:
        """The repository this unit is scoped to."""
        ...

    @property
    def objects(self) -> ObjectStore:
        """Objects of the repository."""
        ...

    @property
    def refs(self) -> RefStore:
        """Refs of the repository."""
        ...

    @property
    def index(self) -> CommitIndexStore:
        """Commit index of the repository."""
        ...

    def savepoint(self) -> AbstractContextManager[object]:
        """A nested transaction: everything written inside is undone if the block raises."""
        ...

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once this unit's transaction has committed (never on rollback)."""
        ...

"""The unit several commits of one group share (group commit, :mod:`govc_db.db.branchlocks`).

Each commit of a group runs :func:`~govc_db.core.commit.commit_changes` in turn on the
same unit, and must build on the commit before it: read the branch where that one moved
it, and find its index row (the new commit's parent). A speculative unit sends its
writes only at the end, so neither is in the database yet: :class:`GroupUnit` answers
them from what the earlier members wrote (their successful compare-and-swaps, their
index rows), and forwards everything else to the unit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from govc_db.objects import ObjectId
from govc_db.store.ports import CommitIndexStore, IndexEntry, ObjectStore, RefStore, Unit

__all__ = ["GroupUnit"]


class _Refs:
    """The unit's refs, with the moves made by the group so far read first."""

    def __init__(self, inner: RefStore) -> None:
        self._inner = inner
        self._moved: dict[str, ObjectId | None] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_inner"], name)

    def get(self, name: str) -> ObjectId | None:
        """The group's move of ``name``, else the unit's answer."""
        if name in self._moved:
            return self._moved[name]
        return self._inner.get(name)

    def get_many(self, names: Sequence[str]) -> dict[str, ObjectId]:
        """As :meth:`get`, for several names."""
        rest = [n for n in names if n not in self._moved]
        found = self._inner.get_many(rest) if rest else {}
        for n in names:
            if n in self._moved:
                target = self._moved[n]
                if target is not None:
                    found[n] = target
        return found

    def list_refs(self, prefix: str = "refs/") -> dict[str, ObjectId]:
        """The unit's refs under ``prefix``, with the group's moves applied."""
        found = self._inner.list_refs(prefix)
        for n, target in self._moved.items():
            if n.startswith(prefix):
                if target is None:
                    found.pop(n, None)
                else:
                    found[n] = target
        return found

    def set_if_equals(self, name: str, old: ObjectId | None, new: ObjectId, message: str) -> bool:
        """The unit's compare-and-swap; a success is seen by the next members."""
        ok = self._inner.set_if_equals(name, old, new, message)
        if ok:
            self._moved[name] = new
        return ok

    def add_if_new(self, name: str, new: ObjectId, message: str) -> bool:
        """The unit's creation; a success is seen by the next members."""
        ok = self._inner.add_if_new(name, new, message)
        if ok:
            self._moved[name] = new
        return ok

    def remove_if_equals(self, name: str, old: ObjectId | None, message: str) -> bool:
        """The unit's deletion; a success is seen by the next members."""
        ok = self._inner.remove_if_equals(name, old, message)
        if ok:
            self._moved[name] = None
        return ok


class _Index:
    """The unit's commit index, with the rows the group wrote so far read first."""

    def __init__(self, inner: CommitIndexStore) -> None:
        self._inner = inner
        self._added: dict[ObjectId, IndexEntry] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_inner"], name)

    def add(self, entry: IndexEntry, changed: Mapping[int, Iterable[str]]) -> None:
        """Record the row in the unit, and for the next members."""
        self._inner.add(entry, changed)
        self._added[entry.oid] = entry

    def add_many(self, entries: Sequence[tuple[IndexEntry, Mapping[int, Iterable[str]]]]) -> None:
        """Record the rows in the unit, and for the next members."""
        self._inner.add_many(entries)
        for entry, _ in entries:
            self._added[entry.oid] = entry

    def get_many(self, oids: Iterable[ObjectId]) -> dict[ObjectId, IndexEntry]:
        """Rows the group wrote, then the unit's."""
        wanted = list(oids)
        out = {o: self._added[o] for o in wanted if o in self._added}
        rest = [o for o in wanted if o not in out]
        if rest:
            out.update(self._inner.get_many(rest))
        return out


class GroupUnit:
    """``unit`` as the commits of one group see it (see the module docstring)."""

    def __init__(self, unit: Unit) -> None:
        self._unit = unit
        self._refs = _Refs(unit.refs)
        self._index = _Index(unit.index)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_unit"], name)

    @property
    def repo_id(self) -> int:
        """The repository of the unit."""
        return self._unit.repo_id

    @property
    def objects(self) -> ObjectStore:
        """The unit's objects (its pending writes answer reads already)."""
        return self._unit.objects

    @property
    def refs(self) -> RefStore:
        """Refs, with the group's moves so far."""
        return self._refs

    @property
    def index(self) -> CommitIndexStore:
        """The commit index, with the group's rows so far."""
        return self._index

    def savepoint(self) -> AbstractContextManager[object]:
        """The unit's savepoint."""
        return self._unit.savepoint()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the group's transaction committed."""
        self._unit.after_commit(callback)

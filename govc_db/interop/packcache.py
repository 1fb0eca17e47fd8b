"""Packs of whole-history clones, kept to serve the next clone of the same history.

git serves a clone from the packs it already has (the deltas and zlib streams are copied
as they are); without them, building a pack costs Python work per object. This keeps the
entries of the last whole-history clone of each repository (per pack format: ofs-delta or
not, delta settings), and a later clone whose history contains that one sends them as
they are, followed by the objects its own wants add (planned as an incremental fetch that
has the kept clone's tips): git receives one pack either way, and that pack is kept in its
place.

Never stale, by construction: a part is keyed by the commits it holds, and git objects are
content-addressed, so the entries for a set of ids never change. Before a part is used,
its tips are checked to be ancestors of the new wants in the reading transaction (and its
other wanted objects, tags, to be wanted again or still tagged), so a clone never receives
an object it could not reach; a repository recreated under an old id passes only if it
holds the same history.

The memory is bounded by bytes (``Settings.clone_pack_cache_bytes``, least recently used
parts dropped first), and one clone at a time collects its pack to keep. When the objects
appended to a part since it was built whole (each of those goes without a delta against
the part) would be more than a quarter of it, the clone's pack is built whole again.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from govc_db.objects import ObjectId
from govc_db.objects.lenient import lenient_tag_target
from govc_db.store.ports import Unit

__all__ = ["PackCache", "PackPart", "peel", "usable"]

#: A part is rebuilt when a clone would add more than 1/REBUILD_RATIO of its count.
REBUILD_RATIO: Final = 4


@dataclass(frozen=True, slots=True)
class PackPart:
    """The entries of one whole-history clone's pack, and what they hold."""

    body: bytes
    count: int
    oids: frozenset[ObjectId]
    tips: tuple[ObjectId, ...]
    """The commits whose whole history the entries hold."""
    others: frozenset[ObjectId]
    """Wanted or included objects that are not commits (annotated tags)."""
    loose: int
    """Objects appended to a part kept before (each whole or a delta within the
    appended ones, never against the part)."""
    cost: int
    """Bytes of memory charged for it."""

    @staticmethod
    def build(
        body: bytes,
        oids: Iterable[ObjectId],
        tips: Sequence[ObjectId],
        others: Iterable[ObjectId],
        loose: int = 0,
    ) -> PackPart:
        """A part of ``body`` holding ``oids``, charged its bytes and its id set's."""
        ids = frozenset(oids)
        cost = len(body) + sys.getsizeof(ids) + sum(map(sys.getsizeof, ids))
        return PackPart(body, len(ids), ids, tuple(tips), frozenset(others), loose, cost)


Key = tuple[int, bool, bool, int]
"""(repository id, ofs-delta, deltas, max delta depth)."""


class PackCache:
    """Bounded, thread-safe: the latest :class:`PackPart` of each repository and format."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._parts: OrderedDict[Key, PackPart] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self._capturing = False

    @property
    def enabled(self) -> bool:
        """Whether parts are kept at all."""
        return self.max_bytes > 0

    def get(self, key: Key) -> PackPart | None:
        """The part kept for ``key``, if any."""
        with self._lock:
            part = self._parts.get(key)
            if part is not None:
                self._parts.move_to_end(key)
            return part

    def put(self, key: Key, part: PackPart) -> None:
        """Keep ``part`` for ``key`` (replacing the one there) if it fits at all."""
        if part.cost > self.max_bytes:
            return
        with self._lock:
            old = self._parts.pop(key, None)
            if old is not None:
                self._bytes -= old.cost
            self._parts[key] = part
            self._bytes += part.cost
            while self._bytes > self.max_bytes:
                _, dropped = self._parts.popitem(last=False)
                self._bytes -= dropped.cost

    def begin_capture(self) -> bool:
        """Whether the caller may collect a pack to keep: one at a time, so the memory
        held for packs being collected is bounded by one more ``max_bytes``."""
        with self._lock:
            if self._capturing or not self.enabled:
                return False
            self._capturing = True
            return True

    def end_capture(self) -> None:
        """The collecting clone is done (kept or not)."""
        with self._lock:
            self._capturing = False

    def count(self, hit: bool) -> None:
        """Record a whole-history clone served with (``hit``) or without a part."""
        with self._lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1

    def stats(self) -> dict[str, int]:
        """Parts kept, their bytes, and clones served with (hits) or without one."""
        with self._lock:
            return {
                "parts": len(self._parts),
                "bytes": self._bytes,
                "hits": self.hits,
                "misses": self.misses,
            }


def peel(unit: Unit, wants: Sequence[ObjectId]) -> tuple[list[ObjectId], list[ObjectId]]:
    """``(commits, others)``: the commits ``wants`` lead to (annotated tags followed) and
    the wanted objects that are not commits; ``([], [])`` if any object is missing."""
    commits: list[ObjectId] = []
    others: list[ObjectId] = []
    pending = list(wants)
    for _ in range(16):  # tags of tags, as far as git follows them
        if not pending:
            break
        found = unit.objects.get_bulk(pending)
        nxt: list[ObjectId] = []
        for oid in pending:
            raw = found.get(oid)
            if raw is None:
                return [], []
            if raw.type == b"commit":
                commits.append(oid)
            else:
                others.append(oid)
                if raw.type == b"tag":
                    nxt.append(lenient_tag_target(raw.data))
        pending = nxt
    return list(dict.fromkeys(commits)), others


def usable(
    unit: Unit,
    part: PackPart,
    commits: Sequence[ObjectId],
    wanted: set[ObjectId],
    tagged: set[ObjectId],
) -> bool:
    """Whether every object of ``part`` is reachable from the wants of this clone:
    its tips are ancestors of ``commits`` in this snapshot, and its other objects are
    wanted or still tagged."""
    if not part.tips or not commits:
        return False
    if not part.others <= (wanted | tagged):
        return False
    rows = unit.index.get_many(part.tips)
    if len(rows) != len(part.tips):
        return False
    bound = min(r.generation for r in rows.values())
    reach = unit.index.ancestry(list(commits), bound)
    return all(t in reach for t in part.tips)

"""A govc_db repository seen through dulwich's server seam (``BackendRepo``).

dulwich's ``UploadPackHandler`` speaks the protocol (ref advertisement, want/have
negotiation with multi-ack, shallow, side-band); it asks the repository for refs, peeled
tags, the objects to send (:meth:`GovcBackendRepo.find_missing_objects`, answered here
from the commit index by :mod:`govc_db.interop.walk`) and then each object by id. All of it
runs inside one read unit (one transaction: a consistent snapshot) on the worker thread
of the request. Objects are handed to the pack writer exactly as stored, never re-encoded,
and read in batches of the planned order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from dulwich.object_format import DEFAULT_OBJECT_FORMAT, ObjectFormat
from dulwich.objects import ObjectID, ShaFile
from dulwich.refs import Ref

from govc_db.errors import NotFound
from govc_db.interop.walk import plan_fetch
from govc_db.objects import TYPE_NUMBERS, ObjectId
from govc_db.objects.lenient import lenient_tag_target
from govc_db.store.ports import RawObject, Unit

__all__ = ["GovcBackendRepo", "GovcObjectStore", "GovcRefs"]

_PREFETCH = 500
_STASH_BYTES = 64 * 1024 * 1024


def _raw(hexsha: bytes | str) -> ObjectId:
    """A raw id from dulwich's hex (or already raw 20-byte) id; ``ValueError`` if neither."""
    if isinstance(hexsha, bytes) and len(hexsha) == 20:
        return ObjectId(hexsha)
    text = hexsha.decode("ascii") if isinstance(hexsha, bytes) else hexsha
    if len(text) != 40:
        raise ValueError("not an object id")
    return ObjectId(bytes.fromhex(text))


class _Whole:
    """What dulwich's pack writer needs of an object: its type, bytes and id."""

    __slots__ = ("_data", "_oid", "type_num")

    def __init__(self, oid: ObjectId, raw: RawObject) -> None:
        self.type_num = TYPE_NUMBERS[raw.type]
        self._data = raw.data
        self._oid = oid

    def as_raw_chunks(self) -> list[bytes]:
        return [self._data]

    def sha(self) -> _Whole:
        return self

    def digest(self) -> bytes:
        return self._oid


class _Graph:
    """dulwich's commit-graph seam (``get_parents``), answered by the commit index."""

    def __init__(self, unit: Unit) -> None:
        self._unit = unit

    def get_parents(self, oid: ObjectID) -> list[ObjectID] | None:
        row = self._unit.index.get_many([_raw(oid)]).get(_raw(oid))
        return None if row is None else [ObjectID(p.hex().encode()) for p in row.parents]


class GovcObjectStore:
    """The object-store calls dulwich's upload-pack makes, over one read unit."""

    object_format: ObjectFormat = DEFAULT_OBJECT_FORMAT

    def __init__(self, unit: Unit, *, deltas: bool = True, max_depth: int = 50) -> None:
        self._unit = unit
        self._planned: list[ObjectId] = []
        self._position: dict[ObjectId, int] = {}
        self._buffer: dict[ObjectId, RawObject] = {}
        self._bases: dict[ObjectId, ObjectId] = {}
        self._known: dict[ObjectId, bytes] = {}
        self._stash: dict[ObjectId, RawObject] = {}
        self._depth: dict[ObjectId, int] = {}
        self._deltas = deltas
        self._max_depth = max_depth

    def plan(
        self,
        oids: list[ObjectId],
        bases: dict[ObjectId, ObjectId] | None = None,
        known: dict[ObjectId, bytes] | None = None,
    ) -> None:
        """The ids the pack writer will ask for next, in order (read ahead in batches),
        the delta base candidate of some of them, and trees already read."""
        self._planned = oids
        self._position = {oid: i for i, oid in enumerate(oids)}
        self._bases = bases or {}
        self._known = known or {}

    def _get(self, oid: ObjectId) -> RawObject:
        hit = self._stash.pop(oid, None) or self._buffer.pop(oid, None)
        if hit is not None:
            return hit
        tree = self._known.pop(oid, None)
        if tree is not None:
            return RawObject(b"tree", tree)
        at = self._position.get(oid)
        if at is None:
            found = self._unit.objects.get_many([oid])
        else:
            chunk = self._planned[at : at + _PREFETCH]
            found = self._unit.objects.get_many(chunk)
            self._buffer = dict(found)
            self._buffer.pop(oid, None)
        if oid not in found:
            raise KeyError(oid.hex())
        return found[oid]

    def __contains__(self, hexsha: object) -> bool:
        """Whether this repository holds the object (hex id)."""
        if not isinstance(hexsha, bytes | str):
            return False
        try:
            return self._unit.objects.has(_raw(hexsha))
        except ValueError:
            return False

    def __getitem__(self, hexsha: ObjectID) -> Any:
        """The object: parsed for the protocol's walks, raw on its way into the pack."""
        oid = _raw(hexsha)
        raw = self._get(oid)
        if oid in self._position:
            return _Whole(oid, raw)  # planned: on its way to the pack writer, no parsing
        return ShaFile.from_raw_string(TYPE_NUMBERS[raw.type], raw.data, sha=hexsha)

    def get_raw(self, hexsha: ObjectID) -> tuple[int, bytes]:
        """``(type number, raw content)``."""
        raw = self._get(_raw(hexsha))
        return TYPE_NUMBERS[raw.type], raw.data

    def iter_unpacked_subset(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """Deltas dulwich may reuse (asked for first): the planned trees and blobs whose
        previous version (same path) is in the same pack, as deltas against it."""
        if not self._deltas or not self._bases:
            return iter(())
        return self._deltified()

    def _deltified(self) -> Iterator[Any]:
        # One pass over the planned objects, each read once: deltas are yielded, whole
        # objects stashed (up to _STASH_BYTES) for the pack writer's second pass.
        from dulwich.pack import REF_DELTA, UnpackedObject, create_delta

        bases, planned, depth, known = self._bases, self._position, self._depth, self._known
        recent: dict[ObjectId, RawObject] = {}
        stash, stashed = self._stash, 0
        order = self._planned
        for i in range(0, len(order), _PREFETCH):
            chunk = order[i : i + _PREFETCH]
            need = chunk + [bases[o] for o in chunk if bases.get(o) in planned]
            wanted = []
            for x in need:
                if x in recent:
                    continue
                tree = known.get(x)
                if tree is not None:
                    recent[x] = RawObject(b"tree", tree)
                else:
                    wanted.append(x)
            if wanted:
                recent.update(self._unit.objects.get_many(wanted))
            for oid in chunk:
                raw = recent.get(oid)
                if raw is None:
                    continue  # missing: the second pass reports it
                base = bases.get(oid)
                source = recent.get(base) if base is not None and base in planned else None
                level = depth.get(base, 0) + 1 if base is not None else 0
                if source is not None and level <= self._max_depth:
                    delta = b"".join(create_delta(source.data, raw.data))
                    if len(delta) * 2 <= len(raw.data):
                        depth[oid] = level
                        yield UnpackedObject(
                            REF_DELTA, delta_base=base, decomp_chunks=[delta], sha=oid
                        )
                        continue
                if stashed < _STASH_BYTES and oid not in known:
                    stash[oid] = raw
                    stashed += len(raw.data)
            # Keep this chunk as the next one's likely bases; drop the rest.
            keep = set(chunk)
            recent = {k: v for k, v in recent.items() if k in keep}

    def get_commit_graph(self) -> _Graph:
        """Parents from the commit index (for shallow requests)."""
        return _Graph(self._unit)

    def find_common_revisions(self, graphwalker: Any) -> list[ObjectID]:
        """Acknowledge the client's haves that this repository holds."""
        haves: list[ObjectID] = []
        sha = next(graphwalker)
        while sha:
            if sha in self:
                haves.append(sha)
                graphwalker.ack(sha)
            sha = next(graphwalker)
        return haves


class GovcRefs:
    """The refs calls of dulwich's handlers: listing and symbolic ``HEAD``."""

    def __init__(self, refs: dict[str, ObjectId], default_branch: str) -> None:
        self._refs = refs
        self._head = "refs/heads/" + default_branch

    def get_symrefs(self) -> dict[Ref, Ref]:
        """``HEAD`` -> the default branch, when it exists."""
        if self._head in self._refs:
            return {Ref(b"HEAD"): Ref(self._head.encode())}
        return {}

    def as_dict(self) -> dict[Ref, ObjectID]:
        """Every ref, and ``HEAD``."""
        out = {Ref(k.encode()): ObjectID(v.hex().encode()) for k, v in self._refs.items()}
        if self._head in self._refs:
            out[Ref(b"HEAD")] = ObjectID(self._refs[self._head].hex().encode())
        return out


class GovcBackendRepo:
    """dulwich's ``BackendRepo`` over one govc_db read unit."""

    object_format: ObjectFormat = DEFAULT_OBJECT_FORMAT

    def __init__(
        self, unit: Unit, default_branch: str, *, deltas: bool = True, max_depth: int = 50
    ) -> None:
        self._unit = unit
        self.object_store = GovcObjectStore(unit, deltas=deltas, max_depth=max_depth)
        self.refs = GovcRefs(unit.refs.list_refs("refs/"), default_branch)
        self.govc_repository: Any = None
        self.hooks: dict[str, Any] = {}  # no server-side hooks
        self.repo = self  # dulwich's get_tagged() peels through ``handler.repo.repo``
        self._peeled: dict[Ref, ObjectID | None] = {}

    def get_refs(self) -> dict[Ref, ObjectID]:
        """Every ref, and ``HEAD``."""
        return self.refs.as_dict()

    def get_peeled(self, ref: Ref) -> ObjectID | None:
        """What ``ref`` points at, annotated tags followed."""
        if ref in self._peeled:
            return self._peeled[ref]
        target = self.get_refs().get(ref)
        if target is None:
            raise KeyError(ref)
        oid = _raw(target)
        for _ in range(10):
            raw = self._unit.objects.get_many([oid]).get(oid)
            if raw is None or raw.type != b"tag":
                break
            oid = lenient_tag_target(raw.data)
        peeled = ObjectID(oid.hex().encode())
        self._peeled[ref] = peeled
        return peeled

    def find_missing_objects(
        self,
        determine_wants: Callable[[Mapping[Ref, ObjectID], int | None], list[ObjectID]],
        graph_walker: Any,
        progress: Callable[[bytes], None] | None,
        *,
        get_tagged: Callable[[], dict[ObjectID, ObjectID]] | None = None,
        depth: int | None = None,
    ) -> list[tuple[ObjectID, None]] | None:
        """Negotiate through dulwich's walker, then plan the pack from the index."""
        wants = determine_wants(self.get_refs(), depth)
        shallow: set[ObjectID] = set(getattr(graph_walker, "shallow", set()))
        unshallow = set(getattr(graph_walker, "unshallow", set()))
        if not wants:
            return None if (shallow or unshallow) else []
        haves = self.object_store.find_common_revisions(graph_walker)
        if shallow or unshallow:
            haves = []
        tagged = get_tagged() if get_tagged is not None else {}
        try:
            plan = plan_fetch(
                self._unit,
                [_raw(w) for w in wants],
                [_raw(h) for h in haves],
                {_raw(s) for s in shallow},
                {_raw(k): _raw(v) for k, v in tagged.items()},
            )
        except NotFound as exc:
            raise KeyError(str(exc)) from None
        ids = plan.ids()
        self.object_store.plan(ids, plan.bases, plan.tree_data)
        return [(ObjectID(oid.hex().encode()), None) for oid in ids]

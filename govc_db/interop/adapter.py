"""A govc_db repository seen through dulwich's server seam (``BackendRepo``).

dulwich's ``UploadPackHandler`` speaks the protocol (ref advertisement, want/have
negotiation with multi-ack, shallow, side-band); it asks the repository for refs, peeled
tags, the objects to send (:meth:`GovcBackendRepo.find_missing_objects`, answered here
from the commit index by :mod:`govc_db.interop.walk`) and then each object by id. All of it
runs inside one read unit (one transaction: a consistent snapshot) on the worker thread
of the request. The pack itself is written by :mod:`govc_db.interop.sendpack` from the
plan (objects exactly as stored, never re-encoded), not by dulwich's pack writer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dulwich.object_format import DEFAULT_OBJECT_FORMAT, ObjectFormat
from dulwich.objects import ObjectID, ShaFile
from dulwich.refs import Ref

from govc_db.errors import GovcError, NotFound
from govc_db.interop.packcache import REBUILD_RATIO, Key, PackCache, PackPart, peel, usable
from govc_db.interop.sendpack import TreeEntries, write_fetch_pack
from govc_db.interop.walk import Plan, plan_fetch
from govc_db.objects import TYPE_NUMBERS, ObjectId
from govc_db.objects.lenient import lenient_tag_target
from govc_db.store.ports import RawObject, Unit

__all__ = ["GovcBackendRepo", "GovcObjectStore", "GovcRefs"]


def _raw(hexsha: bytes | str) -> ObjectId:
    """A raw id from dulwich's hex (or already raw 20-byte) id; ``ValueError`` if neither."""
    if isinstance(hexsha, bytes) and len(hexsha) == 20:
        return ObjectId(hexsha)
    text = hexsha.decode("ascii") if isinstance(hexsha, bytes) else hexsha
    if len(text) != 40:
        raise ValueError("not an object id")
    return ObjectId(bytes.fromhex(text))


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
        self._deltas = deltas
        self._max_depth = max_depth

    @property
    def deltas(self) -> bool:
        """Whether trees and blobs may go as deltas (``Settings.fetch_deltas``)."""
        return self._deltas

    @property
    def max_depth(self) -> int:
        """The longest delta chain sent (``Settings.fetch_delta_depth``)."""
        return self._max_depth

    def _get(self, oid: ObjectId) -> RawObject:
        found = self._unit.objects.get_many([oid])
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
        """The object, parsed (for the protocol's walks)."""
        raw = self._get(_raw(hexsha))
        return ShaFile.from_raw_string(TYPE_NUMBERS[raw.type], raw.data, sha=hexsha)

    def get_raw(self, hexsha: ObjectID) -> tuple[int, bytes]:
        """``(type number, raw content)``."""
        raw = self._get(_raw(hexsha))
        return TYPE_NUMBERS[raw.type], raw.data

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
        self,
        unit: Unit,
        default_branch: str,
        *,
        deltas: bool = True,
        max_depth: int = 50,
        pack_cache: PackCache | None = None,
    ) -> None:
        self._unit = unit
        self.object_store = GovcObjectStore(unit, deltas=deltas, max_depth=max_depth)
        self.refs = GovcRefs(unit.refs.list_refs("refs/"), default_branch)
        self.govc_repository: Any = None
        self.hooks: dict[str, Any] = {}  # no server-side hooks
        self.repo = self  # dulwich's get_tagged() peels through ``handler.repo.repo``
        self._peeled: dict[Ref, ObjectID | None] = {}
        self._cache = pack_cache
        self.plan: Plan | None = None
        self.part: PackPart | None = None
        self._keep: tuple[list[ObjectId], list[ObjectId]] | None = None
        self.ofs = True

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
        ofs: Callable[[], bool] | None = None,
    ) -> int | None:
        """Negotiate through dulwich's walker, then plan the pack from the index (or
        from a kept clone's pack, see :mod:`govc_db.interop.packcache`); the number of
        objects to send, None when nothing is to be sent. ``ofs()``: whether the client
        accepts ofs-deltas (known once its wants are read)."""
        wants = determine_wants(self.get_refs(), depth)
        shallow: set[ObjectID] = set(getattr(graph_walker, "shallow", set()))
        unshallow = set(getattr(graph_walker, "unshallow", set()))
        if not wants:
            return None if (shallow or unshallow) else 0
        haves = self.object_store.find_common_revisions(graph_walker)
        if shallow or unshallow:
            haves = []
        tagged = get_tagged() if get_tagged is not None else {}
        want_ids = [_raw(w) for w in wants]
        tags = {_raw(k): _raw(v) for k, v in tagged.items()}
        self.ofs = ofs() if ofs is not None else True
        whole = not haves and not shallow and not unshallow
        try:
            if whole and self._cache is not None and self._cache.enabled:
                return self._plan_clone(want_ids, tags)
            self.plan = plan_fetch(
                self._unit,
                want_ids,
                [_raw(h) for h in haves],
                {_raw(s) for s in shallow},
                tags,
                sink=self._tree_entries(),
            )
        except NotFound as exc:
            raise KeyError(str(exc)) from None
        return len(self.plan.ids())

    def _tree_entries(self) -> TreeEntries:
        """Where the planner writes the pack entries of the trees it reads."""
        store = self.object_store
        return TreeEntries(deltas=store.deltas, max_depth=store.max_depth, ofs=self.ofs)

    def _key(self) -> Key:
        store = self.object_store
        return (self._unit.repo_id, self.ofs, store.deltas, store.max_depth)

    def _plan_clone(self, wants: list[ObjectId], tags: dict[ObjectId, ObjectId]) -> int:
        """Plan a whole-history clone: the kept part and what the wants add to it when
        one is usable, else everything (and keep its pack for the next clone)."""
        cache = self._cache
        assert cache is not None
        commits, others = peel(self._unit, wants)
        part = cache.get(self._key())
        if part is not None and usable(self._unit, part, commits, set(wants), set(tags.values())):
            plan = plan_fetch(self._unit, wants, list(part.tips), set(), tags)
            held = part.oids
            plan.commits = [o for o in plan.commits if o not in held]
            plan.tags = [o for o in plan.tags if o not in held]
            plan.trees = [o for o in plan.trees if o not in held]
            plan.blobs = [o for o in plan.blobs if o not in held]
            plan.tags.extend(  # tags made since, of commits the part holds
                t for c, t in tags.items() if c in held and t not in held and t not in plan.seen
            )
            extra = len(plan.ids())
            if (part.loose + extra) * REBUILD_RATIO <= part.count:
                cache.count(True)
                self.plan, self.part = plan, part
                if extra:  # keep the part grown by them
                    self._keep = (commits, [*others, *part.others])
                return part.count + extra
        cache.count(False)
        plan = plan_fetch(self._unit, wants, [], set(), tags, sink=self._tree_entries())
        self.plan, self.part = plan, None
        self._keep = (commits, others)
        return len(plan.ids())

    def write_pack(self, write: Callable[[bytes], object]) -> int:
        """Write the pack of the last :meth:`find_missing_objects` through ``write``."""
        plan = self.plan
        if plan is None:
            raise GovcError("no objects were planned")
        part = self.part
        keep = self._keep
        cache = self._cache
        capture = cache is not None and keep is not None and cache.begin_capture()
        try:
            sent = write_fetch_pack(
                self._unit,
                plan,
                write,
                deltas=self.object_store.deltas,
                max_depth=self.object_store.max_depth,
                ofs=self.ofs,
                prefix=(part.body, part.count) if part is not None else None,
                capture=cache.max_bytes if capture and cache is not None else 0,
            )
            if capture and cache is not None and keep is not None and sent.body is not None:
                tips, others = keep
                ids = plan.ids()
                loose = 0
                if part is not None:
                    loose = part.loose + len(ids)
                    ids = [*part.oids, *ids]
                cache.put(
                    self._key(),
                    PackPart.build(sent.body, ids, tips, [*others, *plan.tags], loose),
                )
        finally:
            if capture and cache is not None:
                cache.end_capture()
        return sent.objects

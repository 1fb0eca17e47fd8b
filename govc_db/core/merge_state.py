"""The state of one ``ort``-style tree merge: versions, entries, blob access, and
the content merge of one path (``handle_content_merge``).

Shared by :mod:`govc_db.core.merge` (collect, process, write) and
:mod:`govc_db.core.merge_renames` (rename and directory-rename handling).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from govc_db.core.merge_text import is_binary, merge_text
from govc_db.core.renames import Candidate
from govc_db.core.trees import TreeMemo
from govc_db.errors import GovcError
from govc_db.objects import MODE_LINK, ObjectId, Tree, hash_object
from govc_db.store.ports import ObjectStore, RawObject

__all__ = [
    "EMPTY_BLOB",
    "NULL",
    "Blobs",
    "Info",
    "MergeState",
    "Overlay",
    "RawConflict",
    "TreeMergeResult",
    "Ver",
    "fmt",
]

Ver = tuple[int, ObjectId | None]
NULL: Ver = (0, None)
EMPTY_BLOB = hash_object(b"blob", b"")


@dataclass(frozen=True, slots=True)
class RawConflict:
    """One conflicted path of the result; sides are (mode, id) or None."""

    path: bytes
    kind: str
    base: Ver | None
    ours: Ver | None
    theirs: Ver | None


@dataclass(frozen=True, slots=True)
class TreeMergeResult:
    """The merged tree (always written) and its conflicts, in path order."""

    tree: ObjectId
    conflicts: list[RawConflict] = field(default_factory=list)
    #: A conflict no single path carries (a directory renamed to several places, or
    #: an implicit directory rename colliding with a path): git reports the merge as
    #: conflicted without a conflicted file for it.
    unclean: bool = False

    @property
    def clean(self) -> bool:
        """True when nothing conflicted."""
        return not self.conflicts and not self.unclean


def fmt(mode: int) -> int:
    """S_IFMT of a mode: regular files (644/755) are one type."""
    return mode & 0o170000


class Info:
    """``conflict_info`` of merge-ort: one path's three versions and its resolution."""

    __slots__ = (
        "clean",
        "df_conflict",
        "dirmask",
        "filemask",
        "is_null",
        "kind",
        "match_mask",
        "path_conflict",
        "pathnames",
        "result",
        "stages",
    )

    def __init__(self, path: bytes, stages: list[Ver]) -> None:
        self.stages = stages
        self.pathnames = [path, path, path]
        self.filemask = 0
        self.dirmask = 0
        self.match_mask = 0
        self.df_conflict = False
        self.path_conflict = False
        self.clean = False
        self.is_null = False
        self.result: Ver = NULL
        self.kind = ""


class Blobs:
    """Blob contents by id: read through the store, new ones kept until written."""

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        self.cache: dict[ObjectId, bytes] = {EMPTY_BLOB: b""}
        self.new: dict[ObjectId, tuple[bytes, bytes]] = {}
        self.trees: dict[ObjectId, Tree] = {}

    def get_many(self, oids: Sequence[ObjectId]) -> dict[ObjectId, bytes]:
        """Contents of blobs ``oids`` (one ``get_many`` for those not seen yet)."""
        missing = [o for o in dict.fromkeys(oids) if o not in self.cache]
        if missing:
            found = self.objects.get_many(missing)
            for o in missing:
                raw = found.get(o)
                if raw is None:
                    raise GovcError(f"blob {o.hex()} is missing from the store")
                self.cache[o] = raw.data
        return {o: self.cache[o] for o in oids}

    def put(self, type_name: bytes, data: bytes) -> ObjectId:
        """Queue a new object for :meth:`flush`; its id."""
        oid = hash_object(type_name, data)
        if type_name == b"blob":
            self.cache[oid] = data
        self.new[oid] = (type_name, data)
        return oid

    def put_tree(self, tree: Tree) -> ObjectId:
        """Queue a new tree for :meth:`flush`; its id."""
        oid = self.put(b"tree", tree.serialize())
        self.trees[oid] = tree
        return oid

    def flush(self) -> None:
        """Store the queued objects the store does not have yet."""
        if self.new:
            # As git's write_object_file: what the store already has is not written again.
            have = self.objects.has_many(list(self.new))
            missing = [v for k, v in self.new.items() if k not in have]
            if missing:
                self.objects.put_many(missing)
            self.new.clear()
        if self.trees:
            # The result's trees are known parsed (as build_tree's are): reading the
            # merge's result, or asking whether they exist, costs no query afterwards.
            memo: TreeMemo | None = getattr(self.objects, "tree_memo", None)
            if memo is not None:
                memo.put_trees(self.trees)
            self.trees = {}


class Overlay:
    """Trees for ``load_trees``: the not yet written ones (a virtual base) first."""

    def __init__(self, blobs: Blobs) -> None:
        self._blobs = blobs
        self.tree_memo = getattr(blobs.objects, "tree_memo", None)

    def get_many(self, oids: Iterable[ObjectId]) -> dict[ObjectId, RawObject]:
        """Queued objects first, then the store's."""
        oids = list(oids)
        new = self._blobs.new
        out = {o: RawObject(*new[o]) for o in oids if o in new}
        rest = [o for o in oids if o not in out]
        if rest:
            out.update(self._blobs.objects.get_many(rest))
        return out


class MergeState:
    """Everything one merge knows; the steps are methods of its subclasses."""

    def __init__(self, blobs: Blobs, branch1: str, branch2: str, depth: int) -> None:
        self.blobs = blobs
        self.objects: Any = Overlay(blobs)
        self.branch1 = branch1
        self.branch2 = branch2
        self.depth = depth
        self.paths: dict[bytes, Info] = {}
        # Per side (index 1 and 2): deleted files, added files, relevant sources
        # (path -> relevance) and removed directories (path -> relevance).
        self.srcs: list[list[Candidate]] = [[], [], []]
        self.dsts: list[list[Candidate]] = [[], [], []]
        self.relevant: list[dict[bytes, int]] = [{}, {}, {}]
        self.dirs_removed: list[dict[bytes, int]] = [{}, {}, {}]
        self.unclean = False  # a conflict that no single path carries (directory renames)
        self.conflicted: dict[bytes, Info] = {}
        self.results: dict[bytes, Ver] = {}
        # Paths settled while collecting (git's "clean" entries), kept apart from the
        # open ones: there are many of them, and they need nothing but their version.
        self.resolved: dict[bytes, Ver] = {}
        # Per side: directories only that side changed, waiting (path, dir_rename_mask),
        # and whether such a directory may still wait (git's trivial_merges_okay).
        self.deferred: list[list[tuple[bytes, int]]] = [[], [], []]
        self.trivial_ok = [False, True, True]

    def _content(
        self, path: bytes, o: Ver, a: Ver, b: Ver, names: list[bytes], extra: int
    ) -> tuple[bool, Ver]:
        """``handle_content_merge``: (clean, merged version) of two same-type sides."""
        clean = True
        if a[0] == b[0] or a[0] == o[0]:
            mode = b[0]
        else:
            mode = a[0]
            clean = b[0] == o[0]
        if a[1] == b[1] or a[1] == o[1]:
            return clean, (mode, b[1])
        if b[1] == o[1]:
            return clean, (mode, a[1])
        if fmt(a[0]) == 0o100000:
            two_way = fmt(o[0]) != fmt(a[0])
            base_oid = EMPTY_BLOB if two_way or o[1] is None else o[1]
            assert a[1] is not None and b[1] is not None
            data = self.blobs.get_many([base_oid, a[1], b[1]])
            ob, ab, bb = data[base_oid], data[a[1]], data[b[1]]
            if is_binary(ob) or is_binary(ab) or is_binary(bb):
                if self.depth:
                    return clean, (mode, base_oid)
                return False, (mode, a[1])
            if names[0] == names[1] == names[2]:
                l1, l2 = self.branch1, self.branch2
            else:
                l1 = f"{self.branch1}:{names[1].decode('utf-8', 'surrogateescape')}"
                l2 = f"{self.branch2}:{names[2].decode('utf-8', 'surrogateescape')}"
            res = merge_text(ob, ab, bb, ours_label=l1, theirs_label=l2, marker_size=7 + extra)
            return clean and res.conflicts == 0, (mode, self.blobs.put(b"blob", res.data))
        if fmt(a[0]) == MODE_LINK and self.depth:
            return False, o
        return False, (mode, a[1])

    # -- 3. process ----------------------------------------------------------------------

"""Three-way tree merge with the results of git's ``ort`` strategy (pure logic).

The steps follow ``merge-ort.c`` of git 2.39 so that the same three trees give the
same tree id, the same conflicted paths and the same conflict markers:

1. **collect**: walk the three trees together, level by level (one ``get_many`` per
   depth, no recursion), settling at once what git settles at once (all three equal;
   both sides equal; one side unchanged) and recording the rest with git's masks
   (which sides have a file, a directory, which sides match);
2. **renames**: per side, files deleted there are matched against files added there
   (:mod:`govc_db.core.renames`), and the pairs are folded into the entries as
   ``process_renames`` does (rename/delete, rename/rename, rename/add collisions);
3. **process**: every open entry is resolved children first (``process_entry``):
   content merges (:mod:`govc_db.core.merge_text`), modify/delete, add/add, mode and
   type clashes, files in the way of directories (moved to ``path~branch``);
4. **write**: the result trees are built bottom-up and stored with one ``put_many``.

With several merge bases the base is virtual: the bases are merged pairwise first
(oldest first, labels "Temporary merge branch 1/2", wider markers), as ``ort`` does.
Not implemented: directory rename detection (git's default moves files added in a
directory the other side renamed, and reports a conflict), and git's guess of a
rename for non-unique basenames from directory renames.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from govc_db.core.merge_text import is_binary, merge_text
from govc_db.core.renames import (
    FOR_ANCESTOR,
    FOR_SELF,
    NOT_RELEVANT,
    RELEVANT_CONTENT,
    RELEVANT_LOCATION,
    Candidate,
    detect_renames,
)
from govc_db.core.trees import EMPTY_TREE, load_trees
from govc_db.errors import GovcError
from govc_db.objects import MODE_DIR, MODE_LINK, ObjectId, TreeItem, hash_object
from govc_db.store.ports import ObjectStore, RawObject

__all__ = ["RawConflict", "TreeMergeResult", "merge_tree_objects"]

Ver = tuple[int, ObjectId | None]
_NULL: Ver = (0, None)
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


def _fmt(mode: int) -> int:
    """S_IFMT of a mode: regular files (644/755) are one type."""
    return mode & 0o170000


class _Info:
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
        self.result: Ver = _NULL
        self.kind = ""


class _Blobs:
    """Blob contents by id: read through the store, new ones kept until written."""

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        self.cache: dict[ObjectId, bytes] = {EMPTY_BLOB: b""}
        self.new: dict[ObjectId, tuple[bytes, bytes]] = {}

    def get_many(self, oids: Sequence[ObjectId]) -> dict[ObjectId, bytes]:
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
        oid = hash_object(type_name, data)
        if type_name == b"blob":
            self.cache[oid] = data
        self.new[oid] = (type_name, data)
        return oid

    def flush(self) -> None:
        if self.new:
            # As git's write_object_file: what the store already has is not written again.
            have = self.objects.has_many(list(self.new))
            missing = [v for k, v in self.new.items() if k not in have]
            if missing:
                self.objects.put_many(missing)
            self.new.clear()


class _Overlay:
    """Trees for ``load_trees``: the not yet written ones (a virtual base) first."""

    def __init__(self, blobs: _Blobs) -> None:
        self._blobs = blobs
        self.tree_memo = getattr(blobs.objects, "tree_memo", None)

    def get_many(self, oids: Iterable[ObjectId]) -> dict[ObjectId, RawObject]:
        oids = list(oids)
        new = self._blobs.new
        out = {o: RawObject(*new[o]) for o in oids if o in new}
        rest = [o for o in oids if o not in out]
        if rest:
            out.update(self._blobs.objects.get_many(rest))
        return out


class _Merger:
    def __init__(self, blobs: _Blobs, branch1: str, branch2: str, depth: int) -> None:
        self.blobs = blobs
        self.objects: Any = _Overlay(blobs)
        self.branch1 = branch1
        self.branch2 = branch2
        self.depth = depth
        self.paths: dict[bytes, _Info] = {}
        # Per side (index 1 and 2): deleted files, added files, relevant sources
        # (path -> relevance) and removed directories (path -> relevance).
        self.srcs: list[list[Candidate]] = [[], [], []]
        self.dsts: list[list[Candidate]] = [[], [], []]
        self.relevant: list[dict[bytes, int]] = [{}, {}, {}]
        self.dirs_removed: list[dict[bytes, int]] = [{}, {}, {}]
        self.unclean = False  # a conflict that no single path carries (directory renames)
        self.conflicted: dict[bytes, _Info] = {}
        self.results: dict[bytes, Ver] = {}
        # Paths settled while collecting (git's "clean" entries), kept apart from the
        # open ones: there are many of them, and they need nothing but their version.
        self.resolved: dict[bytes, Ver] = {}

    # -- 1. collect ----------------------------------------------------------------------
    def collect(self, roots: list[ObjectId | None]) -> None:
        # Each directory carries git's dir_rename_mask: 2 or 4 inside a directory that
        # only that side still has, 7 once such a directory received new files there
        # (then every deleted file below is a rename source for directory renames).
        frontier: list[tuple[bytes, list[ObjectId | None], int]] = [(b"", roots, 0)]
        while frontier:
            trees = load_trees(self.objects, (t for _, ts, _ in frontier for t in ts if t))
            below: list[tuple[bytes, list[ObjectId | None], int]] = []
            for prefix, ts, ctx in frontier:
                maps = [{i.name: i for i in trees[t].items} if t else {} for t in ts]
                names = sorted(maps[0].keys() | maps[1].keys() | maps[2].keys())
                rows = [[m.get(name) for m in maps] for name in names]
                if ctx in (2, 4):
                    for items in rows:
                        fm = 0
                        for k, item in enumerate(items):
                            if item is not None and item.mode != MODE_DIR:
                                fm |= 1 << k
                        if fm and fm == ctx:
                            ctx = 7
                            break
                dirname = prefix[:-1]
                for name, items in zip(names, rows, strict=True):
                    sub = self._visit(prefix + name, dirname, items, ctx)
                    if sub is not None:
                        below.append((prefix + name + b"/", sub[0], sub[1]))
            frontier = below

    def _visit(
        self, path: bytes, dirname: bytes, items: list[TreeItem | None], ctx: int
    ) -> tuple[list[ObjectId | None], int] | None:
        b, o, t = items
        vb: Ver = (b.mode, b.oid) if b is not None else _NULL
        vo: Ver = (o.mode, o.oid) if o is not None else _NULL
        vt: Ver = (t.mode, t.oid) if t is not None else _NULL
        s1m = o is not None and b is not None and vo == vb
        s2m = t is not None and b is not None and vt == vb
        if s1m and s2m:
            self.resolved[path] = vb  # all three equal (a whole unchanged subtree)
            return None
        dirmask = (vb[0] == MODE_DIR) | (vo[0] == MODE_DIR) << 1 | (vt[0] == MODE_DIR) << 2
        filemask = ((b is not None) | (o is not None) << 1 | (t is not None) << 2) & ~dirmask
        sm = o is not None and t is not None and vo == vt
        if filemask == 7 and (sm or s1m or s2m):
            self.resolved[path] = vt if s1m else vo
            return None
        match_mask = 3 if s1m else 5 if s2m else 6 if sm else 0
        vers = [vb, vo, vt]
        info = _Info(path, vers)
        info.filemask, info.dirmask, info.match_mask = filemask, dirmask, match_mask
        self.paths[path] = info
        self._rename_info(path, dirname, vers, filemask, dirmask, match_mask, ctx)
        info.df_conflict = filemask != 0 and dirmask != 0
        if dirmask:
            m = ctx if ctx == 7 or dirmask not in (3, 5) else dirmask & ~1
            return [v[1] if v[0] == MODE_DIR else None for v in vers], m
        return None

    def _rename_info(
        self,
        path: bytes,
        dirname: bytes,
        vers: list[Ver],
        filemask: int,
        dirmask: int,
        match_mask: int,
        ctx: int,
    ) -> None:
        """``collect_rename_info``: rename sources/destinations and removed directories."""
        m = ctx
        if m != 7 and dirmask in (3, 5):
            m = dirmask & ~1
        if dirmask in (1, 3, 5):
            sides = (7 - dirmask) // 2
            relevance = FOR_ANCESTOR if m == 7 else NOT_RELEVANT
            for side in (1, 2):
                if sides & side:
                    self.dirs_removed[side][path] = relevance
        if m == 7 and filemask in (2, 4):
            self.dirs_removed[3 - (filemask >> 1)][dirname] = FOR_SELF
        if filemask in (0, 7):
            return
        for side in (1, 2):
            bit = 1 << side
            if filemask & 1 and not filemask & bit:
                mode, oid = vers[0]
                assert oid is not None
                self.srcs[side].append(Candidate(path, mode, oid))
                if match_mask & filemask == 0:
                    self.relevant[side][path] = RELEVANT_CONTENT
                elif m == 7:
                    self.relevant[side][path] = RELEVANT_LOCATION
            if not filemask & 1 and filemask & bit:
                mode, oid = vers[side]
                assert oid is not None
                self.dsts[side].append(Candidate(path, mode, oid))

    # -- 2. renames ----------------------------------------------------------------------
    def renames(self) -> None:
        possible = [bool(self.srcs[k] or self.dsts[k]) and bool(self.relevant[k]) for k in range(3)]
        if not (possible[1] or possible[2]):
            return
        # Per side: (destination, source or None) in path order.
        queues: list[list[tuple[Candidate, Candidate | None]]] = [[], [], []]
        dir_renames: list[dict[bytes, bytes]] = [{}, {}, {}]
        for side in (1, 2):
            dsts = sorted(self.dsts[side], key=lambda c: c.path)
            if not possible[side]:
                queues[side] = [(d, None) for d in dsts]
                continue
            srcs = sorted(self.srcs[side], key=lambda c: c.path)
            used, found = detect_renames(
                srcs,
                dsts,
                self.relevant[side],
                self.dirs_removed[side],
                self.blobs.get_many,
                EMPTY_BLOB,
            )
            by_path = {used[j].path: src for j, src in found.pairs.items()}
            queues[side] = [(d, by_path.get(d.path)) for d in dsts]
            if not self.depth:
                dir_renames[side] = self._provisional(found.dir_counts)
        both = dir_renames[1].keys() & dir_renames[2].keys()
        for side in (1, 2):
            for d in both:
                del dir_renames[side][d]
        collisions: list[dict[bytes, list[bytes]]] = [{}, {}, {}]
        for side in (1, 2):
            other = dir_renames[3 - side]
            if not other:
                continue
            for dst, _ in queues[side]:
                hit = _dir_renamed(dst.path, other)
                if hit is not None:
                    target = _apply_dir_rename(hit, dst.path)
                    collisions[side].setdefault(target, []).append(dst.path)
        reported: set[bytes] = set()
        combined: list[tuple[bytes, bytes, int]] = []
        for side in (1, 2):
            for dst, src in queues[side]:
                new_path = self._dir_rename_target(
                    dst.path, side, dir_renames, collisions, reported
                )
                if src is None and new_path is None:
                    continue
                path = dst.path
                if new_path is not None:
                    path = self._move_for_dir_rename(dst.path, new_path)
                if src is not None:
                    combined.append((src.path, path, side))
        combined.sort(key=lambda p: p[0])  # stable: side 1 first on equal sources
        i = 0
        while i < len(combined):
            src_path, dst_path, side = combined[i]
            old = self.paths.get(src_path)
            if old is None or old.clean:
                i += 1
                continue
            if i + 1 < len(combined) and combined[i + 1][0] == src_path:
                self._rename_rename(src_path, dst_path, combined[i + 1][1])
                i += 2
                continue
            self._rename(old, self.paths[dst_path], src_path, dst_path, side)
            i += 1

    def _provisional(self, counts: dict[bytes, dict[bytes, int]]) -> dict[bytes, bytes]:
        """``get_provisional_directory_renames``: each removed directory's unique
        majority destination; a tie is a conflict of its own."""
        out: dict[bytes, bytes] = {}
        for source, targets in counts.items():
            top, bad, best = 0, 0, b""
            for target, n in targets.items():
                if n == top:
                    bad = top
                elif n > top:
                    top, best = n, target
            if top == 0:
                continue
            if bad == top:
                self.unclean = True
            else:
                out[source] = best
        return out

    def _dir_rename_target(
        self,
        path: bytes,
        side: int,
        dir_renames: list[dict[bytes, bytes]],
        collisions: list[dict[bytes, list[bytes]]],
        reported: set[bytes],
    ) -> bytes | None:
        """``check_for_directory_rename``: where the other side's directory rename
        moves ``path``, or None."""
        renames = dir_renames[3 - side]
        if not renames or path in collisions[3 - side]:
            return None
        hit = _dir_renamed(path, renames)
        if hit is None or hit[1] in dir_renames[side]:
            return None
        new_path = _apply_dir_rename(hit, path)
        key = (side, new_path)
        sources = collisions[side].get(new_path, [])
        if bytes([side]) + new_path in reported:
            self.unclean = True
            return None
        info = self.paths.get(new_path)
        in_way = new_path in self.resolved or (
            info is not None and (info.clean or bool((1 << side) & (info.filemask | info.dirmask)))
        )
        if in_way or len(sources) > 1:
            reported.add(bytes([key[0]]) + new_path)
            self.unclean = True
            return None
        return new_path

    def _move_for_dir_rename(self, old_path: bytes, new_path: bytes) -> bytes:
        """``apply_directory_rename_modifications``: the entry moves to ``new_path``
        and is marked conflicted (git's default ``merge.directoryRenames=conflict``)."""
        ci = self.paths[old_path]
        parent = new_path.rpartition(b"/")[0]
        while parent and parent not in self.paths and parent not in self.resolved:
            d = _Info(parent, [_NULL, _NULL, _NULL])
            d.dirmask = ci.filemask
            self.paths[parent] = d
            parent = parent.rpartition(b"/")[0]
        if ci.dirmask == 0:
            del self.paths[old_path]
        else:
            new = _Info(new_path, list(ci.stages))
            for attr in ("pathnames", "filemask", "df_conflict", "path_conflict", "kind"):
                setattr(new, attr, getattr(ci, attr))
            new.match_mask = ci.match_mask
            new.stages[1] = _NULL
            ci.filemask = 0
            ci.clean = True
            for k in range(3):
                if not ci.dirmask & (1 << k):
                    ci.stages[k] = _NULL
            ci = new
        existing = self.paths.get(new_path)
        if existing is None:
            self.paths[new_path] = ci
        else:
            existing.filemask |= ci.filemask
            if existing.dirmask:
                existing.df_conflict = True
            index = ci.filemask >> 1
            existing.pathnames[index] = ci.pathnames[index]
            existing.stages[index] = ci.stages[index]
            ci = existing
        ci.path_conflict = True
        ci.kind = ci.kind or "rename/rename"
        return new_path

    def _rename_rename(self, old: bytes, p1: bytes, p2: bytes) -> None:
        base, s1, s2 = self.paths[old], self.paths[p1], self.paths[p2]
        if p1 == p2:
            s1.stages[0] = base.stages[0]
            s1.filemask |= 1
            base.is_null = True
            base.clean = True
            return
        names = [old, p1, p2]
        clean, merged = self._content(
            old, base.stages[0], s1.stages[1], s2.stages[2], names, 1 + 2 * self.depth
        )
        binary = not clean and merged == s1.stages[1]
        s1.stages[1] = merged
        s2.stages[2] = s2.stages[2] if binary else merged
        for info in (s1, s2, base):
            info.path_conflict = True
            info.kind = "rename/rename"

    def _rename(self, old: _Info, new: _Info, oldpath: bytes, newpath: bytes, target: int) -> None:
        other = 3 - target
        source_deleted = old.filemask == 1
        collision = bool(new.filemask & (1 << other))
        type_changed = not source_deleted and (_fmt(old.stages[other][0]) == 0o100000) != (
            _fmt(new.stages[target][0]) == 0o100000
        )
        if type_changed and collision:
            collision = False
        if collision and not source_deleted:
            names = [oldpath, oldpath, oldpath]
            names[target] = newpath
            infos = [self.paths[n] for n in names]
            _, merged = self._content(
                oldpath,
                infos[0].stages[0],
                infos[1].stages[1],
                infos[2].stages[2],
                names,
                1 + 2 * self.depth,
            )
            new.stages[target] = merged
            new.kind = new.kind or "add/add"
        elif collision and source_deleted:
            new.path_conflict = True
            new.kind = "rename/delete"
        else:
            new.stages[0] = old.stages[0]
            new.filemask |= 1
            new.pathnames[0] = oldpath
            if type_changed:
                old.stages[0] = _NULL
                old.filemask &= 6
            elif source_deleted:
                new.path_conflict = True
                new.kind = "rename/delete"
            else:
                new.stages[other] = old.stages[other]
                new.filemask |= 1 << other
                new.pathnames[other] = oldpath
        if not type_changed:
            old.is_null = True
            old.clean = True

    # -- content -------------------------------------------------------------------------
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
        if _fmt(a[0]) == 0o100000:
            two_way = _fmt(o[0]) != _fmt(a[0])
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
        if _fmt(a[0]) == MODE_LINK and self.depth:
            return False, o
        return False, (mode, a[1])

    # -- 3. process ----------------------------------------------------------------------
    def process(self) -> None:
        nonempty: set[bytes] = set()
        keys = sorted(self.paths.keys() | self.resolved.keys(), key=lambda p: p + b"/")
        for path in reversed(keys):
            info = self.paths.get(path)
            if info is None:
                self._record(path, self.resolved[path], nonempty)
            elif info.clean:
                self._record(path, info.result if not info.is_null else _NULL, nonempty)
            else:
                self._entry(path, info, nonempty)

    def _record(self, path: bytes, ver: Ver, nonempty: set[bytes]) -> None:
        if ver[0] == 0:
            return
        self.results[path] = ver
        parts = path.split(b"/")
        for k in range(1, len(parts)):
            prefix = b"/".join(parts[:k])
            if prefix in nonempty:
                break
            nonempty.add(prefix)

    def _unique(self, path: bytes, branch: str) -> bytes:
        base = path + b"~" + branch.replace("/", "_").encode("utf-8", "surrogateescape")
        new, n = base, 0
        while new in self.paths or new in self.resolved:
            new = base + b"_%d" % n
            n += 1
        return new

    def _conflict(self, path: bytes, info: _Info, kind: str) -> None:
        info.clean = False
        info.kind = info.kind or kind
        self.conflicted[path] = info

    def _entry(self, path: bytes, info: _Info, nonempty: set[bytes]) -> None:
        if info.dirmask and info.filemask == 0:
            return  # the directory itself is implied by what is recorded below it
        df_index = 0
        if info.df_conflict and path not in nonempty:
            info.df_conflict = False
            info.match_mask &= ~info.dirmask
            for k in range(3):
                if not info.filemask & (1 << k):
                    info.stages[k] = _NULL
            info.dirmask = 0
        elif info.df_conflict:
            if info.filemask == 1:
                return
            new = _Info(path, list(info.stages))
            for attr in ("pathnames", "filemask", "df_conflict", "path_conflict", "kind"):
                setattr(new, attr, getattr(info, attr))
            new.match_mask = info.match_mask & ~info.dirmask
            for k in range(3):
                if not new.filemask & (1 << k):
                    new.stages[k] = _NULL
            df_index = 2 if info.dirmask & 2 else 1
            branch = self.branch1 if df_index == 1 else self.branch2
            path = self._unique(path, branch)
            self.paths[path] = new
            new.kind = new.kind or "file/directory"
            info.filemask = 0
            info = new
        st = info.stages
        clean = not info.df_conflict and not info.path_conflict
        result: Ver
        if info.match_mask:
            if info.match_mask == 6:
                result = st[1]
            else:
                result = st[2 if 7 & ~info.match_mask == 4 else 1]
                if result[0] == 0:
                    clean = True
        elif info.filemask >= 6 and _fmt(st[1][0]) != _fmt(st[2][0]):
            clean = False
            if self.depth:
                result = st[0]
            else:
                self._distinct_types(path, info, nonempty)
                return
        elif info.filemask >= 6:
            ok, result = self._content(path, st[0], st[1], st[2], info.pathnames, 2 * self.depth)
            clean = ok and clean
            if not ok:
                info.kind = info.kind or self._content_kind(info, result)
        elif info.filemask in (3, 5):
            side = 2 if info.filemask == 5 else 1
            result = st[0 if self.depth else side]
            clean = False
            info.kind = info.kind or "modify/delete"
        elif info.filemask in (2, 4):
            result = st[2 if info.filemask == 4 else 1]
        else:  # filemask 1: deleted on both sides
            result = _NULL
        if not clean:
            self._conflict(path, info, "content")
        self._record(path, result, nonempty)

    def _content_kind(self, info: _Info, result: Ver) -> str:
        st = info.stages
        if st[1][1] == st[2][1] or st[0][1] in (st[1][1], st[2][1]):
            return "mode"
        if _fmt(st[1][0]) == 0o100000:
            data = self.blobs.get_many([o for _, o in st if o is not None])
            if any(is_binary(d) for d in data.values()):
                return "binary"
        return "add/add" if info.filemask == 6 else "content"

    def _distinct_types(self, path: bytes, info: _Info, nonempty: set[bytes]) -> None:
        """Two kinds of object (file, symlink, submodule) at one path: each side's is
        kept, the regular file (or both) moved to ``path~branch``."""
        st = info.stages
        o_mode, a_mode, b_mode = st[0][0], st[1][0], st[2][0]
        rename_a = _fmt(a_mode) == 0o100000
        rename_b = not rename_a and _fmt(b_mode) == 0o100000
        if not rename_a and not rename_b:
            rename_a = rename_b = True
        new = _Info(path, [st[0], _NULL, st[2]])
        new.filemask = 5
        if _fmt(b_mode) != _fmt(o_mode):
            new.stages[0] = _NULL
            new.filemask = 4
        info.stages = [st[0], st[1], _NULL]
        info.filemask = 3
        if _fmt(a_mode) != _fmt(o_mode):
            info.stages[0] = _NULL
            info.filemask = 2
        a_path = self._unique(path, self.branch1) if rename_a else None
        if a_path is not None:
            self.paths[a_path] = info
        b_path = self._unique(path, self.branch2) if rename_b else path
        self.paths[b_path] = new
        if rename_a and rename_b:
            del self.paths[path]
        self._conflict(b_path, new, "mode")
        self._record(b_path, (b_mode, st[2][1]), nonempty)
        target = a_path if a_path is not None else path
        self._conflict(target, info, "mode")
        self._record(target, (a_mode, st[1][1]), nonempty)

    # -- 4. write ------------------------------------------------------------------------
    def write(self) -> ObjectId:
        dirs: dict[bytes, list[tuple[bytes, int, ObjectId]]] = {b"": []}
        for path, (mode, oid) in self.results.items():
            assert oid is not None
            parent, _, name = path.rpartition(b"/")
            dirs.setdefault(parent, []).append((name, mode, oid))
            while parent:
                parent = parent.rpartition(b"/")[0]
                if parent in dirs:
                    break
                dirs[parent] = []
        # Deepest directories first, the root last: each tree is written before its
        # parent needs its id.
        order = sorted(dirs, key=lambda p: -(p.count(b"/") + 1) if p else 1)
        root = EMPTY_TREE
        for d in order:
            entries = dirs[d]
            entries.sort(key=lambda e: e[0] + b"/" if e[1] == MODE_DIR else e[0])
            data = b"".join(b"%o %s\0%s" % (m, n, o) for n, m, o in entries)
            oid = self.blobs.put(b"tree", data)
            if d:
                dirs[d.rpartition(b"/")[0]].append((d.rpartition(b"/")[2], MODE_DIR, oid))
            else:
                root = oid
        return root

    def conflicts(self) -> list[RawConflict]:
        out: list[RawConflict] = []
        for path in sorted(self.conflicted):
            info = self.conflicted[path]
            st = [s if s[0] else None for s in info.stages]
            out.append(RawConflict(path, info.kind or "content", st[0], st[1], st[2]))
        return out


def _dir_renamed(path: bytes, renames: dict[bytes, bytes]) -> tuple[bytes, bytes] | None:
    """The deepest renamed directory above ``path`` (``check_dir_renamed``)."""
    d = path
    while b"/" in d:
        d = d.rpartition(b"/")[0]
        if d in renames:
            return d, renames[d]
    return None


def _apply_dir_rename(hit: tuple[bytes, bytes], path: bytes) -> bytes:
    old, new = hit
    if not new:
        return path[len(old) + 1 :]
    return new + path[len(old) :]


def _merge(
    blobs: _Blobs,
    base: ObjectId | None,
    ours: ObjectId,
    theirs: ObjectId,
    branch1: str,
    branch2: str,
    depth: int,
) -> TreeMergeResult:
    m = _Merger(blobs, branch1, branch2, depth)
    m.collect([base, ours, theirs])
    m.renames()
    m.process()
    tree = m.write()
    return TreeMergeResult(tree, m.conflicts(), m.unclean)


def merge_tree_objects(
    objects: ObjectStore,
    base: ObjectId | None,
    ours: ObjectId,
    theirs: ObjectId,
    *,
    ours_label: str,
    theirs_label: str,
    depth: int = 0,
    write: bool = True,
) -> TreeMergeResult:
    """Merge tree ``theirs`` into tree ``ours`` against tree ``base`` (None = empty).
    New blobs and trees are stored (one ``put_many``) unless ``write`` is False."""
    blobs = _Blobs(objects)
    result = _merge(blobs, base, ours, theirs, ours_label, theirs_label, depth)
    if write:
        blobs.flush()
    return result


def merge_with_blobs(
    blobs: _Blobs,
    base: ObjectId | None,
    ours: ObjectId,
    theirs: ObjectId,
    branch1: str,
    branch2: str,
    depth: int,
) -> TreeMergeResult:
    """One merge sharing ``blobs`` (for the virtual bases of criss-cross merges)."""
    return _merge(blobs, base, ours, theirs, branch1, branch2, depth)

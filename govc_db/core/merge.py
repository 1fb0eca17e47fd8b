"""Three-way tree merge with the results of git's ``ort`` strategy (pure logic).

The steps follow ``merge-ort.c`` of git 2.39 so that the same three trees give the
same tree id, the same conflicted paths and the same conflict markers:

1. **collect**: walk the three trees together, level by level (one ``get_many`` per
   depth, no recursion), settling at once what git settles at once (all three equal;
   both sides equal; one side unchanged) and recording the rest with git's masks
   (which sides have a file, a directory, which sides match); a directory only one
   side changed waits, and is taken whole from that side when it detects no renames
   (ort's trivial directory merges);
2. **renames**: per side, files deleted there are matched against files added there
   (:mod:`govc_db.core.renames`), and the pairs are folded into the entries as
   ``process_renames`` does (rename/delete, rename/rename, rename/add collisions);
3. **process**: every open entry is resolved children first (``process_entry``):
   content merges (:mod:`govc_db.core.merge_text`), modify/delete, add/add, mode and
   type clashes, files in the way of directories (moved to ``path~branch``);
4. **write**: the result trees are built bottom-up and stored with one ``put_many``.

With several merge bases the base is virtual: the bases are merged pairwise first
(oldest first, labels "Temporary merge branch 1/2", wider markers), as ``ort`` does
(see :mod:`govc_db.core.merge_ops`). Directory renames are detected as git's default
``merge.directoryRenames=conflict`` does. Not implemented: submodule merges (a
submodule changed on both sides is a conflict keeping ours), ``.gitattributes`` merge
drivers and renormalization.
"""

from __future__ import annotations

from govc_db.core.merge_renames import RenameSteps
from govc_db.core.merge_state import (
    NULL,
    Blobs,
    Info,
    RawConflict,
    TreeMergeResult,
    Ver,
    fmt,
)
from govc_db.core.merge_text import is_binary
from govc_db.core.renames import (
    FOR_ANCESTOR,
    FOR_SELF,
    NOT_RELEVANT,
    RELEVANT_CONTENT,
    RELEVANT_LOCATION,
    Candidate,
)
from govc_db.core.trees import EMPTY_TREE, load_trees
from govc_db.objects import MODE_DIR, ObjectId, Tree, TreeItem
from govc_db.store.ports import ObjectStore

__all__ = [
    "Blobs",
    "RawConflict",
    "TreeMergeResult",
    "merge_tree_objects",
    "merge_with_blobs",
]


class _Merger(RenameSteps):
    """One merge: collect (1), renames (2, inherited), process (3), write (4)."""

    # -- 1. collect ----------------------------------------------------------------------
    def collect(self, roots: list[ObjectId | None]) -> None:
        """Walk the three trees; then settle the directories only one side changed
        (``handle_deferred_entries``): wholesale when that side has no relevant rename
        source, else by walking them too."""
        self._walk([(b"", roots, 0)])
        for side in (1, 2):
            # Without a relevant source this side detects no renames at all, so nothing
            # inside a directory only it changed can matter beyond its own tree: git
            # takes that side's tree as it is. (git's cache of renames from earlier
            # picks, which could keep this for some sources, is not used by one merge.)
            ok = not self.relevant[side]
            self.trivial_ok[side] = ok
            todo, self.deferred[side] = self.deferred[side], []
            frontier: list[tuple[bytes, list[ObjectId | None], int]] = []
            for path, mask in todo:
                info = self.paths[path]
                if ok:
                    ver = info.stages[side]
                    info.result, info.is_null, info.clean = ver, ver[0] == 0, True
                    info.match_mask = 0
                else:
                    frontier.append((path + b"/", self._subtrees(info.stages), mask))
            if frontier:
                self._walk(frontier)

    @staticmethod
    def _subtrees(vers: list[Ver]) -> list[ObjectId | None]:
        return [v[1] if v[0] == MODE_DIR else None for v in vers]

    def _walk(self, frontier: list[tuple[bytes, list[ObjectId | None], int]]) -> None:
        # Each directory carries git's dir_rename_mask: 2 or 4 inside a directory that
        # only that side still has, 7 once such a directory received new files there
        # (then every deleted file below is a rename source for directory renames).
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
        vb: Ver = (b.mode, b.oid) if b is not None else NULL
        vo: Ver = (o.mode, o.oid) if o is not None else NULL
        vt: Ver = (t.mode, t.oid) if t is not None else NULL
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
        info = Info(path, vers)
        info.filemask, info.dirmask, info.match_mask = filemask, dirmask, match_mask
        self.paths[path] = info
        self._rename_info(path, dirname, vers, filemask, dirmask, match_mask, ctx)
        info.df_conflict = filemask != 0 and dirmask != 0
        if dirmask:
            m = ctx if ctx == 7 or dirmask not in (3, 5) else dirmask & ~1
            # A directory only one side changed (or only one side has) waits: if that
            # side turns out to detect no renames, its tree is the result as it is.
            side = 2 if s1m else 1 if s2m else 0
            if filemask == 0 and dirmask in (2, 4):
                side = dirmask >> 1
            if m != 7 and side and self.trivial_ok[side]:
                self.deferred[side].append((path, m))
                return None
            return self._subtrees(vers), m
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

    # -- 3. process ----------------------------------------------------------------------
    def process(self) -> None:
        """Resolve every open entry, children before their directory."""
        self._prefetch_content()
        nonempty: set[bytes] = set()
        keys = sorted(self.paths.keys() | self.resolved.keys(), key=lambda p: p + b"/")
        for path in reversed(keys):
            info = self.paths.get(path)
            if info is None:
                self._record(path, self.resolved[path], nonempty)
            elif info.clean:
                self._record(path, info.result if not info.is_null else NULL, nonempty)
            else:
                self._entry(path, info, nonempty)

    def _prefetch_content(self) -> None:
        """One ``get_many`` for the blobs of every likely content merge (instead of a
        round trip per file)."""
        wanted: list[ObjectId] = []
        for info in self.paths.values():
            if info.clean or info.filemask < 6:
                continue
            o, a, b = info.stages
            if fmt(a[0]) != 0o100000 or fmt(b[0]) != 0o100000 or a[1] == b[1]:
                continue
            if o[1] in (a[1], b[1]):
                continue
            wanted.extend(x[1] for x in (o, a, b) if x[1] is not None and fmt(x[0]) == 0o100000)
        if wanted:
            self.blobs.get_many(wanted)

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

    def _conflict(self, path: bytes, info: Info, kind: str) -> None:
        info.clean = False
        info.kind = info.kind or kind
        self.conflicted[path] = info

    def _entry(self, path: bytes, info: Info, nonempty: set[bytes]) -> None:
        if info.dirmask and info.filemask == 0:
            return  # the directory itself is implied by what is recorded below it
        df_index = 0
        if info.df_conflict and path not in nonempty:
            info.df_conflict = False
            info.match_mask &= ~info.dirmask
            for k in range(3):
                if not info.filemask & (1 << k):
                    info.stages[k] = NULL
            info.dirmask = 0
        elif info.df_conflict:
            if info.filemask == 1:
                return
            new = Info(path, list(info.stages))
            for attr in ("pathnames", "filemask", "df_conflict", "path_conflict", "kind"):
                setattr(new, attr, getattr(info, attr))
            new.match_mask = info.match_mask & ~info.dirmask
            for k in range(3):
                if not new.filemask & (1 << k):
                    new.stages[k] = NULL
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
        elif info.filemask >= 6 and fmt(st[1][0]) != fmt(st[2][0]):
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
            result = NULL
        if not clean:
            self._conflict(path, info, "content")
        self._record(path, result, nonempty)

    def _content_kind(self, info: Info, result: Ver) -> str:
        st = info.stages
        if st[1][1] == st[2][1] or st[0][1] in (st[1][1], st[2][1]):
            return "mode"
        if fmt(st[1][0]) == 0o100000:
            data = self.blobs.get_many([o for _, o in st if o is not None])
            if any(is_binary(d) for d in data.values()):
                return "binary"
        return "add/add" if info.filemask == 6 else "content"

    def _distinct_types(self, path: bytes, info: Info, nonempty: set[bytes]) -> None:
        """Two kinds of object (file, symlink, submodule) at one path: each side's is
        kept, the regular file (or both) moved to ``path~branch``."""
        st = info.stages
        o_mode, a_mode, b_mode = st[0][0], st[1][0], st[2][0]
        rename_a = fmt(a_mode) == 0o100000
        rename_b = not rename_a and fmt(b_mode) == 0o100000
        if not rename_a and not rename_b:
            rename_a = rename_b = True
        new = Info(path, [st[0], NULL, st[2]])
        new.filemask = 5
        if fmt(b_mode) != fmt(o_mode):
            new.stages[0] = NULL
            new.filemask = 4
        info.stages = [st[0], st[1], NULL]
        info.filemask = 3
        if fmt(a_mode) != fmt(o_mode):
            info.stages[0] = NULL
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
            oid = self.blobs.put_tree(Tree(tuple(TreeItem(n, m, o) for n, m, o in dirs[d])))
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


def _merge(
    blobs: Blobs,
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
    blobs = Blobs(objects)
    result = _merge(blobs, base, ours, theirs, ours_label, theirs_label, depth)
    if write:
        blobs.flush()
    return result


def merge_with_blobs(
    blobs: Blobs,
    base: ObjectId | None,
    ours: ObjectId,
    theirs: ObjectId,
    branch1: str,
    branch2: str,
    depth: int,
) -> TreeMergeResult:
    """One merge sharing ``blobs`` (for the virtual bases of criss-cross merges)."""
    return _merge(blobs, base, ours, theirs, branch1, branch2, depth)

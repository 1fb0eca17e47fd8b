"""Renames in a merge, as ``merge-ort`` handles them: per-side rename detection
(:mod:`govc_db.core.renames`), directory renames (a removed directory's majority
destination; files the other side added or renamed into it follow it, marked as a
conflict as git's default ``merge.directoryRenames=conflict`` does), and the folding of
each rename into the entries (``process_renames``: rename/delete, rename/rename 1-to-1
and 1-to-2, rename/add collisions).
"""

from __future__ import annotations

from govc_db.core.merge_state import EMPTY_BLOB, NULL, Info, MergeState, fmt
from govc_db.core.renames import Candidate, detect_renames

__all__ = ["RenameSteps", "apply_dir_rename", "dir_renamed"]


class RenameSteps(MergeState):
    """Step 2 of a merge: renames (see the module docstring)."""

    def renames(self) -> None:
        """Detect both sides' renames and fold them into the entries."""
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
                hit = dir_renamed(dst.path, other)
                if hit is not None:
                    target = apply_dir_rename(hit, dst.path)
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
        hit = dir_renamed(path, renames)
        if hit is None or hit[1] in dir_renames[side]:
            return None
        new_path = apply_dir_rename(hit, path)
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
            d = Info(parent, [NULL, NULL, NULL])
            d.dirmask = ci.filemask
            self.paths[parent] = d
            parent = parent.rpartition(b"/")[0]
        if ci.dirmask == 0:
            del self.paths[old_path]
        else:
            new = Info(new_path, list(ci.stages))
            for attr in ("pathnames", "filemask", "df_conflict", "path_conflict", "kind"):
                setattr(new, attr, getattr(ci, attr))
            new.match_mask = ci.match_mask
            new.stages[1] = NULL
            ci.filemask = 0
            ci.clean = True
            for k in range(3):
                if not ci.dirmask & (1 << k):
                    ci.stages[k] = NULL
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

    def _rename(self, old: Info, new: Info, oldpath: bytes, newpath: bytes, target: int) -> None:
        other = 3 - target
        source_deleted = old.filemask == 1
        collision = bool(new.filemask & (1 << other))
        type_changed = not source_deleted and (fmt(old.stages[other][0]) == 0o100000) != (
            fmt(new.stages[target][0]) == 0o100000
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
                old.stages[0] = NULL
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


def dir_renamed(path: bytes, renames: dict[bytes, bytes]) -> tuple[bytes, bytes] | None:
    """The deepest renamed directory above ``path`` (``check_dir_renamed``)."""
    d = path
    while b"/" in d:
        d = d.rpartition(b"/")[0]
        if d in renames:
            return d, renames[d]
    return None


def apply_dir_rename(hit: tuple[bytes, bytes], path: bytes) -> bytes:
    """``path`` with its renamed directory ``hit[0]`` replaced by ``hit[1]``."""
    old, new = hit
    if not new:
        return path[len(old) + 1 :]
    return new + path[len(old) :]

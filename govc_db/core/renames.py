"""Rename detection as git's ``diffcore-rename`` does it for ``merge-ort``.

Written by hand because no maintained Python library reproduces git's scores, and a
merge that pairs files differently from git produces a different tree.

* **Exact renames** first: same blob (and, unless both are regular files, the same
  mode); for each destination in path order the first unused source, preferring one
  with the same basename.
* **Basename matches**: a remaining relevant source and destination whose basenames
  are each unique among the remaining candidates are paired when they are at least
  75% similar (halfway between the 50% minimum and 100%, git's default factor).
* **Similarity matrix**: every remaining destination against every relevant source,
  keeping each destination's best four candidates, then pairs taken best first
  (score, then same basename; git's stable order for ties) while both sides are free.

The similarity is ``diffcore-delta``'s: content is cut into chunks ending at a newline
or after 64 bytes (CR before LF ignored in text), each chunk hashed into one of
107,927 buckets; the bytes "copied" are the per-bucket minimum of source and
destination, and the score is copied * 60000 / max(size). Empty files never take part
(``rename_empty`` is off for merges); symlinks and submodules only rename exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from govc_db.core.merge_text import is_binary
from govc_db.objects import MODE_EXEC, MODE_FILE, ObjectId

__all__ = [
    "FOR_ANCESTOR",
    "FOR_SELF",
    "MAX_SCORE",
    "MIN_SCORE",
    "NOT_RELEVANT",
    "RELEVANT_CONTENT",
    "RELEVANT_LOCATION",
    "Candidate",
    "Detected",
    "detect_renames",
    "similarity",
    "spans",
]

MAX_SCORE = 60000
MIN_SCORE = 30000  # git's default -M50%
_BASENAME_SCORE = MIN_SCORE + (MAX_SCORE - MIN_SCORE) // 2
_HASHBASE = 107927
_M32 = 0xFFFFFFFF
_PER_DST = 4
_RENAME_LIMIT = 7000


@dataclass(frozen=True, slots=True)
class Candidate:
    """A deleted (source) or added (destination) file of one side of a merge."""

    path: bytes
    mode: int
    oid: ObjectId


def spans(data: bytes) -> dict[int, int]:
    """``hash_chars``: bytes per chunk hash of ``data``."""
    out: dict[int, int] = {}
    text = not is_binary(data)
    a1 = a2 = 0
    n = 0
    size = len(data)
    i = 0
    while i < size:
        c = data[i]
        i += 1
        if text and c == 13 and i < size and data[i] == 10:
            continue
        old = a1
        a1 = (((a1 << 7) ^ (a2 >> 25)) + c) & _M32
        a2 = ((a2 << 7) ^ (old >> 25)) & _M32
        n += 1
        if n < 64 and c != 10:
            continue
        h = ((a1 + a2 * 0x61) & _M32) % _HASHBASE
        out[h] = out.get(h, 0) + n
        n = a1 = a2 = 0
    if n > 0:
        h = ((a1 + a2 * 0x61) & _M32) % _HASHBASE
        out[h] = out.get(h, 0) + n
    return out


def _size_ok(src: int, dst: int, minimum: int) -> bool:
    big, small = max(src, dst), min(src, dst)
    return not big * (MAX_SCORE - minimum) < (big - small) * MAX_SCORE


def similarity(src: bytes, dst: bytes, minimum: int = MIN_SCORE) -> int:
    """``estimate_similarity`` of two regular files (0..60000)."""
    if not _size_ok(len(src), len(dst), minimum) or not dst:
        return 0
    return _score(len(src), len(dst), spans(src), spans(dst))


def _score(src_size: int, dst_size: int, s: Mapping[int, int], d: Mapping[int, int]) -> int:
    copied = 0
    small, big = (s, d) if len(s) <= len(d) else (d, s)
    for h, cnt in small.items():
        other = big.get(h)
        if other is not None:
            copied += cnt if cnt < other else other
    return copied * MAX_SCORE // max(src_size, dst_size)


def _basename(path: bytes) -> bytes:
    return path.rsplit(b"/", 1)[-1]


def _regular(mode: int) -> bool:
    return mode in (MODE_FILE, MODE_EXEC)


class _Contents:
    """Blob bytes and chunk hashes, loaded on first use (one ``load`` per batch)."""

    def __init__(self, load: Callable[[Sequence[ObjectId]], dict[ObjectId, bytes]]) -> None:
        self._load = load
        self.data: dict[ObjectId, bytes] = {}
        self._spans: dict[ObjectId, dict[int, int]] = {}

    def prefetch(self, oids: Sequence[ObjectId]) -> None:
        missing = [o for o in dict.fromkeys(oids) if o not in self.data]
        if missing:
            self.data.update(self._load(missing))

    def score(self, src: Candidate, dst: Candidate, minimum: int) -> int:
        if not _regular(src.mode) or not _regular(dst.mode):
            return 0
        a, b = self.data[src.oid], self.data[dst.oid]
        if not _size_ok(len(a), len(b), minimum) or not b:
            return 0
        sa = self._spans.get(src.oid)
        if sa is None:
            sa = self._spans[src.oid] = spans(a)
        sb = self._spans.get(dst.oid)
        if sb is None:
            sb = self._spans[dst.oid] = spans(b)
        return _score(len(a), len(b), sa, sb)


#: ``file_rename_relevance`` and ``dir_rename_relevance`` of git.
RELEVANT_CONTENT = 1
RELEVANT_LOCATION = 2
NOT_RELEVANT = 0
FOR_ANCESTOR = 1
FOR_SELF = 2
_UNKNOWN = b"/"  # placeholder directory, as git's UNKNOWN_DIR


def _dirname(path: bytes) -> bytes:
    return path.rpartition(b"/")[0]


@dataclass
class Detected:
    """Renames of one side: destination index -> source, and the directory rename
    counts ``old_dir -> {new_dir: count}`` for directories removed on that side."""

    pairs: dict[int, Candidate]
    dir_counts: dict[bytes, dict[bytes, int]]


class _Detector:
    def __init__(
        self,
        srcs: list[Candidate],
        dsts: list[Candidate],
        relevant: dict[bytes, int],
        dirs_removed: dict[bytes, int],
        contents: _Contents,
    ) -> None:
        self.srcs, self.dsts = srcs, dsts
        self.relevant, self.dirs_removed = relevant, dirs_removed
        self.contents = contents
        self.used: set[int] = set()
        self.paired: dict[int, int] = {}
        self.counts: dict[bytes, dict[bytes, int]] = {}

    def record(self, j: int, i: int) -> None:
        self.paired[j] = i
        self.used.add(i)
        self.update_counts(self.srcs[i].path, self.dsts[j].path)

    def update_counts(self, old: bytes, new: bytes) -> None:
        """``update_dir_rename_counts``."""
        old_dir, new_dir = old, new
        first = True
        while True:
            old_dir, _, old_sub = old_dir.rpartition(b"/")
            if old_dir not in self.dirs_removed:
                break
            new_dir, _, new_sub = new_dir.rpartition(b"/")
            if not first and old_sub != new_sub:
                break
            flag = self.dirs_removed.get(old_dir, NOT_RELEVANT)
            if flag == FOR_SELF or first:
                counts = self.counts.setdefault(old_dir, {})
                counts[new_dir] = counts.get(new_dir, 0) + 1
            first = False
            if flag == NOT_RELEVANT or not old_dir or not new_dir:
                break

    def exact(self) -> None:
        by_oid: dict[ObjectId, list[int]] = {}
        for i, s in enumerate(self.srcs):
            by_oid.setdefault(s.oid, []).append(i)
        for j, d in enumerate(self.dsts):
            best, best_score = -1, 0
            for i in by_oid.get(d.oid, ()):
                s = self.srcs[i]
                if (not _regular(s.mode) or not _regular(d.mode)) and s.mode != d.mode:
                    continue
                if i in self.used:
                    continue
                score = 1 + (_basename(s.path) == _basename(d.path))
                if score > best_score:
                    best, best_score = i, score
                    if score == 2:
                        break
            if best >= 0:
                self.paired[j] = best
                self.used.add(best)
        # initialize_dir_rename_info: counts of the exact renames, in destination order.
        for j in sorted(self.paired):
            self.update_counts(self.srcs[self.paired[j]].path, self.dsts[j].path)

    def basenames(self, left: list[int]) -> None:
        guess: dict[bytes, bytes] = {}
        for old_dir, counts in self.counts.items():
            best, top = b"", 0
            for new_dir, n in counts.items():
                if n > top:
                    best, top = new_dir, n
            guess[old_dir] = best
        idx_map = {d.path: j for j, d in enumerate(self.dsts) if j not in self.paired}
        src_names: dict[bytes, int] = {}
        for i in left:
            b = _basename(self.srcs[i].path)
            src_names[b] = -1 if b in src_names else i
        dst_names: dict[bytes, int] = {}
        for j in range(len(self.dsts)):
            if j in self.paired:
                continue
            b = _basename(self.dsts[j].path)
            dst_names[b] = -1 if b in dst_names else j
        wanted: list[tuple[int, int]] = []
        for i in left:
            path = self.srcs[i].path
            if path not in self.relevant:
                continue
            base = _basename(path)
            if base not in dst_names:
                continue
            j = dst_names[base]
            if src_names[base] == -1 or j == -1:
                guessed = guess.get(_dirname(path))
                j = -1 if guessed is None else idx_map.get(guessed + b"/" + base, -1)
            if j >= 0:
                wanted.append((i, j))
        self.contents.prefetch(
            [self.srcs[i].oid for i, _ in wanted] + [self.dsts[j].oid for _, j in wanted]
        )
        for i, j in wanted:
            if j in self.paired:
                continue
            if self.contents.score(self.srcs[i], self.dsts[j], MIN_SCORE) >= _BASENAME_SCORE:
                self.record(j, i)

    def early_known(self, sources: list[int]) -> list[int]:
        """``handle_early_known_dir_renames``: drop location-only sources whose
        directories' renames are already decided by a majority."""
        for i in sources:
            d = _dirname(self.srcs[i].path)
            while d and self.dirs_removed.get(d, NOT_RELEVANT) != NOT_RELEVANT:
                counts = self.counts.setdefault(d, {})
                counts[_UNKNOWN] = counts.get(_UNKNOWN, 0) + 1
                d = _dirname(d)
        for d, counts in self.counts.items():
            if self.dirs_removed.get(d) == FOR_SELF and _determinable(counts):
                self.dirs_removed[d] = FOR_ANCESTOR
        kept: list[int] = []
        for i in sources:
            path = self.srcs[i].path
            if self.relevant.get(path) == RELEVANT_LOCATION:
                d = _dirname(path)
                removable = True
                while True:
                    flag = self.dirs_removed.get(d, NOT_RELEVANT)
                    if flag == NOT_RELEVANT:
                        break
                    if flag == FOR_SELF:
                        removable = False
                        break
                    d = _dirname(d)
                if removable:
                    continue
            kept.append(i)
        return kept

    def matrix(self, sources: list[int]) -> None:
        remaining = [j for j in range(len(self.dsts)) if j not in self.paired]
        if not sources or not remaining:
            return
        if len(sources) * len(remaining) > _RENAME_LIMIT * _RENAME_LIMIT:
            return
        srcs, dsts = self.srcs, self.dsts
        self.contents.prefetch([srcs[i].oid for i in sources] + [dsts[j].oid for j in remaining])
        matrix: list[tuple[int, int, int, int]] = []  # (score, name_score, dst, src)
        for j in remaining:
            slots: list[tuple[int, int, int, int] | None] = [None] * _PER_DST
            for i in sources:
                score = self.contents.score(srcs[i], dsts[j], MIN_SCORE)
                cand = (score, int(_basename(srcs[i].path) == _basename(dsts[j].path)), j, i)
                worst = 0
                for k in range(1, _PER_DST):
                    if _worse(slots[k], slots[worst]):
                        worst = k
                if _worse(slots[worst], cand):
                    slots[worst] = cand
            matrix.extend(s if s is not None else (-1, -1, -1, -1) for s in slots)
        # STABLE_QSORT by score_compare: unused last, then score desc, then name desc.
        matrix.sort(key=lambda m: (m[2] < 0, -m[0], -m[1]))
        for score, _, j, i in matrix:
            if j < 0 or score < MIN_SCORE:
                break
            if j in self.paired or i in self.used:
                continue
            self.record(j, i)

    def cleaned_counts(self) -> dict[bytes, dict[bytes, int]]:
        out: dict[bytes, dict[bytes, int]] = {}
        for d, counts in self.counts.items():
            if not self.dirs_removed.get(d, NOT_RELEVANT):
                continue
            kept = {k: v for k, v in counts.items() if k != _UNKNOWN}
            out[d] = kept
        return out


def _determinable(counts: dict[bytes, int]) -> bool:
    first = second = unknown = 0
    for d, n in counts.items():
        if d == _UNKNOWN:
            unknown = n
        elif n >= first:
            second, first = first, n
        elif n >= second:
            second = n
    return first > second + unknown


def detect_renames(
    sources: Sequence[Candidate],
    dests: Sequence[Candidate],
    relevant: dict[bytes, int],
    dirs_removed: dict[bytes, int],
    load: Callable[[Sequence[ObjectId]], dict[ObjectId, bytes]],
    empty_blob: ObjectId,
) -> tuple[list[Candidate], Detected]:
    """Renames among one side's deleted ``sources`` and added ``dests`` (both in path
    order; empty files never take part). Returns the destinations that take part (in
    order) and what was found; ``relevant`` (path -> content/location relevance) and
    ``dirs_removed`` (directory -> relevance) are updated as git updates them."""
    srcs = [s for s in sources if s.oid != empty_blob]
    dsts = [d for d in dests if d.oid != empty_blob]
    det = _Detector(srcs, dsts, relevant, dirs_removed, _Contents(load))
    det.exact()
    left = [i for i in range(len(srcs)) if i not in det.used]
    if left and len(det.paired) < len(dsts):
        det.basenames(left)
        sources_left = [i for i in left if i not in det.used and srcs[i].path in relevant]
        sources_left = det.early_known(sources_left)
        det.matrix(sources_left)
    pairs = {j: srcs[i] for j, i in det.paired.items()}
    return dsts, Detected(pairs, det.cleaned_counts())


def _worse(a: tuple[int, int, int, int] | None, b: tuple[int, int, int, int] | None) -> bool:
    """``score_compare(a, b) > 0``: a sorts after b."""
    if a is None:
        return b is not None
    if b is None:
        return False
    if a[0] == b[0]:
        return b[1] - a[1] > 0
    return b[0] - a[0] > 0

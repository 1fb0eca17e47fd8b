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

__all__ = ["MAX_SCORE", "MIN_SCORE", "Candidate", "detect_renames", "similarity", "spans"]

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


def detect_renames(
    sources: Sequence[Candidate],
    dests: Sequence[Candidate],
    relevant: set[bytes],
    load: Callable[[Sequence[ObjectId]], dict[ObjectId, bytes]],
    empty_blob: ObjectId,
) -> list[tuple[Candidate, Candidate]]:
    """Pairs ``(source, destination)``, sorted by source path. ``sources`` and ``dests``
    are in path order; only sources in ``relevant`` take part in inexact matching."""
    srcs = [s for s in sources if s.oid != empty_blob]
    dsts = [d for d in dests if d.oid != empty_blob]
    used: set[int] = set()
    paired: dict[int, int] = {}  # dst index -> src index
    by_oid: dict[ObjectId, list[int]] = {}
    for i, s in enumerate(srcs):
        by_oid.setdefault(s.oid, []).append(i)
    for j, d in enumerate(dsts):
        best, best_score = -1, 0
        for i in by_oid.get(d.oid, ()):
            s = srcs[i]
            if (not _regular(s.mode) or not _regular(d.mode)) and s.mode != d.mode:
                continue
            if i in used:
                continue
            score = 1 + (_basename(s.path) == _basename(d.path))
            if score > best_score:
                best, best_score = i, score
                if score == 2:
                    break
        if best >= 0:
            used.add(best)
            paired[j] = best
    left = [i for i in range(len(srcs)) if i not in used]
    todo = [j for j in range(len(dsts)) if j not in paired]
    if left and todo and relevant:
        contents = _Contents(load)
        _inexact(srcs, dsts, left, todo, relevant, paired, contents)
    pairs = [(srcs[i], dsts[j]) for j, i in paired.items()]
    pairs.sort(key=lambda p: p[0].path)
    return pairs


def _inexact(
    srcs: Sequence[Candidate],
    dsts: Sequence[Candidate],
    left: list[int],
    todo: list[int],
    relevant: set[bytes],
    paired: dict[int, int],
    contents: _Contents,
) -> None:
    # Basename matches (find_basename_matches): unique basenames on both sides.
    src_names: dict[bytes, int] = {}
    for i in left:
        b = _basename(srcs[i].path)
        src_names[b] = -1 if b in src_names else i
    dst_names: dict[bytes, int] = {}
    for j in todo:
        b = _basename(dsts[j].path)
        dst_names[b] = -1 if b in dst_names else j
    wanted = [
        (i, dst_names[_basename(srcs[i].path)])
        for i in left
        if srcs[i].path in relevant
        and src_names[_basename(srcs[i].path)] == i
        and dst_names.get(_basename(srcs[i].path), -1) >= 0
    ]
    contents.prefetch([srcs[i].oid for i, _ in wanted] + [dsts[j].oid for _, j in wanted])
    used: set[int] = set()
    for i, j in wanted:
        if j in paired:
            continue
        if contents.score(srcs[i], dsts[j], MIN_SCORE) >= _BASENAME_SCORE:
            paired[j] = i
            used.add(i)
    sources = [i for i in left if i not in used and srcs[i].path in relevant]
    remaining = [j for j in todo if j not in paired]
    if not sources or not remaining:
        return
    if len(sources) * len(remaining) > _RENAME_LIMIT * _RENAME_LIMIT:
        return
    contents.prefetch([srcs[i].oid for i in sources] + [dsts[j].oid for j in remaining])
    # Each destination keeps its best four (score, same basename, src) in git's slots.
    matrix: list[tuple[int, int, int, int]] = []  # (score, name_score, dst, src)
    for j in remaining:
        slots: list[tuple[int, int, int, int] | None] = [None] * _PER_DST
        for i in sources:
            score = contents.score(srcs[i], dsts[j], MIN_SCORE)
            cand = (score, int(_basename(srcs[i].path) == _basename(dsts[j].path)), j, i)
            worst = 0
            for k in range(1, _PER_DST):
                if _worse(slots[k], slots[worst]):
                    worst = k
            if _worse(slots[worst], cand):
                slots[worst] = cand
        matrix.extend(s if s is not None else (-1, -1, -1, -1) for s in slots)
    # STABLE_QSORT by score_compare: unused last, then score desc, then name_score desc.
    matrix.sort(key=lambda m: (m[2] < 0, -m[0], -m[1]))
    src_used: set[int] = set()
    for score, _, j, i in matrix:
        if j < 0 or score < MIN_SCORE:
            break
        if j in paired or i in src_used:
            continue
        paired[j] = i
        src_used.add(i)


def _worse(a: tuple[int, int, int, int] | None, b: tuple[int, int, int, int] | None) -> bool:
    """``score_compare(a, b) > 0``: a sorts after b."""
    if a is None:
        return b is not None
    if b is None:
        return False
    if a[0] == b[0]:
        return b[1] - a[1] > 0
    return b[0] - a[0] > 0

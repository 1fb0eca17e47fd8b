"""Three-way merge of text, byte for byte what git's ``ll_merge`` writes.

git merges file content with xdiff's ``xdl_merge`` (``xdiff/xmerge.c``), fed by
histogram diffs (``xdiff/xhistogram.c``, which ``merge-ort`` hard-codes), level
``XDL_MERGE_ZEALOUS``, conflict style "merge", 7-character markers. merge3 and
difflib align lines differently (a different diff, no zealous refinement, no
merging of conflicts separated by up to three lines), so they disagree with git on
ordinary edits; this module re-implements those parts of xdiff in Python:

* lines are classified (equal content, equal class id), and the histogram diff scans
  and extends common runs in xdiff's order (lowest occurrence count first, then the
  longest run, first found on ties), so ties resolve as in git;
* when every common line occurs more than 64 times, xdiff falls back to its Myers
  diff; that fallback here is a plain minimal Myers diff (xdiff's carries heuristics
  for huge inputs that can pick a different but equally short script);
* an edit of one region of a file whose lines are all distinct, replaced by lines
  that do not occur in it (the commonest edit of source and configuration), has a
  script known without running the diff; ``_one_hunk`` shows why it is the same;
* change groups are slid as ``xdl_change_compact`` slides them (no indent heuristic,
  as merges do not use it), then combined by ``xdl_do_merge``, conflicts refined and
  simplified, and the result written with git's markers and CRLF handling.

Everything is iterative: no recursion over input size.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MergeText", "is_binary", "merge_text"]

_MAX_CHAIN = 64


def is_binary(data: bytes) -> bool:
    """Git's ``buffer_is_binary``: a NUL byte among the first 8,000."""
    return b"\0" in data[:8000]


def _split(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    out = [line + b"\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


class _Env:
    """One prepared pair of files: class ids per line and change marks (xdfenv_t)."""

    __slots__ = ("a", "b", "ca", "cb", "ra", "rb")

    def __init__(self, a: list[bytes], b: list[bytes]) -> None:
        classes: dict[bytes, int] = {}
        self.a = a
        self.b = b
        self.ca = [classes.setdefault(line, len(classes)) for line in a]
        self.cb = [classes.setdefault(line, len(classes)) for line in b]
        # Change marks with a sentinel 0 on each side: index i+1 is line i.
        self.ra = [0] * (len(a) + 2)
        self.rb = [0] * (len(b) + 2)


# -- histogram diff (xhistogram.c) -------------------------------------------------------


def _find_lcs(
    ca: list[int], cb: list[int], line1: int, count1: int, line2: int, count2: int
) -> tuple[int, tuple[int, int, int, int]]:
    """(status, (begin1, end1, begin2, end2)) with 1-based lines; status 1 = fall back
    to Myers, 0 = use the region (all zero: nothing in common).

    xdiff keeps one record per distinct line in hash buckets; a bucket's records of
    other lines never change the outcome (they fail every comparison), so a record is
    looked up here by the line's class directly.
    """
    # record = [first occurrence, occurrences]; next_ptr chains the occurrences.
    recs: dict[int, list[int]] = {}
    next_ptr = [0] * (count1 + 1)
    rec_at: list[list[int]] = [[0, 0]] * (count1 + 1)
    end1 = line1 + count1 - 1
    end2 = line2 + count2 - 1
    for ptr in range(end1, line1 - 1, -1):
        cls = ca[ptr - 1]
        rec = recs.get(cls)
        if rec is None:
            rec = recs[cls] = [ptr, 1]
        else:
            next_ptr[ptr - line1] = rec[0]
            rec[0] = ptr
            rec[1] += 1
        rec_at[ptr - line1] = rec
    best_cnt = _MAX_CHAIN + 1
    has_common = False
    lcs = (0, 0, 0, 0)
    b_ptr = line2
    while b_ptr <= end2:
        b_next = b_ptr + 1
        rec = recs.get(cb[b_ptr - 1])
        if rec is None:
            b_ptr = b_next
            continue
        if rec[1] > best_cnt:
            has_common = True
            b_ptr = b_next
            continue
        a_s = rec[0]
        has_common = True
        while True:
            np = next_ptr[a_s - line1]
            bs = b_ptr
            ae = a_s
            be = bs
            rc = rec[1]
            while line1 < a_s and line2 < bs and ca[a_s - 2] == cb[bs - 2]:
                a_s -= 1
                bs -= 1
                if rc > 1:
                    rc = min(rc, rec_at[a_s - line1][1])
            while ae < end1 and be < end2 and ca[ae] == cb[be]:
                ae += 1
                be += 1
                if rc > 1:
                    rc = min(rc, rec_at[ae - line1][1])
            if b_next <= be:
                b_next = be + 1
            if lcs[1] - lcs[0] < ae - a_s or rc < best_cnt:
                lcs = (a_s, ae, bs, be)
                best_cnt = rc
            if np == 0:
                break
            while np <= ae:
                np = next_ptr[np - line1]
                if np == 0:
                    break
            if np == 0:
                break
            a_s = np
        b_ptr = b_next
    if has_common and best_cnt > _MAX_CHAIN:
        return 1, lcs
    return 0, lcs


def _myers(env: _Env, line1: int, count1: int, line2: int, count2: int) -> None:
    """Minimal Myers diff of a range, marking changed lines (the fallback)."""
    a = env.ca[line1 - 1 : line1 - 1 + count1]
    b = env.cb[line2 - 1 : line2 - 1 + count2]
    n, m = len(a), len(b)
    v = {1: 0}
    trace: list[dict[int, int]] = []
    found = False
    for d in range(n + m + 1):
        trace.append(dict(v))
        for k in range(-d, d + 1, 2):
            if k == -d or (k != d and v.get(k - 1, -1) < v.get(k + 1, -1)):
                x = v.get(k + 1, 0)
            else:
                x = v.get(k - 1, 0) + 1
            y = x - k
            while x < n and y < m and a[x] == b[y]:
                x += 1
                y += 1
            v[k] = x
            if x >= n and y >= m:
                found = True
                break
        if found:
            break
    x, y = n, m
    for d in range(len(trace) - 1, 0, -1):
        vd = trace[d]
        k = x - y
        down = k == -d or (k != d and vd.get(k - 1, -1) < vd.get(k + 1, -1))
        pk = k + 1 if down else k - 1
        px = vd.get(pk, 0)
        py = px - pk
        while x > px and y > py:
            x -= 1
            y -= 1
        if pk == k + 1:
            env.rb[line2 + py] = 1  # inserted b[py]
        else:
            env.ra[line1 + px] = 1  # deleted a[px]
        x, y = px, py


def _histogram(env: _Env) -> None:
    work = [(1, len(env.a), 1, len(env.b))]
    while work:
        line1, count1, line2, count2 = work.pop()
        while True:
            if count1 <= 0 and count2 <= 0:
                break
            if count1 == 0:
                for i in range(line2, line2 + count2):
                    env.rb[i] = 1
                break
            if count2 == 0:
                for i in range(line1, line1 + count1):
                    env.ra[i] = 1
                break
            status, (b1, e1, b2, e2) = _find_lcs(env.ca, env.cb, line1, count1, line2, count2)
            if status == 1:
                _myers(env, line1, count1, line2, count2)
                break
            if b1 == 0 and b2 == 0:
                for i in range(line1, line1 + count1):
                    env.ra[i] = 1
                for i in range(line2, line2 + count2):
                    env.rb[i] = 1
                break
            work.append((line1, b1 - line1, line2, b2 - line2))
            end1 = line1 + count1 - 1
            end2 = line2 + count2 - 1
            count1, line1 = end1 - e1, e1 + 1
            count2, line2 = end2 - e2, e2 + 1


# -- change compaction (xdiffi.c) ---------------------------------------------------------


def _compact(rchg: list[int], cls: list[int], ochg: list[int]) -> None:
    """``xdl_change_compact`` without the indent heuristic; arrays carry sentinels
    (index 0 and n+1) so line i of the file is index i+1."""
    n = len(cls)

    def match(i: int, j: int) -> bool:
        return cls[i] == cls[j]

    # Groups are [start, end) in 0-based line numbers.
    gs = ge = 0
    while rchg[ge + 1]:
        ge += 1
    os_ = oe = 0
    while ochg[oe + 1]:
        oe += 1
    no = len(ochg) - 2
    while True:
        if ge != gs:
            while True:
                size = ge - gs
                end_matching_other = -1
                # slide up
                while gs > 0 and match(gs - 1, ge - 1):
                    gs -= 1
                    rchg[gs + 1] = 1
                    ge -= 1
                    rchg[ge + 1] = 0
                    while rchg[gs]:
                        gs -= 1
                    # group_previous on the other file
                    oe = os_ - 1
                    os_ = oe
                    while ochg[os_]:
                        os_ -= 1
                earliest_end = ge
                if oe > os_:
                    end_matching_other = ge
                # slide down
                while ge < n and match(gs, ge):
                    rchg[gs + 1] = 0
                    gs += 1
                    rchg[ge + 1] = 1
                    ge += 1
                    while rchg[ge + 1]:
                        ge += 1
                    os_ = oe + 1
                    oe = os_
                    while ochg[oe + 1]:
                        oe += 1
                    if oe > os_:
                        end_matching_other = ge
                if size == ge - gs:
                    break
            if ge != earliest_end and end_matching_other != -1:
                while oe == os_:
                    gs -= 1
                    rchg[gs + 1] = 1
                    ge -= 1
                    rchg[ge + 1] = 0
                    while rchg[gs]:
                        gs -= 1
                    oe = os_ - 1
                    os_ = oe
                    while ochg[os_]:
                        os_ -= 1
        # next group
        if ge == n:
            break
        gs = ge + 1
        ge = gs
        while rchg[ge + 1]:
            ge += 1
        if oe == no:
            break
        os_ = oe + 1
        oe = os_
        while ochg[oe + 1]:
            oe += 1


def _script(env: _Env) -> list[tuple[int, int, int, int]]:
    """``xdl_build_script``: hunks (i1, i2, chg1, chg2), 0-based, in file order."""
    ra, rb = env.ra, env.rb
    out: list[tuple[int, int, int, int]] = []
    i1, i2 = len(env.a), len(env.b)
    while i1 >= 0 or i2 >= 0:
        if (i1 > 0 and ra[i1]) or (i2 > 0 and rb[i2]):
            l1, l2 = i1, i2
            while i1 > 0 and ra[i1]:
                i1 -= 1
            while i2 > 0 and rb[i2]:
                i2 -= 1
            out.append((i1, i2, l1 - i1, l2 - i2))
        i1 -= 1
        i2 -= 1
    out.reverse()
    return out


def _one_hunk(a: list[bytes], b: list[bytes]) -> list[tuple[int, int, int, int]] | None:
    """The script of ``_diff(a, b)`` without running it, when it is sure to be one hunk:
    else None.

    Write ``a = P X S`` and ``b = P Y S`` with P and S the longest common prefix and
    suffix. When the lines of ``a`` are all distinct and no line of Y occurs in ``a``,
    every line of ``b`` that has a match in ``a`` is a line of P or S, and its only match
    is its own copy: every run the histogram diff can pick is a piece of P or of S,
    aligned, and none extends into X or Y (their first and last lines differ, or one of
    them is empty and the neighbour is a line of ``a`` elsewhere, or of Y). So P and S
    end up matched and X, Y marked; compaction then slides nothing (a slide compares a
    line of X with a distinct line of ``a``, or a line of Y with a line of ``a``).
    Hence the one hunk (|P|, |P|, |X|, |Y|), exactly what the full diff returns.
    """
    n, m = len(a), len(b)
    seen = set(a)
    if len(seen) != n:
        return None
    lim = min(n, m)
    p = 0
    while p < lim and a[p] == b[p]:
        p += 1
    s = 0
    while s < lim - p and a[n - 1 - s] == b[m - 1 - s]:
        s += 1
    if p + s == n == m:
        return []
    for k in range(p, m - s):
        if b[k] in seen:
            return None
    return [(p, p, n - p - s, m - p - s)]


def _diff(a: list[bytes], b: list[bytes]) -> list[tuple[int, int, int, int]]:
    fast = _one_hunk(a, b)
    return fast if fast is not None else _diff_full(a, b)


def _diff_full(a: list[bytes], b: list[bytes]) -> list[tuple[int, int, int, int]]:
    env = _Env(a, b)
    _histogram(env)
    _compact(env.ra, env.ca, env.rb)
    _compact(env.rb, env.cb, env.ra)
    return _script(env)


# -- merging (xmerge.c) --------------------------------------------------------------------


class _M:
    __slots__ = ("chg0", "chg1", "chg2", "i0", "i1", "i2", "mode")

    def __init__(self, mode: int, i0: int, c0: int, i1: int, c1: int, i2: int, c2: int) -> None:
        self.mode, self.i0, self.chg0, self.i1, self.chg1, self.i2, self.chg2 = (
            mode,
            i0,
            c0,
            i1,
            c1,
            i2,
            c2,
        )


def _append(ms: list[_M], mode: int, i0: int, c0: int, i1: int, c1: int, i2: int, c2: int) -> None:
    if ms and (i1 <= ms[-1].i1 + ms[-1].chg1 or i2 <= ms[-1].i2 + ms[-1].chg2):
        m = ms[-1]
        if mode != m.mode:
            m.mode = 0
        m.chg0 = i0 + c0 - m.i0
        m.chg1 = i1 + c1 - m.i1
        m.chg2 = i2 + c2 - m.i2
    else:
        ms.append(_M(mode, i0, c0, i1, c1, i2, c2))


def _combine(
    s1: list[tuple[int, int, int, int]],
    s2: list[tuple[int, int, int, int]],
    f1: list[bytes],
    f2: list[bytes],
    n0: int,
) -> list[_M]:
    ms: list[_M] = []
    p = q = 0
    while p < len(s1) and q < len(s2):
        x1, x2 = s1[p], s2[q]
        if x1[0] + x1[2] < x2[0]:
            _append(ms, 1, x1[0], x1[2], x1[1], x1[3], x2[1] - x2[0] + x1[0], x1[2])
            p += 1
            continue
        if x2[0] + x2[2] < x1[0]:
            _append(ms, 2, x2[0], x2[2], x1[1] - x1[0] + x2[0], x2[2], x2[1], x2[3])
            q += 1
            continue
        if (
            x1[0] != x2[0]
            or x1[2] != x2[2]
            or x1[3] != x2[3]
            or f1[x1[1] : x1[1] + x1[3]] != f2[x2[1] : x2[1] + x2[3]]
        ):
            off = x1[0] - x2[0]
            ffo = off + x1[2] - x2[2]
            i0, i1, i2 = x1[0], x1[1], x2[1]
            if off > 0:
                i0 -= off
                i1 -= off
            else:
                i2 += off
            c0 = x1[0] + x1[2] - i0
            c1 = x1[1] + x1[3] - i1
            c2 = x2[1] + x2[3] - i2
            if ffo < 0:
                c0 -= ffo
                c1 -= ffo
            else:
                c2 += ffo
            _append(ms, 0, i0, c0, i1, c1, i2, c2)
        e1 = x1[0] + x1[2]
        e2 = x2[0] + x2[2]
        if e1 >= e2:
            q += 1
        if e2 >= e1:
            p += 1
    for x1 in s1[p:]:
        _append(ms, 1, x1[0], x1[2], x1[1], x1[3], x1[0] + len(f2) - n0, x1[2])
    for x2 in s2[q:]:
        _append(ms, 2, x2[0], x2[2], x2[0] + len(f1) - n0, x2[2], x2[1], x2[3])
    return ms


def _refine(ms: list[_M], f1: list[bytes], f2: list[bytes]) -> list[_M]:
    out: list[_M] = []
    for m in ms:
        if m.mode or m.chg1 == 0 or m.chg2 == 0:
            out.append(m)
            continue
        script = _diff(f1[m.i1 : m.i1 + m.chg1], f2[m.i2 : m.i2 + m.chg2])
        if not script:
            m.mode = 4
            out.append(m)
            continue
        base1, base2 = m.i1, m.i2
        for k, (a1, a2, c1, c2) in enumerate(script):
            piece = m if k == 0 else _M(0, m.i0, m.chg0, 0, 0, 0, 0)
            piece.i1, piece.chg1, piece.i2, piece.chg2 = a1 + base1, c1, a2 + base2, c2
            out.append(piece)
    return out


def _simplify(ms: list[_M]) -> None:
    k = 0
    while k + 1 < len(ms):
        m, nxt = ms[k], ms[k + 1]
        begin = m.i1 + m.chg1
        end = nxt.i1
        if m.mode != 0 or nxt.mode != 0 or end - begin > 3:
            k += 1
        else:
            m.chg1 = nxt.i1 + nxt.chg1 - m.i1
            m.chg2 = nxt.i2 + nxt.chg2 - m.i2
            del ms[k + 1]


def _eol_crlf(lines: list[bytes], i: int) -> int:
    n = len(lines)
    if i < n - 1:
        s = lines[i]
        return int(len(s) > 1 and s[-2:-1] == b"\r")
    if not n:
        return -1
    s = lines[i]
    if s and s[-1:] == b"\n":
        return int(len(s) > 1 and s[-2:-1] == b"\r")
    if not i:
        return -1
    s = lines[i - 1]
    return int(len(s) > 1 and s[-2:-1] == b"\r")


def _needs_cr(f0: list[bytes], f1: list[bytes], f2: list[bytes], m: _M) -> bool:
    need = _eol_crlf(f1, m.i1 - 1 if m.i1 else 0)
    if need:
        need = _eol_crlf(f2, m.i2 - 1 if m.i2 else 0)
    if need:
        need = _eol_crlf(f0, 0)
    return need > 0


def _copy(out: list[bytes], lines: list[bytes], i: int, count: int, add_nl: bytes) -> None:
    if count < 1:
        return
    out.extend(lines[i : i + count])
    if add_nl and not lines[i + count - 1].endswith(b"\n"):
        out.append(add_nl)


@dataclass(frozen=True, slots=True)
class MergeText:
    """The merged bytes and the number of conflict hunks (0 = clean)."""

    data: bytes
    conflicts: int


def merge_text(
    base: bytes,
    ours: bytes,
    theirs: bytes,
    *,
    ours_label: str,
    theirs_label: str,
    marker_size: int = 7,
) -> MergeText:
    """``xdl_merge`` of three texts (level zealous, style merge, no favouring)."""
    f0, f1, f2 = _split(base), _split(ours), _split(theirs)
    s1 = _diff(f0, f1)
    s2 = _diff(f0, f2)
    if not s1:
        return MergeText(theirs, 0)
    if not s2:
        return MergeText(ours, 0)
    ms = _combine(s1, s2, f1, f2, len(f0))
    ms = _refine(ms, f1, f2)
    _simplify(ms)
    out: list[bytes] = []
    i = 0
    conflicts = 0
    l1 = ours_label.encode("utf-8", "surrogateescape")
    l2 = theirs_label.encode("utf-8", "surrogateescape")
    for m in ms:
        if m.mode == 0:
            conflicts += 1
            cr = b"\r" if _needs_cr(f0, f1, f2, m) else b""
            _copy(out, f1, i, m.i1 - i, b"")
            out.append(b"<" * marker_size + (b" " + l1 if l1 else b"") + cr + b"\n")
            _copy(out, f1, m.i1, m.chg1, cr + b"\n")
            out.append(b"=" * marker_size + cr + b"\n")
            _copy(out, f2, m.i2, m.chg2, cr + b"\n")
            out.append(b">" * marker_size + (b" " + l2 if l2 else b"") + cr + b"\n")
        elif m.mode & 3:
            _copy(out, f1, i, m.i1 - i, b"")
            if m.mode & 1:
                _copy(out, f1, m.i1, m.chg1, b"")
            if m.mode & 2:
                _copy(out, f2, m.i2, m.chg2, b"")
        else:
            continue
        i = m.i1 + m.chg1
    _copy(out, f1, i, len(f1) - i, b"")
    return MergeText(b"".join(out), conflicts)

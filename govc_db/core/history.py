"""History over the commit index: log (git rev-list order), merge-base, ancestry.

Everything here reads commit-index rows (parents, generation, committer time) and
never parses commit objects. The walks re-implement git's own (``revision.c`` and
``commit-reach.c`` of git 2.39) so that the order of ``log`` and the pick of
``merge_base`` are exactly what ``git rev-list`` and ``git merge-base`` print on a
repository without a commit-graph file.

Rows are loaded by :class:`CommitGraph` in generation windows (one recursive query
per window, the window doubling as the walk goes deeper), so a log with a small
limit reads a few dozen rows and a full log takes O(log n) queries. Rows the store's
query cache holds (commit-index rows never change) are taken from it first.
"""

from __future__ import annotations

import heapq
from bisect import insort
from collections.abc import Callable, Iterable, Iterator, Sequence

from govc_db.errors import NotFound
from govc_db.objects import ObjectId
from govc_db.store.ports import CommitIndexStore, IndexEntry

__all__ = ["CommitGraph", "is_ancestor", "log", "merge_base", "merge_bases"]

#: Ids per ``ancestry`` call; keeps each IN (...) list well under parameter limits.
_CHUNK = 500
#: Rows of the first window when the caller does not say otherwise.
DEFAULT_WINDOW = 64


class CommitGraph:
    """Commit-index rows of the ancestry of some tips, loaded on demand.

    A walk asks for the parents of a loaded row (:meth:`parents`, :meth:`chain`).
    A missing one is first asked of the index's optional ``cached_row`` /
    ``cached_chain`` (the query cache: no query). Otherwise the window moves down by
    ``window`` generations below ``floor`` (one ``window`` range query that loads every
    commit of that band, a superset of the needed ancestors) and the window doubles, so
    a full walk takes O(log n) queries; below the windows read so far, a walk that came
    down through cached rows moves ``floor`` to where the cache stopped answering. A
    parent far below the window (an old side branch merged recently) is loaded with a
    window of its own instead, so that it does not drag the whole main line in.
    """

    def __init__(
        self,
        index: CommitIndexStore,
        tips: Sequence[ObjectId],
        *,
        window: int = DEFAULT_WINDOW,
        known: Iterable[IndexEntry] = (),
    ) -> None:
        self._index = index
        # Rows already in the store's cache of immutable rows answer without a query
        # (an optional capability of the index); only misses read a window.
        self._cached: Callable[[ObjectId], IndexEntry | None] | None = getattr(
            index, "cached_row", None
        )
        self._cached_chain: Callable[[ObjectId, int], list[IndexEntry]] | None = getattr(
            index, "cached_chain", None
        )
        self._rows: dict[ObjectId, IndexEntry] = {}
        self._window = max(2, window)
        #: Number of index queries issued (for tests and stats).
        self.fetches = 0
        self._add(known)
        wanted = [t for t in tips if t not in self._rows]
        if wanted:
            self.fetches += 1
            self._add(index.get_many(wanted).values())
        for tip in tips:
            if tip not in self._rows:
                raise NotFound(f"commit {tip.hex()} is not in the commit index")
        self._floor = max((self._rows[t].generation for t in tips), default=0) + 1
        #: The lowest generation of a row the cache answered (a walk through cached
        #: rows can end far below the windows read so far).
        self._low_cached = self._floor

    def __contains__(self, oid: object) -> bool:
        return oid in self._rows

    def row(self, oid: ObjectId) -> IndexEntry:
        """The row of ``oid``, loading it (as a new tip) if needed; ``NotFound`` if absent."""
        found = self._rows.get(oid)
        if found is None and self._cached is not None:
            found = self._cached(oid)
            if found is not None:
                self._rows[oid] = found
        if found is None:
            # Loading the new tip's ancestry down to the floor keeps the invariant.
            self._fetch([oid], self._floor)
            found = self._rows.get(oid)
            if found is None:
                raise NotFound(f"commit {oid.hex()} is not in the commit index")
        return found

    def parents(self, entry: IndexEntry) -> list[IndexEntry]:
        """The rows of ``entry``'s parents, in parent order."""
        rows = self._rows
        missing = [p for p in entry.parents if p not in rows]
        if missing and self._cached is not None:
            for p in missing:
                hit = self._cached(p)
                if hit is not None:
                    rows[p] = hit
                    if hit.generation < self._low_cached:
                        self._low_cached = hit.generation
            missing = [p for p in missing if p not in rows]
        if missing:
            if self._low_cached <= entry.generation < self._floor:
                # The walk went down through cached rows below the windows read so far:
                # the windows carry on from here (doubling as before), rather than a
                # fixed window of ancestry for every miss down there.
                self._floor = entry.generation
            if entry.generation - 1 >= self._floor - self._window:
                self._extend()
            # A parent below the band just loaded (an old side branch merged recently)
            # gets a window of its own, so it does not drag the whole main line in.
            below = [p for p in missing if p not in self._rows]
            if below:
                self._fetch(below, entry.generation - self._window)
            for p in missing:
                if p not in self._rows:
                    raise NotFound(f"commit {p.hex()} is not in the commit index")
        return [rows[p] for p in entry.parents]

    def chain(self, entry: IndexEntry, limit: int) -> list[IndexEntry]:
        """Up to ``limit`` rows down ``entry``'s single-parent ancestry: its parent's
        row, then while the last row has exactly one parent, that parent's (a row with
        another number of parents ends the list). ``entry`` must have one parent.
        Loaded rows first, then runs of the cache's rows (one call each), then
        :meth:`parents`'s window reads."""
        out: list[IndexEntry] = []
        rows = self._rows
        cur = entry
        while len(out) < limit and len(cur.parents) == 1:
            oid = cur.parents[0]
            found = rows.get(oid)
            if found is None and self._cached_chain is not None:
                run = self._cached_chain(oid, limit - len(out))
                if run:
                    for r in run:
                        rows[r.oid] = r
                    self._low_cached = min(self._low_cached, run[-1].generation)
                    out.extend(run)
                    cur = run[-1]
                    continue
            if found is None:
                found = self.parents(cur)[0]
            out.append(found)
            cur = found
        return out

    def _extend(self) -> None:
        # Every commit in the next generation band, reachable or not: a superset of the
        # tips' ancestry there, which keeps the invariant, read by one index range scan
        # whose plan cannot degrade the way the recursive ancestry query's can.
        top = self._floor - 1
        self._floor -= self._window
        self._window *= 2
        self.fetches += 1
        self._add(self._index.window(max(0, self._floor), top).values())

    def _fetch(self, oids: Sequence[ObjectId], min_generation: int) -> None:
        for i in range(0, len(oids), _CHUNK):
            self.fetches += 1
            self._add(self._index.ancestry(oids[i : i + _CHUNK], max(0, min_generation)).values())

    def _add(self, rows: Iterable[IndexEntry]) -> None:
        for r in rows:
            self._rows.setdefault(r.oid, r)


def log(
    index: CommitIndexStore, start: ObjectId, path: str | None = None, limit: int | None = None
) -> Iterator[ObjectId]:
    """Commit ids in exactly the order of ``git rev-list START [-- PATH]``.

    git's default walk: pop the newest commit (committer date; on equal dates the one
    queued first), queue its unseen parents. With a path, git's default history
    simplification: a commit with no change to the path against some parent (TREESAME)
    is hidden and only the first such parent is followed; otherwise it is shown and all
    parents are followed; a root commit is shown when it adds the path. ``limit``
    counts shown commits.
    """
    if limit is not None and limit <= 0:
        return
    window = DEFAULT_WINDOW if limit is None or path is not None else max(8, min(64, limit + 2))
    graph = CommitGraph(index, [start], window=window)
    # (commit, parent position) pairs whose change touches the path: one query.
    touching = None if path is None else index.touching(path)
    first = graph.row(start)
    queue: list[tuple[int, int, ObjectId]] = [(-first.committer_time, 0, start)]
    seen = {start}
    order = 1
    shown = 0
    while queue:
        oid = heapq.heappop(queue)[2]
        entry = graph.row(oid)
        follow: Sequence[int] = range(len(entry.parents))
        show = True
        if touching is not None:
            if not entry.parents:
                show = (oid, 0) in touching
            else:
                for i in range(len(entry.parents)):
                    if (oid, i) not in touching:
                        show, follow = False, (i,)
                        break
        if entry.parents:
            rows = graph.parents(entry)
            for i in follow:
                parent = rows[i]
                if parent.oid not in seen:
                    seen.add(parent.oid)
                    heapq.heappush(queue, (-parent.committer_time, order, parent.oid))
                    order += 1
        if show:
            yield oid
            shown += 1
            if limit is not None and shown >= limit:
                return


_PARENT1, _PARENT2, _STALE, _RESULT = 1, 2, 4, 8


def merge_base(index: CommitIndexStore, a: ObjectId, b: ObjectId) -> ObjectId | None:
    """The best common ancestor (as ``git merge-base A B``), or None."""
    bases = merge_bases(index, a, b)
    return bases[0] if bases else None


def merge_bases(index: CommitIndexStore, a: ObjectId, b: ObjectId) -> list[ObjectId]:
    """Every best common ancestor (``git merge-base --all A B``), in git's order.

    This is git's ``paint_down_to_common``: walk both histories newest-first by
    committer date, painting commits with the side(s) they are reachable from; a
    commit painted by both sides is a candidate and everything below it is stale; stop
    when only stale commits are queued. Candidates that are ancestors of another are
    dropped, and of the best bases git prints the one with the newest committer date,
    on equal dates the one found first -- reproduced here. (git with a commit-graph
    file walks by generation instead and may pick another of several equally good
    bases; the set of best bases is the same.)
    """
    if a == b:
        CommitGraph(index, [a])  # NotFound when it is not indexed
        return [a]
    graph = CommitGraph(index, [a, b])
    linear = _linear_base(graph, a, b)
    if linear is not None:
        return [linear]
    flags: dict[ObjectId, int] = {a: _PARENT1, b: _PARENT2}
    queue: list[tuple[int, int, ObjectId]] = []
    queued: dict[ObjectId, int] = {}  # entries of each commit in the queue
    nonstale = 0  # queue entries whose commit is not stale
    order = 0

    def push(oid: ObjectId) -> None:
        nonlocal order, nonstale
        heapq.heappush(queue, (-graph.row(oid).committer_time, order, oid))
        order += 1
        queued[oid] = queued.get(oid, 0) + 1
        if not flags[oid] & _STALE:
            nonstale += 1

    push(a)
    push(b)
    # Candidates sorted newest first, equal dates in the order found (git's
    # commit_list_insert_by_date); the key makes insort place ties after earlier ones.
    found: list[tuple[int, int, ObjectId]] = []
    while nonstale:
        oid = heapq.heappop(queue)[2]
        queued[oid] -= 1
        if not flags[oid] & _STALE:
            nonstale -= 1
        entry = graph.row(oid)
        paint = flags[oid] & (_PARENT1 | _PARENT2 | _STALE)
        if paint == _PARENT1 | _PARENT2:
            if not flags[oid] & _RESULT:
                flags[oid] |= _RESULT
                insort(found, (-entry.committer_time, len(found), oid))
            paint |= _STALE
        if not entry.parents:
            continue
        for parent in graph.parents(entry):
            have = flags.get(parent.oid, 0)
            if have & paint == paint:
                continue
            if paint & _STALE and not have & _STALE:
                nonstale -= queued.get(parent.oid, 0)
            flags[parent.oid] = have | paint
            push(parent.oid)
    bases = [oid for _, _, oid in found if not flags[oid] & _STALE]
    if len(bases) > 1:
        bases = _independent(graph, bases)
    return bases


def _linear_base(graph: CommitGraph, a: ObjectId, b: ObjectId) -> ObjectId | None:
    """The merge base when both histories are single-parent chains down to where they
    meet (a branch forked from another and never merged), else None.

    Stepping down whichever side has the higher generation meets at the first common
    commit C. Every commit passed on the way has exactly one parent, so the ancestors
    of ``a`` are its chain plus C's ancestors, likewise for ``b``, and the chains are
    disjoint above C: C is the one best common ancestor, the set (of one) git's walk
    finds. A merge commit or a root on the way gives up (None) before any guess, and the
    full walk decides. The walk costs one step per commit between the tips and C, with
    no queue and no flags.
    """
    x, y = graph.row(a), graph.row(b)
    run = 16  # rows read at a time once both sides are level, doubling
    while x.oid != y.oid:
        if x.generation < y.generation:
            x, y = y, x
        if len(x.parents) != 1:
            return None
        if x.generation > y.generation:
            # Down to y's generation (a single-parent step lowers it by exactly one).
            down = graph.chain(x, x.generation - y.generation)
            x = down[-1]
            continue
        if len(y.parents) != 1:
            return None
        # Level: both sides step together; rows at the same position share a generation.
        xs, ys = graph.chain(x, run), graph.chain(y, run)
        run = min(2 * run, 4096)
        for i in range(min(len(xs), len(ys))):
            if xs[i].oid == ys[i].oid:
                return xs[i].oid
        n = min(len(xs), len(ys))
        x, y = xs[n - 1], ys[n - 1]
    return x.oid


def _independent(graph: CommitGraph, commits: list[ObjectId]) -> list[ObjectId]:
    """``commits`` without those that are ancestors of another one, order kept."""
    keep: list[ObjectId] = []
    for c in commits:
        others = [o for o in commits if o != c]
        if not _reaches(graph, others, c):
            keep.append(c)
    return keep


def _reaches(graph: CommitGraph, sources: Sequence[ObjectId], target: ObjectId) -> bool:
    """Whether ``target`` is an ancestor of one of ``sources`` (or one of them)."""
    floor = graph.row(target).generation
    stack = [s for s in sources if graph.row(s).generation >= floor]
    seen = set(stack)
    while stack:
        oid = stack.pop()
        if oid == target:
            return True
        entry = graph.row(oid)
        if entry.generation <= floor:
            continue  # parents are strictly lower: they cannot reach the target
        for parent in graph.parents(entry):
            if parent.oid not in seen and parent.generation >= floor:
                seen.add(parent.oid)
                stack.append(parent.oid)
    return False


def is_ancestor(index: CommitIndexStore, a: ObjectId, b: ObjectId) -> bool:
    """True when ``a`` is ``b`` or an ancestor of ``b`` (``git merge-base --is-ancestor``).

    Generations decide most cases without a walk: an ancestor's generation is strictly
    lower. Otherwise one recursive query loads ``b``'s ancestors down to ``a``'s
    generation, the only ones that can be ``a``.
    """
    if a == b:
        return True
    rows = index.get_many([a, b])
    for oid in (a, b):
        if oid not in rows:
            raise NotFound(f"commit {oid.hex()} is not in the commit index")
    ga, gb = rows[a].generation, rows[b].generation
    if ga >= gb:
        return False
    if a in rows[b].parents:
        return True
    return a in index.ancestry([b], ga)

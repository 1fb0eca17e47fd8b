"""Commits of one process to one branch, one after another -- or several at once in one
transaction (group commit).

Threads of a Store committing to the same branch would otherwise race in the database:
each reads (or assumes) the head, all but one lose the compare-and-swap, and each loser
rolls back or rebases and tries again -- a tail that grows with the number of threads
(and, on PostgreSQL, a failed speculation makes the repository's next commits run the
plain way for a while). Waiting here instead costs nothing the loser would not have
spent anyway, and each commit then wins its compare-and-swap at the first try, its
speculation assuming the head the previous commit of the process left.

**Group commit** (:meth:`BranchLocks.run`, ``Settings.commit_group``): the commits that
queue for a branch while another is being written do not each wait for their own
transaction. The first in the queue leads: it takes up to ``group`` queued commits (its
own first among them, in arrival order) and writes them in one transaction -- one
round trip of queued writes and one COMMIT (one flush of the write-ahead log) for all of
them on PostgreSQL. Each is still its own commit: its own commit object, whose parent
is the commit before it in the group (the branch moves once per commit, each move in the
reflog), and its own result or error, handed to the thread that asked. Then the next
commit in the queue leads the next group. A commit of the group that fails on its own
(nothing to commit, an ``expected_head`` that does not hold, a bad path ...) gets its
error and the group is written again without it; when the group fails for a reason
that is nobody's in particular (the database is unavailable), each member gets that
error; any other failure of the group makes each member run again alone. A commit that
streams large content (read once, so never re-run) is written alone, holding the lock.

The lock is the process's. Across processes (``govc-db serve --workers N``), with
``Settings.commit_row_lock``, each transaction -- a commit alone or a group -- first locks
the branch's row in the database (:func:`lock_branch`: ``SELECT ... FOR UPDATE`` on
PostgreSQL, one round trip; a SQLite writer holds the database's lock from ``BEGIN
IMMEDIATE`` already) and builds on the head it read with the lock, instead of the head
its process last left. A commit of another process therefore waits in the database
until this transaction ends, then reads where it moved the branch: it neither loses the
compare-and-swap nor computes its commit twice (which, with a speculative unit, also
rolled back and sent the repository's next commits the plain way for a while). Without
it, the processes' commits raced on the compare-and-swap, and each loss cost a rollback
or a rebase. The process lock is taken only outside any open transaction
(``store.transaction()``): a commit inside one would hold it until the outer COMMIT,
which the lock's holder does not control, and a thread holding a branch's row lock in the
database (an explicit transaction that moved the branch) could otherwise wait here for a
thread that waits in the database for that row -- a deadlock neither side could see.
The lock is re-entrant: a callback that commits again on the same thread (an after-commit
hook, which runs on the thread that wrote the group) does not wait for itself.

A commit waits at most ``wait`` seconds (:data:`WAIT_SECONDS`) for its turn, then goes
ahead without the lock and races as it would have without it: when the database is slow
or down, each queued commit would otherwise spend its own retries one after another, so
the last one in the queue would wait for all of theirs.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from govc_db.db.counters import Counters
from govc_db.db.retry import retry_reason
from govc_db.errors import GovcError, StoreUnavailable

__all__ = [
    "GROUP_MAX",
    "WAIT_SECONDS",
    "BranchLockStats",
    "BranchLocks",
    "GroupRunner",
    "lock_branch",
]

log = logging.getLogger("govc_db.db")

T = TypeVar("T")

#: Longest wait for a branch's lock before committing without it.
WAIT_SECONDS = 1.0
#: Default bound of commits written in one transaction (``Settings.commit_group``).
GROUP_MAX = 16

#: ``run_group(body, tags)``: runs ``body(unit)`` in one write transaction and returns
#: its result (one result per member, in order); ``tags`` are the members' own values
#: (what each moved, for resolving a COMMIT whose outcome was lost).
GroupRunner = Callable[[Callable[[Any], list[Any]], Sequence[Any]], list[Any]]


def lock_branch(unit: Any, ref: str) -> None:
    """Lock ``ref``'s row in ``unit``'s transaction (see the module docstring), if the
    unit's refs can lock (``lock(name)``); the unit's reads of ``ref`` then answer the
    target read with the lock."""
    lock = getattr(unit.refs, "lock", None)
    if lock is not None:
        lock(ref)


class BranchLockStats(Counters):
    """Commits written holding the lock (alone or in a group), how many had to wait for
    another thread, how many gave up waiting (and ran without the lock); groups of two
    or more commits written in one transaction, the commits they held, members that
    failed alone (the group was written again without them) and groups whose members
    ran again one by one."""

    KEYS = ("acquired", "waited", "gave_up", "groups", "grouped", "member_errors", "regrouped")


class _GroupFailed(GovcError):
    """Internal: member ``index`` of a group raised ``error``, a library error of its own
    (a :class:`GovcError`, so a speculative unit decides it again the plain way first)."""

    def __init__(self, index: int, error: GovcError) -> None:
        super().__init__(str(error))
        self.index = index
        self.error = error


class _Member:
    """One commit waiting in a branch's queue, and its outcome."""

    __slots__ = ("done", "error", "event", "lead", "result", "retry", "run_group", "tag", "work")

    def __init__(self, work: Callable[[Any], Any], tag: Any, run_group: GroupRunner) -> None:
        self.work = work
        self.tag = tag
        self.run_group = run_group
        self.event = threading.Event()
        self.lead = False  # designated to lead the next group
        self.done = False
        self.retry = False  # run again alone (the group failed for no member's reason)
        self.result: Any = None
        self.error: BaseException | None = None

    def finish(self) -> None:
        self.done = True
        self.event.set()

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class _Entry:
    __slots__ = ("leading", "lock", "queue", "users")

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.users = 0  # holders and waiters
        self.queue: list[_Member] = []
        self.leading = False  # a thread is writing groups of this key


class BranchLocks:
    """A re-entrant lock per key (repository id, branch), kept while someone holds or
    waits for it, dropped afterwards (the map holds only keys in use), and the queue of
    commits :meth:`run` writes in groups."""

    __slots__ = ("_leading", "_locks", "_mutex", "group", "stats", "wait")

    def __init__(self, wait: float = WAIT_SECONDS, group: int = GROUP_MAX) -> None:
        self.wait = wait
        #: Most commits written in one transaction (1: each its own).
        self.group = group
        self._mutex = threading.Lock()
        self._locks: dict[Hashable, _Entry] = {}
        self._leading = threading.local()
        self.stats = BranchLockStats()

    def __len__(self) -> int:
        with self._mutex:
            return len(self._locks)

    def queued(self, key: Hashable) -> int:
        """Commits of ``key`` waiting to be written in a group (not yet taken)."""
        with self._mutex:
            entry = self._locks.get(key)
            return 0 if entry is None else len(entry.queue)

    def _enter(self, key: Hashable) -> _Entry:
        with self._mutex:
            entry = self._locks.get(key)
            if entry is None:
                entry = self._locks[key] = _Entry()
            entry.users += 1
            return entry

    def _leave(self, key: Hashable, entry: _Entry) -> None:
        with self._mutex:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[key]

    def _acquire(self, entry: _Entry, *, count: bool = True) -> bool:
        held = entry.lock.acquire(blocking=False)
        if held:
            if count:
                self.stats.count(acquired=1)
        else:
            held = entry.lock.acquire(timeout=self.wait)
            if count:
                self.stats.count(acquired=int(held), waited=1, gave_up=int(not held))
        return held

    @contextmanager
    def hold(self, key: Hashable) -> Iterator[None]:
        """Run the ``with`` block while holding ``key``'s lock (or, after waiting ``wait``
        seconds for it, without)."""
        entry = self._enter(key)
        try:
            held = self._acquire(entry)
            try:
                yield
            finally:
                if held:
                    entry.lock.release()
        finally:
            self._leave(key, entry)

    def run(
        self,
        key: Hashable,
        solo: Callable[[], T],
        work: Callable[[Any], T] | None = None,
        tag: Any = None,
        run_group: GroupRunner | None = None,
    ) -> T:
        """``solo()`` (the commit in its own transaction), holding ``key``'s lock -- or,
        with ``work`` and ``run_group``, ``work(unit)`` in a group of the commits queued
        for ``key`` (see the module docstring): the result or the error of this commit."""
        leading: set[Hashable] = self._leading.__dict__.setdefault("keys", set())
        if work is None or run_group is None or self.group <= 1 or key in leading:
            with self.hold(key):
                return solo()
        me = _Member(work, tag, run_group)
        with self._mutex:
            entry = self._locks.get(key)
            if entry is None:
                entry = self._locks[key] = _Entry()
            entry.users += 1
            entry.queue.append(me)
            lead = not entry.leading
            entry.leading = True
        try:
            if not lead and not self._follow(entry, me):
                # Gave up waiting (removed from the queue): race as without the lock.
                return solo()
            if not me.done:  # the first in the queue, or made the leader
                self._lead(key, entry, me, leading)
            if me.retry:
                with self.hold(key):
                    return solo()
            return cast(T, me.outcome())
        finally:
            self._leave(key, entry)

    def _follow(self, entry: _Entry, me: _Member) -> bool:
        """Wait to be written by a leader, or to lead; False when this commit gave up
        waiting (it is then out of the queue)."""
        self.stats.count(waited=1)
        if not me.event.wait(self.wait):
            with self._mutex:
                if not me.lead and not me.done and any(m is me for m in entry.queue):
                    entry.queue.remove(me)
                    self.stats.count(gave_up=1)
                    return False
            me.event.wait()  # taken into a group being written, or made the leader
        return True

    def _lead(
        self,
        key: Hashable,
        entry: _Entry,
        me: _Member,
        leading: set[Hashable],
    ) -> None:
        """Write groups from the head of the queue until ``me`` is written, then hand the
        queue to the next commit in it."""
        leading.add(key)
        try:
            # A commit written alone may hold it. Each member written is counted as
            # written with the lock (acquired) or without (gave_up).
            held = self._acquire(entry, count=False)
            try:
                while not me.done:
                    with self._mutex:
                        batch = entry.queue[: self.group]
                        del entry.queue[: self.group]
                    self._write(entry, batch, me)
                    written = sum(1 for m in batch if not m.retry)
                    self.stats.count(
                        acquired=written if held else 0, gave_up=0 if held else written
                    )
            finally:
                if held:
                    entry.lock.release()
        finally:
            leading.discard(key)
            with self._mutex:
                if entry.queue:
                    nxt = entry.queue[0]
                    nxt.lead = True
                    nxt.event.set()
                else:
                    entry.leading = False

    def _write(self, entry: _Entry, batch: list[_Member], me: _Member) -> None:
        """Write ``batch``: every member ends with a result, an error or ``retry``.

        The group's unit takes the commits queued meanwhile too (up to ``group``), once
        it holds the branch in the database (:func:`lock_branch` comes first in the
        unit): those that queued while it waited there for another process's commit are
        written now rather than after the next wait. They join ``batch``."""
        pending = list(batch)
        tags = [m.tag for m in pending]

        def top_up() -> None:
            with self._mutex:
                room = self.group - len(pending)
                if room <= 0 or not entry.queue:
                    return
                more = entry.queue[:room]
                del entry.queue[:room]
            pending.extend(more)
            batch.extend(more)
            tags.extend(m.tag for m in more)

        try:
            while pending:
                try:
                    results = pending[0].run_group(_body(pending, top_up), tags)
                except _GroupFailed as failed:
                    bad = pending.pop(failed.index)
                    del tags[failed.index]
                    bad.error = failed.error
                    bad.finish()
                    self.stats.count(member_errors=1)
                    continue
                except StoreUnavailable as exc:
                    # Nobody's in particular: each would have met it alone.
                    for m in pending:
                        m.error = exc if m is me else copy.copy(exc)
                        m.finish()
                    return
                except Exception:
                    log.info("a group of %d commits failed; each runs again alone", len(pending))
                    self.stats.count(regrouped=1)
                    for m in pending:
                        m.retry = True
                        m.finish()
                    return
                if len(pending) > 1:
                    self.stats.count(groups=1, grouped=len(pending))
                for m, result in zip(pending, results, strict=True):
                    m.result = result
                    m.finish()
                return
        finally:
            for m in batch:
                if not m.done:  # the leader was interrupted
                    m.error = StoreUnavailable("the commit's group was interrupted")
                    m.finish()


def _body(members: list[_Member], top_up: Callable[[], None]) -> Callable[[Any], list[Any]]:
    """The function of a group's unit: the commits queued meanwhile join ``members``
    (``top_up``), then each member's work runs in turn; a library error of a member's own
    is raised as :class:`_GroupFailed` naming it (a failure of the database, retried or
    reported by the transaction manager, passes as it is)."""

    def body(unit: Any) -> list[Any]:
        top_up()
        out: list[Any] = []
        for i, m in enumerate(members):
            try:
                out.append(m.work(unit))
            except GovcError as exc:
                if isinstance(exc, StoreUnavailable) or retry_reason(exc) is not None:
                    raise
                raise _GroupFailed(i, exc) from None
        return out

    return body

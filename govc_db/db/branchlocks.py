"""Commits of one process to one branch, one after another.

Threads of a Store committing to the same branch would otherwise race in the database:
each reads (or assumes) the head, all but one lose the compare-and-swap, and each loser
rolls back or rebases and tries again -- a tail that grows with the number of threads
(and, on PostgreSQL, a failed speculation makes the repository's next commits run the
plain way for a while). Waiting here instead costs nothing the loser would not have
spent anyway, and each commit then wins its compare-and-swap at the first try, its
speculation assuming the head the previous commit of the process left.

Only the process is serialized: other processes are still arbitrated by the
compare-and-swap, exactly as before. The lock is taken only outside any open transaction
(``store.transaction()``): a commit inside one would hold it until the outer COMMIT,
which the lock's holder does not control, and a thread holding a branch's row lock in the
database (an explicit transaction that moved the branch) could otherwise wait here for a
thread that waits in the database for that row -- a deadlock neither side could see.
The lock is re-entrant: a callback that commits again on the same thread (an after-commit
hook) does not wait for itself.

A commit waits at most ``wait`` seconds (:data:`WAIT_SECONDS`), then goes ahead without
the lock and races as it would have without it: when the database is slow or down, each
queued commit would otherwise spend its own retries one after another, so the last one
in the queue would wait for all of theirs.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager

from govc_db.db.counters import Counters

__all__ = ["WAIT_SECONDS", "BranchLockStats", "BranchLocks"]

#: Longest wait for a branch's lock before committing without it.
WAIT_SECONDS = 1.0


class BranchLockStats(Counters):
    """Serialized sections entered, how many had to wait for another thread, and how many
    gave up waiting (and ran without the lock)."""

    KEYS = ("acquired", "waited", "gave_up")


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.users = 0  # holders and waiters


class BranchLocks:
    """A re-entrant lock per key (repository id, branch), kept while someone holds or
    waits for it, dropped afterwards (the map holds only keys in use)."""

    __slots__ = ("_locks", "_mutex", "stats", "wait")

    def __init__(self, wait: float = WAIT_SECONDS) -> None:
        self.wait = wait
        self._mutex = threading.Lock()
        self._locks: dict[Hashable, _Entry] = {}
        self.stats = BranchLockStats()

    def __len__(self) -> int:
        with self._mutex:
            return len(self._locks)

    @contextmanager
    def hold(self, key: Hashable) -> Iterator[None]:
        """Run the ``with`` block while holding ``key``'s lock (or, after waiting ``wait``
        seconds for it, without)."""
        with self._mutex:
            entry = self._locks.get(key)
            if entry is None:
                entry = self._locks[key] = _Entry()
            entry.users += 1
        try:
            held = entry.lock.acquire(blocking=False)
            if held:
                self.stats.count(acquired=1)
            else:
                held = entry.lock.acquire(timeout=self.wait)
                self.stats.count(acquired=int(held), waited=1, gave_up=int(not held))
            try:
                yield
            finally:
                if held:
                    entry.lock.release()
        finally:
            with self._mutex:
                entry.users -= 1
                if entry.users == 0:
                    del self._locks[key]

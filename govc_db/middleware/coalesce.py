"""Request coalescing: identical concurrent reads share one execution
(``Settings.coalesce_enabled``).

The key is the operation's name, repository and arguments plus a *generation* of the
repository's refs: it moves on every write through this Store (when the write returns)
and on every ref move announced by other Stores (``on_ref_updated``). So a read that
starts after a write it could know about never joins an execution that started before
it: it gets a new key. Reads naming a commit id are immutable anyway.

Only plain reads coalesce: writes, calls inside ``store.transaction()`` (they must see
their own uncommitted writes) and calls with unhashable arguments pass straight
through. Followers get a shallow copy of a list or dict result (callers may mutate
theirs) and a copy of an error.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

from govc_db.middleware.base import Handler, Operation
from govc_db.types import RefUpdated

__all__ = ["CoalesceMiddleware"]


class _Call:
    """One execution others may wait for: ``lock`` is held until it is done (a bare lock
    costs far less to create than an Event, and most calls never have followers)."""

    __slots__ = ("error", "lock", "result")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.result: Any = None
        self.error: BaseException | None = None


class CoalesceMiddleware:
    """Runs one of several identical concurrent reads; the others wait for its result."""

    def __init__(self, app: Handler, *, bypass: Callable[[], bool] | None = None) -> None:
        self._app = app
        self._bypass = bypass
        self._lock = threading.Lock()
        self._inflight: dict[tuple[Any, ...], _Call] = {}
        self._generation: dict[str, int] = {}
        self._executions = 0
        self._coalesced = 0

    def on_ref_updated(self, event: RefUpdated) -> None:
        """A ref of ``event.repository`` moved elsewhere: later reads must not join older ones."""
        self._bump(event.repository)

    def _bump(self, repository: str) -> None:
        with self._lock:
            self._generation[repository] = self._generation.get(repository, 0) + 1
            # Store-wide reads (repository listings, operation repository "") see every write.
            self._generation[""] = self._generation.get("", 0) + 1

    def __call__(self, op: Operation) -> Any:
        """Run ``op``, or wait for an identical one already running and share its answer."""
        if op.write:
            try:
                return self._app(op)
            finally:
                self._bump(op.repository)
        if self._bypass is not None and self._bypass():
            return self._app(op)
        with self._lock:
            key = (
                op.name,
                op.repository,
                self._generation.get(op.repository, 0),
                *sorted(op.args.items()),
            )
            try:
                call = self._inflight.get(key)
            except TypeError:  # an unhashable argument: not coalesced
                call, key = None, ()
            leader = call is None
            if call is None:
                call = _Call()
                if key:
                    self._inflight[key] = call
                self._executions += 1
            else:
                self._coalesced += 1
        if leader:
            try:
                call.result = self._app(op)
            except BaseException as exc:
                call.error = exc
                raise
            finally:
                if key:
                    with self._lock:
                        self._inflight.pop(key, None)
                call.lock.release()
            return call.result
        with call.lock:  # held by the leader until its execution is done
            pass
        if call.error is not None:
            raise copy.copy(call.error) from call.error.__cause__
        result = call.result
        if isinstance(result, list | dict | set):
            return copy.copy(result)
        return result

    def get_stats(self) -> dict[str, Any]:
        """Executions, calls that shared another's execution, and reads running now."""
        with self._lock:
            return {
                "executions": self._executions,
                "coalesced": self._coalesced,
                "in_flight": len(self._inflight),
            }

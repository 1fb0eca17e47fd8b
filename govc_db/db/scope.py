"""``store.transaction(...)``: one object that is both a context manager and a decorator.

The context-manager form runs its block once in a transaction (joined by the repository
calls inside); the decorator form runs each call of the function through
:meth:`TransactionManager.run <govc_db.db.txn.TransactionManager.run>`, which retries it.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from govc_db.db.retry import check_retries
from govc_db.db.txn import Transaction, TransactionManager, check_isolation
from govc_db.errors import InvalidInput

__all__ = ["TransactionScope"]

R = TypeVar("R")
P = ParamSpec("P")


class TransactionScope:
    """What ``store.transaction(...)`` returns: a context manager and a decorator.

    * ``with store.transaction() as tx:`` -- repository calls inside join one transaction
      (each as a savepoint) that commits at the end of the block, or rolls back if it
      raises. A block cannot be re-run, so this form **does not retry**: passing
      ``retries`` is ``InvalidInput``.
    * ``@store.transaction(retries=5)`` -- each call of the decorated function runs in one
      transaction and is re-run as a whole on a serialization failure, a deadlock or a
      lost connection. The function must therefore be free of outside side effects; put
      those in ``tx.after_commit`` callbacks.
    """

    def __init__(
        self,
        manager: TransactionManager,
        *,
        isolation: object = None,
        readonly: object = False,
        retries: object = None,
    ) -> None:
        if not isinstance(readonly, bool):
            raise InvalidInput(f"readonly must be a bool, got {type(readonly).__name__}")
        self._manager = manager
        self.isolation = check_isolation(isolation)
        self.readonly = readonly
        self.retries = None if retries is None else check_retries(retries)
        self._local = threading.local()

    def __enter__(self) -> Transaction:
        if self.retries is not None:
            raise InvalidInput(
                "retries applies to the decorator form only: a with block cannot be re-run"
            )
        cm = self._manager.begin(
            write=not self.readonly, isolation=self.isolation, readonly=self.readonly
        )
        tx = cm.__enter__()
        stack: list[Any] = self._local.__dict__.setdefault("stack", [])
        stack.append(cm)
        return tx

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        cm = self._local.stack.pop()
        return bool(cm.__exit__(et, ev, tb))

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``func``: each call runs (and is retried) as one transaction."""
        if not callable(func):
            raise InvalidInput("store.transaction(...) decorates a callable")
        manager = self._manager

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return manager.run(
                lambda _conn: func(*args, **kwargs),
                write=not self.readonly,
                isolation=self.isolation,
                readonly=self.readonly,
                retries=self.retries,
                what=f"transaction {getattr(func, '__name__', '')}".rstrip(),
            )

        return wrapper

"""The operation pipeline: every public Repository call is an :class:`Operation`
passed through a chain of middleware, built as data from ``Settings``.

As in starlette, the chain is a list of factories, outermost first, wrapped in one
visible loop. A middleware that does not apply to an operation passes it straight
on. Optimizers (API, memory) are added as modules by listing them here; the
version-control core never knows about them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol

from govc_db.settings import Settings

__all__ = ["Handler", "Middleware", "MiddlewareSpec", "Operation", "build_chain", "default_stack"]


_NO_ARGS: Mapping[str, Any] = MappingProxyType({})


class Operation(NamedTuple):
    """One public call: its name (``"commit"``, ``"read"`` ...), repository and arguments.

    ``write`` tells middleware whether the call changes state; ``call`` does the work.
    Immutable. A named tuple rather than a frozen dataclass: one is built for every call,
    and a cache-answered read costs about as much as building a frozen dataclass.
    """

    name: str
    repository: str
    call: Callable[[], Any]
    write: bool = False
    args: Mapping[str, Any] = _NO_ARGS


Handler = Callable[[Operation], Any]


class Middleware(Protocol):
    """Wraps the next handler; ``__call__`` receives the operation."""

    def __call__(self, op: Operation) -> Any:
        """Handle ``op``, usually by passing it to the next handler."""
        ...

    def get_stats(self) -> dict[str, Any]:
        """Counters of this middleware."""
        ...


@dataclass(frozen=True, slots=True)
class MiddlewareSpec:
    """A middleware factory and its keyword options (the chain is a list of these)."""

    factory: Callable[..., Middleware]
    options: Mapping[str, Any] = field(default_factory=dict)


def _run(op: Operation) -> Any:
    return op.call()


def default_stack(
    settings: Settings, *, in_transaction: Callable[[], bool] | None = None
) -> list[MiddlewareSpec]:
    """The chain ``Settings`` asks for, outermost first; switched-off parts are left out.

    Order: metrics (sees everything, refusals included) -> rate limit (cheapest refusal
    first) -> circuit breaker -> coalescing (followers wait without taking a slot) ->
    concurrency limiter. ``in_transaction`` tells coalescing to step aside inside
    ``store.transaction()``.
    """
    from govc_db.middleware.breaker import BreakerMiddleware
    from govc_db.middleware.coalesce import CoalesceMiddleware
    from govc_db.middleware.limiter import LimiterMiddleware
    from govc_db.middleware.metrics import MetricsMiddleware
    from govc_db.middleware.ratelimit import RateLimitMiddleware

    stack: list[MiddlewareSpec] = []
    if settings.metrics_enabled:
        stack.append(MiddlewareSpec(MetricsMiddleware))
    if settings.rate_limit is not None:
        stack.append(
            MiddlewareSpec(
                RateLimitMiddleware, {"rate": settings.rate_limit, "burst": settings.rate_burst}
            )
        )
    if settings.breaker_failures is not None:
        stack.append(
            MiddlewareSpec(
                BreakerMiddleware,
                {"failures": settings.breaker_failures, "reset": settings.breaker_reset},
            )
        )
    if settings.coalesce_enabled:
        stack.append(MiddlewareSpec(CoalesceMiddleware, {"bypass": in_transaction}))
    if settings.max_in_flight is not None:
        stack.append(
            MiddlewareSpec(
                LimiterMiddleware,
                {"limit": settings.max_in_flight, "timeout": settings.queue_timeout},
            )
        )
    if settings.memory_optimizer:
        from govc_db.middleware.memory import MemoryMiddleware

        stack.append(
            MiddlewareSpec(
                MemoryMiddleware,
                {
                    "gc_threshold": settings.memory_gc_threshold,
                    "freeze_growth": settings.memory_freeze_growth,
                    "cache_bytes": settings.cache_max_bytes if settings.cache_enabled else 0,
                },
            )
        )
    return stack


def build_chain(
    stack: Sequence[MiddlewareSpec], handler: Handler = _run
) -> tuple[Handler, list[Middleware]]:
    """Wrap ``handler`` in ``stack`` (outermost first); return the entry and the instances."""
    app: Handler = handler
    built: list[Middleware] = []
    for spec in reversed(stack):
        mw = spec.factory(app, **spec.options)
        built.append(mw)
        app = mw
    built.reverse()
    return app, built

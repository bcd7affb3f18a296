"""Reserved concurrency: a cap on one function's invocations at once, shared by its mappings.

As in Lambda, an invocation over the cap does not wait: it is throttled (an InvokeFailure with
`throttled=True`), which the pollers retry with backoff and which does not count as an attempt.
A cap of 0 throttles every invocation, Lambda's way of switching a function off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sluiceway.core.errors import SluicewayError
from sluiceway.core.stats import MappingStats
from sluiceway.handlers.invoker import Invoker
from sluiceway.handlers.loader import HandlerLoadError
from sluiceway.handlers.results import InvocationResult, InvokeFailure


@dataclass
class ConcurrencyPool:
    """Invocations in flight for one function, against its reserved concurrency."""

    key: str
    limit: int
    in_flight: int = 0
    throttled: int = 0

    def try_acquire(self) -> bool:
        if self.in_flight >= self.limit:
            self.throttled += 1
            return False
        self.in_flight += 1
        return True

    def release(self) -> None:
        self.in_flight -= 1


class ReservedConflict(SluicewayError, ValueError):
    """Two mappings give one function different reserved concurrency."""


@dataclass
class ReservedPools:
    """One pool per function (`reserved_key`), created by the first of its mappings."""

    pools: dict[str, ConcurrencyPool] = field(default_factory=dict)

    def pool(self, key: str, limit: int) -> ConcurrencyPool:
        existing = self.pools.get(key)
        if existing is None:
            existing = self.pools[key] = ConcurrencyPool(key, limit)
        elif existing.limit != limit:
            raise ReservedConflict(
                f"{key}: reserved_concurrency {limit} differs from {existing.limit} set by "
                "another mapping of the same function"
            )
        return existing


class ReservedInvoker(Invoker):
    """Wraps an invoker with a shared pool: over the cap, throttle at once instead of waiting."""

    def __init__(self, inner: Invoker, pool: ConcurrencyPool) -> None:
        self.inner = inner
        self.pool = pool
        self.function_name = inner.function_name

    async def invoke(self, event: dict[str, Any]) -> InvocationResult:
        if not self.pool.try_acquire():
            return InvokeFailure(
                f"Rate Exceeded: reserved concurrency {self.pool.limit} of {self.pool.key} "
                "is in use",
                throttled=True,
            )
        try:
            return await self.inner.invoke(event)
        finally:
            self.pool.release()

    def has_room(self) -> bool:
        """Whether another invocation would run now: the pool has a slot and the target room."""
        if self.pool.in_flight >= self.pool.limit:
            return False
        return self.inner.has_room()

    async def warm(self) -> float | None:
        return await self.inner.warm()

    @property
    def init_error(self) -> HandlerLoadError | None:
        return self.inner.init_error

    async def aclose(self) -> None:
        await self.inner.aclose()

    def report_to(self, stats: MappingStats) -> None:
        self.inner.report_to(stats)


def reserved_key(handler: str, kind: str, function_name: str = "") -> str:
    """The function a pool belongs to: Lambda reserves concurrency per function, not per version,
    alias or handler.

    A Lambda ARN names its function (its unqualified ARN). Any other target is known by its
    function's name: two functions may both be `app.lambda_handler` in different folders.
    """
    if kind == "lambda":
        parts = handler.split(":")
        return ":".join(parts[:7])  # arn:aws:lambda:region:account:function:name
    if not function_name:
        raise ValueError(f"a {kind} target's reserved concurrency needs its function's name")
    return function_name

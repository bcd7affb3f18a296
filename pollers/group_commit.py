"""Group commit: writes that arrive while one commit is under way go together in the next.

A store whose every write costs a fixed price (SQLite: a thread hop, the file checks and a
commit) pays it once for all the shards that finished a batch meanwhile, instead of once per
shard. Each caller still returns only once its own value is committed (or with the commit's
error), so a store built on it keeps `CheckpointStore.set`'s meaning: written when it returns.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio

K = TypeVar("K")
V = TypeVar("V")


class _Group:
    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.error: Exception | None = None


class GroupCommit(Generic[K, V]):
    """Commits the latest value per key; the first caller commits for everyone who comes while
    it does, then for whoever came during that, until none is waiting."""

    def __init__(self, commit: Callable[[dict[K, V]], Awaitable[None]]) -> None:
        self._commit = commit
        self._pending: dict[K, V] = {}
        self._group = _Group()
        """The group the values in `_pending` will be committed with."""
        self._committing = False

    async def put(self, key: K, value: V) -> None:
        """Returns once `value` (or a later value of `key`) is committed; raises the error of
        the commit it was part of."""
        self._pending[key] = value
        group = self._group
        if self._committing:
            await group.done.wait()
        else:
            await self._lead()
        if group.error is not None:
            raise group.error

    async def _lead(self) -> None:
        """Shielded: waiting callers depend on it, and a commit is short (a local file)."""
        self._committing = True
        try:
            with anyio.CancelScope(shield=True):
                while self._pending:
                    group, self._group = self._group, _Group()
                    values, self._pending = self._pending, {}
                    try:
                        await self._commit(values)
                    except Exception as exc:  # every caller of this group gets it
                        group.error = exc
                    finally:
                        group.done.set()
        finally:
            self._committing = False

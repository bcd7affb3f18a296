"""Group commit: writes that arrive while one commit is under way go together in the next.

A store whose every write costs a fixed price (SQLite: a thread hop, the file checks and a
commit) pays it once for all the shards that finished a batch meanwhile, instead of once per
shard. Each caller still returns only once its own value is committed (or with the commit's
error), so a store built on it keeps `CheckpointStore.set`'s meaning: written when it returns.
"""

from __future__ import annotations

import math
import time
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
    """Commits the latest value per key, one commit at a time. Whoever waits when a commit ends
    leads the next one, for every value that came meanwhile; a caller leads at most the commit
    of its own value, so no shard's writer is kept committing for the others.

    `spacing`: while values keep coming, commits start at least this many seconds apart, so
    one commit takes what many shards finished meanwhile; a value that comes after a quiet
    spell is committed at once.
    """

    def __init__(
        self, commit: Callable[[dict[K, V]], Awaitable[None]], *, spacing: float = 0.0
    ) -> None:
        self._commit = commit
        self._spacing = spacing
        self._pending: dict[K, V] = {}
        self._group = _Group()
        """The group the values in `_pending` will be committed with."""
        self._committing = False
        self._turn = anyio.Event()
        """Set (and replaced) whenever a commit ends."""
        self._last_start = -math.inf

    async def put(self, key: K, value: V) -> None:
        """Returns once `value` (or a later value of `key`) is committed; raises the error of
        the commit it was part of."""
        self._pending[key] = value
        group = self._group
        while not group.done.is_set():
            if self._committing:
                await self._turn.wait()
            else:
                await self._lead()
        if group.error is not None:
            raise group.error

    async def _lead(self) -> None:
        """Shielded: the callers of the group depend on it, and a commit is short (a local
        file), as is the wait for its turn."""
        self._committing = True
        try:
            with anyio.CancelScope(shield=True):
                wait = self._last_start + self._spacing - time.monotonic()
                if wait > 0:
                    await anyio.sleep(wait)
                self._last_start = time.monotonic()
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
            turn, self._turn = self._turn, anyio.Event()
            turn.set()

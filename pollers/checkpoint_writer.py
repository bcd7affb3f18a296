"""One shard's checkpoint writes, off the lanes' path and coalesced.

A lane that finishes a batch hands the shard's new checkpoint to the writer and goes on with its
next batch; it does not wait for the store (a thread hop and a commit in SQLite, a conditional
write in DynamoDB). The writer writes one position at a time, always the latest it was given:
positions that finish while a write is under way are coalesced into the next write. So a store
slower than the batches costs one write per write's duration, not one per batch, and the
checkpoint never moves backwards (one writer per shard, positions only move forward).

What a crash can cost is what Lambda's at-least-once delivery allows: the records behind the
positions not yet written are read and handled again. A reader that stops (gracefully, on a
lost or handed-off lease, at the shard's end) closes its writer and waits until the last
position is written before the lease is released or `SHARD_END` is written.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

Save = Callable[[str], Awaitable[bool]]
"""Write one position; False when the store failed (the writer then writes nothing more)."""

LAST_WRITE_SECONDS = 30.0
"""How long a cancelled writer still tries to write the position it was last given."""


class CheckpointWriter:
    """Writes the latest position it was given, one write at a time, until closed."""

    def __init__(self, save: Save, *, spacing: float = 0.0) -> None:
        self._save = save
        self._spacing = spacing
        """Seconds the writer rests after a write: positions given meanwhile go in the next."""
        self._pending: str | None = None
        self._wake = anyio.Event()
        self._written: anyio.Event | None = None
        """Made only when `flush` waits, so a write wakes nobody it need not."""
        self._writing = False
        self._closed = False
        self.failed = False
        """The store refused a write: nothing is written after it."""

    def offer(self, position: str) -> None:
        """The shard's new checkpoint (never behind one offered before); written soon."""
        if self._closed or self.failed:
            return
        self._pending = position
        self._wake.set()

    @property
    def idle(self) -> bool:
        """Every position offered is written (or the writer failed)."""
        return self.failed or (self._pending is None and not self._writing)

    async def flush(self) -> None:
        """Wait until every position offered so far is written (or the store failed); with a
        spacing, up to that much longer."""
        while not self.idle:
            if self._written is None:
                self._written = anyio.Event()
            await self._written.wait()

    def close(self) -> None:
        """No more positions: `run` writes the last one given and returns."""
        self._closed = True
        self._wake.set()

    async def run(self) -> None:
        """Write until closed. Cancelled, it still writes the position it was last given (as
        the lane's own shielded write did before), within `LAST_WRITE_SECONDS`."""
        try:
            while not self.failed:
                if self._pending is not None:
                    await self._write_pending()
                    if self._spacing > 0 and not self._closed:
                        await anyio.sleep(self._spacing)
                elif self._closed:
                    return
                else:
                    await self._wake.wait()
                    self._wake = anyio.Event()
        finally:
            if self._pending is not None and not self.failed:
                with anyio.CancelScope(shield=True), anyio.move_on_after(LAST_WRITE_SECONDS):
                    await self._write_pending()

    async def _write_pending(self) -> None:
        position, self._pending = self._pending, None
        if position is None:
            return
        self._writing = True
        try:
            if not await self._save(position):
                self.failed = True
                self._pending = None
        except BaseException:
            if self._pending is None:
                self._pending = position  # cut short (cancelled): written again by `run`
            raise
        finally:
            self._writing = False
            if self._written is not None:
                self._written.set()
                self._written = None

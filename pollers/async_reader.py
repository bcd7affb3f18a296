"""Reads the asynchronous event queue and hands each due event to its function's runner.

Like the other pollers it only fetches and acknowledges: `AsyncFunction.run` (the router)
invokes and decides, and the queue applies the decision. Events run concurrently up to
`concurrency`; each function's own limits (handler threads, reserved concurrency) apply inside.
On `stop()` it takes nothing more and lets the events in flight finish.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import anyio
from sluiceway.core.logs import bind as bind_log_context
from sluiceway.pollers.async_queue import AsyncEventQueue
from sluiceway.router.async_events import AsyncEvent
from sluiceway.router.async_runner import AsyncFunction, Finished, RetryAt

log = logging.getLogger(__name__)

IDLE_WAIT_SECONDS = 20.0
DEFAULT_CONCURRENCY = 64
ERROR_PAUSE_SECONDS = 1.0
UNSETTLED_RETRY_SECONDS = 5.0
"""An event whose run failed unexpectedly is taken again after this long."""


class AsyncReader:
    """One loop over the queue for every function of the process."""

    def __init__(
        self,
        queue: AsyncEventQueue,
        functions: Mapping[str, AsyncFunction],
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self.queue = queue
        self.functions = functions
        self._slots = anyio.Semaphore(concurrency)
        self._taking: anyio.CancelScope | None = None
        self._stopping = False
        self.stopped = anyio.Event()
        """Set once the reader has stopped and its events in flight are settled."""

    def stop(self) -> None:
        """Take nothing more; events in flight finish and are settled."""
        self._stopping = True
        if self._taking is not None:
            self._taking.cancel()

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                while not self._stopping:
                    events = await self._take()
                    for event in events:
                        await self._slots.acquire()
                        tg.start_soon(self._run_one, event)
        finally:
            self.stopped.set()

    async def _take(self) -> list[AsyncEvent]:
        async with self._slots:  # wait for room before asking for more
            room = self._slots.value + 1
        with anyio.CancelScope() as scope:
            self._taking = scope
            try:
                return await self.queue.take(room, wait=IDLE_WAIT_SECONDS)
            except Exception as exc:
                log.warning("asynchronous event queue: take failed (%s); trying again", exc)
                await anyio.sleep(ERROR_PAUSE_SECONDS)
            finally:
                self._taking = None
        return []

    async def _run_one(self, event: AsyncEvent) -> None:
        try:
            function = self.functions.get(event.function)
            if function is None:
                log.error(
                    "asynchronous event %s is for function %s, which is no longer declared; deleted",
                    event.request_id,
                    event.function,
                )
                await self.queue.settle(event, Finished())
                return
            with bind_log_context(function=event.function):
                settlement = await function.run(event)
            with anyio.CancelScope(shield=True):
                await self.queue.settle(event, settlement)
        except Exception:
            log.exception("asynchronous event %s: not settled; it runs again", event.request_id)
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                try:
                    retry = RetryAt(event, time.time() + UNSETTLED_RETRY_SECONDS)
                    await self.queue.settle(event, retry)
                except Exception as exc:
                    log.warning("asynchronous event %s: %s", event.request_id, exc)
        finally:
            self._slots.release()

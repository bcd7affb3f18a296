"""Reads the asynchronous event queue and hands each due event to its function's runner.

Like the other pollers it only fetches and acknowledges: `AsyncFunction.run` (the router)
invokes and decides, and the queue applies the decision. Events run concurrently up to
`concurrency`; each function's own limits (handler threads, reserved concurrency) apply inside.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import anyio
from sluiceway.core.logs import bind as bind_log_context
from sluiceway.pollers.async_queue import AsyncEventQueue
from sluiceway.router.async_events import AsyncEvent
from sluiceway.router.async_runner import AsyncFunction, Finished

log = logging.getLogger(__name__)

IDLE_WAIT_SECONDS = 20.0
DEFAULT_CONCURRENCY = 64


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
        self._concurrency = concurrency
        self._stopping = False
        self._stopped = anyio.Event()

    def stop(self) -> None:
        self._stopping = True

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                while not self._stopping:
                    await self._slots.acquire()
                    self._slots.release()
                    room = self._slots.value
                    events = await self.queue.take(
                        room, wait=1.0 if self._stopping else IDLE_WAIT_SECONDS
                    )
                    for event in events:
                        await self._slots.acquire()
                        tg.start_soon(self._run_one, event)
        finally:
            self._stopped.set()

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
        finally:
            self._slots.release()

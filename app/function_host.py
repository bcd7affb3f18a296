"""The functions a service runs, invoked three ways: by its mappings, by the Invoke API, and
by the asynchronous event queue (Event invokes, destinations that name a function, schedules).

One invoker per function, shared by all three, so reserved concurrency, handler threads and
worker processes are the function's, not a caller's.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import orjson
from anyio.abc import TaskGroup
from sluiceway.config.functions import FunctionConfig
from sluiceway.config.schedules import ScheduleConfig
from sluiceway.config.settings import Settings
from sluiceway.core.aws import AwsClients
from sluiceway.core.stats import Registry
from sluiceway.handlers.invocation import InvocationOptions, invocation_options, write_log
from sluiceway.handlers.invoker import Invoker
from sluiceway.handlers.results import InvocationResult
from sluiceway.pollers.async_queue import AsyncEventQueue, build_event_queue
from sluiceway.pollers.async_reader import AsyncReader
from sluiceway.pollers.schedules import scheduled_event
from sluiceway.router.async_events import EXECUTED_VERSION, AsyncEvent
from sluiceway.router.async_runner import AsyncFunction, build_async_function, event_of

log = logging.getLogger(__name__)

VISIBILITY_MARGIN_SECONDS = 10.0
"""sqs backend: an event in flight stays hidden for the longest function timeout plus this."""


def has_pending_events(path: Path) -> bool:
    """Whether a queue file holds events from an earlier run (read-only; no file, no events)."""
    if not path.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT EXISTS (SELECT 1 FROM async_events)").fetchone()
    except sqlite3.Error:
        return False  # no async_events table: a checkpoint file only
    return bool(row and row[0])


def find_function(functions: dict[str, FunctionConfig], name: str) -> FunctionConfig | None:
    """Function names are case-insensitive here: environment variable names carry no case."""
    return functions.get(name.lower())


async def run_invocation(
    invoker: Invoker, config: FunctionConfig, payload: bytes, options: InvocationOptions
) -> InvocationResult:
    """One synchronous invoke, with Lambda's START / END / REPORT lines around its log."""
    with invocation_options(options):
        write_log(f"START RequestId: {options.request_id} Version: {EXECUTED_VERSION}\n")
        started = time.monotonic()
        result = await invoker.invoke(event_of(payload))
        millis = (time.monotonic() - started) * 1000
        write_log(f"END RequestId: {options.request_id}\n")
        write_log(
            f"REPORT RequestId: {options.request_id}\tDuration: {millis:.2f} ms\t"
            f"Billed Duration: {max(1, math.ceil(millis))} ms\t"
            f"Memory Size: {config.memory_size} MB\tMax Memory Used: 0 MB\n"
        )
    return result


@dataclass
class FunctionHost:
    """Every function's invoker and asynchronous side; the queue opens when first needed."""

    settings: Settings
    registry: Registry
    clients: AwsClients
    invokers: dict[str, Invoker]
    """Function name (lowercase) -> its invoker, built by the service."""
    functions: dict[str, FunctionConfig] = field(default_factory=dict)
    queue: AsyncEventQueue | None = None
    reader: AsyncReader | None = None
    async_functions: dict[str, AsyncFunction] = field(default_factory=dict)
    _task_group: TaskGroup | None = None
    _open_lock: anyio.Lock = field(default_factory=anyio.Lock)

    def __post_init__(self) -> None:
        if not self.functions:
            self.functions = self.settings.function_table()
        delays = list(self.settings.async_.retry_delays_seconds)
        for name, config in self.functions.items():
            invoker = self.invokers.get(name)
            if invoker is None:
                continue
            self.async_functions[name] = build_async_function(
                config,
                invoker,
                self.registry.function(name),
                self.clients,
                delays,
                self.enqueue_local,
            )

    def function(self, name: str) -> FunctionConfig | None:
        return find_function(self.functions, name)

    def queue_wanted_at_start(self) -> bool:
        """Open the queue at start when events may be waiting or are expected: declared
        functions, a shared SQS queue, or a queue file that exists; otherwise on the first
        Event invoke, so a mappings-only service creates nothing it does not use."""
        config = self.settings.async_
        if config.backend == "sqs" or self.settings.functions or self.settings.schedules:
            return True
        return has_pending_events(Path(self.settings.checkpoints.path).expanduser())

    async def run(self, task_group: TaskGroup) -> None:
        """Start the queue's reader in `task_group` now, or once the first event arrives."""
        self._task_group = task_group
        if await anyio.to_thread.run_sync(self.queue_wanted_at_start):
            await self._open_queue()

    async def _open_queue(self) -> AsyncEventQueue:
        async with self._open_lock:
            if self.queue is None:
                timeouts = [f.timeout for f in self.functions.values()] or [3.0]
                queue = await anyio.to_thread.run_sync(
                    lambda: build_event_queue(
                        self.settings.async_,
                        self.settings.checkpoints.path,
                        self.clients,
                        self.settings.aws_region,
                        max(timeouts) + VISIBILITY_MARGIN_SECONDS,
                    )
                )
                await queue.start()
                self.queue = queue
                self.reader = AsyncReader(queue, self.async_functions)
                if self._task_group is not None:
                    self._task_group.start_soon(self.reader.run)
            return self.queue

    async def enqueue(
        self, config: FunctionConfig, payload: bytes, *, traceparent: str | None = None
    ) -> AsyncEvent:
        """Store an Event invoke durably; returns once the queue has it (then 202)."""
        event = AsyncEvent(
            request_id=str(uuid.uuid4()),
            function=config.name.lower(),
            payload=payload,
            received_at=time.time(),
            traceparent=traceparent,
        )
        queue = self.queue or await self._open_queue()
        await queue.put(event)
        self.registry.function(config.name.lower()).async_events_received += 1
        return event

    async def enqueue_local(self, name: str, payload: bytes) -> bool:
        """A destination naming a function of this service: an Event invoke of it."""
        config = self.function(name)
        if config is None:
            return False
        await self.enqueue(config, payload)
        return True

    async def invoke_sync(
        self, config: FunctionConfig, payload: bytes, options: InvocationOptions
    ) -> InvocationResult:
        """A RequestResponse invoke: the function's result as it returned it."""
        return await run_invocation(self.invokers[config.name.lower()], config, payload, options)

    async def fire_schedule(self, name: str, schedule: ScheduleConfig, tick: float) -> None:
        """A schedule's tick: EventBridge's scheduled event (or its INPUT), invoked as an Event."""
        config = self.function(schedule.function_name)
        if config is None:  # validated at load; kept for safety
            log.error("schedule %s: no function %s", name, schedule.function_name)
            return
        if schedule.input is not None:
            payload = schedule.input.encode()
        else:
            region, account = config.home(self.settings.aws_region)
            event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"sluiceway:schedule:{name}:{int(tick)}"))
            event = scheduled_event(name, tick, region=region, account=account, event_id=event_id)
            payload = orjson.dumps(event)
        await self.enqueue(config, payload)

    def pending(self) -> dict[str, Any]:
        return {"backend": self.settings.async_.backend, "open": self.queue is not None}

    async def aclose(self) -> None:
        if self.reader is not None:
            self.reader.stop()
        if self.queue is not None:
            with anyio.CancelScope(shield=True):
                await self.queue.close()
            self.queue = None

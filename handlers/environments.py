"""Execution environments for sync handlers: a few daemon threads per function, and their slots.

A thread cannot be stopped. A handler that outlives its timeout keeps running in its thread, and
here, as in Lambda where an execution environment stays busy until it is reset, it keeps its slot
until it returns: the next batch waits instead of running beside it, so `HANDLER_THREADS=1` still
means one invocation at a time. The pool never has more threads than slots, so timeouts cannot
make threads pile up, and its threads are daemons, so the interpreter never waits for a stuck
handler at exit. Process isolation is the cure for handlers that hang: a worker can be killed.

The hop to a thread and back is a queue put and one `call_soon_threadsafe`, what
`anyio.to_thread` does, without its per-call limiter and checkpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

IDLE_SECONDS = 10.0
"""An idle thread ends after this long (anyio's worker threads do the same) and is started
again on demand, so invokers that are dropped do not leave threads behind."""

_busy_lock = threading.Lock()
_busy = 0


def busy_threads() -> int:
    """Handler threads of every pool that are running a call now. Once the event loop has ended
    each of them is an abandoned call: nothing waits for its result any more."""
    return _busy


def _count_busy(delta: int) -> None:
    global _busy
    with _busy_lock:
        _busy += delta


class _Call:
    """One handler call handed to a thread; its outcome goes back to the loop."""

    __slots__ = ("abandoned", "args", "context", "fn", "future", "loop", "settled")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.fn = fn
        self.args = args
        self.context = contextvars.copy_context()  # log fields and the active span go along
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.abandoned = False
        """The caller stopped waiting (timeout, shutdown) while the call still ran."""
        self.settled = False
        """The call returned and its slot went back to the pool."""


class CallTimedOut(Exception):
    """The call outlived the timeout given to `Environment.run`; it runs on, abandoned."""


class Environment:
    """A reserved slot: `run` one call in it. A call that is abandoned keeps the slot."""

    __slots__ = ("_pool", "released", "used")

    def __init__(self, pool: ThreadEnvironments) -> None:
        self._pool = pool
        self.used = False
        self.released = False

    async def run(
        self, fn: Callable[..., Any], *args: Any, abandon_after: float | None = None
    ) -> Any:
        """`fn(*args)` in a daemon thread. Cancelling the caller, or `abandon_after` seconds
        passing (CallTimedOut), abandons the call, which keeps its thread and slot until it
        returns (counted in `stuck` meanwhile). The timeout is neither a cancel scope nor a timer
        of its own, since it is paid on every invocation (see `_watch`)."""
        if self.used or self.released:
            raise RuntimeError("an environment runs one call per reservation")
        self.used = True
        return await self._pool._run(fn, args, abandon_after)

    def release(self) -> None:
        """Give the slot back if no call used it (a used slot comes back when its call returns)."""
        if not self.used and not self.released:
            self.released = True
            self._pool._release()


class ThreadEnvironments:
    """`size` execution environments for one function, each a daemon thread when in use."""

    def __init__(
        self,
        size: int,
        name: str = "handler",
        *,
        idle_seconds: float = IDLE_SECONDS,
        on_stuck: Callable[[int], None] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self.size = size
        self.name = name
        self.on_stuck = on_stuck
        """Called on the event loop with the new count whenever `stuck` changes."""
        self.stuck = 0
        """Environments whose call was abandoned and is still running."""
        self._idle_seconds = idle_seconds
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle_threads = 0
        self._deadlines: dict[_Call, float] = {}
        """Calls that expire (`abandon_after`), with their deadlines on the loop's clock."""
        self._watchdog: asyncio.TimerHandle | None = None
        self.threads = 0
        """Threads alive now (at most `size`)."""

    def has_room(self) -> bool:
        """Whether a call would start now rather than wait for an environment."""
        return self._free > 0

    @contextlib.asynccontextmanager
    async def reserve(self) -> AsyncIterator[Environment]:
        """Wait (first come, first served) for a free environment; it is free again when the
        block ends, or, if its call was abandoned, when that call returns."""
        environment = await self.take()
        try:
            yield environment
        finally:
            environment.release()

    async def take(self) -> Environment:
        """`reserve` without the context manager, for the per-invocation path: the caller must
        `release()` the environment in a `finally`."""
        await self._acquire()
        return Environment(self)

    # ------------------------------------------------------------------ slots (event loop only)

    async def _acquire(self) -> None:
        if self._free and not self._waiters:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot just as the wait was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    def _set_stuck(self, delta: int) -> None:
        self.stuck += delta
        if self.on_stuck is not None:
            self.on_stuck(self.stuck)

    # ------------------------------------------------------------------ calls

    async def _run(
        self, fn: Callable[..., Any], args: tuple[Any, ...], abandon_after: float | None = None
    ) -> Any:
        loop = asyncio.get_running_loop()
        call = _Call(fn, args, loop)
        try:
            self._submit(call)
        except BaseException:
            self._release()  # no thread took it
            raise
        if abandon_after is not None:
            self._watch(call, loop, loop.time() + max(abandon_after, 0.0))
        try:
            return await call.future
        except BaseException:
            if not call.settled:
                call.abandoned = True
                self._set_stuck(+1)
            raise
        finally:
            self._deadlines.pop(call, None)

    # ------------------------------------------------------------------ timeouts (event loop only)

    def _watch(self, call: _Call, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Expire `call` at `deadline`. One timer serves every call of the pool, set for the
        earliest deadline: calls with the same timeout start in deadline order, so a steady
        stream of invocations schedules a timer about once per timeout, not once per call."""
        self._deadlines[call] = deadline
        watchdog = self._watchdog
        if watchdog is None or watchdog.when() > deadline:
            if watchdog is not None:
                watchdog.cancel()
            self._watchdog = loop.call_at(deadline, self._expire_due, loop)

    def _expire_due(self, loop: asyncio.AbstractEventLoop) -> None:
        self._watchdog = None
        now = loop.time()
        for call, deadline in list(self._deadlines.items()):
            if deadline <= now:
                del self._deadlines[call]
                if not call.future.done():
                    call.future.set_exception(CallTimedOut())
        if self._deadlines:
            self._watchdog = loop.call_at(min(self._deadlines.values()), self._expire_due, loop)

    def _submit(self, call: _Call) -> None:
        with self._lock:
            if self._idle_threads:
                self._idle_threads -= 1
                self._calls.put(call)
                return
            self.threads += 1
        try:
            threading.Thread(
                target=self._work, args=(call,), name=f"sluiceway-{self.name}", daemon=True
            ).start()
        except BaseException:
            with self._lock:
                self.threads -= 1
            raise

    def _work(self, call: _Call | None) -> None:
        """A thread's life: run calls until idle for `idle_seconds`."""
        while call is not None:
            _count_busy(+1)
            try:
                value, error = call.context.run(call.fn, *call.args), None
            except BaseException as exc:  # the caller reads it; SystemExit included
                value, error = None, exc
            finally:
                _count_busy(-1)
            with self._lock:
                self._idle_threads += 1  # before the slot is freed, so no extra thread starts
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
                call.loop.call_soon_threadsafe(self._finished, call, value, error)
            del value, error
            call = self._next()

    def _next(self) -> _Call | None:
        while True:
            try:
                return self._calls.get(timeout=self._idle_seconds)
            except queue.Empty:
                with self._lock:
                    if self._calls.empty():  # no call was promised to an idle thread
                        self._idle_threads -= 1
                        self.threads -= 1
                        return None

    def _finished(self, call: _Call, value: Any, error: BaseException | None) -> None:
        """On the loop: hand the outcome over and free the slot."""
        call.settled = True
        if call.abandoned:
            self._set_stuck(-1)
        elif not call.future.done():
            if error is None:
                call.future.set_result(value)
            else:
                call.future.set_exception(error)
        self._release()

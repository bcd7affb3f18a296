"""Process isolation: Python handlers in a pool of warm worker processes (execution environments).

Each worker imports the handler once and runs one invocation at a time, as a Lambda execution
environment does. Unlike a thread, a worker can be stopped: a handler that outlives its timeout
has its worker killed and replaced, and `memory_size` is enforced in the worker (RLIMIT_AS).
Pipes are blocking, so every send and receive runs in a worker thread, never on the event loop.

A worker is a fresh interpreter (`python -P -c ...worker.serve(fd)`), not a multiprocessing spawn:
spawn re-runs the parent's main script in the child and hands it the parent's sys.path, so a
service started from a script (or the `sluiceway` command) would import its own modules, and its
script's folder, ahead of the function's code. `-P` leaves the working directory and the script's
folder off sys.path; the worker puts the function's code first.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import anyio
import anyio.to_thread
import orjson
from sluiceway.core import function_logs
from sluiceway.core.errors import SluicewayError
from sluiceway.handlers.context import new_request_id
from sluiceway.handlers.invoker import EXIT_ERROR, TIMED_OUT, Invoker
from sluiceway.handlers.loader import HandlerLoadError, code_root
from sluiceway.handlers.results import FunctionError, InvocationResult, Returned, with_request_id
from sluiceway.handlers.worker import OUT_OF_MEMORY, WorkerConfig
from sluiceway.handlers.worker_output import LOG_MESSAGE, LogLine

logger = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 2.0
_SERVE = "import sys; from sluiceway.handlers.worker import serve; serve(int(sys.argv[1]))"
_live: set[subprocess.Popen[bytes]] = set()
"""Workers not yet reaped, killed at exit as multiprocessing kills its daemonic children."""
_live_lock = threading.Lock()


class WorkerGone(SluicewayError):
    """The worker's pipe closed: it exited or was killed."""


@dataclass
class Worker:
    """One live worker process and the parent's end of its pipe."""

    process: subprocess.Popen[bytes]
    conn: Connection
    init_duration: float
    cold_start: float
    """Seconds from spawning the process to its handler being ready."""

    def exit_code(self, wait: float) -> int | None:
        """The exit status (negative: the signal that killed it), waiting up to `wait` seconds
        for it; None while it runs. Blocking: call from a thread."""
        try:
            code = self.process.wait(wait)
        except subprocess.TimeoutExpired:
            return None
        with _live_lock:
            _live.discard(self.process)
        return code

    def kill(self) -> None:
        """Stop the process now and reap it (blocking: call from a thread)."""
        self.process.kill()  # a no-op once it has exited
        self.exit_code(STOP_GRACE_SECONDS)
        self.conn.close()


def _launch() -> tuple[subprocess.Popen[bytes], Connection]:
    """Start a worker interpreter with its own pipe (a socket pair); it waits for its config."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        fd = theirs.fileno()
        process = subprocess.Popen(
            [sys.executable, "-P", "-c", _SERVE, str(fd)],
            pass_fds=(fd,),
            stdin=subprocess.DEVNULL,  # stdout and stderr are the service's: the function's logs
        )
        with _live_lock:
            _live.add(process)
        conn = Connection(ours.detach())
    return process, conn


@atexit.register
def _kill_live() -> None:
    with _live_lock:
        live = list(_live)
    for process in live:
        process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(STOP_GRACE_SECONDS)


def _receive(conn: Connection, timeout: float | None) -> Any:
    """Wait for the worker's next answer; None when `timeout` passes first. What the function
    logs or prints meanwhile goes into the service's log. Runs in a worker thread."""
    deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
    while True:
        if deadline is not None and not conn.poll(max(0.0, deadline - time.monotonic())):
            return None
        try:
            message = conn.recv()
        except (EOFError, OSError):
            raise WorkerGone() from None
        if message[0] != LOG_MESSAGE:
            return message
        line: LogLine = message[1]
        function_logs.write(
            line.logger,
            line.level,
            line.message,
            line.request_id,
            line.function_name,
            created=line.created,
            traceback=line.traceback,
        )


def _spawn(config: WorkerConfig, timeout: float) -> Worker | FunctionError:
    """Start a worker and wait for its init phase. Runs in a worker thread."""
    started = time.perf_counter()
    try:
        process, conn = _launch()
    except OSError as exc:
        return FunctionError(EXIT_ERROR, f"Runtime did not start: {exc}")
    worker = Worker(process, conn, 0.0, 0.0)
    try:
        conn.send(config)
        message = _receive(conn, timeout)
    except (WorkerGone, OSError):
        code = worker.exit_code(STOP_GRACE_SECONDS)
        worker.kill()
        return FunctionError(EXIT_ERROR, f"Runtime exited during init: exit status {code}")
    if message is None:
        worker.kill()
        return FunctionError(TIMED_OUT, f"Init timed out after {timeout:.2f} seconds")
    if message[0] != "ready":
        worker.kill()
        return FunctionError(message[1], message[2])
    worker.init_duration = message[1]
    worker.cold_start = time.perf_counter() - started
    return worker


class ProcessPoolInvoker(Invoker):
    """Runs a Python handler in up to `size` worker processes; an idle worker is reused (warm)."""

    def __init__(
        self,
        config: WorkerConfig,
        function_timeout: float = 3.0,
        size: int = 1,
        init_timeout: float = 10.0,
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        # The function's code is fixed now: a later chdir does not move a worker's task root.
        self.config = dataclasses.replace(config, code_path=code_root(config.code_path))
        self.function_timeout = function_timeout
        self.size = size
        self.init_timeout = max(init_timeout, function_timeout)
        self._slots = anyio.CapacityLimiter(size)
        self._idle: list[Worker] = []
        self.cold_starts: list[float] = []
        """Seconds each worker took from spawn to ready, in start order."""
        self.init_durations: list[float] = []
        self.replaced = 0
        self._init_error: HandlerLoadError | None = None

    @property
    def init_duration(self) -> float | None:
        return self.init_durations[0] if self.init_durations else None

    def has_room(self) -> bool:
        """Whether a worker is free now (pollers grow only while one is; see PythonInvoker)."""
        return self._slots.available_tokens > 0

    @property
    def init_error(self) -> HandlerLoadError | None:
        return self._init_error

    async def warm(self) -> float:
        """Start every worker now (init once per worker) and return the first init duration.

        Raises HandlerLoadError when a worker's init failed, as an in-process load does; each
        invoke then starts a fresh worker and reports the same error, as Lambda re-runs init.
        """
        failures: list[FunctionError] = []
        async with anyio.create_task_group() as tg:
            for _ in range(self.size - len(self._idle)):
                tg.start_soon(self._warm_one, failures)
        if failures:
            raise HandlerLoadError(failures[0].error_type, failures[0].message)
        return self.init_duration or 0.0

    async def _warm_one(self, failures: list[FunctionError]) -> None:
        async with self._slots:
            worker = await self._start(self.init_timeout)
            if isinstance(worker, Worker):
                self._idle.append(worker)
            else:
                failures.append(worker)

    async def _start(self, init_limit: float) -> Worker | FunctionError:
        worker = await anyio.to_thread.run_sync(_spawn, self.config, init_limit)
        if isinstance(worker, Worker):
            self.cold_starts.append(worker.cold_start)
            self.init_durations.append(worker.init_duration)
            self._init_error = None
        else:
            self._init_error = HandlerLoadError(worker.error_type, worker.message)
        return worker

    async def invoke(self, event: dict[str, Any]) -> InvocationResult:
        """Run one invocation in an idle (or new) worker, killing it if it outlives the timeout."""
        async with self._slots:
            started = time.monotonic()
            worker = self._idle.pop() if self._idle else await self._start(self.function_timeout)
            if isinstance(worker, FunctionError):
                return FunctionError(worker.error_type, worker.message, time.monotonic() - started)
            keep = False
            try:
                result, keep = await self._run(worker, event, started)
            finally:
                if keep:
                    self._idle.append(worker)
                else:
                    self.replaced += 1
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(worker.kill)
            return result

    async def _run(
        self, worker: Worker, event: dict[str, Any], started: float
    ) -> tuple[InvocationResult, bool]:
        remaining = self.function_timeout - (time.monotonic() - started)
        request_id = new_request_id()
        result, keep = await self._exchange(
            worker, (request_id, remaining, orjson.dumps(event)), started
        )
        return with_request_id(result, request_id), keep

    async def _exchange(
        self, worker: Worker, request: tuple[str, float, bytes], started: float
    ) -> tuple[InvocationResult, bool]:
        remaining = request[1]
        try:
            await anyio.to_thread.run_sync(worker.conn.send, request)
            message = await anyio.to_thread.run_sync(
                _receive, worker.conn, remaining, abandon_on_cancel=True
            )
        except (WorkerGone, OSError):
            code = await anyio.to_thread.run_sync(worker.exit_code, STOP_GRACE_SECONDS)
            return self._exited(code, time.monotonic() - started), False
        duration = time.monotonic() - started
        if message is None:
            text = f"Task timed out after {self.function_timeout:.2f} seconds"
            return FunctionError(TIMED_OUT, text, duration), False
        if message[0] == "ok":
            raw = message[1]
            try:
                return Returned(orjson.loads(raw), duration), True
            except orjson.JSONDecodeError:
                return Returned(raw, duration), True
        alive = message[1] not in (OUT_OF_MEMORY, EXIT_ERROR)
        stack = tuple(message[3]) if len(message) > 3 else ()
        return FunctionError(message[1], message[2], duration, stack_trace=stack), alive

    def _exited(self, code: int | None, duration: float) -> FunctionError:
        if code is not None and code < 0:
            # Killed by a signal: the kernel's OOM killer or an allocation the limit refused.
            return FunctionError(OUT_OF_MEMORY, f"Runtime exited with signal {-code}", duration)
        return FunctionError(EXIT_ERROR, f"Runtime exited with error: exit status {code}", duration)

    async def aclose(self) -> None:
        """Stop every idle worker (busy ones are stopped as their invocations end)."""
        idle, self._idle = self._idle, []
        with anyio.CancelScope(shield=True):
            for worker in idle:
                await anyio.to_thread.run_sync(_stop, worker)


def _stop(worker: Worker) -> None:
    """Ask the worker to exit (closing its pipe), then kill it if it does not."""
    with contextlib.suppress(OSError):
        worker.conn.send(None)
    worker.exit_code(STOP_GRACE_SECONDS)
    worker.kill()

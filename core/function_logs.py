"""A function's own output in the service's log, tagged as Lambda tags a function's log lines.

Lambda's Python runtime gives the root logger a handler that writes each record to the function's
log stream with its timestamp, level and request id, and sends what the function prints there too.
Here the function's log is the service's log, and every line a function writes carries its
`aws_request_id` and `function_name` (and, bound by the service, the `mapping`).

- In this process (thread isolation) a handler shares the service's `logging`: its records reach
  the service's handlers directly, and `Invocation` binds the request id, so every record
  written during the invocation carries it. `print` and writes to `sys.stderr` are routed by a
  `CapturedStream`: a line written in the invocation's task, or in the worker thread it runs in,
  becomes a record of logger `stdout` or `stderr`; anything else passes through unchanged. A
  thread that the handler starts itself has no invocation, so its prints pass through untagged.
- Worker processes (process isolation) send their records and lines over their pipe
  (handlers/worker_output.py); `write()` puts each into the service's log.

A function's records are leveled by the function, as in Lambda, not by SLUICEWAY_LOG_LEVEL.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
from dataclasses import dataclass, field

from sluiceway.core.logs import CapturedStream, bind_fields, unbind

PRINT_LEVEL = logging.INFO
"""The level of a printed line (Lambda records prints without one)."""


@dataclass
class _Lines:
    """One invocation's printed lines; a partial one waits for its newline or the end."""

    request_id: str | None
    function_name: str
    pending: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, stream: str, text: str) -> None:
        with self.lock:
            *lines, rest = (self.pending.pop(stream, "") + text).split("\n")
            if rest:
                self.pending[stream] = rest
        for line in lines:
            self._emit(stream, line)

    def flush(self) -> None:
        with self.lock:
            pending, self.pending = self.pending, {}
        for stream, line in pending.items():
            self._emit(stream, line)

    def _emit(self, stream: str, line: str) -> None:
        write(stream, PRINT_LEVEL, line, self.request_id, self.function_name)


_ACTIVE: contextvars.ContextVar[_Lines | None] = contextvars.ContextVar(
    "sluiceway_invocation", default=None
)
_install_lock = threading.Lock()


class Invocation:
    """`with Invocation(request_id, function_name):` tags what is logged or printed in the block
    (and in worker threads started for it) as that invocation's output; a request id of None
    is the init phase, which has none in Lambda. A class rather than a generator, since it runs
    for every invocation."""

    __slots__ = ("_active", "_bound", "_state")

    def __init__(self, request_id: str | None, function_name: str) -> None:
        self._state = _Lines(request_id, function_name)

    def __enter__(self) -> None:
        if not (isinstance(sys.stdout, CapturedStream) and isinstance(sys.stderr, CapturedStream)):
            capture_standard_streams()
        state = self._state
        self._active = _ACTIVE.set(state)
        self._bound = bind_fields(
            {"aws_request_id": state.request_id, "function_name": state.function_name}
        )

    def __exit__(self, *exc_info: object) -> None:
        unbind(self._bound)
        _ACTIVE.reset(self._active)
        self._state.flush()


def _route(stream: str, text: str) -> bool:
    state = _ACTIVE.get()
    if state is None:
        return False
    state.take(stream, text)
    return True


def capture_standard_streams() -> None:
    """Put a `CapturedStream` in front of sys.stdout and sys.stderr (once; again if replaced)."""
    with _install_lock:
        if not isinstance(sys.stdout, CapturedStream):
            sys.stdout = CapturedStream("stdout", sys.stdout, _route)
        if not isinstance(sys.stderr, CapturedStream):
            sys.stderr = CapturedStream("stderr", sys.stderr, _route)


def write(
    logger: str,
    level: int,
    message: str,
    request_id: str | None,
    function_name: str,
    *,
    created: float | None = None,
    traceback: str | None = None,
) -> None:
    """Write one line of a function's output to the service's log, whatever the service's level.

    `created` keeps the time the function wrote it (a worker's line arrives a moment later);
    `traceback` is an exception already formatted, as a worker sends it.
    """
    record = logging.LogRecord(logger, level, "", 0, message, None, None)
    if created is not None:
        record.created = created
        record.msecs = int((created - int(created)) * 1000) + 0.0
    record.exc_text = traceback
    if request_id is not None:
        record.aws_request_id = request_id
    record.function_name = function_name
    logging.getLogger(logger).handle(record)

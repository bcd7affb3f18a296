"""A worker process's output, sent to the service: what the function logs and prints.

Lambda's Python runtime gives the root logger a handler (level WARNING unless
AWS_LAMBDA_LOG_LEVEL says otherwise) that tags each record with the request id, and sends
stdout and stderr to the function's log. A worker does the same over its pipe: `install()` gives
the root logger a handler and replaces sys.stdout and sys.stderr with line streams; each record or
line goes to the service as `("log", LogLine)`, which the service writes into its log tagged with
the mapping and the request id (core/function_logs.py).

The pipe has one writer, the worker's main thread, which runs the function and answers the
service: records and lines from threads the function starts itself wait in a queue until the
invocation ends (or the next one does). Writes to the file descriptors themselves (a C library, a
subprocess) are not seen here; they reach the service's own stdout and stderr untagged.

Standard library only: a worker imports this before the function's code.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import os
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import NamedTuple


class LogLine(NamedTuple):
    """One record or printed line of the function's, as the service writes it."""

    function_name: str
    request_id: str | None
    """None during the init phase, as in Lambda."""
    created: float
    level: int
    logger: str
    """The function's logger, or `stdout` / `stderr` for what it printed."""
    message: str
    traceback: str | None


LOG_MESSAGE = "log"
"""The tag of a `("log", LogLine)` message, which may come before any answer on the pipe."""

_LAMBDA_LEVELS = {
    "TRACE": logging.DEBUG,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "FATAL": logging.CRITICAL,
    "CRITICAL": logging.CRITICAL,
}


class _Output:
    """The worker's pipe to the service, and the current request id (one at a time)."""

    def __init__(self, conn: Connection, function_name: str) -> None:
        self.conn = conn
        self.function_name = function_name
        self.request_id: str | None = None
        self.queued: collections.deque[LogLine] = collections.deque()
        self.streams: list[_LineStream] = []

    def line(self, level: int, logger: str, message: str, exc_text: str | None = None) -> None:
        entry = LogLine(
            self.function_name, self.request_id, time.time(), level, logger, message, exc_text
        )
        if threading.current_thread() is threading.main_thread():
            self.drain()
            self._send(entry)
        else:
            self.queued.append(entry)

    def drain(self) -> None:
        """Send what other threads wrote (main thread only)."""
        while self.queued:
            self._send(self.queued.popleft())

    def _send(self, entry: LogLine) -> None:
        with contextlib.suppress(OSError):  # the service is gone; the worker ends at its next read
            self.conn.send((LOG_MESSAGE, entry))


class _ForwardingHandler(logging.Handler):
    """The root logger's handler in a worker: each record goes to the service."""

    def __init__(self, output: _Output) -> None:
        super().__init__()
        self.output = output
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            exc_text = record.exc_text
            if record.exc_info:
                exc_text = self._formatter.formatException(record.exc_info)
            if record.stack_info:
                stack = self._formatter.formatStack(record.stack_info)
                exc_text = f"{exc_text}\n{stack}" if exc_text else stack
            self.output.line(record.levelno, record.name, record.getMessage(), exc_text)
        except Exception:
            self.handleError(record)


class _LineStream(io.TextIOBase):
    """sys.stdout or sys.stderr in a worker: each complete line goes to the service."""

    def __init__(self, name: str, output: _Output, fd: int) -> None:
        super().__init__()
        self.name = name
        self.output = output
        self._fd = fd
        self._pending = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            self.output.line(logging.INFO, self.name, line)
        return len(text)

    def flush(self) -> None:
        """Send a partial line (the end of an invocation flushes both streams)."""
        with self._lock:
            pending, self._pending = self._pending, ""
        if pending:
            self.output.line(logging.INFO, self.name, pending)

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"


_output: _Output | None = None


def install(conn: Connection, function_name: str) -> None:
    """Send the function's logging records and its stdout and stderr to the service."""
    global _output
    output = _output = _Output(conn, function_name)
    root = logging.getLogger()
    root.handlers[:] = [_ForwardingHandler(output)]
    level = _LAMBDA_LEVELS.get(os.environ.get("AWS_LAMBDA_LOG_LEVEL", "").strip().upper())
    if level is not None:
        root.setLevel(level)
    output.streams = [
        _LineStream("stdout", output, sys.__stdout__.fileno() if sys.__stdout__ else 1),
        _LineStream("stderr", output, sys.__stderr__.fileno() if sys.__stderr__ else 2),
    ]
    sys.stdout, sys.stderr = output.streams


def begin(request_id: str) -> None:
    """Tag what follows with this invocation's request id."""
    if _output is not None:
        _output.request_id = request_id


def finish() -> None:
    """Send the invocation's partial lines and what its threads wrote, before its answer."""
    if _output is not None:
        for stream in _output.streams:
            stream.flush()
        _output.drain()

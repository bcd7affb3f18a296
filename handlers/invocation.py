"""What one invoke call carries beyond its event: a request id, the caller's client context, and
whether the caller wants the log's tail (the Invoke API's X-Amz-Log-Type: Tail).

The Invoke API and the asynchronous engine set these around `Invoker.invoke` with
`invocation_options`; a context variable carries them into the handler's thread (anyio copies the
context into worker threads), so the `Invoker` contract stays one argument wide.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TextIO

LOG_TAIL_BYTES = 4096
"""Lambda returns the last 4 KB of the invocation's log."""


class Client:
    """`context.client_context.client`, as Lambda's Python runtime builds it."""

    __slots__ = (
        "app_package_name",
        "app_title",
        "app_version_code",
        "app_version_name",
        "installation_id",
    )

    def __init__(self, values: dict[str, Any]) -> None:
        self.installation_id = values.get("installation_id")
        self.app_title = values.get("app_title")
        self.app_version_name = values.get("app_version_name")
        self.app_version_code = values.get("app_version_code")
        self.app_package_name = values.get("app_package_name")


class ClientContext:
    """`context.client_context`: what a mobile SDK caller sent in X-Amz-Client-Context."""

    __slots__ = ("client", "custom", "env")

    def __init__(self, values: dict[str, Any]) -> None:
        client = values.get("client")
        self.client = Client(client) if isinstance(client, dict) else None
        self.custom = values.get("custom")
        self.env = values.get("env")


@dataclass
class InvocationOptions:
    request_id: str | None = None
    """The invocation's request id; every attempt of an asynchronous event has the same one."""
    client_context: dict[str, Any] | None = None
    tail: bool = False
    """Keep the log lines written during the invocation (`log`)."""
    log: io.StringIO = field(default_factory=io.StringIO)

    def client_context_object(self) -> ClientContext | None:
        return ClientContext(self.client_context) if self.client_context is not None else None

    def log_tail(self) -> str:
        """The last 4 KB of the invocation's log (whole lines where possible)."""
        data = self.log.getvalue().encode()
        return data[-LOG_TAIL_BYTES:].decode(errors="ignore")


_CURRENT: ContextVar[InvocationOptions | None] = ContextVar("sluiceway_invocation", default=None)


def current_options() -> InvocationOptions | None:
    return _CURRENT.get()


@contextlib.contextmanager
def invocation_options(options: InvocationOptions) -> Iterator[InvocationOptions]:
    """Run the invokes inside with `options`; with `tail`, what the handler logs and prints is
    copied into `options.log` as well as written where it always goes."""
    token = _CURRENT.set(options)
    if options.tail:
        _install_capture()
    try:
        yield options
    finally:
        _CURRENT.reset(token)


def write_log(text: str) -> None:
    """Add a line to the current invocation's captured log (START / END / REPORT lines)."""
    options = _CURRENT.get()
    if options is not None and options.tail:
        options.log.write(text)


class _TeeStdout(io.TextIOBase):
    """sys.stdout that also copies writes made while an invocation asks for its log tail."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner

    def write(self, text: str) -> int:
        write_log(text)
        return self.inner.write(text)

    def flush(self) -> None:
        self.inner.flush()

    def fileno(self) -> int:
        return self.inner.fileno()

    def isatty(self) -> bool:
        return self.inner.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.inner, "encoding", "utf-8")


class _TailHandler(logging.Handler):
    """Copies log records made during a tail-wanting invocation, formatted as Lambda's runtime."""

    def emit(self, record: logging.LogRecord) -> None:
        options = _CURRENT.get()
        if options is None or not options.tail:
            return
        request_id = options.request_id or ""
        options.log.write(f"[{record.levelname}]\t{request_id}\t{record.getMessage()}\n")


_installed = False
_install_lock = threading.Lock()


def _install_capture() -> None:
    """Once, on the first invoke that asks for a tail: tee stdout and add the log handler."""
    global _installed
    with _install_lock:
        if _installed:
            return
        _installed = True
        if not isinstance(sys.stdout, _TeeStdout):
            sys.stdout = _TeeStdout(sys.stdout)
        logging.getLogger().addHandler(_TailHandler())

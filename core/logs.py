"""Logging set-up: plain text on a terminal, JSON lines (one object per line, for log pipelines)
otherwise, unless SLUICEWAY_LOG_FORMAT says which.

Each line carries the active trace_id / span_id and whatever `bind()` put in context (mapping,
shard, batch_id, a function's request id), so a log line leads to its trace. Secrets never reach a
line: credential-like keys are redacted, receipt handles shortened, and record bodies dropped
unless SLUICEWAY_LOG_BODIES=true. Every value in `core.secrets.known_secrets` is masked
wherever it appears in a line, in either format. A traceback is one JSON field, or its own lines in text.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Literal, TextIO

import orjson
from opentelemetry import trace
from sluiceway.core.secrets import known_secrets

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_CONTEXT: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "sluiceway_log_context", default=MappingProxyType({})
)
_SECRET_KEY = re.compile(
    r"secret|password|passwd|token|credential|authorization|access_key|api_key", re.I
)
_BODY_KEYS = frozenset({"body", "data", "records", "event", "payload", "newimage", "oldimage"})
_HANDLE_KEYS = frozenset({"receipt_handle", "receipthandle", "handle"})
_SECRET_TEXT = re.compile(
    r"((?:aws_secret_access_key|aws_session_token|secretaccesskey|sessiontoken)\W{1,3})[^\s'\",;]+"
    r"|(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])",
    re.I,
)
REDACTED = "[redacted]"


class _Options:
    log_bodies = False


options = _Options()


@contextlib.contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add fields to every log line written in this context (and tasks/threads started in it)."""
    token = bind_fields(fields)
    try:
        yield
    finally:
        unbind(token)


BoundFields = contextvars.Token[Mapping[str, Any]]


def bind_fields(fields: Mapping[str, Any]) -> BoundFields:
    """`bind` without a with-block, for a hot path's own context manager; undo with `unbind`."""
    return _CONTEXT.set({**_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}})


def unbind(token: BoundFields) -> None:
    _CONTEXT.reset(token)


def short_handle(handle: str) -> str:
    """Enough of a receipt handle to correlate lines, never enough to act on the message."""
    return f"{handle[:8]}…({len(handle)})" if len(handle) > 12 else REDACTED


def redact_text(text: str) -> str:
    """Mask known secrets, access key ids and secret/token values written into free text."""
    text = known_secrets.mask(text)
    if not _SECRET_TEXT.search(text):
        return text
    return _SECRET_TEXT.sub(lambda m: (m.group(1) or "") + REDACTED, text)


def scrub(key: str, value: Any) -> Any:
    """A log field's value as it may be written."""
    lowered = key.lower()
    if _SECRET_KEY.search(lowered):
        return REDACTED
    if lowered in _HANDLE_KEYS and isinstance(value, str):
        return short_handle(value)
    if lowered in _BODY_KEYS and not options.log_bodies:
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict | list | tuple):
        return known_secrets.mask_value(value)
    return value


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + (
        f".{int(record.msecs):03d}Z"
    )


def _fields(record: logging.LogRecord) -> dict[str, object]:
    """The trace ids, the bound context and `extra={...}`, each value as it may be written."""
    out: dict[str, object] = {}
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        out["trace_id"] = format(span_context.trace_id, "032x")
        out["span_id"] = format(span_context.span_id, "016x")
    for key, value in _CONTEXT.get().items():
        out[key] = scrub(key, value)
    for key, value in record.__dict__.items():
        if key not in _STANDARD and not key.startswith("_"):
            out[key] = scrub(key, value)
    return out


def _traceback(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    """The record's traceback: from its exception, or as text when it came from another process."""
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    return redact_text(record.exc_text) if record.exc_text else None


class JsonFormatter(logging.Formatter):
    """One JSON object per record; `extra={...}` and bound fields are carried as keys."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": redact_text(record.getMessage()),
        }
        out.update(_fields(record))
        exception = _traceback(self, record)
        if exception:
            out["exception"] = exception
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """`time LEVEL logger [key=value ...] message`, then a traceback on its own lines."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{key}={value}" for key, value in _fields(record).items())
        context = f" [{fields}]" if fields else ""
        line = (
            f"{_timestamp(record)} {record.levelname:<7} {record.name}{context} "
            f"{redact_text(record.getMessage())}"
        )
        exception = _traceback(self, record)
        return f"{line}\n{redact_text(exception)}" if exception else line


def resolve_format(fmt: str | None, stream: TextIO) -> str:
    """The format asked for, else text for a person at a terminal and JSON for anything else."""
    if fmt is not None:
        return fmt
    try:
        return "text" if stream.isatty() else "json"
    except ValueError:  # a closed stream
        return "json"


def configure_logging(
    level: str = "INFO", fmt: str | None = None, *, log_bodies: bool = False
) -> None:
    """Send every record to stderr: `fmt` "json" or "text", or None to choose by the terminal."""
    options.log_bodies = log_bodies
    stream = standard_stream("stderr")
    handler = logging.StreamHandler(stream)
    if resolve_format(fmt, stream) == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("botocore", "aiobotocore", "werkzeug", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def standard_stream(name: Literal["stdout", "stderr"]) -> TextIO:
    """The process's own stdout or stderr, beneath any capture of a function's output."""
    stream: TextIO = sys.stdout if name == "stdout" else sys.stderr
    while isinstance(stream, CapturedStream):
        stream = stream.underlying
    return stream


class _ThreadFlag(threading.local):
    active = False


class CapturedStream(io.TextIOBase):
    """Stands in for sys.stdout or sys.stderr while functions run in this process.

    `route(stream_name, text)` decides, per write, whether the text belongs to a function's
    output (and takes it) or not; what it does not take passes through unchanged. A write made
    while routing (a log handler that writes to sys.stderr) passes through, so it cannot loop.
    """

    def __init__(
        self,
        name: Literal["stdout", "stderr"],
        underlying: TextIO,
        route: Callable[[str, str], bool],
    ) -> None:
        super().__init__()
        self.name = name
        self.underlying = underlying
        self._route = route
        self._routing = _ThreadFlag()

    def write(self, text: str) -> int:
        if not self._routing.active:
            self._routing.active = True
            try:
                if self._route(self.name, text):
                    return len(text)
            finally:
                self._routing.active = False
        return self.underlying.write(text)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        self.underlying.flush()

    def fileno(self) -> int:
        return self.underlying.fileno()

    def isatty(self) -> bool:
        return self.underlying.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.underlying.encoding

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return self.underlying.errors

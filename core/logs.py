"""Logging set-up: JSON lines by default (one object per line, for log pipelines), or plain text.

Each JSON line carries the active trace_id / span_id and whatever `bind()` put in context
(mapping, shard, batch_id), so a log line leads to its trace. Secrets never reach a line:
credential-like keys are redacted, receipt handles shortened, and record bodies dropped unless
SLUICEWAY_LOG_BODIES=true. Every value in `core.secrets.known_secrets` is masked wherever it
appears in a line, in either format.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import sys
import time
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

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
    token = _CONTEXT.set({**_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
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


class JsonFormatter(logging.Formatter):
    """One JSON object per record; `extra={...}` and bound fields are carried as keys."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": redact_text(record.getMessage()),
        }
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            out["trace_id"] = format(span_context.trace_id, "032x")
            out["span_id"] = format(span_context.span_id, "016x")
        for key, value in _CONTEXT.get().items():
            out[key] = scrub(key, value)
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = scrub(key, value)
        if record.exc_info:
            out["exception"] = redact_text(self.formatException(record.exc_info))
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """`time level logger: message`, redacted like the JSON lines."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


def configure_logging(level: str = "INFO", fmt: str = "json", *, log_bodies: bool = False) -> None:
    options.log_bodies = log_bodies
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("botocore", "aiobotocore", "werkzeug", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

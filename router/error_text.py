"""A failed invocation's error as it may leave the process (logs, spans, `/status`).

The handler's message is cut to 1 KB with every known secret (`core.secrets`) masked and, unless
SLUICEWAY_LOG_BODIES=true, the batch's own record bodies too: a handler that quotes its input in an
exception (`raise ValueError(f"bad order {body}")`) does not copy payloads into logs. A body is
masked whole, and so is each string or number of 8 characters or more inside it (JSON bodies,
decoded Kinesis data, DynamoDB images), so a card number quoted alone is masked as well.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
from sluiceway.core.logs import options as log_options
from sluiceway.core.secrets import MIN_LENGTH, known_secrets, mask_fragments
from sluiceway.handlers.results import FunctionError, InvocationResult, InvokeFailure
from sluiceway.router.records import SourceRecord

ERROR_TEXT_LIMIT = 1024
"""Characters of a handler's error message that are kept."""
STACK_TRACE_LIMIT = 4096
"""Characters of its stack trace that are kept (the innermost frames)."""


def safe_result(result: InvocationResult, records: Sequence[SourceRecord]) -> InvocationResult:
    """A failed result's text cut and masked (see the module): a `FunctionError`'s message and
    stack trace, or why an `InvokeFailure` failed (an HTTP target's error page may echo the
    event). A returned result is unchanged."""
    if isinstance(result, FunctionError):
        return safe_error(result, records)
    if isinstance(result, InvokeFailure):
        reason = mask_fragments(result.reason, _fragments(records), ERROR_TEXT_LIMIT)
        return dataclasses.replace(result, reason=reason)
    return result


def _fragments(records: Sequence[SourceRecord]) -> list[str]:
    fragments = list(known_secrets.values)
    if not log_options.log_bodies:
        fragments += body_fragments(r.event for r in records)
    return sorted(set(fragments), key=len, reverse=True)


def safe_error(error: FunctionError, records: Sequence[SourceRecord]) -> FunctionError:
    """`error` with its message and stack trace cut and masked (see the module)."""
    fragments = _fragments(records)
    message = mask_fragments(error.message, fragments, ERROR_TEXT_LIMIT)
    frames: list[str] = []
    kept = 0
    for frame in reversed(error.stack_trace):
        kept += len(frame)
        if kept > STACK_TRACE_LIMIT:
            break
        frames.append(frame)
    frames.reverse()
    joined = "".join(frames)
    present = [f for f in fragments if f in joined]  # usually none: frames hold code, not data
    if present:
        frames = [mask_fragments(frame, present, len(frame)) for frame in frames]
    return dataclasses.replace(error, message=message, stack_trace=tuple(frames))


def describe(error: FunctionError) -> tuple[str, str | None]:
    """One log message, `Type: message`, and the traceback that follows it when there is one
    (a JSON line's `exception` field; its own lines in text)."""
    text = f"{error.error_type}: {error.message}"
    if not error.stack_trace:
        return text, None
    frames = "".join(error.stack_trace).rstrip()
    return text, f"Traceback (most recent call last):\n{frames}\n{text}"


def body_fragments(events: Any) -> list[str]:
    """Every text of the records' bodies that a log must not show."""
    out: list[str] = []
    for event in events:
        for text in _bodies(event):
            if len(text) >= MIN_LENGTH:
                out.append(text)
            out.extend(_leaves(text))
        dynamodb = event.get("dynamodb")
        if isinstance(dynamodb, dict):
            for name in ("NewImage", "OldImage", "Keys"):
                out.extend(_scalars(dynamodb.get(name)))
    return out


def _bodies(event: dict[str, Any]) -> Iterator[str]:
    body = event.get("body")
    if isinstance(body, str):
        yield body
    kinesis = event.get("kinesis")
    if isinstance(kinesis, dict) and isinstance(kinesis.get("data"), str):
        yield kinesis["data"]
        decoded = _decoded(kinesis["data"])
        if decoded is not None:
            yield decoded


def _decoded(data: str) -> str | None:
    try:
        return base64.b64decode(data, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def _leaves(text: str) -> Iterator[str]:
    if text[:1] not in ("{", "["):
        return
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return
    yield from _scalars(parsed)


def _scalars(value: Any) -> Iterator[str]:
    """Strings and numbers in a JSON value (or a DynamoDB image), as text, long enough to mask."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _scalars(item)
    elif isinstance(value, list):
        for item in value:
            yield from _scalars(item)
    elif isinstance(value, str | int | float) and not isinstance(value, bool):
        text = str(value)
        if len(text) >= MIN_LENGTH:
            yield text

"""Handlers for telemetry tests: each notes the span context it ran in and opens its own span."""

from __future__ import annotations

import threading
import time
from typing import Any

from opentelemetry import trace
from sluiceway.core import telemetry

SEEN: list[dict[str, Any]] = []
"""One entry per invocation: the span it ran under, its thread, the bodies."""
_lock = threading.Lock()


def _note(event: dict[str, Any]) -> list[dict[str, Any]]:
    records = event["Records"]
    context = trace.get_current_span().get_span_context()
    with telemetry.span("handler work", app__records=len(records)):
        pass
    with _lock:
        SEEN.append(
            {
                "trace_id": context.trace_id,
                "span_id": context.span_id,
                "thread": threading.current_thread().name,
                "bodies": [r.get("body") for r in records],
            }
        )
    return records


def ok(event: dict[str, Any], context: Any) -> None:
    _note(event)


def partial(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Bodies containing 'fail' are reported as batch item failures."""
    records = _note(event)
    failed = [{"itemIdentifier": r["messageId"]} for r in records if "fail" in r["body"]]
    return {"batchItemFailures": failed}


def boom(event: dict[str, Any], context: Any) -> None:
    _note(event)
    raise RuntimeError("boom")


def reset() -> None:
    with _lock:
        SEEN.clear()


def leaky(event: dict[str, Any], context: Any) -> None:
    """Fails with a credential in its message and on the line that raises (masked in spans)."""
    _note(event)
    raise ValueError("cannot sign with AKIAIOSFODNN7EXAMPLE")  # a documentation example key


def slow(event: dict[str, Any], context: Any) -> None:
    """Outlives a short function timeout."""
    _note(event)
    time.sleep(1.0)

"""Handlers for the Invoke API and asynchronous invocation tests."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

CALLS: dict[str, int] = {}
"""Invocations per request id of `fail` (in-process tests read it)."""
_OUT = os.environ.get("ASYNC_TEST_OUT_DIR", "")


def echo(event: Any, context: Any) -> dict[str, Any]:
    """Returns what it got, and prints a line for the log tail."""
    print(f"echo handling {json.dumps(event)}")
    logging.getLogger("echo").warning("a log line from echo")
    custom = context.client_context.custom if context.client_context is not None else None
    return {"echo": event, "custom": custom, "request_id": context.aws_request_id}


def fail(event: Any, context: Any) -> None:
    CALLS[context.aws_request_id] = CALLS.get(context.aws_request_id, 0) + 1
    raise Exception("Test exception (this is intentional)")


def slow(event: Any, context: Any) -> str:
    time.sleep(float(event.get("sleep", 0.5)) if isinstance(event, dict) else 0.5)
    return "done"


def record(event: Any, context: Any) -> None:
    """Appends the event's number to this process's file (flushed), for the kill -9 tests."""
    with open(os.path.join(_OUT, f"{os.getpid()}.jsonl"), "a") as out:
        out.write(json.dumps({"n": event["n"]}) + "\n")
        out.flush()
    time.sleep(float(os.environ.get("ASYNC_TEST_SLEEP", "0.01")))


TICKS: list[tuple[Any, float, str]] = []
"""(event, when invoked, function name) of every `tick` invocation in this process."""


def tick(event: Any, context: Any) -> None:
    TICKS.append((event, time.time(), context.function_name))

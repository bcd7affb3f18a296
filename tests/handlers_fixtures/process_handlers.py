"""Handlers for process isolation: they report their process, env and init, sleep, or allocate."""

from __future__ import annotations

import os
import time
from typing import Any

INIT_PID = os.getpid()
INIT_COUNT = 0
INIT_COUNT += 1  # module-level code: runs once per worker process
INVOCATIONS = 0


def describe(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global INVOCATIONS
    INVOCATIONS += 1
    return {
        "pid": os.getpid(),
        "init_pid": INIT_PID,
        "init_count": INIT_COUNT,
        "invocations": INVOCATIONS,
        "greeting": os.environ.get("GREETING"),
        "function_name": os.environ.get("AWS_LAMBDA_FUNCTION_NAME"),
        "memory": context.memory_limit_in_mb,
        "memory_env": os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"),
        "remaining": context.get_remaining_time_in_millis(),
    }


def sleeps(event: dict[str, Any], context: Any) -> int:
    time.sleep(event.get("sleep", 10))
    return os.getpid()


def allocates(event: dict[str, Any], context: Any) -> int:
    """Holds `mb` megabytes at once."""
    block = bytearray(event["mb"] * 1024 * 1024)
    return len(block) // (1024 * 1024)


def boom(event: dict[str, Any], context: Any) -> None:
    raise ValueError("order 7 has no customer")


async def async_describe(event: dict[str, Any], context: Any) -> int:
    return os.getpid()

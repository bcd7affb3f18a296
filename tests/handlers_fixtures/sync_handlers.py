"""Sync handlers, one behaviour each."""

from __future__ import annotations

import sys
import threading
import time
from decimal import Decimal
from typing import Any

not_a_function = 42


def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"records": len(event["Records"]), "request_id": context.aws_request_id}


def boom(event: dict[str, Any], context: Any) -> None:
    raise ValueError("order 7 has no customer")


def raises_timeout_error(event: dict[str, Any], context: Any) -> None:
    raise TimeoutError("the database did not answer")


def sleeps(event: dict[str, Any], context: Any) -> str:
    time.sleep(event["sleep"])
    return "woke up"


def exits(event: dict[str, Any], context: Any) -> None:
    sys.exit(3)


def returns_set(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"ids": {1, 2}}


def returns_huge(event: dict[str, Any], context: Any) -> str:
    return "x" * 6_291_556


def returns_decimals(event: dict[str, Any], context: Any) -> dict[Any, Any]:
    return {"price": Decimal("19.99"), "count": Decimal("3"), 7: "int key", "tuple": (1, 2)}


def returns_bytes(event: dict[str, Any], context: Any) -> bytes:
    return event["raw"].encode()


def mutates_event(event: dict[str, Any], context: Any) -> None:
    event["Records"].clear()


def thread_ident(event: dict[str, Any], context: Any) -> int:
    return threading.get_ident()


def remaining_time(event: dict[str, Any], context: Any) -> int:
    return int(context.get_remaining_time_in_millis())


def context_summary(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "arn": context.invoked_function_arn,
        "memory": context.memory_limit_in_mb,
        "log_stream": context.log_stream_name,
    }


class ConcurrencyProbe:
    """Counts how many calls run at the same moment."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0

    def __call__(self, event: dict[str, Any], context: Any) -> None:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(0.05)
        with self.lock:
            self.running -= 1


probe = ConcurrencyProbe()

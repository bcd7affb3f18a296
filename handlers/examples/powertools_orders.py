"""The orders example written with AWS Lambda Powertools' batch utility, as written for Lambda.

Same rules as `orders.py`: `"poison": true` always fails, `"flaky": true` fails on the first
delivery. The module-level processor holds one batch's state, which Lambda never shares between
concurrent invocations: run this handler with `max_threads=1` (the invoker's default).

`HANDLED` counts outcomes like `orders.HANDLED` (`processed`, `poison`, `flaky`).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

HANDLED: Counter[str] = Counter()
_lock = threading.Lock()

processor = BatchProcessor(event_type=EventType.SQS)


class OrderFailed(Exception):
    """The order could not be processed; Powertools reports its message as a batch item failure."""


def record_handler(record: SQSRecord) -> None:
    """Process one order, raising to mark it failed."""
    order = record.json_body
    if order.get("poison") is True:
        _count("poison")
        raise OrderFailed(f"poison order {record.message_id}")
    if order.get("flaky") is True and record.attributes.approximate_receive_count == "1":
        _count("flaky")
        raise OrderFailed(f"first delivery of flaky order {record.message_id}")
    _count("processed")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point: Powertools builds the batchItemFailures response."""
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )


def _count(outcome: str) -> None:
    with _lock:
        HANDLED[outcome] += 1


def snapshot() -> dict[str, int]:
    """A consistent copy of the counters."""
    with _lock:
        return dict(HANDLED)


def reset() -> None:
    """Start counting from zero."""
    with _lock:
        HANDLED.clear()

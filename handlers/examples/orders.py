"""Example SQS handler: processes orders and reports the ones it could not handle.

Message bodies are JSON orders. A body with `"poison": true` fails on every delivery (it ends up in
the queue's DLQ); a body with `"flaky": true` fails on its first delivery only, so retries show;
`"work_ms": N` makes the handler take that long over the order, as real work would.
Requires ReportBatchItemFailures on the mapping; without it the failures are ignored, as in Lambda.

`HANDLED` counts what happened, for the demo's tally (read it with `snapshot()`): `processed`
(orders handled), `poison` and `flaky` (deliveries reported as failed). Sync handlers run in
worker threads, so the counter is only touched under `_lock`.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

HANDLED: Counter[str] = Counter()
PROCESSED: set[str] = set()
"""Message ids processed successfully at least once (a redelivery does not count twice)."""
_lock = threading.Lock()


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Process every record; return the message ids that failed."""
    failures = []
    for record in event["Records"]:
        outcome = _process(record)
        with _lock:
            HANDLED[outcome] += 1
            if outcome == "processed":
                PROCESSED.add(record["messageId"])
        if outcome != "processed":
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}


MAX_WORK_SECONDS = 1.0


def _process(record: dict[str, Any]) -> str:
    order = _order(record["body"])
    work = order.get("work_ms")
    if isinstance(work, int | float) and work > 0:
        time.sleep(min(work / 1000, MAX_WORK_SECONDS))  # a worker thread: the loop is not held
    if order.get("poison") is True:
        return "poison"
    if order.get("flaky") is True and record["attributes"]["ApproximateReceiveCount"] == "1":
        return "flaky"
    return "processed"


def _order(body: str) -> dict[str, Any]:
    """The order in a message body; a body that is not a JSON object is an order with no flags."""
    try:
        order = json.loads(body)
    except ValueError:
        return {}
    return order if isinstance(order, dict) else {}


def snapshot() -> dict[str, int]:
    """A consistent copy of the counters."""
    with _lock:
        return dict(HANDLED)


def reset() -> None:
    """Start counting from zero (between demo runs or tests)."""
    with _lock:
        HANDLED.clear()
        PROCESSED.clear()


def processed_ids() -> set[str]:
    """A copy of the ids of the messages processed successfully."""
    with _lock:
        return set(PROCESSED)

"""Handlers for integration tests: they record what they were given and do what the test asks.

The service runs in the test's process, so a test sets `BEHAVIOUR` and reads `SEEN` directly.
"""

from __future__ import annotations

import base64
import threading
import time
from typing import Any

import orjson

SEEN: list[dict[str, Any]] = []
"""Every record handed to a handler, in invocation order (retries included)."""
BATCHES: list[list[str]] = []
"""Bodies per invocation."""
CONTEXTS: list[Any] = []
BEHAVIOUR: dict[str, Any] = {}
SPANS: list[tuple[float, float, list[str]]] = []
"""(start, end, sequence numbers) of every `record_timed` invocation."""
_lock = threading.Lock()


def reset() -> None:
    with _lock:
        SEEN.clear()
        BATCHES.clear()
        CONTEXTS.clear()
        BEHAVIOUR.clear()
        SPANS.clear()


def _note(event: dict[str, Any], context: Any) -> list[dict[str, Any]]:
    records = event["Records"]
    with _lock:
        SEEN.extend(records)
        BATCHES.append([r.get("body", "") for r in records])
        CONTEXTS.append(context)
    return records


def record(event: dict[str, Any], context: Any) -> None:
    """Succeeds; sleeps `BEHAVIOUR['sleep']` seconds first when asked."""
    _note(event, context)
    if BEHAVIOUR.get("sleep"):
        time.sleep(BEHAVIOUR["sleep"])


def _should_fail(record: dict[str, Any]) -> bool:
    """Bodies containing 'fail' fail; only on their first receive when the test says so."""
    if "fail" not in record.get("body", ""):
        return False
    if BEHAVIOUR.get("fail_first_receive_only"):
        return record["attributes"].get("ApproximateReceiveCount") == "1"
    return True


def fail_bodies(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Reports every message that should fail as a batch item failure (and nothing after it)."""
    records = _note(event, context)
    return {
        "batchItemFailures": [
            {"itemIdentifier": r["messageId"]} for r in records if _should_fail(r)
        ]
    }


def raise_on_first_receive(event: dict[str, Any], context: Any) -> None:
    """Raises (a function error) when any message in the batch should fail."""
    records = _note(event, context)
    if any(_should_fail(r) for r in records):
        raise RuntimeError("a message asked to fail")


_concurrent = 0


def track_concurrency(event: dict[str, Any], context: Any) -> None:
    """Records the highest number of invocations running at once."""
    global _concurrent
    _note(event, context)
    with _lock:
        _concurrent += 1
        BEHAVIOUR["max_concurrent"] = max(BEHAVIOUR.get("max_concurrent", 0), _concurrent)
    try:
        time.sleep(BEHAVIOUR.get("sleep", 0))
    finally:
        with _lock:
            _concurrent -= 1


def respond(event: dict[str, Any], context: Any) -> Any:
    """Returns `BEHAVIOUR['response']`, with '$first' replaced by the first messageId."""
    records = _note(event, context)
    response = BEHAVIOUR.get("response")
    raw = orjson.dumps(response).replace(b"$first", records[0]["messageId"].encode())
    return orjson.loads(raw)


async def async_record(event: dict[str, Any], context: Any) -> None:
    _note(event, context)


def bodies() -> list[str]:
    with _lock:
        return [r.get("body", "") for r in SEEN]


def wait_until(predicate: Any, timeout: float = 20.0) -> bool:
    """Sync wait for threads; async tests use `tests.support.sqs.eventually`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def record_stream(event: dict[str, Any], context: Any) -> None:
    """Succeeds, like `record`; fails whole batches while `BEHAVIOUR['fail_batches']` > 0."""
    _note(event, context)
    with _lock:
        left = BEHAVIOUR.get("fail_batches", 0)
        if left:
            BEHAVIOUR["fail_batches"] = left - 1
    if left:
        raise RuntimeError("asked to fail this batch")
    if BEHAVIOUR.get("sleep"):
        time.sleep(BEHAVIOUR["sleep"])


def hold_key(event: dict[str, Any], context: Any) -> None:
    """Records, then holds a batch with a record of `BEHAVIOUR['hold_key']` (partition key)
    until `BEHAVIOUR['release']` (a threading.Event) is set, at most 30 s; other batches take
    `BEHAVIOUR['sleep']` seconds."""
    records = _note(event, context)
    if any(r["kinesis"]["partitionKey"] == BEHAVIOUR.get("hold_key") for r in records):
        BEHAVIOUR["release"].wait(30)
    else:
        time.sleep(BEHAVIOUR.get("sleep", 0))


def record_timed(event: dict[str, Any], context: Any) -> None:
    """Records, takes `BEHAVIOUR['sleep']` seconds, and notes when it ran (Kinesis records)."""
    started = time.time()
    records = _note(event, context)
    time.sleep(BEHAVIOUR.get("sleep", 0))
    with _lock:
        SPANS.append((started, time.time(), [r["kinesis"]["sequenceNumber"] for r in records]))


def kinesis_payloads() -> list[str]:
    """Decoded `data` of every Kinesis record seen, in delivery order."""
    with _lock:
        return [base64.b64decode(r["kinesis"]["data"]).decode() for r in SEEN]

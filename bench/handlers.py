"""The handler every consumer calls: a no-op that counts, or notes put→start latency when asked.

Consumers (Sluiceway and peers) import the same functions, so each pays the same handler cost.
"""

from __future__ import annotations

import base64
import threading
import time
from typing import Any

import orjson

_lock = threading.Lock()
_count = 0
_expect = 0
LATENCIES: list[float] = []
DONE = threading.Event()
MEASURE_LATENCY = False


def reset(expect: int, *, latency: bool = False) -> None:
    """Arm the counter: DONE is set once `expect` records were handled."""
    global _count, _expect, MEASURE_LATENCY
    with _lock:
        _count, _expect, MEASURE_LATENCY = 0, expect, latency
        LATENCIES.clear()
        DONE.clear()


def count() -> int:
    return _count


def note(records: int, sent_at: list[float] | None = None, now: float | None = None) -> None:
    """Count handled records; with sent-at times, note put→handler-start latencies."""
    global _count
    with _lock:
        _count += records
        if sent_at:
            started = now if now is not None else time.time()
            LATENCIES.extend(started - t for t in sent_at)
        if _count >= _expect:
            DONE.set()


def sent_time(raw: bytes | str) -> float | None:
    """The `t` a latency producer put in a record, if any."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    t = value.get("t") if isinstance(value, dict) else None
    return float(t) if t is not None else None


def noop(event: dict[str, Any], context: Any) -> None:
    """Sluiceway's handler: Lambda-shaped event in, nothing out."""
    now = time.time()
    records = event["Records"]
    sent: list[float] = []
    if MEASURE_LATENCY:
        for record in records:
            raw = (
                record["body"] if "body" in record else base64.b64decode(record["kinesis"]["data"])
            )
            t = sent_time(raw)
            if t is not None:
                sent.append(t)
    note(len(records), sent, now)


def raw(payloads: list[Any]) -> None:
    """The peers' handler: the same no-op on the payloads as each library hands them over."""
    now = time.time()
    sent: list[float] = []
    if MEASURE_LATENCY:
        for item in payloads:
            t = item.get("t") if isinstance(item, dict) else sent_time(item)
            if t is not None:
                sent.append(float(t))
    note(len(payloads), sent, now)

"""Example async handler: counts the records it sees, by event source.

Async handlers run on the event loop, so `AUDITED` is only ever touched from the loop's thread;
read it from there (or copy it with `snapshot()`). Returns nothing: every batch succeeds.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

AUDITED: Counter[str] = Counter()
"""Records seen, keyed by `eventSource` (`aws:sqs`, `aws:kinesis`, `aws:dynamodb`)."""
SEEN_IDS: dict[str, set[str]] = {}
"""Distinct records seen per `eventSource` (eventID, or messageId for SQS): redeliveries count once."""


async def handler(event: dict[str, Any], context: Any) -> None:
    """Count the batch's records."""
    for record in event["Records"]:
        source = record.get("eventSource", "unknown")
        AUDITED[source] += 1
        SEEN_IDS.setdefault(source, set()).add(record.get("eventID") or record.get("messageId", ""))


def snapshot() -> dict[str, int]:
    """A copy of the counters."""
    return dict(AUDITED)


def distinct(source: str) -> int:
    """How many different records of `source` were handled."""
    return len(SEEN_IDS.get(source, ()))


def reset() -> None:
    """Start counting from zero."""
    AUDITED.clear()
    SEEN_IDS.clear()

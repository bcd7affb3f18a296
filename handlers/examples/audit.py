"""Example async handler: counts the records it sees, by event source.

Async handlers run on the event loop, so `AUDITED` is only ever touched from the loop's thread;
read it from there (or copy it with `snapshot()`). Returns nothing: every batch succeeds.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

AUDITED: Counter[str] = Counter()
"""Records seen, keyed by `eventSource` (`aws:sqs`, `aws:kinesis`, `aws:dynamodb`)."""


async def handler(event: dict[str, Any], context: Any) -> None:
    """Count the batch's records."""
    for record in event["Records"]:
        AUDITED[record.get("eventSource", "unknown")] += 1


def snapshot() -> dict[str, int]:
    """A copy of the counters."""
    return dict(AUDITED)


def reset() -> None:
    """Start counting from zero."""
    AUDITED.clear()

"""Example stream handler: Kinesis and DynamoDB Streams records, reporting the ones it failed.

A record whose JSON data (Kinesis) or new image (DynamoDB) has `poison: true` fails every time; one
with `flaky: true` fails the first time this process sees it, so a retry shows. Both are reported
with ReportBatchItemFailures (the record's sequence number), so the mapping retries from the first
failed record; without ReportBatchItemFailures on the mapping any failure fails the whole batch.
`error: true` makes the handler raise instead: a function error (Lambda's Errors metric) that
fails the whole batch, which BisectBatchOnFunctionError halves until the record is alone.
`work_ms` makes the handler wait that long for the record, as real work would.

`HANDLED` counts outcomes (`processed`, `poison`, `flaky`); async handlers run on the event loop,
so the counters are only touched from its thread.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from typing import Any

HANDLED: Counter[str] = Counter()
_FAILED_FLAKY: set[str] = set()
"""eventIDs of flaky records that failed once; the next delivery succeeds (and leaves the set)."""
MAX_WORK_SECONDS = 1.0


class BadRecord(Exception):
    """A record flagged `error: true`: the invocation fails with this error type."""


async def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Process the batch in order; return the sequence numbers of the records that failed."""
    failures = []
    for record in event["Records"]:
        outcome = await _process(record)
        HANDLED[outcome] += 1
        if outcome != "processed":
            failures.append({"itemIdentifier": _sequence_number(record)})
    return {"batchItemFailures": failures}


async def _process(record: dict[str, Any]) -> str:
    fields = _fields(record)
    work = fields.get("work_ms")
    if isinstance(work, int | float) and work > 0:
        await asyncio.sleep(min(work / 1000, MAX_WORK_SECONDS))
    if fields.get("error") is True:
        raise BadRecord(f"record {record.get('eventID')} cannot be processed")
    if fields.get("poison") is True:
        return "poison"
    if fields.get("flaky") is True:
        event_id = str(record.get("eventID", ""))
        if event_id not in _FAILED_FLAKY:
            _FAILED_FLAKY.add(event_id)
            return "flaky"
        _FAILED_FLAKY.discard(event_id)
    return "processed"


def _fields(record: dict[str, Any]) -> dict[str, Any]:
    """The record's payload as plain values: Kinesis JSON data, or a DynamoDB new image."""
    if "kinesis" in record:
        try:
            data = json.loads(base64.b64decode(record["kinesis"]["data"]))
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}
    image = record.get("dynamodb", {}).get("NewImage") or {}
    return {name: _plain(value) for name, value in image.items()}


def _plain(value: dict[str, Any]) -> Any:
    """A DynamoDB attribute value as a plain one (BOOL, N and S; others as given)."""
    if "BOOL" in value:
        return value["BOOL"]
    if "N" in value:
        number = float(value["N"])
        return int(number) if number.is_integer() else number
    return value.get("S", value)


def _sequence_number(record: dict[str, Any]) -> str:
    if "kinesis" in record:
        return str(record["kinesis"]["sequenceNumber"])
    return str(record["dynamodb"]["SequenceNumber"])


def snapshot() -> dict[str, int]:
    """A copy of the counters."""
    return dict(HANDLED)


def reset() -> None:
    """Start counting from zero."""
    HANDLED.clear()
    _FAILED_FLAKY.clear()

"""KPL-aggregated Kinesis records built with AWS's own aggregation module (`aws-kinesis-agg`, the
KPL's format), and handlers that see them as a Lambda function would."""

from __future__ import annotations

import base64
import threading
from typing import Any

from aws_kinesis_agg.aggregator import RecordAggregator
from aws_kinesis_agg.deaggregator import deaggregate_records

EVENTS: list[list[dict[str, Any]]] = []
"""Records per invocation, in invocation order."""
USER_RECORDS: list[list[str]] = []
"""Per invocation: the user records' data once a handler de-aggregated them (aws-kinesis-agg)."""
BEHAVIOUR: dict[str, Any] = {}
_lock = threading.Lock()


def reset() -> None:
    with _lock:
        EVENTS.clear()
        USER_RECORDS.clear()
        BEHAVIOUR.clear()


def aggregate(items: list[tuple[str, str]]) -> tuple[str, bytes]:
    """(partition key, data) user records as one KPL aggregate: (its partition key, its bytes)."""
    aggregator = RecordAggregator()
    for key, data in items:
        aggregator.add_user_record(key, data.encode())
    partition_key, _, data = aggregator.clear_and_get().get_contents()
    return partition_key, data


async def put_aggregate(kinesis: Any, arn: str, items: list[tuple[str, str]]) -> str:
    """PutRecord one aggregate of `items`; returns its sequence number."""
    partition_key, data = aggregate(items)
    stream = arn.rsplit("/", 1)[1]
    response = await kinesis.put_record(StreamName=stream, PartitionKey=partition_key, Data=data)
    return str(response["SequenceNumber"])


def data(record: dict[str, Any]) -> str:
    return base64.b64decode(record["kinesis"]["data"]).decode(errors="replace")


def _note(event: dict[str, Any]) -> list[dict[str, Any]]:
    records = event["Records"]
    with _lock:
        EVENTS.append(records)
    return records


def deaggregating(event: dict[str, Any], context: Any) -> None:
    """A Lambda handler for KPL producers: it de-aggregates the records itself, as AWS advises."""
    records = _note(event)
    users = [base64.b64decode(r["kinesis"]["data"]) for r in deaggregate_records(records)]
    with _lock:
        USER_RECORDS.append([u.decode() for u in users])


def fail_data(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Reports the records whose data is in `BEHAVIOUR['fail']` (each once) as batch item
    failures, naming each by `BEHAVIOUR['name_by']`: its `item` (extended sequence number) or
    its `aggregate` sequence number, as a handler unaware of sub-records would."""
    records = _note(event)
    failed = []
    with _lock:
        pending = BEHAVIOUR.setdefault("fail", set())
        for record in records:
            if data(record) in pending:
                pending.discard(data(record))
                failed.append(record)
    by_aggregate = BEHAVIOUR.get("name_by") == "aggregate"
    return {"batchItemFailures": [{"itemIdentifier": _name(r, by_aggregate)} for r in failed]}


def _name(record: dict[str, Any], by_aggregate: bool) -> str:
    kinesis = record["kinesis"]
    if by_aggregate or "subSequenceNumber" not in kinesis:
        return str(kinesis["sequenceNumber"])
    return f"{kinesis['sequenceNumber']}:{kinesis['subSequenceNumber']}"


def raise_on_data(event: dict[str, Any], context: Any) -> None:
    """Raises while a record's data is in `BEHAVIOUR['raise_on']`."""
    records = _note(event)
    if any(data(r) in BEHAVIOUR.get("raise_on", ()) for r in records):
        raise RuntimeError("asked to fail")

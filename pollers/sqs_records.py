"""SQS messages into Lambda's SQS event records, key for key (see aws-recorded/shapes.json)."""

from __future__ import annotations

import base64
from typing import Any

from sluiceway.router.records import SourceRecord

_STANDARD_ATTRIBUTES = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SenderId",
    "ApproximateFirstReceiveTimestamp",
)
# Lambda's own order for FIFO queues interleaves the FIFO attributes with the standard ones.
_FIFO_ATTRIBUTES = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SequenceNumber",
    "MessageGroupId",
    "SenderId",
    "MessageDeduplicationId",
    "ApproximateFirstReceiveTimestamp",
)
_OPTIONAL_ATTRIBUTES = ("AWSTraceHeader", "DeadLetterQueueSourceArn")


def _attributes(raw: dict[str, str], fifo: bool) -> dict[str, str]:
    names = _FIFO_ATTRIBUTES if fifo else _STANDARD_ATTRIBUTES
    out = {name: raw[name] for name in names if name in raw}
    for name in _OPTIONAL_ATTRIBUTES:
        if name in raw:
            out[name] = raw[name]
    return out


def _b64(value: bytes | str) -> str:
    if isinstance(value, str):
        value = value.encode()
    return base64.b64encode(value).decode("ascii")


def _message_attribute(raw: dict[str, Any]) -> dict[str, Any]:
    """Lambda's camelCase message attribute, with binary values base64-encoded."""
    out: dict[str, Any] = {}
    if "StringValue" in raw:
        out["stringValue"] = raw["StringValue"]
    if "BinaryValue" in raw:
        out["binaryValue"] = _b64(raw["BinaryValue"])
    out["stringListValues"] = list(raw.get("StringListValues", []))
    out["binaryListValues"] = [_b64(v) for v in raw.get("BinaryListValues", [])]
    out["dataType"] = raw["DataType"]
    return out


def to_lambda_record(
    message: dict[str, Any], *, queue_arn: str, region: str, fifo: bool
) -> dict[str, Any]:
    """One ReceiveMessage entry as the record Lambda puts in `event["Records"]`."""
    raw_attrs = message.get("MessageAttributes") or {}
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": _attributes(message.get("Attributes") or {}, fifo),
        "messageAttributes": {k: _message_attribute(v) for k, v in raw_attrs.items()},
    }
    # Recorded AWS events: a standard queue sends md5OfMessageAttributes as null when there are no
    # message attributes; a FIFO queue leaves the key out.
    if raw_attrs:
        record["md5OfMessageAttributes"] = message.get("MD5OfMessageAttributes")
    elif not fifo:
        record["md5OfMessageAttributes"] = None
    record["md5OfBody"] = message.get("MD5OfBody")
    record["eventSource"] = "aws:sqs"
    record["eventSourceARN"] = queue_arn
    record["awsRegion"] = region
    return record


def _payload_size(record: dict[str, Any]) -> int:
    """Approximate bytes the record adds to the event (body, attributes and Lambda's metadata)."""
    size = len(record["body"].encode()) + len(record["receiptHandle"]) + 400
    for name, attr in record["messageAttributes"].items():
        size += (
            len(name) + 64 + len(attr.get("stringValue") or "") + len(attr.get("binaryValue") or "")
        )
    return size


def to_source_record(
    message: dict[str, Any], *, queue_arn: str, region: str, fifo: bool
) -> SourceRecord:
    """Wrap a received message for the router: id, size, group and arrival time included."""
    event = to_lambda_record(message, queue_arn=queue_arn, region=region, fifo=fifo)
    attrs = event["attributes"]
    sent = attrs.get("SentTimestamp")
    return SourceRecord(
        event=event,
        item_id=event["messageId"],
        size=_payload_size(event),
        key=attrs.get("MessageGroupId"),
        arrival=int(sent) / 1000.0 if sent else 0.0,
        handle=message["ReceiptHandle"],
    )

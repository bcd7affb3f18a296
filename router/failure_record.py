"""The invocation record AWS sends to an on-failure destination, key for key (pure).

Streams get `KinesisBatchInfo` / `DDBStreamBatchInfo` describing the records given up on (not the
records themselves: the stream still holds them). Records dropped for their age carry no
`responseContext`, as recorded against AWS. S3 objects add `payload`, the invocation event as a JSON
string. SQS mappings (a destination beyond AWS) get `SQSBatchInfo` and always the `payload`, since
the message is deleted from its queue once the record is delivered.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

Condition = Literal["RetryAttemptsExhausted", "RecordAgeExceeded"]
RETRY_ATTEMPTS_EXHAUSTED: Condition = "RetryAttemptsExhausted"
RECORD_AGE_EXCEEDED: Condition = "RecordAgeExceeded"


@dataclass(frozen=True, slots=True)
class FailureContext:
    """What the record says about the last invocation of the records given up on."""

    condition: Condition
    function_arn: str
    invoke_count: int
    function_error: str | None = None
    """Lambda's X-Amz-Function-Error ("Unhandled") or None when the function returned normally."""
    invoked: bool = True
    """False for records dropped by age before any invocation reached the handler."""
    request_id: str = ""


def iso_millis(epoch: float) -> str:
    """2019-11-14T00:38:06.021Z, AWS's timestamp format in failure records."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def iso_seconds(epoch: float) -> str:
    """2019-11-14T00:38:06Z: DynamoDB's arrival times in failure records carry no milliseconds."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _request_context(context: FailureContext) -> dict[str, Any]:
    return {
        "requestId": context.request_id or str(uuid.uuid4()),
        "functionArn": context.function_arn,
        "condition": context.condition,
        "approximateInvokeCount": context.invoke_count,
    }


def _envelope(context: FailureContext, now: float) -> dict[str, Any]:
    record: dict[str, Any] = {"requestContext": _request_context(context)}
    if context.invoked:
        record["responseContext"] = {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": context.function_error,
        }
    record["version"] = "1.0"
    record["timestamp"] = iso_millis(now)
    return record


def _sequence(event: dict[str, Any]) -> str:
    if "kinesis" in event:
        return str(event["kinesis"]["sequenceNumber"])
    return str(event.get("dynamodb", {}).get("SequenceNumber", ""))


def stream_failure_record(
    events: list[dict[str, Any]],
    arrivals: list[float],
    *,
    shard_id: str,
    stream_arn: str,
    context: FailureContext,
    now: float,
) -> dict[str, Any]:
    """The record for stream `events` (in shard order) given up on together."""
    kinesis = events[0].get("eventSource") == "aws:kinesis"
    stamp = iso_millis if kinesis else iso_seconds
    record = _envelope(context, now)
    record["KinesisBatchInfo" if kinesis else "DDBStreamBatchInfo"] = {
        "shardId": shard_id,
        "startSequenceNumber": _sequence(events[0]),
        "endSequenceNumber": _sequence(events[-1]),
        "approximateArrivalOfFirstRecord": stamp(arrivals[0]),
        "approximateArrivalOfLastRecord": stamp(arrivals[-1]),
        "batchSize": len(events),
        "streamArn": stream_arn,
    }
    return record


def sqs_failure_record(
    event: dict[str, Any], *, queue_arn: str, context: FailureContext, now: float
) -> dict[str, Any]:
    """The record for one SQS message given up on; `payload` holds the message as Lambda sent it."""
    attributes = event.get("attributes", {})
    record = _envelope(context, now)
    record["SQSBatchInfo"] = {
        "queueArn": queue_arn,
        "messageId": event.get("messageId"),
        "approximateReceiveCount": int(attributes.get("ApproximateReceiveCount", "1")),
        "sentTimestamp": iso_millis(int(attributes.get("SentTimestamp", "0")) / 1000),
        "batchSize": 1,
    }
    record["payload"] = orjson.dumps({"Records": [event]}).decode()
    return record


def with_payload(record: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """The S3 object: the record plus the invocation event as a JSON string, keys sorted as AWS
    writes them."""
    full = {
        **record,
        "payload": record.get("payload") or orjson.dumps({"Records": events}).decode(),
    }
    return _sorted(full)


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    return value


def s3_key(mapping_uuid: str, shard_id: str, now: float) -> str:
    """aws/lambda/<ESM-UUID>/<shardID>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<Random UUID>."""
    moment = datetime.fromtimestamp(now, UTC)
    return (
        f"aws/lambda/{mapping_uuid}/{shard_id}/{moment:%Y/%m/%d}/"
        f"{moment:%Y-%m-%dT%H.%M.%S}-{uuid.uuid4()}"
    )


def mapping_uuid(mapping_name: str) -> str:
    """A stable stand-in for the ESM's UUID: the same mapping name always gives the same one."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sluiceway:mapping:{mapping_name}"))

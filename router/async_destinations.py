"""Where an asynchronous invocation's outcome goes: destinations and the dead-letter queue.

Destinations reuse the mapping destinations' sender (`Destination`: send until accepted, count
each refusal) and add what only asynchronous invocation has: EventBridge's "Lambda Function
Invocation Result" events, S3 objects under `aws/lambda/async/`, and a function, which gets the
record as an asynchronous invoke. The DLQ gets the original event, unchanged, with the
attributes RequestID, ErrorCode and ErrorMessage.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from sluiceway.config.sources import DestinationRef
from sluiceway.core import telemetry
from sluiceway.core.aws import AwsClients
from sluiceway.core.aws_retry import call_with_retry, error_code
from sluiceway.router.destinations import MAX_BACKOFF_SECONDS, DeliveryRejected, Destination

log = logging.getLogger(__name__)

RESULT_SOURCE = "lambda"
RESULT_DETAIL_TYPE = {
    "Success": "Lambda Function Invocation Result - Success",
    "RetriesExhausted": "Lambda Function Invocation Result - Failure",
    "EventAgeExceeded": "Lambda Function Invocation Result - Failure",
}
DLQ_MESSAGE_BYTES = 1024
"""ErrorMessage holds the first 1 KB of the error message."""

Enqueue = Callable[[str, bytes], Awaitable[bool]]
"""Queue an asynchronous invoke of a function declared here (name, payload); False when no
function of that name is declared."""


def async_s3_key(function_name: str, now: float) -> str:
    """aws/lambda/async/<function>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<Random UUID>."""
    moment = datetime.fromtimestamp(now, UTC)
    return (
        f"aws/lambda/async/{function_name}/{moment:%Y/%m/%d}/"
        f"{moment:%Y-%m-%dT%H.%M.%S}-{uuid.uuid4()}"
    )


class AsyncDestination(Destination):
    """An on-success or on-failure destination of one function's asynchronous invokes."""

    def __init__(
        self,
        ref: DestinationRef,
        clients: AwsClients,
        *,
        function_name: str,
        function_arn: str,
        enqueue: Enqueue,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        super().__init__(ref, clients, mapping_uuid=function_name, on_error=on_error)
        self._function_name = function_name
        self._function_arn = function_arn
        self._enqueue = enqueue

    async def _send_once(
        self, record: dict[str, Any], events: list[dict[str, Any]], shard_id: str, now: float
    ) -> None:
        kind = self.ref.kind
        if kind in ("sqs", "sns"):
            await super()._send_once(record, events, shard_id, now)
        elif kind == "s3":
            s3 = await self._clients.client("s3", region=self.ref.region)
            await s3.put_object(
                Bucket=self.ref.name,
                Key=async_s3_key(self._function_name, now),
                Body=orjson.dumps(record),
                ContentType="application/json",
            )
        elif kind == "events":
            await self._send_result_event(record)
        else:
            await self._invoke_function(record)

    async def _send_result_event(self, record: dict[str, Any]) -> None:
        condition = record["requestContext"]["condition"]
        events = await self._clients.client("events", region=self.ref.region)
        response = await events.put_events(
            Entries=[
                {
                    "Source": RESULT_SOURCE,
                    "DetailType": RESULT_DETAIL_TYPE[condition],
                    "Detail": orjson.dumps(record).decode(),
                    "Resources": [self.ref.arn, self._function_arn],
                    "EventBusName": self.ref.arn,
                }
            ]
        )
        if response.get("FailedEntryCount"):
            entry = (response.get("Entries") or [{}])[0]
            raise DeliveryRejected(
                f"PutEvents: {entry.get('ErrorCode')}: {entry.get('ErrorMessage')}"
            )

    async def _invoke_function(self, record: dict[str, Any]) -> None:
        """A function declared here gets a queued invoke; any other is Lambda's (Event invoke)."""
        payload = orjson.dumps(record)
        if await self._enqueue(self.ref.name, payload):
            return
        client = await self._clients.client("lambda", region=self.ref.region)
        response = await client.invoke(
            FunctionName=self.ref.arn, InvocationType="Event", Payload=payload
        )
        if response.get("StatusCode") != 202:
            raise DeliveryRejected(f"Invoke answered {response.get('StatusCode')}")


class DeadLetterQueue:
    """A function's DeadLetterConfig target: a standard SQS queue or SNS topic."""

    def __init__(
        self,
        ref: DestinationRef,
        clients: AwsClients,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.ref = ref
        self._clients = clients
        self._on_error = on_error
        self._queue_url: str | None = None

    async def deliver(self, body: bytes, request_id: str, message: str) -> None:
        """Send until accepted: the event as it came, with Lambda's three attributes."""
        with telemetry.destination_span(self.ref.arn, 1, "DeadLetter"):
            await call_with_retry(
                self._send_once,
                body.decode(errors="replace"),
                _attributes(request_id, message),
                retry_all=True,
                max_wait=MAX_BACKOFF_SECONDS,
                on_error=self._failed,
            )

    def _failed(self, exc: BaseException) -> None:
        log.warning("dead-letter queue %s refused delivery: %s", self.ref.arn, error_code(exc))
        if self._on_error is not None:
            self._on_error(exc)

    async def _send_once(self, body: str, attributes: dict[str, Any]) -> None:
        if self.ref.kind == "sns":
            sns = await self._clients.client("sns", region=self.ref.region)
            await sns.publish(TopicArn=self.ref.arn, Message=body, MessageAttributes=attributes)
            return
        sqs = await self._clients.client("sqs", region=self.ref.region)
        if self._queue_url is None:
            account = self.ref.arn.split(":")[4]
            response = await sqs.get_queue_url(
                QueueName=self.ref.name, QueueOwnerAWSAccountId=account
            )
            self._queue_url = str(response["QueueUrl"])
        try:
            await sqs.send_message(
                QueueUrl=self._queue_url, MessageBody=body, MessageAttributes=attributes
            )
        except Exception:
            self._queue_url = None
            raise


def _attributes(request_id: str, message: str) -> dict[str, Any]:
    truncated = message.encode()[:DLQ_MESSAGE_BYTES].decode(errors="ignore") or "Unknown"
    return {
        "RequestID": {"DataType": "String", "StringValue": request_id},
        "ErrorCode": {"DataType": "Number", "StringValue": "200"},
        "ErrorMessage": {"DataType": "String", "StringValue": truncated},
    }

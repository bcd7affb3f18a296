"""On-failure destinations: SQS, SNS, S3 and (beyond AWS) EventBridge, through the shared clients.

`deliver` returns only once the destination has accepted the record: callers advance checkpoints
(or delete messages) after it, so a destination that is down or missing holds the lane instead of
losing anything. Each failed attempt is counted (`destination_delivery_failures`) and retried with
backoff, for ever; every call is bounded by the clients' connect and read timeouts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
from sluiceway.config.mapping import MappingConfig
from sluiceway.config.sources import DestinationRef
from sluiceway.core import telemetry
from sluiceway.core.aws import AwsClients
from sluiceway.core.aws_retry import call_with_retry, error_code
from sluiceway.core.errors import SluicewayError
from sluiceway.core.stats import MappingStats
from sluiceway.router.failure_record import mapping_uuid, s3_key, with_payload

log = logging.getLogger(__name__)

EVENT_SOURCE = "sluiceway"
EVENT_DETAIL_TYPE = "Lambda event source mapping failure"
MAX_BACKOFF_SECONDS = 10.0


class DeliveryRejected(SluicewayError, RuntimeError):
    """The destination answered but did not take the record (e.g. PutEvents FailedEntryCount)."""


class Destination:
    """One mapping's on-failure destination."""

    def __init__(
        self,
        ref: DestinationRef,
        clients: AwsClients,
        *,
        mapping_uuid: str,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.ref = ref
        self._clients = clients
        self._mapping_uuid = mapping_uuid
        self._on_error = on_error
        self._queue_url: str | None = None

    async def deliver(
        self, record: dict[str, Any], events: list[dict[str, Any]], shard_id: str, now: float
    ) -> None:
        """Send until accepted; `events` are the records given up on (S3 writes them as payload)."""
        condition = record.get("requestContext", {}).get("condition")
        with telemetry.destination_span(self.ref.arn, len(events), condition):
            await call_with_retry(
                self._send_once,
                record,
                events,
                shard_id,
                now,
                retry_all=True,
                max_wait=MAX_BACKOFF_SECONDS,
                on_error=self._failed,
            )

    def _failed(self, exc: BaseException) -> None:
        log.warning("on-failure destination %s refused delivery: %s", self.ref.arn, error_code(exc))
        if self._on_error is not None:
            self._on_error(exc)

    async def _send_once(
        self, record: dict[str, Any], events: list[dict[str, Any]], shard_id: str, now: float
    ) -> None:
        kind = self.ref.kind
        if kind == "sqs":
            await self._send_sqs(record)
        elif kind == "sns":
            sns = await self._clients.client("sns", region=self.ref.region)
            await sns.publish(TopicArn=self.ref.arn, Message=_json(record))
        elif kind == "s3":
            s3 = await self._clients.client("s3", region=self.ref.region)
            await s3.put_object(
                Bucket=self.ref.name,
                Key=s3_key(self._mapping_uuid, shard_id, now),
                Body=_json(with_payload(record, events)).encode(),
                ContentType="application/json",
            )
        else:
            await self._send_events(record)

    async def _send_sqs(self, record: dict[str, Any]) -> None:
        sqs = await self._clients.client("sqs", region=self.ref.region)
        if self._queue_url is None:
            response = await sqs.get_queue_url(
                QueueName=self.ref.name, QueueOwnerAWSAccountId=self.ref.account
            )
            self._queue_url = str(response["QueueUrl"])
        try:
            await sqs.send_message(QueueUrl=self._queue_url, MessageBody=_json(record))
        except Exception:
            self._queue_url = None  # look the queue up again: it may have been re-created
            raise

    async def _send_events(self, record: dict[str, Any]) -> None:
        events = await self._clients.client("events", region=self.ref.region)
        response = await events.put_events(
            Entries=[
                {
                    "Source": EVENT_SOURCE,
                    "DetailType": EVENT_DETAIL_TYPE,
                    "Detail": _json(record),
                    "EventBusName": self.ref.arn,
                }
            ]
        )
        if response.get("FailedEntryCount"):
            entry = (response.get("Entries") or [{}])[0]
            raise DeliveryRejected(
                f"PutEvents: {entry.get('ErrorCode')}: {entry.get('ErrorMessage')}"
            )


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def build_destination(
    ref: DestinationRef | None,
    clients: AwsClients | None,
    *,
    mapping_uuid: str,
    on_error: Callable[[BaseException], None] | None = None,
) -> Destination | None:
    """A destination when the mapping names one and clients exist (tests may run without)."""
    if ref is None or clients is None:
        return None
    return Destination(ref, clients, mapping_uuid=mapping_uuid, on_error=on_error)


def mapping_destination(
    mapping: MappingConfig, clients: AwsClients | None, stats: MappingStats
) -> Destination | None:
    """The mapping's on-failure destination, counting refused deliveries in its stats."""

    def delivery_failed(_: BaseException) -> None:
        stats.destination_delivery_failures += 1

    return build_destination(
        mapping.on_failure_destination,
        clients,
        mapping_uuid=mapping_uuid(mapping.name),
        on_error=delivery_failed,
    )

"""On-failure destinations: SQS, SNS, S3 and (beyond AWS) EventBridge, through the shared clients.

`deliver` returns only once the destination has accepted the record: callers advance checkpoints
(or delete messages) after it, so a destination that is down or missing holds the lane instead of
losing anything. Each failed attempt is logged, counted (`destination_delivery_failures`) and
retried with backoff, for ever. An attempt has its own timeout (`attempt_timeout`, shorter than
the clients' read timeout, which botocore would also retry), so a destination that accepts
connections but never answers is noticed within seconds; while a record waits, the mapping's
`/status` says so (`waiting_on_destination`). The envelope of a failure record passes through the
known-secrets registry; its `payload` is the records as the handler got them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
from sluiceway.config.mapping import MappingConfig
from sluiceway.config.sources import DestinationRef
from sluiceway.core import telemetry
from sluiceway.core.aws import AwsClients
from sluiceway.core.aws_retry import call_with_retry, error_code
from sluiceway.core.errors import SluicewayError
from sluiceway.core.secrets import known_secrets
from sluiceway.core.stats import MappingStats
from sluiceway.router.failure_record import mapping_uuid, s3_key, with_payload

log = logging.getLogger(__name__)

EVENT_SOURCE = "sluiceway"
EVENT_DETAIL_TYPE = "Lambda event source mapping failure"
MAX_BACKOFF_SECONDS = 10.0
ATTEMPT_TIMEOUT_SECONDS = 10.0
"""Default limit on one delivery attempt (SLUICEWAY_DESTINATION_TIMEOUT_SECONDS)."""


class DeliveryRejected(SluicewayError, RuntimeError):
    """The destination answered but did not take the record (e.g. PutEvents FailedEntryCount)."""


class DeliveryStalled(SluicewayError, TimeoutError):
    """The destination did not answer one attempt within the attempt timeout."""


@dataclass
class Waiting:
    """One delivery the destination has not accepted yet."""

    since: float
    attempts: int = 0
    """Failed attempts so far."""
    last_error: str | None = None


class Destination:
    """One mapping's on-failure destination."""

    def __init__(
        self,
        ref: DestinationRef,
        clients: AwsClients,
        *,
        mapping_uuid: str,
        on_error: Callable[[BaseException], None] | None = None,
        attempt_timeout: float = ATTEMPT_TIMEOUT_SECONDS,
        on_waiting: Callable[[dict[str, object] | None], None] | None = None,
    ) -> None:
        self.ref = ref
        self._clients = clients
        self._mapping_uuid = mapping_uuid
        self._on_error = on_error
        self.attempt_timeout = attempt_timeout
        self._on_waiting = on_waiting
        """Told the oldest delivery still waiting (None once none is), for `/status`."""
        self._waiting: list[Waiting] = []
        self._queue_url: str | None = None

    async def deliver(
        self, record: dict[str, Any], events: list[dict[str, Any]], shard_id: str, now: float
    ) -> None:
        """Send until accepted; `events` are the records given up on (S3 writes them as payload)."""
        condition = record.get("requestContext", {}).get("condition")
        record = {
            k: v if k == "payload" else known_secrets.mask_value(v) for k, v in record.items()
        }
        waiting = Waiting(since=time.time())
        self._waiting.append(waiting)
        self._report()
        try:
            with telemetry.destination_span(self.ref.arn, len(events), condition):
                await call_with_retry(
                    self._attempt,
                    record,
                    events,
                    shard_id,
                    now,
                    retry_all=True,
                    max_wait=MAX_BACKOFF_SECONDS,
                    on_error=lambda exc: self._failed(exc, waiting),
                )
        finally:
            self._waiting.remove(waiting)
            self._report()

    async def _attempt(
        self, record: dict[str, Any], events: list[dict[str, Any]], shard_id: str, now: float
    ) -> None:
        """One send, cut when the destination does not answer within the attempt timeout."""
        try:
            with anyio.fail_after(self.attempt_timeout):
                await self._send_once(record, events, shard_id, now)
        except TimeoutError:
            self._queue_url = None  # a stalled connection may have been a stale endpoint too
            raise DeliveryStalled(f"no answer within {self.attempt_timeout:g}s") from None

    def _failed(self, exc: BaseException, waiting: Waiting) -> None:
        waiting.attempts += 1
        waiting.last_error = f"{error_code(exc)}: {exc}"
        if isinstance(exc, DeliveryStalled):
            log.warning(
                "on-failure destination %s stalled: %s (attempt %d); the records wait",
                self.ref.arn,
                exc,
                waiting.attempts,
            )
        else:
            log.warning(
                "on-failure destination %s refused delivery: %s (attempt %d)",
                self.ref.arn,
                error_code(exc),
                waiting.attempts,
            )
        self._report()
        if self._on_error is not None:
            self._on_error(exc)

    def _report(self) -> None:
        if self._on_waiting is None:
            return
        if not self._waiting:
            self._on_waiting(None)
            return
        oldest = self._waiting[0]
        self._on_waiting(
            {
                "arn": self.ref.arn,
                "since": oldest.since,
                "attempts": oldest.attempts,
                "last_error": oldest.last_error,
                "deliveries": len(self._waiting),
            }
        )

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


def mapping_destination(
    mapping: MappingConfig,
    clients: AwsClients | None,
    stats: MappingStats,
    attempt_timeout: float = ATTEMPT_TIMEOUT_SECONDS,
) -> Destination | None:
    """The mapping's on-failure destination (None without one, or without clients, as in some
    tests), counting failed attempts and showing waiting deliveries in its stats."""
    ref = mapping.on_failure_destination
    if ref is None or clients is None:
        return None

    def delivery_failed(_: BaseException) -> None:
        stats.destination_delivery_failures += 1

    def waiting(state: dict[str, object] | None) -> None:
        stats.waiting_on_destination = state

    return Destination(
        ref,
        clients,
        mapping_uuid=mapping_uuid(mapping.name),
        on_error=delivery_failed,
        attempt_timeout=attempt_timeout,
        on_waiting=waiting,
    )

"""`sluiceway redrive MAPPING`: give what a mapping gave up on another go, without losing any.

SQS mappings: messages in a DLQ (the source queue's redrive policy names it unless `--from`
does) go back to the source queue. With the whole queue to move, SQS's own StartMessageMoveTask
does it where the endpoint has it; otherwise (a `--max`, a FIFO queue, an endpoint without it)
each message is received, sent to the source queue and only then deleted, so a crash may repeat a
message but never loses one. A FIFO message keeps its group and its place in it, and gets a new
deduplication id: the source queue silently drops a send whose id it saw in the last five minutes
(the original send, an earlier redrive of the same message), which would lose it. From the
mapping's own on-failure destination queue (`SQSBatchInfo` records, beyond AWS), each record's
message is sent back as it was.

Stream mappings: see `sluiceway.app.redrive_streams`.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError
from sluiceway.config.mapping import MappingConfig
from sluiceway.config.settings import Settings
from sluiceway.config.sources import parse_source
from sluiceway.core.aws import AwsClients
from sluiceway.core.aws_retry import error_code
from sluiceway.core.errors import SluicewayError
from sluiceway.pollers.queue_info import QueueInfo, read_queue

Say = Callable[[str], None]
"""Where progress lines go (stdout for the command)."""

RECEIVE_VISIBILITY_SECONDS = 60
"""How long a received DLQ message stays hidden while it is sent on; after a crash it comes back."""
MOVE_TASK_POLL_SECONDS = 1.0


class RedriveError(SluicewayError, RuntimeError):
    """A redrive that cannot start (no such mapping, no DLQ, a destination that cannot be read)."""


@dataclass
class Tally:
    """What a redrive did; counts are messages (SQS) or records (streams)."""

    moved: int = 0
    reinvoked: int = 0
    failed_again: int = 0
    expired: int = 0
    skipped: int = 0
    """Failure records of another mapping or stream, left where they were."""

    @property
    def ok(self) -> bool:
        return self.failed_again == 0 and self.expired == 0

    def line(self, mapping: str, *, dry_run: bool = False) -> str:
        text = (
            f"redrive {mapping}{' (dry run)' if dry_run else ''}: moved {self.moved}, "
            f"re-invoked {self.reinvoked}, failed again {self.failed_again}, "
            f"expired {self.expired}"
        )
        return text + (f", skipped {self.skipped} (not this stream's)" if self.skipped else "")


@dataclass(frozen=True)
class RedriveOptions:
    mapping: str
    source: str | None = None
    """`--from`: a DLQ or destination ARN (or queue URL); default from the mapping."""
    limit: int | None = None
    """`--max`: messages (SQS) or failure records (streams) at most."""
    dry_run: bool = False


def find_mapping(settings: Settings, name: str) -> MappingConfig:
    mapping = settings.mappings.get(name.lower())
    if mapping is None:
        known = ", ".join(sorted(settings.mappings)) or "none"
        raise RedriveError(f"no mapping named {name!r} (configured: {known})")
    return mapping


async def redrive(settings: Settings, options: RedriveOptions, say: Say = print) -> Tally:
    """Run one redrive to its end and return the tally (progress goes to `say`)."""
    mapping = find_mapping(settings, options.mapping)
    tally = Tally()
    try:
        async with AwsClients(settings.aws_region) as clients:
            if mapping.kind == "sqs":
                await QueueMove(mapping, clients, options, say, tally).run()
            else:
                from sluiceway.app.redrive_streams import StreamRedrive

                await StreamRedrive(mapping, settings, clients, options, say, tally).run()
    except (ClientError, BotoCoreError) as exc:  # what AWS answered, as one line
        say(tally.line(mapping.name, dry_run=options.dry_run))
        raise RedriveError(f"redrive {mapping.name} stopped: {error_code(exc)}: {exc}") from None
    say(tally.line(mapping.name, dry_run=options.dry_run))
    return tally


def dead_letter_arn(queue: QueueInfo) -> str | None:
    if not queue.redrive_policy:
        return None
    policy = orjson.loads(queue.redrive_policy)
    return str(policy["deadLetterTargetArn"]) if policy.get("deadLetterTargetArn") else None


class QueueMove:
    """Messages from a DLQ (or the mapping's on-failure queue) back to an SQS mapping's queue."""

    def __init__(
        self,
        mapping: MappingConfig,
        clients: AwsClients,
        options: RedriveOptions,
        say: Say,
        tally: Tally,
    ) -> None:
        self.mapping = mapping
        self.clients = clients
        self.options = options
        self.say = say
        self.tally = tally

    async def run(self) -> None:
        sqs = await self.clients.client("sqs", region=self.mapping.source_ref.region)
        target = await read_queue(sqs, self.mapping.source_ref)
        named = self.options.source or dead_letter_arn(target)
        if named is None:
            raise RedriveError(
                f"queue {target.arn} has no redrive policy (no DLQ); name the queue to move "
                "messages from with --from"
            )
        try:
            ref = parse_source(named, self.clients.region)
        except ValueError as exc:
            raise RedriveError(f"--from {named}: {exc}") from None
        if ref.kind != "sqs":
            raise RedriveError(f"--from {named}: an SQS mapping is redriven from an SQS queue")
        dlq = await read_queue(sqs, ref)
        if dlq.arn == target.arn:
            raise RedriveError(f"--from {named} is the mapping's own source queue")
        destination = self.mapping.on_failure_destination
        unwrap = destination is not None and destination.arn == dlq.arn
        self.say(f"redrive {self.mapping.name}: messages from {dlq.arn} to {target.arn}")
        if self.options.dry_run:
            waiting = await _visible(sqs, dlq.url)
            self.say(f"  about {waiting} messages would move; nothing was moved")
            return
        whole = self.options.limit is None and not target.fifo and not unwrap
        if whole and await self._move_task(dlq, target):
            return
        await self._move_by_hand(sqs, dlq, target, unwrap=unwrap)

    async def _move_task(self, dlq: QueueInfo, target: QueueInfo) -> bool:
        """SQS moves the whole queue itself; False when this endpoint cannot (then by hand)."""
        config = AioConfig(connect_timeout=5, read_timeout=30, retries={"max_attempts": 1})
        async with get_session().create_client(
            "sqs", region_name=self.clients.region, config=config
        ) as sqs:
            try:
                await sqs.start_message_move_task(SourceArn=dlq.arn, DestinationArn=target.arn)
            except ClientError as exc:
                self.say(
                    f"  StartMessageMoveTask is not available here ({error_code(exc)}); "
                    "moving by receive, send and delete"
                )
                return False
            self.say("  SQS is moving the messages (StartMessageMoveTask)")
            while True:
                await anyio.sleep(MOVE_TASK_POLL_SECONDS)
                results = (await sqs.list_message_move_tasks(SourceArn=dlq.arn, MaxResults=1)).get(
                    "Results"
                ) or [{}]
                task = results[0]
                moved = int(task.get("ApproximateNumberOfMessagesMoved", 0))
                total = task.get("ApproximateNumberOfMessagesToMove", "?")
                self.say(f"  moved {moved} of {total}")
                status = task.get("Status")
                if status == "COMPLETED":
                    self.tally.moved += moved
                    return True
                if status in ("FAILED", "CANCELLED"):
                    self.tally.moved += moved
                    self.say(
                        f"  the move task ended {status}: {task.get('FailureReason', '')}; "
                        "moving the rest by hand"
                    )
                    return False

    async def _move_by_hand(
        self, sqs: Any, dlq: QueueInfo, target: QueueInfo, *, unwrap: bool
    ) -> None:
        limit = self.options.limit
        empty = 0
        while limit is None or self.tally.moved < limit:
            wanted = 10 if limit is None else min(10, limit - self.tally.moved)
            response = await sqs.receive_message(
                QueueUrl=dlq.url,
                MaxNumberOfMessages=wanted,
                WaitTimeSeconds=1,
                VisibilityTimeout=RECEIVE_VISIBILITY_SECONDS,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            )
            messages = response.get("Messages") or []
            if not messages:
                empty += 1
                if empty >= 2:  # a standard queue may answer empty once while holding some
                    break
                continue
            empty = 0
            entries = [outgoing(m, fifo=target.fifo, unwrap=unwrap) for m in messages]
            sent, refusal = await self._send(sqs, target, entries)
            if sent:
                await sqs.delete_message_batch(
                    QueueUrl=dlq.url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": messages[i]["ReceiptHandle"]} for i in sent
                    ],
                )
            self.tally.moved += len(sent)
            self.say(f"  moved {self.tally.moved}")
            if refusal is not None:
                raise RedriveError(
                    f"{target.arn} refused a message ({refusal}); {self.tally.moved} moved, "
                    f"the rest stay in {dlq.arn}"
                )

    @staticmethod
    async def _send(
        sqs: Any, target: QueueInfo, entries: list[dict[str, Any]]
    ) -> tuple[list[int], str | None]:
        """Send in order; the entries the source queue took, and why it refused one. A FIFO
        queue's messages go one at a time and stop at a refusal, so no later message of a
        group ever passes an earlier one."""
        if target.fifo:
            for index, entry in enumerate(entries):
                try:
                    await sqs.send_message(QueueUrl=target.url, **entry)
                except ClientError as exc:
                    reason = exc.response.get("Error", {}).get("Message", "")
                    return list(range(index)), f"{error_code(exc)}: {reason}"
            return list(range(len(entries))), None
        batch = [{"Id": str(i), **entry} for i, entry in enumerate(entries)]
        try:
            response = await sqs.send_message_batch(QueueUrl=target.url, Entries=batch)
        except ClientError as exc:  # the whole batch refused: nothing sent, nothing deleted
            return [], f"{error_code(exc)}: {exc.response.get('Error', {}).get('Message', '')}"
        sent = sorted(int(e["Id"]) for e in response.get("Successful", []))
        failed = response.get("Failed") or []
        return sent, (f"{failed[0].get('Code')}: {failed[0].get('Message')}" if failed else None)


async def _visible(sqs: Any, url: str) -> int:
    attributes = (
        await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    )["Attributes"]
    return int(attributes.get("ApproximateNumberOfMessages", 0))


def outgoing(message: dict[str, Any], *, fifo: bool, unwrap: bool) -> dict[str, Any]:
    """SendMessage parameters for a received message (or for the message a failure record
    carries): body, attributes, trace header, and for FIFO its group and a new dedup id."""
    body = message["Body"]
    attributes: dict[str, Any] = {
        name: _send_shape(value) for name, value in (message.get("MessageAttributes") or {}).items()
    }
    system = message.get("Attributes") or {}
    group = system.get("MessageGroupId")
    carried = carried_message(body) if unwrap else None
    if carried is not None:
        body, attributes, group = carried
    entry: dict[str, Any] = {"MessageBody": body}
    if attributes:
        entry["MessageAttributes"] = attributes
    if system.get("AWSTraceHeader"):
        entry["MessageSystemAttributes"] = {
            "AWSTraceHeader": {"DataType": "String", "StringValue": system["AWSTraceHeader"]}
        }
    if fifo:
        entry["MessageGroupId"] = group or "redrive"
        entry["MessageDeduplicationId"] = uuid.uuid4().hex
    return entry


def _send_shape(value: dict[str, Any]) -> dict[str, Any]:
    """A received message attribute as SendMessage takes it (no empty list fields)."""
    return {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}


def carried_message(body: str) -> tuple[str, dict[str, Any], str | None] | None:
    """(body, attributes, group) of the message an SQS failure record carries in its payload;
    None when `body` is not such a record."""
    try:
        record = orjson.loads(body)
        payload = record["payload"]
        event = (orjson.loads(payload) if isinstance(payload, str) else payload)["Records"][0]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return None
    if not isinstance(record, dict) or "SQSBatchInfo" not in record:
        return None
    attributes: dict[str, Any] = {}
    for name, value in (event.get("messageAttributes") or {}).items():
        shaped: dict[str, Any] = {"DataType": value["dataType"]}
        if value.get("stringValue") is not None:
            shaped["StringValue"] = value["stringValue"]
        elif value.get("binaryValue") is not None:
            shaped["BinaryValue"] = base64.b64decode(value["binaryValue"])
        attributes[name] = shaped
    group = (event.get("attributes") or {}).get("MessageGroupId")
    return str(event["body"]), attributes, group

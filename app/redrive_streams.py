"""`sluiceway redrive` for stream mappings: failure records back through the function.

A stream's on-failure record names a range of one shard (`shardId`, `startSequenceNumber`,
`endSequenceNumber`, `batchSize`), not the records. Each one found in the destination (an SQS
queue, or S3 objects under the mapping's prefix) is read back from the stream while it still
holds the range, and the mapping's function is invoked with those records in shard order, in
Lambda's event shape, through the mapping's own target, filter and response rules. The failure
record is deleted only after the function succeeded; one that fails again stays. With a
parallelization factor, the range holds other lanes' records too: only those of the failed lane
(the first record's) are invoked. A range the stream no longer holds is reported as expired;
an S3 object carries the records themselves, so those are re-invoked from it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson
from botocore.exceptions import ClientError
from sluiceway.app.redrive import RedriveError, RedriveOptions, Say, Tally
from sluiceway.app.service import build_invoker
from sluiceway.config.mapping import MappingConfig
from sluiceway.config.settings import Settings
from sluiceway.config.sources import DestinationRef, parse_destination
from sluiceway.core.aws import AwsClients
from sluiceway.core.aws_retry import call_with_retry, error_code
from sluiceway.core.stats import MappingStats
from sluiceway.handlers.loader import HandlerLoadError
from sluiceway.pollers.lanes import lane_for
from sluiceway.pollers.probes import STREAM_APIS
from sluiceway.pollers.shards import StartPosition
from sluiceway.pollers.stream import StreamApi
from sluiceway.router.failure_record import mapping_uuid
from sluiceway.router.outcomes import BatchSucceeded, PartialFailure
from sluiceway.router.records import SourceRecord
from sluiceway.router.runner import BatchRunner, build_runner

READ_BUDGET_SECONDS = 120.0
"""Longest time reading one range back may take (GetRecords calls, retries included)."""
QUIET_PAGES = 3
"""Empty pages in a row after which an open shard is taken to hold nothing more of a range."""
VISIBILITY_MARGIN_SECONDS = 60
"""Beyond the function timeout, how long a failure record being redriven stays hidden."""
_GONE = frozenset(
    {
        "ResourceNotFoundException",  # the stream or shard is gone
        "TrimmedDataAccessException",  # DynamoDB: past the 24 h retention
        "InvalidArgumentException",  # Kinesis: a sequence number the shard no longer has
    }
)


@dataclass
class FailureRecord:
    """One on-failure record as found, and how to delete it or leave it where it is."""

    where: str
    shard_id: str
    start: str
    end: str
    size: int
    stream_arn: str
    delete: Callable[[], Awaitable[None]]
    leave: Callable[[], None]
    payload: list[dict[str, Any]] = field(default_factory=list)
    """The records themselves (S3 objects carry them)."""

    @property
    def order(self) -> tuple[str, int]:
        return self.shard_id, int(self.start)


def parse_failure_record(text: str | bytes) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """(batch info, payload records) of a stream failure record; None for anything else."""
    try:
        record = orjson.loads(text)
        payload = record.get("payload") if isinstance(record, dict) else None
        if isinstance(payload, str):
            payload = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict):
        return None
    info = record.get("KinesisBatchInfo") or record.get("DDBStreamBatchInfo")
    if not isinstance(info, dict) or "startSequenceNumber" not in info:
        return None
    events = payload.get("Records", []) if isinstance(payload, dict) else []
    return info, list(events)


def failure_record(
    where: str,
    text: str | bytes,
    delete: Callable[[], Awaitable[None]],
    leave: Callable[[], None],
) -> FailureRecord | None:
    parsed = parse_failure_record(text)
    if parsed is None:
        return None
    info, events = parsed
    return FailureRecord(
        where=where,
        shard_id=str(info["shardId"]),
        start=str(info["startSequenceNumber"]),
        end=str(info["endSequenceNumber"]),
        size=int(info.get("batchSize", 0)),
        stream_arn=str(info.get("streamArn", "")),
        delete=delete,
        leave=leave,
        payload=list(events),
    )


class QueueFailures:
    """Failure records in an SQS queue. Each stays hidden while it is redriven; those left
    (failed again, expired, not this mapping's) are visible again when the redrive ends."""

    def __init__(self, clients: AwsClients, ref: DestinationRef, visibility: int) -> None:
        self._clients = clients
        self._ref = ref
        self._visibility = visibility
        self._left: list[str] = []
        self._url = ""
        self.foreign = 0
        """Messages that are not stream failure records."""

    async def pages(self) -> AsyncIterator[list[FailureRecord]]:
        sqs = await self._clients.client("sqs", region=self._ref.region)
        account = self._ref.arn.split(":")[4]
        self._url = (
            await sqs.get_queue_url(QueueName=self._ref.name, QueueOwnerAWSAccountId=account)
        )["QueueUrl"]
        empty = 0
        while empty < 2:  # a standard queue may answer empty once while holding some
            response = await sqs.receive_message(
                QueueUrl=self._url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                VisibilityTimeout=self._visibility,
            )
            messages = response.get("Messages") or []
            empty = 0 if messages else empty + 1
            page = []
            for message in messages:
                receipt = message["ReceiptHandle"]

                async def delete(receipt: str = receipt) -> None:
                    await sqs.delete_message(QueueUrl=self._url, ReceiptHandle=receipt)

                def leave(receipt: str = receipt) -> None:
                    self._left.append(receipt)

                found = failure_record(
                    f"message {message['MessageId']}", message["Body"], delete, leave
                )
                if found is None:
                    self.foreign += 1
                    leave()
                else:
                    page.append(found)
            if page:
                yield page

    async def close(self) -> None:
        if not self._left:
            return
        sqs = await self._clients.client("sqs", region=self._ref.region)
        for start in range(0, len(self._left), 10):
            chunk = self._left[start : start + 10]
            await sqs.change_message_visibility_batch(
                QueueUrl=self._url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": 0}
                    for i, r in enumerate(chunk)
                ],
            )
        self._left.clear()


class BucketFailures:
    """Failure records as S3 objects under the mapping's prefix (aws/lambda/<mapping UUID>/),
    in key order (per shard, by time); those left simply stay."""

    def __init__(self, clients: AwsClients, ref: DestinationRef, mapping_name: str) -> None:
        self._clients = clients
        self._bucket = ref.name
        self.prefix = f"aws/lambda/{mapping_uuid(mapping_name)}/"
        self.foreign = 0

    async def pages(self) -> AsyncIterator[list[FailureRecord]]:
        s3 = await self._clients.client("s3")  # a bucket ARN names no region
        params: dict[str, Any] = {"Bucket": self._bucket, "Prefix": self.prefix}
        while True:
            listing = await s3.list_objects_v2(**params)
            page = []
            for item in listing.get("Contents", []):
                key = item["Key"]
                response = await s3.get_object(Bucket=self._bucket, Key=key)
                async with response["Body"] as body:
                    text = await body.read()

                async def delete(key: str = key) -> None:
                    await s3.delete_object(Bucket=self._bucket, Key=key)

                found = failure_record(f"s3://{self._bucket}/{key}", text, delete, lambda: None)
                if found is None:
                    self.foreign += 1
                else:
                    page.append(found)
            if page:
                yield page
            token = listing.get("NextContinuationToken")
            if not listing.get("IsTruncated") or not token:
                return
            params["ContinuationToken"] = token

    async def close(self) -> None:
        return None


async def read_range(api: StreamApi, record: FailureRecord, lanes: int) -> list[SourceRecord]:
    """The records of a failure record's range still in the stream, in shard order (only the
    failed lane's, with a parallelization factor); [] when the stream no longer holds it."""
    start, end = int(record.start), int(record.end)
    position = StartPosition("AT_SEQUENCE_NUMBER", sequence=record.start)
    found: list[SourceRecord] = []
    with anyio.fail_after(READ_BUDGET_SECONDS):
        iterator = await call_with_retry(
            _iterator_or_none, api, record.shard_id, position, attempts=5, max_wait=2.0
        )
        quiet = 0
        while iterator is not None and quiet < QUIET_PAGES:
            page = await call_with_retry(
                api.get_records, record.shard_id, iterator, attempts=5, max_wait=2.0
            )
            for source_record, _ in page.records:
                sequence = int(source_record.item_id)
                if sequence > end:
                    iterator = None
                    break
                if sequence >= start:
                    found.append(source_record)
            else:
                iterator = page.next_iterator
                quiet = 0 if page.records or page.behind_ms else quiet + 1
                if iterator is not None:
                    await anyio.sleep(api.min_poll_interval)
    if lanes > 1 and found:
        lane = lane_for(found[0].key, lanes)
        found = [r for r in found if lane_for(r.key, lanes) == lane]
    return found


async def _iterator_or_none(api: StreamApi, shard_id: str, position: StartPosition) -> str | None:
    """None when the stream no longer holds the position (or the shard)."""
    try:
        return await api.get_iterator(shard_id, position)
    except ClientError as exc:
        if error_code(exc) in _GONE:
            return None
        raise


def from_payload(event: dict[str, Any]) -> SourceRecord:
    """A record an S3 failure object carries, as the router takes it."""
    if "kinesis" in event:
        sequence = str(event["kinesis"]["sequenceNumber"])
        key: str | None = event["kinesis"].get("partitionKey")
    else:
        sequence = str(event["dynamodb"]["SequenceNumber"])
        key = orjson.dumps(event["dynamodb"].get("Keys", {}), option=orjson.OPT_SORT_KEYS).decode()
    return SourceRecord(event=event, item_id=sequence, size=len(orjson.dumps(event)), key=key)


class StreamRedrive:
    """A stream mapping's failure records, back through its function."""

    def __init__(
        self,
        mapping: MappingConfig,
        settings: Settings,
        clients: AwsClients,
        options: RedriveOptions,
        say: Say,
        tally: Tally,
    ) -> None:
        self.mapping = mapping
        self.settings = settings
        self.clients = clients
        self.options = options
        self.say = say
        self.tally = tally

    def _destination(self) -> DestinationRef:
        if self.options.source:
            try:
                ref = parse_destination(self.options.source)
            except ValueError as exc:
                raise RedriveError(f"--from {self.options.source}: {exc}") from None
        else:
            found = self.mapping.on_failure_destination
            if found is None:
                raise RedriveError(
                    f"mapping {self.mapping.name} has no on-failure destination; name where its "
                    "failure records are with --from (an SQS queue or S3 bucket ARN)"
                )
            ref = found
        if ref.kind not in ("sqs", "s3"):
            raise RedriveError(
                f"failure records cannot be read back from {ref.arn}; redrive from an SQS queue "
                "or S3 bucket that receives them (--from)"
            )
        return ref

    async def run(self) -> None:
        ref = self._destination()
        api = STREAM_APIS[self.mapping.kind](self.clients, self.mapping)
        await api.resolve()
        self.say(f"redrive {self.mapping.name}: failure records in {ref.arn} of {api.stream_arn}")
        stats = MappingStats(mapping=self.mapping.name, kind=self.mapping.kind)
        invoker = build_invoker(self.mapping, self.settings, self.clients)
        runner = build_runner(self.mapping, invoker, stats, self.clients)
        visibility = int(self.mapping.function_timeout) + VISIBILITY_MARGIN_SECONDS
        failures: QueueFailures | BucketFailures = (
            QueueFailures(self.clients, ref, visibility)
            if ref.kind == "sqs"
            else BucketFailures(self.clients, ref, self.mapping.name)
        )
        done = 0
        try:
            if not self.options.dry_run:
                try:
                    await invoker.warm()
                except HandlerLoadError as exc:
                    raise RedriveError(
                        f"mapping {self.mapping.name}: the handler cannot be loaded "
                        f"({exc.error_type}: {exc}); nothing was redriven"
                    ) from None
            async for page in failures.pages():
                for record in sorted(page, key=lambda r: r.order):
                    if self.options.limit is not None and done >= self.options.limit:
                        record.leave()
                        continue
                    done += 1
                    await self._one(record, api, runner)
                if self.options.limit is not None and done >= self.options.limit:
                    break
        finally:
            with anyio.CancelScope(shield=True):
                await failures.close()
                await invoker.aclose()
        self.tally.skipped += failures.foreign

    async def _one(self, record: FailureRecord, api: StreamApi, runner: BatchRunner) -> None:
        what = f"  {record.where}: {record.shard_id} {record.start}..{record.end}"
        if record.stream_arn and record.stream_arn != api.stream_arn:
            self.tally.skipped += 1
            self.say(f"{what}: of another stream ({record.stream_arn}); left")
            record.leave()
            return
        records = await read_range(api, record, self.mapping.parallelization_factor)
        origin = "the stream"
        if not records and record.payload:
            records, origin = [from_payload(e) for e in record.payload], "the object's payload"
        expired = 0 if origin != "the stream" else max(0, record.size - len(records))
        if not records:
            self.tally.expired += record.size
            self.say(f"{what}: {record.size} records past the stream's retention; left")
            record.leave()
            return
        kept, _ = runner.apply_filter(records)
        note = f" ({expired} past retention)" if expired else ""
        if self.options.dry_run:
            self.say(f"{what}: would re-invoke {len(kept)} records from {origin}{note}")
            self.tally.expired += expired
            record.leave()
            return
        outcome = BatchSucceeded() if not kept else (await runner.invoke(kept))[0]
        if isinstance(outcome, BatchSucceeded):
            await record.delete()
            self.tally.reinvoked += len(kept)
            self.tally.expired += expired
            self.say(f"{what}: re-invoked {len(kept)} records from {origin}{note}; deleted")
            return
        self.tally.failed_again += len(kept)
        reason = (
            f"{len(outcome.failed_ids)} reported as failed"
            if isinstance(outcome, PartialFailure)
            else outcome.reason
        )
        self.say(f"{what}: failed again ({reason}); left")
        record.leave()

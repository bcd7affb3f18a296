"""Stream failure handling end to end against moto, through the production clients: retries,
bisect, partial batches, record age, on-failure destinations (SQS, SNS, S3, EventBridge), filters,
tumbling windows, and the SQS mapping's destination."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import sluiceway.pollers.stream
import sluiceway.pollers.stream_poller
import sluiceway.router.runner
from sluiceway.core.aws import AwsClients
from sluiceway.core.stats import MappingStats
from sluiceway.handlers.invoker import Invoker
from sluiceway.pollers.checkpoints import MemoryCheckpoints
from sluiceway.pollers.shards import TRIM_HORIZON, Shard, StartPosition
from sluiceway.pollers.stream import RecordsPage, ShardReader
from sluiceway.router.destinations import Destination
from sluiceway.router.failure_record import mapping_uuid
from sluiceway.router.records import SourceRecord
from sluiceway.router.retry_policy import FailurePolicy
from sluiceway.router.runner import BatchRunner, FailureHandling

from tests.support import failures, recording
from tests.support.recorded import SHAPES
from tests.support.sqs import drain, eventually, make_queue, running, send, settings_for, sqs_client
from tests.support.streams import aws_client, make_stream, make_table, put

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("moto_url", "recorder", "fast_retries")]

HANDLERS = "tests.support.failures"


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(sluiceway.router.runner, "RETRY_INITIAL_SECONDS", 0.05)
    monkeypatch.setattr(sluiceway.router.runner, "RETRY_MAX_SECONDS", 0.2)
    monkeypatch.setattr(sluiceway.pollers.stream, "WINDOW_GRACE_SECONDS", 0.3)
    failures.reset()
    yield
    failures.reset()


def mapping(source: str, handler: str, **fields: Any) -> dict[str, Any]:
    fields.setdefault("starting_position", "TRIM_HORIZON")
    return {"source": source, "handler": f"{HANDLERS}:{handler}", **fields}


def ordered_keys(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [(k, ordered_keys(v)) for k, v in value.items()]
    return []


async def queue_with_arn(sqs: Any, name: str) -> tuple[str, str]:
    url, _ = await make_queue(sqs, name)
    attrs = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return url, attrs["Attributes"]["QueueArn"]


async def received(sqs: Any, url: str, count: int, within: float = 20) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []

    async def enough() -> bool:
        got.extend(await drain(sqs, url))
        return len(got) >= count

    await eventually(enough, timeout=within, interval=0.2)
    return got


async def shard_checkpoint(store: MemoryCheckpoints, name: str, arn: str) -> str | None:
    shards = [k for (scope, k) in store._data if scope == f"{name}|{arn}"]
    return await store.get(f"{name}|{arn}", shards[0]) if shards else None


async def test_poison_batch_goes_to_the_sqs_destination_and_the_shard_moves_on() -> None:
    async with aws_client("kinesis") as kinesis, sqs_client() as sqs:
        dest_url, dest_arn = await queue_with_arn(sqs, "k-failed")
        arn = await make_stream(kinesis, "poison")
        sequences = await put(kinesis, arn, [("a", "r0"), ("a", "poison"), ("a", "r2")])
        store = MemoryCheckpoints()
        fields = {
            "maximum_retry_attempts": 1,
            "destination_config": {"on_failure": {"destination": dest_arn}},
        }
        settings = settings_for({"k": mapping(arn, "raise_on_poison", **fields)})
        async with running(settings, checkpoints=store) as service:
            (message,) = await received(sqs, dest_url, 1)
            later = await put(kinesis, arn, [("a", "r3")])
            await eventually(lambda: "r3" in failures.payloads())
            await eventually(lambda: _checkpoint_is(store, arn, later[0]))
            stats = service.registry.mappings["k"]
            assert (stats.destination_delivered, stats.dropped, stats.errors) == (3, 0, 2)
            assert stats.failed_invoke == 6 and stats.invoked == 7
    record = json.loads(message["Body"])
    assert ordered_keys(record) == ordered_keys(SHAPES["kinesis_onfailure_sqs_function_error"])
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2
    # The failed attempt's request id, so the record leads to that invocation's logs.
    assert record["requestContext"]["requestId"] == failures.REQUEST_IDS[1]
    assert record["requestContext"]["functionArn"] == (
        "arn:aws:lambda:us-east-1:123456789012:function:k"
    )
    assert record["responseContext"]["functionError"] == "Unhandled"
    info = record["KinesisBatchInfo"]
    assert info["shardId"] == "shardId-000000000000" and info["streamArn"] == arn
    assert (info["startSequenceNumber"], info["endSequenceNumber"]) == (sequences[0], sequences[2])
    assert info["batchSize"] == 3
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", info["approximateArrivalOfFirstRecord"]
    )
    assert failures.SIZES == [3, 3, 1]


def _checkpoint_is(store: MemoryCheckpoints, arn: str, sequence: str) -> bool:
    return any(v == sequence for (scope, _), v in store._data.items() if scope.endswith(arn))


async def test_bisect_isolates_the_poison_record() -> None:
    async with aws_client("kinesis") as kinesis, sqs_client() as sqs:
        dest_url, dest_arn = await queue_with_arn(sqs, "bisect-failed")
        arn = await make_stream(kinesis, "bisect")
        items = [("a", "poison" if i == 5 else f"r{i}") for i in range(8)]
        sequences = await put(kinesis, arn, items)
        fields = {
            "maximum_retry_attempts": 0,
            "bisect_batch_on_function_error": True,
            "destination_config": {"on_failure": {"destination": dest_arn}},
        }
        async with running(settings_for({"k": mapping(arn, "raise_on_poison", **fields)})):
            (message,) = await received(sqs, dest_url, 1)
            await eventually(lambda: sum(failures.SIZES) >= 22)
    # [8] fails; [0-3] ok; [4-7] fails; [4,5] fails; [4] ok; [5] fails, no retries; [6,7] ok
    assert failures.SIZES == [8, 4, 4, 2, 1, 1, 2]
    info = json.loads(message["Body"])["KinesisBatchInfo"]
    assert info["batchSize"] == 1 and info["startSequenceNumber"] == sequences[5]


async def test_partial_batch_checkpoints_at_the_failed_record_and_retries_from_it() -> None:
    async with aws_client("kinesis") as kinesis, sqs_client() as sqs:
        dest_url, dest_arn = await queue_with_arn(sqs, "partial-failed")
        arn = await make_stream(kinesis, "partial")
        sequences = await put(
            kinesis, arn, [("a", "poison" if i == 2 else f"r{i}") for i in range(5)]
        )
        store = MemoryCheckpoints()
        fields = {
            "maximum_retry_attempts": 1,
            "function_response_types": ["ReportBatchItemFailures"],
            "destination_config": {"on_failure": {"destination": dest_arn}},
        }
        settings = settings_for({"k": mapping(arn, "report_poison", **fields)})
        async with running(settings, checkpoints=store):
            (message,) = await received(sqs, dest_url, 1)
            await eventually(lambda: _checkpoint_is(store, arn, sequences[-1]))
    assert failures.SIZES == [5, 3]
    assert failures.payloads() == ["r0", "r1", "poison", "r3", "r4", "poison", "r3", "r4"]
    record = json.loads(message["Body"])
    assert ordered_keys(record) == ordered_keys(SHAPES["kinesis_onfailure_sqs_partial_batch"])
    assert record["responseContext"]["functionError"] is None
    info = record["KinesisBatchInfo"]
    assert (info["startSequenceNumber"], info["batchSize"]) == (sequences[2], 3)


async def test_partial_batch_with_bisect_splits_at_the_sequence_number() -> None:
    async with aws_client("kinesis") as kinesis, sqs_client() as sqs:
        dest_url, dest_arn = await queue_with_arn(sqs, "pb-failed")
        arn = await make_stream(kinesis, "partial-bisect")
        await put(kinesis, arn, [("a", "poison" if i == 2 else f"r{i}") for i in range(5)])
        fields = {
            "maximum_retry_attempts": 0,
            "bisect_batch_on_function_error": True,
            "function_response_types": ["ReportBatchItemFailures"],
            "destination_config": {"on_failure": {"destination": dest_arn}},
        }
        async with running(settings_for({"k": mapping(arn, "report_poison", **fields)})):
            (message,) = await received(sqs, dest_url, 1)
            await eventually(lambda: failures.payloads()[-2:] == ["r3", "r4"])
    # [5] -> split at the poison: [poison, r3, r4] -> bisect: [poison] gives up, [r3, r4] ok
    assert failures.SIZES == [5, 3, 1, 2]
    assert json.loads(message["Body"])["KinesisBatchInfo"]["batchSize"] == 1


async def test_sns_destination_gets_the_record_in_its_envelope() -> None:
    async with aws_client("kinesis") as kinesis, sqs_client() as sqs, aws_client("sns") as sns:
        inbox_url, inbox_arn = await queue_with_arn(sqs, "sns-inbox")
        topic = (await sns.create_topic(Name=f"failed-{time.time_ns()}"))["TopicArn"]
        await sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=inbox_arn)
        arn = await make_stream(kinesis, "sns")
        await put(kinesis, arn, [("a", "poison")])
        fields = {
            "maximum_retry_attempts": 0,
            "destination_config": {"on_failure": {"destination": topic}},
        }
        async with running(settings_for({"k": mapping(arn, "raise_on_poison", **fields)})) as svc:
            (message,) = await received(sqs, inbox_url, 1)
            assert svc.registry.mappings["k"].destination_delivered == 1
    envelope = json.loads(message["Body"])
    assert envelope["Type"] == "Notification" and envelope["TopicArn"] == topic
    record = json.loads(envelope["Message"])
    expected = SHAPES["kinesis_onfailure_sns_message"]["Message"]
    assert ordered_keys(record) == ordered_keys(expected)


async def test_s3_destination_writes_aws_key_layout_with_payload() -> None:
    bucket = f"failed-{time.time_ns()}"
    async with aws_client("kinesis") as kinesis, aws_client("s3") as s3:
        await s3.create_bucket(Bucket=bucket)
        arn = await make_stream(kinesis, "s3")
        await put(kinesis, arn, [("a", "poison")])
        fields = {
            "maximum_retry_attempts": 0,
            "destination_config": {"on_failure": {"destination": f"arn:aws:s3:::{bucket}"}},
        }
        async with running(settings_for({"k": mapping(arn, "raise_on_poison", **fields)})):

            async def written() -> bool:
                return bool((await s3.list_objects_v2(Bucket=bucket)).get("Contents"))

            await eventually(written)
        (obj,) = (await s3.list_objects_v2(Bucket=bucket))["Contents"]
        body = await (await s3.get_object(Bucket=bucket, Key=obj["Key"]))["Body"].read()
    pattern = (
        rf"aws/lambda/{mapping_uuid('k')}/shardId-000000000000/\d{{4}}/\d\d/\d\d/"
        r"\d{4}-\d\d-\d\dT\d\d\.\d\d\.\d\d-[0-9a-f-]{36}"
    )
    assert re.fullmatch(pattern, obj["Key"]), obj["Key"]
    record = json.loads(body)
    expected = SHAPES["kinesis_onfailure_s3_object"]
    assert list(record) == list(expected)
    assert isinstance(record["payload"], str)
    payload = json.loads(record["payload"])
    assert list(payload["Records"][0]) == list(expected["payload"]["Records"][0])
    assert payload == failures.EVENTS[0]


@pytest.mark.parametrize("handler", ["change_and_raise", "change_and_raise_async"])
async def test_a_handler_changing_its_event_changes_neither_the_retry_nor_the_destination(
    handler: str,
) -> None:
    bucket = f"changed-{time.time_ns()}"
    async with aws_client("kinesis") as kinesis, aws_client("s3") as s3:
        await s3.create_bucket(Bucket=bucket)
        arn = await make_stream(kinesis, "changes")
        await put(kinesis, arn, [("a", "first"), ("b", "x" * 20_000)])
        fields = {
            "maximum_retry_attempts": 1,
            "destination_config": {"on_failure": {"destination": f"arn:aws:s3:::{bucket}"}},
        }
        async with running(settings_for({"k": mapping(arn, handler, **fields)})):

            async def written() -> bool:
                return bool((await s3.list_objects_v2(Bucket=bucket)).get("Contents"))

            await eventually(written)
        (obj,) = (await s3.list_objects_v2(Bucket=bucket))["Contents"]
        body = await (await s3.get_object(Bucket=bucket, Key=obj["Key"]))["Body"].read()
    first, retry = (json.loads(snapshot) for snapshot in failures.SNAPSHOTS)
    assert retry == first  # the retried batch is the batch as read
    assert [failures._data(r) for r in first["Records"]] == ["first", "x" * 20_000]
    assert json.loads(json.loads(body)["payload"]) == first  # and so is the destination's


async def test_eventbridge_destination_puts_the_record_as_detail() -> None:
    async with aws_client("kinesis") as kinesis, sqs_client() as sqs, aws_client("events") as ev:
        inbox_url, inbox_arn = await queue_with_arn(sqs, "bus-inbox")
        bus = f"failures-{time.time_ns()}"
        bus_arn = (await ev.create_event_bus(Name=bus))["EventBusArn"]
        await ev.put_rule(Name="all", EventBusName=bus, EventPattern='{"source": ["sluiceway"]}')
        await ev.put_targets(Rule="all", EventBusName=bus, Targets=[{"Id": "q", "Arn": inbox_arn}])
        arn = await make_stream(kinesis, "bus")
        await put(kinesis, arn, [("a", "poison")])
        fields = {
            "maximum_retry_attempts": 0,
            "destination_config": {"on_failure": {"destination": bus_arn}},
        }
        async with running(settings_for({"k": mapping(arn, "raise_on_poison", **fields)})):
            (message,) = await received(sqs, inbox_url, 1)
    event = json.loads(message["Body"])
    assert event["source"] == "sluiceway"
    assert ordered_keys(event["detail"]) == ordered_keys(
        SHAPES["kinesis_onfailure_sqs_function_error"]
    )


async def test_unreachable_destination_holds_the_shard_until_it_appears() -> None:
    async with aws_client("kinesis") as kinesis, sqs_client() as sqs:
        name = f"late-{time.time_ns()}"
        dest_arn = f"arn:aws:sqs:us-east-1:123456789012:{name}"
        arn = await make_stream(kinesis, "late")
        sequences = await put(kinesis, arn, [("a", "poison"), ("b", "r1")])
        store = MemoryCheckpoints()
        fields = {
            "maximum_retry_attempts": 0,
            "batch_size": 1,
            "destination_config": {"on_failure": {"destination": dest_arn}},
        }
        settings = settings_for({"k": mapping(arn, "raise_on_poison", **fields)})
        async with running(settings, checkpoints=store) as service:
            stats = service.registry.mappings["k"]
            await eventually(lambda: stats.destination_delivery_failures >= 2)
            assert await shard_checkpoint(store, "k", arn) is None
            assert failures.payloads() == ["poison"]  # the lane waits: r1 is not read past it
            url = (await sqs.create_queue(QueueName=name))["QueueUrl"]
            (message,) = await received(sqs, url, 1)
            await eventually(lambda: _checkpoint_is(store, arn, sequences[-1]))
            assert stats.destination_delivered == 1 and stats.dropped == 0
    assert json.loads(message["Body"])["KinesisBatchInfo"]["startSequenceNumber"] == sequences[0]
    assert failures.payloads() == ["poison", "r1"]


async def test_without_destination_exhausted_records_are_dropped_and_counted() -> None:
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "drop")
        await put(kinesis, arn, [("a", "poison"), ("a", "r1")])
        fields = {"maximum_retry_attempts": 2, "batch_size": 1}
        async with running(settings_for({"k": mapping(arn, "raise_on_poison", **fields)})) as svc:
            await eventually(lambda: "r1" in failures.payloads())
            stats = svc.registry.mappings["k"]
            assert (stats.dropped, stats.destination_delivered, stats.errors) == (1, 0, 3)
    assert failures.payloads() == ["poison"] * 3 + ["r1"]


class OldStream:
    """A shard whose first records arrived long ago (no emulator can age a record on demand)."""

    stream_arn = "arn:aws:kinesis:us-east-1:123456789012:stream/old"
    min_poll_interval = 0.01

    def __init__(self, arrivals: list[float]) -> None:
        self.arrivals = arrivals

    async def resolve(self) -> None: ...

    async def list_shards(self) -> list[Shard]:
        return [Shard("shardId-000000000000", (), True)]

    async def get_iterator(self, shard_id: str, position: StartPosition) -> str:
        return "it"

    async def get_records(self, shard_id: str, iterator: str) -> RecordsPage:
        records = []
        for i, arrival in enumerate(self.arrivals):
            event = {
                "kinesis": {"sequenceNumber": str(100 + i), "data": "e30="},
                "eventSource": "aws:kinesis",
                "eventSourceARN": self.stream_arn,
            }
            records.append((SourceRecord(event, str(100 + i), 10, "k", arrival), str(100 + i)))
        return RecordsPage(records, None)


class Recorder(Invoker):
    def __init__(self) -> None:
        self.sizes: list[int] = []

    async def invoke(self, event: dict[str, Any]) -> Any:
        from sluiceway.handlers.results import Returned

        self.sizes.append(len(event["Records"]))
        return Returned(None)


async def test_records_past_their_age_go_to_the_destination_before_any_attempt() -> None:
    now = time.time()
    api = OldStream([now - 600, now - 300, now])
    store, invoker = MemoryCheckpoints(), Recorder()
    stats = MappingStats(mapping="k", kind="kinesis")
    async with sqs_client() as sqs, AwsClients("us-east-1") as clients:
        url, dest_arn = await queue_with_arn(sqs, "aged")
        from sluiceway.config.sources import parse_destination

        destination = Destination(
            parse_destination(dest_arn), clients, mapping_uuid=mapping_uuid("k")
        )
        reader = ShardReader(
            api=api,
            shard=Shard("shardId-000000000000", (), True),
            start=TRIM_HORIZON,
            scope="k",
            store=store,
            runner=BatchRunner(
                invoker=invoker,
                stats=stats,
                failures=FailureHandling(
                    policy=FailurePolicy(maximum_record_age_seconds=60),
                    destination=destination,
                    function_arn="arn:f",
                ),
            ),
            stats=stats,
            batch_size=10,
            window=0,
        )
        with anyio.fail_after(20):
            await reader.run()
        (message,) = await received(sqs, url, 1)
    assert invoker.sizes == [1]
    record = json.loads(message["Body"])
    assert ordered_keys(record) == ordered_keys(SHAPES["kinesis_onfailure_record_age_exceeded"])
    assert record["requestContext"]["condition"] == "RecordAgeExceeded"
    assert record["KinesisBatchInfo"]["batchSize"] == 2
    assert stats.destination_delivered == 2
    assert await store.get("k", "shardId-000000000000") == "SHARD_END"


async def test_filters_skip_records_and_still_checkpoint_them() -> None:
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "filter")
        items = [
            ("a", '{"type": "order", "n": 1}'),
            ("a", '{"type": "ping"}'),
            ("a", "not json"),
            ("a", '{"type": "order", "n": 2}'),
            ("a", '{"type": "ping"}'),
        ]
        sequences = await put(kinesis, arn, items)
        store = MemoryCheckpoints()
        pattern = json.dumps({"data": {"type": ["order"]}})
        fields = {"filter_criteria": {"Filters": [{"Pattern": pattern}]}}
        settings = settings_for({"k": mapping(arn, "raise_on_poison", **fields)})
        async with running(settings, checkpoints=store) as service:
            await eventually(lambda: _checkpoint_is(store, arn, sequences[-1]))
            stats = service.registry.mappings["k"]
            assert (stats.polled, stats.filtered_out, stats.invoked) == (5, 3, 2)
    assert failures.payloads() == ['{"type": "order", "n": 1}', '{"type": "order", "n": 2}']


async def test_dynamodb_filters_match_the_dynamodb_object() -> None:
    async with aws_client("dynamodb") as dynamodb:
        table_arn, stream_arn = await make_table(dynamodb, "filter")
        table = table_arn.rsplit("/", 1)[1]
        for i, kind in enumerate(["keep", "skip", "keep"]):
            await dynamodb.put_item(TableName=table, Item={"id": {"S": f"{kind}-{i}"}})
        pattern = json.dumps({"dynamodb": {"Keys": {"id": {"S": [{"prefix": "keep"}]}}}})
        fields = {"filter_criteria": {"Filters": [{"Pattern": pattern}]}}
        async with running(
            settings_for({"d": mapping(table_arn, "raise_on_poison", **fields)})
        ) as s:
            await eventually(lambda: s.registry.mappings["d"].filtered_out == 1)
            await eventually(lambda: len(failures.payloads()) == 2)
    assert all("keep" in p for p in failures.payloads())
    assert stream_arn


async def test_tumbling_window_carries_state_and_ends_with_a_final_invoke() -> None:
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "window")
        store = MemoryCheckpoints()
        fields = {"tumbling_window_in_seconds": 2, "batch_size": 1}
        settings = settings_for({"k": mapping(arn, "count_in_window", **fields)})
        async with running(settings, checkpoints=store):
            await anyio.sleep(0.3)
            await put(kinesis, arn, [("a", "r0"), ("a", "r1"), ("a", "r2")])

            def final() -> list[dict[str, Any]]:
                return [e for e in failures.EVENTS if e["isFinalInvokeForWindow"]]

            await eventually(lambda: bool(final()), timeout=10)
            windows = [e for e in failures.EVENTS if e["Records"]]
    first = windows[0]
    assert list(first) == [
        "Records",
        "window",
        "state",
        "shardId",
        "eventSourceARN",
        "isFinalInvokeForWindow",
        "isWindowTerminatedEarly",
    ]
    assert first["state"] == {} and first["shardId"] == "shardId-000000000000"
    assert first["eventSourceARN"] == arn and not first["isWindowTerminatedEarly"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", first["window"]["start"])
    # State flows from one invocation of a window to the next; the final invoke sees the total.
    by_window: dict[str, int] = {}
    for event in windows:
        start = event["window"]["start"]
        assert event["state"].get("count", 0) == by_window.get(start, 0)
        by_window[start] = by_window.get(start, 0) + len(event["Records"])
    (last,) = final()[:1]
    assert last["Records"] == [] and last["state"]["count"] == by_window[last["window"]["start"]]
    assert sum(by_window.values()) == 3
    assert not store._windows or all("count" in v for v in store._windows.values())


async def test_sqs_mapping_sends_exhausted_messages_to_its_destination() -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "src", visibility=1)
        dest_url, dest_arn = await queue_with_arn(sqs, "src-failed")
        await send(sqs, url, ["ok", "fail-me"])
        fields = {
            "source": url,
            "handler": "tests.support.recording:fail_bodies",
            "function_response_types": ["ReportBatchItemFailures"],
            "maximum_retry_attempts": 1,
            "destination_config": {"on_failure": {"destination": dest_arn}},
        }
        async with running(settings_for({"q": fields})) as service:
            (message,) = await received(sqs, dest_url, 1, within=30)
            stats = service.registry.mappings["q"]
            await eventually(lambda: stats.deleted == 2)
            assert stats.destination_delivered == 1
        visible, in_flight = 0, 0
        attrs = await sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        visible = int(attrs["Attributes"]["ApproximateNumberOfMessages"])
        in_flight = int(attrs["Attributes"]["ApproximateNumberOfMessagesNotVisible"])
    assert (visible, in_flight) == (0, 0)
    record = json.loads(message["Body"])
    assert list(record) == [
        "requestContext",
        "responseContext",
        "version",
        "timestamp",
        "SQSBatchInfo",
        "payload",
    ]
    assert record["SQSBatchInfo"]["approximateReceiveCount"] == 2
    assert record["responseContext"]["functionError"] is None
    attempts = [
        c
        for c, bodies in zip(recording.CONTEXTS, recording.BATCHES, strict=True)
        if "fail-me" in bodies
    ]
    assert record["requestContext"]["requestId"] == attempts[-1].aws_request_id
    assert json.loads(record["payload"])["Records"][0]["body"] == "fail-me"


async def test_window_state_over_one_megabyte_ends_the_window_early() -> None:
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "window-big")
        fields = {"tumbling_window_in_seconds": 600, "batch_size": 1}
        async with running(settings_for({"k": mapping(arn, "grow_state", **fields)})):
            await anyio.sleep(0.3)
            await put(kinesis, arn, [("a", "small"), ("a", "big"), ("a", "after")])
            await eventually(lambda: any(e["isWindowTerminatedEarly"] for e in failures.EVENTS))
            await eventually(lambda: "after" in failures.payloads())
    early = [e for e in failures.EVENTS if e["isWindowTerminatedEarly"]]
    assert early[0]["isFinalInvokeForWindow"] and early[0]["Records"] == []
    # The record after the early end starts again from empty state.
    after = next(
        e for e in failures.EVENTS if e["Records"] and "after" in failures._data(e["Records"][0])
    )
    assert after["state"] == {}


@pytest.mark.usefixtures("kinesalite")
async def test_a_window_closes_at_shard_end_and_the_children_start_fresh() -> None:
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "window-split")
        stream = arn.rsplit("/", 1)[1]
        fields = {"tumbling_window_in_seconds": 600}
        async with running(settings_for({"k": mapping(arn, "count_in_window", **fields)})):
            await put(kinesis, arn, [("a", "p0"), ("b", "p1")])
            await eventually(lambda: sum(failures.SIZES) >= 2)
            parent = (await kinesis.list_shards(StreamName=stream))["Shards"][0]["ShardId"]
            await kinesis.split_shard(
                StreamName=stream, ShardToSplit=parent, NewStartingHashKey=str(2**127)
            )
            await anyio.sleep(0.5)
            await put(kinesis, arn, [("a", "c0"), ("b", "c1")])
            await eventually(lambda: sum(failures.SIZES) >= 4, timeout=30)
    finals = [e for e in failures.EVENTS if e["isFinalInvokeForWindow"]]
    assert finals and finals[0]["shardId"] == parent
    assert finals[0]["state"]["count"] == 2
    child_events = [e for e in failures.EVENTS if e["Records"] and e["shardId"] != parent]
    assert child_events and all(e["state"].get("count", 0) < 2 for e in child_events)
    assert failures.EVENTS.index(finals[0]) < failures.EVENTS.index(child_events[0])

"""DynamoDB Streams mappings end to end against moto, through the production clients."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from sluiceway.app.check import run_checks
from sluiceway.pollers.checkpoints import MemoryCheckpoints

from tests.support import recording
from tests.support.recorded import SHAPES
from tests.support.sqs import eventually, running, settings_for
from tests.support.streams import (
    aws_client,
    make_stream,
    make_table,
    stream_mapping,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("moto_url", "recorder")]



def seen_count(n: int) -> Any:
    return lambda: len(recording.SEEN) >= n


async def test_insert_and_modify_match_aws_key_for_key() -> None:
    async with aws_client("dynamodb") as dynamodb:
        table_arn, stream_arn = await make_table(dynamodb, "shape")
        table = table_arn.rsplit("/", 1)[1]
        item = {"id": {"S": "hello world"}, "binary_key": {"B": b"foobar"}}
        await dynamodb.put_item(TableName=table, Item=item)
        await dynamodb.put_item(TableName=table, Item={**item, "id2": {"S": "id2_new_value"}})
        await dynamodb.delete_item(TableName=table, Key={"id": {"S": "hello world"}})
        # A table ARN means the table's latest stream.
        async with running(settings_for({"d": stream_mapping(table_arn)})) as service:
            await eventually(seen_count(3))
            assert service.registry.mappings["d"].polled == 3
    insert, modify, remove = recording.SEEN
    assert [r["eventName"] for r in recording.SEEN] == ["INSERT", "MODIFY", "REMOVE"]
    for record, shape in ((insert, "ddb_insert_record"), (modify, "ddb_modify_record")):
        expected = SHAPES[shape]
        assert list(record) == list(expected)
        assert list(record["dynamodb"]) == list(expected["dynamodb"])
        assert record["eventSourceARN"] == stream_arn
        assert record["eventSource"] == "aws:dynamodb" and record["awsRegion"] == "us-east-1"
        assert isinstance(record["dynamodb"]["ApproximateCreationDateTime"], float)
        assert record["dynamodb"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert insert["dynamodb"]["Keys"] == {"id": {"S": "hello world"}}
    assert insert["dynamodb"]["NewImage"]["binary_key"] == {"B": "Zm9vYmFy"}  # base64, as AWS
    assert modify["dynamodb"]["OldImage"]["binary_key"] == {"B": "Zm9vYmFy"}
    assert "NewImage" not in remove["dynamodb"] and "OldImage" in remove["dynamodb"]
    sequences = [int(r["dynamodb"]["SequenceNumber"]) for r in recording.SEEN]
    assert sequences == sorted(sequences)


async def test_latest_on_a_stream_arn_skips_what_came_before() -> None:
    async with aws_client("dynamodb") as dynamodb:
        table_arn, stream_arn = await make_table(dynamodb, "latest")
        table = table_arn.rsplit("/", 1)[1]
        await dynamodb.put_item(TableName=table, Item={"id": {"S": "old"}})
        settings = settings_for({"d": stream_mapping(stream_arn, starting_position="LATEST")})
        async with running(settings) as service:
            await eventually(lambda: service.registry.mappings["d"].concurrency_target > 0)
            await anyio.sleep(0.5)
            for i in range(3):
                await dynamodb.put_item(TableName=table, Item={"id": {"S": f"new-{i}"}})
            await eventually(seen_count(3))
            await anyio.sleep(0.3)
    assert [r["dynamodb"]["Keys"]["id"]["S"] for r in recording.SEEN] == [
        "new-0",
        "new-1",
        "new-2",
    ]


async def test_checkpoint_resumes_after_the_last_finished_change() -> None:
    async with aws_client("dynamodb") as dynamodb:
        table_arn, _ = await make_table(dynamodb, "resume")
        table = table_arn.rsplit("/", 1)[1]
        for i in range(4):
            await dynamodb.put_item(TableName=table, Item={"id": {"S": f"a-{i}"}})
        store = MemoryCheckpoints()
        settings = settings_for({"d": stream_mapping(table_arn, batch_size=2)})
        async with running(settings, checkpoints=store):
            await eventually(seen_count(4))
        for i in range(2):
            await dynamodb.put_item(TableName=table, Item={"id": {"S": f"b-{i}"}})
        async with running(settings, checkpoints=store):
            await eventually(seen_count(6))
            await anyio.sleep(0.3)
    keys = [r["dynamodb"]["Keys"]["id"]["S"] for r in recording.SEEN]
    assert keys == ["a-0", "a-1", "a-2", "a-3", "b-0", "b-1"]


async def test_order_per_item_with_parallelization() -> None:
    async with aws_client("dynamodb") as dynamodb:
        table_arn, _ = await make_table(dynamodb, "lanes")
        table = table_arn.rsplit("/", 1)[1]
        for version in range(5):
            for item in range(6):
                await dynamodb.put_item(
                    TableName=table,
                    Item={"id": {"S": f"item-{item}"}, "v": {"N": str(version)}},
                )
        fields = {"parallelization_factor": 4, "batch_size": 2, "handler_threads": 4}
        async with running(settings_for({"d": stream_mapping(table_arn, **fields)})):
            await eventually(seen_count(30))
    versions: dict[str, list[int]] = {}
    for record in recording.SEEN:
        image = record["dynamodb"]["NewImage"]
        versions.setdefault(image["id"]["S"], []).append(int(image["v"]["N"]))
    assert versions == {f"item-{i}": list(range(5)) for i in range(6)}


async def test_check_reaches_stream_sources() -> None:
    async with aws_client("dynamodb") as dynamodb, aws_client("kinesis") as kinesis:
        table_arn, stream_arn = await make_table(dynamodb, "check")
        kinesis_arn = await make_stream(kinesis, "check")
    settings = settings_for({"d": stream_mapping(table_arn), "k": stream_mapping(kinesis_arn)})
    results = {(r.mapping, r.what.split()[0]): r for r in await run_checks(settings)}
    assert results[("d", "source")].ok and stream_arn in results[("d", "source")].what
    assert results[("k", "source")].ok and "ACTIVE" in results[("k", "source")].detail

"""DynamoDB Streams mappings against DynamoDB Local, the local DynamoDB that AWS ships.

Its ARNs name the region `ddblocal` whatever region a caller used
(`arn:aws:dynamodb:ddblocal:000000000000:table/users/stream/2026-…`), and it keeps one database
per access key and region: a mapping names the table by that ARN and reaches it in AWS_REGION.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from aiobotocore.session import get_session
from sluiceway.app.check import run_checks

from tests.support import recording
from tests.support.recorded import SHAPES
from tests.support.sqs import eventually, running, settings_for
from tests.support.streams import make_table, stream_mapping

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("dynamodb_local", "recorder")]

REGION = "us-west-2"
"""The region the tables are made in, and so the one DynamoDB Local keeps them under."""


@contextlib.asynccontextmanager
async def local_dynamodb() -> AsyncIterator[Any]:
    async with get_session().create_client("dynamodb", region_name=REGION) as client:
        yield client


def by_mapping(name: str) -> list[dict[str, Any]]:
    """Records the mapping `name` delivered (its function name is the mapping's name)."""
    out: list[dict[str, Any]] = []
    for context, batch in zip(recording.CONTEXTS, _batches(), strict=True):
        if context.function_name == name:
            out.extend(batch)
    return out


def _batches() -> list[list[dict[str, Any]]]:
    """SEEN cut back into invocations, by the size of each recorded batch."""
    batches, start = [], 0
    for bodies in recording.BATCHES:
        batches.append(recording.SEEN[start : start + len(bodies)])
        start += len(bodies)
    return batches


async def test_a_stream_arn_and_a_table_arn_from_dynamodb_local_run_end_to_end() -> None:
    async with local_dynamodb() as dynamodb:
        table_arn, stream_arn = await make_table(dynamodb, "users")
        assert stream_arn.startswith("arn:aws:dynamodb:ddblocal:000000000000:table/")
        assert table_arn.startswith("arn:aws:dynamodb:ddblocal:")
        settings = settings_for(
            {"by_stream": stream_mapping(stream_arn), "by_table": stream_mapping(table_arn)},
            AWS_REGION=REGION,
        )
        table = table_arn.rsplit("/", 1)[1]
        item = {"id": {"S": "u1"}, "name": {"S": "Ada"}, "photo": {"B": b"\x89PNG"}}
        await dynamodb.put_item(TableName=table, Item=item)
        await dynamodb.put_item(TableName=table, Item={**item, "name": {"S": "Ada L."}})
        await dynamodb.delete_item(TableName=table, Key={"id": {"S": "u1"}})
        with anyio.fail_after(60):
            async with running(settings) as service:
                await eventually(lambda: len(recording.SEEN) >= 6, timeout=30)
                mappings = service.registry.mappings
                assert mappings["by_stream"].state == mappings["by_table"].state == "Enabled"
    for name in ("by_stream", "by_table"):
        records = by_mapping(name)
        assert [r["eventName"] for r in records] == ["INSERT", "MODIFY", "REMOVE"], name
        insert, modify, remove = records
        for record, shape in ((insert, "ddb_insert_record"), (modify, "ddb_modify_record")):
            expected = SHAPES[shape]  # recorded from a Lambda function behind real AWS
            assert list(record) == list(expected)
            assert list(record["dynamodb"]) == list(expected["dynamodb"])
            assert record["eventSourceARN"] == stream_arn
            assert record["eventSource"] == "aws:dynamodb"
            assert isinstance(record["dynamodb"]["ApproximateCreationDateTime"], float)
        assert insert["dynamodb"]["Keys"] == {"id": {"S": "u1"}}
        assert insert["dynamodb"]["NewImage"]["photo"] == {"B": "iVBORw=="}  # base64, as Lambda
        assert modify["dynamodb"]["OldImage"]["name"] == {"S": "Ada"}
        assert modify["dynamodb"]["NewImage"]["name"] == {"S": "Ada L."}
        assert "NewImage" not in remove["dynamodb"] and "OldImage" in remove["dynamodb"]


async def test_check_reaches_dynamodb_local_in_aws_region_and_explains_a_wrong_one() -> None:
    async with local_dynamodb() as dynamodb:
        table_arn, stream_arn = await make_table(dynamodb, "checked")
    mappings = {"by_stream": stream_mapping(stream_arn), "by_table": stream_mapping(table_arn)}
    with anyio.fail_after(60):
        results = await run_checks(settings_for(mappings, AWS_REGION=REGION))
    sources = [r for r in results if r.what.startswith("source")]
    assert len(sources) == 2 and all(r.ok for r in sources), [r.line() for r in sources]
    # Another AWS_REGION is another of DynamoDB Local's databases: check says so.
    with anyio.fail_after(60):
        results = await run_checks(settings_for(mappings, AWS_REGION="eu-central-1"))
    failed = [r for r in results if r.what.startswith("source")]
    assert failed and not any(r.ok for r in failed)
    assert all("AWS_REGION eu-central-1" in r.detail for r in failed)
    assert all("the region the table was created in" in r.detail for r in failed)

"""A source, destination, lease table or function is reached in the region its ARN names.

moto keeps regions apart, as AWS does: a queue made in us-east-1 does not exist in eu-west-1. Each
test runs with AWS_REGION=eu-west-1 and sources, destinations, a lease table and a Lambda function
in other regions, so a client made for the wrong region finds nothing.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import urllib.request
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import anyio
import boto3
import orjson
import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ClientError
from sluiceway.app.check import run_checks

from tests.support import recording
from tests.support.sqs import drain, eventually, make_queue, running, send, settings_for, unique
from tests.support.streams import make_stream, make_table, put, stream_mapping

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("moto_url", "recorder")]

HOME = "eu-west-1"
"""AWS_REGION in every test: the region no source below is in."""


@contextlib.asynccontextmanager
async def client(service: str, region: str) -> AsyncIterator[Any]:
    async with get_session().create_client(service, region_name=region) as made:
        yield made


async def queue_arn(sqs: Any, url: str) -> str:
    attributes = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attributes["Attributes"]["QueueArn"])


async def test_run_reads_each_source_and_sends_to_each_destination_in_its_own_region() -> None:
    async with (
        client("sqs", "us-east-1") as east,
        client("sqs", "us-west-2") as west,
        client("kinesis", "ap-southeast-2") as kinesis,
        client("dynamodb", "ca-central-1") as dynamodb,
    ):
        source_url, _ = await make_queue(east, "orders")
        failed_url, _ = await make_queue(west, "orders-failed")
        source, failed = await queue_arn(east, source_url), await queue_arn(west, failed_url)
        assert ":us-east-1:" in source and ":us-west-2:" in failed
        stream = await make_stream(kinesis, "clicks")
        table_arn, _ = await make_table(dynamodb, "users")
        leases = f"arn:aws:dynamodb:sa-east-1:123456789012:table/{unique('leases')}"
        settings = settings_for(
            {
                "orders": {
                    "source": source,
                    "handler": "tests.support.recording:fail_bodies",
                    "function_response_types": ["ReportBatchItemFailures"],
                    "maximum_retry_attempts": 0,
                    "destination_config": {"on_failure": {"destination": failed}},
                },
                "clicks": stream_mapping(stream),
                "users": stream_mapping(table_arn),
            },
            AWS_REGION=HOME,
            SLUICEWAY_CHECKPOINTS__BACKEND="dynamodb",
            SLUICEWAY_CHECKPOINTS__TABLE=leases,
        )
        await send(east, source_url, ["ok-1", "fail-2"])
        await put(kinesis, stream, [("k", "click-1")])
        await dynamodb.put_item(TableName=table_arn.rsplit("/", 1)[1], Item={"id": {"S": "u1"}})
        with anyio.fail_after(60):
            async with running(settings) as service:
                delivered: list[dict[str, Any]] = []

                async def failure_delivered() -> bool:
                    delivered.extend(await drain(west, failed_url))
                    return bool(delivered)

                await eventually(lambda: len(recording.SEEN) >= 4, timeout=30)
                await eventually(failure_delivered, timeout=30)
                stats = service.registry.mappings
                assert stats["orders"].deleted == 2  # one handled, one delivered then deleted
                assert all(stats[name].state == "Enabled" for name in stats)
        # the lease table was made in the region its ARN names, not in AWS_REGION
        async with client("dynamodb", "sa-east-1") as there, client("dynamodb", HOME) as here:
            name = leases.rsplit("/", 1)[1]
            assert (await there.describe_table(TableName=name))["Table"]["TableStatus"]
            with pytest.raises(ClientError, match="ResourceNotFound"):
                await here.describe_table(TableName=name)
    by_source = {r.get("eventSource"): r for r in recording.SEEN}
    assert by_source["aws:sqs"]["awsRegion"] == "us-east-1"
    assert by_source["aws:kinesis"]["awsRegion"] == "ap-southeast-2"
    # (moto writes awsRegion us-east-1 into every stream record; the stream is the table's)
    assert by_source["aws:dynamodb"]["eventSourceARN"].startswith(table_arn)
    assert ":ca-central-1:" in table_arn
    record = orjson.loads(delivered[0]["Body"])
    assert record["SQSBatchInfo"]["queueArn"] == source
    assert orjson.loads(record["payload"])["Records"][0]["body"] == "fail-2"


def _function(region: str) -> str:
    """A function in moto's simple Lambda backend (it answers with the payload), in `region`."""
    moto_url = os.environ["AWS_ENDPOINT_URL"]
    request = urllib.request.Request(
        f"{moto_url}/moto-api/config",
        data=json.dumps({"lambda": {"use_docker": False}}).encode(),
        method="POST",
    )
    urllib.request.urlopen(request, timeout=10).read()
    iam = boto3.client("iam", endpoint_url=moto_url, region_name="us-east-1")
    role_name = unique("regional-fn")
    policy = json.dumps({"Version": "2012-10-17"})
    role = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=policy)["Role"]["Arn"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("app.py", "def handler(event, context):\n    return event\n")
    lambda_client = boto3.client("lambda", endpoint_url=moto_url, region_name=region)
    created = lambda_client.create_function(
        FunctionName=unique("regional"),
        Runtime="python3.11",
        Role=role,
        Handler="app.handler",
        Code={"ZipFile": archive.getvalue()},
    )
    return str(created["FunctionArn"])


async def test_check_reaches_sources_destinations_and_functions_in_their_regions() -> None:
    async with client("sqs", "us-east-1") as east, client("sqs", "us-west-2") as west:
        source_url, _ = await make_queue(east, "checked")
        failed_url, _ = await make_queue(west, "checked-failed")
        source, failed = await queue_arn(east, source_url), await queue_arn(west, failed_url)
    async with client("kinesis", "ap-southeast-2") as kinesis:
        stream = await make_stream(kinesis, "checked")
    function = _function("ap-northeast-1")
    env = {
        "AWS_REGION": HOME,
        "SLUICEWAY_MAPPINGS__ORDERS__SOURCE": source,
        "SLUICEWAY_MAPPINGS__ORDERS__HANDLER": function,
        "SLUICEWAY_MAPPINGS__ORDERS__MAXIMUM_RETRY_ATTEMPTS": "2",
        "SLUICEWAY_MAPPINGS__ORDERS__DESTINATION_CONFIG__ON_FAILURE__DESTINATION": failed,
        "SLUICEWAY_MAPPINGS__CLICKS__SOURCE": stream,
        "SLUICEWAY_MAPPINGS__CLICKS__HANDLER": "sluiceway.handlers.examples.audit:handler",
        "SLUICEWAY_MAPPINGS__CLICKS__STARTING_POSITION": "LATEST",
    }
    # `sluiceway check` as a user runs it, with AWS_REGION naming none of these regions
    process_env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICEWAY_")}
    with anyio.fail_after(60):
        result = await anyio.run_process(
            [sys.executable, "-m", "sluiceway.app", "check"],
            env={**process_env, **env, "AWS_DEFAULT_REGION": HOME},
            check=False,
        )
    stdout = result.stdout.decode()
    assert result.returncode == 0, stdout + result.stderr.decode()
    assert stdout.count("ok  ") == 5, stdout  # two handlers, two sources, one destination
    assert "does not exist" not in stdout
    # and the same configuration with the queue named in AWS_REGION instead is not found there
    elsewhere = source.replace(":us-east-1:", f":{HOME}:")
    results = await run_checks(
        settings_for(
            {"orders": {"source": elsewhere, "handler": "tests.support.recording:record"}},
            AWS_REGION=HOME,
        )
    )
    assert not next(r for r in results if r.what.startswith("source")).ok

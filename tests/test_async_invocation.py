"""Asynchronous invocation as Lambda does it, against moto: Event invokes through boto3's
`lambda` client, invocation records to SQS, SNS and EventBridge destinations key for key as
recorded against AWS, retries (approximateInvokeCount 3), the DLQ's attributes, event-age
expiry and reserved concurrency 0."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiobotocore.session import get_session

from tests.support import async_handlers
from tests.support.recorded import ASYNC_FAILURE, ASYNC_SUCCESS
from tests.support.sqs import eventually, make_queue, sqs_client, unique
from tests.test_invoke_api import H, base_env, call, function_env, lambda_client, serving

pytestmark = pytest.mark.anyio

ISO_MILLIS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def queue_arn(sqs: Any, url: str) -> str:
    attrs = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attrs["Attributes"]["QueueArn"])


async def received(sqs: Any, url: str, count: int, wait: float = 15) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []

    async def enough() -> bool:
        for message in await drain_with_attributes(sqs, url):
            got.append(message)
        return len(got) >= count

    await eventually(enough, timeout=wait, interval=0.1)
    return got


async def drain_with_attributes(sqs: Any, url: str) -> list[dict[str, Any]]:
    response = await sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageAttributeNames=["All"]
    )
    messages = response.get("Messages") or []
    for message in messages:
        await sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return messages


def assert_shaped_like(record: dict[str, Any], recorded: dict[str, Any]) -> None:
    """Key for key (and in order) as AWS sends it, with values of the recorded types."""
    assert list(record) == list(recorded)
    assert list(record["requestContext"]) == list(recorded["requestContext"])
    assert list(record["responseContext"]) == list(recorded["responseContext"])
    assert record["version"] == "1.0"
    assert ISO_MILLIS.match(record["timestamp"])
    assert record["requestContext"]["functionArn"].endswith(":$LATEST")
    assert record["responseContext"]["statusCode"] == 200
    assert record["responseContext"]["executedVersion"] == "$LATEST"


async def test_success_and_failure_records_reach_sqs_destinations_and_the_dlq(
    tmp_path: Path, moto_url: str
) -> None:
    async with sqs_client() as sqs:
        success_url, _ = await make_queue(sqs, "on-success")
        failure_url, _ = await make_queue(sqs, "on-failure")
        dlq_url, _ = await make_queue(sqs, "dlq")
        env = base_env(tmp_path)
        env.update(
            function_env(
                "echo",
                handler=f"{H}:echo",
                destination_config__on_success__destination=await queue_arn(sqs, success_url),
            )
        )
        env.update(
            function_env(
                "fail",
                handler=f"{H}:fail",
                maximum_retry_attempts=2,
                destination_config__on_failure__destination=await queue_arn(sqs, failure_url),
                dead_letter_config__target_arn=await queue_arn(sqs, dlq_url),
            )
        )
        async with serving(env) as service:
            client = lambda_client(service)
            ok = await call(
                client, "invoke", FunctionName="echo", InvocationType="Event", Payload=b'{"n": 1}'
            )
            bad = await call(
                client,
                "invoke",
                FunctionName="fail",
                InvocationType="Event",
                Payload=b'{"raise_error": 1}',
            )
            success = json.loads((await received(sqs, success_url, 1))[0]["Body"])
            failure = json.loads((await received(sqs, failure_url, 1))[0]["Body"])
            dead = (await received(sqs, dlq_url, 1))[0]
            stats = service.registry.functions["fail"]
            assert stats.async_events_dropped == 0

    assert_shaped_like(success, ASYNC_SUCCESS)
    context = success["requestContext"]
    assert context["requestId"] == ok["ResponseMetadata"]["RequestId"]
    assert context["functionArn"] == "arn:aws:lambda:us-east-1:000000000000:function:echo:$LATEST"
    assert (context["condition"], context["approximateInvokeCount"]) == ("Success", 1)
    assert success["requestPayload"] == {"n": 1}
    assert success["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert success["responsePayload"]["echo"] == {"n": 1}

    assert_shaped_like(failure, ASYNC_FAILURE)
    request_id = bad["ResponseMetadata"]["RequestId"]
    context = failure["requestContext"]
    assert context["requestId"] == request_id
    assert (context["condition"], context["approximateInvokeCount"]) == ("RetriesExhausted", 3)
    assert async_handlers.CALLS[request_id] == 3  # the same request id in every attempt
    assert failure["requestPayload"] == {"raise_error": 1}
    assert failure["responseContext"]["functionError"] == "Unhandled"
    assert list(failure["responsePayload"]) == list(ASYNC_FAILURE["responsePayload"])
    assert failure["responsePayload"]["errorMessage"] == "Test exception (this is intentional)"
    assert failure["responsePayload"]["requestId"] == request_id

    assert dead["Body"] == '{"raise_error": 1}'
    attributes = dead["MessageAttributes"]
    assert attributes["RequestID"] == {"StringValue": request_id, "DataType": "String"}
    assert attributes["ErrorCode"] == {"StringValue": "200", "DataType": "Number"}
    assert attributes["ErrorMessage"] == {
        "StringValue": "Test exception (this is intentional)",
        "DataType": "String",
    }


async def test_retries_wait_the_configured_delays(tmp_path: Path, moto_url: str) -> None:
    env = base_env(tmp_path, SLUICEWAY_ASYNC__RETRY_DELAYS_SECONDS="[0.5, 1.0]")
    env.update(function_env("fail", handler=f"{H}:fail", maximum_retry_attempts=2))
    async with serving(env) as service:
        started = time.monotonic()
        response = await call(
            lambda_client(service),
            "invoke",
            FunctionName="fail",
            InvocationType="Event",
            Payload=b"{}",
        )
        request_id = response["ResponseMetadata"]["RequestId"]
        stats = service.registry.functions["fail"]
        await eventually(lambda: async_handlers.CALLS.get(request_id) == 2, timeout=10)
        second = time.monotonic() - started
        await eventually(lambda: async_handlers.CALLS.get(request_id) == 3, timeout=10)
        third = time.monotonic() - started
        await eventually(lambda: stats.async_events_dropped == 1, timeout=10)
    assert 0.5 <= second < 2.5  # upper bounds leave room for a loaded machine
    assert 1.5 <= third < 4.5


async def test_sns_and_eventbridge_destinations(tmp_path: Path, moto_url: str) -> None:
    session = get_session()
    async with (
        sqs_client() as sqs,
        session.create_client("sns", region_name="us-east-1") as sns,
        session.create_client("events", region_name="us-east-1") as events,
    ):
        from_sns, _ = await make_queue(sqs, "from-sns")
        from_bus, _ = await make_queue(sqs, "from-bus")
        topic = (await sns.create_topic(Name=unique("results")))["TopicArn"]
        await sns.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=await queue_arn(sqs, from_sns),
            Attributes={"RawMessageDelivery": "true"},
        )
        bus_name = unique("bus")
        bus = (await events.create_event_bus(Name=bus_name))["EventBusArn"]
        await events.put_rule(
            Name=unique("rule"),
            EventBusName=bus_name,
            EventPattern=json.dumps({"source": ["lambda"]}),
        )
        rules = (await events.list_rules(EventBusName=bus_name))["Rules"]
        await events.put_targets(
            Rule=rules[0]["Name"],
            EventBusName=bus_name,
            Targets=[{"Id": "q", "Arn": await queue_arn(sqs, from_bus)}],
        )
        env = base_env(tmp_path)
        env.update(
            function_env(
                "echo", handler=f"{H}:echo", destination_config__on_success__destination=topic
            )
        )
        env.update(
            function_env(
                "fail",
                handler=f"{H}:fail",
                maximum_retry_attempts=0,
                destination_config__on_failure__destination=bus,
            )
        )
        async with serving(env) as service:
            client = lambda_client(service)
            await call(
                client,
                "invoke",
                FunctionName="echo",
                InvocationType="Event",
                Payload=b'{"via": "sns"}',
            )
            await call(
                client,
                "invoke",
                FunctionName="fail",
                InvocationType="Event",
                Payload=b'{"via": "bus"}',
            )
            by_sns = json.loads((await received(sqs, from_sns, 1))[0]["Body"])
            by_bus = json.loads((await received(sqs, from_bus, 1))[0]["Body"])
    assert_shaped_like(by_sns, ASYNC_SUCCESS)
    assert by_sns["requestPayload"] == {"via": "sns"}
    assert by_bus["source"] == "lambda"
    assert by_bus["detail-type"] == "Lambda Function Invocation Result - Failure"
    detail = by_bus["detail"]
    assert_shaped_like(detail, ASYNC_FAILURE)
    assert (
        detail["requestContext"]["condition"],
        detail["requestContext"]["approximateInvokeCount"],
    ) == (
        "RetriesExhausted",
        1,
    )


async def test_an_event_past_its_maximum_age_is_given_up(tmp_path: Path, moto_url: str) -> None:
    """An event older than MAXIMUM_EVENT_AGE_IN_SECONDS, waiting in the queue file from an
    earlier run with one failed attempt, goes to the destination as EventAgeExceeded."""
    async with sqs_client() as sqs:
        failure_url, _ = await make_queue(sqs, "expired")
        env = base_env(tmp_path)
        env.update(
            function_env(
                "fail",
                handler=f"{H}:fail",
                maximum_event_age_in_seconds=60,
                destination_config__on_failure__destination=await queue_arn(sqs, failure_url),
            )
        )
        from sluiceway.pollers.async_queue import SqliteEventQueue
        from sluiceway.router.async_events import AsyncEvent

        last = {
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "responsePayload": {
                "errorMessage": "earlier",
                "errorType": "Exception",
                "requestId": "r-old",
                "stackTrace": [],
            },
        }
        old = AsyncEvent(
            "r-old", "fail", b'{"old": true}', time.time() - 61, attempts=1, last_response=last
        )
        queue = SqliteEventQueue(tmp_path / "sluiceway.db").open()
        await queue.put(old)
        await queue.close()
        async with serving(env) as service:
            record = json.loads((await received(sqs, failure_url, 1))[0]["Body"])
            assert "r-old" not in async_handlers.CALLS  # not invoked again
            assert service.registry.functions["fail"].invocations == 0
    assert_shaped_like(record, ASYNC_FAILURE)
    assert record["requestContext"]["condition"] == "EventAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert record["responsePayload"]["errorMessage"] == "earlier"
    with sqlite3.connect(tmp_path / "sluiceway.db") as db:
        assert db.execute("SELECT COUNT(*) FROM async_events").fetchone()[0] == 0


async def test_reserved_concurrency_zero_sends_events_straight_to_the_dlq(
    tmp_path: Path, moto_url: str
) -> None:
    async with sqs_client() as sqs:
        dlq_url, _ = await make_queue(sqs, "off-dlq")
        env = base_env(tmp_path)
        env.update(
            function_env(
                "off",
                handler=f"{H}:echo",
                reserved_concurrent_executions=0,
                dead_letter_config__target_arn=await queue_arn(sqs, dlq_url),
            )
        )
        async with serving(env) as service:
            await call(
                lambda_client(service),
                "invoke",
                FunctionName="off",
                InvocationType="Event",
                Payload=b'{"off": 1}',
            )
            dead = (await received(sqs, dlq_url, 1))[0]
            assert service.registry.functions["off"].invocations == 0
    assert dead["Body"] == '{"off": 1}'
    assert dead["MessageAttributes"]["ErrorCode"]["StringValue"] == "200"


async def test_a_destination_that_refuses_is_retried_and_counted(
    tmp_path: Path, moto_url: str
) -> None:
    """The destination queue does not exist at first: delivery is retried (and counted) until
    it does, and the event stays queued meanwhile."""
    async with sqs_client() as sqs:
        name = unique("late")
        arn = f"arn:aws:sqs:us-east-1:123456789012:{name}"
        env = base_env(tmp_path)
        env.update(
            function_env(
                "echo", handler=f"{H}:echo", destination_config__on_success__destination=arn
            )
        )
        async with serving(env) as service:
            await call(
                lambda_client(service),
                "invoke",
                FunctionName="echo",
                InvocationType="Event",
                Payload=b"{}",
            )
            stats = service.registry.functions["echo"]
            await eventually(lambda: stats.destination_delivery_failures >= 2, timeout=15)
            with sqlite3.connect(tmp_path / "sluiceway.db") as db:
                assert db.execute("SELECT COUNT(*) FROM async_events").fetchone()[0] == 1
            url = (await sqs.create_queue(QueueName=name))["QueueUrl"]
            assert len(await received(sqs, url, 1, wait=20)) == 1
            await anyio.sleep(0.2)
        with sqlite3.connect(tmp_path / "sluiceway.db") as db:
            assert db.execute("SELECT COUNT(*) FROM async_events").fetchone()[0] == 0


async def test_check_loads_declared_functions_and_reaches_their_destinations(
    tmp_path: Path, moto_url: str
) -> None:
    from sluiceway.app.check import run_checks
    from sluiceway.config import load_settings

    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "checked")
        env = {
            "AWS_REGION": "us-east-1",
            **function_env(
                "echo",
                handler=f"{H}:echo",
                destination_config__on_success__destination=await queue_arn(sqs, url),
                dead_letter_config__target_arn="arn:aws:sqs:us-east-1:123456789012:missing-dlq",
            ),
        }
        results = await run_checks(load_settings(env))
    lines = [r.line() for r in results]
    assert any(line.startswith("ok   function echo: handler") for line in lines), lines
    assert any(line.startswith("ok   function echo: on-success destination") for line in lines), (
        lines
    )
    assert any(line.startswith("FAIL function echo: dead-letter queue") for line in lines), lines


async def test_s3_and_function_destinations(tmp_path: Path, moto_url: str) -> None:
    """A failure record as an S3 object under aws/lambda/async/<function>/, and a success
    record as the event of another function's asynchronous invoke."""
    session = get_session()
    bucket = unique("failures").lower()
    async with session.create_client("s3", region_name="us-east-1") as s3:
        await s3.create_bucket(Bucket=bucket)
        env = base_env(tmp_path)
        env.update(
            function_env(
                "fail",
                handler=f"{H}:fail",
                maximum_retry_attempts=0,
                destination_config__on_failure__destination=f"arn:aws:s3:::{bucket}",
            )
        )
        env.update(
            function_env(
                "first",
                handler=f"{H}:echo",
                destination_config__on_success__destination=(
                    "arn:aws:lambda:us-east-1:000000000000:function:ticker"
                ),
            )
        )
        env.update(function_env("ticker", handler=f"{H}:tick"))
        async_handlers.TICKS.clear()
        async with serving(env) as service:
            client = lambda_client(service)
            await call(
                client, "invoke", FunctionName="fail", InvocationType="Event", Payload=b'{"s3": 1}'
            )
            await call(
                client,
                "invoke",
                FunctionName="first",
                InvocationType="Event",
                Payload=b'{"chain": 1}',
            )

            async def stored() -> list[dict[str, Any]]:
                return (await s3.list_objects_v2(Bucket=bucket)).get("Contents", [])

            async def one_object() -> bool:
                return len(await stored()) == 1

            await eventually(one_object, timeout=15)
            await eventually(lambda: len(async_handlers.TICKS) == 1, timeout=15)
            key = (await stored())[0]["Key"]
            body = await (await s3.get_object(Bucket=bucket, Key=key))["Body"].read()
    assert re.match(
        r"^aws/lambda/async/fail/\d{4}/\d\d/\d\d/\d{4}-\d\d-\d\dT\d\d\.\d\d\.\d\d-[0-9a-f-]{36}$",
        key,
    )
    record = json.loads(body)
    assert_shaped_like(record, ASYNC_FAILURE)
    assert record["requestPayload"] == {"s3": 1}
    chained, _, name = async_handlers.TICKS[0]
    assert name == "ticker"
    assert_shaped_like(chained, ASYNC_SUCCESS)
    assert chained["requestPayload"] == {"chain": 1}
    assert chained["requestContext"]["functionArn"].endswith(":function:first:$LATEST")


async def test_an_sns_dead_letter_topic_gets_the_event_and_its_attributes(
    tmp_path: Path, moto_url: str
) -> None:
    session = get_session()
    async with sqs_client() as sqs, session.create_client("sns", region_name="us-east-1") as sns:
        subscriber, _ = await make_queue(sqs, "dead-topic")
        topic = (await sns.create_topic(Name=unique("dead")))["TopicArn"]
        await sns.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=await queue_arn(sqs, subscriber),
            Attributes={"RawMessageDelivery": "true"},
        )
        env = base_env(tmp_path)
        env.update(
            function_env(
                "fail",
                handler=f"{H}:fail",
                maximum_retry_attempts=0,
                dead_letter_config__target_arn=topic,
            )
        )
        async with serving(env) as service:
            response = await call(
                lambda_client(service),
                "invoke",
                FunctionName="fail",
                InvocationType="Event",
                Payload=b'{"via": "topic"}',
            )
            dead = (await received(sqs, subscriber, 1))[0]
    assert dead["Body"] == '{"via": "topic"}'
    attributes = dead["MessageAttributes"]
    assert attributes["RequestID"]["StringValue"] == response["ResponseMetadata"]["RequestId"]
    assert attributes["ErrorCode"] == {"StringValue": "200", "DataType": "Number"}
    assert attributes["ErrorMessage"]["StringValue"] == "Test exception (this is intentional)"

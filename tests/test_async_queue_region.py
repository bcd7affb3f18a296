"""The SQS store of `Event` invokes is reached in its queue's own region, not the default one
(named by ARN or by an AWS queue URL; an emulator's localhost URL carries no region)."""

from __future__ import annotations

import time

import pytest
from aiobotocore.session import get_session
from sluiceway.core.aws import AwsClients
from sluiceway.pollers.async_queue import SqsEventQueue
from sluiceway.router.async_events import AsyncEvent
from sluiceway.router.async_runner import Finished

from tests.support.sqs import unique

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("named_by", ["arn", "url"])
async def test_events_go_through_the_queue_in_its_own_region(moto_url: str, named_by: str) -> None:
    async with get_session().create_client("sqs", region_name="eu-west-1") as sqs:
        url = (await sqs.create_queue(QueueName=unique("async-events")))["QueueUrl"]
        arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))[
            "Attributes"
        ]["QueueArn"]
        assert ":eu-west-1:" in arn
        async with AwsClients("us-east-1") as clients:  # the service's default region
            _, _, _, region, account, name = arn.split(":")
            aws_url = f"https://sqs.{region}.amazonaws.com/{account}/{name}"  # as AWS gives it
            queue = SqsEventQueue(arn if named_by == "arn" else aws_url, clients, "us-east-1", 30)
            await queue.start()
            event = AsyncEvent("req-1", "orders", b'{"n": 1}', time.time())
            await queue.put(event)
            (taken,) = await queue.take(10, 1)
            assert taken.request_id == "req-1" and taken.payload == b'{"n": 1}'
            await queue.settle(taken, Finished())
        attributes = await sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
    counts = attributes["Attributes"]
    assert counts["ApproximateNumberOfMessages"] == "0"
    assert counts["ApproximateNumberOfMessagesNotVisible"] == "0"  # settled: deleted

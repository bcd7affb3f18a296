"""Handler targets driven by a real SQS poller against moto: what the unit tests cannot show."""

from __future__ import annotations

import pytest
from sluiceway.handlers.examples import orders

from tests.support.rie import running_rie
from tests.support.sqs import (
    count_messages,
    eventually,
    make_queue,
    running,
    send,
    settings_for,
    sqs_client,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("moto_url")]


async def test_an_http_target_receives_lambda_events_and_its_success_deletes_them() -> None:
    async with running_rie() as rie, sqs_client() as sqs:
        url, _ = await make_queue(sqs, "http-target")
        await send(sqs, url, ["one", "two", "three"])
        async with running(settings_for({"q": {"source": url, "handler": rie.url}})):

            async def drained() -> bool:
                return await count_messages(sqs, url) == (0, 0)

            await eventually(drained, timeout=30)
    bodies = [r["body"] for event in rie.requests for r in event["Records"]]
    assert sorted(bodies) == ["one", "three", "two"]
    assert all(r["eventSource"] == "aws:sqs" for e in rie.requests for r in e["Records"])


async def test_a_process_isolated_handler_processes_and_reports_partial_failures() -> None:
    orders.reset()
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "isolated", visibility=30)
        await send(sqs, url, ['{"id": 1}', '{"id": 2, "poison": true}', '{"id": 3}'])
        mapping = {
            "source": url,
            "handler": "sluiceway.handlers.examples.orders:handler",
            "isolation": "process",
            "function_response_types": ["ReportBatchItemFailures"],
            "batch_size": 3,
            "function_timeout": 20,
        }
        async with running(settings_for({"q": mapping})) as service:
            stats = service.registry.mappings["q"]
            await eventually(lambda: stats.deleted == 2, timeout=60)
            assert await count_messages(sqs, url) == (0, 1)
    # The handler ran in a worker process: this process's module counters never moved.
    assert orders.processed_ids() == set()

"""An on-failure destination that accepts connections and never answers, in front of a real
`sluiceway run`: each attempt is cut after SLUICEWAY_DESTINATION_TIMEOUT_SECONDS, logged and
counted, `/status` shows the mapping waiting on it, the records stay unfinished (no checkpoint
moves past them), and once the destination answers they are delivered: nothing is lost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.fault_proxy import FaultProxy, FaultRates
from tests.support.service_process import service_env, sluiceway_run
from tests.support.sqs import drain, eventually, make_queue, sqs_client
from tests.support.streams import aws_client, make_stream, put

pytestmark = pytest.mark.anyio


async def test_a_stalled_destination_is_timed_out_shown_and_loses_nothing(
    moto_url: str, tmp_path: Path
) -> None:
    async with sqs_client() as sqs, aws_client("kinesis") as kinesis:
        failed_url, _ = await make_queue(sqs, "stalled-failed")
        failed_arn = (
            await sqs.get_queue_attributes(QueueUrl=failed_url, AttributeNames=["QueueArn"])
        )["Attributes"]["QueueArn"]
        stream_arn = await make_stream(kinesis, "stalled")
        sequences = await put(kinesis, stream_arn, [("k", f"r{i}") for i in range(3)])
        # The destination (SQS only) is reached through a proxy that reads each request and
        # never answers; the stream is read from the emulator directly.
        async with FaultProxy(moto_url, FaultRates(stall=1.0)) as proxy:
            env = service_env(
                moto_url,
                AWS_ENDPOINT_URL_SQS=proxy.url,
                SLUICEWAY_DESTINATION_TIMEOUT_SECONDS="1",
                SLUICEWAY_CHECKPOINTS__PATH=str(tmp_path / "checkpoints.db"),
                SLUICEWAY_MAPPINGS__CLICKS__SOURCE=stream_arn,
                SLUICEWAY_MAPPINGS__CLICKS__HANDLER="tests.handlers_fixtures.sync_handlers:boom",
                SLUICEWAY_MAPPINGS__CLICKS__STARTING_POSITION="TRIM_HORIZON",
                SLUICEWAY_MAPPINGS__CLICKS__MAXIMUM_RETRY_ATTEMPTS="0",
                SLUICEWAY_MAPPINGS__CLICKS__DESTINATION_CONFIG__ON_FAILURE__DESTINATION=failed_arn,
            )
            async with sluiceway_run(env) as service:

                def mapping() -> dict[str, Any]:
                    status, body = service.json("/status")
                    return body["clicks"] if status == 200 else {}

                await eventually(
                    lambda: (mapping().get("waiting_on_destination") or {}).get("attempts", 0) >= 2,
                    timeout=60,
                    interval=0.2,
                )
                stalled = mapping()
                waiting = stalled["waiting_on_destination"]
                assert waiting["arn"] == failed_arn and waiting["deliveries"] == 1
                assert waiting["last_error"] == "DeliveryStalled: no answer within 1s"
                assert stalled["destination_delivery_failures"] >= 2
                assert stalled["destination_delivered"] == 0
                (shard,) = stalled["shards"].values()
                assert shard["checkpoint"] is None  # nothing finished: the records stay unread
                metrics = service.get("/metrics")[1].decode()
                assert 'sluiceway_destination_delivery_failures_total{mapping="clicks"' in metrics
                assert proxy.counts["stall"] >= 2

                proxy.rates = FaultRates()  # the destination answers again

                def checkpointed() -> bool:
                    shards = mapping().get("shards") or {}
                    return [v.get("checkpoint") for v in shards.values()] == [sequences[-1]]

                await eventually(checkpointed, timeout=60, interval=0.2)
                delivered = mapping()
                assert delivered["destination_delivered"] == 3
                assert delivered["waiting_on_destination"] is None
                logs = service.logs()
        records = await drain(sqs, failed_url)
    stalls = [line for line in logs.splitlines() if "stalled: no answer within 1s" in line]
    assert len(stalls) >= 2, logs[-3000:]
    assert len(records) == 1
    batch = json.loads(records[0]["Body"])["KinesisBatchInfo"]
    assert (batch["startSequenceNumber"], batch["endSequenceNumber"], batch["batchSize"]) == (
        sequences[0],
        sequences[-1],
        3,
    )

"""`sluiceway status` against a running replica and its DynamoDB lease table (moto)."""

from __future__ import annotations

import pytest
from sluiceway.app.status import StatusReport, gather_status, render
from sluiceway.core.stats import MappingStats

from tests.support import recording
from tests.support.sqs import eventually, running, settings_for, unique
from tests.support.streams import aws_client, make_stream, put

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("moto_url", "recorder")]


async def test_status_shows_shards_owners_checkpoints_and_leases() -> None:
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "status", shards=2)
        await put(kinesis, arn, [("a", "one"), ("b", "two"), ("c", "three")])
        settings = settings_for(
            {
                "clicks": {
                    "source": arn,
                    "handler": "tests.support.recording:record_stream",
                    "starting_position": "TRIM_HORIZON",
                }
            },
            SLUICEWAY_HTTP__ENABLED="true",
            SLUICEWAY_HTTP__HOST="127.0.0.1",
            SLUICEWAY_HTTP__PORT="0",
            SLUICEWAY_CHECKPOINTS__BACKEND="dynamodb",
            SLUICEWAY_CHECKPOINTS__TABLE=unique("leases"),
            SLUICEWAY_CHECKPOINTS__LEASE_SECONDS="3",
        )
        async with running(settings) as service:
            await eventually(lambda: len(recording.SEEN) == 3, timeout=30)
            stats = service.registry.mappings["clicks"]
            await eventually(
                lambda: sum(1 for v in stats.shards.values() if v.get("checkpoint")) >= 1
            )
            # Lease expiry is judged from the scans after the leases were taken.
            await eventually(
                lambda: all(
                    v.get("lease_expires_in_seconds") is not None for v in stats.shards.values()
                ),
                timeout=15,
            )
            assert service.http is not None
            report = await gather_status(settings, f"http://127.0.0.1:{service.http.port}")

    assert report.service is not None and report.leases_error is None
    shards = report.service["clicks"]["shards"]
    assert len(shards) == 2
    assert all(view["read_here"] and view["owner"] for view in shards.values())
    assert all(0 <= view["lease_expires_in_seconds"] <= 3 for view in shards.values())
    assert {lease["shard"] for lease in report.leases} == set(shards)
    assert all(lease["owner"] and lease["counter"] > 0 for lease in report.leases)
    text = render(report)
    assert "lease table" in text and "clicks (kinesis): Enabled" in text
    for shard_id in shards:
        assert shard_id[-8:] in text


async def test_status_without_a_running_replica_says_so() -> None:
    settings = settings_for({}, SLUICEWAY_CHECKPOINTS__BACKEND="memory")
    report = await gather_status(settings, "http://127.0.0.1:9")
    assert not report.found_anything
    assert "not reachable" in render(report)


async def test_status_names_stuck_environments_and_a_destination_it_waits_on() -> None:
    stats = MappingStats("clicks", "kinesis", state="Enabled")
    stats.environments, stats.stuck_environments = 2, 1
    stats.waiting_on_destination = {
        "arn": "arn:aws:sqs:us-east-1:123456789012:failed",
        "since": 1_700_000_000.0,
        "attempts": 3,
        "last_error": "DeliveryStalled: no answer within 10s",
        "deliveries": 1,
    }
    text = render(StatusReport(url="http://replica", service={"clicks": stats.snapshot()}))
    assert "stuck: 1 of 2 execution environment(s)" in text
    assert (
        "waiting on arn:aws:sqs:us-east-1:123456789012:failed since 2023-11-14T22:13:20Z, "
        "3 failed attempt(s): DeliveryStalled: no answer within 10s"
    ) in text

"""The service behind a proxy that throttles, fails, resets, slows and stalls AWS calls: every
record is still handled or in the DLQ, the service never exits or stalls, and throughput comes
back once the faults stop. Every network await has a timeout, so a stalled call is cut."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from aiobotocore.session import get_session
from sluiceway.core.aws import CONNECT_TIMEOUT, LONG_POLL_POOL, AwsClients
from sluiceway.pollers import leases
from sluiceway.pollers.leases import LeaseTable

from tests.support import recording
from tests.support.fault_proxy import FaultProxy, FaultRates
from tests.support.sqs import drain, eventually, make_queue, running, send, settings_for, unique
from tests.support.streams import make_stream, put, stream_mapping

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("recorder")]

FAULTS = FaultRates(throttle=0.08, error_500=0.05, reset=0.04, slow=0.05, slow_seconds=0.3)


def client(service: str, url: str) -> Any:
    return get_session().create_client(service, region_name="us-east-1", endpoint_url=url)


def handled() -> set[str]:
    out = set()
    for record in recording.SEEN:
        if "kinesis" in record:
            out.add(base64.b64decode(record["kinesis"]["data"]).decode())
        else:
            out.add(record["body"])
    return out


async def test_faults_lose_nothing_and_throughput_recovers(
    moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    recording.BEHAVIOUR["fail_first_receive_only"] = False
    async with client("sqs", moto_url) as sqs, client("kinesis", moto_url) as kinesis:
        url, dlq = await make_queue(sqs, "faults", visibility=2, dlq_after=2)
        arn = await make_stream(kinesis, "faults", shards=2)
        bodies = [f"m{i}" for i in range(60)] + [f"fail-{i}" for i in range(5)]
        await send(sqs, url, bodies)
        stream_items = [(f"k{i % 4}", f"s{i}") for i in range(60)]
        await put(kinesis, arn, stream_items)
        async with FaultProxy(moto_url, FAULTS) as proxy:
            monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
            mappings = {
                "q": {
                    "source": url,
                    "handler": "tests.support.recording:fail_bodies",
                    "function_response_types": ["ReportBatchItemFailures"],
                },
                "k": stream_mapping(arn, handler="record_stream", batch_size=10),
            }
            settings = settings_for(
                mappings,
                SLUICEWAY_CHECKPOINTS__BACKEND="dynamodb",
                SLUICEWAY_CHECKPOINTS__TABLE=unique("fault-leases"),
                SLUICEWAY_CHECKPOINTS__LEASE_SECONDS="3",
            )
            wanted = {f"m{i}" for i in range(60)} | {d for _, d in stream_items}
            async with running(settings) as service:
                began = time.monotonic()
                await eventually(lambda: handled() >= wanted, timeout=120)
                under_faults = time.monotonic() - began
                dead: list[dict[str, Any]] = []

                async def dlq_has_all() -> bool:
                    assert dlq is not None
                    dead.extend(await drain(sqs, dlq))
                    return {m["Body"] for m in dead} >= {f"fail-{i}" for i in range(5)}

                await eventually(dlq_has_all, timeout=90, interval=0.5)
                injected = dict(proxy.counts)
                proxy.rates = FaultRates()  # faults stop
                more = [f"after-{i}" for i in range(30)]
                more_stream = [(f"k{i % 4}", f"after-s{i}") for i in range(30)]
                began = time.monotonic()
                await send(sqs, url, more)
                await put(kinesis, arn, more_stream)
                await eventually(
                    lambda: handled() >= set(more) | {d for _, d in more_stream}, timeout=60
                )
                recovered = time.monotonic() - began
                for stats in service.registry.mappings.values():
                    assert stats.state == "Enabled"
    print(
        f"\nfaults injected {injected}; 125 records + 5 to DLQ under faults in {under_faults:.1f}s; "
        f"60 records after the faults stopped in {recovered:.1f}s"
    )
    assert injected.get("throttle", 0) and injected.get("reset", 0) and injected.get("error_500", 0)


async def test_every_network_call_is_bounded_and_a_stalled_call_is_cut(
    moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with AwsClients("us-east-1") as clients:
        config = (await clients.client("kinesis")).meta.config
        assert config.connect_timeout == CONNECT_TIMEOUT and config.read_timeout
        async with FaultProxy(moto_url, FaultRates(stall=1.0)) as proxy:
            monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
            monkeypatch.setattr(leases, "CALL_TIMEOUT_SECONDS", 1.0)
            stalled = AwsClients("us-east-1")
            async with stalled:

                async def dynamodb() -> Any:
                    return await stalled.client("dynamodb")

                began = time.monotonic()
                with pytest.raises(TimeoutError):
                    await LeaseTable(dynamodb, unique("stalled")).list("scope")
                assert time.monotonic() - began < 10
            assert proxy.counts["stall"] >= 1


async def test_long_polls_have_a_connection_pool_of_their_own(moto_url: str) -> None:
    # Quiet queues' long polls each hold a connection for 20 s; deletes must never queue behind them.
    async with AwsClients("us-east-1") as clients:
        settling = await clients.client("sqs")
        polling = await clients.client("sqs", long_poll=True)
        assert polling is not settling
        assert polling is await clients.client("sqs", long_poll=True)
        assert polling.meta.config.max_pool_connections == LONG_POLL_POOL
        assert settling.meta.config.max_pool_connections == 100

"""How often quiet shards are polled, counted at a proxy in front of moto: the process-wide poll
budget spreads quiet shards' GetRecords calls, and a mapping's poll interval slows every call."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from tests.support.fault_proxy import FaultProxy
from tests.support.sqs import eventually, running, settings_for
from tests.support.streams import aws_client, make_stream, stream_mapping

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("recorder")]

GET_RECORDS = "Kinesis_20131202.GetRecords"
QUIET_SECONDS = 3.0


async def quiet_get_records(
    moto_url: str, monkeypatch: pytest.MonkeyPatch, shards: int, fields: dict[str, Any], **top: str
) -> int:
    """GetRecords calls over QUIET_SECONDS once every shard of an empty stream has a reader."""
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, f"quiet-{shards}-{len(fields)}-{len(top)}", shards)
    async with FaultProxy(moto_url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        settings = settings_for({"k": stream_mapping(arn, **fields)}, **top)
        async with running(settings):
            await eventually(lambda: proxy.operations[GET_RECORDS] >= shards)
            await anyio.sleep(1.0)  # past every reader's first quiet wait
            before = proxy.operations[GET_RECORDS]
            await anyio.sleep(QUIET_SECONDS)
            return proxy.operations[GET_RECORDS] - before


async def test_one_quiet_shard_is_polled_five_times_a_second(
    moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = await quiet_get_records(moto_url, monkeypatch, 1, {})
    assert calls >= 3 * QUIET_SECONDS  # the API's floor of 200 ms, not Lambda's second


async def test_a_mappings_poll_interval_slows_every_shard(
    moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = await quiet_get_records(moto_url, monkeypatch, 1, {"poll_interval_seconds": 1})
    assert calls <= QUIET_SECONDS + 1


async def test_many_quiet_shards_share_the_process_poll_budget(
    moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 40 shards at a budget of 10 calls a second, on a mapping that lets quiet shards wait up to
    # 10 s: each shard about every 4 s, where polling each once a second (Lambda's bound, the
    # default) or at the floor would make 40 to 200 calls a second.
    calls = await quiet_get_records(
        moto_url,
        monkeypatch,
        40,
        {"idle_poll_max_seconds": 10},
        SLUICEWAY_IDLE_POLLS_PER_SECOND="10",
    )
    assert calls <= 2 * 10 * QUIET_SECONDS


async def test_by_default_every_quiet_shard_is_polled_at_least_once_a_second(
    moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same 40 shards and budget, with Lambda's bound: the bound wins over the budget.
    calls = await quiet_get_records(
        moto_url, monkeypatch, 40, {}, SLUICEWAY_IDLE_POLLS_PER_SECOND="10"
    )
    assert calls >= 40 * QUIET_SECONDS

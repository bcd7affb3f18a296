"""Cheaper paths through the hot code give the same answers as the general ones they skip."""

from __future__ import annotations

from datetime import UTC

import pytest
from botocore.exceptions import ClientError
from botocore.utils import parse_timestamp
from pydantic import ValidationError
from sluiceway.config.filter_patterns import compile_filter_criteria
from sluiceway.config.mapping import MappingConfig
from sluiceway.core.aws_retry import call_with_retry
from sluiceway.handlers.invoker import PythonInvoker
from sluiceway.pollers.kinesis import epoch_timestamp
from sluiceway.pollers.lanes import ShardProgress

STREAM = "arn:aws:kinesis:us-east-1:000000000000:stream/s"
QUEUE = "arn:aws:sqs:us-east-1:000000000000:q"


@pytest.mark.parametrize("value", [1700000000.123456, 1700000000, "2024-01-02T03:04:05Z"])
def test_epoch_timestamps_are_the_instants_botocore_parses(value: object) -> None:
    fast, slow = epoch_timestamp(value), parse_timestamp(value)
    assert fast == slow and fast.timestamp() == slow.timestamp()
    if not isinstance(value, str):
        assert fast.tzinfo is UTC


def test_a_page_gets_consecutive_positions_like_single_adds() -> None:
    one, page = ShardProgress(), ShardProgress()
    checkpoints = ["1", "2:0", "2"]
    singles = [one.add(checkpoint) for checkpoint in checkpoints]
    first = page.add_many(checkpoints)
    assert list(range(first, first + 3)) == singles
    assert page.last_read == one.last_read == "2"
    assert page.finish([first, first + 1]) == "2:0"
    assert page.finish([first + 2]) == "2"
    assert page.add_many([]) == first + 3


@pytest.mark.anyio
async def test_a_permanent_error_is_raised_after_one_call_and_reported_once_when_retried() -> None:
    calls: list[int] = []
    errors: list[BaseException] = []
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "Op")

    async def refused() -> None:
        calls.append(1)
        raise denied

    with pytest.raises(ClientError):
        await call_with_retry(refused, on_error=errors.append)
    assert calls == [1] and errors == []

    async def once() -> str:
        calls.append(1)
        if len(calls) == 2:
            raise denied
        return "ok"

    assert (
        await call_with_retry(once, retry_all=True, max_wait=0.01, on_error=errors.append) == "ok"
    )
    assert len(calls) == 3 and errors == [denied]


def test_scalar_and_array_leaves_still_match_as_before() -> None:
    criteria = {"Filters": [{"Pattern": '{"body": {"kind": ["order"], "n": [{"exists": false}]}}'}]}
    matches = compile_filter_criteria(criteria, "sqs").matches  # type: ignore[union-attr]
    assert matches({"body": '{"kind": "order"}'})
    assert matches({"body": ' {"kind": ["x", "order"]}'})
    assert not matches({"body": '{"kind": "order", "n": 1}'})
    assert not matches({"body": '{"kind": {"a": 1}}'})
    assert not matches({"body": "kind order"})


@pytest.mark.anyio
async def test_a_sync_handler_has_room_only_while_a_thread_is_free() -> None:
    invoker = PythonInvoker("bench.handlers:noop")
    assert invoker.has_room()  # not loaded yet: cannot tell, so it does not hold pollers back
    await invoker.warm()
    assert invoker.has_room()
    async with invoker._environments.reserve():
        assert not invoker.has_room()
    assert invoker.has_room()


def test_idle_poll_wait_is_a_stream_setting_of_at_least_a_second() -> None:
    mapping = MappingConfig(
        source=STREAM, handler="bench.handlers:noop", starting_position="LATEST"
    )
    assert mapping.idle_poll_max_seconds == 1.0  # Lambda's bound by default
    patient = MappingConfig(
        source=STREAM,
        handler="bench.handlers:noop",
        starting_position="LATEST",
        idle_poll_max_seconds=10,
    )
    assert patient.idle_poll_max_seconds == 10.0
    with pytest.raises(ValidationError, match="must be from 1 to 300"):
        MappingConfig(
            source=STREAM,
            handler="bench.handlers:noop",
            starting_position="LATEST",
            idle_poll_max_seconds=0.5,
        )
    with pytest.raises(ValidationError, match="stream mappings only"):
        MappingConfig(source=QUEUE, handler="bench.handlers:noop", idle_poll_max_seconds=5)


def test_a_stream_mapping_may_poll_more_slowly_than_the_api_allows() -> None:
    default = MappingConfig(source=STREAM, handler="bench.handlers:noop", starting_position="LATEST")
    assert default.poll_interval_seconds is None  # the API's own limit
    shared = MappingConfig(
        source=STREAM,
        handler="bench.handlers:noop",
        starting_position="LATEST",
        poll_interval_seconds=1,
    )
    assert shared.poll_interval_seconds == 1.0
    with pytest.raises(ValidationError, match=r"must be from 0\.2 to 300"):
        MappingConfig(
            source=STREAM,
            handler="bench.handlers:noop",
            starting_position="LATEST",
            poll_interval_seconds=0.1,
        )
    with pytest.raises(ValidationError, match="stream mappings only"):
        MappingConfig(source=QUEUE, handler="bench.handlers:noop", poll_interval_seconds=1)

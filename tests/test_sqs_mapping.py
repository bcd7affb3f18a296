"""SQS mappings end to end against a real moto server, through the production clients."""

from __future__ import annotations

from typing import Any

import anyio
import orjson
import pytest

from tests.support import recording
from tests.support.recorded import SHAPES
from tests.support.sqs import (
    count_messages,
    drain,
    eventually,
    make_queue,
    running,
    send,
    settings_for,
    sqs_client,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("moto_url", "recorder")]



def mapping(url: str, handler: str = "tests.support.recording:record", **fields: Any) -> dict:
    return {"source": url, "handler": handler, **fields}


async def queue_is_empty(sqs: Any, url: str) -> bool:
    return await count_messages(sqs, url) == (0, 0)


async def test_successful_batch_is_deleted_from_the_queue() -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "ok")
        await send(sqs, url, [f"m{i}" for i in range(5)])
        async with running(settings_for({"q": mapping(url)})) as service:
            await eventually(lambda: len(recording.SEEN) == 5)
            await eventually(lambda: queue_is_empty(sqs, url))
            stats = service.registry.mappings["q"]
            assert stats.deleted == 5 and stats.polled == 5
        assert sorted(recording.bodies()) == [f"m{i}" for i in range(5)]


async def test_standard_record_matches_aws_key_for_key() -> None:
    attributes = {
        "WeeksOn": {"DataType": "Number", "StringValue": "6"},
        "Author": {"DataType": "String", "StringValue": "John Grisham"},
    }
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "shape")
        await sqs.send_message(QueueUrl=url, MessageBody="with", MessageAttributes=attributes)
        await sqs.send_message(QueueUrl=url, MessageBody="without")
        async with running(settings_for({"q": mapping(url)})):
            await eventually(lambda: len(recording.SEEN) == 2)
    by_body = {r["body"]: r for r in recording.SEEN}
    with_attrs, without = by_body["with"], by_body["without"]
    assert list(with_attrs) == list(SHAPES["sqs_standard_record_with_attrs"])
    assert list(with_attrs["attributes"]) == list(
        SHAPES["sqs_standard_record_with_attrs"]["attributes"]
    )
    expected_attr = SHAPES["sqs_standard_record_with_attrs"]["messageAttributes"]["WeeksOn"]
    assert list(with_attrs["messageAttributes"]["WeeksOn"]) == list(expected_attr)
    assert with_attrs["messageAttributes"]["WeeksOn"]["stringValue"] == "6"
    assert isinstance(with_attrs["md5OfMessageAttributes"], str)
    assert list(without) == list(SHAPES["sqs_standard_record_no_attrs"])
    assert without["md5OfMessageAttributes"] is None and without["messageAttributes"] == {}
    assert without["eventSource"] == "aws:sqs" and without["awsRegion"] == "us-east-1"
    assert without["eventSourceARN"].startswith("arn:aws:sqs:us-east-1:")
    assert all(isinstance(v, str) for v in without["attributes"].values())


async def test_fifo_record_carries_fifo_attributes(ministack_sqs: str) -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "shape", fifo=True)
        await send(sqs, url, ["one"], group="g1")
        async with running(settings_for({"q": mapping(url)})):
            await eventually(lambda: len(recording.SEEN) == 1)
    record = recording.SEEN[0]
    expected = SHAPES["sqs_fifo_record"]
    assert set(record) == set(expected)
    assert set(record["attributes"]) == set(expected["attributes"])
    assert record["attributes"]["MessageGroupId"] == "g1"
    assert record["attributes"]["SequenceNumber"].isdigit()


async def test_function_error_returns_whole_batch_after_visibility_timeout() -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "err", visibility=1)
        await send(sqs, url, ["fail-once", "fine"])
        recording.BEHAVIOUR["fail_first_receive_only"] = True
        settings = settings_for(
            {"q": mapping(url, "tests.support.recording:raise_on_first_receive")}
        )
        async with running(settings) as service:
            await eventually(lambda: queue_is_empty(sqs, url), timeout=30)
            stats = service.registry.mappings["q"]
        # Both messages came back together after the failure: the whole batch is retried.
        counts = [r["attributes"]["ApproximateReceiveCount"] for r in recording.SEEN]
        assert sorted(set(counts)) == ["1", "2"]
        assert stats.errors >= 1 and stats.deleted == 2


async def test_poison_message_lands_in_dlq_after_max_receive_count() -> None:
    async with sqs_client() as sqs:
        url, dlq = await make_queue(sqs, "poison", visibility=2, dlq_after=2)
        assert dlq is not None
        await send(sqs, url, ["good-1", "fail-always", "good-2"])
        fields = {"function_response_types": ["ReportBatchItemFailures"]}
        settings = settings_for(
            {"q": mapping(url, "tests.support.recording:fail_bodies", **fields)}
        )
        async with running(settings):
            await eventually(lambda: queue_is_empty(sqs, url), timeout=40)
        dead = await drain(sqs, dlq)
    assert [m["Body"] for m in dead] == ["fail-always"]
    assert recording.bodies().count("good-1") == 1
    assert recording.bodies().count("fail-always") == 2


async def test_partial_failure_deletes_only_the_successes() -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "partial", visibility=30)
        await send(sqs, url, ["a", "fail-b", "c", "fail-d"])
        fields = {"function_response_types": ["ReportBatchItemFailures"], "batch_size": 4}
        settings = settings_for(
            {"q": mapping(url, "tests.support.recording:fail_bodies", **fields)}
        )
        async with running(settings) as service:
            await eventually(lambda: service.registry.mappings["q"].deleted == 2)
            await anyio.sleep(0.3)
            assert await count_messages(sqs, url) == (0, 2)
            assert service.registry.mappings["q"].failed_invoke >= 2


@pytest.mark.parametrize(
    ("response", "batch_fails"),
    [
        (None, False),
        ({}, False),
        ({"batchItemFailures": None}, False),
        ({"batchItemFailures": []}, False),
        ({"batchItemFailures": [{"itemIdentifier": "$first"}]}, None),  # only the first stays
        ({"batchItemFailures": [{"itemIdentifier": "not-in-this-batch"}]}, True),
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, True),
        ({"batchItemFailures": [{"itemIdentifier": None}]}, True),
        ({"batchItemFailures": [{"itemId": "$first"}]}, True),
        ("not an object", True),
    ],
)
async def test_partial_batch_response_rules(response: Any, batch_fails: bool | None) -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "rules", visibility=30)
        await send(sqs, url, ["x", "y", "z"])
        recording.BEHAVIOUR["response"] = response
        fields = {"function_response_types": ["ReportBatchItemFailures"], "batch_size": 3}
        settings = settings_for({"q": mapping(url, "tests.support.recording:respond", **fields)})
        async with running(settings) as service:
            stats = service.registry.mappings["q"]
            await eventually(lambda: len(recording.SEEN) == 3)
            await eventually(lambda: stats.deleted + stats.failed_invoke >= 3 or stats.deleted >= 2)
            await anyio.sleep(0.3)
            remaining = sum(await count_messages(sqs, url))
    expected = {False: 0, True: 3, None: 1}[batch_fails]
    assert remaining == expected


async def test_batch_item_failures_are_ignored_without_report_batch_item_failures() -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "nofeature")
        await send(sqs, url, ["fail-a", "b"])
        settings = settings_for({"q": mapping(url, "tests.support.recording:fail_bodies")})
        async with running(settings):
            await eventually(lambda: queue_is_empty(sqs, url))


async def test_fifo_failure_holds_back_the_rest_of_its_group_only(ministack_sqs: str) -> None:
    # ministack: moto hands out the last message of a group first once a failed batch reappears.
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "order", fifo=True, visibility=1)
        await send(sqs, url, ["a1", "a2-fail-once", "a3", "a4"], group="A")
        await send(sqs, url, ["b1", "b2", "b3"], group="B")
        recording.BEHAVIOUR["fail_first_receive_only"] = True
        fields = {"function_response_types": ["ReportBatchItemFailures"]}
        settings = settings_for(
            {"q": mapping(url, "tests.support.recording:fail_bodies", **fields)}
        )
        async with running(settings):
            await eventually(lambda: queue_is_empty(sqs, url), timeout=30)
    seen = recording.bodies()
    group_a = [b for b in seen if b.startswith("a")]
    # a3 and a4 were handed over after a2 failed but returned unprocessed, then redelivered in order.
    first_success_order = list(dict.fromkeys(group_a))
    assert first_success_order == ["a1", "a2-fail-once", "a3", "a4"]
    assert group_a[-3:] == ["a2-fail-once", "a3", "a4"]
    assert [b for b in seen if b.startswith("b")] == ["b1", "b2", "b3"]
    # Group batches never mix groups.
    assert all(len({b[0] for b in batch}) == 1 for batch in recording.BATCHES)


async def test_slow_handler_keeps_its_messages_invisible() -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "slow", visibility=1)
        await send(sqs, url, ["slow"])
        recording.BEHAVIOUR["sleep"] = 3.5
        settings = settings_for({"q": mapping(url, function_timeout=10)})
        async with running(settings):
            await eventually(lambda: queue_is_empty(sqs, url), timeout=20)
    assert recording.bodies() == ["slow"]


async def test_batching_window_gathers_a_large_batch() -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "window")
        await send(sqs, url, [f"w{i}" for i in range(35)])
        fields = {"batch_size": 1000, "maximum_batching_window_in_seconds": 2}
        async with running(settings_for({"q": mapping(url, **fields)})):
            await eventually(lambda: len(recording.SEEN) == 35)
            await eventually(lambda: queue_is_empty(sqs, url))
    assert len(recording.BATCHES) == 1


async def test_filtered_out_messages_are_deleted_without_invoking() -> None:
    pattern = orjson.dumps({"body": {"type": ["order"]}}).decode()
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "filter")
        await send(
            sqs,
            url,
            ['{"type": "order", "n": 1}', '{"type": "refund"}', "plain text", '{"type": "order"}'],
        )
        fields = {"filter_criteria": {"Filters": [{"Pattern": pattern}]}}
        async with running(settings_for({"q": mapping(url, **fields)})) as service:
            await eventually(lambda: queue_is_empty(sqs, url))
            stats = service.registry.mappings["q"]
            assert stats.filtered_out == 2
    assert sorted(recording.bodies()) == ['{"type": "order", "n": 1}', '{"type": "order"}']


async def test_graceful_stop_releases_messages_not_yet_handed_to_the_handler() -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "stop", visibility=600)
        fields = {"batch_size": 100, "maximum_batching_window_in_seconds": 60}
        async with running(settings_for({"q": mapping(url, **fields)})) as service:
            await send(sqs, url, ["p1", "p2", "p3"])
            await eventually(lambda: service.registry.mappings["q"].polled == 3)
        assert recording.SEEN == []
        assert await count_messages(sqs, url) == (3, 0)


async def test_graceful_stop_lets_the_batch_in_flight_finish() -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "finish", visibility=600)
        recording.BEHAVIOUR["sleep"] = 1.0
        async with running(settings_for({"q": mapping(url)})) as service:
            await send(sqs, url, ["in-flight"])
            await eventually(lambda: len(recording.SEEN) == 1)
            assert service.registry.mappings["q"].deleted == 0
        assert await count_messages(sqs, url) == (0, 0)


async def test_mapping_waits_for_a_missing_queue_and_then_runs() -> None:
    async with sqs_client() as sqs:
        name = "late-" + str(id(sqs))
        url = f"{(await make_queue(sqs, 'probe'))[0].rsplit('/', 1)[0]}/{name}"
        async with running(settings_for({"q": mapping(url)})) as service:
            stats = service.registry.mappings["q"]
            await eventually(lambda: stats.last_error is not None)
            assert stats.state == "Enabling"
            await sqs.create_queue(QueueName=name)
            await send(sqs, url, ["late"])
            await eventually(lambda: recording.bodies() == ["late"], timeout=30)
            assert stats.state == "Enabled"


async def test_a_quiet_queue_keeps_a_second_poller_receiving_while_a_batch_runs() -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "two-pollers", visibility=600)
        recording.BEHAVIOUR["sleep"] = 2.0  # within the default 3 s function timeout
        async with running(settings_for({"q": mapping(url)})) as service:
            stats = service.registry.mappings["q"]
            await send(sqs, url, ["first"])
            await eventually(lambda: len(recording.SEEN) == 1)
            await send(sqs, url, ["second"])
            await eventually(lambda: stats.polled == 2)
            # Received while the first batch still runs, not after it was settled.
            assert stats.deleted == 0 and stats.concurrency_target == 2


async def test_concurrency_grows_with_backlog_and_respects_maximum() -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "scale")
        await send(sqs, url, [f"s{i}" for i in range(60)])
        recording.BEHAVIOUR["sleep"] = 0.4
        fields = {
            "batch_size": 2,
            "scaling_config": {"maximum_concurrency": 3},
            "handler_threads": 8,
        }
        async with running(
            settings_for({"q": mapping(url, "tests.support.recording:track_concurrency", **fields)})
        ):
            await eventually(lambda: len(recording.SEEN) >= 60, timeout=60)
    assert 1 < recording.BEHAVIOUR["max_concurrent"] <= 3


async def test_async_handler_and_lambda_context() -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "ctx")
        await send(sqs, url, ["hello"])
        fields = {"function_timeout": 7, "function_name": "orders-fn", "memory_size": 256}
        settings = settings_for(
            {"q": mapping(url, "tests.support.recording:async_record", **fields)}
        )
        async with running(settings):
            await eventually(lambda: len(recording.CONTEXTS) == 1)
    context = recording.CONTEXTS[0]
    assert context.function_name == "orders-fn"
    assert context.memory_limit_in_mb == "256"
    assert 0 < context.get_remaining_time_in_millis() <= 7000


async def test_visibility_backoff_delays_the_retry_of_a_failed_message() -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "backoff", visibility=1)
        await send(sqs, url, ["fail-once"])
        recording.BEHAVIOUR["fail_first_receive_only"] = True
        fields = {
            "function_response_types": ["ReportBatchItemFailures"],
            "visibility_backoff": {"initial_seconds": 4, "multiplier": 2, "max_seconds": 60},
        }
        settings = settings_for(
            {"q": mapping(url, "tests.support.recording:fail_bodies", **fields)}
        )
        async with running(settings):
            await eventually(lambda: len(recording.SEEN) == 1)
            await anyio.sleep(2.0)  # past the queue's own 1 s visibility timeout
            assert len(recording.SEEN) == 1
            await eventually(lambda: len(recording.SEEN) == 2, timeout=10)
            await eventually(lambda: queue_is_empty(sqs, url))


async def test_batch_of_thousands_within_a_window(ministack_sqs: str) -> None:
    # ministack: moto slows sharply with queue depth.
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "volume", visibility=60)
        bodies = [f"v{i}" for i in range(2500)]
        async with anyio.create_task_group() as tg:
            for start in range(0, len(bodies), 250):
                tg.start_soon(send, sqs, url, bodies[start : start + 250])
        fields = {"batch_size": 10000, "maximum_batching_window_in_seconds": 3}
        async with running(settings_for({"q": mapping(url, **fields)})) as service:
            await eventually(lambda: len(recording.SEEN) >= 2500, timeout=60)
            await eventually(lambda: queue_is_empty(sqs, url), timeout=30)
            assert service.registry.mappings["q"].deleted == 2500
    assert sorted(recording.bodies()) == sorted(bodies)
    assert len(recording.BATCHES) <= 3
    assert max(len(batch) for batch in recording.BATCHES) > 1000

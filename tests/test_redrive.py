"""`sluiceway redrive` against moto (and ministack for FIFO): an SQS DLQ back to its queue, and
stream failure records (SQS and S3 destinations) back through the function."""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from sluiceway.app.redrive import RedriveError, RedriveOptions, Tally, redrive
from sluiceway.router.failure_record import mapping_uuid

from tests.support import failures, recording
from tests.support.crash_handlers import handled_numbers
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
from tests.support.streams import aws_client, make_stream, put

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("moto_url", "recorder")]

ROOT = Path(__file__).resolve().parents[1]
SLUICEWAY = [sys.executable, "-m", "sluiceway.app"]


def _env(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICEWAY_")}
    env.update({"SLUICEWAY_HTTP__ENABLED": "false", **variables})
    return env


async def _cli(*args: str, env: dict[str, str]) -> tuple[int, str]:
    with anyio.fail_after(90):
        result = await anyio.run_process(
            [*SLUICEWAY, "redrive", *args], env=env, cwd=ROOT, check=False
        )
    return result.returncode, result.stdout.decode() + result.stderr.decode()


async def _arn(sqs: Any, url: str) -> str:
    attributes = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attributes["Attributes"]["QueueArn"])


# ---------------------------------------------------------------------------- SQS: a DLQ


async def test_a_dlq_goes_back_to_its_queue_in_steps_with_its_attributes() -> None:
    async with sqs_client() as sqs:
        url, dlq = await make_queue(sqs, "orders", dlq_after=1)
        assert dlq is not None
        bodies = [json.dumps({"order": i}) for i in range(12)]
        await send(
            sqs, dlq, bodies, MessageAttributes={"kind": {"DataType": "String", "StringValue": "o"}}
        )
        env = _env(
            SLUICEWAY_MAPPINGS__ORDERS__SOURCE=url,
            SLUICEWAY_MAPPINGS__ORDERS__HANDLER="sluiceway.handlers.examples.orders:handler",
        )
        code, output = await _cli("orders", "--dry-run", env=env)
        assert code == 0, output
        assert "about 12 messages would move; nothing was moved" in output
        assert await count_messages(sqs, dlq) == (12, 0)

        code, output = await _cli("orders", "--max", "5", env=env)
        assert code == 0, output
        assert "redrive orders: moved 5, re-invoked 0, failed again 0, expired 0" in output
        assert (await count_messages(sqs, dlq))[0] == 7

        code, output = await _cli("ORDERS", env=env)  # names are case-insensitive
        assert code == 0, output
        assert "StartMessageMoveTask is not available here" in output  # moto: moved by hand
        assert "redrive orders: moved 7," in output
        moved = await _drain_with_attributes(sqs, url)
        assert await count_messages(sqs, dlq) == (0, 0)
    assert sorted(m["Body"] for m in moved) == sorted(bodies)
    for message in moved:
        assert message["MessageAttributes"]["kind"]["StringValue"] == "o"


async def _drain_with_attributes(sqs: Any, url: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        response = await sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        )
        messages = response.get("Messages") or []
        if not messages:
            return out
        out += messages
        for message in messages:
            await sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


async def test_a_message_the_queue_refuses_stays_in_the_dlq() -> None:
    """Send before delete: a message the source queue does not take is never deleted."""
    async with sqs_client() as sqs:
        url, dlq = await make_queue(sqs, "small", dlq_after=1)
        assert dlq is not None
        await sqs.set_queue_attributes(QueueUrl=url, Attributes={"MaximumMessageSize": "1024"})
        await send(sqs, dlq, ["x" * 2048])
        env = _env(
            SLUICEWAY_MAPPINGS__SMALL__SOURCE=url,
            SLUICEWAY_MAPPINGS__SMALL__HANDLER="sluiceway.handlers.examples.orders:handler",
        )
        code, output = await _cli("small", "--max", "1", env=env)
        assert code == 2, output
        [line] = [line for line in output.splitlines() if line.startswith("sluiceway:")]
        assert "refused a message" in line and "the rest stay in" in line
        assert "Traceback" not in output
        assert await count_messages(sqs, dlq) == (0, 1)  # hidden for a while, not deleted
        assert await count_messages(sqs, url) == (0, 0)


async def test_a_fifo_dlq_keeps_groups_and_order_even_inside_the_deduplication_window(
    ministack_sqs: str,
) -> None:
    """The messages were first sent moments ago with the same deduplication ids: sent again
    under those ids the source queue would drop them silently, so each gets a new one."""
    async with sqs_client() as sqs:
        url, dlq = await make_queue(sqs, "fifo", fifo=True, dlq_after=1)
        assert dlq is not None
        originals = [(f"g{i % 2}", f"m{i}", f"dedup-{i}") for i in range(8)]
        for group, body, dedup in originals:
            await sqs.send_message(
                QueueUrl=url, MessageBody=body, MessageGroupId=group, MessageDeduplicationId=dedup
            )
        assert len(await drain(sqs, url)) == 8  # handled (and deleted) once already
        # The same messages, as a failed run would have left them in the DLQ.
        for group, body, dedup in originals:
            await sqs.send_message(
                QueueUrl=dlq, MessageBody=body, MessageGroupId=group, MessageDeduplicationId=dedup
            )
        # The hazard is real here: a resend under an id from five minutes ago is dropped.
        await sqs.send_message(
            QueueUrl=url, MessageBody="m0", MessageGroupId="g0", MessageDeduplicationId="dedup-0"
        )
        assert await count_messages(sqs, url) == (0, 0)
        settings = settings_for(
            {"fifo": {"source": url, "handler": "sluiceway.handlers.examples.orders:handler"}}
        )
        lines: list[str] = []
        tally = await redrive(settings, RedriveOptions("fifo"), lines.append)
        assert tally == Tally(moved=8), lines
        moved = []
        for _ in range(20):
            moved += await drain(sqs, url)
            if len(moved) == 8:
                break
            await anyio.sleep(0.1)
    by_group: dict[str, list[str]] = {}
    for message in moved:
        by_group.setdefault(message["Attributes"]["MessageGroupId"], []).append(message["Body"])
    assert by_group == {"g0": ["m0", "m2", "m4", "m6"], "g1": ["m1", "m3", "m5", "m7"]}


# ---------------------------------------------------------------------------- streams


def _poison(n: int, poison: bool) -> str:
    return json.dumps({"k": "a", "n": n, **({"tag": "poison"} if poison else {})})


def _stream_mapping(arn: str, destination: str, handler: str) -> dict[str, Any]:
    return {
        "source": arn,
        "handler": handler,
        "starting_position": "TRIM_HORIZON",
        "batch_size": 2,
        "maximum_retry_attempts": 0,
        "destination_config": {"on_failure": {"destination": destination}},
    }


async def _fail_some(arn: str, destination: str, kinesis: Any, delivered: Any) -> list[str]:
    """Eight records, batches of two, [2, 3] and [6, 7] poisoned: the service gives those two
    batches up to the destination; returns the sequence numbers."""
    sequences = await put(kinesis, arn, [("a", _poison(n, n in (2, 3, 6, 7))) for n in range(8)])
    failures.reset()
    settings = settings_for(
        {"k": _stream_mapping(arn, destination, "tests.support.failures:raise_on_poison")}
    )
    async with running(settings) as service:
        stats = service.registry.mappings["k"]
        await eventually(lambda: stats.destination_delivered == 4, timeout=30)
        await eventually(delivered, timeout=30)
    return sequences


async def test_stream_failures_in_a_queue_are_read_back_and_invoked_in_order(
    tmp_path: Path,
) -> None:
    async with aws_client("kinesis") as kinesis, sqs_client() as sqs:
        arn = await make_stream(kinesis, "redrive")
        queue, _ = await make_queue(sqs, "redrive-failed")
        queue_arn = await _arn(sqs, queue)

        async def two_records() -> bool:
            return (await count_messages(sqs, queue))[0] == 2

        sequences = await _fail_some(arn, queue_arn, kinesis, two_records)
        # A record of a shard the stream no longer has (past retention), and a stray message.
        gone = {
            "KinesisBatchInfo": {
                "shardId": "shardId-000000000009",
                "startSequenceNumber": "100",
                "endSequenceNumber": "102",
                "batchSize": 3,
                "streamArn": arn,
            }
        }
        await send(sqs, queue, [json.dumps(gone), "not a failure record"])
        env = _env(
            SLUICEWAY_MAPPINGS__K__SOURCE=arn,
            SLUICEWAY_MAPPINGS__K__HANDLER="tests.support.failures:raise_on_poison",
            SLUICEWAY_MAPPINGS__K__STARTING_POSITION="TRIM_HORIZON",
            SLUICEWAY_MAPPINGS__K__MAXIMUM_RETRY_ATTEMPTS="0",
            SLUICEWAY_MAPPINGS__K__DESTINATION_CONFIG__ON_FAILURE__DESTINATION=queue_arn,
            REPLICA_TEST_OUT_DIR=str(tmp_path),
        )
        # Still failing: every failure record stays.
        code, output = await _cli("k", env=env)
        assert code == 1, output
        assert (
            "redrive k: moved 0, re-invoked 0, failed again 4, expired 3, skipped 1 (not this stream's)"
            in output
        )
        assert "past the stream's retention; left" in output
        assert (await count_messages(sqs, queue))[0] == 4
        # Fixed: the two ranges go through the function in shard order, and are deleted.
        env["SLUICEWAY_MAPPINGS__K__HANDLER"] = "tests.support.crash_handlers:handle"
        code, output = await _cli("k", env=env)
        assert code == 1, output  # the expired one is still reported
        assert "re-invoked 4, failed again 0, expired 3, skipped 1 (not this stream's)" in output
        assert f"{sequences[2]}..{sequences[3]}: re-invoked 2 records from the stream" in output
        left = await drain(sqs, queue)
    assert handled_numbers(tmp_path) == [2, 3, 6, 7]
    assert sorted(m["Body"] for m in left) == sorted([json.dumps(gone), "not a failure record"])


async def test_stream_failures_in_s3_are_invoked_with_lambdas_event_and_deleted() -> None:
    bucket = f"redrive-{time.time_ns()}"
    async with aws_client("kinesis") as kinesis, aws_client("s3") as s3:
        await s3.create_bucket(Bucket=bucket)
        arn = await make_stream(kinesis, "redrive-s3")
        destination = f"arn:aws:s3:::{bucket}"

        async def objects() -> list[str]:
            listing = await s3.list_objects_v2(Bucket=bucket)
            return [item["Key"] for item in listing.get("Contents", [])]

        async def two_objects() -> bool:
            return len(await objects()) == 2

        await _fail_some(arn, destination, kinesis, two_objects)
        given_up = [
            record
            for event in failures.EVENTS
            if any(b"poison" in base64.b64decode(r["kinesis"]["data"]) for r in event["Records"])
            for record in event["Records"]
        ]
        assert len(given_up) == 4
        # An object whose shard is past retention still carries its records.
        prefix = f"aws/lambda/{mapping_uuid('k')}/shardId-000000000009/2020/01/01/"
        stale = {
            "KinesisBatchInfo": {
                "shardId": "shardId-000000000009",
                "startSequenceNumber": "100",
                "endSequenceNumber": "100",
                "batchSize": 1,
                "streamArn": arn,
            },
            "payload": json.dumps({"Records": [given_up[0]]}),
        }
        await s3.put_object(Bucket=bucket, Key=prefix + "old", Body=json.dumps(stale).encode())
        settings = settings_for(
            {"k": _stream_mapping(arn, destination, "tests.support.recording:record_stream")}
        )
        lines: list[str] = []
        dry = await redrive(settings, RedriveOptions("k", dry_run=True), lines.append)
        assert dry == Tally() and not recording.SEEN
        assert len(await objects()) == 3
        assert sum("would re-invoke" in line for line in lines) == 3
        tally = await redrive(settings, RedriveOptions("k"), lines.append)
        assert await objects() == []
    assert tally == Tally(reinvoked=5), lines
    # The ranges read back from the stream are the records as the poller gave them, key for
    # key, in shard order; the stale object's record comes from its payload.
    assert [*given_up, given_up[0]] == recording.SEEN


async def test_a_redrive_that_cannot_start_says_why_in_one_line() -> None:
    async with aws_client("kinesis") as kinesis, sqs_client() as sqs:
        arn = await make_stream(kinesis, "redrive-broken")
        queue, _ = await make_queue(sqs, "redrive-broken-failed")
        mapping = _stream_mapping(arn, await _arn(sqs, queue), "no_such_module:handler")
        settings = settings_for({"k": mapping})
        with pytest.raises(RedriveError, match="no mapping named 'nope' \\(configured: k\\)"):
            await redrive(settings, RedriveOptions("nope"))
        with pytest.raises(RedriveError, match="the handler cannot be loaded"):
            await redrive(settings, RedriveOptions("k"), lambda _: None)
        with pytest.raises(RedriveError, match="cannot be read back from arn:aws:sns"):
            options = RedriveOptions("k", source="arn:aws:sns:us-east-1:123456789012:topic")
            await redrive(settings, options, lambda _: None)

"""KPL-aggregated Kinesis records end to end, built with AWS's aggregation module: delivered as
Lambda delivers them by default; with `deaggregate_records`, one record per user record, each of
which a partial batch response can name and a checkpoint can stop at, across a restart."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sluiceway.router.runner
from sluiceway.pollers.checkpoints import MemoryCheckpoints
from sluiceway.pollers.checkpoints_sqlite import SqliteCheckpoints

from tests.support import kpl
from tests.support.recorded import SHAPES
from tests.support.sqs import drain, eventually, make_queue, running, settings_for, sqs_client
from tests.support.streams import aws_client, make_stream, put

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("moto_url", "kpl_state")]

USERS = [(f"user-{i}", f"u{i}") for i in range(4)]


@pytest.fixture
def kpl_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(sluiceway.router.runner, "RETRY_INITIAL_SECONDS", 0.05)
    monkeypatch.setattr(sluiceway.router.runner, "RETRY_MAX_SECONDS", 0.2)
    kpl.reset()
    yield
    kpl.reset()


def mapping(arn: str, handler: str, **fields: Any) -> dict[str, Any]:
    return {
        "source": arn,
        "handler": f"tests.support.kpl:{handler}",
        "starting_position": "TRIM_HORIZON",
        **fields,
    }


class RecordingCheckpoints(MemoryCheckpoints):
    """Every checkpoint written, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[str] = []

    async def set(self, scope: str, shard_id: str, checkpoint: str) -> None:
        self.history.append(checkpoint)
        await super().set(scope, shard_id, checkpoint)


def delivered() -> list[list[str]]:
    return [[kpl.data(r) for r in records] for records in kpl.EVENTS]


async def test_an_aggregate_is_delivered_as_lambda_delivers_it() -> None:
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "kpl-default")
        sequence = await kpl.put_aggregate(kinesis, arn, USERS)
        await put(kinesis, arn, [("k", "plain")])
        settings = settings_for({"k": mapping(arn, "deaggregating", batch_size=1)})
        async with running(settings) as service:
            await eventually(lambda: len(kpl.EVENTS) >= 2)
            stats = service.registry.mappings["k"]
            assert (stats.polled, stats.invoked) == (2, 2)
    # BatchSize 1: the aggregate is one record, its data the aggregate's bytes, its identity
    # the stored record's, and the handler de-aggregates it itself.
    (record,) = kpl.EVENTS[0]
    _, blob = kpl.aggregate(USERS)
    assert base64.b64decode(record["kinesis"]["data"]) == blob
    assert record["kinesis"]["sequenceNumber"] == sequence
    assert record["eventID"] == f"shardId-000000000000:{sequence}"
    expected = SHAPES["kinesis_record_from_s3_payload_native_key_order"]
    assert list(record) == list(expected) and list(record["kinesis"]) == list(expected["kinesis"])
    assert kpl.USER_RECORDS[:2] == [["u0", "u1", "u2", "u3"], ["plain"]]


@pytest.mark.usefixtures("kinesalite")
@pytest.mark.parametrize("name_by", ["item", "aggregate"])
async def test_a_partial_batch_response_names_one_sub_record(name_by: str) -> None:
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "kpl-partial")
        sequence = await kpl.put_aggregate(kinesis, arn, USERS)
        (after,) = await put(kinesis, arn, [("k", "after")])
        kpl.BEHAVIOUR.update(fail={"u2"}, name_by=name_by)
        fields = {
            "deaggregate_records": True,
            "function_response_types": ["ReportBatchItemFailures"],
        }
        store = RecordingCheckpoints()
        settings = settings_for({"k": mapping(arn, "fail_data", **fields)})
        async with running(settings, checkpoints=store):
            await eventually(lambda: len(kpl.EVENTS) >= 2 and store.history[-1:] == [after])
    first = kpl.EVENTS[0]
    assert [kpl.data(r) for r in first] == ["u0", "u1", "u2", "u3", "after"]
    subs = first[:4]
    assert [r["kinesis"]["sequenceNumber"] for r in subs] == [sequence] * 4
    assert [r["kinesis"]["subSequenceNumber"] for r in subs] == [0, 1, 2, 3]
    assert [r["kinesis"]["partitionKey"] for r in subs] == [key for key, _ in USERS]
    assert [r["eventID"] for r in subs] == [
        f"shardId-000000000000:{sequence}:{i}" for i in range(4)
    ]
    assert all(r["kinesis"]["aggregated"] is True for r in subs)
    assert "subSequenceNumber" not in first[4]["kinesis"]
    if name_by == "item":
        # `SEQUENCE:2` failed u2 alone: u0 and u1 are checkpointed inside the aggregate.
        assert delivered()[1] == ["u2", "u3", "after"]
        assert store.history == [f"{sequence}:1", after]
    else:
        # The aggregate's sequence number names its first sub-record in the batch.
        assert delivered()[1] == ["u0", "u1", "u2", "u3", "after"]
        assert store.history == [after]


@pytest.mark.usefixtures("kinesalite")
async def test_a_restart_resumes_in_the_middle_of_an_aggregate(tmp_path: Path) -> None:
    db = tmp_path / "sluiceway.db"
    users = [(f"user-{i}", f"u{i}") for i in range(6)]
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "kpl-restart")
        sequence = await kpl.put_aggregate(kinesis, arn, users)
        (after,) = await put(kinesis, arn, [("k", "after")])
        kpl.BEHAVIOUR["raise_on"] = {"u3"}
        settings = settings_for(
            {"k": mapping(arn, "raise_on_data", deaggregate_records=True, batch_size=3)},
            SLUICEWAY_CHECKPOINTS__BACKEND="sqlite",
            SLUICEWAY_CHECKPOINTS__PATH=str(db),
        )
        async with running(settings):
            # The first batch (u0-u2) finished; the second fails on u3 and is being retried.
            await eventually(lambda: sum("u3" in batch for batch in delivered()) >= 2)
        assert delivered()[0] == ["u0", "u1", "u2"]
        assert await stored_checkpoint(db, arn) == f"{sequence}:2"
        first_run = len(kpl.EVENTS)
        kpl.BEHAVIOUR["raise_on"] = set()
        async with running(settings):
            await eventually(lambda: any("after" in batch for batch in delivered()))
        assert await stored_checkpoint(db, arn) == after
    # u0-u2 are not delivered again: reading resumed at the aggregate, past its finished part.
    assert delivered()[first_run:] == [["u3", "u4", "u5"], ["after"]]


async def stored_checkpoint(db: Path, arn: str) -> str | None:
    store = SqliteCheckpoints(db).open()
    try:
        return await store.get(f"k|{arn}", "shardId-000000000000")
    finally:
        store.close_sync()


async def test_a_sub_record_given_up_on_gets_lambdas_failure_record() -> None:
    async with aws_client("kinesis") as kinesis, sqs_client() as sqs:
        dest_url, _ = await make_queue(sqs, "kpl-failed")
        attrs = await sqs.get_queue_attributes(QueueUrl=dest_url, AttributeNames=["QueueArn"])
        destination = attrs["Attributes"]["QueueArn"]
        arn = await make_stream(kinesis, "kpl-failure")
        sequence = await kpl.put_aggregate(kinesis, arn, USERS)
        kpl.BEHAVIOUR["raise_on"] = {"u1"}
        fields = {
            "deaggregate_records": True,
            "maximum_retry_attempts": 0,
            "destination_config": {"on_failure": {"destination": destination}},
        }
        got: list[dict[str, Any]] = []

        async def sent() -> bool:
            got.extend(await drain(sqs, dest_url))
            return bool(got)

        async with running(settings_for({"k": mapping(arn, "raise_on_data", **fields)})):
            await eventually(sent, interval=0.2)
    record = json.loads(got[0]["Body"])
    assert _keys(record) == _keys(SHAPES["kinesis_onfailure_sqs_function_error"])
    info = record["KinesisBatchInfo"]
    # Lambda's shape: plain sequence numbers; the batch counts the user records given up on.
    assert (info["startSequenceNumber"], info["endSequenceNumber"]) == (sequence, sequence)
    assert info["batchSize"] == 4


def _keys(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [(k, _keys(v)) for k, v in value.items()]
    return []

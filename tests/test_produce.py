"""`sluiceway produce`: the sample mixes, the trace context on SQS messages, creating sources and
destinations on moto, and refusing to run anywhere but an emulator."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections import Counter
from typing import Any

import anyio
import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sluiceway.app import traffic
from sluiceway.app.check import run_checks
from sluiceway.app.produce import (
    ProduceError,
    ProduceOptions,
    produce,
    require_emulator,
    targets_for,
    xray_header,
)
from sluiceway.config import load_settings
from sluiceway.config.settings import Settings
from sluiceway.router.tracing import traceparent_to_span_context, xray_to_span_context

from tests.support.fault_proxy import FaultProxy, FaultRates
from tests.support.sqs import unique
from tests.support.streams import aws_client

ACCOUNT = "123456789012"
ARN = f"arn:aws:{{}}:us-east-1:{ACCOUNT}:{{}}"
ORDERS_FILTER = '{"Filters":[{"Pattern":"{\\"body\\":{\\"type\\":[\\"order\\"]}}"}]}'


def test_each_mix_sends_good_filtered_flaky_and_poison_events() -> None:
    orders = Counter(traffic.order(i).label for i in range(100))
    assert set(orders) == {"order", "ping", "flaky", "poison"}
    clicks = Counter(traffic.click(i).label for i in range(100))
    assert set(clicks) == {"click", "heartbeat", "flaky", "poison"}
    ledger = Counter(traffic.ledger_entry(i).label for i in range(100))
    assert set(ledger) == {"entry", "flaky", "poison"}
    accounts = Counter(traffic.account_change(i).label for i in range(100))
    assert set(accounts) == {"insert", "modify", "remove", "flaky", "poison"}
    assert traffic.order(9).body == {"type": "ping", "n": 9}  # no "type": "order"
    assert traffic.order(3).body["poison"] is True and "work_ms" not in traffic.order(3).body
    assert 0 <= traffic.order(3, work=True).body["work_ms"] < 80
    # Flags are the handlers' words: the orders example reads poison / flaky, the streams one
    # poison / flaky / error.
    assert traffic.account_change(12).attributes["error"] is True
    assert traffic.account_change(14).op == "delete"


def _settings(**mappings: dict[str, str]) -> Settings:
    env = {"AWS_REGION": "us-east-1"}
    for name, fields in mappings.items():
        for key, value in fields.items():
            env[f"SLUICEWAY_MAPPINGS__{name.upper()}__{key.upper()}"] = value
    return load_settings(environ=env)


def test_a_source_read_by_two_mappings_is_one_target_counting_each_filter() -> None:
    queue = ARN.format("sqs", "orders")
    settings = _settings(
        a={"source": queue, "handler": "m:f", "filter_criteria": ORDERS_FILTER},
        b={"source": queue, "handler": "m:f"},
    )
    [target] = targets_for(settings)
    for i in range(10):
        body = orjson.dumps(traffic.order(i).body).decode()
        target.count(traffic.order(i).label, {"body": body})
    assert target.filtered == Counter({"a": 1})  # the ping; mapping b has no filter
    assert "filtered out by mapping a: 1" in target.line()


def test_the_fifo_trace_header_reads_back_as_the_producers_span() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("send") as current:
        context = current.get_span_context()
    read = xray_to_span_context(xray_header(context))
    assert read is not None
    assert (read.trace_id, read.span_id) == (context.trace_id, context.span_id)
    assert read.trace_flags.sampled


def test_produce_runs_only_against_an_emulator() -> None:
    require_emulator({"AWS_ENDPOINT_URL": "http://localhost:5055"}, {"sqs", "kinesis"})
    require_emulator({"AWS_ENDPOINT_URL_SQS": "http://localhost:5055"}, {"sqs"})
    with pytest.raises(ProduceError, match="kinesis"):
        require_emulator({"AWS_ENDPOINT_URL_SQS": "http://localhost:5055"}, {"sqs", "kinesis"})


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (
            {
                "SLUICEWAY_MAPPINGS__A__SOURCE": ARN.format("sqs", "a"),
                "SLUICEWAY_MAPPINGS__A__HANDLER": "m:f",
            },
            "only against an emulator",
        ),
        ({"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, "no mappings configured"),
    ],
)
def test_the_command_refuses_in_one_line(extra: dict[str, str], says: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICEWAY_", "AWS_ENDPOINT"))}
    env.update({"AWS_REGION": "us-east-1", **extra})
    result = subprocess.run(
        [sys.executable, "-m", "sluiceway.app", "produce", "--duration", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def _stack(names: dict[str, str], withhold: bool = False) -> Settings:
    """The compose stack's shape with this test's own names: four sources, four destinations."""
    region_account = f"us-east-1:{ACCOUNT}"
    destinations = {
        "sqs": f"arn:aws:sqs:{region_account}:{names['failures']}",
        "sns": f"arn:aws:sns:{region_account}:{names['topic']}",
        "s3": f"arn:aws:s3:::{names['bucket']}",
        "events": f"arn:aws:events:{region_account}:event-bus/{names['bus']}",
    }
    stream = {"starting_position": "TRIM_HORIZON", "maximum_retry_attempts": "1"}
    examples = "sluiceway.handlers.examples"
    return _settings(
        orders={
            "source": ARN.format("sqs", names["orders"]),
            "handler": f"{examples}.orders:handler",
            "filter_criteria": ORDERS_FILTER,
        },
        ledger={
            "source": ARN.format("sqs", names["ledger"]),
            "handler": f"{examples}.orders:handler",
        },
        clicks={
            "source": ARN.format("kinesis", f"stream/{names['clicks']}"),
            "handler": f"{examples}.streams:handler",
            "destination_config__on_failure__destination": destinations["sqs"],
            **stream,
        },
        clicks_sns={
            "source": ARN.format("kinesis", f"stream/{names['clicks']}"),
            "handler": f"{examples}.streams:handler",
            "destination_config__on_failure__destination": destinations["sns"],
            **stream,
        },
        accounts={
            "source": ARN.format("dynamodb", f"table/{names['accounts']}"),
            "handler": f"{examples}.streams:handler",
            "destination_config__on_failure__destination": destinations["s3"],
            **stream,
        },
        accounts_bus={
            "source": ARN.format("dynamodb", f"table/{names['accounts']}"),
            "handler": f"{examples}.streams:handler",
            "destination_config__on_failure__destination": destinations["events"],
            **stream,
        },
    )


def _names() -> dict[str, str]:
    names = {
        key: unique(key).lower()
        for key in ("orders", "clicks", "accounts", "failures", "topic", "bucket", "bus")
    }
    names["ledger"] = unique("ledger") + ".fifo"
    return names


async def _received(url: str) -> list[dict[str, Any]]:
    async with aws_client("sqs") as sqs:
        messages: list[dict[str, Any]] = []
        while True:
            page = await sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
            )
            if not page.get("Messages"):
                return messages
            messages.extend(page["Messages"])


@pytest.mark.anyio
async def test_produce_creates_the_stack_and_sends_each_source_its_mix_with_trace_context(
    moto_url: str,
) -> None:
    names = _names()
    settings = _stack(names)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    out = io.StringIO()
    options = ProduceOptions(rate=20, duration=1.5, create=True, report_seconds=60)
    assert await produce(settings, options, out, provider.get_tracer("test")) == 0

    # Everything the mappings name exists: `check` finds every source and destination.
    results = await run_checks(settings)
    assert all(r.ok for r in results), [r.line() for r in results if not r.ok]

    spans = {(s.context.trace_id, s.context.span_id): s for s in exporter.get_finished_spans()}
    assert {s.kind for s in spans.values()} == {SpanKind.PRODUCER}
    sent = Counter(s.name for s in spans.values())
    assert set(sent) == {f"send {names[k]}" for k in ("orders", "ledger", "clicks", "accounts")}
    assert all(count >= 10 for count in sent.values()), sent  # ~30 at 20/s for 1.5 s

    async with aws_client("sqs") as sqs:
        orders_url = (await sqs.get_queue_url(QueueName=names["orders"]))["QueueUrl"]
        ledger_url = (await sqs.get_queue_url(QueueName=names["ledger"]))["QueueUrl"]
    orders = await _received(orders_url)
    assert len(orders) == sent[f"send {names['orders']}"]
    for message in orders:  # a W3C traceparent message attribute: the span that sent it
        value = message["MessageAttributes"]["traceparent"]["StringValue"]
        context = traceparent_to_span_context(value)
        assert context is not None and spans[(context.trace_id, context.span_id)].name == (
            f"send {names['orders']}"
        )
    ledger = await _received(ledger_url)
    assert ledger
    for message in ledger:  # FIFO: the X-Ray AWSTraceHeader system attribute
        context = xray_to_span_context(message["Attributes"]["AWSTraceHeader"])
        assert context is not None and (context.trace_id, context.span_id) in spans
        assert message["Attributes"]["MessageGroupId"].startswith("acct-")

    async with aws_client("kinesis") as kinesis:
        clicks = await _kinesis_records(kinesis, names["clicks"])
    assert len(clicks) == sent[f"send {names['clicks']}"]
    assert [orjson.loads(r["Data"])["n"] for r in sorted(clicks, key=_n)] == list(
        range(len(clicks))
    )
    async with aws_client("dynamodb") as dynamodb, aws_client("dynamodbstreams") as streams:
        changes = await _stream_records(dynamodb, streams, names["accounts"])
    assert len(changes) == sent[f"send {names['accounts']}"]
    assert [c["eventName"] for c in changes[:3]] == ["INSERT", "MODIFY", "REMOVE"]
    text = out.getvalue()
    assert f"total {names['orders']} (sqs): sent" in text
    assert "filtered out by mapping orders:" in text


def _n(record: dict[str, Any]) -> int:
    return int(orjson.loads(record["Data"])["n"])


async def _kinesis_records(kinesis: Any, stream: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for shard in (await kinesis.list_shards(StreamName=stream))["Shards"]:
        iterator = (
            await kinesis.get_shard_iterator(
                StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )
        )["ShardIterator"]
        records.extend((await kinesis.get_records(ShardIterator=iterator, Limit=10000))["Records"])
    return records


async def _stream_records(dynamodb: Any, streams: Any, table: str) -> list[dict[str, Any]]:
    arn = (await dynamodb.describe_table(TableName=table))["Table"]["LatestStreamArn"]
    records: list[dict[str, Any]] = []
    for shard in (await streams.describe_stream(StreamArn=arn))["StreamDescription"]["Shards"]:
        iterator = (
            await streams.get_shard_iterator(
                StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )
        )["ShardIterator"]
        records.extend((await streams.get_records(ShardIterator=iterator, Limit=1000))["Records"])
    return records


@pytest.mark.anyio
async def test_withheld_destinations_are_left_for_a_later_create(moto_url: str) -> None:
    names = _names()
    settings = _stack(names)
    out = io.StringIO()
    options = ProduceOptions(create_only=True, withhold_destinations=10)
    assert await produce(settings, options, out) == 0
    assert "destinations withheld" in out.getvalue()
    failed = {r.what.split()[-1] for r in await run_checks(settings) if not r.ok}
    assert failed == {
        m.on_failure_destination.arn
        for m in settings.mappings.values()
        if m.on_failure_destination is not None
    }
    # The producer creates them once the outage is over, while it sends.
    options = ProduceOptions(rate=5, duration=1.5, create=True, withhold_destinations=0.5)
    assert await produce(settings, options, out) == 0
    assert "destinations created after 0.5 s" in out.getvalue()
    assert all(r.ok for r in await run_checks(settings))


@pytest.mark.anyio
async def test_a_missing_source_without_create_is_one_clear_error(moto_url: str) -> None:
    settings = _settings(q={"source": ARN.format("sqs", unique("missing")), "handler": "m:f"})
    with pytest.raises(ProduceError, match="--create"):
        await produce(settings, ProduceOptions(duration=1))


@pytest.mark.anyio
async def test_a_stop_lets_the_send_in_flight_finish_and_counts_it(
    moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The producer's tally is what the emulator accepted: a stop that comes while a send is on
    its way waits for it (each send bounded by SEND_SECONDS) rather than cutting it off."""
    name = unique("stop").lower()
    async with aws_client("sqs") as sqs:
        url = (await sqs.create_queue(QueueName=name))["QueueUrl"]
    settings = _settings(orders={"source": ARN.format("sqs", name), "handler": "m:f"})
    out = io.StringIO()
    options = ProduceOptions(rate=20, duration=0.3, report_seconds=60)
    slow = FaultRates(slow=1.0, slow_seconds=0.8)  # every call: the first send outlives the stop
    async with FaultProxy(moto_url, slow) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        tracer = TracerProvider().get_tracer("test")
        with anyio.fail_after(30):
            assert await produce(settings, options, out, tracer) == 0
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    (total,) = [line for line in out.getvalue().splitlines() if line.startswith("produce: total ")]
    sent = int(total.split(": sent ")[1].split()[0])
    assert sent == 1, total  # one send was in flight when the stop came, and it was counted
    assert len(await _received(url)) == sent

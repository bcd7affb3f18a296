"""Spans and metrics of real runs against the moto server, read with the SDK's in-memory exporters."""

from __future__ import annotations

import contextlib
import functools
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families
from sluiceway.app import service as service_module
from sluiceway.app.service import Service
from sluiceway.config.settings import Settings
from sluiceway.core import telemetry
from sluiceway.core.metrics import Metrics
from sluiceway.pollers.sqs import SqsPoller

from tests.support import traced
from tests.support.sqs import eventually, make_queue, send, settings_for, sqs_client
from tests.support.streams import aws_client, make_stream, put

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("moto_url")]

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "sluiceway.json"

PRODUCER_W3C = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
PRODUCER_XRAY = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.use_tracer_provider(provider)
    traced.reset()
    yield exporter
    telemetry.use_tracer_provider(None)
    provider.shutdown()


@contextlib.asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[tuple[Service, InMemoryMetricReader]]:
    """The real service, with an in-memory metric reader beside the Prometheus one."""
    service = Service(settings, handle_signals=False)
    reader = InMemoryMetricReader()
    service.metrics = Metrics(service.registry, readers=[reader])
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(service.run)
            try:
                yield service, reader
            finally:
                service.stop()
    finally:
        service.metrics.shutdown()


def points(reader: InMemoryMetricReader) -> dict[str, dict[str, Any]]:
    """metric name -> mapping label -> value (histograms: (count, sum))."""
    out: dict[str, dict[str, Any]] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    if value is None:
                        value = (point.count, point.sum)
                    out.setdefault(metric.name, {})[str(point.attributes.get("mapping"))] = value
    return out


def named(exporter: InMemorySpanExporter, pattern: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if re.fullmatch(pattern, s.name)]


def invocations(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    """The spans of handler invocations: each batch's process span is its invocation's span."""
    return [
        s for s in exporter.get_finished_spans() if "faas.invocation_id" in (s.attributes or {})
    ]


def sqs_mapping(url: str, handler: str, **fields: Any) -> dict[str, Any]:
    return {"source": url, "handler": f"tests.support.traced:{handler}", **fields}


async def test_success_links_producers_and_nests_the_handler(
    spans: InMemorySpanExporter,
) -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "otel-ok")
        queue = url.rsplit("/", 1)[1]
        traceparent = f"00-{PRODUCER_W3C[0]}-{PRODUCER_W3C[1]}-01"
        await send(
            sqs,
            url,
            ["w3c"],
            MessageAttributes={"traceparent": {"DataType": "String", "StringValue": traceparent}},
        )
        await sqs.send_message(
            QueueUrl=url,
            MessageBody="xray",
            MessageSystemAttributes={
                "AWSTraceHeader": {"DataType": "String", "StringValue": PRODUCER_XRAY}
            },
        )
        settings = settings_for({"q": sqs_mapping(url, "ok")})
        async with serve(settings) as (service, reader):
            stats = service.registry.mappings["q"]
            await eventually(lambda: stats.deleted == 2)
            measured = points(reader)

    process = named(spans, f"{queue} process")
    assert process and all(s.kind == SpanKind.CONSUMER for s in process)
    attrs = process[0].attributes or {}
    assert attrs["messaging.system"] == "aws_sqs"
    assert attrs["messaging.destination.name"] == queue
    assert attrs["messaging.operation"] == "process"
    assert attrs["sluiceway.mapping"] == "q" and attrs["sluiceway.batch_id"]
    linked = {format(link.context.trace_id, "032x") for s in process for link in s.links}
    assert PRODUCER_W3C[0] in linked
    assert "5759e988bd862e3fe1be46a994272793" in linked  # X-Ray Root as a W3C trace id
    spans_by_id = {s.context.span_id: s for s in spans.get_finished_spans()}
    invoked = invocations(spans)
    assert len(invoked) == stats.invocations
    for span in invoked:
        a = span.attributes or {}
        assert a["faas.trigger"] == "pubsub" and a["faas.invocation_id"]
        assert a["faas.name"] == "q"  # the mapping's own function is named after the mapping
        assert span.name == f"{queue} process" and span.kind == SpanKind.CONSUMER
    assert sorted(bool((s.attributes or {})["faas.coldstart"]) for s in invoked)[-1] is True
    # The sync handler ran in a worker thread, inside the invocation span.
    invocation_ids = {s.context.span_id for s in invoked}
    assert all(seen["span_id"] in invocation_ids for seen in traced.SEEN)
    assert all(seen["thread"] != "MainThread" for seen in traced.SEEN)
    work = named(spans, "handler work")
    assert work and all(s.parent.span_id in invocation_ids for s in work)
    # Polls and AWS calls.
    receives = named(spans, f"{queue} receive")
    assert sum((s.attributes or {}).get("messaging.batch.message_count", 0) for s in receives) == 2
    deletes = named(spans, r"sqs\.DeleteMessageBatch")
    assert deletes and all(
        spans_by_id[d.parent.span_id].name == f"{queue} process" for d in deletes
    )
    assert all(
        d.kind == SpanKind.CLIENT and (d.attributes or {})["rpc.system"] == "aws-api"
        for d in deletes
    )
    assert any(
        spans_by_id.get(r.parent.span_id, r).name == f"{queue} receive"
        for r in named(spans, r"sqs\.ReceiveMessage")
        if r.parent
    )
    # Metrics.
    assert measured["sluiceway_polled_events"]["q"] == 2
    assert measured["sluiceway_deleted_events"]["q"] == 2
    assert measured["sluiceway_invocations"]["q"] == stats.invocations
    assert measured["sluiceway_duration"]["q"][0] == stats.invocations
    assert measured["sluiceway_batch_size"]["q"] == (stats.invocations, 2)
    assert measured["sluiceway_errors"]["q"] == 0


async def test_partial_failure_marks_the_batch(spans: InMemorySpanExporter) -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "otel-partial")
        await send(sqs, url, ["a", "fail-b"])
        settings = settings_for(
            {
                "q": sqs_mapping(
                    url,
                    "partial",
                    function_response_types=["ReportBatchItemFailures"],
                    maximum_batching_window_in_seconds=1,
                )
            }
        )
        async with serve(settings) as (service, reader):
            stats = service.registry.mappings["q"]
            await eventually(lambda: stats.deleted == 1 and stats.failed_invoke >= 1)
            measured = points(reader)
    outcomes = [(s.attributes or {}).get("sluiceway.outcome") for s in named(spans, r".* process")]
    assert "PartialFailure" in outcomes
    partial = next(
        s
        for s in named(spans, r".* process")
        if (s.attributes or {}).get("sluiceway.outcome") == "PartialFailure"
    )
    assert (partial.attributes or {})["sluiceway.failed_count"] == 1
    assert measured["sluiceway_failed_invoke_events"]["q"] >= 1
    assert measured["sluiceway_errors"]["q"] == 0


async def test_function_error_marks_the_invocation(spans: InMemorySpanExporter) -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "otel-error")
        await send(sqs, url, ["x"])
        async with serve(settings_for({"q": sqs_mapping(url, "boom")})) as (service, reader):
            stats = service.registry.mappings["q"]
            await eventually(lambda: stats.errors >= 1)
            measured = points(reader)
    invoked = invocations(spans)
    assert invoked
    assert invoked[0].status.status_code == StatusCode.ERROR
    assert (invoked[0].attributes or {})["error.type"] == "RuntimeError"
    (event,) = [e for e in invoked[0].events if e.name == "exception"]
    attrs = event.attributes or {}
    assert (attrs["exception.type"], attrs["exception.message"]) == ("RuntimeError", "boom")
    stack = str(attrs["exception.stacktrace"])
    assert stack.startswith("Traceback (most recent call last):\n")
    assert f'File "{traced.__file__}"' in stack and 'raise RuntimeError("boom")' in stack
    assert stack.endswith("RuntimeError: boom") and "sluiceway" not in stack
    batch = named(spans, r".* process")[0]
    assert (batch.attributes or {})["sluiceway.outcome"] == "BatchFailed"
    assert (batch.attributes or {})["error.type"] == "RuntimeError"  # the function's error type
    assert batch.status.status_code == StatusCode.ERROR
    assert measured["sluiceway_errors"]["q"] >= 1
    assert measured["sluiceway_failed_invoke_events"]["q"] >= 1


async def test_filtered_out_batch_has_no_invocation(spans: InMemorySpanExporter) -> None:
    criteria = {"Filters": [{"Pattern": json.dumps({"body": {"type": ["order"]}})}]}
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "otel-filter")
        await send(sqs, url, [json.dumps({"type": "ping"})])
        settings = settings_for({"q": sqs_mapping(url, "ok", filter_criteria=criteria)})
        async with serve(settings) as (service, reader):
            stats = service.registry.mappings["q"]
            await eventually(lambda: stats.deleted == 1)
            measured = points(reader)
    assert named(spans, r".* process") and not invocations(spans)
    assert measured["sluiceway_filtered_out_events"]["q"] == 1
    assert measured["sluiceway_invoked_events"]["q"] == 0


async def test_per_record_spans_only_when_asked(spans: InMemorySpanExporter) -> None:
    provider = telemetry._state.provider
    telemetry.use_tracer_provider(provider, per_record=True)
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "otel-records")
        await send(sqs, url, ["r1", "r2", "r3"])
        settings = settings_for({"q": sqs_mapping(url, "ok")})
        async with serve(settings) as (service, _):
            await eventually(lambda: service.registry.mappings["q"].deleted == 3)
    records = named(spans, r".* record")
    assert len(records) == 3
    assert {(s.attributes or {})["messaging.message.id"] for s in records}


async def test_kinesis_polls_and_batches_are_traced_and_iterator_age_reported(
    spans: InMemorySpanExporter,
) -> None:
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "otel")
        await put(kinesis, arn, [("a", "one"), ("b", "two")])
        settings = settings_for(
            {
                "k": {
                    "source": arn,
                    "handler": "tests.support.traced:ok",
                    "starting_position": "TRIM_HORIZON",
                }
            }
        )
        async with serve(settings) as (service, reader):
            await eventually(lambda: service.registry.mappings["k"].invoked == 2)
            measured = points(reader)
    stream = arn.rsplit("/", 1)[1]
    polls = named(spans, f"{stream} GetRecords")
    assert polls and all(
        (s.attributes or {})["sluiceway.shard"].startswith("shardId-") for s in polls
    )
    batch = named(spans, f"{stream} process")[0]
    assert (batch.attributes or {})["messaging.system"] == "aws.kinesis"
    assert all((s.attributes or {})["faas.trigger"] == "datasource" for s in invocations(spans))
    assert measured["sluiceway_iterator_age"]["k"] >= 0
    assert measured["sluiceway_polled_events"]["k"] == 2


async def test_metrics_endpoint_parses_and_the_dashboard_only_queries_real_metrics(
    spans: InMemorySpanExporter,
) -> None:
    async with sqs_client() as sqs, aws_client("kinesis") as kinesis:
        url, _ = await make_queue(sqs, "otel-prom")
        await send(sqs, url, ["a", "b"])
        arn = await make_stream(kinesis, "otel-prom")
        await put(kinesis, arn, [("a", "one")])
        stream = {"source": arn, "handler": "tests.support.traced:ok"}
        settings = settings_for(
            {"q": sqs_mapping(url, "ok"), "k": {**stream, "starting_position": "TRIM_HORIZON"}},
            SLUICEWAY_HTTP__ENABLED="true",
            SLUICEWAY_HTTP__PORT="0",
            SLUICEWAY_HTTP__HOST="127.0.0.1",
        )
        async with serve(settings) as (service, _):
            mappings = service.registry.mappings
            await eventually(lambda: mappings["q"].deleted == 2 and mappings["k"].invoked == 1)
            assert service.http is not None
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{service.http.port}/metrics") as response,
            ):
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain")
                text = await response.text()
    samples = {
        (sample.name, sample.labels.get("mapping")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("sluiceway_polled_events_total", "q")] == 2
    assert samples[("sluiceway_deleted_events_total", "q")] == 2
    assert samples[("sluiceway_invocations_total", "q")] >= 1
    assert samples[("sluiceway_duration_seconds_count", "q")] >= 1
    assert samples[("sluiceway_leases", "q")] == 0  # a queue has no leases
    assert samples[("sluiceway_leases", "k")] == 1  # the stream's one shard, held here
    assert ("sluiceway_dropped_events_total", "q") in samples
    assert ("sluiceway_destination_delivered_events_total", "q") in samples
    assert samples[("sluiceway_iterator_age_milliseconds", "k")] >= 0
    exported = {name for name, _ in samples}

    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p.get("type") != "row"]
    assert len(panels) >= 5
    for panel in panels:
        for target in panel.get("targets", []):
            names = set(re.findall(r"\bsluiceway_[a-z_]+", target.get("expr", "")))
            assert names, f"panel {panel['title']!r} queries no Sluiceway metric"
            missing = names - exported
            assert not missing, f"panel {panel['title']!r} queries {missing}, not exported"


async def test_bisected_retries_and_the_destination_send_are_traced(
    spans: InMemorySpanExporter,
) -> None:
    from tests.support import failures
    from tests.support.sqs import count_messages

    failures.reset()
    async with aws_client("kinesis") as kinesis, sqs_client() as sqs:
        dest_url, _ = await make_queue(sqs, "otel-failed")
        dest_arn = (await sqs.get_queue_attributes(QueueUrl=dest_url, AttributeNames=["QueueArn"]))[
            "Attributes"
        ]["QueueArn"]
        arn = await make_stream(kinesis, "otel-bisect")
        await put(kinesis, arn, [("a", "poison" if i == 1 else f"r{i}") for i in range(4)])
        mapping = {
            "source": arn,
            "handler": "tests.support.failures:raise_on_poison",
            "starting_position": "TRIM_HORIZON",
            "maximum_retry_attempts": 0,
            "bisect_batch_on_function_error": True,
            "destination_config": {"on_failure": {"destination": dest_arn}},
        }
        async with serve(settings_for({"k": mapping})):

            async def delivered() -> bool:
                return sum(await count_messages(sqs, dest_url)) == 1

            await eventually(delivered, timeout=30)
            await eventually(lambda: sum(failures.SIZES) >= 4 + 2 + 2 + 1 + 1)
    retries = named(spans, "retry")
    assert {(s.attributes or {}).get("sluiceway.retry_reason") for s in retries} == {"bisect"}
    (publish,) = named(spans, ".* publish")
    assert (publish.attributes or {})["sluiceway.condition"] == "RetryAttemptsExhausted"
    assert (publish.attributes or {})["messaging.system"] == "aws_sqs"


# ---------------------------------------------------------------- traces a user can read


class Counting(SpanProcessor):
    """Counts spans started and ended, so a span left open shows."""

    def __init__(self) -> None:
        self.started = self.ended = 0

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        self.started += 1

    def on_end(self, span: ReadableSpan) -> None:
        self.ended += 1


@pytest.fixture
def short_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQS long polls of 1 s instead of 20, so a test sees several empty polls."""
    monkeypatch.setattr(service_module, "SqsPoller", functools.partial(SqsPoller, wait_seconds=1))


def receive_links(span: ReadableSpan) -> list[Any]:
    return [
        link
        for link in span.links
        if (link.attributes or {}).get("messaging.operation.type") == "receive"
    ]


@pytest.mark.usefixtures("short_polls")
async def test_empty_polls_leave_no_trace_and_a_receive_leads_to_its_processing(
    spans: InMemorySpanExporter,
) -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "otel-idle")
        queue = url.rsplit("/", 1)[1]
        settings = settings_for({"q": sqs_mapping(url, "ok", maximum_batching_window_in_seconds=1)})
        async with serve(settings) as (service, reader):
            stats = service.registry.mappings["q"]
            await eventually(lambda: stats.empty_polls >= 1)
            spans.clear()  # start-up (reading the queue's attributes) is traced once
            await eventually(lambda: stats.empty_polls >= 5)
            assert spans.get_finished_spans() == ()  # idle: not one span
            traceparent = f"00-{PRODUCER_W3C[0]}-{PRODUCER_W3C[1]}-01"
            await send(
                sqs,
                url,
                [f"m{i}" for i in range(7)],
                MessageAttributes={
                    "traceparent": {"DataType": "String", "StringValue": traceparent}
                },
            )
            await eventually(lambda: stats.deleted == 7)
            measured = points(reader)
    receives = named(spans, f"{queue} receive")
    counts = [(s.attributes or {})["messaging.batch.message_count"] for s in receives]
    assert receives and all(count > 0 for count in counts) and sum(counts) == 7
    for receive in receives:  # the receive links to the messages' producer
        assert PRODUCER_W3C[0] in {format(link.context.trace_id, "032x") for link in receive.links}
    # Each receive's ReceiveMessage call is its child, and no empty poll left one behind.
    calls = named(spans, r"sqs\.ReceiveMessage")
    by_id = {s.context.span_id: s for s in receives}
    assert len(calls) == len(receives)
    assert all(call.parent is not None and call.parent.span_id in by_id for call in calls)
    assert all(call.start_time >= by_id[call.parent.span_id].start_time for call in calls)
    # The process spans link to the receives that fetched their messages, and to the producer.
    processes = named(spans, f"{queue} process")
    linked = [link for process in processes for link in receive_links(process)]
    assert {link.context.span_id for link in linked} == set(by_id)
    assert sum((link.attributes or {})["messaging.batch.message_count"] for link in linked) == 7
    assert all(
        PRODUCER_W3C[0] in {format(link.context.trace_id, "032x") for link in process.links}
        for process in processes
    )
    assert measured["sluiceway_empty_polls"]["q"] >= 4


async def test_an_idle_stream_leaves_no_trace_and_its_receives_lead_to_their_batches(
    spans: InMemorySpanExporter,
) -> None:
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "otel-idle", shards=4)
        stream = arn.rsplit("/", 1)[1]
        mapping = {
            "source": arn,
            "handler": "tests.support.traced:ok",
            "starting_position": "LATEST",
        }
        async with serve(settings_for({"k": mapping})) as (service, reader):
            stats = service.registry.mappings["k"]
            await eventually(lambda: stats.empty_polls >= 4)
            spans.clear()  # start-up (the stream, its shards, their iterators) is traced once
            await eventually(lambda: stats.empty_polls >= 40)
            assert spans.get_finished_spans() == ()  # idle: no poll, no shard listing
            await put(kinesis, arn, [(f"key-{i}", f"r{i}") for i in range(8)])
            await eventually(lambda: stats.invoked == 8)
            measured = points(reader)
    receives = named(spans, f"{stream} GetRecords")
    assert receives and all(
        (s.attributes or {})["messaging.batch.message_count"] > 0 for s in receives
    )
    calls = named(spans, r"kinesis\.GetRecords")
    by_id = {s.context.span_id: s for s in receives}
    assert len(calls) == len(receives)
    assert all(call.parent is not None and call.parent.span_id in by_id for call in calls)
    processes = named(spans, f"{stream} process")
    linked = {link.context.span_id for p in processes for link in receive_links(p)}
    assert linked == set(by_id)
    assert measured["sluiceway_empty_polls"]["k"] >= 40


async def test_a_stop_during_a_long_poll_leaves_no_span_behind(
    spans: InMemorySpanExporter,
) -> None:
    counting = Counting()
    provider = telemetry._state.provider
    provider.add_span_processor(counting)
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "otel-stop")
        async with serve(settings_for({"q": sqs_mapping(url, "ok")})) as (service, _):
            await anyio.sleep(1.0)  # both pollers are inside their 20 s long polls
            stats = service.registry.mappings["q"]
        assert stats.state == "Disabled"
    # The cancelled polls returned nothing: no receive span, no ReceiveMessage span, none open.
    assert not named(spans, r".* receive|sqs\.ReceiveMessage")
    assert counting.started == counting.ended
    assert stats.empty_polls == 0  # a cancelled poll is not an empty one


async def test_a_failed_invocation_records_its_stack_trace_masked_like_logs(
    spans: InMemorySpanExporter,
) -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "otel-leak")
        await send(sqs, url, ["x"])
        async with serve(settings_for({"q": sqs_mapping(url, "leaky")})) as (service, _):
            await eventually(lambda: service.registry.mappings["q"].errors >= 1)
    invoked = invocations(spans)[0]
    (event,) = [e for e in invoked.events if e.name == "exception"]
    attrs = event.attributes or {}
    assert attrs["exception.type"] == "ValueError"
    assert attrs["exception.message"] == "cannot sign with [redacted]"
    stack = str(attrs["exception.stacktrace"])
    assert "in leaky" in stack and "[redacted]" in stack
    assert "AKIA" not in stack and "AKIA" not in str(invoked.status.description)
    batch = named(spans, r".* process")[0]
    assert (batch.attributes or {})["error.type"] == "ValueError"


async def test_a_timed_out_invocation_names_sandbox_timedout_on_the_batch(
    spans: InMemorySpanExporter,
) -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "otel-timeout")
        await send(sqs, url, ["x"])
        settings = settings_for({"q": sqs_mapping(url, "slow", function_timeout=0.2)})
        async with serve(settings) as (service, _):
            await eventually(lambda: service.registry.mappings["q"].errors >= 1)
    batch = named(spans, r".* process")[0]
    assert (batch.attributes or {})["error.type"] == "Sandbox.Timedout"
    assert (batch.attributes or {})["sluiceway.outcome"] == "BatchFailed"
    (event,) = [e for e in invocations(spans)[0].events if e.name == "exception"]
    assert (event.attributes or {})["exception.type"] == "Sandbox.Timedout"
    assert "exception.stacktrace" not in (event.attributes or {})  # a timeout has none

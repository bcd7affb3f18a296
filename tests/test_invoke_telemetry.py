"""Traces and metrics of invokes: the invocation span links the caller's traceparent or
X-Amzn-Trace-Id, and Lambda's async metrics are exported per function."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from sluiceway.core import telemetry

from tests.support.sqs import eventually
from tests.test_invoke_api import base_env, serving

pytestmark = pytest.mark.anyio

W3C = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
XRAY = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.use_tracer_provider(provider)
    yield exporter
    telemetry.use_tracer_provider(None)
    provider.shutdown()


async def test_invocation_spans_link_the_callers_trace_and_metrics_count_async_events(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    env = base_env(tmp_path, SLUICEWAY_API__AUTH="none")
    env.pop("OTEL_SDK_DISABLED")
    async with serving(env) as service:
        assert service.http is not None
        url = f"http://127.0.0.1:{service.http.port}/2015-03-31/functions/echo/invocations"
        async with aiohttp.ClientSession() as session:
            headers = {"X-Amz-Invocation-Type": "Event", "traceparent": f"00-{W3C[0]}-{W3C[1]}-01"}
            async with session.post(url, data=b"{}", headers=headers) as response:
                assert response.status == 202
            async with session.post(url, data=b"{}", headers={"X-Amzn-Trace-Id": XRAY}) as response:
                assert response.status == 200
        stats = service.registry.functions["echo"]
        await eventually(lambda: stats.invocations == 1, timeout=10)
        assert service.metrics is not None
        text = service.metrics.prometheus_text().decode()
    invokes = [s for s in spans.get_finished_spans() if s.name == "echo invoke"]
    linked = {
        (f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}")
        for span in invokes
        for link in span.links
    }
    assert W3C in linked
    assert ("5759e988bd862e3fe1be46a994272793", "53995c3f42cd8ad8") in linked
    samples = {
        (sample.name, sample.labels.get("function")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("sluiceway_async_events_received_total", "echo")] == 1
    assert samples[("sluiceway_async_events_dropped_total", "echo")] == 0
    assert ("sluiceway_async_event_age_milliseconds", "echo") in samples

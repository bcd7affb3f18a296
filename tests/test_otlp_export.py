"""`sluiceway run` exports traces and metrics by OTLP/HTTP to a receiver decoding the protobufs,
and its JSON log lines name the trace they were written in."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.sqs import eventually, make_queue, send, sqs_client

ROOT = Path(__file__).resolve().parents[1]


class Receiver:
    """A tiny OTLP/HTTP endpoint: /v1/traces and /v1/metrics, protobuf bodies."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.resources: list[dict[str, Any]] = []
        self.metric_names: set[str] = set()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                assert self.headers["Content-Type"] == "application/x-protobuf"
                receiver.take(self.path, body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def take(self, path: str, body: bytes) -> None:
        with self.lock:
            if path == "/v1/traces":
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    self.resources.append(
                        {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                    )
                    for scope in resource_spans.scope_spans:
                        self.spans.extend(scope.spans)
            elif path == "/v1/metrics":
                metrics = ExportMetricsServiceRequest.FromString(body)
                for resource_metrics in metrics.resource_metrics:
                    for scope in resource_metrics.scope_metrics:
                        self.metric_names.update(m.name for m in scope.metrics)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.mark.anyio
async def test_otlp_http_export_and_json_logs_with_trace_ids(
    moto_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "otlp", visibility=60)
        queue = url.rsplit("/", 1)[1]
        await send(sqs, url, ["secret body"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICEWAY_", "OTEL_"))}
    env.update(
        {
            "AWS_ENDPOINT_URL": moto_url,
            "SLUICEWAY_MAPPINGS__Q__SOURCE": url,
            "SLUICEWAY_MAPPINGS__Q__HANDLER": "tests.support.traced:boom",
            "SLUICEWAY_HTTP__ENABLED": "false",
            "SLUICEWAY_LOG_FORMAT": "json",
            "OTEL_SERVICE_NAME": "sluiceway-under-test",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_METRIC_EXPORT_INTERVAL": "300",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
    )
    log_path = tmp_path / "stderr.log"
    with log_path.open("wb") as log_file:
        process = await anyio.open_process(
            [sys.executable, "-m", "sluiceway.app", "run"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
        try:

            def exported() -> bool:
                with receiver.lock:
                    names = {s.name for s in receiver.spans}
                    return f"{queue} process" in names and "sluiceway_invocations" in (
                        receiver.metric_names
                    )

            await eventually(exported, timeout=30)
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(30):
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                with anyio.fail_after(10):
                    await process.wait()

    assert {"service.name": "sluiceway-under-test"}.items() <= receiver.resources[0].items()
    assert {"sluiceway_polled_events", "sluiceway_duration"} <= receiver.metric_names
    trace_ids = {s.trace_id.hex() for s in receiver.spans}
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    failed = [line for line in lines if line.get("message", "").startswith("RuntimeError")]
    assert failed, lines
    entry = failed[0]
    assert entry["trace_id"] in trace_ids and len(entry["span_id"]) == 16
    assert entry["mapping"] == "q" and entry["batch_id"]
    assert "secret body" not in log_path.read_text()

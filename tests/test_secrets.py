"""No value the service knows to be secret leaves the process, and no record body reaches a log.

A handler fails with an exception whose message quotes its message body, the process's
AWS_SECRET_ACCESS_KEY, a DB_PASSWORD from the mapping's ENVIRONMENT and the body's card number.
The real service runs it (in worker processes and in a thread), and the test scans what leaves:
every log line, /status, /metrics, the failure records at the on-failure destination and (in
process, with an in-memory exporter) every span.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sluiceway.core import telemetry
from sluiceway.core.logs import options as log_options
from sluiceway.core.secrets import MASK, KnownSecrets, known_secrets, mask_fragments
from sluiceway.handlers.results import FunctionError, InvokeFailure
from sluiceway.router.error_text import ERROR_TEXT_LIMIT, body_fragments, safe_error, safe_result
from sluiceway.router.records import SourceRecord

from tests.support.service_process import SLUICEWAY, service_env, sluiceway_run
from tests.support.sqs import drain, eventually, make_queue, running, send, settings_for, sqs_client

pytestmark = pytest.mark.anyio

HANDLER = "tests.handlers_fixtures.edge_handlers:leaks"
CARD = "4111111111111111"


@pytest.fixture
def registry() -> Iterator[None]:
    """Tests that register secrets leave the process's registry as they found it."""
    saved = known_secrets.values
    yield
    known_secrets.clear()
    for value in saved:
        known_secrets.add(value, min_length=1)


def _secrets() -> dict[str, str]:
    return {
        "aws secret": "scan/" + secrets.token_urlsafe(27),  # 40 characters, as AWS's are
        "db password": "pw-" + secrets.token_hex(8),
        "card": CARD,
        "name": "Ada Lovelace " + secrets.token_hex(4),
    }


def _body(values: dict[str, str]) -> str:
    return json.dumps({"order": 7, "card": values["card"], "name": values["name"]})


async def _queue_arn(sqs: Any, url: str) -> str:
    attributes = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attributes["Attributes"]["QueueArn"])


def _mappings(values: dict[str, str], pay: str, refund: str, failed: str) -> dict[str, Any]:
    """`pay` runs in worker processes with DB_PASSWORD in its ENVIRONMENT; `refund` in a thread.
    Both send a message's failure record to the queue `failed` after one failed attempt."""
    common = {
        "handler": HANDLER,
        "maximum_retry_attempts": 0,
        "destination_config": {"on_failure": {"destination": failed}},
    }
    return {
        "pay": {
            **common,
            "source": pay,
            "isolation": "process",
            "environment": {"DB_PASSWORD": values["db password"]},
        },
        "refund": {**common, "source": refund, "isolation": "thread"},
    }


def _as_env(mappings: dict[str, Any]) -> dict[str, str]:
    """The variables a user would set for `mappings` (as `settings_for` reads them)."""
    return {
        f"SLUICEWAY_MAPPINGS__{name.upper()}__{key.upper()}": (
            value if isinstance(value, str) else json.dumps(value)
        )
        for name, fields in mappings.items()
        for key, value in fields.items()
    }


def _leaks(text: str, values: dict[str, str]) -> list[str]:
    return [name for name, value in values.items() if value in text]


async def test_no_known_secret_or_body_leaves_the_running_service(moto_url: str) -> None:
    values = _secrets()
    async with sqs_client() as sqs:
        pay, _ = await make_queue(sqs, "leaky-pay")
        refund, _ = await make_queue(sqs, "leaky-refund")
        failed, _ = await make_queue(sqs, "leaky-failed")
        mappings = _mappings(values, pay, refund, await _queue_arn(sqs, failed))
        env = service_env(
            moto_url,
            AWS_SECRET_ACCESS_KEY=values["aws secret"],
            SLUICEWAY_LOG_LEVEL="DEBUG",
            **_as_env(mappings),
        )
        async with sluiceway_run(env) as service:
            await send(sqs, pay, [_body(values)])
            await send(sqs, refund, [_body(values)])
            records: list[dict[str, Any]] = []

            async def both_failed() -> bool:
                records.extend(await drain(sqs, failed))
                return len(records) >= 2

            await eventually(both_failed, timeout=60, interval=0.3)
            status = service.get("/status")[1].decode()
            metrics = service.get("/metrics")[1].decode()
            await anyio.sleep(0.5)
            logs = service.logs()
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    errors = [line for line in lines if line["level"] == "ERROR"]
    # Logged once per failed invocation, by the router, whatever the target.
    assert sorted(line["mapping"] for line in errors) == ["pay", "refund"], logs[-3000:]
    assert not [line for line in lines if "batch of" in line["message"]]
    for line in errors:
        assert line["message"].startswith("RuntimeError: cannot charge [redacted] with secret")
        assert f"secret {MASK}" in line["message"]
    assert f"database password {MASK}" in {e["mapping"]: e for e in errors}["pay"]["message"]
    assert "Traceback" in {e["mapping"]: e for e in errors}["refund"]["exception"]
    assert _leaks(logs, values) == []
    assert _leaks(status, values) == []
    assert _leaks(metrics, values) == []
    # Failure records carry the message as Lambda sent it (its body is the record, as in AWS),
    # never the error text or a secret.
    assert len(records) == 2
    for message in records:
        record = json.loads(message["Body"])
        payload = record.pop("payload")
        assert _leaks(json.dumps(record), values) == []
        credentials = {k: v for k, v in values.items() if k in ("aws secret", "db password")}
        assert _leaks(payload, credentials) == []


async def test_spans_carry_no_known_secret_or_body(
    moto_url: str, monkeypatch: pytest.MonkeyPatch, registry: None
) -> None:
    values = _secrets()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", values["aws secret"])
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.use_tracer_provider(provider)
    try:
        async with sqs_client() as sqs:
            pay, _ = await make_queue(sqs, "span-pay")
            refund, _ = await make_queue(sqs, "span-refund")
            failed, _ = await make_queue(sqs, "span-failed")
            mappings = _mappings(values, pay, refund, await _queue_arn(sqs, failed))
            async with running(settings_for(mappings)) as service:
                await send(sqs, pay, [_body(values)])
                await send(sqs, refund, [_body(values)])
                stats = service.registry.mappings
                await eventually(
                    lambda: all(s.destination_delivered >= 1 for s in stats.values()), timeout=60
                )
    finally:
        telemetry.use_tracer_provider(None)
        provider.shutdown()
    spans = exporter.get_finished_spans()
    failed_spans = [s for s in spans if s.status.description]
    assert failed_spans, "the failed invocations are traced"
    assert _leaks("\n".join(_span_text(s) for s in spans), values) == []


def _span_text(span: ReadableSpan) -> str:
    parts = [span.name, span.status.description or "", json.dumps(dict(span.attributes or {}))]
    for event in span.events:
        parts.append(json.dumps(dict(event.attributes or {}), default=str))
    return "\n".join(parts)


async def test_check_agrees_with_run_about_an_environment(moto_url: str) -> None:
    """Whatever the isolation rules are, `check` refuses what `run` refuses, in the same words."""
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "check-env")
    env = service_env(
        moto_url,
        SLUICEWAY_MAPPINGS__ORDERS__SOURCE=url,
        SLUICEWAY_MAPPINGS__ORDERS__HANDLER="sluiceway.handlers.examples.orders:handler",
        SLUICEWAY_MAPPINGS__ORDERS__ISOLATION="thread",
        SLUICEWAY_MAPPINGS__ORDERS__ENVIRONMENT='{"TABLE_NAME": "orders"}',
        SLUICEWAY_HTTP__PORT="0",
    )
    with anyio.fail_after(60):
        check = await anyio.run_process([*SLUICEWAY, "check"], env=env, check=False)
    refused = [
        line.removeprefix("FAIL orders: handler sluiceway.handlers.examples.orders:handler — ")
        for line in check.stdout.decode().splitlines()
        if line.startswith("FAIL orders: handler")
    ]
    async with sluiceway_run(env) as service:
        with anyio.move_on_after(20):
            await service.process.wait()
        run_code = service.process.returncode
        run_logs = service.logs()
    if run_code is None:  # run accepted it and kept running
        assert check.returncode == 0 and not refused, check.stdout.decode()
    else:
        assert run_code == 2 and check.returncode == 1, run_logs
        assert len(refused) == 1 and refused[0] in run_logs
        assert "ENVIRONMENT" in refused[0]


# ---------------------------------------------------------------- the masking itself


def test_known_secrets_are_masked_anywhere_in_text_longest_first() -> None:
    known = KnownSecrets()
    known.add("short")  # under the minimum: an ordinary word would be masked everywhere
    known.add("hunter2-password")
    known.add("hunter2-password-and-more")
    known.add_environment({"STAGE": "prod", "API_TOKEN": "tok1", "TABLE_NAME": "orders-table"})
    assert known.mask("short prod tok1 orders-table") == f"short prod {MASK} {MASK}"
    assert known.mask("x=hunter2-password-and-more!") == f"x={MASK}!"
    assert known.mask_value({"a": ["hunter2-password", 3], "b": None}) == {
        "a": [MASK, 3],
        "b": None,
    }


def test_a_cut_never_leaves_half_a_fragment_visible() -> None:
    text = "a" * 95 + "SECRETVALUE" + "b" * 50
    assert mask_fragments(text, ["SECRETVALUE"], 100) == "a" * 95 + MASK + "…"
    assert mask_fragments("xx SECRET SECRET yy", ["SECRET", "CRET SEC"], 100) == f"xx {MASK} yy"
    assert mask_fragments("plain", [], 3) == "pla…"
    # Thousands of fragments (a big batch's bodies) are found as reliably as a few.
    many = [f"body-number-{i:05d}" for i in range(5000)] + ["tiny"]
    text = "x" * 90 + "body-number-04321 and tiny"
    assert mask_fragments(text, many, 200) == "x" * 90 + f"{MASK} and {MASK}"


def _sqs_record(body: str) -> SourceRecord:
    return SourceRecord(event={"body": body, "messageId": "m1"}, item_id="m1", size=len(body))


def test_a_handlers_error_is_cut_to_1_kb_and_its_batchs_bodies_masked(registry: None) -> None:
    body = json.dumps({"card": CARD, "note": "x" * 200})
    error = FunctionError("ValueError", f"bad record {body} (card {CARD})", stack_trace=("f\n",))
    masked = safe_error(error, [_sqs_record(body)])
    assert masked.message == f"bad record {MASK} (card {MASK})"
    long = safe_error(FunctionError("E", "y" * 5000), [])
    assert len(long.message) == ERROR_TEXT_LIMIT + 1  # and an ellipsis
    # A body that runs past the cut is masked, not shown up to the cut.
    big = json.dumps({"card": CARD, "note": "x" * 2000})
    cut = safe_error(FunctionError("ValueError", f"bad record {big}"), [_sqs_record(big)])
    assert cut.message == f"bad record {MASK}"
    log_options.log_bodies = True
    try:
        assert CARD in safe_error(error, [_sqs_record(body)]).message[:ERROR_TEXT_LIMIT]
    finally:
        log_options.log_bodies = False


def test_an_http_targets_error_page_that_echoes_the_event_is_masked_too() -> None:
    body = json.dumps({"card": CARD})
    echoed = InvokeFailure(f"http://target: HTTP 500: {json.dumps({'Records': [{'body': body}]})}")
    masked = safe_result(echoed, [_sqs_record(body)])
    assert isinstance(masked, InvokeFailure) and CARD not in masked.reason
    assert masked.reason.startswith("http://target: HTTP 500: ")


def test_body_fragments_cover_every_source_shape() -> None:
    kinesis = {"kinesis": {"data": "eyJjYXJkIjogIjQxMTExMTExMTExMTExMTEifQ=="}}
    dynamodb = {"dynamodb": {"NewImage": {"card": {"S": CARD}, "n": {"N": "7"}}}}
    fragments = body_fragments([kinesis, dynamodb, {"body": "not json but long"}])
    assert '{"card": "4111111111111111"}' in fragments
    assert fragments.count(CARD) == 2
    assert "7" not in fragments  # too short to mask without masking ordinary text
    assert "not json but long" in fragments

"""The `sluiceway` command as a user runs it: a real process, real signals, a real emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import anyio
import pytest

from tests.support.cli import SLUICEWAY, cli_env, free_port, get, reachable
from tests.support.sqs import count_messages, eventually, make_queue, send, sqs_client
from tests.support.streams import aws_client, make_stream


def _env(moto_url: str, **extra: str) -> dict[str, str]:
    return cli_env(moto_url, SLUICEWAY_LOG_FORMAT="text", **extra)


def test_invalid_configuration_names_the_variable_and_the_rule(moto_url: str) -> None:
    env = _env(
        moto_url,
        SLUICEWAY_MAPPINGS__ORDERS__SOURCE="arn:aws:sqs:us-east-1:123456789012:orders.fifo",
        SLUICEWAY_MAPPINGS__ORDERS__HANDLER="sluiceway.handlers.examples.orders:handler",
        SLUICEWAY_MAPPINGS__ORDERS__BATCH_SIZE="50",
        SLUICEWAY_MAPPINGS__ORDERS__SCALING_CONFIG__MAXIMUM_CONCURRENCY="1",
    )
    result = subprocess.run(
        [*SLUICEWAY, "run"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "SLUICEWAY_MAPPINGS__ORDERS__BATCH_SIZE='50'" in result.stderr
    assert "1 to 10" in result.stderr
    assert "SLUICEWAY_MAPPINGS__ORDERS__SCALING_CONFIG__MAXIMUM_CONCURRENCY" in result.stderr


@pytest.mark.anyio
async def test_check_reaches_queues_and_loads_handlers(moto_url: str) -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "check")
    good = _env(
        moto_url,
        SLUICEWAY_MAPPINGS__ORDERS__SOURCE=url,
        SLUICEWAY_MAPPINGS__ORDERS__HANDLER="sluiceway.handlers.examples.orders:handler",
    )
    with anyio.fail_after(60):
        result = await anyio.run_process([*SLUICEWAY, "check"], env=good, check=False)
    stdout = result.stdout.decode()
    assert result.returncode == 0, stdout + result.stderr.decode()
    assert stdout.count("ok  ") == 2
    bad = _env(
        moto_url,
        SLUICEWAY_MAPPINGS__ORDERS__SOURCE=url.rsplit("/", 1)[0] + "/no-such-queue",
        SLUICEWAY_MAPPINGS__ORDERS__HANDLER="no_such_module:handler",
    )
    with anyio.fail_after(60):
        result = await anyio.run_process([*SLUICEWAY, "check"], env=bad, check=False)
    stdout = result.stdout.decode()
    assert result.returncode == 1
    assert "Runtime.ImportModuleError" in stdout
    assert "QueueDoesNotExist" in stdout or "NonExistentQueue" in stdout


@pytest.mark.anyio
async def test_run_serves_health_processes_messages_and_exits_cleanly_on_sigterm(
    moto_url: str,
) -> None:
    port = free_port()
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "run")
        await send(sqs, url, [json.dumps({"type": "order", "id": i}) for i in range(5)])
        env = _env(
            moto_url,
            SLUICEWAY_MAPPINGS__ORDERS__SOURCE=url,
            SLUICEWAY_MAPPINGS__ORDERS__HANDLER="sluiceway.handlers.examples.orders:handler",
            SLUICEWAY_MAPPINGS__ORDERS__FUNCTION_RESPONSE_TYPES='["ReportBatchItemFailures"]',
            SLUICEWAY_HTTP__PORT=str(port),
            SLUICEWAY_HTTP__HOST="127.0.0.1",
        )
        process = await anyio.open_process(
            [*SLUICEWAY, "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            await eventually(lambda: reachable(port), timeout=30)
            assert get(f"http://127.0.0.1:{port}/healthz") == (200, {"status": "ok"})

            async def ready() -> bool:
                return get(f"http://127.0.0.1:{port}/readyz")[0] == 200

            await eventually(ready, timeout=30)

            async def drained() -> bool:
                return await count_messages(sqs, url) == (0, 0)

            await eventually(drained, timeout=30)
            status = get(f"http://127.0.0.1:{port}/status")[1]
            assert status["orders"]["deleted"] == 5
            assert status["orders"]["init_duration_seconds"] is not None
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(30):
                assert await process.wait() == 0
            assert time.monotonic() - started < 10
        finally:
            if process.returncode is None:
                process.kill()
                with anyio.fail_after(10):
                    await process.wait()


def test_demo_accounts_for_every_message_without_a_terminal() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICEWAY_", "AWS_"))}
    result = subprocess.run(
        [*SLUICEWAY, "demo", "--messages", "30", "--timeout", "90"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "every message accounted for" in result.stdout
    assert "every stream record handled" in result.stdout
    assert "every async invoke delivered" in result.stdout
    assert "\r" not in result.stdout  # plain progress lines when stdout is not a terminal


@pytest.mark.anyio
async def test_stream_failure_settings_are_accepted_and_checked(moto_url: str) -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "clicks-failed")
        queue_arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))[
            "Attributes"
        ]["QueueArn"]
    async with aws_client("kinesis") as kinesis:
        stream_arn = await make_stream(kinesis, "clicks")
    env = _env(
        moto_url,
        SLUICEWAY_MAPPINGS__CLICKS__SOURCE=stream_arn,
        SLUICEWAY_MAPPINGS__CLICKS__HANDLER="sluiceway.handlers.examples.audit:handler",
        SLUICEWAY_MAPPINGS__CLICKS__STARTING_POSITION="TRIM_HORIZON",
        SLUICEWAY_MAPPINGS__CLICKS__MAXIMUM_RETRY_ATTEMPTS="3",
        SLUICEWAY_MAPPINGS__CLICKS__MAXIMUM_RECORD_AGE_IN_SECONDS="3600",
        SLUICEWAY_MAPPINGS__CLICKS__BISECT_BATCH_ON_FUNCTION_ERROR="true",
        SLUICEWAY_MAPPINGS__CLICKS__TUMBLING_WINDOW_IN_SECONDS="60",
        SLUICEWAY_MAPPINGS__CLICKS__DESTINATION_CONFIG__ON_FAILURE__DESTINATION=queue_arn,
        SLUICEWAY_CHECKPOINTS__BACKEND="memory",
        SLUICEWAY_HTTP__ENABLED="false",
    )
    with anyio.fail_after(60):
        result = await anyio.run_process([*SLUICEWAY, "check"], env=env, check=False)
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output
    assert "not supported" not in output
    assert f"ok   clicks: on-failure destination {queue_arn}" in output
    # A destination that does not exist fails the check before any record needs it.
    env["SLUICEWAY_MAPPINGS__CLICKS__DESTINATION_CONFIG__ON_FAILURE__DESTINATION"] = (
        "arn:aws:sns:us-east-1:123456789012:no-such-topic"
    )
    with anyio.fail_after(60):
        result = await anyio.run_process([*SLUICEWAY, "check"], env=env, check=False)
    output = result.stdout.decode()
    assert result.returncode == 1
    assert (
        "FAIL clicks: on-failure destination arn:aws:sns:us-east-1:123456789012:no-such-topic"
        in output
    )

"""Process isolation: warm worker processes, killed on timeout, with a memory limit and env."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from sluiceway.config import load_settings
from sluiceway.handlers.process_pool import ProcessPoolInvoker
from sluiceway.handlers.results import FunctionError, Returned
from sluiceway.handlers.worker import WorkerConfig

from tests.support.sqs import eventually, make_queue, running, send, sqs_client

pytestmark = pytest.mark.anyio

SPEC = "tests.handlers_fixtures.process_handlers"


def config(function: str, memory_size: int = 256, **environment: str) -> WorkerConfig:
    return WorkerConfig(
        spec=f"{SPEC}:{function}",
        code_path=None,
        function_name="orders",
        memory_size=memory_size,
        region="eu-west-1",
        account="123456789012",
        environment=environment,
    )


@pytest.fixture
async def pool(request: pytest.FixtureRequest) -> AsyncIterator[ProcessPoolInvoker]:
    options: dict[str, Any] = getattr(request, "param", {})
    invoker = ProcessPoolInvoker(
        config(options.get("function", "describe"), options.get("memory", 256), GREETING="hej"),
        function_timeout=options.get("timeout", 3.0),
        size=options.get("size", 1),
    )
    try:
        yield invoker
    finally:
        await invoker.aclose()


async def test_the_handler_runs_in_another_process_with_the_mapping_environment(
    pool: ProcessPoolInvoker,
) -> None:
    result = await pool.invoke({"Records": []})
    assert isinstance(result, Returned)
    payload = result.payload
    assert payload["pid"] != os.getpid()
    assert payload["greeting"] == "hej"
    assert os.environ.get("GREETING") is None  # not in this process
    assert payload["function_name"] == "orders"
    assert payload["memory"] == "256" and payload["memory_env"] == "256"
    assert 2000 < payload["remaining"] <= 3000


@pytest.mark.parametrize("pool", [{"size": 2}], indirect=True)
async def test_init_runs_once_per_worker_and_warm_workers_are_reused(
    pool: ProcessPoolInvoker,
) -> None:
    await pool.warm()
    assert len(pool.init_durations) == 2 and len(pool.cold_starts) == 2
    results: list[Any] = []

    async def call() -> None:
        results.append(await pool.invoke({}))

    for _ in range(3):
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(call)
    pids = {r.payload["pid"] for r in results}
    assert len(pids) == 2  # two environments, no more
    assert all(r.payload["init_count"] == 1 for r in results)
    assert len(pool.cold_starts) == 2  # no worker started after warm-up


@pytest.mark.parametrize("pool", [{"function": "sleeps", "timeout": 0.5}], indirect=True)
async def test_a_timeout_kills_the_worker_and_a_new_one_replaces_it(
    pool: ProcessPoolInvoker,
) -> None:
    await pool.warm()
    first_pid = pool._idle[0].process.pid
    started = time.monotonic()
    result = await pool.invoke({"sleep": 30})
    assert time.monotonic() - started < 2
    assert isinstance(result, FunctionError)
    assert result.error_type == "Sandbox.Timedout"
    assert pool.replaced == 1
    with pytest.raises(ProcessLookupError):
        os.kill(first_pid, 0)  # really stopped, not abandoned
    again = await pool.invoke({"sleep": 0})
    assert isinstance(again, Returned) and again.payload != first_pid


@pytest.mark.parametrize("pool", [{"function": "allocates", "memory": 128}], indirect=True)
async def test_memory_size_is_a_limit_and_running_out_is_a_function_error(
    pool: ProcessPoolInvoker,
) -> None:
    within = await pool.invoke({"mb": 64})
    assert within == Returned(64, within.duration)
    over = await pool.invoke({"mb": 512})
    assert isinstance(over, FunctionError)
    assert over.error_type == "Runtime.OutOfMemory"
    assert pool.replaced == 1
    after = await pool.invoke({"mb": 16})
    assert isinstance(after, Returned)


@pytest.mark.parametrize("pool", [{"function": "boom"}], indirect=True)
async def test_a_raised_exception_keeps_the_worker(pool: ProcessPoolInvoker) -> None:
    result = await pool.invoke({})
    assert result == FunctionError("ValueError", "order 7 has no customer", result.duration)
    assert isinstance(result, FunctionError)
    assert result.stack_trace[-1].endswith('raise ValueError("order 7 has no customer")\n')
    assert "process_handlers.py" in result.stack_trace[0]
    await pool.invoke({})
    assert pool.replaced == 0 and len(pool.cold_starts) == 1


async def test_an_import_error_is_reported_like_lambda() -> None:
    bad = WorkerConfig(
        "tests.handlers_fixtures.broken_import:handler", None, "f", 128, "us-east-1", "0"
    )
    invoker = ProcessPoolInvoker(bad, function_timeout=5)
    try:
        result = await invoker.invoke({})
    finally:
        await invoker.aclose()
    assert isinstance(result, FunctionError)
    assert result.error_type == "Runtime.ImportModuleError"


async def test_async_handlers_run_in_the_worker() -> None:
    invoker = ProcessPoolInvoker(config("async_describe"))
    try:
        result = await invoker.invoke({})
    finally:
        await invoker.aclose()
    assert isinstance(result, Returned) and result.payload != os.getpid()


async def test_the_event_loop_keeps_running_while_a_worker_is_busy() -> None:
    invoker = ProcessPoolInvoker(config("sleeps"), function_timeout=3)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.sleep(0.01)

    try:
        await invoker.warm()
        async with anyio.create_task_group() as tg:
            tg.start_soon(tick)
            await invoker.invoke({"sleep": 0.3})
            tg.cancel_scope.cancel()
    finally:
        await invoker.aclose()
    assert ticks >= 10


async def test_environment_entries_set_one_variable_each_reach_the_workers_of_run(
    moto_url: str, tmp_path: Path
) -> None:
    """`…__ENVIRONMENT__NAME=value`, as the README documents it, from load to a running worker."""
    code = tmp_path / "envfn"
    code.mkdir()
    (code / "envapp.py").write_text(
        "import json, os\n\n"
        "def handler(event, context):\n"
        "    names = ('TABLE_NAME', 'Mixed_Case', 'FROM_JSON', 'OUT')\n"
        "    with open(os.environ['OUT'], 'w') as out:\n"
        "        json.dump({name: os.environ.get(name) for name in names}, out)\n"
    )
    out = tmp_path / "seen.json"
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "env-entries")
        prefix = "SLUICEWAY_MAPPINGS__ORDERS__"
        settings = load_settings(
            {
                "AWS_REGION": "us-east-1",
                "SLUICEWAY_HTTP__ENABLED": "false",
                f"{prefix}SOURCE": url,
                f"{prefix}HANDLER": "envapp.handler",
                f"{prefix}CODE_PATH": str(code),
                f"{prefix}ISOLATION": "process",
                f"{prefix}ENVIRONMENT": '{"FROM_JSON": "j", "TABLE_NAME": "overridden"}',
                f"{prefix}ENVIRONMENT__TABLE_NAME": "orders",
                f"{prefix}ENVIRONMENT__Mixed_Case": "kept",
                f"{prefix}ENVIRONMENT__OUT": str(out),
            }
        )
        await send(sqs, url, ["one"])
        with anyio.fail_after(60):
            async with running(settings):
                await eventually(lambda: out.exists() and out.read_text().endswith("}"), timeout=30)
    assert json.loads(out.read_text()) == {
        "TABLE_NAME": "orders",
        "Mixed_Case": "kept",
        "FROM_JSON": "j",
        "OUT": str(out),
    }

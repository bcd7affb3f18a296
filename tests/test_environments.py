"""Execution environments for sync handlers: a timed-out call keeps its slot until its thread
ends, threads never outnumber slots, they are daemons, and stuck environments are reported."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from sluiceway.app.server import HttpServer
from sluiceway.core.stats import MappingStats, Registry
from sluiceway.handlers import environments
from sluiceway.handlers.environments import ThreadEnvironments
from sluiceway.handlers.invoker import PythonInvoker
from sluiceway.handlers.results import FunctionError, Returned

from tests.handlers_fixtures import edge_handlers

pytestmark = pytest.mark.anyio


@pytest.fixture
def released() -> Iterator[threading.Event]:
    """`edge_handlers.waits` blocks until the test ends (or sets the event itself)."""
    edge_handlers.release.clear()
    yield edge_handlers.release
    edge_handlers.release.set()


def pool_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"sluiceway-{name}"]


async def test_a_timed_out_call_keeps_its_environment_until_its_thread_returns() -> None:
    probe = edge_handlers.overlap
    probe.peak = 0
    run = PythonInvoker(
        "tests.handlers_fixtures.edge_handlers:overlap", function_timeout=0.1, max_threads=1
    )
    first = await run.invoke({"sleep": 0.4})  # times out, keeps running for 0.3 s more
    assert isinstance(first, FunctionError) and first.error_type == "Sandbox.Timedout"
    assert run.stuck_environments == 1
    assert not run.has_room()
    started = time.monotonic()
    second = await run.invoke({"sleep": 0.0})  # waits for the stuck call, then runs alone
    assert isinstance(second, Returned)
    assert time.monotonic() - started > 0.2
    assert probe.peak == 1  # HANDLER_THREADS=1: never two invocations at once
    assert run.stuck_environments == 0 and run.has_room()


async def test_timeouts_never_add_threads_beyond_the_slots(released: threading.Event) -> None:
    stats = MappingStats("hung", "sqs")
    run = PythonInvoker(
        "tests.handlers_fixtures.edge_handlers:waits",
        function_name="hung-pool",
        function_timeout=0.05,
        max_threads=2,
    )
    run.report_to(stats)
    await run.warm()
    results: list[Any] = []

    async def call() -> None:
        results.append(await run.invoke({}))

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        tg.start_soon(call)
    assert [r.error_type for r in results] == ["Sandbox.Timedout"] * 2
    assert (stats.environments, stats.stuck_environments, stats.all_stuck) == (2, 2, True)
    # Fourteen more invocations queue for an environment instead of starting threads.
    with anyio.move_on_after(0.3):
        async with anyio.create_task_group() as tg:
            for _ in range(14):
                tg.start_soon(call)
    assert len(results) == 2
    threads = pool_threads("hung-pool")
    assert len(threads) == 2 and all(t.daemon for t in threads)
    assert run._environments.threads == 2  # the pool's own count agrees
    released.set()  # the stuck calls return: their environments are free again
    await anyio.sleep(0.1)
    assert (stats.stuck_environments, stats.all_stuck) == (0, False)
    assert isinstance(await run.invoke({}), Returned)
    assert len(pool_threads("hung-pool")) <= 2


async def test_fourteen_timeouts_run_in_no_more_threads_than_slots() -> None:
    probe = edge_handlers.overlap
    probe.peak = 0
    run = PythonInvoker(
        "tests.handlers_fixtures.edge_handlers:overlap",
        function_name="timeouts-pool",
        function_timeout=0.02,
        max_threads=2,
    )
    results: list[Any] = []

    async def call() -> None:
        results.append(await run.invoke({"sleep": 0.1}))

    async with anyio.create_task_group() as tg:
        for _ in range(14):
            tg.start_soon(call)
    assert [r.error_type for r in results] == ["Sandbox.Timedout"] * 14
    assert probe.peak == 2
    assert len(pool_threads("timeouts-pool")) == 2


async def test_a_mapping_whose_every_environment_is_stuck_is_not_ready() -> None:
    registry = Registry()
    stats = registry.add("orders", "sqs")
    stats.state = "Enabled"
    server = HttpServer(registry, "127.0.0.1", 0)
    stats.environments, stats.stuck_environments = 2, 1
    assert server.ready() == (True, {"orders": "Enabled"}, {})
    stats.stuck_environments = 2
    assert server.ready() == (False, {"orders": "Stuck"}, {})


async def test_idle_threads_end_and_start_again_on_demand() -> None:
    pool = ThreadEnvironments(2, "idle-pool", idle_seconds=0.05)

    async def once() -> int:
        async with pool.reserve() as environment:
            return int(await environment.run(threading.get_ident))

    await once()
    assert pool.threads == 1
    await anyio.sleep(0.3)
    assert pool.threads == 0 and not pool_threads("idle-pool")
    await once()
    assert pool.threads == 1


async def test_calls_see_the_callers_context_and_give_back_exceptions() -> None:
    pool = ThreadEnvironments(1, "context-pool")
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="")
    var.set("from the caller")
    async with pool.reserve() as environment:
        assert await environment.run(var.get) == "from the caller"

    def fails() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        async with pool.reserve() as environment:
            await environment.run(fails)
    assert pool.has_room() and pool.stuck == 0


async def test_a_cancelled_wait_for_an_environment_frees_nothing_it_did_not_hold() -> None:
    pool = ThreadEnvironments(1, "wait-pool")
    gate = threading.Event()

    async def hold() -> None:
        async with pool.reserve() as environment:
            await environment.run(gate.wait, 5)

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await anyio.sleep(0.05)
        with anyio.move_on_after(0.05):
            async with pool.reserve():
                pytest.fail("the only environment is busy")
        assert not pool.has_room()
        gate.set()
    assert pool.has_room()


def test_busy_threads_counts_calls_still_running() -> None:
    gate = threading.Event()
    pool = ThreadEnvironments(1, "busy-pool")

    async def abandon() -> None:
        with anyio.move_on_after(0.05):
            async with pool.reserve() as environment:
                await environment.run(gate.wait, 5)

    anyio.run(abandon)  # the loop is gone; the call still runs in its daemon thread
    assert environments.busy_threads() >= 1
    gate.set()
    deadline = time.monotonic() + 5
    while environments.busy_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert environments.busy_threads() == 0


async def test_one_watchdog_expires_each_call_at_its_own_deadline() -> None:
    """Calls with different timeouts share one timer: a shorter deadline that starts later
    still expires first, a longer one is not cut short, and a call that returns in time is
    never expired."""
    pool = ThreadEnvironments(3, "watchdog")
    outcomes: dict[str, float | str] = {}

    async def call(name: str, sleep: float, limit: float) -> None:
        started = time.monotonic()
        environment = await pool.take()
        try:
            await environment.run(time.sleep, sleep, abandon_after=limit)
            outcomes[name] = "returned"
        except environments.CallTimedOut:
            outcomes[name] = time.monotonic() - started
        finally:
            environment.release()

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, "long", 0.6, 0.4)
        await anyio.sleep(0.05)
        tg.start_soon(call, "short", 0.6, 0.1)
        tg.start_soon(call, "in time", 0.05, 0.3)
    assert outcomes["in time"] == "returned"
    assert isinstance(outcomes["short"], float) and 0.09 <= outcomes["short"] < 0.3
    assert isinstance(outcomes["long"], float) and 0.39 <= outcomes["long"] < 0.55
    assert not pool._deadlines and pool._watchdog is None
    await anyio.sleep(0.3)  # the abandoned calls return and give their slots back
    assert pool.stuck == 0 and pool.has_room()

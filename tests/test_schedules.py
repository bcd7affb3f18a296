"""Scheduled events: EventBridge's expressions, the scheduled-event shape, and two replicas
sharing a lease table on moto that fire each tick on time, exactly once between them."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest
from sluiceway.app.service import Service
from sluiceway.config import ConfigError, load_settings
from sluiceway.config.schedules import Cron, Rate, parse_schedule
from sluiceway.pollers.schedules import Clock

from tests.support import async_handlers
from tests.support.sqs import eventually, unique

pytestmark = pytest.mark.anyio

SPEED = 60.0
"""The test clock runs a minute per second."""


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("expression", "after", "next_tick"),
    [
        ("rate(5 minutes)", "2027-01-01T00:03:10", "2027-01-01T00:05:00"),
        ("rate(1 hour)", "2027-01-01T00:03:10", "2027-01-01T01:00:00"),
        ("cron(0 12 * * ? *)", "2027-01-01T12:00:00", "2027-01-02T12:00:00"),
        ("cron(0 18 ? * MON-FRI *)", "2027-01-01T19:00:00", "2027-01-04T18:00:00"),
        ("cron(0 12 ? * 2 *)", "2027-01-01T00:00:00", "2027-01-04T12:00:00"),  # 2 is Monday
        ("cron(0 12 ? * 1,7 *)", "2027-01-01T00:00:00", "2027-01-02T12:00:00"),  # Sun, Sat
        ("cron(0 10 ? * 6L 2027)", "2027-01-01T00:00:00", "2027-01-29T10:00:00"),  # last Friday
        ("cron(15 10 ? * 6#3 *)", "2027-01-01T00:00:00", "2027-01-15T10:15:00"),  # third Friday
        ("cron(0/15 * * * ? *)", "2027-01-01T00:01:00", "2027-01-01T00:15:00"),
        ("cron(0 8 1 * ? *)", "2027-01-01T09:00:00", "2027-02-01T08:00:00"),
    ],
)
def test_eventbridge_expressions(expression: str, after: str, next_tick: str) -> None:
    schedule = parse_schedule(expression)
    assert isinstance(schedule, Rate | Cron)
    assert schedule.next_after(at(after)) == at(next_tick)


@pytest.mark.parametrize(
    ("expression", "rule"),
    [
        ("rate(1 minutes)", "rate(1 minute)"),
        ("rate(5 minute)", "rate(5 minutes)"),
        ("rate(0 minutes)", "positive"),
        ("cron(0 12 * * * *)", "exactly one of day-of-month and day-of-week must be '?'"),
        ("cron(0 12 * *)", "six fields"),
        ("cron(0 12 15W * ? *)", "W (nearest weekday)"),
        ("every day", "must be rate("),
    ],
)
def test_bad_expressions_are_named(expression: str, rule: str) -> None:
    env = {
        "SLUICEWAY_FUNCTIONS__F__HANDLER": "tests.support.async_handlers:tick",
        "SLUICEWAY_SCHEDULES__S__SCHEDULE_EXPRESSION": expression,
        "SLUICEWAY_SCHEDULES__S__FUNCTION_NAME": "f",
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    (problem,) = caught.value.problems
    assert problem.variable == "SLUICEWAY_SCHEDULES__S__SCHEDULE_EXPRESSION"
    assert rule in problem.rule


class FastClock(Clock):
    """A minute passes every second, starting a little before a minute boundary."""

    def __init__(self) -> None:
        self.real_start = time.time()
        self.start = (int(self.real_start) // 60 + 1) * 60 - 50  # 50 s (under a second) before

    def now(self) -> float:
        return self.start + (time.time() - self.real_start) * SPEED

    def real(self, moment: float) -> float:
        return self.real_start + (moment - self.start) / SPEED

    async def sleep_until(self, moment: float) -> None:
        await anyio.sleep(max(0.0, (moment - self.now()) / SPEED))


def replica_env(tmp_path: Path, index: int, table: str, **schedule: str) -> dict[str, str]:
    env = {
        "AWS_REGION": "us-east-1",
        "SLUICEWAY_HTTP__ENABLED": "false",
        "SLUICEWAY_CHECKPOINTS__BACKEND": "dynamodb",
        "SLUICEWAY_CHECKPOINTS__TABLE": table,
        "SLUICEWAY_CHECKPOINTS__PATH": str(tmp_path / f"replica-{index}.db"),
        "SLUICEWAY_FUNCTIONS__TICKER__HANDLER": "tests.support.async_handlers:tick",
        "OTEL_SDK_DISABLED": "true",
    }
    for key, value in schedule.items():
        env[f"SLUICEWAY_SCHEDULES__{key.split('__')[0].upper()}__{key.split('__')[1].upper()}"] = (
            value
        )
    return env


@contextlib.asynccontextmanager
async def replicas(envs: list[dict[str, str]], clock: FastClock) -> AsyncIterator[list[Service]]:
    services = [
        Service(load_settings(env), handle_signals=False, schedule_clock=clock) for env in envs
    ]
    async with anyio.create_task_group() as tg:
        for service in services:
            await tg.start(service.run)
        try:
            yield services
        finally:
            for service in services:
                service.stop()


async def test_two_replicas_fire_each_tick_once_and_on_time(tmp_path: Path, moto_url: str) -> None:
    async_handlers.TICKS.clear()
    table = unique("ticks")
    clock = FastClock()
    schedule = {
        "minutely__schedule_expression": "rate(1 minute)",
        "minutely__function_name": "ticker",
        "fixed__schedule_expression": "cron(0/2 * * * ? *)",
        "fixed__function_name": "ticker",
        "fixed__input": json.dumps({"constant": True}),
        "off__schedule_expression": "rate(1 minute)",
        "off__function_name": "ticker",
        "off__enabled": "false",
    }
    envs = [replica_env(tmp_path, i, table, **schedule) for i in range(2)]

    def times() -> set[str]:
        return {e["time"] for e, _, _ in async_handlers.TICKS if "detail-type" in e}

    async with replicas(envs, clock):
        await eventually(lambda: len(times()) >= 3, timeout=15)
        await anyio.sleep(0.3)
    scheduled = [(e, when) for e, when, _ in async_handlers.TICKS if "detail-type" in e]
    by_time = Counter(e["time"] for e, _ in scheduled)
    assert by_time and all(count == 1 for count in by_time.values()), by_time  # once per tick
    for event, when in scheduled:
        tick = datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()
        assert tick % 60 == 0
        assert 0 <= when - clock.real(tick) < 1.5  # on time: claimed, queued and invoked at once
        assert list(event) == [
            "version",
            "id",
            "detail-type",
            "source",
            "account",
            "time",
            "region",
            "resources",
            "detail",
        ]
        assert event["detail-type"] == "Scheduled Event"
        assert event["source"] == "aws.events"
        assert event["region"] == "us-east-1"
        assert event["resources"] == [f"arn:aws:events:us-east-1:{event['account']}:rule/minutely"]
        assert event["detail"] == {}
        assert event["id"] == str(
            uuid.uuid5(uuid.NAMESPACE_URL, f"sluiceway:schedule:minutely:{int(tick)}")
        )
    minutes = sorted(int(at(t.rstrip("Z")) // 60) for t in by_time)
    assert minutes == list(range(minutes[0], minutes[0] + len(minutes)))  # no tick missed
    constant = [when for e, when, _ in async_handlers.TICKS if e == {"constant": True}]
    even = [m for m in minutes if m % 2 == 0]
    assert len(even) - 1 <= len(constant) <= len(even) + 1  # INPUT, every other minute, once

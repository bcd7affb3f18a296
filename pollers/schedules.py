"""Scheduled events as a source: each tick of a schedule becomes one asynchronous invoke.

Ticks are computed the same way in every replica (rate ticks fall on multiples of the period
since the epoch; cron ticks on the expression's minutes), so with the dynamodb checkpoint backend
the replicas agree on which tick is which, and a conditional write per (schedule, tick) in the
lease table lets exactly one of them fire it. Missed ticks (the service was down) are not fired
late, as EventBridge does not backfill.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import anyio
from botocore.exceptions import ClientError
from sluiceway.config.schedules import ScheduleConfig
from sluiceway.core.aws import AwsClients
from sluiceway.core.aws_retry import call_with_retry, error_code
from sluiceway.pollers.leases import CALL_TIMEOUT_SECONDS

log = logging.getLogger(__name__)

CLAIM_ATTEMPTS = 5
TICK_RECORD_DAYS = 7
"""A fired tick's claim carries an `expiresAt` (epoch seconds) this far ahead, for a TTL."""

Fire = Callable[[str, ScheduleConfig, float], Awaitable[None]]
"""Invoke the schedule's function for the tick at the given epoch second."""


class TickClaims(abc.ABC):
    """Who fires a tick: every claim of one (schedule, tick) but the first is refused."""

    @abc.abstractmethod
    async def claim(self, schedule: str, tick: float) -> bool: ...


class LocalTicks(TickClaims):
    """One process: every tick is its own."""

    async def claim(self, schedule: str, tick: float) -> bool:
        return True


class LeaseTableTicks(TickClaims):
    """Replicas sharing a lease table: a conditional put per (schedule, tick)."""

    def __init__(self, clients: AwsClients, table: str, owner: str) -> None:
        self.clients = clients
        self.table = table
        self.owner = owner

    async def _put(self, item: dict[str, Any]) -> bool:
        """True when this replica wrote the claim, False when another had (not retried)."""
        dynamodb = await self.clients.client("dynamodb")
        try:
            with anyio.fail_after(CALL_TIMEOUT_SECONDS):
                await dynamodb.put_item(
                    TableName=self.table,
                    Item=item,
                    ConditionExpression="attribute_not_exists(shardId)",
                )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    async def claim(self, schedule: str, tick: float) -> bool:
        stamp = tick_time(tick)
        item = {
            "scope": {"S": f"schedule:{schedule}"},
            "shardId": {"S": stamp},
            "owner": {"S": self.owner},
            "expiresAt": {"N": str(int(tick) + TICK_RECORD_DAYS * 86400)},
        }
        try:
            return await call_with_retry(self._put, item, attempts=CLAIM_ATTEMPTS, max_wait=2.0)
        except ClientError as exc:
            log.error(
                "schedule %s: tick %s not fired: the lease table refused (%s)",
                schedule,
                stamp,
                error_code(exc),
            )
            return False
        except Exception as exc:
            log.error(
                "schedule %s: tick %s not fired: lease table unreachable (%s)", schedule, stamp, exc
            )
            return False
        return True


def tick_time(tick: float) -> str:
    """EventBridge's `time`: 2024-01-01T12:00:00Z."""
    return datetime.fromtimestamp(tick, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Clock:
    """Wall-clock time, and sleeping until a moment of it (tests run a faster one)."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, moment: float) -> None:
        await anyio.sleep(max(0.0, moment - self.now()))


class ScheduleTicker:
    """One loop per enabled schedule, asleep until its next tick."""

    def __init__(
        self,
        schedules: Mapping[str, ScheduleConfig],
        claims: TickClaims,
        fire: Fire,
        clock: Clock | None = None,
    ) -> None:
        self.schedules = {n: s for n, s in schedules.items() if s.enabled}
        self.claims = claims
        self.fire = fire
        self.clock = clock or Clock()
        self.fired: dict[str, int] = {name: 0 for name in self.schedules}

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            for name, schedule in self.schedules.items():
                tg.start_soon(self._loop, name, schedule)

    async def _loop(self, name: str, config: ScheduleConfig) -> None:
        schedule = config.schedule
        moment = self.clock.now()
        while True:
            tick = schedule.next_after(moment)
            await self.clock.sleep_until(tick)
            try:
                if await self.claims.claim(name, tick):
                    await self.fire(name, config, tick)
                    self.fired[name] += 1
            except Exception:
                log.exception("schedule %s: tick %s not fired", name, tick_time(tick))
            moment = tick


def scheduled_event(
    name: str, tick: float, *, region: str, account: str, event_id: str
) -> dict[str, Any]:
    """EventBridge's scheduled event, as a rule's target receives it."""
    return {
        "version": "0",
        "id": event_id,
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": tick_time(tick),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{account}:rule/{name}"],
        "detail": {},
    }

"""Shard leases in a DynamoDB table, shared by every replica, as the Kinesis Client Library keeps them.

One item per (scope, shard): owner, lease counter, checkpoint, parent shard ids and tumbling-window
state. Every change — take, renew, release, checkpoint — is a write conditional on the counter
this process last saw (and on the owner), and bumps the counter, so a replica that lost a lease can
never write to it again, and other replicas see a live owner's counter move. Expiry is judged by
`pollers.lease_balance` from when the counter was last seen moving, by the local clock.

`SingleOwnerLeases` is the same interface for stores one process owns (memory, SQLite): every
shard is always held.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import anyio
from botocore.exceptions import ClientError
from sluiceway.core.aws_retry import call_with_retry, error_code
from sluiceway.core.errors import SluicewayError
from sluiceway.pollers.checkpoints import ReadyFor, ShardLeases
from sluiceway.pollers.lease_balance import ExpiryTracker, LeaseView, plan_takes
from sluiceway.pollers.shards import SHARD_END, Shard

log = logging.getLogger(__name__)

CALL_TIMEOUT_SECONDS = 10.0
"""Bound on one lease-table call, retries included, beyond botocore's own timeouts."""
_CONDITION_FAILED = "ConditionalCheckFailedException"



class LeaseTableError(SluicewayError, RuntimeError):
    """The lease table exists but cannot be used (wrong key schema)."""


def replica_id() -> str:
    """Unique per process life: a restarted replica is a new owner, never its own ghost."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class Lease:
    scope: str
    shard_id: str
    owner: str | None = None
    counter: int = 0
    checkpoint: str | None = None
    parents: tuple[str, ...] = ()
    window: str | None = None

    @property
    def view(self) -> LeaseView:
        return LeaseView(self.shard_id, self.owner, self.counter)

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Lease:
        def s(name: str) -> str | None:
            value = item.get(name)
            return None if value is None else str(value["S"])

        parents = tuple(sorted(item.get("parentShardIds", {}).get("SS", [])))
        return cls(
            scope=str(item["scope"]["S"]),
            shard_id=str(item["shardId"]["S"]),
            owner=s("leaseOwner"),
            counter=int(item.get("leaseCounter", {"N": "0"})["N"]),
            checkpoint=s("checkpoint"),
            parents=parents,
            window=s("windowState"),
        )


class LeaseTable:
    """The DynamoDB calls, each bounded in time; a failed condition answers False, never raises."""

    KEY_SCHEMA = [
        {"AttributeName": "scope", "KeyType": "HASH"},
        {"AttributeName": "shardId", "KeyType": "RANGE"},
    ]

    def __init__(self, client_factory: Callable[[], Any], table: str) -> None:
        self._client_factory = client_factory
        self.table = table

    async def _client(self) -> Any:
        return await self._client_factory()

    async def _call(self, name: str, **params: Any) -> Any:
        client = await self._client()
        with anyio.fail_after(CALL_TIMEOUT_SECONDS):
            return await getattr(client, name)(TableName=self.table, **params)

    async def ensure(self) -> None:
        """Create the table (on-demand billing) when absent; check its key schema when present."""
        client = await self._client()
        try:
            with anyio.fail_after(CALL_TIMEOUT_SECONDS):
                description = (await client.describe_table(TableName=self.table))["Table"]
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            log.info("creating lease table %s", self.table)
            try:
                with anyio.fail_after(CALL_TIMEOUT_SECONDS):
                    await client.create_table(
                        TableName=self.table,
                        KeySchema=self.KEY_SCHEMA,
                        AttributeDefinitions=[
                            {"AttributeName": "scope", "AttributeType": "S"},
                            {"AttributeName": "shardId", "AttributeType": "S"},
                        ],
                        BillingMode="PAY_PER_REQUEST",
                    )
            except ClientError as create_exc:  # another replica created it first
                if error_code(create_exc) != "ResourceInUseException":
                    raise
            description = await self._wait_active(client)
        keys = sorted((k["AttributeName"], k["KeyType"]) for k in description["KeySchema"])
        if keys != [("scope", "HASH"), ("shardId", "RANGE")]:
            raise LeaseTableError(
                f"lease table {self.table} exists with key schema {keys}; it needs scope (HASH, S) "
                "and shardId (RANGE, S) — name a new table with SLUICEWAY_CHECKPOINTS__TABLE"
            )

    async def _wait_active(self, client: Any) -> Any:
        with anyio.fail_after(60):
            while True:
                description = (await client.describe_table(TableName=self.table))["Table"]
                if description.get("TableStatus", "ACTIVE") == "ACTIVE":
                    return description
                await anyio.sleep(0.5)

    async def list(self, scope: str) -> list[Lease]:
        leases: list[Lease] = []
        params: dict[str, Any] = {
            "KeyConditionExpression": "#s = :s",
            "ExpressionAttributeNames": {"#s": "scope"},
            "ExpressionAttributeValues": {":s": {"S": scope}},
            "ConsistentRead": True,
        }
        while True:
            response = await self._call("query", **params)
            leases.extend(Lease.from_item(item) for item in response.get("Items", []))
            if not response.get("LastEvaluatedKey"):
                return leases
            params["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    async def get(self, scope: str, shard_id: str) -> Lease | None:
        response = await self._call("get_item", Key=self._key(scope, shard_id), ConsistentRead=True)
        item = response.get("Item")
        return None if item is None else Lease.from_item(item)

    @staticmethod
    def _key(scope: str, shard_id: str) -> dict[str, Any]:
        return {"scope": {"S": scope}, "shardId": {"S": shard_id}}

    async def create(self, scope: str, shard: Shard) -> bool:
        """A free lease for a newly seen shard; False when another replica created it first."""
        item: dict[str, Any] = {**self._key(scope, shard.shard_id), "leaseCounter": {"N": "0"}}
        if shard.parents:
            item["parentShardIds"] = {"SS": sorted(set(shard.parents))}
        try:
            await self._call(
                "put_item", Item=item, ConditionExpression="attribute_not_exists(shardId)"
            )
        except ClientError as exc:
            if error_code(exc) == _CONDITION_FAILED:
                return False
            raise
        return True

    async def _update(
        self,
        lease: Lease,
        *,
        expect_owner: str | None,
        set_owner: str | None,
        extra_set: dict[str, Any] | None = None,
        remove: Iterable[str] = (),
    ) -> bool:
        """Counter + 1 (and the given changes) if the counter and owner are as expected."""
        names: dict[str, str] = {"#c": "leaseCounter", "#o": "leaseOwner"}
        values: dict[str, Any] = {":old": {"N": str(lease.counter)}, ":one": {"N": "1"}}
        sets = ["#c = #c + :one"]
        removes = list(remove)
        if set_owner is None:
            removes.append("#o")
        else:
            sets.append("#o = :new_owner")
            values[":new_owner"] = {"S": set_owner}
        for i, (attribute, value) in enumerate((extra_set or {}).items()):
            names[f"#x{i}"] = attribute
            if value is None:
                removes.append(f"#x{i}")
            else:
                sets.append(f"#x{i} = :x{i}")
                values[f":x{i}"] = {"S": value}
        condition = "#c = :old AND "
        if expect_owner is None:
            condition += "attribute_not_exists(#o)"
        else:
            condition += "#o = :old_owner"
            values[":old_owner"] = {"S": expect_owner}
        expression = "SET " + ", ".join(sets)
        if removes:
            expression += " REMOVE " + ", ".join(removes)
        try:
            await self._call(
                "update_item",
                Key=self._key(lease.scope, lease.shard_id),
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if error_code(exc) == _CONDITION_FAILED:
                return False
            raise
        return True

    async def take(self, lease: Lease, me: str) -> Lease | None:
        """Take a free, expired or stolen lease as last seen; None if it changed meanwhile."""
        ok = await self._update(lease, expect_owner=lease.owner, set_owner=me)
        return replace(lease, owner=me, counter=lease.counter + 1) if ok else None

    async def renew(self, lease: Lease) -> Lease | None:
        ok = await self._update(lease, expect_owner=lease.owner, set_owner=lease.owner)
        return replace(lease, counter=lease.counter + 1) if ok else None

    async def release(self, lease: Lease) -> bool:
        return await self._update(lease, expect_owner=lease.owner, set_owner=None)

    async def write(self, lease: Lease, **attributes: str | None) -> Lease | None:
        """Checkpoint or window state, only while `lease` is still held as last seen."""
        ok = await self._update(
            lease, expect_owner=lease.owner, set_owner=lease.owner, extra_set=attributes
        )
        if not ok:
            return None
        changes: dict[str, Any] = {"counter": lease.counter + 1}
        if "checkpoint" in attributes:
            changes["checkpoint"] = attributes["checkpoint"]
        if "windowState" in attributes:
            changes["window"] = attributes["windowState"]
        return replace(lease, **changes)


class TableLeases(ShardLeases):
    """One scope's leases in a `LeaseTable`, for one replica (`owner`)."""

    def __init__(
        self,
        table: LeaseTable,
        scope: str,
        owner: str,
        *,
        lease_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table = table
        self.scope = scope
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.renew_interval = max(0.05, lease_seconds / 3 - 0.025)
        self._clock = clock
        self._tracker = ExpiryTracker(lease_seconds)
        self._held: dict[str, Lease] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self.last_scan: list[Lease] = []
        self.on_lost: Callable[[str], None] | None = None
        """Called the moment a loss is seen, so the shard's reader stops before its next batch."""

    def held(self) -> set[str]:
        return set(self._held)

    def expires_in(self, shard_id: str) -> float | None:
        """Seconds until the lease would count as expired, as this replica judges it (None: free)."""
        lease = next((lease for lease in self.last_scan if lease.shard_id == shard_id), None)
        if lease is None or lease.owner is None:
            return None
        quiet = self._tracker.quiet_for(shard_id, self._clock())
        return round(max(0.0, self.lease_seconds - quiet), 1)

    def _lock(self, shard_id: str) -> anyio.Lock:
        return self._locks.setdefault(shard_id, anyio.Lock())

    async def sync(self, shards: list[Shard], ready_for: ReadyFor) -> None:
        leases = {lease.shard_id: lease for lease in await self.table.list(self.scope)}
        for shard in shards:
            if shard.shard_id not in leases:
                await self.table.create(self.scope, shard)
                leases[shard.shard_id] = Lease(self.scope, shard.shard_id, parents=shard.parents)
        now = self._clock()
        scan = list(leases.values())
        self.last_scan = scan
        self._tracker.observe((lease.view for lease in scan), now)
        for shard_id, held in list(self._held.items()):
            seen = leases.get(shard_id)
            if seen is not None and held.counter < seen.counter and seen.owner != self.owner:
                self._lost(shard_id, "taken by " + str(seen.owner))
        ready = ready_for({lease.shard_id: lease.checkpoint for lease in scan})
        candidates = [
            lease.view
            for lease in scan
            if lease.shard_id in ready and lease.checkpoint != SHARD_END
        ]
        expired = {view.key for view in candidates if self._tracker.expired(view, now)}
        plan = plan_takes(candidates, self.owner, expired, held=set(self._held))
        for view in (*plan.take, *plan.steal):
            lease = leases[view.key]
            async with self._lock(view.key):
                taken = await self.table.take(lease, self.owner)
            if taken is None:
                continue
            verb = "stole" if view in plan.steal else "took"
            log.info("%s lease %s of %s from %s", verb, view.key, self.scope, lease.owner)
            self._held[view.key] = taken

    def _lost(self, shard_id: str, why: str) -> None:
        if self._held.pop(shard_id, None) is not None:
            log.warning("lost lease %s of %s (%s)", shard_id, self.scope, why)
            if self.on_lost is not None:
                self.on_lost(shard_id)

    async def renew(self) -> set[str]:
        lost: set[str] = set()
        for shard_id in list(self._held):
            async with self._lock(shard_id):
                lease = self._held.get(shard_id)
                if lease is None:
                    lost.add(shard_id)
                    continue
                try:
                    renewed = await call_with_retry(
                        self.table.renew, lease, attempts=3, max_wait=self.renew_interval / 3
                    )
                except Exception as exc:  # the lease may yet expire; try again
                    log.warning("renewing %s failed: %s", shard_id, error_code(exc))
                    continue
                if renewed is None:
                    self._lost(shard_id, "its counter moved")
                    lost.add(shard_id)
                else:
                    self._held[shard_id] = renewed
        return lost

    async def write(self, shard_id: str, **attributes: str | None) -> bool:
        """A checkpoint or window write while the lease is held; False once it is not."""
        async with self._lock(shard_id):
            lease = self._held.get(shard_id)
            if lease is None:
                return False
            written: Lease | None = None
            with anyio.move_on_after(self.lease_seconds):
                written = await call_with_retry(self.table.write, lease, **attributes)
            if written is None:
                self._lost(shard_id, "its counter moved before a checkpoint")
                return False
            self._held[shard_id] = written
            return True

    async def release(self, shard_id: str) -> None:
        """Clear the owner so another replica takes the lease at once (shard end, shutdown)."""
        async with self._lock(shard_id):
            lease = self._held.pop(shard_id, None)
            if lease is None:
                return
            try:
                await call_with_retry(self.table.release, lease, attempts=3, max_wait=1.0)
            except Exception as exc:  # it will expire instead
                log.warning("releasing %s failed (%s); it will expire", shard_id, error_code(exc))

    async def release_all(self) -> None:
        for shard_id in list(self._held):
            await self.release(shard_id)
        if self._held:
            return
        # A take whose reply was cut off (a stop cancels a lease sync) owns a lease this replica
        # never learnt of: find such leases by owner, so none waits for expiry after a clean stop.
        try:
            leftovers = [
                lease for lease in await self.table.list(self.scope) if lease.owner == self.owner
            ]
            for lease in leftovers:
                await call_with_retry(self.table.release, lease, attempts=3, max_wait=1.0)
        except Exception as exc:  # they will expire instead
            log.warning(
                "releasing leases of %s failed (%s); they will expire", self.scope, error_code(exc)
            )
            return
        log.info("released every lease of %s", self.scope)

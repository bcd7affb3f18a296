"""Shard leases in a DynamoDB table, shared by every replica, as the Kinesis Client Library keeps them.

One item per (scope, shard): owner, lease counter, checkpoint, parent shard ids and tumbling-window
state. Every change — take, renew, release, checkpoint — is a write conditional on the counter
this process last saw (and on the owner), and bumps the counter, so a replica that lost a lease can
never write to it again, and other replicas see a live owner's counter move. Expiry is judged by
`pollers.lease_balance` from when the counter was last seen moving, by the local clock.

Rebalancing never runs a shard on two replicas at once (KCL 3's graceful lease hand-off): a
replica that steals does not take the lease, it marks it (`handoffTo`, a conditional write like
any other). The owner sees the mark at its next renewal, checkpoint or scan, stops reading the
shard after the batches in flight, checkpoints, and hands the lease to the taker; only then does
the taker read, from that checkpoint. Every path ends with the shard read: an owner that stops
hands marked leases over as it releases; a marked lease without a reader is handed over at once;
an owner that dies stops renewing, so its lease expires and is taken as before; and a taker that
waited `handoff_timeout` (longer than any batch may take) takes the lease anyway. Only a crash or
a partition longer than the lease can make two replicas handle one shard's records.

`SingleOwnerLeases` is the same interface for stores one process owns (memory, SQLite): every
shard is always held.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
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
DEFAULT_HANDOFF_TIMEOUT_SECONDS = 30.0
"""How long a taker waits for the owner to hand a lease over before taking it anyway (KCL's
default); a stream poller sets it from the function timeout."""
_CONDITION_FAILED = "ConditionalCheckFailedException"
HANDOFF_ATTRIBUTE = "handoffTo"


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
    handoff_to: str | None = None
    """A replica that asked for this lease (a steal waiting for the owner's batch in flight)."""

    @property
    def view(self) -> LeaseView:
        return LeaseView(self.shard_id, self.owner, self.counter, self.handoff_to)

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
            handoff_to=s(HANDOFF_ATTRIBUTE),
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
        expect_handoff: str | None = None,
        no_handoff: bool = False,
    ) -> bool:
        """Counter + 1 (and the given changes) if the counter and owner are as expected.

        `extra_set` values of None remove the attribute; `expect_handoff` / `no_handoff` add a
        condition on the hand-off mark."""
        names: dict[str, str] = {"#c": "leaseCounter", "#o": "leaseOwner"}
        values: dict[str, Any] = {":old": {"N": str(lease.counter)}, ":one": {"N": "1"}}
        sets = ["#c = #c + :one"]
        removes: list[str] = []
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
        if expect_handoff is not None or no_handoff:
            names["#h"] = HANDOFF_ATTRIBUTE
            if no_handoff:
                condition += " AND attribute_not_exists(#h)"
            else:
                condition += " AND #h = :handoff"
                values[":handoff"] = {"S": expect_handoff}
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
        """Take a free, expired or stolen lease as last seen (clearing any hand-off mark);
        None if it changed meanwhile."""
        ok = await self._update(
            lease, expect_owner=lease.owner, set_owner=me, extra_set={HANDOFF_ATTRIBUTE: None}
        )
        return replace(lease, owner=me, counter=lease.counter + 1, handoff_to=None) if ok else None

    async def renew(self, lease: Lease) -> Lease | None:
        ok = await self._update(lease, expect_owner=lease.owner, set_owner=lease.owner)
        return replace(lease, counter=lease.counter + 1) if ok else None

    async def release(self, lease: Lease) -> bool:
        """No owner and no mark: anyone may take it at once."""
        return await self._update(
            lease, expect_owner=lease.owner, set_owner=None, extra_set={HANDOFF_ATTRIBUTE: None}
        )

    async def request_handoff(self, lease: Lease, taker: str) -> Lease | None:
        """Mark a live lease for `taker`; the owner keeps it until its batch in flight is done.
        None if the lease changed meanwhile or another replica asked first."""
        ok = await self._update(
            lease,
            expect_owner=lease.owner,
            set_owner=lease.owner,
            extra_set={HANDOFF_ATTRIBUTE: taker},
            no_handoff=True,
        )
        return replace(lease, counter=lease.counter + 1, handoff_to=taker) if ok else None

    async def hand_over(self, lease: Lease) -> bool:
        """The owner gives a marked lease to the replica that asked for it."""
        assert lease.handoff_to is not None
        return await self._update(
            lease,
            expect_owner=lease.owner,
            set_owner=lease.handoff_to,
            extra_set={HANDOFF_ATTRIBUTE: None},
            expect_handoff=lease.handoff_to,
        )

    async def withdraw(self, lease: Lease, taker: str) -> bool:
        """A taker that stops before the owner handed over takes its request back."""
        ok = await self._update(
            lease,
            expect_owner=lease.owner,
            set_owner=lease.owner,
            extra_set={HANDOFF_ATTRIBUTE: None},
            expect_handoff=taker,
        )
        return ok

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
        handoff_timeout: float | None = None,
    ) -> None:
        self.table = table
        self.scope = scope
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.renew_interval = max(0.05, lease_seconds / 3 - 0.025)
        self.handoff_timeout = (
            handoff_timeout if handoff_timeout is not None else DEFAULT_HANDOFF_TIMEOUT_SECONDS
        )
        self._clock = clock
        self._tracker = ExpiryTracker(lease_seconds)
        self._held: dict[str, Lease] = {}
        self._handing_off: set[str] = set()
        """Held leases a taker asked for: read no more, handed over once their batches end."""
        self._requested: dict[str, float] = {}
        """Leases this replica asked for (shard → when), not yet handed over."""
        self._locks: dict[str, anyio.Lock] = {}
        self.last_scan: list[Lease] = []
        self.on_lost: Callable[[str], None] | None = None
        """Called the moment a loss is seen, so the shard's reader stops before its next batch."""
        self.on_handoff: Callable[[str], None] | None = None
        """Called the moment a hand-off request is seen, so the shard's reader stops too."""

    def held(self) -> set[str]:
        """Leases this replica reads: held and not being handed over."""
        return set(self._held) - self._handing_off

    def handing_off(self) -> set[str]:
        return self._handing_off & set(self._held)

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
            if seen is None:
                continue
            if held.counter < seen.counter and seen.owner != self.owner:
                self._lost(shard_id, "taken by " + str(seen.owner))
            elif seen.owner == self.owner and seen.handoff_to is not None:
                self._asked_for(shard_id, seen.handoff_to)
        ready = ready_for({lease.shard_id: lease.checkpoint for lease in scan})
        candidates = [
            lease.view
            for lease in scan
            if lease.shard_id in ready and lease.checkpoint != SHARD_END
        ]
        expired = {view.key for view in candidates if self._tracker.expired(view, now)}
        taken = await self._take_handed_over(candidates, leases, now, expired)
        plan = plan_takes(candidates, self.owner, expired, held=set(self._held) | taken)
        for view in plan.take:
            await self._take(leases[view.key], "took")
        for view in plan.steal:
            await self._ask_for(leases[view.key])

    async def _take(self, lease: Lease, verb: str) -> bool:
        async with self._lock(lease.shard_id):
            taken = await self.table.take(lease, self.owner)
        if taken is None:  # changed meanwhile; a request still waiting is tried again next sync
            return False
        self._requested.pop(lease.shard_id, None)
        log.info("%s lease %s of %s from %s", verb, lease.shard_id, self.scope, lease.owner)
        self._held[lease.shard_id] = taken
        return True

    async def _take_handed_over(
        self, candidates: list[LeaseView], leases: dict[str, Lease], now: float, expired: set[str]
    ) -> set[str]:
        """Leases handed over to this replica are taken whatever the fair share says; a request
        the owner has not answered within `handoff_timeout` is taken over anyway (a lease whose
        counter stopped moving is expired, and taken by the plan as before)."""
        taken: set[str] = set()
        for view in candidates:
            lease = leases[view.key]
            if view.key in self._held:
                continue
            if lease.owner == self.owner:
                if await self._take(lease, "took handed-over"):
                    taken.add(view.key)
                continue
            asked = self._requested.get(view.key)
            if asked is None:
                continue
            if lease.handoff_to != self.owner:
                self._requested.pop(view.key, None)  # released, taken, or never marked
            elif view.key not in expired and now - asked >= self.handoff_timeout:
                log.warning(
                    "lease %s of %s: %s did not hand it over within %.0fs; taking it",
                    view.key,
                    self.scope,
                    lease.owner,
                    self.handoff_timeout,
                )
                if await self._take(lease, "took"):
                    taken.add(view.key)
        return taken

    async def _ask_for(self, lease: Lease) -> None:
        """A steal: mark the lease for this replica; its owner hands it over after its batch."""
        marked = await self.table.request_handoff(lease, self.owner)
        if marked is None:
            return
        self._requested[lease.shard_id] = self._clock()
        log.info("asked %s to hand over lease %s of %s", lease.owner, lease.shard_id, self.scope)

    def _asked_for(self, shard_id: str, taker: str) -> None:
        """A taker marked a lease this replica holds: stop reading it, hand it over after."""
        if shard_id in self._handing_off or shard_id not in self._held:
            return
        self._handing_off.add(shard_id)
        log.info(
            "%s asked for lease %s of %s; handing it over after the batches in flight",
            taker,
            shard_id,
            self.scope,
        )
        if self.on_handoff is not None:
            self.on_handoff(shard_id)

    def _lost(self, shard_id: str, why: str) -> None:
        self._handing_off.discard(shard_id)
        if self._held.pop(shard_id, None) is not None:
            log.warning("lost lease %s of %s (%s)", shard_id, self.scope, why)
            if self.on_lost is not None:
                self.on_lost(shard_id)

    async def _still_mine(self, shard_id: str) -> Lease | None:
        """After a refused write: the lease as it is now if this replica still owns it (a taker's
        mark moved its counter), None (and lost) if another replica took it."""
        seen = await call_with_retry(
            self.table.get, self.scope, shard_id, attempts=3, max_wait=self.renew_interval / 3
        )
        if seen is None or seen.owner != self.owner:
            self._lost(shard_id, "its counter moved")
            return None
        self._held[shard_id] = seen
        if seen.handoff_to is not None:
            self._asked_for(shard_id, seen.handoff_to)
        return seen

    async def _conditional(
        self, shard_id: str, change: Callable[[Lease], Awaitable[Lease | None]]
    ) -> Lease | None:
        """Apply `change` to the held lease (call with its lock held); when the counter moved
        under it but the lease is still this replica's, once more on the lease as it is now."""
        for _ in range(2):
            lease = self._held.get(shard_id)
            if lease is None:
                return None
            changed = await change(lease)
            if changed is not None:
                self._held[shard_id] = changed
                return changed
            if await self._still_mine(shard_id) is None:
                return None
        return None

    async def renew(self) -> set[str]:
        lost: set[str] = set()
        for shard_id in list(self._held):
            async with self._lock(shard_id):
                if shard_id not in self._held:
                    lost.add(shard_id)
                    continue

                async def renew(lease: Lease) -> Lease | None:
                    return await call_with_retry(
                        self.table.renew, lease, attempts=3, max_wait=self.renew_interval / 3
                    )

                try:
                    renewed = await self._conditional(shard_id, renew)
                except Exception as exc:  # the lease may yet expire; try again
                    log.warning("renewing %s failed: %s", shard_id, error_code(exc))
                    continue
                if renewed is None and shard_id not in self._held:
                    lost.add(shard_id)
        return lost

    async def write(self, shard_id: str, **attributes: str | None) -> bool:
        """A checkpoint or window write while the lease is held; False once it is not."""
        async with self._lock(shard_id):
            if shard_id not in self._held:
                return False

            async def write(lease: Lease) -> Lease | None:
                return await call_with_retry(self.table.write, lease, **attributes)

            written: Lease | None = None
            with anyio.move_on_after(self.lease_seconds):
                written = await self._conditional(shard_id, write)
            if written is None:
                self._lost(shard_id, "its counter moved before a checkpoint")
                return False
            return True

    async def release(self, shard_id: str) -> None:
        """Give the lease up (shard end, shutdown, or a lost reader) so another replica takes it
        at once; a lease a taker asked for goes straight to that taker."""
        async with self._lock(shard_id):
            if shard_id not in self._held:
                return

            async def give_up(lease: Lease) -> Lease | None:
                if lease.handoff_to is not None and lease.checkpoint != SHARD_END:
                    done = await self.table.hand_over(lease)
                else:
                    done = await self.table.release(lease)
                return replace(lease, owner=lease.handoff_to) if done else None

            try:
                given = await call_with_retry(
                    self._conditional, shard_id, give_up, attempts=3, max_wait=1.0
                )
            except Exception as exc:  # it will expire instead
                log.warning("releasing %s failed (%s); it will expire", shard_id, error_code(exc))
                given = None
            if given is not None and given.owner is not None:
                log.info("handed lease %s of %s over to %s", shard_id, self.scope, given.owner)
            self._held.pop(shard_id, None)
            self._handing_off.discard(shard_id)

    async def release_all(self) -> None:
        for shard_id in list(self._held):
            await self.release(shard_id)
        await self._withdraw_requests()
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

    async def _withdraw_requests(self) -> None:
        """A stopping taker takes its requests back, so no owner hands a lease to a replica that
        is gone (one already handed over is released with the leftovers)."""
        for shard_id in list(self._requested):
            self._requested.pop(shard_id, None)
            try:
                lease = await self.table.get(self.scope, shard_id)
                if lease is not None and lease.handoff_to == self.owner:
                    await self.table.withdraw(lease, self.owner)
            except Exception as exc:  # the owner hands it over; it expires from here
                log.warning("withdrawing the request for %s failed: %s", shard_id, error_code(exc))

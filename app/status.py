"""`sluiceway status`: every mapping, shard, owner replica, checkpoint, iterator age and lease.

Two views, shown together when both can be had: the running replica's own `/status` (its state,
counters, and what it knows of each shard), and — with the dynamodb checkpoint backend — the lease
table itself, which is the one place that shows every replica's ownership at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio
import orjson
from aiobotocore.session import get_session
from sluiceway.config.settings import Settings
from sluiceway.core.aws_retry import error_code

STATUS_TIMEOUT_SECONDS = 5.0
MAX_SCAN_PAGES = 100


@dataclass
class StatusReport:
    url: str | None = None
    service: dict[str, Any] | None = None
    service_error: str | None = None
    table: str | None = None
    leases: list[dict[str, Any]] = field(default_factory=list)
    leases_error: str | None = None

    @property
    def found_anything(self) -> bool:
        return self.service is not None or (self.table is not None and self.leases_error is None)


async def _service_status(url: str) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=STATUS_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(f"{url}/status") as r:
        r.raise_for_status()
        return dict(orjson.loads(await r.read()))


async def _lease_items(settings: Settings) -> list[dict[str, Any]]:
    """Every lease item of the configured mappings (the table holds one item per mapping/shard)."""
    table, region = settings.checkpoints.lease_table(settings.aws_region)
    names = tuple(f"{name}|" for name in settings.mappings)
    items: list[dict[str, Any]] = []
    async with get_session().create_client("dynamodb", region_name=region) as ddb:
        params: dict[str, Any] = {"TableName": table}
        for _ in range(MAX_SCAN_PAGES):
            with anyio.fail_after(STATUS_TIMEOUT_SECONDS):
                page = await ddb.scan(**params)
            for item in page.get("Items", []):
                scope = item["scope"]["S"]
                if scope.startswith(names):
                    items.append(
                        {
                            "mapping": scope.split("|", 1)[0],
                            "shard": item["shardId"]["S"],
                            "owner": item.get("leaseOwner", {}).get("S"),
                            "counter": int(item.get("leaseCounter", {"N": "0"})["N"]),
                            "checkpoint": item.get("checkpoint", {}).get("S"),
                        }
                    )
            if "LastEvaluatedKey" not in page:
                break
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return sorted(items, key=lambda i: (i["mapping"], i["shard"]))


async def gather_status(settings: Settings, url: str | None) -> StatusReport:
    report = StatusReport(url=url)
    if url:
        try:
            report.service = await _service_status(url)
        except Exception as exc:
            report.service_error = f"{type(exc).__name__}: {exc}"
    if settings.checkpoints.backend == "dynamodb":
        report.table = settings.checkpoints.table
        try:
            report.leases = await _lease_items(settings)
        except Exception as exc:
            report.leases_error = f"{error_code(exc)}: {exc}"
    return report


def _short(value: object, width: int = 24) -> str:
    text = "-" if value is None else str(value)
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def _since(epoch: object) -> str:
    if not isinstance(epoch, int | float):
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def render(report: StatusReport) -> str:
    lines: list[str] = []
    if report.service is not None:
        lines.append(f"replica at {report.url}")
        for name, stats in report.service.items():
            lines.append(
                f"  {name} ({stats['kind']}): {stats['state']}, {stats['last_processing_result']}"
                f"; polled {stats['polled']}, invoked {stats['invoked']}, failed {stats['failed_invoke']}"
                f", filtered {stats['filtered_out']}, deleted {stats['deleted']}, dropped {stats['dropped']}"
            )
            if stats.get("last_error"):
                lines.append(f"    last error: {stats['last_error']}")
            if stats.get("stuck_environments"):
                lines.append(
                    f"    stuck: {stats['stuck_environments']} of {stats['environments']} "
                    "execution environment(s) held by a timed-out invocation still running"
                )
            waiting = stats.get("waiting_on_destination")
            if waiting:
                lines.append(
                    f"    waiting on {waiting['arn']} since {_since(waiting['since'])}, "
                    f"{waiting['attempts']} failed attempt(s): {waiting['last_error'] or '-'}"
                )
            shards = stats.get("shards") or {}
            if shards:
                lines.append(
                    f"    {'shard':26} {'owner':26} {'here':4} {'checkpoint':26} {'age ms':>8} {'lease s':>7}"
                )
            for shard_id, view in sorted(shards.items()):
                lines.append(
                    f"    {_short(shard_id, 26):26} {_short(view.get('owner'), 26):26} "
                    f"{'yes' if view.get('read_here') else 'no':4} "
                    f"{_short(view.get('checkpoint'), 26):26} "
                    f"{_short(view.get('iterator_age_ms'), 8):>8} "
                    f"{_short(view.get('lease_expires_in_seconds'), 7):>7}"
                )
    elif report.url:
        lines.append(f"replica at {report.url}: not reachable ({report.service_error})")
    if report.table is not None:
        if report.leases_error:
            lines.append(f"lease table {report.table}: not readable ({report.leases_error})")
        else:
            lines.append(f"lease table {report.table}: {len(report.leases)} lease(s)")
            for lease in report.leases:
                lines.append(
                    f"  {lease['mapping']:12} {_short(lease['shard'], 26):26} "
                    f"{_short(lease['owner'], 30):30} counter {lease['counter']:<6} "
                    f"checkpoint {_short(lease['checkpoint'], 26)}"
                )
    return "\n".join(lines)

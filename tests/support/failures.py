"""Stream handlers for failure-handling tests: they fail on 'poison' data and keep what they saw."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

SIZES: list[int] = []
"""Records per invocation (0 for a tumbling window's final invoke)."""
EVENTS: list[dict[str, Any]] = []
"""Every event, whole (window fields included)."""
REQUEST_IDS: list[str] = []
"""Each invocation's `context.aws_request_id`, in step with EVENTS."""
SNAPSHOTS: list[str] = []
"""Each event as a changing handler received it (JSON), before it changed it."""
_lock = threading.Lock()


def reset() -> None:
    with _lock:
        SIZES.clear()
        EVENTS.clear()
        REQUEST_IDS.clear()
        SNAPSHOTS.clear()


def _data(record: dict[str, Any]) -> str:
    if "kinesis" in record:
        return base64.b64decode(record["kinesis"]["data"]).decode(errors="replace")
    return str(record.get("dynamodb", {}).get("Keys", {}))


def _seq(record: dict[str, Any]) -> str:
    if "kinesis" in record:
        return str(record["kinesis"]["sequenceNumber"])
    return str(record["dynamodb"]["SequenceNumber"])


def _note(event: dict[str, Any], context: Any = None) -> list[dict[str, Any]]:
    with _lock:
        SIZES.append(len(event["Records"]))
        EVENTS.append(event)
        REQUEST_IDS.append(getattr(context, "aws_request_id", ""))
    return list(event["Records"])


def payloads() -> list[str]:
    with _lock:
        return [_data(r) for e in EVENTS for r in e["Records"]]


def raise_on_poison(event: dict[str, Any], context: Any) -> None:
    if any("poison" in _data(r) for r in _note(event, context)):
        raise RuntimeError("poison record")


def report_poison(event: dict[str, Any], context: Any) -> dict[str, Any]:
    records = _note(event)
    return {
        "batchItemFailures": [{"itemIdentifier": _seq(r)} for r in records if "poison" in _data(r)]
    }


def count_in_window(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Counts records per window in `state`, as a windowed aggregation would."""
    _note(event)
    state = dict(event.get("state") or {})
    state["count"] = state.get("count", 0) + len(event["Records"])
    return {"state": state}


def grow_state(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Keeps every record's data in `state`; data 'big' adds more than Lambda's 1 MB of state."""
    records = _note(event)
    state = dict(event.get("state") or {})
    for record in records:
        data = _data(record)
        state[_seq(record)] = "x" * 1_100_000 if data == "big" else data
    return {"state": state}


def _change_in_place(event: dict[str, Any]) -> None:
    """Everything a handler could change in its event: data, nested objects, the list itself."""
    with _lock:
        SNAPSHOTS.append(json.dumps(event))
    for record in event["Records"]:
        kinesis = record["kinesis"]
        kinesis["data"] = base64.b64encode(b"changed").decode()
        kinesis["partitionKey"] = "changed"
        kinesis["added"] = {"by": "handler"}
        del record["eventID"]
    event["Records"].append({"kinesis": {"data": ""}})
    event["Records"].reverse()


def change_and_raise(event: dict[str, Any], context: Any) -> None:
    _change_in_place(event)
    raise RuntimeError("changed my event, then failed")


async def change_and_raise_async(event: dict[str, Any], context: Any) -> None:
    _change_in_place(event)
    raise RuntimeError("changed my event, then failed")

"""Stream handlers for failure-handling tests: they fail on 'poison' data and keep what they saw."""

from __future__ import annotations

import base64
import threading
from typing import Any

SIZES: list[int] = []
"""Records per invocation (0 for a tumbling window's final invoke)."""
EVENTS: list[dict[str, Any]] = []
"""Every event, whole (window fields included)."""
REQUEST_IDS: list[str] = []
"""Each invocation's `context.aws_request_id`, in step with EVENTS."""
_lock = threading.Lock()


def reset() -> None:
    with _lock:
        SIZES.clear()
        EVENTS.clear()
        REQUEST_IDS.clear()


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

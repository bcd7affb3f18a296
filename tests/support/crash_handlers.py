"""Handlers for tests that run the service as separate processes: each process appends what it
handled to its own JSON-lines file (flushed per batch), so a test can read every replica's view
even after a kill -9.

`<pid>.jsonl` holds one line per record (with its batch's id), written when the batch starts;
`<pid>.batches` one line when a batch starts and one when it ends (same `batch` id), so a test can
tell which batches ran at the same time (a batch cut short by a kill has no end line)."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

_OUT = os.environ.get("REPLICA_TEST_OUT_DIR", "")


def _entry(record: dict[str, Any]) -> dict[str, Any]:
    """(key, number) of a record whatever its source; the producer puts both in every payload."""
    source = record.get("eventSource") or record.get("EventSource")
    if source == "aws:kinesis":
        payload = json.loads(base64.b64decode(record["kinesis"]["data"]))
    elif source == "aws:dynamodb":
        image = record["dynamodb"]["NewImage"]
        payload = {"k": image["id"]["S"], "n": int(image["n"]["N"])}
    else:
        payload = json.loads(record["body"])
    return {"source": record["eventSourceARN"], "k": payload["k"], "n": payload["n"]}


def _shard(record: dict[str, Any]) -> str | None:
    """A Kinesis record names its shard in its eventID (`shardId-…:sequence`)."""
    if record.get("eventSource") == "aws:kinesis":
        return str(record["eventID"]).split(":", 1)[0]
    return None


def _append(name: str, lines: list[str]) -> None:
    with open(os.path.join(_OUT, name), "a") as out:
        out.write("\n".join(lines) + "\n")
        out.flush()


def handle(event: dict[str, Any], context: Any) -> None:
    """Record every record of the batch, then take a little time so batches are in flight."""
    records = event["Records"]
    entries = [_entry(r) for r in records]
    pid = os.getpid()
    batch = uuid.uuid4().hex
    started = {
        "batch": batch,
        "t0": time.time(),
        "source": entries[0]["source"] if entries else None,
        "shard": _shard(records[0]) if records else None,
        "keys": sorted({e["k"] for e in entries}),
    }
    _append(f"{pid}.batches", [json.dumps(started)])
    _append(f"{pid}.jsonl", [json.dumps({**e, "batch": batch}) for e in entries])
    time.sleep(float(os.environ.get("REPLICA_TEST_BATCH_SLEEP", "0.02")))
    _append(f"{pid}.batches", [json.dumps({"batch": batch, "t1": time.time()})])


def handled_numbers(out: Path) -> list[int]:
    """Every record's number that `handle` wrote into `out`, in every process's file."""
    return [
        json.loads(line)["n"]
        for path in sorted(out.glob("*.jsonl"))
        for line in path.read_text().splitlines()
        if line
    ]

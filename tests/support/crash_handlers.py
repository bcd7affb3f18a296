"""Handlers for tests that run the service as separate processes: each process appends what it
handled to its own JSON-lines file (flushed per batch), so a test can read every replica's view
even after a kill -9."""

from __future__ import annotations

import base64
import json
import os
import time
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


def handle(event: dict[str, Any], context: Any) -> None:
    """Record every record of the batch, then take a little time so batches are in flight."""
    lines = [json.dumps(_entry(r)) for r in event["Records"]]
    with open(os.path.join(_OUT, f"{os.getpid()}.jsonl"), "a") as out:
        out.write("\n".join(lines) + "\n")
        out.flush()
    time.sleep(float(os.environ.get("REPLICA_TEST_BATCH_SLEEP", "0.02")))

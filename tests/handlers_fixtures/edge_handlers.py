"""Handlers that misbehave at the edges: one that never returns, one whose error quotes secrets."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

release = threading.Event()
"""In-process tests set it to let `waits` return."""


def hangs(event: dict[str, Any], context: Any) -> None:
    """Never returns within any test: a thread that only the process's end can stop. Each start
    is appended to the file named by HANG_LOG, when set."""
    started = os.environ.get("HANG_LOG")
    if started:
        with open(started, "a") as out:
            out.write(f"{context.aws_request_id}\n")
    time.sleep(3600)


def waits(event: dict[str, Any], context: Any) -> str:
    """Blocks until the test sets `release`."""
    release.wait(60)
    return "released"


def leaks(event: dict[str, Any], context: Any) -> None:
    """Fails with the body, the process's AWS secret key, DB_PASSWORD and the body's card number
    in its message, as a careless `raise` can."""
    body = event["Records"][0]["body"]
    card = json.loads(body)["card"]
    raise RuntimeError(
        f"cannot charge {body} with secret {os.environ.get('AWS_SECRET_ACCESS_KEY')}, "
        f"database password {os.environ.get('DB_PASSWORD')}, card {card}"
    )


class OverlapProbe:
    """Counts invocations running at the same moment, each sleeping `event["sleep"]` seconds."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0

    def __call__(self, event: dict[str, Any], context: Any) -> None:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(event["sleep"])
        with self.lock:
            self.running -= 1


overlap = OverlapProbe()

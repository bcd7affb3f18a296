"""kill -9 with asynchronous events in the queue: 500 Event invokes are accepted by a real
`sluiceway run` process, which is killed mid-way and restarted; every accepted event is invoked
at least once, on both queue backends (SQLite beside the checkpoints, and a shared SQS queue)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tests.support.sqs import eventually, make_queue, sqs_client

pytestmark = pytest.mark.anyio

EVENTS = 500
KILL_AT = 250


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICEWAY_")}
    env.update(
        {
            "SLUICEWAY_LOG_FORMAT": "text",
            "SLUICEWAY_LOG_LEVEL": "WARNING",
            "SLUICEWAY_HTTP__HOST": "127.0.0.1",
            "SLUICEWAY_HTTP__PORT": str(port),
            "SLUICEWAY_API__AUTH": "none",
            "SLUICEWAY_CHECKPOINTS__PATH": str(tmp_path / "sluiceway.db"),
            "SLUICEWAY_FUNCTIONS__RECORD__HANDLER": "tests.support.async_handlers:record",
            "SLUICEWAY_FUNCTIONS__RECORD__TIMEOUT": "1",
            "ASYNC_TEST_OUT_DIR": str(tmp_path),
            "OTEL_SDK_DISABLED": "true",
        }
    )
    env.update(extra)
    return env


def start(env: dict[str, str], tmp_path: Path, index: int) -> subprocess.Popen[bytes]:
    log = open(tmp_path / f"service-{index}.log", "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        [sys.executable, "-m", "sluiceway.app", "run"],
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def invoked(tmp_path: Path) -> set[int]:
    seen: set[int] = set()
    for path in tmp_path.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                seen.add(json.loads(line)["n"])
            except json.JSONDecodeError:
                continue  # a torn last line of the killed process
    return seen


def send_all(port: int, kill: Any) -> set[int]:
    """Event invokes 0..499 (blocking); at KILL_AT the service is killed and restarted. An invoke
    that gets no 202 is sent again: only accepted events count."""
    client = boto3.client(
        "lambda",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(retries={"max_attempts": 0}, connect_timeout=1, read_timeout=10),
    )
    accepted: set[int] = set()
    n = 0
    deadline = time.monotonic() + 60
    while n < EVENTS:
        assert time.monotonic() < deadline, f"only {n} invokes accepted in 60 s"
        if n == KILL_AT and not kill.done:
            kill()
        try:
            response = client.invoke(
                FunctionName="record", InvocationType="Event", Payload=json.dumps({"n": n})
            )
        except (BotoCoreError, ClientError):
            time.sleep(0.1)  # down, or not up yet
            continue
        if response["StatusCode"] == 202:
            accepted.add(n)
            n += 1
    return accepted


class Killer:
    def __init__(self, env: dict[str, str], tmp_path: Path) -> None:
        self.env, self.tmp_path = env, tmp_path
        self.process = start(env, tmp_path, 0)
        self.done = False
        self.invoked_at_kill = 0

    def __call__(self) -> None:
        time.sleep(0.05)  # with a backlog queued behind the running handler
        self.process.send_signal(signal.SIGKILL)
        self.invoked_at_kill = len(invoked(self.tmp_path))
        self.process.wait()
        self.process = start(self.env, self.tmp_path, 1)
        self.done = True


async def run_crash(tmp_path: Path, env: dict[str, str], port: int) -> None:
    killer = Killer(env, tmp_path)
    try:
        accepted = await anyio.to_thread.run_sync(send_all, port, killer)
        assert killer.done and len(accepted) == EVENTS
        assert killer.invoked_at_kill < KILL_AT, "the kill must leave accepted events queued"
        await eventually(lambda: accepted <= invoked(tmp_path), timeout=90, interval=0.5)
    finally:
        killer.process.send_signal(signal.SIGTERM)
        try:
            killer.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            killer.process.kill()
    logs = "".join(p.read_text() for p in sorted(tmp_path.glob("service-*.log")))  # noqa: ASYNC240
    assert "Traceback" not in logs, logs


async def test_kill_9_loses_no_accepted_event_sqlite(tmp_path: Path) -> None:
    port = free_port()
    await run_crash(tmp_path, service_env(tmp_path, port), port)


async def test_kill_9_loses_no_accepted_event_sqs(tmp_path: Path, moto_url: str) -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "async-events")
    port = free_port()
    env = service_env(
        tmp_path,
        port,
        SLUICEWAY_ASYNC__BACKEND="sqs",
        SLUICEWAY_ASYNC__QUEUE=url,
        SLUICEWAY_FUNCTIONS__RECORD__HANDLER_THREADS="2",
        ASYNC_TEST_SLEEP="0.05",  # slower than accepting through SQS, so a backlog builds
    )
    await run_crash(tmp_path, env, port)

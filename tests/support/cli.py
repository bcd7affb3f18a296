"""The `sluiceway` command as a user runs it: a real process, its environment, its log and HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process

SLUICEWAY = [sys.executable, "-m", "sluiceway.app"]


def cli_env(moto_url: str, **extra: str) -> dict[str, str]:
    """This process's environment without any SLUICEWAY_ setting, pointed at the emulator."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICEWAY_", "OTEL_"))}
    env.update({"AWS_ENDPOINT_URL": moto_url, **extra})
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, Any]:
    """Status and JSON body of a GET (any status)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Running:
    """A `sluiceway run` process whose stderr (its log) goes to a file the test reads as it runs."""

    def __init__(self, process: Process, log: Path) -> None:
        self.process = process
        self.log = log

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def records(self) -> list[dict[str, Any]]:
        """The JSON log lines (every line, when the log is JSON)."""
        out = []
        for line in self.lines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    out.append(record)
        return out

    async def stop(self) -> int:
        """SIGTERM, as a container runtime stops it; the exit code."""
        self.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            return await self.process.wait()


@contextlib.asynccontextmanager
async def running(env: dict[str, str], log: Path, *, stderr: Any = None) -> AsyncIterator[Running]:
    """`sluiceway run` with `env`; killed on the way out if the test did not stop it."""
    with log.open("wb") as sink:
        process = await anyio.open_process(
            [*SLUICEWAY, "run"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sink if stderr is None else stderr,
        )
        try:
            yield Running(process, log)
        finally:
            if process.returncode is None:
                process.kill()
                with anyio.fail_after(10):
                    await process.wait()

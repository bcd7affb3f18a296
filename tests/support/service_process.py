"""`sluiceway run` as a separate process, as a user runs it: its environment, HTTP endpoints and
captured stderr."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO, Any

import anyio
from anyio.abc import Process

SLUICEWAY = [sys.executable, "-m", "sluiceway.app"]


def service_env(moto_url: str, **extra: str) -> dict[str, str]:
    """The test process's environment without SLUICEWAY_* variables, pointed at moto."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICEWAY_")}
    env.update({"AWS_ENDPOINT_URL": moto_url, "SLUICEWAY_HTTP__HOST": "127.0.0.1", **extra})
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningService:
    process: Process
    port: int
    stderr: IO[bytes]

    def get(self, path: str) -> tuple[int, bytes]:
        """GET a path of the service's HTTP server (blocking; short)."""
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
        except OSError:
            return 0, b""

    def json(self, path: str) -> tuple[int, Any]:
        status, body = self.get(path)
        return status, json.loads(body) if body else None

    def logs(self) -> str:
        """Everything the process wrote to stderr so far."""
        self.stderr.flush()
        with open(self.stderr.name, "rb") as f:
            return f.read().decode(errors="replace")


@contextlib.asynccontextmanager
async def sluiceway_run(env: dict[str, str]) -> AsyncIterator[RunningService]:
    """`sluiceway run` with `env` (HTTP on a free port), killed if the test leaves it running."""
    port = free_port()
    env = {**env, "SLUICEWAY_HTTP__PORT": str(port)}
    with tempfile.NamedTemporaryFile(prefix="sluiceway-stderr-", suffix=".log") as stderr:
        process = await anyio.open_process(
            [*SLUICEWAY, "run"], env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
        try:
            yield RunningService(process, port, stderr)
        finally:
            if process.returncode is None:
                process.kill()
                with anyio.fail_after(10):
                    await process.wait()

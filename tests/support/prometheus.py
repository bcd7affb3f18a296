"""Prometheus (Debian's `prometheus` package, which `make test` installs) on a free loopback port."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.emulators import Emulator, _free_port, _start_listening


def prometheus_path() -> Path | None:
    configured = os.environ.get("SLUICEWAY_TEST_PROMETHEUS")
    found = configured or shutil.which("prometheus")
    return Path(found) if found and Path(found).exists() else None


def start_prometheus(binary: Path, config: Path, data: Path, timeout: float = 30.0) -> Emulator:
    """Prometheus scraping what `config` names, keeping its data in `data`."""
    port = _free_port()
    command = [
        str(binary),
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    emulator = _start_listening("prometheus", command, port, timeout)
    _wait_ready(emulator.url, timeout)
    return emulator


def _wait_ready(url: str, timeout: float) -> None:
    """The port opens before the storage is ready; queries answer 503 until /-/ready says 200."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"prometheus at {url} not ready within {timeout}s")
        time.sleep(0.1)


def instant_query(url: str, query: str) -> list[dict[str, Any]]:
    """The result vector of an instant query (empty when nothing matches)."""
    address = f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(address, timeout=10) as response:
        answer = json.load(response)
    if answer.get("status") != "success":
        raise AssertionError(f"{query}: {answer}")
    return list(answer["data"]["result"])

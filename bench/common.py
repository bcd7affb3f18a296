"""What every benchmark shares: the machine, child processes, emulators and medians.

Consumers run as child processes and report their own CPU (getrusage / process.cpuUsage), so a
consumer is charged only for what it did, never for the emulator or the harness.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
PEERS_VENV = BENCH / ".venv-peers"
PEERS_PYTHON = PEERS_VENV / "bin" / "python"
NODE_MODULES = BENCH / "node_modules"
REGION = "us-east-1"
CHILD_TIMEOUT = 300.0
"""No consumer process may outlive this many seconds."""


def aws_env(**endpoints: str) -> dict[str, str]:
    """Loopback emulator endpoints and dummy credentials; nothing else of the caller's AWS setup."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SLUICEWAY_"))}
    env.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_REGION=REGION,
        AWS_DEFAULT_REGION=REGION,
        PYTHONPATH=str(ROOT),
    )
    for service, url in endpoints.items():
        env[f"AWS_ENDPOINT_URL_{service.upper()}"] = url
    return env


def machine() -> dict[str, Any]:
    """Cores, CPU model, Python and load: the context every number needs."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


def _cmd_version(command: Sequence[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    return out.stdout.strip() or "not installed"


def _npm_version(package: str, base: Path = NODE_MODULES) -> str:
    try:
        return str(json.loads((base / package / "package.json").read_text())["version"])
    except (OSError, KeyError, ValueError):
        return "not installed"


def versions() -> dict[str, str]:
    """The version of every consumer and emulator in the run."""
    from importlib.metadata import version

    peer_py = [
        str(PEERS_PYTHON),
        "-c",
        "import importlib.metadata as m; print(m.version('async-kinesis'))",
    ]
    ministack = ROOT / ".venv-ministack" / "bin" / "python"
    return {
        "sluiceway": version("sluiceway")
        + " @ "
        + _cmd_version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "aiobotocore": version("aiobotocore"),
        "async-kinesis": _cmd_version(peer_py) if PEERS_PYTHON.exists() else "not installed",
        "sqs-consumer": _npm_version("sqs-consumer"),
        "@aws-sdk/client-sqs": _npm_version("@aws-sdk/client-sqs"),
        "node": _cmd_version(["node", "--version"]),
        "kinesalite": _npm_version("kinesalite", ROOT / "node_modules"),
        "ministack": _cmd_version(
            [str(ministack), "-c", "import importlib.metadata as m; print(m.version('ministack'))"]
        ),
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; enough for a few hundred latency samples."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


@dataclass
class ChildRun:
    """What a consumer process said about itself on its last stdout line."""

    records: int
    seconds: float
    cpu: float
    max_rss_mb: float
    latencies: list[float]
    emulator_share: float = float("nan")
    """The emulator's CPU over the run, as a share of one core (≥ EMULATOR_BOUND: it was the
    bottleneck, and the consumer's rate says more about the emulator than the consumer)."""

    @property
    def cpu_per_10k(self) -> float:
        return self.cpu / max(1, self.records) * 10_000

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


def run_child(
    command: Sequence[str], env: dict[str, str], timeout: float = CHILD_TIMEOUT
) -> ChildRun:
    """Run one consumer process to completion and parse its self-report."""
    done = subprocess.run(
        list(command),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"{' '.join(command[:4])} failed ({done.returncode}): {done.stderr[-2000:]}"
        )
    report = json.loads(lines[-1])
    return ChildRun(
        records=int(report["records"]),
        seconds=float(report["seconds"]),
        cpu=float(report["cpu"]),
        max_rss_mb=float(report.get("max_rss_mb", 0.0)),
        latencies=[float(x) for x in report.get("latencies", [])],
    )


def python_child(module: str, *args: str, python: Path | str = sys.executable) -> list[str]:
    return [str(python), "-m", module, *args]


def self_report(
    records: int, seconds: float, cpu_start: float, latencies: list[float] | None = None
) -> str:
    """The JSON line a Python consumer prints about itself: CPU since it began consuming."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return json.dumps(
        {
            "records": records,
            "seconds": seconds,
            "cpu": usage.ru_utime + usage.ru_stime - cpu_start,
            "max_rss_mb": usage.ru_maxrss / 1024,
            "latencies": latencies or [],
        }
    )


def cpu_now() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Clock:
    """Wall time since creation, for drains and deadlines."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

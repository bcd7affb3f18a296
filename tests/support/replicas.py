"""Replicas as separate `sluiceway run` processes sharing one lease table, and what their
handlers (`tests.support.crash_handlers`) wrote: records per process, and batches with their
start and end times, from which overlaps and ownership changes are read."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def replica_env(
    tmp_path: Path,
    sources: dict[str, str],
    table: str,
    *,
    lease_seconds: float,
    batch_size: int,
    **extra: str,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICEWAY_")}
    env.update(
        {
            "SLUICEWAY_HTTP__ENABLED": "false",
            "SLUICEWAY_LOG_FORMAT": "text",
            "SLUICEWAY_LOG_LEVEL": "WARNING",
            "SLUICEWAY_CHECKPOINTS__BACKEND": "dynamodb",
            "SLUICEWAY_CHECKPOINTS__TABLE": table,
            "SLUICEWAY_CHECKPOINTS__LEASE_SECONDS": str(lease_seconds),
            "REPLICA_TEST_OUT_DIR": str(tmp_path),
        }
    )
    for name, source in sources.items():
        prefix = f"SLUICEWAY_MAPPINGS__{name.upper()}__"
        env[prefix + "SOURCE"] = source
        env[prefix + "HANDLER"] = "tests.support.crash_handlers:handle"
        env[prefix + "BATCH_SIZE"] = str(batch_size)
        if ":kinesis:" in source or ":dynamodb:" in source:
            env[prefix + "STARTING_POSITION"] = "TRIM_HORIZON"
    env.update(extra)
    return env


def start_replica(env: dict[str, str], tmp_path: Path, index: int) -> subprocess.Popen[bytes]:
    log = open(tmp_path / f"replica-{index}.log", "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        [sys.executable, "-m", "sluiceway.app", "run"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stop_all(replicas: list[subprocess.Popen[bytes]]) -> list[int]:
    """SIGTERM every live replica (a graceful stop), kill what outlives 30 s; exit codes."""
    for process in replicas:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    codes = []
    for process in replicas:
        try:
            codes.append(process.wait(timeout=30))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(process.wait())
    return codes


def _lines(path: Path) -> list[dict[str, Any]]:
    """JSON lines of a file (a torn last line of a killed process skipped)."""
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries


def read_views(tmp_path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every process's handled records, in its order."""
    return {path.stem: _lines(path) for path in tmp_path.glob("*.jsonl")}


def label(source: str) -> str:
    """A queue by its name whether given as a URL or seen as an ARN; streams by their ARN."""
    if ":sqs:" in source or "/sqs" in source or source.startswith("http"):
        return source.rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return source


def seen_numbers(views: dict[str, list[dict[str, Any]]]) -> dict[str, set[int]]:
    out: dict[str, set[int]] = defaultdict(set)
    for entries in views.values():
        for entry in entries:
            out[label(entry["source"])].add(entry["n"])
    return out


@dataclass(frozen=True)
class Batch:
    pid: str
    source: str
    shard: str | None
    keys: tuple[str, ...]
    t0: float
    t1: float | None
    """None: the process was killed while the batch ran."""


def read_batches(tmp_path: Path) -> list[Batch]:
    batches = []
    for path in tmp_path.glob("*.batches"):
        started: dict[str, dict[str, Any]] = {}
        ended: dict[str, float] = {}
        for line in _lines(path):
            if "t1" in line:
                ended[line["batch"]] = line["t1"]
            else:
                started[line["batch"]] = line
        for batch_id, start in started.items():
            batches.append(
                Batch(
                    path.stem,
                    label(start["source"]),
                    start["shard"],
                    tuple(start["keys"]),
                    start["t0"],
                    ended.get(batch_id),
                )
            )
    return batches


def overlaps(
    batches: list[Batch], group: Callable[[Batch], list[Hashable]], longest: float
) -> list[tuple[Batch, Batch]]:
    """Pairs of batches of one group (a shard, a key) run by two processes at the same time;
    a batch cut short by a kill counts as running for `longest` seconds."""
    by_group: dict[Hashable, list[Batch]] = defaultdict(list)
    for batch in batches:
        for name in group(batch):
            by_group[name].append(batch)
    pairs = []
    for members in by_group.values():
        members.sort(key=lambda b: b.t0)
        for i, first in enumerate(members):
            end = first.t1 if first.t1 is not None else first.t0 + longest
            for second in members[i + 1 :]:
                if second.t0 >= end:
                    break
                if second.pid != first.pid:
                    pairs.append((first, second))
    return pairs


def owner_changes(batches: list[Batch], group: Callable[[Batch], list[Hashable]]) -> int:
    """How often a group's batches moved from one process to another, in start order."""
    by_group: dict[Hashable, list[Batch]] = defaultdict(list)
    for batch in batches:
        for name in group(batch):
            by_group[name].append(batch)
    changes = 0
    for members in by_group.values():
        members.sort(key=lambda b: b.t0)
        changes += sum(1 for a, b in pairwise(members) if a.pid != b.pid)
    return changes


def by_shard(batch: Batch) -> list[Hashable]:
    """Kinesis batches by shard; DynamoDB records name no shard, so their keys stand in (a key
    lives in one shard)."""
    if batch.shard is not None:
        return [(batch.source, batch.shard)]
    return [(batch.source, key) for key in batch.keys]

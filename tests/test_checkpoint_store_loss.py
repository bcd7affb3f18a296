"""A SQLite checkpoint store that vanishes under a running `sluiceway run`, and files it cannot
use at start, through the command as a user runs it against moto's Kinesis."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import anyio
import pytest
from sluiceway.app.service import Service
from sluiceway.core.stats import MappingStats
from sluiceway.pollers.checkpoints import CheckpointStoreFailed
from sluiceway.pollers.checkpoints_sqlite import CheckpointStoreLost, SqliteCheckpoints
from sluiceway.pollers.lanes import lane_for

from tests.support import recording
from tests.support.crash_handlers import handled_numbers
from tests.support.sqs import eventually, settings_for
from tests.support.streams import (
    aws_client,
    make_stream,
    put,
    stored_checkpoint,
    stream_mapping,
)

ROOT = Path(__file__).resolve().parents[1]
SLUICEWAY = [sys.executable, "-m", "sluiceway.app"]


def _env(moto_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICEWAY_")}
    env.update({"AWS_ENDPOINT_URL": moto_url, "SLUICEWAY_LOG_FORMAT": "text", **extra})
    return env


def _stream_env(moto_url: str, arn: str, db: Path, **extra: str) -> dict[str, str]:
    return _env(
        moto_url,
        SLUICEWAY_MAPPINGS__CLICKS__SOURCE=arn,
        SLUICEWAY_MAPPINGS__CLICKS__HANDLER="tests.support.crash_handlers:handle",
        SLUICEWAY_MAPPINGS__CLICKS__STARTING_POSITION="TRIM_HORIZON",
        SLUICEWAY_CHECKPOINTS__BACKEND="sqlite",
        SLUICEWAY_CHECKPOINTS__PATH=str(db),
        **extra,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _readyz(port: int) -> tuple[int, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError:
        return None


@pytest.mark.anyio
async def test_a_removed_store_stops_the_service_before_any_checkpoint_goes_into_the_void(
    moto_url: str, tmp_path: Path
) -> None:
    store_dir = tmp_path / "store"
    db = store_dir / "sluiceway.db"
    out = tmp_path / "handled"
    out.mkdir()
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "vanish")
        env = _stream_env(
            moto_url,
            arn,
            db,
            SLUICEWAY_MAPPINGS__CLICKS__BATCH_SIZE="4",
            SLUICEWAY_HTTP__ENABLED="false",
            REPLICA_TEST_OUT_DIR=str(out),
            REPLICA_TEST_BATCH_SLEEP="0.2",
        )
        log_path = tmp_path / "service.log"
        with log_path.open("wb") as log:
            process = await anyio.open_process(
                [*SLUICEWAY, "run"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            first = [(f"k{n % 4}", json.dumps({"k": f"k{n % 4}", "n": n})) for n in range(8)]
            sequences = await put(kinesis, arn, first)
            await eventually(lambda: sorted(handled_numbers(out)) == list(range(8)), timeout=60)
            await eventually(lambda: stored_checkpoint(db) == sequences[-1], timeout=30)
            saved = stored_checkpoint(db)
            # Keep the removed inodes (file and write-ahead log) to look inside afterwards.
            kept = {name: os.open(store_dir / name, os.O_RDONLY) for name in ("sluiceway.db",)}
            if (store_dir / "sluiceway.db-wal").exists():
                kept["sluiceway.db-wal"] = os.open(store_dir / "sluiceway.db-wal", os.O_RDONLY)
            shutil.rmtree(store_dir)
            later = [(f"k{n % 4}", json.dumps({"k": f"k{n % 4}", "n": n})) for n in range(8, 24)]
            await put(kinesis, arn, later)
            with anyio.fail_after(60):
                await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                with anyio.fail_after(10):
                    await process.wait()
    output = log_path.read_text()
    assert process.returncode == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    message = f"checkpoint file {db} was removed while the service ran"
    assert message in output
    last = output.strip().splitlines()[-1]
    assert last.startswith(f"sluiceway: {message}"), last  # the closing line names it once more
    assert any(line for line in output.splitlines() if "ERROR" in line and message in line)
    # Records after the removal were handled (at least once), none was checkpointed anywhere.
    assert set(handled_numbers(out)) > set(range(8))
    assert not db.exists()
    void = tmp_path / "void"
    void.mkdir()
    for name, fd in kept.items():
        shutil.copyfile(f"/proc/self/fd/{fd}", void / name)
        os.close(fd)
    assert stored_checkpoint(void / "sluiceway.db") == saved


def _run_cli(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`run` with the start-up's INFO lines off, so stderr holds only what went wrong."""
    return subprocess.run(
        [*SLUICEWAY, "run"],
        env={**env, "SLUICEWAY_LOG_LEVEL": "WARNING"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/never-read"


def test_a_corrupt_store_is_one_line_naming_the_file_and_what_to_do(
    moto_url: str, tmp_path: Path
) -> None:
    db = tmp_path / "sluiceway.db"
    db.write_bytes(b"not a database, " * 256)
    result = _run_cli(_stream_env(moto_url, ARN, db, SLUICEWAY_HTTP__ENABLED="false"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"sluiceway: checkpoint file {db} is not a usable SQLite database (file is not a "
        "database); move it aside or restore it from a backup (without it, each shard starts "
        "from STARTING_POSITION), or point SLUICEWAY_CHECKPOINTS__PATH at another file"
    )


def test_a_store_in_a_path_that_cannot_be_a_directory_is_one_line(
    moto_url: str, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    db = blocker / "sluiceway.db"
    result = _run_cli(_stream_env(moto_url, ARN, db, SLUICEWAY_HTTP__ENABLED="false"))
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"sluiceway: checkpoint file {db} cannot be written (not a directory")
    assert "SLUICEWAY_CHECKPOINTS__PATH" in line


def test_a_read_only_store_fails_at_start_not_at_its_firststored_checkpoint(
    moto_url: str, tmp_path: Path
) -> None:
    """A read-only file in WAL mode opens fine and used to fail only at the first checkpoint,
    inside the readers' task groups (an exception-group traceback)."""
    db = tmp_path / "sluiceway.db"
    SqliteCheckpoints(db).open().close_sync()
    # Read-only even for root: the immutable attribute (skipped where the file system has none).
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(db)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available here")
    try:
        result = _run_cli(_stream_env(moto_url, ARN, db, SLUICEWAY_HTTP__ENABLED="false"))
    finally:
        subprocess.run([chattr, "-i", str(db)], check=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"sluiceway: checkpoint file {db} cannot be written (attempt to write a readonly "
        "database); make it and its directory writable by the service, or point "
        "SLUICEWAY_CHECKPOINTS__PATH at a writable path"
    )


@pytest.mark.anyio
@pytest.mark.usefixtures("moto_url", "recorder")
async def test_a_lost_store_shows_in_readyz_and_status_while_the_last_batches_finish(
    tmp_path: Path,
) -> None:
    """One lane's checkpoint finds the store gone while the other lane's batch is still in the
    handler: the service is not ready, says why, and stops once that batch is done."""
    store_dir = tmp_path / "store"
    port = _free_port()
    fast, slow = _keys_in_two_lanes()
    release = threading.Event()
    recording.BEHAVIOUR.update(hold_key=slow, release=release, sleep=0.3)
    async with aws_client("kinesis") as kinesis:
        arn = await make_stream(kinesis, "readyz")
        settings = settings_for(
            {
                "clicks": stream_mapping(
                    arn,
                    "hold_key",
                    batch_size=1,
                    parallelization_factor=2,
                    handler_threads=2,
                    function_timeout=60,
                )
            },
            SLUICEWAY_CHECKPOINTS__BACKEND="sqlite",
            SLUICEWAY_CHECKPOINTS__PATH=str(store_dir / "sluiceway.db"),
            SLUICEWAY_HTTP__ENABLED="true",
            SLUICEWAY_HTTP__HOST="127.0.0.1",
            SLUICEWAY_HTTP__PORT=str(port),
        )
        service = Service(settings, handle_signals=False)
        failure: list[BaseException] = []
        stopped = anyio.Event()

        async def run() -> None:
            try:
                await service.run()
            except CheckpointStoreFailed as exc:
                failure.append(exc)
            stopped.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            try:
                await put(kinesis, arn, [(fast, "1")])
                stats = service.registry.mappings["clicks"]
                await eventually(lambda: _checkpointed(stats), timeout=30)
                shutil.rmtree(store_dir)
                # One page: lane 0's record finishes (its checkpoint finds the store gone)
                # while lane 1's is held in the handler.
                await kinesis.put_records(
                    StreamName=arn.rsplit("/", 1)[1],
                    Records=[
                        {"PartitionKey": fast, "Data": b"2"},
                        {"PartitionKey": slow, "Data": b"3"},
                    ],
                )
                await eventually(lambda: service.registry.mappings["clicks"].state == "Failed")
                status, body = await anyio.to_thread.run_sync(_readyz, port)
                assert (status, body["mappings"]) == (503, {"clicks": "Failed"})
                status, body = await anyio.to_thread.run_sync(_status, port)
                assert "was removed while the service ran" in body["clicks"]["last_error"]
                assert not failure  # still finishing the held batch
            finally:
                release.set()
            with anyio.fail_after(30):
                await stopped.wait()
    assert isinstance(failure[0], CheckpointStoreLost)
    assert sorted(recording.kinesis_payloads()) == ["1", "2", "3"]


def _checkpointed(stats: MappingStats) -> bool:
    return any(view.get("checkpoint") for view in stats.shards.values())


def _keys_in_two_lanes() -> tuple[str, str]:
    by_lane: dict[int, str] = {}
    for i in range(100):
        by_lane.setdefault(lane_for(f"key-{i}", 2), f"key-{i}")
    return by_lane[0], by_lane[1]


def _status(port: int) -> tuple[int, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as response:
        return response.status, json.loads(response.read())

"""Starting `sluiceway` as a user does: what it says, and how it fails when it cannot start.

Every start-up failure we can name is one line naming what to change, exit code 2, and no
traceback; `run` logs its version, its address and each mapping as it starts.
"""

from __future__ import annotations

import errno
import fnmatch
import importlib.metadata
import os
import pty
import re
import select
import socket
import subprocess
import time
from pathlib import Path

import anyio
import pytest
from sluiceway.app.server import listen_error
from sluiceway.app.startup import NO_MAPPINGS
from sluiceway.core.logs import resolve_format
from sluiceway.core.otel_settings import otel_problems
from sluiceway.pollers.checkpoints_sqlite import SqliteCheckpoints
from sluiceway.pollers.shards import StartPosition

from tests.support.cli import SLUICEWAY, cli_env, free_port, get, reachable, running
from tests.support.sqs import eventually, make_queue, sqs_client
from tests.support.streams import aws_client, make_stream

ORDERS = "sluiceway.handlers.examples.orders:handler"
AUDIT = "sluiceway.handlers.examples.audit:handler"
VERSION = importlib.metadata.version("sluiceway")
REPO = Path(__file__).resolve().parents[1]


def _sqs_mapping(url: str) -> dict[str, str]:
    return {
        "SLUICEWAY_MAPPINGS__ORDERS__SOURCE": url,
        "SLUICEWAY_MAPPINGS__ORDERS__HANDLER": ORDERS,
    }


def _stream_mapping(arn: str, **extra: str) -> dict[str, str]:
    return {
        "SLUICEWAY_MAPPINGS__CLICKS__SOURCE": arn,
        "SLUICEWAY_MAPPINGS__CLICKS__HANDLER": AUDIT,
        "SLUICEWAY_MAPPINGS__CLICKS__STARTING_POSITION": "TRIM_HORIZON",
        **extra,
    }


async def _sluiceway(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    with anyio.fail_after(60):
        result = await anyio.run_process([*SLUICEWAY, *args], env=env, check=False)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def _one_line_failure(code: int, stderr: str) -> str:
    """The failure's single line, after checking there is nothing else (no traceback)."""
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr
    failures = [line for line in lines if line.startswith("sluiceway: ")]
    assert len(failures) == 1, stderr
    return failures[0]


@pytest.mark.anyio
async def test_a_busy_http_port_is_one_line_naming_the_port_and_its_variable(
    moto_url: str,
) -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "busy-port")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = cli_env(
            moto_url,
            **_sqs_mapping(url),
            SLUICEWAY_HTTP__HOST="127.0.0.1",
            SLUICEWAY_HTTP__PORT=str(port),
        )
        code, _, stderr = await _sluiceway("run", env=env)
    line = _one_line_failure(code, stderr)
    assert f"HTTP port {port} is already in use" in line
    assert "SLUICEWAY_HTTP__PORT" in line


def _not_a_directory(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "file").write_text("")
    return {"SLUICEWAY_CHECKPOINTS__PATH": str(tmp_path / "file" / "sluiceway.db")}


def _not_a_database(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "sluiceway.db"
    path.write_bytes(b"this is not an SQLite file, only some text that is long enough" * 4)
    return {"SLUICEWAY_CHECKPOINTS__PATH": str(path)}


def _empty_aws_config(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "aws-config").write_text("")
    return {"AWS_CONFIG_FILE": str(tmp_path / "aws-config"), "AWS_PROFILE": "no-such-profile"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (_not_a_directory, ["checkpoint file", "SLUICEWAY_CHECKPOINTS__PATH"]),
        (_not_a_database, ["file is not a database", "SLUICEWAY_CHECKPOINTS__PATH"]),
        (
            lambda _: {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            ["OTEL_EXPORTER_OTLP_PROTOCOL='http/json'", "http/protobuf or grpc"],
        ),
        (
            lambda _: {"OTEL_TRACES_EXPORTER": "zipkin"},
            ["OTEL_TRACES_EXPORTER='zipkin'", "otlp, console, none"],
        ),
        (
            lambda _: {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector"},
            ["OTEL_EXPORTER_OTLP_ENDPOINT='collector'", "http://collector:4318"],
        ),
        (_empty_aws_config, ["no-such-profile", "AWS_PROFILE"]),
        (
            lambda _: {"AWS_ENDPOINT_URL": "not-a-url"},
            ["Invalid endpoint: not-a-url", "AWS_ENDPOINT_URL"],
        ),
        (
            lambda _: {"SLUICEWAY_HTTP__HOST": "192.0.2.1"},  # TEST-NET-1: no machine's address
            ["SLUICEWAY_HTTP__HOST='192.0.2.1' is not an address of this machine"],
        ),
    ],
    ids=[
        "checkpoint-folder-is-a-file",
        "checkpoint-file-not-sqlite",
        "otlp-protocol",
        "traces-exporter",
        "otlp-endpoint",
        "aws-profile",
        "aws-endpoint",
        "http-host",
    ],
)
async def test_start_up_failures_are_one_line_without_a_traceback(
    moto_url: str, tmp_path: Path, settings: object, expected: list[str]
) -> None:
    env = cli_env(
        moto_url,
        **_stream_mapping("arn:aws:kinesis:us-east-1:123456789012:stream/never-read"),
        SLUICEWAY_CHECKPOINTS__PATH=str(tmp_path / "sluiceway.db"),
        SLUICEWAY_HTTP__PORT="0",
    )
    env.update(settings(tmp_path))  # type: ignore[operator]
    code, _, stderr = await _sluiceway("run", env=env)
    line = _one_line_failure(code, stderr)
    for text in expected:
        assert text in line


@pytest.mark.anyio
async def test_a_checkpoint_file_another_process_holds_is_one_line(
    moto_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "sluiceway.db"
    owner = SqliteCheckpoints(path).open()
    try:
        env = cli_env(
            moto_url,
            **_stream_mapping("arn:aws:kinesis:us-east-1:123456789012:stream/never-read"),
            SLUICEWAY_CHECKPOINTS__PATH=str(path),
            SLUICEWAY_HTTP__PORT="0",
        )
        code, _, stderr = await _sluiceway("run", env=env)
    finally:
        owner.close_sync()
    line = _one_line_failure(code, stderr)
    assert "in use by another Sluiceway process" in line
    assert "SLUICEWAY_CHECKPOINTS__PATH" in line


@pytest.mark.anyio
async def test_check_and_run_refuse_zero_mappings_with_the_same_line(moto_url: str) -> None:
    env = cli_env(moto_url)
    outcomes = [await _sluiceway(command, env=env) for command in ("check", "run")]
    lines = [_one_line_failure(code, stderr) for code, _, stderr in outcomes]
    assert lines == [f"sluiceway: {NO_MAPPINGS}"] * 2
    assert "configuration ok" not in outcomes[0][1]


@pytest.mark.anyio
async def test_the_invalid_configuration_header_is_printed_once(moto_url: str) -> None:
    env = cli_env(
        moto_url,
        **_sqs_mapping("arn:aws:sqs:us-east-1:123456789012:orders.fifo"),
        SLUICEWAY_MAPPINGS__ORDERS__BATCH_SIZE="50",
    )
    code, _, stderr = await _sluiceway("run", env=env)
    assert code == 2
    assert stderr.count("invalid configuration") == 1, stderr
    assert stderr.startswith("sluiceway: invalid configuration (1 problem):")


@pytest.mark.anyio
async def test_version_and_every_commands_help_point_to_the_settings(moto_url: str) -> None:
    env = cli_env(moto_url)
    commands = [["--version"]] + [
        [c, "--help"] for c in ("run", "check", "status", "demo", "import-sam")
    ]
    outputs: dict[str, tuple[int, str, str]] = {}

    async def one(args: list[str]) -> None:
        outputs[args[0]] = await _sluiceway(*args, env=env)

    async with anyio.create_task_group() as tg:
        for args in commands:
            tg.start_soon(one, args)
    code, stdout, _ = outputs.pop("--version")
    assert (code, stdout.strip()) == (0, f"sluiceway {VERSION}")
    for command in ("run", "check", "status"):
        code, stdout, _ = outputs[command]
        assert code == 0
        for name in (
            "SLUICEWAY_CONFIG_FILE",
            "SLUICEWAY_MAPPINGS__<NAME>__SOURCE",
            "SLUICEWAY_MAPPINGS__<NAME>__HANDLER",
            "SLUICEWAY_HTTP__PORT",
            "SLUICEWAY_LOG_FORMAT",
            "AWS_REGION",
            "README.md",
        ):
            assert name in stdout, (command, name)
    for command in ("demo", "import-sam"):
        code, stdout, _ = outputs[command]
        assert code == 0 and "README.md" in stdout, command


@pytest.mark.anyio
async def test_run_logs_its_version_address_and_mappings_then_leaves_no_lock_file(
    moto_url: str, tmp_path: Path
) -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "start-log")
    async with aws_client("kinesis") as kinesis:
        stream_arn = await make_stream(kinesis, "start-log")
    port = free_port()
    db = tmp_path / "sluiceway.db"
    env = cli_env(
        moto_url,
        **_sqs_mapping(url),
        **_stream_mapping(
            stream_arn,
            SLUICEWAY_MAPPINGS__CLICKS__STARTING_POSITION="AT_TIMESTAMP",
            SLUICEWAY_MAPPINGS__CLICKS__STARTING_POSITION_TIMESTAMP="2026-01-01T00:00:00Z",
        ),
        SLUICEWAY_CHECKPOINTS__PATH=str(db),
        SLUICEWAY_HTTP__HOST="127.0.0.1",
        SLUICEWAY_HTTP__PORT=str(port),
    )  # no SLUICEWAY_LOG_FORMAT, and stderr is a file: JSON lines
    async with running(env, tmp_path / "stderr.log") as service:

        def started() -> bool:
            return any("mapping clicks:" in r.get("message", "") for r in service.records())

        await eventually(started, timeout=30)
        assert db.with_name("sluiceway.db.lock").exists()  # held while running
        assert await service.stop() == 0
    records = service.records()
    assert len(records) == len(service.lines())  # JSON when stderr is not a terminal
    messages = [r["message"] for r in records]
    assert f"sluiceway {VERSION} starting" in messages
    assert any(m.startswith(f"listening on http://127.0.0.1:{port} ") for m in messages)
    orders = next(r for r in records if r["message"].startswith("mapping orders:"))
    assert orders["mapping"] == "orders"
    assert orders["message"] == (
        f"mapping orders: sqs {url} -> python {ORDERS} (isolation thread), batch size 10"
    )
    clicks = next(m for m in messages if m.startswith("mapping clicks:"))
    assert clicks == (
        f"mapping clicks: kinesis {stream_arn} from AT_TIMESTAMP 2026-01-01T00:00:00Z -> "
        f"python {AUDIT} (isolation thread), batch size 100, checkpoints sqlite {db}"
    )
    assert not any("StartPosition(" in m for m in messages)
    assert not db.with_name("sluiceway.db.lock").exists()  # removed on a clean exit
    ignored = (REPO / ".gitignore").read_text().split()
    assert any(fnmatch.fnmatch("sluiceway.db.lock", pattern) for pattern in ignored)


@pytest.mark.anyio
async def test_the_log_is_text_at_a_terminal_unless_the_format_is_set(
    moto_url: str, tmp_path: Path
) -> None:
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "terminal")
    base = cli_env(moto_url, **_sqs_mapping(url), SLUICEWAY_HTTP__PORT="0")
    assert re.match(r"\d{4}-\d\d-\d\dT[\d:.]+Z INFO +sluiceway", _first_line_at_a_terminal(base))
    assert _first_line_at_a_terminal({**base, "SLUICEWAY_LOG_FORMAT": "json"}).startswith("{")


def _first_line_at_a_terminal(env: dict[str, str]) -> str:
    """The first log line of `sluiceway run` whose stderr is a terminal (a pseudo-terminal)."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [*SLUICEWAY, "run"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=follower,
    )  # fmt: skip
    os.close(follower)
    text, deadline = b"", time.monotonic() + 30
    try:
        while b"\n" not in text and time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                text += os.read(leader, 4096)
    finally:
        process.terminate()
        process.wait(timeout=30)
        os.close(leader)
    assert b"\n" in text, text
    return text.decode().splitlines()[0]


@pytest.mark.anyio
async def test_health_answers_while_an_unreachable_lease_table_is_retried_and_sigterm_stops_it(
    moto_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = cli_env(
        moto_url,
        **_stream_mapping("arn:aws:kinesis:us-east-1:123456789012:stream/never-read"),
        SLUICEWAY_CHECKPOINTS__BACKEND="dynamodb",
        SLUICEWAY_CHECKPOINTS__TABLE="sluiceway-leases",
        AWS_ENDPOINT_URL_DYNAMODB=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        SLUICEWAY_HTTP__HOST="127.0.0.1",
        SLUICEWAY_HTTP__PORT=str(port),
    )
    async with running(env, tmp_path / "stderr.log") as service:
        await eventually(lambda: reachable(port), timeout=30)
        assert get(f"http://127.0.0.1:{port}/healthz") == (200, {"status": "ok"})
        status, body = get(f"http://127.0.0.1:{port}/readyz")
        assert (status, body["ready"], body["mappings"]) == (503, False, {"clicks": "Creating"})
        assert service.process.returncode is None  # retrying, not failed
        started = time.monotonic()
        assert await service.stop() == 0  # a graceful stop, even in the middle of start-up
        assert time.monotonic() - started < 10
    assert "Traceback" not in "\n".join(service.lines())


# ---------------------------------------------------------------- the pieces, fast


def test_otel_settings_accept_what_the_exporters_take() -> None:
    good = {
        "OTEL_TRACES_EXPORTER": "otlp,console",
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector.example:4318",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "collector:4317",  # gRPC takes host:port
    }
    assert otel_problems(good) == []
    assert otel_problems({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "zipkin"}) == []
    bad = otel_problems({"OTEL_METRICS_EXPORTER": "statsd", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"})
    assert [p.split("=")[0] for p in bad] == [
        "OTEL_METRICS_EXPORTER",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]


def test_listen_errors_name_what_to_change() -> None:
    denied = str(listen_error("0.0.0.0", 80, OSError(errno.EACCES, "denied")))
    assert "SLUICEWAY_HTTP__PORT to 1024 or above" in denied
    other = str(listen_error("0.0.0.0", 8080, OSError(errno.EMFILE, "too many")))
    assert "SLUICEWAY_HTTP__HOST" in other and "SLUICEWAY_HTTP__PORT" in other


def test_starting_positions_read_as_a_user_writes_them() -> None:
    assert str(StartPosition("TRIM_HORIZON")) == "TRIM_HORIZON"
    assert str(StartPosition("AT_TIMESTAMP", timestamp=1767225600.0)) == (
        "AT_TIMESTAMP 2026-01-01T00:00:00Z"
    )
    assert str(StartPosition("AT_TIMESTAMP", timestamp=1767225600.5)) == (
        "AT_TIMESTAMP 2026-01-01T00:00:00.500Z"
    )
    assert str(StartPosition.after("4959")) == "AFTER_SEQUENCE_NUMBER 4959"


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_the_log_format_follows_the_terminal_unless_set() -> None:
    assert resolve_format(None, _Stream(True)) == "text"  # type: ignore[arg-type]
    assert resolve_format(None, _Stream(False)) == "json"  # type: ignore[arg-type]
    assert resolve_format("json", _Stream(True)) == "json"  # type: ignore[arg-type]
    assert resolve_format("text", _Stream(False)) == "text"  # type: ignore[arg-type]

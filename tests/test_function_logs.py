"""A handler's own logs and prints reach the service's log, tagged as Lambda tags them.

Lambda's Python runtime gives the root logger a handler and sends stdout and stderr to the
function's log, each line with its request id; a handler written for it logs with plain `logging`
and `print`. Both isolations are run through the real `sluiceway run` against moto.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from sluiceway.core import function_logs

from tests.support.cli import cli_env, running
from tests.support.sqs import eventually, make_queue, send, sqs_client

HANDLER = textwrap.dedent(
    """
    import logging

    logger = logging.getLogger()
    logger.setLevel(logging.INFO)
    logger.info("init of fnlogs")
    print("init prints")


    def handler(event, context):
        body = event["Records"][0]["body"]
        logger.info("handling %s", body)
        logging.getLogger("quiet").debug("below the function's level")
        print(f"printed {body} in {context.aws_request_id}")
        print("a partial line", end="")
        if body == "poison":
            raise ValueError("poisoned " + body)
        return {}
    """
)
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


async def _run_handler(moto_url: str, tmp_path: Path, isolation: str, log_format: str) -> list[str]:
    """The service's log after it handled one good and one poison message."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "fnlogs.py").write_text(HANDLER)
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, f"fnlogs-{isolation}")
        await send(sqs, url, ["good", "poison"])
    env = cli_env(
        moto_url,
        SLUICEWAY_MAPPINGS__LOGS__SOURCE=url,
        SLUICEWAY_MAPPINGS__LOGS__HANDLER="fnlogs.handler",
        SLUICEWAY_MAPPINGS__LOGS__CODE_PATH=str(code),
        SLUICEWAY_MAPPINGS__LOGS__ISOLATION=isolation,
        SLUICEWAY_MAPPINGS__LOGS__BATCH_SIZE="1",
        SLUICEWAY_MAPPINGS__LOGS__FUNCTION_TIMEOUT="30",  # a worker's cold start on a busy machine
        SLUICEWAY_HTTP__PORT="0",
        SLUICEWAY_LOG_FORMAT=log_format,
    )
    async with running(env, tmp_path / "stderr.log") as service:

        def handled_both() -> bool:
            text = service.log.read_text()
            return "printed good in" in text and "ValueError: poisoned" in text

        await eventually(handled_both, timeout=60)
        assert await service.stop() == 0
    return service.lines()


@pytest.mark.anyio
async def test_process_workers_send_their_logging_and_prints_tagged_with_the_request(
    moto_url: str, tmp_path: Path
) -> None:
    lines = await _run_handler(moto_url, tmp_path, "process", "json")
    records = [_json(line) for line in lines]
    by_message = {r["message"]: r for r in records}
    init = by_message["init of fnlogs"]
    assert (init["logger"], init["mapping"], init["function_name"]) == ("root", "logs", "logs")
    assert "aws_request_id" not in init  # the init phase has none, as in Lambda
    init_print = by_message["init prints"]
    assert (init_print["logger"], init_print["mapping"]) == ("stdout", "logs")
    assert "aws_request_id" not in init_print
    for body in ("good", "poison"):
        printed = next(r for r in records if r["message"].startswith(f"printed {body} in "))
        request_id = printed["message"].rsplit(" ", 1)[1]
        assert re.fullmatch(UUID, request_id)
        assert (printed["logger"], printed["aws_request_id"]) == ("stdout", request_id)
        assert printed["mapping"] == "logs" and printed["level"] == "INFO"
        logged = by_message[f"handling {body}"]
        assert (logged["logger"], logged["aws_request_id"]) == ("root", request_id)
        partial = [
            r
            for r in records
            if r["message"] == "a partial line" and r["aws_request_id"] == request_id
        ]
        assert len(partial) == 1  # flushed at the invocation's end, with its request id
    failed = by_message["ValueError: poisoned poison"]
    poison_id = by_message["handling poison"]["aws_request_id"]
    assert (failed["level"], failed["aws_request_id"]) == ("ERROR", poison_id)
    assert 'fnlogs.py", line' in failed["exception"]
    assert "sluiceway" not in failed["exception"]  # the function's frames, as Lambda shows them
    assert not any("below the function's level" in line for line in lines)


@pytest.mark.anyio
async def test_in_process_handlers_logs_and_prints_are_tagged_and_tracebacks_readable(
    moto_url: str, tmp_path: Path
) -> None:
    lines = await _run_handler(moto_url, tmp_path, "thread", "text")
    init_print = next(line for line in lines if line.endswith(" init prints"))
    assert " stdout [mapping=logs function_name=logs] " in init_print  # no request id at init
    printed = next(line for line in lines if " printed poison in " in line)
    request_id = printed.rsplit(" ", 1)[1]
    assert f"aws_request_id={request_id}" in printed and "mapping=logs" in printed
    assert " stdout " in printed
    handling = next(line for line in lines if line.endswith(" handling poison"))
    assert f"aws_request_id={request_id}" in handling and " root " in handling
    error = next(i for i, line in enumerate(lines) if line.endswith("ValueError: poisoned poison"))
    assert f"aws_request_id={request_id}" in lines[error]
    # Text mode: the traceback on its own lines, from the function's own frame.
    assert lines[error + 1] == "Traceback (most recent call last):"
    assert re.match(r'  File ".*fnlogs\.py", line \d+, in handler', lines[error + 2])
    assert "ValueError: poisoned poison" in lines[error + 3 : error + 6]
    assert not any("below the function's level" in line for line in lines)


def _json(line: str) -> dict[str, Any]:
    record = json.loads(line)
    assert isinstance(record, dict)
    return record


# ------------------------------------------------------------ in this process, fast


def test_prints_in_an_invocation_are_records_and_others_pass_through(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    underlying = io.StringIO()
    monkeypatch.setattr(sys, "stdout", underlying)
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        print("before any invocation")
        with function_logs.Invocation("req-1", "orders"):
            print("from the task")
            await anyio.to_thread.run_sync(lambda: print("from its worker thread"))
            own = threading.Thread(target=lambda: print("from a thread the handler started"))
            own.start()
            own.join()
            print("unfinished", end="")
        print("after it")

    anyio.run(scenario)
    tagged = [
        (r.name, r.getMessage(), r.__dict__.get("aws_request_id"))
        for r in caplog.records
        if r.name == "stdout"
    ]
    assert tagged == [
        ("stdout", "from the task", "req-1"),
        ("stdout", "from its worker thread", "req-1"),
        ("stdout", "unfinished", "req-1"),
    ]
    assert underlying.getvalue() == (
        "before any invocation\nfrom a thread the handler started\nafter it\n"
    )


def test_a_log_handler_writing_to_stderr_inside_an_invocation_cannot_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    underlying = io.StringIO()
    monkeypatch.setattr(sys, "stderr", underlying)
    function_logs.capture_standard_streams()
    handler = logging.StreamHandler()  # writes to whatever sys.stderr is at each record
    handler.stream = sys.stderr
    logger = logging.getLogger("stderr")
    logger.addHandler(handler)
    try:
        with function_logs.Invocation("req-2", "orders"):
            print("to stderr", file=sys.stderr)
    finally:
        logger.removeHandler(handler)
    assert underlying.getvalue() == "to stderr\n"

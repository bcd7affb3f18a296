"""`check` probes sources and loads handlers exactly as `run` does, against moto."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from sluiceway.app.check import run_checks
from sluiceway.app.service import Service

from tests.support.sqs import make_queue, settings_for, sqs_client
from tests.support.streams import aws_client, unique

pytestmark = pytest.mark.anyio


async def test_check_refuses_a_table_without_a_stream_as_run_does(moto_url: str) -> None:
    async with aws_client("dynamodb") as dynamodb:
        response = await dynamodb.create_table(
            TableName=unique("plain"),
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    table_arn = response["TableDescription"]["TableArn"]
    mapping = {
        "source": table_arn,
        "handler": "sluiceway.handlers.examples.audit:handler",
        "starting_position": "TRIM_HORIZON",
    }
    settings = settings_for({"t": mapping})
    with anyio.fail_after(30):
        results = await run_checks(settings)
    source = next(r for r in results if r.what.startswith("source"))
    assert not source.ok
    assert "no stream enabled" in source.detail
    # run refuses it the same way: the mapping never leaves Enabling
    service = Service(settings, handle_signals=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(service.run)
        await anyio.sleep(1.5)
        assert service.registry.mappings["t"].state == "Enabling"
        assert "no stream enabled" in (service.registry.mappings["t"].last_error or "")
        service.stop()


@pytest.mark.parametrize(
    ("environment", "ok"), [({"LOG_LEVEL": "DEBUG"}, True), ({"OTHER": "1"}, False)]
)
async def test_check_loads_a_handler_with_its_environment_as_run_does(
    moto_url: str, tmp_path: Path, environment: dict[str, str], ok: bool
) -> None:
    """A handler that reads ENVIRONMENT at import passes check with it, and fails without it."""
    code = tmp_path / "envfn"
    code.mkdir()
    (code / "envapp.py").write_text(
        "import os\nLEVEL = os.environ['LOG_LEVEL']\n\ndef handler(event, context):\n    return LEVEL\n"
    )
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "check-env")
    mapping = {
        "source": url,
        "handler": "envapp.handler",
        "code_path": str(code),
        "isolation": "process",
        "environment": environment,
    }
    with anyio.fail_after(60):
        results = await run_checks(settings_for({"e": mapping}))
    handler = next(r for r in results if r.what.startswith("handler"))
    assert handler.ok is ok, handler.detail
    assert ("isolation process" if ok else "LOG_LEVEL") in handler.detail


async def test_check_reports_functions_moved_to_worker_processes(
    moto_url: str, tmp_path: Path
) -> None:
    """SAM's default layout, two functions whose code both holds app.py: check says that they
    run in worker processes and why, as run does."""
    mappings = {}
    async with sqs_client() as sqs:
        for name in ("fa", "fb"):
            code = tmp_path / name
            code.mkdir()
            (code / "app.py").write_text(f"def lambda_handler(event, context):\n    return {name!r}\n")
            url, _ = await make_queue(sqs, f"check-{name}")
            mappings[name] = {"source": url, "handler": "app.lambda_handler", "code_path": str(code)}
    with anyio.fail_after(60):
        results = await run_checks(settings_for(mappings))
    handlers = [r for r in results if r.what.startswith("handler")]
    assert len(handlers) == 2 and all(r.ok for r in handlers), [r.line() for r in handlers]
    for result in handlers:
        assert "isolation process (automatic:" in result.detail
        assert "'app'" in result.detail

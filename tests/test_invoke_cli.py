"""`sluiceway invoke`: a running service's function through its Lambda API, or in-process with
`--local`; payloads inline or from a file; a function error exits 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from tests.test_invoke_api import KEY, SECRET, base_env, serving

pytestmark = pytest.mark.anyio

SLUICEWAY = [sys.executable, "-m", "sluiceway.app", "invoke"]


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICEWAY_", "AWS_"))}
    return subprocess.run(
        [*SLUICEWAY, *args],
        env={**clean, **env},
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_invoke_a_running_service(tmp_path: Path) -> None:
    payload = tmp_path / "event.json"
    payload.write_text('{"from": "file"}')
    async with serving(base_env(tmp_path)) as service:
        assert service.http is not None
        env = {
            "AWS_ACCESS_KEY_ID": KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_REGION": "us-east-1",
        }
        url = ["--url", f"http://127.0.0.1:{service.http.port}"]
        ok = await anyio.to_thread.run_sync(
            run_cli, ["echo", *url, "--payload", f"@{payload}", "--log-type", "Tail"], env
        )
        failed = await anyio.to_thread.run_sync(run_cli, ["fail", *url], env)
        queued = await anyio.to_thread.run_sync(
            run_cli, ["echo", *url, "--invocation-type", "Event"], env
        )
        missing = await anyio.to_thread.run_sync(run_cli, ["nope", *url], env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["echo"] == {"from": "file"}
    assert "START RequestId:" in ok.stderr and "StatusCode: 200" in ok.stderr
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["errorType"] == "Exception"
    assert "FunctionError: Unhandled" in failed.stderr
    assert queued.returncode == 0 and "StatusCode: 202" in queued.stderr
    assert missing.returncode == 2
    assert missing.stderr.startswith("sluiceway: ResourceNotFoundException: Function not found")


def test_invoke_local_runs_the_function_in_process(tmp_path: Path) -> None:
    env = {"SLUICEWAY_FUNCTIONS__ECHO__HANDLER": "tests.support.async_handlers:echo"}
    result = run_cli(["echo", "--local", "--payload", '{"a": 1}', "--log-type", "Tail"], env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["echo"] == {"a": 1}
    assert 'echo handling {"a": 1}' in result.stderr
    bad = run_cli(["echo", "--local", "--payload", "{nope"], env)
    assert bad.returncode == 2 and "--payload must be JSON" in bad.stderr
    unknown = run_cli(["other", "--local"], env)
    assert unknown.returncode == 2 and "no function other is configured" in unknown.stderr

"""A sync handler that never returns, in a real `sluiceway run` process: its environment stays
busy (no second invocation runs beside it), `/status`, `/metrics` and `/readyz` show it, and
SIGTERM still ends the process within the function timeout plus the grace period, leaving every
unfinished message in its queue."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import anyio
import pytest
from sluiceway.app.service import SHUTDOWN_GRACE_SECONDS

from tests.support.service_process import service_env, sluiceway_run
from tests.support.sqs import count_messages, eventually, make_queue, send, sqs_client

pytestmark = pytest.mark.anyio

FUNCTION_TIMEOUT = 1.0
MARGIN_SECONDS = 3.0
"""Process start-up is not in the measurement; this covers closing clients and the interpreter."""


async def test_sigterm_ends_the_service_in_time_whatever_a_hung_handler_does(
    moto_url: str, tmp_path: Path
) -> None:
    starts = tmp_path / "starts"
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, "hung", visibility=30)
        await send(sqs, url, ["first", "second", "third"])
        env = service_env(
            moto_url,
            SLUICEWAY_MAPPINGS__HUNG__SOURCE=url,
            SLUICEWAY_MAPPINGS__HUNG__HANDLER="tests.handlers_fixtures.edge_handlers:hangs",
            SLUICEWAY_MAPPINGS__HUNG__FUNCTION_TIMEOUT=str(FUNCTION_TIMEOUT),
            SLUICEWAY_MAPPINGS__HUNG__BATCH_SIZE="1",
            SLUICEWAY_LOG_FORMAT="text",
            HANG_LOG=str(starts),
        )
        async with sluiceway_run(env) as service:

            def stuck() -> bool:
                status, body = service.json("/status")
                return status == 200 and body["hung"]["stuck_environments"] == 1

            await eventually(stuck, timeout=30)
            await anyio.sleep(2.5 * FUNCTION_TIMEOUT)  # time for two more timeouts, were any run
            body = service.json("/status")[1]["hung"]
            handler_starts = starts.read_text().splitlines()
            assert len(handler_starts) == 1, "a batch ran beside the stuck invocation"
            assert (body["environments"], body["stuck_environments"]) == (1, 1)
            assert service.json("/readyz") == (503, {"ready": False, "mappings": {"hung": "Stuck"}})
            metrics = service.get("/metrics")[1].decode()
            assert 'sluiceway_stuck_environments{mapping="hung",source="sqs"} 1.0' in metrics

            started = time.monotonic()
            service.process.send_signal(signal.SIGTERM)
            with anyio.fail_after(60):
                code = await service.process.wait()
            took = time.monotonic() - started
            logs = service.logs()
        assert code == 0, logs[-3000:]
        assert took < FUNCTION_TIMEOUT + SHUTDOWN_GRACE_SECONDS + MARGIN_SECONDS, logs[-3000:]
        assert "exiting with 1 handler call(s) still running" in logs
        assert "Sandbox.Timedout: Task timed out after 1.00 seconds" in logs
        # Nothing was finished, so nothing left the queue (visible again, or still in flight).
        assert sum(await count_messages(sqs, url)) == 3
    print(f"\nSIGTERM to exit with a hung handler: {took:.2f}s")

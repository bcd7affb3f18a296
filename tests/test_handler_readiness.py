"""A handler that cannot be imported keeps its mapping out of readiness until it loads.

A typo in HANDLER must fail a deployment's readiness probe rather than drain the queue into the
DLQ behind a green check. Invocations still fail as Lambda's do (Runtime.ImportModuleError), and
the first invocation that loads the handler (the module created or fixed since) makes the mapping
ready again. Run through the real `sluiceway run` against moto, in both isolations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sluiceway.app.server import HttpServer
from sluiceway.core.stats import Registry
from sluiceway.handlers.loader import IMPORT_MODULE_ERROR, HandlerLoadError

from tests.support.cli import cli_env, free_port, get, reachable, running
from tests.support.sqs import count_messages, eventually, make_queue, send, sqs_client


@pytest.mark.anyio
@pytest.mark.parametrize("isolation", ["thread", "process"])
async def test_an_unimportable_handler_is_not_ready_until_it_loads(
    moto_url: str, tmp_path: Path, isolation: str
) -> None:
    code = tmp_path / "code"
    code.mkdir()  # the handler's module is not there yet: a typo, or code not yet deployed
    port = free_port()
    async with sqs_client() as sqs:
        url, _ = await make_queue(sqs, f"not-ready-{isolation}", visibility=1)
        env = cli_env(
            moto_url,
            SLUICEWAY_MAPPINGS__ORDERS__SOURCE=url,
            SLUICEWAY_MAPPINGS__ORDERS__HANDLER="later.handler",
            SLUICEWAY_MAPPINGS__ORDERS__CODE_PATH=str(code),
            SLUICEWAY_MAPPINGS__ORDERS__ISOLATION=isolation,
            SLUICEWAY_MAPPINGS__ORDERS__FUNCTION_TIMEOUT="30",  # a cold worker on a busy machine
            SLUICEWAY_HTTP__HOST="127.0.0.1",
            SLUICEWAY_HTTP__PORT=str(port),
        )
        async with running(env, tmp_path / "stderr.log") as service:
            await eventually(lambda: reachable(port), timeout=30)

            def readiness() -> tuple[int, Any]:
                return get(f"http://127.0.0.1:{port}/readyz")

            def polling_with_an_error() -> bool:
                body = readiness()[1]
                return "handler_errors" in body and body["mappings"] == {"orders": "Enabled"}

            await eventually(polling_with_an_error, timeout=30)
            status, body = readiness()
            assert (status, body["ready"], body["mappings"]) == (503, False, {"orders": "Enabled"})
            assert body["handler_errors"]["orders"].startswith(f"{IMPORT_MODULE_ERROR}: ")
            assert "later" in body["handler_errors"]["orders"]
            orders = get(f"http://127.0.0.1:{port}/status")[1]["orders"]
            assert orders["last_error"].startswith(IMPORT_MODULE_ERROR)

            # Invocations fail as Lambda's do; the message stays in its queue.
            await send(sqs, url, ["first"])

            def failed() -> bool:
                return int(get(f"http://127.0.0.1:{port}/status")[1]["orders"]["errors"]) >= 1

            await eventually(failed, timeout=30)
            assert readiness()[0] == 503

            # The module appears; the next invocation loads it, and the mapping is ready.
            (code / "later.py").write_text("def handler(event, context):\n    return {}\n")
            await eventually(lambda: readiness()[0] == 200, timeout=40)
            assert readiness()[1] == {"ready": True, "mappings": {"orders": "Enabled"}}
            orders = get(f"http://127.0.0.1:{port}/status")[1]["orders"]
            assert orders["handler_error"] is None and orders["last_error"] is None

            async def drained() -> bool:
                return await count_messages(sqs, url) == (0, 0)

            await eventually(drained, timeout=30)
            assert await service.stop() == 0


def test_readiness_names_each_mapping_whose_handler_cannot_load() -> None:
    registry = Registry()
    for name in ("orders", "clicks", "paused"):
        registry.add(name, "sqs").state = "Enabled"
    registry.mappings["paused"].state = "Disabled"
    server = HttpServer(registry, "127.0.0.1", 0)
    assert server.ready() == (True, {n: s.state for n, s in registry.mappings.items()}, {})
    error = HandlerLoadError(IMPORT_MODULE_ERROR, "Unable to import module 'ordrs'")
    registry.mappings["orders"].set_handler_error(error)
    registry.mappings["paused"].set_handler_error(error)  # a disabled mapping is never invoked
    ready, _, errors = server.ready()
    assert not ready
    assert errors == {"orders": f"{IMPORT_MODULE_ERROR}: Unable to import module 'ordrs'"}
    registry.mappings["orders"].set_handler_error(None)
    assert server.ready()[0]

"""A Runtime Interface Emulator stand-in: the RIE's invocation endpoint, answering as the RIE does.

The event's `"behaviour"` picks the answer: `ok` echoes, `error` is the runtime's error document
(200, no X-Amz-Function-Error, as the RIE sends it), `rie_timeout` the RIE's timeout text, `exit`
an empty body, `5xx` / `429` those statuses, `slow` sleeps `seconds` first. Every request received
is kept in `requests`. With `request_ids`, answers carry `x-amzn-RequestId` (`rie-1`, `rie-2`, …),
as an endpoint fronting Lambda's Invoke API does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

RIE_PATH = "/2015-03-31/functions/function/invocations"


@dataclass
class FakeRie:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    request_ids: bool = False


async def _answer(rie: FakeRie, request: web.Request) -> web.Response:
    event = await request.json()
    rie.requests.append(event)
    rie.headers.append(dict(request.headers))
    behaviour = event.get("behaviour", "ok")
    if behaviour == "slow":
        await asyncio.sleep(event.get("seconds", 5))
        return web.json_response({"slept": True})
    if behaviour == "error":
        body = {
            "errorMessage": "order 7 has no customer",
            "errorType": "ValueError",
            "requestId": "",
            "stackTrace": ['  File "/var/task/app.py", line 3, in handler\n'],
        }
        return web.Response(body=json.dumps(body), content_type="text/plain")
    if behaviour == "rie_timeout":
        return web.Response(text="Task timed out after 1.00 seconds")
    if behaviour == "exit":
        return web.Response(body=b"")
    if behaviour == "5xx":
        return web.Response(status=502, text="Bad Gateway")
    if behaviour == "429":
        return web.Response(status=429, text="Too Many Requests")
    if behaviour == "partial":
        return web.json_response({"batchItemFailures": [{"itemIdentifier": "m2"}]})
    return web.json_response({"records": len(event.get("Records", [])), "echo": event})


@asynccontextmanager
async def running_rie(path: str = RIE_PATH, *, request_ids: bool = False) -> AsyncIterator[FakeRie]:
    """Serve on a free loopback port for the duration of the block."""
    app = web.Application()
    runner = web.AppRunner(app)
    rie = FakeRie("", request_ids=request_ids)

    async def handle(request: web.Request) -> web.Response:
        response = await _answer(rie, request)
        if rie.request_ids:
            response.headers["x-amzn-RequestId"] = f"rie-{len(rie.requests)}"
        return response

    app.router.add_post(path, handle)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rie.url = f"http://127.0.0.1:{port}"
    try:
        yield rie
    finally:
        await runner.cleanup()

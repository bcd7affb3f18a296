"""A reverse proxy on loopback between the service and an AWS emulator that breaks calls on purpose.

At set rates it answers with the service's throttling error (400), a 500, an expired shard
iterator (400 ExpiredIteratorException), resets the connection, answers slowly, or never answers (a stalled connection the client must cut). Set `rates` at any
time; all zero passes everything through.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl as ssl_module
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

_THROTTLE_CODES = {
    "Kinesis_20131202": "ProvisionedThroughputExceededException",
    "DynamoDB_20120810": "ThrottlingException",
    "DynamoDBStreams_20120810": "ThrottlingException",
    "AmazonSQS": "RequestThrottled",
}
_HOP_BY_HOP = {"content-length", "transfer-encoding", "content-encoding", "connection", "host"}


@dataclass
class FaultRates:
    throttle: float = 0.0
    error_500: float = 0.0
    reset: float = 0.0
    slow: float = 0.0
    stall: float = 0.0
    expired_iterator: float = 0.0
    slow_seconds: float = 0.5
    stall_seconds: float = 3600.0


@dataclass
class FaultProxy:
    upstream: str
    rates: FaultRates = field(default_factory=FaultRates)
    seed: int = 1
    counts: Counter[str] = field(default_factory=Counter)
    operations: Counter[str] = field(default_factory=Counter)
    """Calls per operation (X-Amz-Target, e.g. Kinesis_20131202.GetRecords), faulted or not."""
    url: str = ""
    ssl: ssl_module.SSLContext | None = None
    """Serve HTTPS with this context (the client must trust its certificate)."""

    async def __aenter__(self) -> FaultProxy:
        self._rng = random.Random(self.seed)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=120), auto_decompress=False
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=1.0, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"{'https' if self.ssl else 'http'}://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()
        await self._session.close()

    def _pick(self) -> str | None:
        roll = self._rng.random()
        for name in ("throttle", "error_500", "reset", "slow", "stall", "expired_iterator"):
            rate = float(getattr(self.rates, name))
            if roll < rate:
                return name
            roll -= rate
        return None

    @staticmethod
    def _error(request: web.Request, status: int, code: str) -> web.Response:
        target = request.headers.get("X-Amz-Target", "")
        if code == "ThrottlingException":
            code = _THROTTLE_CODES.get(target.split(".", 1)[0], code)
        body = json.dumps({"__type": code, "message": "injected by the fault proxy"})
        return web.Response(
            status=status,
            body=body,
            headers={"x-amzn-ErrorType": code, "Content-Type": "application/x-amz-json-1.0"},
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        fault = self._pick()
        self.counts[fault or "passed"] += 1
        self.operations[request.headers.get("X-Amz-Target", "")] += 1
        if fault == "throttle":
            return self._error(request, 400, "ThrottlingException")
        if fault == "error_500":
            return self._error(request, 500, "InternalFailure")
        if fault == "expired_iterator":
            return self._error(request, 400, "ExpiredIteratorException")
        if fault == "reset":
            if request.transport is not None:
                request.transport.abort()  # the client sees its connection reset
            return web.Response(status=500)
        if fault == "stall":
            await asyncio.sleep(self.rates.stall_seconds)
        if fault == "slow":
            await asyncio.sleep(self.rates.slow_seconds)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body
        ) as upstream:
            payload = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            return web.Response(status=upstream.status, body=payload, headers=out)

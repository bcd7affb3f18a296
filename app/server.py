"""The service's HTTP endpoints: /healthz (alive), /readyz (every mapping polling), /status (JSON)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from sluiceway.core.stats import Registry


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


class HttpServer:
    """A small aiohttp app; `extra_routes` lets later features (metrics) add endpoints."""

    def __init__(
        self,
        registry: Registry,
        host: str,
        port: int,
        *,
        extra_routes: list[tuple[str, Callable[[web.Request], Any]]] | None = None,
        installers: list[Callable[[web.Application], None]] | None = None,
        client_max_size: int = 1024**2,
    ) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self._extra = extra_routes or []
        self._installers = installers or []
        """Features that add their own routes (the Lambda API), each in its own module."""
        self._client_max_size = client_max_size
        self._runner: web.AppRunner | None = None

    def ready(self) -> tuple[bool, dict[str, str]]:
        states = {name: s.state for name, s in self.registry.mappings.items()}
        return all(state in ("Enabled", "Disabled") for state in states.values()), states

    async def _healthz(self, _: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def _readyz(self, _: web.Request) -> web.Response:
        ok, states = self.ready()
        return _json({"ready": ok, "mappings": states}, 200 if ok else 503)

    async def _status(self, _: web.Request) -> web.Response:
        return _json({name: s.snapshot() for name, s in self.registry.mappings.items()})

    async def start(self) -> int:
        """Start listening; returns the bound port (useful when asked for port 0)."""
        app = web.Application(client_max_size=self._client_max_size)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/status", self._status)
        for path, handler in self._extra:
            app.router.add_get(path, handler)
        for install in self._installers:
            install(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

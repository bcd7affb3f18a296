"""The service's HTTP endpoints: /healthz (alive), /readyz (every mapping polling with a handler
that loads), /status (JSON).

Every answer passes through the known-secrets registry (`core.secrets`)."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from sluiceway.core.errors import SluicewayError
from sluiceway.core.secrets import known_secrets
from sluiceway.core.stats import Registry

PORT_VARIABLE = "SLUICEWAY_HTTP__PORT"
HOST_VARIABLE = "SLUICEWAY_HTTP__HOST"


class HttpListenError(SluicewayError):
    """The HTTP endpoints cannot listen where they are configured to."""


def listen_error(host: str, port: int, exc: OSError) -> HttpListenError:
    """What to change when binding `host:port` failed, in one line."""
    where = f"{host}:{port}"
    if isinstance(exc, socket.gaierror) or not exc.errno:
        reason = exc.strerror or str(exc)
    else:  # asyncio's own text repeats the address
        reason = os.strerror(exc.errno)
    if exc.errno == errno.EADDRINUSE:
        return HttpListenError(
            f"HTTP port {port} is already in use ({where}); set {PORT_VARIABLE} to a free port "
            "(0 picks one), or SLUICEWAY_HTTP__ENABLED=false"
        )
    if exc.errno == errno.EACCES:
        return HttpListenError(
            f"HTTP port {port} needs privileges this process does not have ({where}); set "
            f"{PORT_VARIABLE} to 1024 or above"
        )
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return HttpListenError(
            f"{HOST_VARIABLE}={host!r} is not an address of this machine ({reason}); use "
            "0.0.0.0 for every interface"
        )
    return HttpListenError(
        f"cannot listen on {where}: {reason}; check {HOST_VARIABLE} and {PORT_VARIABLE}"
    )


def _json(body: Any, status: int = 200) -> web.Response:
    body = known_secrets.mask_value(body)
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

    def ready(self) -> tuple[bool, dict[str, str], dict[str, str]]:
        """Whether every enabled mapping polls with a handler that loads and not every execution
        environment of it is held by a stuck invocation (state `Stuck`); the mappings' states;
        and, per mapping whose handler cannot be loaded, its runtime error."""
        mappings = self.registry.mappings
        states = {name: "Stuck" if s.all_stuck else s.state for name, s in mappings.items()}
        errors = {
            name: s.handler_error
            for name, s in mappings.items()
            if s.handler_error is not None and s.state != "Disabled"
        }
        polling = all(state in ("Enabled", "Disabled") for state in states.values())
        return polling and not errors, states, errors

    async def _healthz(self, _: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def _readyz(self, _: web.Request) -> web.Response:
        ok, states, errors = self.ready()
        body: dict[str, object] = {"ready": ok, "mappings": states}
        if errors:
            body["handler_errors"] = errors
        return _json(body, 200 if ok else 503)

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
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            raise listen_error(self.host, self.port, exc) from None
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

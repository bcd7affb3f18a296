"""aiobotocore clients shared by every poller and destination in the process.

Endpoints come from the standard `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` variables, which
botocore resolves itself; credentials from the standard chain. Every call has connect and read
timeouts so no await on the network can hang for ever.
"""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError
from sluiceway.core.errors import SluicewayError
from sluiceway.core.fast_calls import FastCalls
from sluiceway.core.telemetry import instrument_session

LONG_POLL_SECONDS = 20
"""SQS's maximum long-poll wait; the read timeout must exceed it."""

_READ_TIMEOUT = {"sqs": LONG_POLL_SECONDS + 10, "lambda": 900 + 30}
"""Lambda: a synchronous Invoke lasts as long as the function (up to 900 s) runs."""
_DEFAULT_READ_TIMEOUT = 30
_RETRIES = {"lambda": 0}
"""An Invoke is not idempotent: the router retries it, with its own rules, never botocore."""
CONNECT_TIMEOUT = 5
LONG_POLL_POOL = 10_000
"""Connections for long polls, which each hold one for up to 20 s: their own pool, so quiet
queues' polls (at least 2 per mapping) can never starve the deletes and visibility changes
that settle batches, whatever the number of queues mapped."""


class AwsSettingsError(SluicewayError):
    """The AWS settings of this process (profile, config file, endpoint) make no client."""


class AwsClients:
    """Creates each (service, region) client once, on first use, and closes them all on exit.

    A source, destination, lease table or Lambda function is reached in the region its ARN names;
    `region=None` means the service's default region (`AWS_REGION`), for names and URLs that carry
    none. Each region has its own client and so its own connection pool, and long polls their own.
    """

    def __init__(self, region: str, *, max_pool_connections: int = 100) -> None:
        self.region = region
        self._session: AioSession = get_session()
        instrument_session(self._session)  # spans for every AWS call, when tracing is on
        self._stack = contextlib.AsyncExitStack()
        self._clients: dict[tuple[str, str, bool], Any] = {}
        self._fast: dict[tuple[str, str, bool], FastCalls] = {}
        self._lock = anyio.Lock()
        self._pool = max_pool_connections

    async def __aenter__(self) -> AwsClients:
        await self._stack.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        with anyio.CancelScope(shield=True):
            await self._stack.aclose()

    @property
    def session(self) -> AioSession:
        """The session every client is created from (its credential chain, for one)."""
        return self._session

    async def client(
        self, service: str, *, region: str | None = None, long_poll: bool = False
    ) -> Any:
        """The service's client in `region` (default: the service's region); `long_poll` gives
        the one whose connections long polls hold."""
        key = (service, region or self.region, long_poll)
        async with self._lock:
            if key not in self._clients:
                config = AioConfig(
                    connect_timeout=CONNECT_TIMEOUT,
                    read_timeout=_READ_TIMEOUT.get(service, _DEFAULT_READ_TIMEOUT),
                    max_pool_connections=LONG_POLL_POOL if long_poll else self._pool,
                    retries={"mode": "standard", "max_attempts": _RETRIES.get(service, 3)},
                )
                try:
                    creator = self._session.create_client(
                        service, region_name=key[1], config=config
                    )
                    self._clients[key] = await self._stack.enter_async_context(creator)
                except (BotoCoreError, ValueError) as exc:  # a profile, config file or endpoint
                    raise AwsSettingsError(
                        f"cannot make an AWS {service} client: {exc} (check AWS_PROFILE, "
                        "AWS_CONFIG_FILE, AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_<SERVICE>)"
                    ) from None
            return self._clients[key]

    async def fast(
        self, service: str, *, region: str | None = None, long_poll: bool = False
    ) -> FastCalls:
        """The hot calls (GetRecords, ReceiveMessage, DeleteMessageBatch) on the service's
        client in `region`, sent below botocore's request pipeline (`core.fast_calls`)."""
        key = (service, region or self.region, long_poll)
        client = await self.client(service, region=region, long_poll=long_poll)
        if key not in self._fast:
            self._fast[key] = FastCalls(client)
            self._stack.callback(self._fast[key].close)
        return self._fast[key]

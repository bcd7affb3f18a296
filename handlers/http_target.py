"""Invoking a function over HTTP, as a Lambda container image's Runtime Interface Emulator serves it.

The RIE answers `POST /2015-03-31/functions/function/invocations` with 200 for every invocation
that reached the function, including failed ones: a function error is the runtime's error document
(`{"errorType", "errorMessage", "stackTrace"/"trace"}`) without the `X-Amz-Function-Error` header
real Lambda adds, a timeout is the text `Task timed out after N seconds`, and a runtime that exited
gives an empty body. Each is read as the FunctionError Lambda would report. Anything that kept the
event from the function (no connection, no answer in time, 5xx) is an InvokeFailure, 429 a throttle.
"""

from __future__ import annotations

import logging
import ssl
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import anyio
import orjson
from sluiceway.handlers.invoker import (
    EXIT_ERROR,
    MAX_RESPONSE_BYTES,
    RESPONSE_TOO_LARGE,
    TIMED_OUT,
    Invoker,
)
from sluiceway.handlers.results import (
    FunctionError,
    InvocationResult,
    InvokeFailure,
    Returned,
    with_request_id,
)

logger = logging.getLogger(__name__)

RIE_PATH = "/2015-03-31/functions/function/invocations"
CONNECT_TIMEOUT = 5.0
TRANSPORT_GRACE = 2.0
"""Seconds beyond the function timeout allowed for the request and response to travel."""
_ERROR_KEYS = frozenset({"errorType", "errorMessage", "stackTrace", "trace", "requestId", "cause"})


def invocation_url(target: str) -> str:
    """The URL to POST to: a bare `http(s)://host:port` gets the RIE's invocation path."""
    parts = urlsplit(target)
    if parts.path in ("", "/"):
        return urlunsplit(parts._replace(path=RIE_PATH))
    return target


def ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    """Verification always on; `ca_bundle` adds CAs (a private CA) beside the system's."""
    context = ssl.create_default_context()
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    return context


class HttpInvoker(Invoker):
    """POSTs each event to one target over a pooled connection (one ClientSession per target)."""

    def __init__(
        self,
        url: str,
        function_timeout: float = 3.0,
        ca_bundle: str | None = None,
        max_connections: int = 100,
    ) -> None:
        self.url = invocation_url(url)
        self.function_timeout = function_timeout
        self.ca_bundle = ca_bundle
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use: a ClientSession belongs to the running event loop.
        if self._session is None or self._session.closed:
            ssl_option: ssl.SSLContext | bool = (
                ssl_context(self.ca_bundle) if self.url.startswith("https:") else False
            )
            connector = aiohttp.TCPConnector(limit=self.max_connections, ssl=ssl_option)
            timeout = aiohttp.ClientTimeout(
                total=self.function_timeout + TRANSPORT_GRACE, sock_connect=CONNECT_TIMEOUT
            )
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return self._session

    async def invoke(self, event: dict[str, Any]) -> InvocationResult:
        """POST the event and read the function's answer; transport problems are InvokeFailures."""
        started = time.monotonic()
        body = orjson.dumps(event)
        headers = {"Content-Type": "application/json"}
        try:
            with anyio.fail_after(self.function_timeout + TRANSPORT_GRACE + CONNECT_TIMEOUT):
                async with self._client().post(self.url, data=body, headers=headers) as response:
                    raw = await response.read()
                    status = response.status
                    function_error = response.headers.get("X-Amz-Function-Error")
                    request_id = response.headers.get("x-amzn-RequestId", "")
        except (TimeoutError, aiohttp.ServerTimeoutError):
            return InvokeFailure(f"{self.url}: no answer within {self.function_timeout:g}s")
        except aiohttp.ClientError as exc:
            return InvokeFailure(f"{self.url}: {type(exc).__name__}: {exc}")
        duration = time.monotonic() - started
        if status == 429:
            return InvokeFailure(f"{self.url}: 429 Too Many Requests", throttled=True)
        if status != 200:
            return InvokeFailure(f"{self.url}: HTTP {status}: {raw[:200].decode(errors='replace')}")
        return with_request_id(read_function_answer(raw, duration, function_error), request_id)

    async def aclose(self) -> None:
        """Close pooled connections."""
        if self._session is not None:
            with anyio.CancelScope(shield=True):
                await self._session.close()
            self._session = None


def read_function_answer(
    raw: bytes, duration: float, function_error: str | None = None
) -> Returned | FunctionError:
    """What a 200 answer means: the function's value, or the error the runtime reported."""
    if len(raw) > MAX_RESPONSE_BYTES:
        message = f"Response payload size exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."
        return FunctionError(RESPONSE_TOO_LARGE, message, duration)
    if not raw.strip():
        # The RIE answers an empty body when the runtime process exited mid-invocation.
        return FunctionError(EXIT_ERROR, "Runtime exited without providing a reason", duration)
    try:
        payload: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        text = raw.decode(errors="replace")
        if text.startswith("Task timed out after"):
            return FunctionError(TIMED_OUT, text, duration)
        if function_error:
            return FunctionError(function_error, text, duration, function_error)
        return Returned(raw, duration)
    if function_error or _is_error_document(payload):
        error = payload if isinstance(payload, dict) else {}
        stack = error.get("stackTrace")
        return FunctionError(
            str(error.get("errorType") or function_error or "Unhandled"),
            str(error.get("errorMessage", payload)),
            duration,
            function_error or "Unhandled",
            stack_trace=tuple(str(line) for line in stack) if isinstance(stack, list) else (),
        )
    return Returned(payload, duration)


def _is_error_document(payload: Any) -> bool:
    """The runtime's error shape; a function that returns exactly this shape reads as failed."""
    return (
        isinstance(payload, dict)
        and "errorType" in payload
        and "errorMessage" in payload
        and set(payload) <= _ERROR_KEYS
    )

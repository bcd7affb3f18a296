"""The few hot AWS calls (GetRecords, ReceiveMessage, DeleteMessageBatch) below botocore's pipeline.

An empty GetRecords through aiobotocore costs about 0.8 ms of CPU, nearly all of it in work that
gives the same answer every time: the user agent (rebuilt twice per request), endpoint-ruleset
resolution, a dozen event emissions, header canonicalisation, the signing key, aiohttp's request
machinery. Polling 512 quiet shards once a second (Lambda's bound) would take half a core.

`FastCalls` sends the same request for a fraction of that. The first call of each operation goes
through the client as usual and its prepared request is kept as the template: the endpoint that
botocore's configuration and ruleset chose, the headers it sent (user agent, target, content
type) and the signing scope it used. Later calls reuse the template, sign with botocore's SigV4
(`SigV4Auth`, with its signing key derived once a day) using credentials from the client's own
chain, and speak HTTP/1.1 over a small pool of kept-alive connections.

Whatever is not the happy path keeps botocore's behaviour: an error answer is parsed by the
client's own parser, retried by the client's own retry handler (the same attempts, backoff and
retry quota, through the `needs-retry` event) and raised as the client's own exception class
with the same error code; connection failures become botocore's connection errors. Calls the
template cannot describe (a proxy, a signature other than SigV4, endpoint parameters in the call,
values the JSON protocol would have to convert) go through the client unchanged.

A caller that asks for the wire form (`wire=True`) gets a successful answer as the JSON the
service sent: blobs stay base64 strings and timestamps epoch numbers, so a page of large Kinesis
records is not decoded to bytes only to be encoded back to base64 for a Lambda event. A call that
goes through the client takes the answer's body as it is read (`before-parse`) and answers with
that, so every call of an operation has the same shape and none pays botocore's conversions.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
import ssl
import time
import zlib
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from hashlib import sha256
from typing import Any
from urllib.parse import urlsplit

import anyio
import orjson
from botocore import xform_name
from botocore.auth import SIGNED_HEADERS_BLACKLIST, SigV4Auth
from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
    SSLError,
)
from sluiceway.core import telemetry

log = logging.getLogger(__name__)

IDLE_CONNECTION_SECONDS = 4.0
"""A kept-alive connection idle longer than this is closed rather than reused: servers close idle
connections after a few seconds (Node's default, kinesalite's, is 5), and a request written just
as the server closes would fail."""
_REFILL_CALLS = 500
"""After a retry, this many successful calls report back to the retry quota (botocore's standard
quota holds 500 units and every success returns one), as the client's own calls would."""
_SKIPPED = {
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "content-length",
    "host",
    "amz-sdk-invocation-id",
    "amz-sdk-request",
    "transfer-encoding",
    "expect",
    "x-amzn-trace-id",
    "traceparent",
    "tracestate",
}
"""Request headers that are per call (or per connection): never copied from the template."""
_PLAIN = (str, int, bool, float, type(None))
_BODIES: ContextVar[list[bytes] | None] = ContextVar("sluiceway_fast_call_bodies", default=None)
"""Where this task's call through the client keeps the bodies it read, when it asked for the
wire form; None otherwise (each task has its own, so concurrent calls never mix)."""


_EMPTY_ANSWER = b"{}"


def _take_body(response_dict: dict[str, Any], **_: Any) -> None:
    """`before-parse` handler: take a successful answer's body for the call that asked for the
    wire form, and leave botocore an empty answer to parse in its place (decoding a page's
    blobs is the very work the caller asked to be spared; errors are parsed as ever)."""
    bodies = _BODIES.get()
    if bodies is not None and response_dict.get("status_code", 500) < 300:
        body = response_dict.get("body")
        if isinstance(body, bytes):
            bodies.append(body)
            response_dict["body"] = _EMPTY_ANSWER


class _Signer(SigV4Auth):
    """botocore's SigV4 for one fixed request shape (POST, no query string), with the signing key
    kept for the day instead of derived by four HMACs per request."""

    def __init__(self, service: str, region: str, path: str) -> None:
        super().__init__(None, service, region)
        self.path = self._normalize_url_path(path or "/")
        self._keys: dict[tuple[str, str], bytes] = {}

    def signing_key(self, secret: str, day: str) -> bytes:
        key = self._keys.get((secret, day))
        if key is None:
            k_date = self._sign(f"AWS4{secret}".encode(), day)
            k_region = self._sign(k_date, self._region_name)
            k_service = self._sign(k_region, self._service_name)
            key = self._sign(k_service, "aws4_request")
            self._keys = {(secret, day): key}  # one day's key; yesterday's is dropped
        return key

    def authorization(
        self, headers: Mapping[str, str], body: bytes, amz_date: str, access: str, secret: str
    ) -> str:
        """The Authorization header for `headers` (lower-case names, host included) and `body`;
        byte for byte what `SigV4Auth.add_auth` computes for the same request and instant."""
        names = sorted(n for n in headers if n not in SIGNED_HEADERS_BLACKLIST)
        canonical_headers = "\n".join(f"{n}:{' '.join(headers[n].split())}" for n in names)
        signed = ";".join(names)
        canonical = "\n".join(
            ("POST", self.path, "", canonical_headers + "\n", signed, sha256(body).hexdigest())
        )
        day = amz_date[:8]
        scope = f"{day}/{self._region_name}/{self._service_name}/aws4_request"
        to_sign = "\n".join(
            ("AWS4-HMAC-SHA256", amz_date, scope, sha256(canonical.encode()).hexdigest())
        )
        signature = hmac.new(self.signing_key(secret, day), to_sign.encode(), sha256).hexdigest()
        return (
            f"AWS4-HMAC-SHA256 Credential={access}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )


class _Connection:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def close(self) -> None:
        self.writer.close()


class _Stale(Exception):
    """A kept-alive connection closed by the server before it answered (nothing was read)."""


@dataclass
class _Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class _Pool:
    """Kept-alive HTTP/1.1 connections to one endpoint, at most `limit` at once."""

    def __init__(
        self,
        url: str,
        ssl_context: ssl.SSLContext | None,
        connect_timeout: float,
        read_timeout: float,
        limit: int,
    ) -> None:
        parts = urlsplit(url)
        self.url = url
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl_context if parts.scheme == "https" else None
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._idle: list[_Connection] = []
        self._slots = anyio.Semaphore(limit, fast_acquire=True)

    async def _open(self) -> _Connection:
        try:
            with anyio.fail_after(self._connect_timeout):
                reader, writer = await asyncio.open_connection(
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                    limit=2**20,
                )
        except TimeoutError as exc:
            raise ConnectTimeoutError(endpoint_url=self.url, error=exc) from exc
        except ssl.SSLError as exc:
            raise SSLError(endpoint_url=self.url, error=exc) from exc
        except OSError as exc:
            raise EndpointConnectionError(endpoint_url=self.url, error=exc) from exc
        return _Connection(reader, writer)

    def _take(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if (
                now - connection.idle_since < IDLE_CONNECTION_SECONDS
                and not connection.reader.at_eof()
                and not connection.writer.is_closing()
            ):
                return connection
            connection.close()
        return None

    async def exchange(self, request: bytes) -> _Answer:
        """Send one request and read its answer, on a kept-alive connection when one is free."""
        async with self._slots:
            connection = self._take()
            if connection is not None:
                try:
                    return await self._on(connection, request, reused=True)
                except _Stale:
                    pass  # the server closed it as we wrote: once more on a new connection
            return await self._on(await self._open(), request, reused=False)

    async def _on(self, connection: _Connection, request: bytes, *, reused: bool) -> _Answer:
        try:
            with anyio.fail_after(self._read_timeout):
                answer, keep = await self._roundtrip(connection, request, reused=reused)
        except _Stale:
            connection.close()
            raise
        except TimeoutError as exc:
            connection.close()
            raise ReadTimeoutError(endpoint_url=self.url, error=exc) from exc
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
            zlib.error,
        ) as exc:
            connection.close()
            raise ConnectionClosedError(endpoint_url=self.url, error=exc) from exc
        except BaseException:
            connection.close()  # cancelled mid-exchange: the connection's state is unknown
            raise
        if keep:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()
        return answer

    @staticmethod
    async def _roundtrip(
        connection: _Connection, request: bytes, *, reused: bool
    ) -> tuple[_Answer, bool]:
        reader = connection.reader
        connection.writer.write(request)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
            if reused and not getattr(exc, "partial", b""):
                raise _Stale from exc
            raise
        lines = head[:-4].decode("latin-1").split("\r\n")
        version, status, *_ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":
                        pass  # trailers
                    break
                chunks.append((await reader.readexactly(size + 2))[:-2])
            body = b"".join(chunks)
        else:
            body = await reader.read()
            keep = False
        encoding = headers.get("content-encoding", "identity").lower()
        if encoding in ("gzip", "x-gzip", "deflate"):  # not asked for, but a server may
            body = zlib.decompress(body, 47 if encoding != "deflate" else zlib.MAX_WBITS)
        return _Answer(int(status), headers, body), keep

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()


def _converts(shape: Any, seen: set[str] | None = None) -> bool:
    """True when the JSON protocol turns part of `shape` into something JSON is not (bytes from
    base64, datetimes from numbers): such values must go through botocore's parser."""
    if shape is None:
        return False
    seen = seen if seen is not None else set()
    if shape.name in seen:
        return False
    seen.add(shape.name)
    if shape.type_name in ("blob", "timestamp"):
        return True
    if shape.type_name == "structure":
        return any(_converts(m, seen) for m in shape.members.values())
    if shape.type_name == "list":
        return _converts(shape.member, seen)
    if shape.type_name == "map":
        return _converts(shape.key, seen) or _converts(shape.value, seen)
    return False


def _text(value: str | bytes) -> str:
    """A header name or value as prepared requests hold them (str or UTF-8 bytes)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _plain(value: Any) -> bool:
    """Strings, numbers, lists and maps of them: serialised by JSON as botocore would."""
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _accepted(model: Any) -> frozenset[str]:
    """Input members a call may set: all but those the endpoint ruleset reads."""
    return frozenset(model.input_shape.members) - {p.member_name for p in model.context_parameters}


def _fits(accepted: frozenset[str], params: dict[str, Any]) -> bool:
    """Members the operation has, plain values, none that would change the endpoint."""
    return all(k in accepted and _plain(v) for k, v in params.items())


@dataclass
class _Template:
    """One operation's request as the client prepared it, and what its answers need."""

    model: Any
    pool: _Pool
    signer: _Signer
    head: str
    """The request line and every fixed header, ending before the per-call ones."""
    signed: dict[str, str]
    """The fixed headers that are signed, lower-cased, host included."""
    converted: frozenset[str]
    """Top-level output members that need botocore's parser when present and not empty."""
    accepted: frozenset[str]
    """Input members a call may set: all but those the endpoint ruleset reads."""


class FastCalls:
    """Hot calls on one aiobotocore client; `call` answers as `client.<operation>(**params)`."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._templates: dict[str, _Template | None] = {}
        self._pools: dict[str, _Pool] = {}
        self._service_id = client.meta.service_model.service_id.hyphenize()
        self._refill = 0
        self._recording: dict[str, anyio.Lock] = {}
        self._keeping: set[str] = set()

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    def direct(self, operation: str) -> bool:
        """True once `operation`'s calls are sent below the client's pipeline."""
        return self._templates.get(operation) is not None

    async def call(
        self, operation: str, params: dict[str, Any], *, wire: bool = False
    ) -> dict[str, Any]:
        """The answer of `client.<operation>(**params)`; with `wire`, a successful answer as the
        service's JSON (base64 strings for blobs, epoch numbers for timestamps) instead of
        botocore's conversions of it. Errors are raised as the client raises them either way."""
        template = self._templates.get(operation)
        if template is None and operation not in self._templates:
            # Concurrent first calls wait for the one recording the template, then go fast.
            async with self._recording.setdefault(operation, anyio.Lock(fast_acquire=True)):
                template = self._templates.get(operation)
                if operation not in self._templates:
                    return await self._through_client(operation, params, wire=wire)
        if template is not None and _fits(template.accepted, params):
            return await self._fast(template, operation, params, wire=wire)
        return await self._through_client(operation, params, wire=wire)

    # ------------------------------------------------------------------ the template

    async def _through_client(
        self, operation: str, params: dict[str, Any], *, wire: bool
    ) -> dict[str, Any]:
        """The client's own call (in the wire form when asked); the first one of an operation
        that a template could send also records its template."""
        if not wire:
            return await self._recorded(operation, params)
        if operation not in self._keeping:
            self._client.meta.events.register(
                f"before-parse.{self._service_id}.{operation}",
                _take_body,
                unique_id=f"sluiceway-wire-{operation}",
            )
            self._keeping.add(operation)
        bodies: list[bytes] = []
        token = _BODIES.set(bodies)
        try:
            parsed = await self._recorded(operation, params)
        finally:
            _BODIES.reset(token)
        if not bodies:
            return parsed  # nothing was read as it came (a stubbed client): botocore's form
        answer: dict[str, Any] = orjson.loads(bodies[-1]) if bodies[-1] else {}
        answer["ResponseMetadata"] = parsed.get("ResponseMetadata", {})
        return answer

    async def _recorded(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """The client's own call; the first of an operation that fits a template records it."""
        if operation in self._templates or not _fits(_accepted(self._model(operation)), params):
            return await getattr(self._client, xform_name(operation))(**params)
        event = f"before-send.{self._service_id}.{operation}"
        seen: list[Any] = []

        def record(request: Any, **_: Any) -> None:
            seen.append(request)

        self._client.meta.events.register(event, record, unique_id=f"sluiceway-fast-{operation}")
        try:
            return await getattr(self._client, xform_name(operation))(**params)
        finally:
            self._client.meta.events.unregister(event, unique_id=f"sluiceway-fast-{operation}")
            if operation not in self._templates and seen:
                self._templates[operation] = self._template(operation, seen[0])

    def _model(self, operation: str) -> Any:
        return self._client.meta.service_model.operation_model(operation)

    def _template(self, operation: str, request: Any) -> _Template | None:
        """What the client sent, made reusable; None when a call cannot be sent this way."""
        client = self._client
        model = self._model(operation)
        authorization = _text(request.headers.get("Authorization", ""))
        http = client._endpoint.http_session
        if (
            request.method != "POST"
            or model.service_model.resolved_protocol != "json"
            or not authorization.startswith("AWS4-HMAC-SHA256 Credential=")
            or "?" in request.url
            or model.operation_context_parameters
            or http._proxy_config.proxy_url_for(request.url)
        ):
            log.debug("%s goes through the client: its request has no reusable form", operation)
            return None
        scope = authorization.split("Credential=", 1)[1].split(",", 1)[0].split("/")
        region, service = scope[-3], scope[-2]
        parts = urlsplit(request.url)
        default_port = {"https": 443, "http": 80}.get(parts.scheme)
        host = parts.hostname if parts.port in (None, default_port) else parts.netloc
        origin = f"{parts.scheme}://{parts.netloc}"
        pool = self._pools.get(origin)
        if pool is None:
            config = client.meta.config
            pool = self._pools[origin] = _Pool(
                origin,
                http._build_ssl_contexts(None)[0] if parts.scheme == "https" else None,
                float(config.connect_timeout),
                float(config.read_timeout),
                int(config.max_pool_connections),
            )
        fixed = {
            _text(k): _text(v)
            for k, v in request.headers.items()
            if _text(k).lower() not in _SKIPPED
        }
        signer = _Signer(service, region, parts.path)
        lines = [f"POST {signer.path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{k}: {v}" for k, v in fixed.items()]
        output = model.output_shape
        converted = frozenset(
            name
            for name, member in (output.members.items() if output is not None else ())
            if _converts(member)
        )
        return _Template(
            model=model,
            pool=pool,
            signer=signer,
            head="\r\n".join(lines) + "\r\n",
            signed={"host": str(host), **{k.lower(): v for k, v in fixed.items()}},
            converted=converted,
            accepted=_accepted(model),
        )

    # ------------------------------------------------------------------ the fast path

    async def _credentials(self) -> Any:
        frozen = self._client._request_signer._credentials.get_frozen_credentials()
        return await frozen if inspect.isawaitable(frozen) else frozen

    async def _request(self, template: _Template, body: bytes) -> bytes:
        credentials = await self._credentials()
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        signed = {**template.signed, "x-amz-date": amz_date}
        extra = f"X-Amz-Date: {amz_date}\r\n"
        if credentials.token:
            signed["x-amz-security-token"] = credentials.token
            extra += f"X-Amz-Security-Token: {credentials.token}\r\n"
        authorization = template.signer.authorization(
            signed, body, amz_date, credentials.access_key, credentials.secret_key
        )
        return (
            f"{template.head}{extra}Authorization: {authorization}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def _fast(
        self, template: _Template, operation: str, params: dict[str, Any], *, wire: bool
    ) -> dict[str, Any]:
        tracing = telemetry.enabled()
        context: dict[str, Any] = {"client_region": self._client.meta.region_name}
        events = self._client.meta.events
        model = template.model
        if tracing:
            await events.emit(
                f"before-call.{self._service_id}.{operation}",
                model=model,
                params={"body": params},
                request_signer=self._client._request_signer,
                context=context,
            )
        body = orjson.dumps(params)
        endpoint = self._client._endpoint
        request_dict = {"context": context, "body": body, "url_path": template.signer.path}
        attempts = 1
        while True:
            exception: Exception | None = None
            answer: _Answer | None = None
            try:
                answer = await template.pool.exchange(await self._request(template, body))
            except (
                ConnectionClosedError,
                EndpointConnectionError,
                ReadTimeoutError,
                SSLError,
            ) as exc:
                exception = exc  # ConnectTimeoutError is an EndpointConnectionError
            if answer is not None and answer.status < 300:
                parsed = orjson.loads(answer.body) if answer.body else {}
                if not wire and any(parsed.get(name) for name in template.converted):
                    parsed = await self._parse(template, answer)
                parsed["ResponseMetadata"] = {
                    "RequestId": answer.headers.get("x-amzn-requestid"),
                    "HTTPStatusCode": answer.status,
                    "HTTPHeaders": answer.headers,
                    "RetryAttempts": attempts - 1,
                }
                if attempts > 1:
                    self._refill = _REFILL_CALLS
                if tracing or self._refill:
                    self._refill = max(0, self._refill - 1)
                    await events.emit(
                        f"after-call.{self._service_id}.{operation}",
                        http_response=self._response(answer),
                        parsed=parsed,
                        model=model,
                        context=context,
                    )
                return parsed
            response = None
            if answer is not None:
                response = (self._response(answer), await self._parse(template, answer))
            if not await endpoint._needs_retry(attempts, model, request_dict, response, exception):
                break
            attempts += 1
            context.setdefault("retries", {})["attempt"] = attempts
        if exception is not None:
            await events.emit(
                f"after-call-error.{self._service_id}.{operation}",
                exception=exception,
                context=context,
            )
            raise exception
        assert response is not None
        http_response, parsed = response
        parsed.setdefault("ResponseMetadata", {})["RetryAttempts"] = attempts - 1
        await events.emit(
            f"after-call.{self._service_id}.{operation}",
            http_response=http_response,
            parsed=parsed,
            model=model,
            context=context,
        )
        code = context.get("error_code_override") or parsed.get("Error", {}).get("Code")
        raise self._client.exceptions.from_code(code)(parsed, operation)

    @staticmethod
    def _response(answer: _Answer) -> AWSResponse:
        return AWSResponse("", answer.status, HTTPHeaders.from_dict(answer.headers), None)

    async def _parse(self, template: _Template, answer: _Answer) -> dict[str, Any]:
        """The client's own parser on an answer (errors, and pages that carry bytes or times)."""
        endpoint = self._client._endpoint
        protocol = template.model.service_model.resolved_protocol
        parser = endpoint._response_parser_factory.create_parser(protocol)
        response_dict = {
            "headers": HTTPHeaders.from_dict(answer.headers),
            "status_code": answer.status,
            "body": answer.body,
        }
        parsed: dict[str, Any] = await parser.parse(response_dict, template.model.output_shape)
        if answer.status >= 300:
            await endpoint._add_modeled_error_fields(response_dict, parsed, template.model, parser)
        return parsed

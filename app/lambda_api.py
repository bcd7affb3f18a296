"""Lambda's Invoke API and a read-only event source mapping API on the service's HTTP port, so
boto3's `lambda` client, the AWS CLI and every other SDK work with only `endpoint_url` set.

- `POST /2015-03-31/functions/{FunctionName}/invocations`: RequestResponse (200, the payload,
  X-Amz-Function-Error on a function error, X-Amz-Log-Result with Tail), Event (202 once the
  event is durably queued) and DryRun (204); errors in Lambda's shapes and status codes.
- `GET /2015-03-31/event-source-mappings/` and `/{UUID}`: the configured mappings.
Requests are SigV4-verified against SLUICEWAY_API__KEYS unless SLUICEWAY_API__AUTH=none.
"""

from __future__ import annotations

import base64
import logging
import re
import time
import uuid
from typing import Any

import orjson
from aiohttp import web
from opentelemetry.trace import Link, SpanKind
from sluiceway.app.function_host import FunctionHost
from sluiceway.app.sigv4_auth import SignedRequest, verify
from sluiceway.config.functions import FunctionConfig
from sluiceway.config.mapping import MappingConfig
from sluiceway.config.settings import Settings
from sluiceway.core import telemetry
from sluiceway.core.stats import Registry
from sluiceway.handlers.context import function_arn
from sluiceway.handlers.invocation import InvocationOptions
from sluiceway.handlers.results import FunctionError, InvocationResult, InvokeFailure, Returned
from sluiceway.router import tracing
from sluiceway.router.async_events import EXECUTED_VERSION, error_payload
from sluiceway.router.async_runner import decode_client_context
from sluiceway.router.failure_record import mapping_uuid

log = logging.getLogger(__name__)

MAX_SYNC_PAYLOAD = 6 * 1024 * 1024
"""Lambda: a RequestResponse request up to 6 MB."""
MAX_ASYNC_PAYLOAD = 1024 * 1024
"""Lambda: an Event request up to 1 MB."""
PREFIX = "/2015-03-31"
_FUNCTION_REF = re.compile(
    r"^(?:arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:\d{12}:function:|\d{12}:function:)?"
    r"(?P<name>[A-Za-z0-9_.-]{1,140})(?::(?P<qualifier>\$LATEST|[A-Za-z0-9_-]{1,128}))?$"
)
_MAPPINGS_READ_ONLY = (
    "Sluiceway's event source mappings come from its configuration "
    "(SLUICEWAY_MAPPINGS__<NAME>__* or the config file): change them there and restart"
)


def lambda_error(status: int, error_type: str, message: str, **extra: Any) -> web.Response:
    """An error as Lambda's REST API sends it: the type in x-amzn-ErrorType, the message in the
    body (botocore reads both)."""
    body = {"Type": "User" if status < 500 else "Service", "message": message, **extra}
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"x-amzn-ErrorType": error_type, "x-amzn-RequestId": str(uuid.uuid4())},
    )


def caller_traceparent(request: web.Request) -> str | None:
    """The caller's trace as a W3C traceparent: its own, or X-Amzn-Trace-Id converted."""
    value = request.headers.get("traceparent")
    if value and tracing.traceparent_to_span_context(value) is not None:
        return value
    xray = request.headers.get("X-Amzn-Trace-Id")
    found = tracing.xray_to_span_context(xray) if xray else None
    if found is None:
        return None
    return f"00-{found.trace_id:032x}-{found.span_id:016x}-{int(found.trace_flags):02x}"


class LambdaApi:
    """The routes, over the service's functions and mappings."""

    def __init__(
        self, settings: Settings, host: FunctionHost | None, registry: Registry
    ) -> None:
        """`host` may come after the routes are installed: the HTTP port is opened first, so a
        busy port fails start-up before anything else, and invokes answer 503 until then."""
        self.settings = settings
        self.host = host
        self.registry = registry

    def install(self, app: web.Application) -> None:
        app.router.add_post(f"{PREFIX}/functions/{{name}}/invocations", self.invoke)
        app.router.add_get(f"{PREFIX}/event-source-mappings/", self.list_mappings)
        app.router.add_get(f"{PREFIX}/event-source-mappings", self.list_mappings)
        app.router.add_get(f"{PREFIX}/event-source-mappings/{{uuid}}", self.get_mapping)
        app.router.add_post(f"{PREFIX}/event-source-mappings/", self.read_only)
        app.router.add_post(f"{PREFIX}/event-source-mappings", self.read_only)
        app.router.add_put(f"{PREFIX}/event-source-mappings/{{uuid}}", self.read_only)
        app.router.add_delete(f"{PREFIX}/event-source-mappings/{{uuid}}", self.read_only)

    # --- authentication ---------------------------------------------------------------------------

    async def _refused(self, request: web.Request, body: bytes) -> web.Response | None:
        api = self.settings.api
        if api.auth == "none":
            return None
        signed = SignedRequest(
            method=request.method,
            url=f"{request.scheme}://{request.host}{request.raw_path}",
            headers=dict(request.headers),
            body=body,
        )
        failure = verify(signed, api.keys)
        if failure is None:
            return None
        return lambda_error(403, failure.error_type, failure.message)

    # --- Invoke ---------------------------------------------------------------------------------

    async def invoke(self, request: web.Request) -> web.Response:
        if self.host is None:
            return lambda_error(503, "ServiceException", "the service is starting; try again")
        kind = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        limit = MAX_ASYNC_PAYLOAD if kind == "Event" else MAX_SYNC_PAYLOAD
        if (request.content_length or 0) > limit:
            return _too_large(limit)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _too_large(limit)
        refused = await self._refused(request, body)
        if refused is not None:
            return refused
        if len(body) > limit:
            return _too_large(limit)
        if kind not in ("RequestResponse", "Event", "DryRun"):
            return lambda_error(
                400,
                "InvalidParameterValueException",
                f"Unsupported invocation type {kind!r}: use RequestResponse, Event or DryRun",
            )
        config, missing = self._resolve(request.match_info["name"], request.query.get("Qualifier"))
        if config is None:
            return missing  # type: ignore[return-value]
        if body.strip():
            try:
                orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                return lambda_error(
                    400,
                    "InvalidRequestContentException",
                    f"Could not parse request body into json: {exc}",
                )
        if kind == "DryRun":
            return web.Response(status=204, headers={"x-amzn-RequestId": str(uuid.uuid4())})
        if kind == "Event":
            event = await self.host.enqueue(config, body, traceparent=caller_traceparent(request))
            return web.Response(status=202, headers={"x-amzn-RequestId": event.request_id})
        return await self._invoke_sync(request, config, body)

    def _resolve(
        self, reference: str, qualifier: str | None
    ) -> tuple[FunctionConfig | None, web.Response | None]:
        match = _FUNCTION_REF.match(reference)
        name = match["name"] if match else reference
        qualifier = qualifier or (match["qualifier"] if match else None)
        config = self.host.function(name)
        if config is None or config.name.lower() not in self.host.invokers:
            arn = function_arn(self.settings.aws_region, _account(self.host), name)
            return None, lambda_error(
                404, "ResourceNotFoundException", f"Function not found: {arn}"
            )
        if qualifier not in (None, "", EXECUTED_VERSION):
            return None, lambda_error(
                404,
                "ResourceNotFoundException",
                f"Function not found: {config.arn}:{qualifier} (only $LATEST exists here)",
            )
        return config, None

    async def _invoke_sync(
        self, request: web.Request, config: FunctionConfig, body: bytes
    ) -> web.Response:
        try:
            client_context = decode_client_context(request.headers.get("X-Amz-Client-Context"))
        except ValueError as exc:
            return lambda_error(
                400, "InvalidRequestContentException", f"Client context must be base64 JSON: {exc}"
            )
        tail = request.headers.get("X-Amz-Log-Type", "None") == "Tail"
        options = InvocationOptions(
            request_id=str(uuid.uuid4()), client_context=client_context, tail=tail
        )
        parent = caller_traceparent(request)
        found = tracing.traceparent_to_span_context(parent) if parent else None
        with telemetry.span(
            f"{config.name} invoke",
            kind=SpanKind.SERVER,
            links=[Link(found)] if found is not None else None,
            faas__invoked_name=config.name,
            faas__trigger="http",
            faas__invocation_id=options.request_id,
        ) as span:
            result = await self.host.invoke_sync(config, body, options)
            tracing.annotate_result(span, result)
        return _sync_response(result, options, config)

    # --- event source mappings (read-only) -------------------------------------------------------

    async def list_mappings(self, request: web.Request) -> web.Response:
        body = await request.read()
        refused = await self._refused(request, body)
        if refused is not None:
            return refused
        function = request.query.get("FunctionName")
        source = request.query.get("EventSourceArn")
        items = []
        for mapping in self.settings.mappings.values():
            if function and _short(function).lower() != mapping.effective_function_name.lower():
                continue
            if source and source != mapping.source_ref.arn:
                continue
            items.append(self._describe(mapping))
        return web.Response(
            body=orjson.dumps({"EventSourceMappings": items}), content_type="application/json"
        )

    async def get_mapping(self, request: web.Request) -> web.Response:
        body = await request.read()
        refused = await self._refused(request, body)
        if refused is not None:
            return refused
        wanted = request.match_info["uuid"]
        for mapping in self.settings.mappings.values():
            if mapping_uuid(mapping.name) == wanted:
                return web.Response(
                    body=orjson.dumps(self._describe(mapping)), content_type="application/json"
                )
        return lambda_error(
            404, "ResourceNotFoundException", "The resource you requested does not exist."
        )

    async def read_only(self, request: web.Request) -> web.Response:
        body = await request.read()
        refused = await self._refused(request, body)
        if refused is not None:
            return refused
        return lambda_error(400, "InvalidParameterValueException", _MAPPINGS_READ_ONLY)

    def _describe(self, mapping: MappingConfig) -> dict[str, Any]:
        """GetEventSourceMapping's fields for a configured mapping."""
        source = mapping.source_ref
        stats = self.registry.mappings.get(mapping.name)
        state = "Disabled" if not mapping.enabled else (stats.state if stats else "Enabled")
        described: dict[str, Any] = {
            "UUID": mapping_uuid(mapping.name),
            "EventSourceArn": source.arn,
            "FunctionArn": function_arn(
                source.region or self.settings.aws_region,
                source.account,
                mapping.effective_function_name,
            ),
            "State": state,
            "StateTransitionReason": "USER_INITIATED",
            "LastModified": stats.started_at if stats else time.time(),
            "LastProcessingResult": stats.last_processing_result
            if stats
            else "No records processed",
            "BatchSize": mapping.effective_batch_size,
            "MaximumBatchingWindowInSeconds": mapping.maximum_batching_window_in_seconds,
            "FunctionResponseTypes": list(mapping.function_response_types),
        }
        if mapping.filter_criteria:
            described["FilterCriteria"] = mapping.filter_criteria
        if mapping.kind == "sqs":
            if mapping.scaling_config and mapping.scaling_config.maximum_concurrency:
                described["ScalingConfig"] = {
                    "MaximumConcurrency": mapping.scaling_config.maximum_concurrency
                }
        else:
            described.update(
                {
                    "StartingPosition": mapping.starting_position,
                    "ParallelizationFactor": mapping.parallelization_factor,
                    "MaximumRetryAttempts": mapping.maximum_retry_attempts,
                    "MaximumRecordAgeInSeconds": mapping.maximum_record_age_in_seconds,
                    "BisectBatchOnFunctionError": mapping.bisect_batch_on_function_error,
                }
            )
            if mapping.tumbling_window_in_seconds is not None:
                described["TumblingWindowInSeconds"] = mapping.tumbling_window_in_seconds
        destination = mapping.on_failure_destination
        described["DestinationConfig"] = {
            "OnFailure": {"Destination": destination.arn} if destination else {}
        }
        return described


def _sync_response(
    result: InvocationResult, options: InvocationOptions, config: FunctionConfig
) -> web.Response:
    request_id = options.request_id or ""
    headers = {"X-Amz-Executed-Version": EXECUTED_VERSION, "x-amzn-RequestId": request_id}
    if options.tail:
        headers["X-Amz-Log-Result"] = base64.b64encode(options.log_tail().encode()).decode()
    if isinstance(result, InvokeFailure):
        if result.throttled:
            return lambda_error(
                429,
                "TooManyRequestsException",
                "Rate Exceeded.",
                Reason="ReservedFunctionConcurrentInvocationLimitExceeded",
            )
        return lambda_error(
            502, "ServiceException", f"The function could not be invoked: {result.reason}"
        )
    if isinstance(result, FunctionError):
        headers["X-Amz-Function-Error"] = result.function_error
        body = orjson.dumps(error_payload(result, request_id))
    elif isinstance(result, Returned) and isinstance(result.payload, bytes):
        body = result.payload
    else:
        body = orjson.dumps(result.payload)
    return web.Response(status=200, body=body, headers=headers, content_type="application/json")


def _too_large(limit: int) -> web.Response:
    return lambda_error(
        413,
        "RequestTooLargeException",
        f"Request must be smaller than {limit} bytes for the InvokeFunction operation",
    )


def _short(reference: str) -> str:
    match = _FUNCTION_REF.match(reference)
    return match["name"] if match else reference


def _account(host: FunctionHost) -> str:
    first = next(iter(host.functions.values()), None)
    return first.home("us-east-1")[1] if first is not None else "000000000000"

"""Invoking a real Lambda function (RequestResponse) by ARN, through the shared aiobotocore clients.

The ARN may carry a qualifier (a version or alias), which Lambda resolves itself. A response with
`FunctionError` (the `X-Amz-Function-Error` header) is a FunctionError; TooManyRequestsException a
throttle; any other service or network error an InvokeFailure, so it is retried without counting
as an attempt.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import orjson
from botocore.exceptions import BotoCoreError, ClientError
from sluiceway.config.sources import arn_region
from sluiceway.core.aws import AwsClients
from sluiceway.handlers.http_target import read_function_answer
from sluiceway.handlers.invoker import Invoker, marshal_response
from sluiceway.handlers.results import (
    FunctionError,
    InvocationResult,
    InvokeFailure,
    with_request_id,
)

TRANSPORT_GRACE = 10.0
"""Seconds beyond the function timeout allowed for the Invoke call itself."""
_THROTTLES = frozenset({"TooManyRequestsException", "EC2ThrottledException"})


class LambdaInvoker(Invoker):
    """Synchronous Invoke of one function ARN (optionally qualified)."""

    def __init__(self, arn: str, clients: AwsClients, function_timeout: float = 3.0) -> None:
        self.arn = arn
        self.region = arn_region(arn)
        """The function's own region: the one its ARN names."""
        self.clients = clients
        self.function_timeout = function_timeout

    async def invoke(self, event: dict[str, Any]) -> InvocationResult:
        """Invoke and read the payload; never raises for what the function or service did."""
        started = time.monotonic()
        try:
            with anyio.fail_after(self.function_timeout + TRANSPORT_GRACE):
                client = await self.clients.client("lambda", region=self.region)
                response = await client.invoke(
                    FunctionName=self.arn,
                    InvocationType="RequestResponse",
                    Payload=orjson.dumps(event),
                )
                async with response["Payload"] as stream:
                    raw = await stream.read()
        except TimeoutError:
            return InvokeFailure(f"{self.arn}: no answer within {self.function_timeout:g}s")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            message = exc.response.get("Error", {}).get("Message", str(exc))
            return InvokeFailure(f"{self.arn}: {code}: {message}", throttled=code in _THROTTLES)
        except BotoCoreError as exc:
            return InvokeFailure(f"{self.arn}: {type(exc).__name__}: {exc}")
        result = read_function_answer(
            raw, time.monotonic() - started, response.get("FunctionError")
        )
        if isinstance(result, FunctionError) and not response.get("FunctionError"):
            # Lambda itself marks function errors; a payload shaped like one is a plain value.
            result = read_function_answer_as_value(raw, result.duration)
        # Lambda's own request id: the one in the function's logs.
        return with_request_id(result, response.get("ResponseMetadata", {}).get("RequestId", ""))


def read_function_answer_as_value(raw: bytes, duration: float) -> InvocationResult:
    """A payload Lambda returned without FunctionError is the function's value, whatever its shape."""
    try:
        return marshal_response(orjson.loads(raw), duration)
    except orjson.JSONDecodeError:
        return marshal_response(raw, duration)

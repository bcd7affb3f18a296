"""Lambda targets: Invoke (RequestResponse) through aiobotocore.

moto cannot run function code without Docker, so moto (with `use_docker: false`, its "simple"
Lambda backend that answers an invocation with the request payload) shows what our Invoke sends;
how Lambda's FunctionError, throttles and service errors map is tested against a local endpoint
that answers like the Invoke API, set as AWS_ENDPOINT_URL_LAMBDA.
"""

from __future__ import annotations

import io
import json
import urllib.request
import zipfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import boto3
import pytest
from aiohttp import web
from sluiceway.core.aws import AwsClients
from sluiceway.handlers.lambda_target import LambdaInvoker
from sluiceway.handlers.results import FunctionError, InvokeFailure, Returned
from sluiceway.router.outcomes import PartialFailure
from sluiceway.router.response import interpret

pytestmark = pytest.mark.anyio

ACCOUNT = "123456789012"
EVENT = {"Records": [{"messageId": "m1"}, {"messageId": "m2"}]}


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    return event\n")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def moto_function(moto_url: str) -> Iterator[str]:
    """A function in moto's simple Lambda backend (no Docker), with a `live` alias."""
    request = urllib.request.Request(
        f"{moto_url}/moto-api/config",
        data=json.dumps({"lambda": {"use_docker": False}}).encode(),
        method="POST",
    )
    urllib.request.urlopen(request, timeout=10).read()
    iam = boto3.client("iam", endpoint_url=moto_url)
    role = iam.create_role(
        RoleName="sluiceway-fn", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17"})
    )["Role"]["Arn"]
    client = boto3.client("lambda", endpoint_url=moto_url)
    arn = client.create_function(
        FunctionName="orders",
        Runtime="python3.11",
        Role=role,
        Handler="app.handler",
        Code={"ZipFile": _zip()},
        Publish=True,
    )["FunctionArn"]
    client.create_alias(FunctionName="orders", Name="live", FunctionVersion="1")
    yield arn.rsplit(":", 1)[0] if arn.count(":") > 6 else arn
    client.delete_function(FunctionName="orders")


async def test_invoke_sends_the_event_as_the_payload_of_a_request_response_invoke(
    moto_function: str,
) -> None:
    async with AwsClients("us-east-1") as clients:
        result = await LambdaInvoker(moto_function, clients).invoke(EVENT)
    assert result == Returned(EVENT, result.duration)


async def test_a_qualified_arn_invokes_the_alias(moto_function: str) -> None:
    async with AwsClients("us-east-1") as clients:
        result = await LambdaInvoker(f"{moto_function}:live", clients).invoke(EVENT)
    assert isinstance(result, Returned)
    assert result.payload == EVENT


# ---------------------------------------------------------------- a fake Invoke API


def _answer(behaviour: str) -> web.Response:
    if behaviour == "function_error":
        body = {"errorMessage": "order 7 has no customer", "errorType": "ValueError"}
        return web.json_response(body, headers={"X-Amz-Function-Error": "Unhandled"})
    if behaviour == "throttle":
        body = {
            "Type": "User",
            "message": "Rate Exceeded.",
            "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded",
        }
        return web.json_response(
            body, status=429, headers={"x-amzn-ErrorType": "TooManyRequestsException"}
        )
    if behaviour == "service":
        body = {"Type": "Service", "message": "internal"}
        return web.json_response(body, status=500, headers={"x-amzn-ErrorType": "ServiceException"})
    if behaviour == "not_found":
        body = {"Type": "User", "message": "Function not found"}
        return web.json_response(
            body, status=404, headers={"x-amzn-ErrorType": "ResourceNotFoundException"}
        )
    return web.json_response({"batchItemFailures": [{"itemIdentifier": "m2"}]})


@asynccontextmanager
async def fake_lambda(behaviour: str, seen: list[dict[str, Any]]) -> AsyncIterator[str]:
    async def invoke(request: web.Request) -> web.Response:
        seen.append(
            {
                "path": request.path,
                "query": dict(request.query),
                "invocation_type": request.headers.get("X-Amz-Invocation-Type"),
                # SigV4's credential scope: KEY/DATE/REGION/SERVICE/aws4_request
                "region": request.headers["Authorization"].split("Credential=")[1].split("/")[2],
                "body": await request.json(),
            }
        )
        return _answer(behaviour)

    app = web.Application()
    app.router.add_post("/2015-03-31/functions/{name}/invocations", invoke)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def _invoke_fake(
    behaviour: str,
    monkeypatch: pytest.MonkeyPatch,
    arn: str | None = None,
    default_region: str = "us-east-1",
) -> tuple[Any, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    async with fake_lambda(behaviour, seen) as url:
        monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", url)
        async with AwsClients(default_region) as clients:
            target = arn or f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:orders:live"
            result = await LambdaInvoker(target, clients).invoke(EVENT)
    return result, seen


async def test_the_request_is_a_synchronous_invoke_of_the_qualified_function(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result, seen = await _invoke_fake("partial", monkeypatch)
    assert seen[0]["invocation_type"] == "RequestResponse"
    assert seen[0]["body"] == EVENT
    assert "orders" in seen[0]["path"]
    assert interpret(result, ["m1", "m2"], True) == PartialFailure(("m2",))


async def test_the_function_is_invoked_in_the_region_its_arn_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    arn = f"arn:aws:lambda:ap-northeast-1:{ACCOUNT}:function:orders"
    result, seen = await _invoke_fake("partial", monkeypatch, arn, default_region="eu-west-1")
    assert isinstance(result, Returned)
    assert seen[0]["region"] == "ap-northeast-1"  # not AWS_REGION's eu-west-1


async def test_x_amz_function_error_is_a_function_error(monkeypatch: pytest.MonkeyPatch) -> None:
    result, _ = await _invoke_fake("function_error", monkeypatch)
    assert isinstance(result, FunctionError)
    assert (result.error_type, result.message, result.function_error) == (
        "ValueError",
        "order 7 has no customer",
        "Unhandled",
    )


async def test_too_many_requests_is_a_throttle(monkeypatch: pytest.MonkeyPatch) -> None:
    result, seen = await _invoke_fake("throttle", monkeypatch)
    assert isinstance(result, InvokeFailure) and result.throttled
    assert len(seen) == 1  # botocore does not retry an Invoke: the router does


@pytest.mark.parametrize("behaviour", ["service", "not_found"])
async def test_other_service_errors_are_invoke_failures(
    behaviour: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, _ = await _invoke_fake(behaviour, monkeypatch)
    assert isinstance(result, InvokeFailure) and not result.throttled


async def test_an_unreachable_endpoint_is_an_invoke_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", f"http://127.0.0.1:{port}")
    async with AwsClients("us-east-1") as clients:
        arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:orders"
        result = await LambdaInvoker(arn, clients).invoke(EVENT)
    assert isinstance(result, InvokeFailure) and not result.throttled


async def test_check_looks_up_a_lambda_function_without_invoking_it(moto_function: str) -> None:
    from sluiceway.app.target_checks import reach_lambda
    from sluiceway.config import load_settings

    env = {
        "AWS_REGION": "us-east-1",
        "SLUICEWAY_MAPPINGS__ORDERS__SOURCE": "arn:aws:sqs:us-east-1:000000000000:orders",
        "SLUICEWAY_MAPPINGS__ORDERS__HANDLER": f"{moto_function}:live",
        "SLUICEWAY_MAPPINGS__MISSING__SOURCE": "arn:aws:sqs:us-east-1:000000000000:orders",
        "SLUICEWAY_MAPPINGS__MISSING__HANDLER": moto_function.replace(":orders", ":missing"),
    }
    settings = load_settings(env)
    async with AwsClients("us-east-1") as clients:
        ok, detail = await reach_lambda(settings.mappings["orders"], clients)
        missing_ok, missing = await reach_lambda(settings.mappings["missing"], clients)
    assert ok, detail
    assert not missing_ok and "ResourceNotFoundException" in missing

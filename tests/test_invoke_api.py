"""Lambda's Invoke API on the service's port, called with boto3's own `lambda` client: sync,
async and dry-run invokes, the log tail and client context, every error in Lambda's shape, and
SigV4 authentication (signed, unsigned, wrongly signed)."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
from sluiceway.app.service import Service
from sluiceway.config import load_settings

from tests.support.sqs import eventually

pytestmark = pytest.mark.anyio

KEY, SECRET = "AKIDSLUICEWAY", "s3cr3t"
H = "tests.support.async_handlers"


def function_env(name: str, **fields: Any) -> dict[str, str]:
    return {
        f"SLUICEWAY_FUNCTIONS__{name.upper()}__{key.upper()}": value
        if isinstance(value, str)
        else json.dumps(value)
        for key, value in fields.items()
    }


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        "AWS_REGION": "us-east-1",
        "SLUICEWAY_HTTP__HOST": "127.0.0.1",
        "SLUICEWAY_HTTP__PORT": "0",
        "SLUICEWAY_CHECKPOINTS__PATH": str(tmp_path / "sluiceway.db"),
        "SLUICEWAY_API__KEYS": json.dumps({KEY: SECRET}),
        "SLUICEWAY_ASYNC__RETRY_DELAYS_SECONDS": "[0.2, 0.2]",
        "OTEL_SDK_DISABLED": "true",
    }
    env.update(function_env("echo", handler=f"{H}:echo"))
    env.update(function_env("fail", handler=f"{H}:fail", maximum_retry_attempts=0))
    env.update(
        function_env("busy", handler=f"{H}:slow", reserved_concurrent_executions=1, timeout=5)
    )
    env.update(extra)
    return env


@contextlib.asynccontextmanager
async def serving(env: dict[str, str]) -> AsyncIterator[Service]:
    service = Service(load_settings(env), handle_signals=False)
    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        try:
            yield service
        finally:
            service.stop()


def lambda_client(
    service: Service, *, key: str = KEY, secret: str = SECRET, signed: bool = True
) -> Any:
    assert service.http is not None
    config = Config(
        retries={"max_attempts": 0}, **({} if signed else {"signature_version": UNSIGNED})
    )
    return boto3.client(
        "lambda",
        endpoint_url=f"http://127.0.0.1:{service.http.port}",
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=config,
    )


async def call(client: Any, operation: str, **kwargs: Any) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        response = getattr(client, operation)(**kwargs)
        if "Payload" in response:
            response["Payload"] = response["Payload"].read()
        return response

    return await anyio.to_thread.run_sync(run)


@contextlib.contextmanager
def raises(code: str, status: int) -> Iterator[None]:
    with pytest.raises(ClientError) as caught:
        yield
    error = caught.value.response
    assert error["Error"]["Code"] == code, error
    assert error["ResponseMetadata"]["HTTPStatusCode"] == status


async def test_sync_invoke_returns_the_payload_log_tail_and_client_context(tmp_path: Path) -> None:
    async with serving(base_env(tmp_path)) as service:
        client = lambda_client(service)
        context = base64.b64encode(json.dumps({"custom": {"tenant": "t1"}}).encode()).decode()
        response = await call(
            client,
            "invoke",
            FunctionName="echo",
            Payload=json.dumps({"a": 1}),
            LogType="Tail",
            ClientContext=context,
        )
        assert response["StatusCode"] == 200
        assert response["ExecutedVersion"] == "$LATEST"
        assert "FunctionError" not in response
        body = json.loads(response["Payload"])
        assert body["echo"] == {"a": 1}
        assert body["custom"] == {"tenant": "t1"}
        log = base64.b64decode(response["LogResult"]).decode()
        request_id = body["request_id"]
        assert log.startswith(f"START RequestId: {request_id} Version: $LATEST\n")
        assert 'echo handling {"a": 1}' in log
        assert "a log line from echo" in log
        assert f"END RequestId: {request_id}\n" in log
        assert f"REPORT RequestId: {request_id}\t" in log
        # by ARN, partial ARN and with $LATEST
        for name in (
            "arn:aws:lambda:us-east-1:000000000000:function:echo",
            "000000000000:function:echo",
            "echo:$LATEST",
        ):
            again = await call(client, "invoke", FunctionName=name, Payload=b"{}")
            assert json.loads(again["Payload"])["echo"] == {}


async def test_a_function_error_is_lambdas_error_document(tmp_path: Path) -> None:
    async with serving(base_env(tmp_path)) as service:
        response = await call(lambda_client(service), "invoke", FunctionName="fail", Payload=b"{}")
        assert response["StatusCode"] == 200
        assert response["FunctionError"] == "Unhandled"
        error = json.loads(response["Payload"])
        assert list(error) == ["errorMessage", "errorType", "requestId", "stackTrace"]
        assert error["errorMessage"] == "Test exception (this is intentional)"
        assert error["errorType"] == "Exception"
        assert any("in fail" in frame for frame in error["stackTrace"])
        assert all("sluiceway" not in frame for frame in error["stackTrace"])


async def test_event_is_202_after_it_is_stored_and_dry_run_is_204(tmp_path: Path) -> None:
    async with serving(base_env(tmp_path)) as service:
        client = lambda_client(service)
        response = await call(
            client, "invoke", FunctionName="echo", InvocationType="Event", Payload=b'{"x": 1}'
        )
        assert response["StatusCode"] == 202
        assert response["Payload"] == b""
        stats = service.registry.functions["echo"]
        assert stats.async_events_received == 1
        await eventually(lambda: stats.invocations == 1, timeout=10)
        dry = await call(client, "invoke", FunctionName="echo", InvocationType="DryRun")
        assert dry["StatusCode"] == 204


async def test_errors_in_lambdas_shapes(tmp_path: Path) -> None:
    async with serving(base_env(tmp_path)) as service:
        client = lambda_client(service)
        with raises("ResourceNotFoundException", 404):
            await call(client, "invoke", FunctionName="nope", Payload=b"{}")
        with raises("ResourceNotFoundException", 404):
            await call(client, "invoke", FunctionName="echo", Qualifier="7", Payload=b"{}")
        with raises("InvalidRequestContentException", 400):
            await call(client, "invoke", FunctionName="echo", Payload=b"{not json")
        with raises("RequestTooLargeException", 413):
            await call(
                client,
                "invoke",
                FunctionName="echo",
                Payload=b'"' + b"x" * (6 * 1024 * 1024) + b'"',
            )
        with raises("RequestTooLargeException", 413):
            await call(
                client,
                "invoke",
                FunctionName="echo",
                InvocationType="Event",
                Payload=b'"' + b"x" * (1024 * 1024) + b'"',
            )
        # under the async limit is accepted
        ok = await call(
            client,
            "invoke",
            FunctionName="echo",
            InvocationType="Event",
            Payload=b'"' + b"x" * 1000 + b'"',
        )
        assert ok["StatusCode"] == 202


async def test_a_sync_invoke_over_reserved_concurrency_is_throttled(tmp_path: Path) -> None:
    async with serving(base_env(tmp_path)) as service:
        client = lambda_client(service)
        results: list[Any] = []

        async def one() -> None:
            try:
                results.append(
                    (await call(client, "invoke", FunctionName="busy", Payload=b'{"sleep": 1}'))[
                        "StatusCode"
                    ]
                )
            except ClientError as exc:
                results.append(exc.response["Error"]["Code"])

        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            await anyio.sleep(0.3)
            tg.start_soon(one)
        assert sorted(map(str, results)) == ["200", "TooManyRequestsException"]


async def test_signatures_are_checked_with_the_configured_keys(tmp_path: Path) -> None:
    async with serving(base_env(tmp_path)) as service:
        with raises("MissingAuthenticationTokenException", 403):
            await call(
                lambda_client(service, signed=False), "invoke", FunctionName="echo", Payload=b"{}"
            )
        with raises("UnrecognizedClientException", 403):
            await call(
                lambda_client(service, key="AKIDOTHER"),
                "invoke",
                FunctionName="echo",
                Payload=b"{}",
            )
        with raises("InvalidSignatureException", 403):
            await call(
                lambda_client(service, secret="wrong"), "invoke", FunctionName="echo", Payload=b"{}"
            )
        with raises("InvalidSignatureException", 403):
            await call(lambda_client(service, secret="wrong"), "list_event_source_mappings")
        assert (
            service.registry.functions.get("echo") is None
            or service.registry.functions["echo"].invocations == 0
        )


async def test_auth_none_accepts_unsigned_requests(tmp_path: Path) -> None:
    async with serving(base_env(tmp_path, SLUICEWAY_API__AUTH="none")) as service:
        response = await call(
            lambda_client(service, signed=False), "invoke", FunctionName="echo", Payload=b"{}"
        )
        assert response["StatusCode"] == 200


async def test_event_source_mappings_are_listed_read_only(tmp_path: Path, moto_url: str) -> None:
    queue = "arn:aws:sqs:us-east-1:123456789012:listed"
    env = base_env(
        tmp_path,
        SLUICEWAY_MAPPINGS__ORDERS__SOURCE=queue,
        SLUICEWAY_MAPPINGS__ORDERS__FUNCTION_NAME="echo",
        SLUICEWAY_MAPPINGS__ORDERS__BATCH_SIZE="5",
        SLUICEWAY_MAPPINGS__ORDERS__ENABLED="false",
    )
    async with serving(env) as service:
        client = lambda_client(service)
        listed = (await call(client, "list_event_source_mappings"))["EventSourceMappings"]
        assert len(listed) == 1
        mapping = listed[0]
        assert mapping["EventSourceArn"] == queue
        assert mapping["FunctionArn"] == "arn:aws:lambda:us-east-1:123456789012:function:echo"
        assert mapping["State"] == "Disabled"
        assert mapping["BatchSize"] == 5
        assert "LastProcessingResult" in mapping
        one = await call(client, "get_event_source_mapping", UUID=mapping["UUID"])
        assert one["EventSourceArn"] == queue
        filtered = await call(client, "list_event_source_mappings", FunctionName="other")
        assert filtered["EventSourceMappings"] == []
        with raises("ResourceNotFoundException", 404):
            await call(
                client, "get_event_source_mapping", UUID="00000000-0000-0000-0000-000000000000"
            )
        with raises("InvalidParameterValueException", 400):
            await call(
                client, "create_event_source_mapping", EventSourceArn=queue, FunctionName="echo"
            )
        with raises("InvalidParameterValueException", 400):
            await call(client, "delete_event_source_mapping", UUID=mapping["UUID"])

"""`sluiceway invoke FUNCTION`: call a function of a running service through its Invoke API
(boto3's own `lambda` client, so the request is what any SDK sends), or in this process with
`--local`."""

from __future__ import annotations

import argparse
import base64
import contextlib
import sys
import uuid
from pathlib import Path

import anyio
import orjson
from sluiceway.config.settings import Settings
from sluiceway.core.errors import SluicewayError


class InvokeError(SluicewayError):
    """The invoke could not be made (no such function, service unreachable, bad payload)."""


def read_payload(value: str | None) -> bytes:
    """--payload JSON, or @file for a file's contents; nothing is `{}`."""
    if value is None:
        return b"{}"
    if value.startswith("@"):
        path = Path(value[1:]).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvokeError(f"--payload {value}: cannot read {path}: {exc.strerror}") from None
    else:
        data = value.encode()
    try:
        orjson.loads(data or b"{}")
    except orjson.JSONDecodeError as exc:
        raise InvokeError(f"--payload must be JSON (or @file holding JSON): {exc}") from None
    return data


def invoke_remote(args: argparse.Namespace, settings: Settings, payload: bytes) -> int:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    url = args.url or f"http://127.0.0.1:{settings.http.port}"
    client = boto3.client(
        "lambda",
        endpoint_url=url,
        region_name=settings.aws_region,
        config=Config(read_timeout=960, retries={"max_attempts": 0}),
    )
    try:
        response = client.invoke(
            FunctionName=args.function,
            InvocationType=args.invocation_type,
            LogType=args.log_type,
            Payload=payload,
        )
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise InvokeError(f"{error.get('Code')}: {error.get('Message')}") from None
    except BotoCoreError as exc:
        raise InvokeError(f"cannot reach the service at {url}: {exc}") from None
    return _report(
        response["StatusCode"],
        response["Payload"].read(),
        response.get("FunctionError"),
        response.get("LogResult"),
    )


def invoke_local(args: argparse.Namespace, settings: Settings, payload: bytes) -> int:
    """Run the function in this process: its handler, limits and isolation, invoked once."""
    from sluiceway.app.function_host import find_function, run_invocation
    from sluiceway.handlers.invocation import InvocationOptions
    from sluiceway.handlers.results import FunctionError, InvokeFailure
    from sluiceway.handlers.targets import build_target
    from sluiceway.router.async_events import error_payload

    functions = settings.function_table()
    config = find_function(functions, args.function.rsplit(":function:", 1)[-1].split(":")[0])
    if config is None:
        known = ", ".join(sorted(functions)) or "none"
        raise InvokeError(f"no function {args.function} is configured (functions: {known})")
    if args.invocation_type == "DryRun":
        return _report(204, b"", None, None)

    async def run() -> int:
        invoker = build_target(config, settings)
        options = InvocationOptions(request_id=str(uuid.uuid4()), tail=args.log_type == "Tail")
        try:
            # the function's own output goes to stderr: stdout is the payload, as a file would be
            with contextlib.redirect_stdout(sys.stderr):
                result = await run_invocation(invoker, config, payload, options)
        finally:
            await invoker.aclose()
        log = None
        if options.tail:  # the output was already written to stderr as it happened
            log = base64.b64encode(options.log_tail().encode()).decode()
            sys.stderr.write("--- log tail ---\n")
        if isinstance(result, InvokeFailure):
            raise InvokeError(f"the function could not be invoked: {result.reason}")
        if isinstance(result, FunctionError):
            body = orjson.dumps(error_payload(result, options.request_id or ""))
            return _report(200, body, result.function_error, log)
        body = result.payload if isinstance(result.payload, bytes) else orjson.dumps(result.payload)
        return _report(200 if args.invocation_type != "Event" else 202, body, None, log)

    return anyio.run(run)


def _report(status: int, body: bytes, function_error: str | None, log: str | None) -> int:
    """The payload on stdout (as `aws lambda invoke` writes it to a file); status and log on stderr."""
    if log:
        sys.stderr.write(base64.b64decode(log).decode(errors="replace"))
    if body:
        sys.stdout.write(body.decode(errors="replace") + "\n")
    line = f"StatusCode: {status}"
    if function_error:
        line += f", FunctionError: {function_error}"
    print(line, file=sys.stderr)
    return 1 if function_error else 0

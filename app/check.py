"""`sluiceway check`: validate the configuration and reach every source and handler before running."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
from sluiceway.app.target_checks import reach_http, reach_lambda
from sluiceway.config.functions import FunctionConfig
from sluiceway.config.mapping import Isolation, MappingConfig
from sluiceway.config.settings import Settings
from sluiceway.config.sources import DestinationRef, names_placeholder_region
from sluiceway.core.aws import AwsClients
from sluiceway.core.aws_retry import error_code
from sluiceway.core.secrets import known_secrets, register_aws_credentials
from sluiceway.handlers.loader import HandlerLoadError
from sluiceway.handlers.targets import TargetError, build_target, every_function, isolation_for
from sluiceway.pollers.probes import probe_source

CHECK_TIMEOUT_SECONDS = 15.0


@dataclass
class CheckResult:
    mapping: str
    what: str
    ok: bool
    detail: str

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        return known_secrets.mask(f"{mark} {self.mapping}: {self.what} — {self.detail}")


async def _check_source(mapping: MappingConfig, clients: AwsClients) -> CheckResult:
    try:
        with anyio.fail_after(CHECK_TIMEOUT_SECONDS):
            what, detail = await probe_source(mapping, clients)
            return CheckResult(mapping.name, what, True, detail)
    except TimeoutError:
        return CheckResult(mapping.name, "source", False, "no answer within 15s")
    except Exception as exc:
        detail = f"{error_code(exc)}: {exc}"
        if names_placeholder_region(mapping.source):
            detail += (
                f" (read in AWS_REGION {mapping.source_ref.region}, as the ARN names no region: "
                "DynamoDB Local keeps one database per access key and region, so AWS_REGION must "
                "be the region the table was created in, unless it runs with -sharedDb)"
            )
        return CheckResult(mapping.name, f"source {mapping.source}", False, detail)


async def _check_handler(
    mapping: MappingConfig | FunctionConfig,
    settings: Settings,
    clients: AwsClients,
    isolation: tuple[Isolation, str | None],
) -> CheckResult:
    """HTTP and Lambda targets are reached without invoking; a Python handler is loaded exactly
    as `run` loads it: the same target, isolation and environment, its init phase run once."""
    handler = mapping.handler
    what = f"handler {handler}"
    if mapping.handler_kind in ("http", "lambda"):
        if mapping.handler_kind == "http":
            ok, detail = await reach_http(mapping)  # type: ignore[arg-type]
        else:
            ok, detail = await reach_lambda(mapping, clients)  # type: ignore[arg-type]
        return CheckResult(mapping.name, what, ok, detail)
    try:
        invoker = build_target(mapping, settings, clients, isolations={mapping.name: isolation})
    except TargetError as exc:
        return CheckResult(mapping.name, what, False, str(exc))
    try:
        with anyio.fail_after(CHECK_TIMEOUT_SECONDS):
            init = await invoker.warm()
    except HandlerLoadError as exc:
        return CheckResult(mapping.name, what, False, f"{exc.error_type}: {exc}")
    except TimeoutError:
        return CheckResult(mapping.name, what, False, "init did not finish within 15s")
    finally:
        with anyio.CancelScope(shield=True):
            await invoker.aclose()
    init_ms = f"init {(init or 0.0) * 1000:.1f} ms"
    chosen, reason = isolation
    how = f"isolation {chosen}" + (f" (automatic: {reason})" if reason else "")
    return CheckResult(mapping.name, what, True, f"{how}, {init_ms}")


async def _reach_destination(ref: DestinationRef, clients: AwsClients) -> str:
    """Look the destination up without sending anything to it."""
    if ref.kind == "sqs":
        sqs = await clients.client("sqs", region=ref.region)
        response = await sqs.get_queue_url(QueueName=ref.name, QueueOwnerAWSAccountId=ref.account)
        return f"queue {response['QueueUrl']}"
    if ref.kind == "sns":
        sns = await clients.client("sns", region=ref.region)
        await sns.get_topic_attributes(TopicArn=ref.arn)
        return "topic found"
    if ref.kind == "s3":
        s3 = await clients.client("s3", region=ref.region)
        await s3.head_bucket(Bucket=ref.name)
        return "bucket found"
    events = await clients.client("events", region=ref.region)
    await events.describe_event_bus(Name=ref.arn)
    return "event bus found"


async def _check_destination(mapping: MappingConfig, clients: AwsClients) -> CheckResult | None:
    ref = mapping.on_failure_destination
    if ref is None:
        return None
    return await _check_target(mapping.name, f"on-failure destination {ref.arn}", ref, clients)


async def _check_function(
    function: FunctionConfig,
    settings: Settings,
    clients: AwsClients,
    isolation: tuple[Isolation, str | None],
) -> list[CheckResult]:
    """A declared function: its handler loads, and its destinations and DLQ exist."""
    label = f"function {function.name}"
    result = await _check_handler(function, settings, clients, isolation)
    results = [CheckResult(label, result.what, result.ok, result.detail)]
    targets = [
        ("on-success destination", function.on_success),
        ("on-failure destination", function.on_failure),
        ("dead-letter queue", function.dead_letter),
    ]
    for what, ref in targets:
        if ref is None:
            continue
        if ref.kind == "lambda":
            known = ref.name.lower() in settings.function_table()
            where = "a function of this service" if known else "a Lambda function (Invoke)"
            results.append(CheckResult(label, f"{what} {ref.arn}", True, where))
            continue
        results.append(await _check_target(label, f"{what} {ref.arn}", ref, clients))
    return results


async def _check_target(
    owner: str, what: str, ref: DestinationRef, clients: AwsClients
) -> CheckResult:
    try:
        with anyio.fail_after(CHECK_TIMEOUT_SECONDS):
            return CheckResult(owner, what, True, await _reach_destination(ref, clients))
    except TimeoutError:
        return CheckResult(owner, what, False, "no answer within 15s")
    except Exception as exc:
        return CheckResult(owner, what, False, f"{error_code(exc)}: {exc}")


async def run_checks(settings: Settings) -> list[CheckResult]:
    results: list[CheckResult] = []
    isolations = isolation_for(every_function(settings))
    for config in [*settings.mappings.values(), *settings.functions.values()]:
        known_secrets.add_environment(config.environment)  # a handler's init error may quote them
    async with AwsClients(settings.aws_region) as clients:
        await register_aws_credentials(clients.session)
        for mapping in settings.mappings.values():
            isolation = isolations[mapping.name]
            results.append(await _check_handler(mapping, settings, clients, isolation))
            results.append(await _check_source(mapping, clients))
            destination = await _check_destination(mapping, clients)
            if destination is not None:
                results.append(destination)
        for function in settings.functions.values():
            results.extend(
                await _check_function(function, settings, clients, isolations[function.name])
            )
    return results

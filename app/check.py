"""`sluiceway check`: validate the configuration and reach every source and handler before running."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
from sluiceway.app.target_checks import reach_http, reach_lambda
from sluiceway.config.mapping import MappingConfig
from sluiceway.config.settings import Settings
from sluiceway.config.sources import DestinationRef
from sluiceway.core.aws import AwsClients
from sluiceway.core.aws_retry import error_code
from sluiceway.handlers.loader import HandlerLoadError, load_handler

CHECK_TIMEOUT_SECONDS = 15.0


@dataclass
class CheckResult:
    mapping: str
    what: str
    ok: bool
    detail: str

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        return f"{mark} {self.mapping}: {self.what} — {self.detail}"


async def _check_sqs(mapping: MappingConfig, clients: AwsClients) -> CheckResult:
    source = mapping.source_ref
    sqs = await clients.client("sqs")
    url = source.queue_url
    if not url:
        url = (await sqs.get_queue_url(QueueName=source.name))["QueueUrl"]
    attrs = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]))["Attributes"]
    vt = int(attrs.get("VisibilityTimeout", 30))
    notes = [f"visibility timeout {vt}s"]
    notes.append("redrive policy set" if "RedrivePolicy" in attrs else "no redrive policy (no DLQ)")
    return CheckResult(mapping.name, f"source {url}", True, ", ".join(notes))


async def _check_stream(mapping: MappingConfig, clients: AwsClients) -> CheckResult:
    """Kinesis: DescribeStreamSummary. DynamoDB: the table's latest stream, DescribeStream."""
    source = mapping.source_ref
    if mapping.kind == "kinesis":
        kinesis = await clients.client("kinesis")
        summary = (await kinesis.describe_stream_summary(StreamName=source.name))[
            "StreamDescriptionSummary"
        ]
        detail = f"{summary['StreamStatus']}, {summary.get('OpenShardCount', '?')} open shards"
        return CheckResult(mapping.name, f"source {source.arn}", True, detail)
    arn = source.arn
    if not source.stream_label:
        dynamodb = await clients.client("dynamodb")
        table = (await dynamodb.describe_table(TableName=source.table))["Table"]
        arn = table.get("LatestStreamArn") or ""
        if not arn:
            return CheckResult(mapping.name, f"source {source.arn}", False, "no stream enabled")
    streams = await clients.client("dynamodbstreams")
    description = (await streams.describe_stream(StreamArn=arn))["StreamDescription"]
    detail = f"{description['StreamStatus']}, {description.get('StreamViewType', '?')}"
    return CheckResult(mapping.name, f"source {arn}", True, detail)


async def _check_source(mapping: MappingConfig, clients: AwsClients) -> CheckResult:
    try:
        with anyio.fail_after(CHECK_TIMEOUT_SECONDS):
            if mapping.kind == "sqs":
                return await _check_sqs(mapping, clients)
            if mapping.kind in ("kinesis", "dynamodb"):
                return await _check_stream(mapping, clients)
            return CheckResult(mapping.name, "source", False, f"{mapping.kind} is not supported")
    except TimeoutError:
        return CheckResult(mapping.name, "source", False, "no answer within 15s")
    except Exception as exc:
        return CheckResult(
            mapping.name, f"source {mapping.source}", False, f"{error_code(exc)}: {exc}"
        )


async def _check_handler(mapping: MappingConfig, clients: AwsClients) -> CheckResult:
    handler = mapping.handler
    if mapping.handler_kind in ("http", "lambda"):
        if mapping.handler_kind == "http":
            ok, detail = await reach_http(mapping)
        else:
            ok, detail = await reach_lambda(mapping, clients)
        return CheckResult(mapping.name, f"handler {handler}", ok, detail)
    try:
        loaded = await anyio.to_thread.run_sync(load_handler, handler, mapping.code_path)
    except HandlerLoadError as exc:
        return CheckResult(mapping.name, f"handler {handler}", False, f"{exc.error_type}: {exc}")
    kind = "async" if loaded.is_async else "sync"
    return CheckResult(
        mapping.name,
        f"handler {handler}",
        True,
        f"{kind}, init {loaded.init_duration * 1000:.1f} ms",
    )


async def _reach_destination(ref: DestinationRef, clients: AwsClients) -> str:
    """Look the destination up without sending anything to it."""
    if ref.kind == "sqs":
        sqs = await clients.client("sqs")
        account = ref.arn.split(":")[4]
        url = (await sqs.get_queue_url(QueueName=ref.name, QueueOwnerAWSAccountId=account))[
            "QueueUrl"
        ]
        return f"queue {url}"
    if ref.kind == "sns":
        sns = await clients.client("sns")
        await sns.get_topic_attributes(TopicArn=ref.arn)
        return "topic found"
    if ref.kind == "s3":
        s3 = await clients.client("s3")
        await s3.head_bucket(Bucket=ref.name)
        return "bucket found"
    events = await clients.client("events")
    await events.describe_event_bus(Name=ref.arn)
    return "event bus found"


async def _check_destination(mapping: MappingConfig, clients: AwsClients) -> CheckResult | None:
    ref = mapping.on_failure_destination
    if ref is None:
        return None
    what = f"on-failure destination {ref.arn}"
    try:
        with anyio.fail_after(CHECK_TIMEOUT_SECONDS):
            return CheckResult(mapping.name, what, True, await _reach_destination(ref, clients))
    except TimeoutError:
        return CheckResult(mapping.name, what, False, "no answer within 15s")
    except Exception as exc:
        return CheckResult(mapping.name, what, False, f"{error_code(exc)}: {exc}")


async def run_checks(settings: Settings) -> list[CheckResult]:
    results: list[CheckResult] = []
    async with AwsClients(settings.aws_region) as clients:
        for mapping in settings.mappings.values():
            results.append(await _check_handler(mapping, clients))
            results.append(await _check_source(mapping, clients))
            destination = await _check_destination(mapping, clients)
            if destination is not None:
                results.append(destination)
    return results

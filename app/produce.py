"""`sluiceway produce`: a steady mix of test events to every mapping's source, with trace context.

It reads the same configuration as `run` and writes to each distinct source: orders to a standard
queue, ledger entries to a FIFO queue, clicks to a Kinesis stream, account changes to a DynamoDB
table (the mixes are `sluiceway.app.traffic`'s: good events, events the stack's filters drop,
flaky ones that fail once and poison ones that always fail). Every send is a PRODUCER span;
SQS messages carry its context (a W3C `traceparent` message attribute on standard queues, the
X-Ray `AWSTraceHeader` system attribute on FIFO queues), which the service links each batch to.
Kinesis and DynamoDB records have no place for trace context in Lambda's event shape, so their
producer spans stand alone.

It sends poison on purpose, so it runs only against an emulator (an AWS_ENDPOINT_URL is set).
With `--create` it first creates each source (queues with a DLQ), each on-failure destination,
and keeps what already exists.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import anyio
import orjson
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sluiceway.app import traffic
from sluiceway.config.filter_patterns import RecordFilter, compile_filter_criteria
from sluiceway.config.mapping import MappingConfig
from sluiceway.config.settings import Settings
from sluiceway.config.sources import SourceRef
from sluiceway.core.aws import AwsClients
from sluiceway.core.aws_retry import error_code
from sluiceway.core.errors import SluicewayError
from sluiceway.core.telemetry import MESSAGING_SYSTEM

log = logging.getLogger(__name__)

QUEUE_VISIBILITY_SECONDS = 10
"""Created queues: a failed message is seen again after 10 s ..."""
MAX_RECEIVES = 3
"""... and moves to its DLQ on its third failed receive."""
STREAM_SHARDS = 2
REPORT_SECONDS = 10.0
SEND_SECONDS = 10.0
"""One send gives up after this long (an emulator that stopped answering); a stop waits for it."""
SERVICE_NAME = "sluiceway-producer"
"""OTEL_SERVICE_NAME unless the environment sets one, so its spans never pass for the service's."""
_ENDPOINT_SERVICES = {
    "sqs": "SQS",
    "kinesis": "KINESIS",
    "dynamodb": "DYNAMODB",
    "sns": "SNS",
    "s3": "S3",
    "events": "EVENTBRIDGE",
}
"""Client name -> the suffix of its AWS_ENDPOINT_URL_<SERVICE> variable."""
_propagator = TraceContextTextMapPropagator()


class ProduceError(SluicewayError):
    """The producer cannot start: no emulator, no mappings, or a source it cannot reach."""


@dataclass(frozen=True)
class ProduceOptions:
    rate: float = 5.0
    """Events a second to each source."""
    duration: float | None = None
    """Stop after this many seconds; None runs until SIGTERM / SIGINT."""
    create: bool = False
    create_only: bool = False
    withhold_destinations: float = 0.0
    """Create the on-failure destinations this long after sending starts (a destination outage)."""
    report_seconds: float = REPORT_SECONDS


@dataclass
class Target:
    """One source the producer writes to, the mappings that read it and what was sent."""

    ref: SourceRef
    mappings: list[MappingConfig]
    filters: dict[str, RecordFilter | None]
    queue_url: str = ""
    sent: Counter[str] = field(default_factory=Counter)
    filtered: Counter[str] = field(default_factory=Counter)
    """Per mapping: events its FILTER_CRITERIA drops (judged from what was sent)."""
    errors: int = 0
    last_error: str = ""

    @property
    def label(self) -> str:
        kind = "fifo" if self.ref.fifo else self.ref.kind
        return f"{self.ref.name} ({kind})"

    def count(self, label: str, record: dict[str, Any]) -> None:
        self.sent[label] += 1
        for name, record_filter in self.filters.items():
            if record_filter is not None and not record_filter.matches(record):
                self.filtered[name] += 1

    def line(self) -> str:
        mix = ", ".join(f"{label} {n}" for label, n in sorted(self.sent.items()))
        text = f"{self.label}: sent {sum(self.sent.values())} ({mix or 'nothing yet'})"
        for mapping in self.mappings:
            if self.filters.get(mapping.name) is not None:
                text += f"; filtered out by mapping {mapping.name}: {self.filtered[mapping.name]}"
        if self.errors:
            text += f"; {self.errors} failed sends (last: {self.last_error})"
        return text


def targets_for(settings: Settings) -> list[Target]:
    """One target per distinct source, in the order the mappings are configured."""
    by_arn: dict[str, Target] = {}
    for mapping in settings.mappings.values():
        ref = mapping.source_ref
        target = by_arn.get(ref.arn)
        if target is None:
            target = by_arn[ref.arn] = Target(ref, [], {})
        target.mappings.append(mapping)
        target.filters[mapping.name] = compile_filter_criteria(mapping.filter_criteria, ref.kind)
    return list(by_arn.values())


def require_emulator(environ: Mapping[str, str], services: set[str]) -> None:
    """Refuse to send test events (poison included) anywhere but an emulator."""
    if environ.get("AWS_ENDPOINT_URL"):
        return
    missing = sorted(
        s for s in services if not environ.get(f"AWS_ENDPOINT_URL_{_ENDPOINT_SERVICES[s]}")
    )
    if missing:
        raise ProduceError(
            "produce sends test events, poison ones included, so it runs only against an "
            "emulator: set AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_<SERVICE> for "
            + ", ".join(missing)
            + ")"
        )


def _services(targets: list[Target], destinations: bool) -> set[str]:
    services = {t.ref.kind for t in targets}
    if destinations:
        for target in targets:
            for mapping in target.mappings:
                ref = mapping.on_failure_destination
                if ref is not None:
                    services.add(traffic.destination_service(ref))
    return services


# ------------------------------------------------------------------------------- the command


async def produce(
    settings: Settings,
    options: ProduceOptions,
    out: TextIO = sys.stdout,
    tracer: trace.Tracer | None = None,
) -> int:
    """Create (optionally) and send until stopped; returns the exit status.

    Spans go to `tracer`, by default the global provider's (`setup_tracing`).
    """
    targets = targets_for(settings)
    if not targets:
        raise ProduceError(
            "no mappings configured (set SLUICEWAY_MAPPINGS__<NAME>__SOURCE and __HANDLER): "
            "produce writes to every mapping's source"
        )
    creating = options.create or options.create_only
    require_emulator(os.environ, _services(targets, destinations=creating))
    async with _Clients(settings.aws_region) as clients:
        if creating:
            await _create_sources(targets, clients, out)
            if not options.withhold_destinations:
                await _create_destinations(targets, clients, settings.aws_region, out)
            elif options.create_only:
                _say(out, "on-failure destinations withheld: `produce --create` creates them later")
        if options.create_only:
            return 0
        await _resolve(targets, clients)
        _describe_filters(targets, out)
        tracer = tracer or trace.get_tracer("sluiceway.produce")
        await _send_until_stopped(targets, clients, settings.aws_region, options, out, tracer)
    return 0


def _say(out: TextIO, text: str) -> None:
    print(f"produce: {text}", file=out, flush=True)


class _Clients:
    """One AwsClients per region, so each source is written in the region its ARN names."""

    def __init__(self, default_region: str) -> None:
        self.default_region = default_region
        self._by_region: dict[str, AwsClients] = {}
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> _Clients:
        await self._stack.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def client(self, service: str, region: str | None = None) -> Any:
        region = region or self.default_region
        clients = self._by_region.get(region)
        if clients is None:
            clients = await self._stack.enter_async_context(AwsClients(region))
            self._by_region[region] = clients
        return await clients.client(service)


async def _create_sources(targets: list[Target], clients: _Clients, out: TextIO) -> None:
    for target in targets:
        ref = target.ref
        try:
            client = await clients.client(ref.kind, ref.region)
            if ref.kind == "sqs":
                target.queue_url, dlq_url = await traffic.create_queue(
                    client,
                    ref.name,
                    visibility_seconds=QUEUE_VISIBILITY_SECONDS,
                    max_receives=MAX_RECEIVES,
                )
                what = f"queue {ref.name} (DLQ {dlq_url.rsplit('/', 1)[-1]} after {MAX_RECEIVES} receives)"
            elif ref.kind == "kinesis":
                await traffic.create_stream(client, ref.name, shards=STREAM_SHARDS)
                what = f"stream {ref.name}"
            else:
                if ref.stream_label is not None:
                    raise ProduceError(
                        f"{ref.arn} names one stream of table {ref.name}, which cannot be "
                        "created with that label: name the table's ARN as the source instead"
                    )
                await traffic.create_table(client, ref.name)
                what = f"table {ref.name} with a stream"
        except ProduceError:
            raise
        except TimeoutError:
            raise ProduceError(
                f"{ref.arn} was not ACTIVE within {traffic.CREATE_TIMEOUT_SECONDS:g} s"
            ) from None
        except Exception as exc:
            raise ProduceError(f"could not create {ref.arn}: {error_code(exc)}: {exc}") from None
        _say(out, f"ready: {what}")


async def _create_destinations(
    targets: list[Target], clients: _Clients, region: str, out: TextIO
) -> None:
    seen: set[str] = set()
    for target in targets:
        for mapping in target.mappings:
            ref = mapping.on_failure_destination
            if ref is None or ref.arn in seen:
                continue
            seen.add(ref.arn)
            parts = ref.arn.split(":")
            where = parts[3] or region  # S3 ARNs name no region
            try:
                client = await clients.client(traffic.destination_service(ref), where)
                await traffic.create_destination(client, ref, where)
            except Exception as exc:
                raise ProduceError(
                    f"could not create on-failure destination {ref.arn}: {error_code(exc)}: {exc}"
                ) from None
            _say(out, f"ready: on-failure destination {ref.arn}")


async def _resolve(targets: list[Target], clients: _Clients) -> None:
    """Find every source before sending, so a missing one is one clear line."""
    for target in targets:
        ref = target.ref
        try:
            client = await clients.client(ref.kind, ref.region)
            if ref.kind == "sqs":
                target.queue_url = ref.queue_url or str(
                    (
                        await client.get_queue_url(
                            QueueName=ref.name, QueueOwnerAWSAccountId=ref.account
                        )
                    )["QueueUrl"]
                )
            elif ref.kind == "kinesis":
                await client.describe_stream_summary(StreamName=ref.name)
            else:
                await client.describe_table(TableName=ref.name)
        except Exception as exc:
            raise ProduceError(
                f"{ref.arn}: {error_code(exc)}: {exc} (`sluiceway produce --create` creates it)"
            ) from None


def _describe_filters(targets: list[Target], out: TextIO) -> None:
    for target in targets:
        for mapping in target.mappings:
            criteria = mapping.filter_criteria
            if criteria:
                patterns = " or ".join(f["Pattern"] for f in criteria.get("Filters", []))
                _say(
                    out,
                    f"mapping {mapping.name} invokes its handler only for records matching "
                    f"{patterns}; the rest are dropped without an invocation (counted below)",
                )


async def _send_until_stopped(
    targets: list[Target],
    clients: _Clients,
    region: str,
    options: ProduceOptions,
    out: TextIO,
    tracer: trace.Tracer,
) -> None:
    run_id = uuid.uuid4().hex[:8]  # FIFO deduplication ids stay unique across restarts
    _say(out, f"sending {options.rate:g} events a second to each of {len(targets)} sources")
    stopping = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_stop_on_signal, stopping)
        if options.duration is not None:
            tg.start_soon(_stop_after, stopping, options.duration)
        if (options.create or options.create_only) and options.withhold_destinations:
            tg.start_soon(_late_destinations, targets, clients, region, options, out)
        tg.start_soon(_report, targets, options.report_seconds, out)
        # A stop lets the sends in flight finish: an event the service accepted is in the tally.
        async with anyio.create_task_group() as senders:
            for target in targets:
                senders.start_soon(
                    _paced, _Sender(target, clients, tracer, run_id), options.rate, stopping
                )
        tg.cancel_scope.cancel()
    for target in targets:
        _say(out, "total " + target.line())


async def _stop_on_signal(stopping: anyio.Event) -> None:
    """The first SIGTERM or SIGINT stops sending; a second one, with the default handler back,
    ends the process at once."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            stopping.set()
            return


async def _stop_after(stopping: anyio.Event, seconds: float) -> None:
    await anyio.sleep(seconds)
    stopping.set()


async def _late_destinations(
    targets: list[Target], clients: _Clients, region: str, options: ProduceOptions, out: TextIO
) -> None:
    await anyio.sleep(options.withhold_destinations)
    try:
        await _create_destinations(targets, clients, region, out)
    except ProduceError as exc:  # keep sending: the service keeps retrying its deliveries
        _say(out, f"{exc}; sending goes on")
        return
    _say(
        out,
        f"on-failure destinations created after {options.withhold_destinations:g} s; "
        "deliveries refused until now were retried, nothing was dropped",
    )


async def _report(targets: list[Target], every: float, out: TextIO) -> None:
    while True:
        await anyio.sleep(every)
        for target in targets:
            _say(out, target.line())


async def _paced(sender: _Sender, rate: float, stopping: anyio.Event) -> None:
    """Send `rate` events a second, evenly spaced, without drifting, until stopping."""
    started = time.monotonic()
    i = 0
    while not stopping.is_set():
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            with anyio.move_on_after(delay):
                await stopping.wait()
            if stopping.is_set():
                return
        await sender.send(i)
        i += 1


class _Sender:
    """Sends event `i` of its target's mix inside a PRODUCER span."""

    def __init__(self, target: Target, clients: _Clients, tracer: trace.Tracer, run_id: str):
        self.target = target
        self.clients = clients
        self.tracer = tracer
        self.run_id = run_id

    async def send(self, i: int) -> None:
        ref = self.target.ref
        attributes = {
            "messaging.system": MESSAGING_SYSTEM[ref.kind],
            "messaging.destination.name": ref.name,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "cloud.resource_id": ref.arn,
        }
        with self.tracer.start_as_current_span(
            f"send {ref.name}", kind=SpanKind.PRODUCER, attributes=attributes
        ) as current:
            try:
                with anyio.fail_after(SEND_SECONDS):
                    client = await self.clients.client(ref.kind, ref.region)
                    if ref.kind == "sqs":
                        await self._sqs(client, i, current)
                    elif ref.kind == "kinesis":
                        await self._kinesis(client, i, current)
                    else:
                        await self._dynamodb(client, i, current)
            except Exception as exc:  # the emulator restarting, a deleted source: keep going
                self.target.errors += 1
                self.target.last_error = error_code(exc)
                current.record_exception(exc)
                current.set_status(Status(StatusCode.ERROR, self.target.last_error))
                log.debug("produce: send to %s failed: %s", ref.name, exc)

    async def _sqs(self, sqs: Any, i: int, current: trace.Span) -> None:
        ref = self.target.ref
        params: dict[str, Any] = {"QueueUrl": self.target.queue_url}
        record: dict[str, Any] = {"eventSource": "aws:sqs", "eventSourceARN": ref.arn}
        context = current.get_span_context()
        if ref.fifo:
            sample = traffic.ledger_entry(i, work=True)
            params["MessageGroupId"] = sample.body["account"]
            params["MessageDeduplicationId"] = f"{self.run_id}-{i}"
            current.set_attribute("messaging.message.conversation_id", sample.body["account"])
            if context.is_valid:
                params["MessageSystemAttributes"] = {
                    "AWSTraceHeader": {"DataType": "String", "StringValue": xray_header(context)}
                }
        else:
            sample = traffic.order(i, work=True)
            carrier: dict[str, str] = {}
            _propagator.inject(carrier)
            if "traceparent" in carrier:
                value = carrier["traceparent"]
                params["MessageAttributes"] = {
                    "traceparent": {"DataType": "String", "StringValue": value}
                }
                record["messageAttributes"] = {
                    "traceparent": {"stringValue": value, "dataType": "String"}
                }
        body = orjson.dumps(sample.body).decode()
        response = await sqs.send_message(MessageBody=body, **params)
        current.set_attribute("messaging.message.id", str(response.get("MessageId", "")))
        self.target.count(sample.label, {**record, "body": body})

    async def _kinesis(self, kinesis: Any, i: int, current: trace.Span) -> None:
        ref = self.target.ref
        sample = traffic.click(i, work=True)
        data = orjson.dumps(sample.body)
        key = str(sample.body["user"])
        response = await kinesis.put_record(StreamName=ref.name, Data=data, PartitionKey=key)
        current.set_attribute("messaging.message.id", str(response.get("SequenceNumber", "")))
        record = {
            "eventSource": "aws:kinesis",
            "eventSourceARN": ref.arn,
            "kinesis": {"data": base64.b64encode(data).decode(), "partitionKey": key},
        }
        self.target.count(sample.label, record)

    async def _dynamodb(self, dynamodb: Any, i: int, current: trace.Span) -> None:
        ref = self.target.ref
        change = traffic.account_change(i, work=True)
        key = {traffic.TABLE_KEY: {"S": change.account}}
        values = {name: traffic.dynamodb_value(v) for name, v in change.attributes.items()}
        if change.op == "put":
            await dynamodb.put_item(TableName=ref.name, Item={**key, **values})
            event_name = "INSERT"
        elif change.op == "update":
            names = {f"#a{n}": name for n, name in enumerate(values)}
            await dynamodb.update_item(
                TableName=ref.name,
                Key=key,
                UpdateExpression="SET " + ", ".join(f"#a{n} = :v{n}" for n in range(len(values))),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={f":v{n}": v for n, v in enumerate(values.values())},
            )
            event_name = "MODIFY"
        else:
            await dynamodb.delete_item(TableName=ref.name, Key=key)
            event_name = "REMOVE"
        current.set_attribute("db.operation.name", change.op)
        image = {"NewImage": {**key, **values}} if change.op != "delete" else {}
        record = {
            "eventSource": "aws:dynamodb",
            "eventSourceARN": ref.arn,
            "eventName": event_name,
            "dynamodb": {"Keys": key, **image},
        }
        self.target.count(change.label, record)


def xray_header(context: trace.SpanContext) -> str:
    """The X-Ray form of a span context: `Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=1`."""
    trace_id = f"{context.trace_id:032x}"
    sampled = 1 if context.trace_flags.sampled else 0
    return f"Root=1-{trace_id[:8]}-{trace_id[8:]};Parent={context.span_id:016x};Sampled={sampled}"


def producer_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The OTEL_* environment for the producer's own spans (its service name unless one is set)."""
    env = dict(environ)
    env.setdefault("OTEL_SERVICE_NAME", SERVICE_NAME)
    return env

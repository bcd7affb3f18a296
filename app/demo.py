"""`sluiceway demo`: the whole service on an embedded AWS emulator, with a tally at the end.

It starts moto's server mode on a free loopback port, creates a standard queue and a FIFO queue
(each with a DLQ through a redrive policy), a Kinesis stream with two shards (one of them split
while records flow) and a DynamoDB table with a stream, maps them to the example handlers, sends
sample traffic (orders, pings that the filter drops, flaky orders that fail once, poison orders
that always fail, clicks, account changes), invokes a function asynchronously through the
service's Lambda API (boto3's own `lambda` client, `InvocationType=Event`) with an on-success
destination queue, shows live progress, and ends when every message and record sent is accounted
for: handled, filtered out, or in a DLQ, and every asynchronous invoke has its success record in
the destination. Exit status 0 means the tally balanced.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
from sluiceway.app import traffic
from sluiceway.app.service import Service
from sluiceway.config import load_settings
from sluiceway.core.logs import configure_logging
from sluiceway.handlers.examples import audit, orders

REGION = "us-east-1"
DEMO_KEY, DEMO_SECRET = "AKIDSLUICEWAYDEMO", "demo-secret"
"""The key pair the demo's Lambda API accepts (SLUICEWAY_API__KEYS) and its client signs with."""
VISIBILITY_SECONDS = 2
MAX_RECEIVES = 3


@dataclass
class Queue:
    name: str
    url: str = ""
    dlq_url: str = ""
    sent: int = 0
    expected_poison: int = 0


def _start_emulator() -> tuple[Any, str]:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise SystemExit(
            "sluiceway demo needs the embedded emulator: pip install 'sluiceway[demo]'"
        ) from None
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


async def _create(sqs: Any, queue: Queue, fifo: bool) -> None:
    name = f"{queue.name}.fifo" if fifo else queue.name
    queue.url, queue.dlq_url = await traffic.create_queue(
        sqs, name, visibility_seconds=VISIBILITY_SECONDS, max_receives=MAX_RECEIVES
    )


async def _send_traffic(sqs: Any, standard: Queue, fifo: Queue, count: int) -> None:
    for start in range(0, count, 10):
        entries = []
        for i in range(start, min(count, start + 10)):
            body = traffic.order(i).body
            standard.expected_poison += bool(body.get("poison"))
            entries.append({"Id": str(i), "MessageBody": orjson.dumps(body).decode()})
        await sqs.send_message_batch(QueueUrl=standard.url, Entries=entries)
        standard.sent += len(entries)
        entries = []
        for i in range(start, min(count, start + 10)):
            body = {"type": "order", "id": i, "account": f"acct-{i % 4}", "seq": i}
            if i == 5:
                body["poison"] = True
                fifo.expected_poison += 1
            entries.append(
                {
                    "Id": str(i),
                    "MessageBody": orjson.dumps(body).decode(),
                    "MessageGroupId": body["account"],
                    "MessageDeduplicationId": f"ledger-{i}",
                }
            )
        await sqs.send_message_batch(QueueUrl=fifo.url, Entries=entries)
        fifo.sent += len(entries)


@dataclass
class Streams:
    """The demo's stream sources and how many records were written to each."""

    clicks_arn: str = ""
    accounts_arn: str = ""
    clicks_sent: int = 0
    account_changes: int = 0
    split_done: bool = False


async def _create_streams(kinesis: Any, dynamodb: Any, streams: Streams) -> None:
    streams.clicks_arn = await traffic.create_stream(kinesis, "demo-clicks", shards=2)
    streams.accounts_arn = await traffic.create_table(dynamodb, "demo-accounts")


async def _split_first_shard(kinesis: Any) -> None:
    """Reshard while records flow: the parent is read to its end before its children."""
    shards = (await kinesis.list_shards(StreamName="demo-clicks"))["Shards"]
    first = shards[0]
    low = int(first["HashKeyRange"]["StartingHashKey"])
    high = int(first["HashKeyRange"]["EndingHashKey"])
    await kinesis.split_shard(
        StreamName="demo-clicks",
        ShardToSplit=first["ShardId"],
        NewStartingHashKey=str((low + high) // 2),
    )


async def _send_stream_traffic(kinesis: Any, dynamodb: Any, streams: Streams, count: int) -> None:
    # One PutRecords call at a time: records for one shard arrive in order.
    for start in range(0, count, 20):
        entries = [
            {
                "Data": orjson.dumps({"page": f"/p/{i % 7}", "user": f"u{i % 5}", "n": i}),
                "PartitionKey": f"u{i % 5}",
            }
            for i in range(start, min(count, start + 20))
        ]
        response = await kinesis.put_records(StreamName="demo-clicks", Records=entries)
        streams.clicks_sent += len(entries) - int(response.get("FailedRecordCount", 0))
        if not streams.split_done and start >= count // 2:
            await _split_first_shard(kinesis)
            streams.split_done = True
    accounts = max(1, count // 4)
    for i in range(accounts):
        await dynamodb.put_item(
            TableName="demo-accounts", Item={"account": {"S": f"acct-{i}"}, "balance": {"N": "0"}}
        )
        streams.account_changes += 1
    for i in range(accounts):
        await dynamodb.update_item(
            TableName="demo-accounts",
            Key={"account": {"S": f"acct-{i}"}},
            UpdateExpression="SET balance = :b",
            ExpressionAttributeValues={":b": {"N": str(10 * (i + 1))}},
        )
        streams.account_changes += 1


async def _queue_depth(sqs: Any, url: str) -> int:
    attrs = (
        await sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


@dataclass
class Tally:
    sent: int
    handled: int
    filtered: int
    dead: int
    waiting: int
    stream_written: int = 0
    stream_handled: int = 0
    invoked_async: int = 0
    success_records: int = 0

    @property
    def balanced(self) -> bool:
        queues = self.waiting == 0 and self.handled + self.filtered + self.dead == self.sent
        invokes = self.success_records == self.invoked_async
        return queues and invokes and self.stream_handled == self.stream_written


@dataclass
class AsyncDemo:
    """Event invokes of the receipts function and the success records its destination got."""

    destination_url: str = ""
    invoked: int = 0
    records: int = 0
    example: dict[str, Any] | None = None


async def _invoke_async(service: Service, demo: AsyncDemo, count: int) -> None:
    """Event invokes through the service's own Lambda API, as any SDK makes them."""
    from aiobotocore.session import get_session

    assert service.http is not None
    async with get_session().create_client(
        "lambda",
        region_name=REGION,
        endpoint_url=f"http://127.0.0.1:{service.http.port}",
        aws_access_key_id=DEMO_KEY,
        aws_secret_access_key=DEMO_SECRET,
    ) as client:
        for i in range(count):
            payload = orjson.dumps({"order": i, "amount": round(9.5 + i, 2)})
            response = await client.invoke(
                FunctionName="receipts", InvocationType="Event", Payload=payload
            )
            demo.invoked += response["StatusCode"] == 202


async def _collect_records(sqs: Any, demo: AsyncDemo) -> None:
    response = await sqs.receive_message(
        QueueUrl=demo.destination_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
    )
    for message in response.get("Messages", []):
        demo.records += 1
        demo.example = demo.example or orjson.loads(message["Body"])
        await sqs.delete_message(
            QueueUrl=demo.destination_url, ReceiptHandle=message["ReceiptHandle"]
        )


async def _tally(
    sqs: Any, service: Service, queues: list[Queue], streams: Streams, demo: AsyncDemo
) -> Tally:
    waiting = dead = 0
    for queue in queues:
        waiting += await _queue_depth(sqs, queue.url)
        dead += await _queue_depth(sqs, queue.dlq_url)
    filtered = sum(s.filtered_out for s in service.registry.mappings.values())
    await _collect_records(sqs, demo)
    return Tally(
        sent=sum(q.sent for q in queues),
        handled=len(orders.processed_ids()),
        filtered=filtered,
        dead=dead,
        waiting=waiting,
        stream_written=streams.clicks_sent + streams.account_changes,
        stream_handled=audit.distinct("aws:kinesis") + audit.distinct("aws:dynamodb"),
        invoked_async=demo.invoked,
        success_records=demo.records,
    )


def _line(tally: Tally, elapsed: float) -> str:
    return (
        f"[{elapsed:5.1f}s] sent {tally.sent}  handled {tally.handled}  filtered {tally.filtered}  "
        f"in DLQ {tally.dead}  still in queues {tally.waiting}  "
        f"stream records {tally.stream_handled}/{tally.stream_written}  "
        f"async success records {tally.success_records}/{tally.invoked_async}"
    )


async def _demo(
    url: str, messages: int, time_limit: float, keep_running: bool, workdir: str
) -> int:
    from aiobotocore.session import get_session

    standard, fifo = Queue("demo-orders"), Queue("demo-ledger")
    streams = Streams()
    receipts = AsyncDemo()
    session = get_session()
    async with (
        session.create_client("sqs", region_name=REGION) as sqs,
        session.create_client("kinesis", region_name=REGION) as kinesis,
        session.create_client("dynamodb", region_name=REGION) as dynamodb,
    ):
        await _create(sqs, standard, fifo=False)
        await _create(sqs, fifo, fifo=True)
        await _create_streams(kinesis, dynamodb, streams)
        receipts.destination_url = (await sqs.create_queue(QueueName="demo-receipts"))["QueueUrl"]
        receipts_arn = (
            await sqs.get_queue_attributes(
                QueueUrl=receipts.destination_url, AttributeNames=["QueueArn"]
            )
        )["Attributes"]["QueueArn"]
        pattern = orjson.dumps({"body": {"type": ["order"]}}).decode()
        env = {
            "AWS_REGION": REGION,
            "SLUICEWAY_HTTP__PORT": os.environ.get("SLUICEWAY_HTTP__PORT", "0"),
            "SLUICEWAY_CHECKPOINTS__BACKEND": "memory",
            "SLUICEWAY_MAPPINGS__ORDERS__SOURCE": standard.url,
            "SLUICEWAY_MAPPINGS__ORDERS__HANDLER": "sluiceway.handlers.examples.orders:handler",
            "SLUICEWAY_MAPPINGS__ORDERS__FUNCTION_RESPONSE_TYPES": '["ReportBatchItemFailures"]',
            "SLUICEWAY_MAPPINGS__ORDERS__FILTER_CRITERIA": orjson.dumps(
                {"Filters": [{"Pattern": pattern}]}
            ).decode(),
            "SLUICEWAY_MAPPINGS__ORDERS__SCALING_CONFIG__MAXIMUM_CONCURRENCY": "4",
            "SLUICEWAY_MAPPINGS__LEDGER__SOURCE": fifo.url,
            "SLUICEWAY_MAPPINGS__LEDGER__HANDLER": "sluiceway.handlers.examples.orders:handler",
            "SLUICEWAY_MAPPINGS__LEDGER__FUNCTION_RESPONSE_TYPES": '["ReportBatchItemFailures"]',
            "SLUICEWAY_MAPPINGS__CLICKS__SOURCE": streams.clicks_arn,
            "SLUICEWAY_MAPPINGS__CLICKS__HANDLER": "sluiceway.handlers.examples.audit:handler",
            "SLUICEWAY_MAPPINGS__CLICKS__STARTING_POSITION": "TRIM_HORIZON",
            "SLUICEWAY_MAPPINGS__CLICKS__PARALLELIZATION_FACTOR": "2",
            "SLUICEWAY_MAPPINGS__ACCOUNTS__SOURCE": streams.accounts_arn,
            "SLUICEWAY_MAPPINGS__ACCOUNTS__HANDLER": "sluiceway.handlers.examples.audit:handler",
            "SLUICEWAY_MAPPINGS__ACCOUNTS__STARTING_POSITION": "TRIM_HORIZON",
            # a function invoked asynchronously, its success records sent to a queue
            "SLUICEWAY_FUNCTIONS__RECEIPTS__HANDLER": "sluiceway.handlers.examples.receipts:handler",
            "SLUICEWAY_FUNCTIONS__RECEIPTS__DESTINATION_CONFIG__ON_SUCCESS__DESTINATION": (
                receipts_arn
            ),
            "SLUICEWAY_API__KEYS": orjson.dumps({DEMO_KEY: DEMO_SECRET}).decode(),
            "SLUICEWAY_CHECKPOINTS__PATH": os.path.join(workdir, "sluiceway.db"),
        }
        settings = load_settings(environ=env)
        print(f"emulator  {url}")
        for name, mapping in settings.mappings.items():
            print(f"mapping   {name}: {mapping.source} -> {mapping.handler}")
        for name, function in settings.functions.items():
            print(f"function  {name}: {function.handler}, on success -> {function.on_success.arn}")
        service = Service(settings, handle_signals=False)
        interactive = sys.stdout.isatty()
        started = time.monotonic()
        result = 1
        async with anyio.create_task_group() as tg:
            await tg.start(service.run)
            if service.http is not None:
                print(f"health    http://127.0.0.1:{service.http.port}/status")
            await _send_traffic(sqs, standard, fifo, messages)
            await _send_stream_traffic(kinesis, dynamodb, streams, messages)
            await _invoke_async(service, receipts, max(1, messages // 3))
            last_print = 0.0
            while True:
                tally = await _tally(sqs, service, [standard, fifo], streams, receipts)
                elapsed = time.monotonic() - started
                if interactive:
                    print("\r" + _line(tally, elapsed), end="", flush=True)
                elif elapsed - last_print >= 2 or tally.balanced:
                    print(_line(tally, elapsed), flush=True)
                    last_print = elapsed
                if tally.balanced or elapsed > time_limit:
                    break
                await anyio.sleep(0.25)
            if interactive:
                print()
            result = _report(tally, [standard, fifo], receipts)
            if keep_running:
                print("service keeps running; Ctrl-C to stop")
                with anyio.open_signal_receiver(2, 15) as signals:
                    async for _ in signals:
                        break
            service.stop()
    return result


def _report(tally: Tally, queues: list[Queue], receipts: AsyncDemo) -> int:
    expected_dead = sum(q.expected_poison for q in queues)
    print("\nclosing tally")
    print(f"  sent              {tally.sent}")
    print(f"  handled           {tally.handled}")
    print(f"  filtered out      {tally.filtered}")
    print(f"  in DLQs           {tally.dead} (poison messages sent: {expected_dead})")
    print(f"  still in queues   {tally.waiting}")
    print(f"  stream records    {tally.stream_handled} handled of {tally.stream_written} written")
    print(
        f"  async invokes     {tally.invoked_async} accepted (202), {tally.success_records} success records"
    )
    if receipts.example is not None:
        print("  a success record, as Lambda sends it to the on-success destination:")
        print("    " + orjson.dumps(receipts.example).decode())
    if tally.balanced:
        print(
            f"every message accounted for: {tally.handled} + {tally.filtered} + {tally.dead} = {tally.sent}"
        )
        print(f"every stream record handled: {tally.stream_handled} = {tally.stream_written}")
        print(f"every async invoke delivered: {tally.success_records} = {tally.invoked_async}")
        return 0
    print("NOT every message is accounted for yet (timed out)")
    return 1


def run_demo(*, keep_running: bool = False, messages: int = 60, timeout: float = 120.0) -> int:
    configure_logging(os.environ.get("SLUICEWAY_LOG_LEVEL", "WARNING"), "text")
    server, url = _start_emulator()
    os.environ["AWS_ENDPOINT_URL"] = url
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "demo")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "demo")
    os.environ["AWS_REGION"] = REGION
    orders.reset()
    audit.reset()
    try:
        with tempfile.TemporaryDirectory(prefix="sluiceway-demo-") as workdir:
            return anyio.run(_demo, url, messages, timeout, keep_running, workdir)
    finally:
        server.stop()

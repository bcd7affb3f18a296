"""The hot calls sent below botocore's pipeline answer, fail and retry as the client itself does:
against kinesalite, moto and ministack, and through the fault proxy for throttles, 5xx and expired
iterators."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import gzip
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import botocore.auth
import pytest
from aiobotocore.session import get_session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, EndpointConnectionError, SSLError
from botocore.retries.standard import ExponentialBackoff
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sluiceway.core import telemetry
from sluiceway.core.aws import AwsClients
from sluiceway.core.fast_calls import FastCalls, _Pool, _Signer

from tests.support.fault_proxy import FaultProxy, FaultRates
from tests.support.sqs import make_queue, unique
from tests.support.streams import make_stream

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("token", [None, "session-token"])
def test_signature_is_botocores(token: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    instant = datetime.datetime(2026, 12, 4, 23, 59, 58, tzinfo=datetime.UTC)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: instant)
    body = b'{"ShardIterator": "AAAA", "Limit": 10000}'
    headers = {
        "X-Amz-Target": "Kinesis_20131202.GetRecords",
        "Content-Type": "application/x-amz-json-1.1",
        "User-Agent": "aiobotocore/3  md/x  (spaces)",
    }
    request = AWSRequest("POST", "https://kinesis.eu-west-1.amazonaws.com/", headers, body)
    SigV4Auth(Credentials("AKID", "secret", token), "kinesis", "eu-west-1").add_auth(request)
    signed = {"host": "kinesis.eu-west-1.amazonaws.com", "x-amz-date": "20261204T235958Z"}
    signed |= {k.lower(): v for k, v in headers.items()}
    if token:
        signed["x-amz-security-token"] = token
    ours = _Signer("kinesis", "eu-west-1", "/").authorization(
        signed, body, "20261204T235958Z", "AKID", "secret"
    )
    assert ours == request.headers["Authorization"]


@pytest.fixture
async def one_shard(kinesalite: str) -> AsyncIterator[Callable[[Any], Awaitable[str]]]:
    """Makes one-shard streams, deleted afterwards: kinesalite allows 10 shards in all."""
    made: list[str] = []

    async def make(kinesis: Any) -> str:
        arn = await make_stream(kinesis, "fast", shards=1)
        made.append(arn.rsplit("/", 1)[-1])
        return arn

    yield make
    async with get_session().create_client(
        "kinesis", region_name="us-east-1", endpoint_url=kinesalite
    ) as kinesis:
        for name in made:
            await kinesis.delete_stream(StreamName=name)
        with anyio.fail_after(10):
            for name in made:
                with contextlib.suppress(kinesis.exceptions.ResourceNotFoundException):
                    while True:  # deleting takes kinesalite a moment
                        await kinesis.describe_stream_summary(StreamName=name)
                        await anyio.sleep(0.05)


@pytest.fixture
async def clients() -> AsyncIterator[AwsClients]:
    async with AwsClients("us-east-1") as made:
        yield made


class Stream(NamedTuple):
    """The clients' Kinesis client, its calls below botocore, and a one-shard stream."""

    kinesis: Any
    fast: FastCalls
    arn: str


@pytest.fixture
async def stream(clients: AwsClients, one_shard: Any) -> Stream:
    kinesis = await clients.client("kinesis")
    return Stream(kinesis, await clients.fast("kinesis"), await one_shard(kinesis))


async def _iterator(kinesis: Any, arn: str, kind: str = "TRIM_HORIZON") -> str:
    name = arn.rsplit("/", 1)[-1]  # kinesalite takes names only
    shard = (await kinesis.list_shards(StreamName=name))["Shards"][0]["ShardId"]
    response = await kinesis.get_shard_iterator(
        StreamName=name, ShardId=shard, ShardIteratorType=kind
    )
    return str(response["ShardIterator"])


def _same(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    """Equal but for the request's own metadata (and kinesalite's fresh iterator per call)."""
    ours, theirs = dict(ours), dict(theirs)
    ours_meta, theirs_meta = ours.pop("ResponseMetadata"), theirs.pop("ResponseMetadata")
    assert bool(ours.pop("NextShardIterator", None)) == bool(theirs.pop("NextShardIterator", None))
    assert ours == theirs
    assert ours_meta["HTTPStatusCode"] == theirs_meta["HTTPStatusCode"] == 200
    assert ours_meta["RetryAttempts"] == 0


@pytest.mark.usefixtures("kinesalite")
async def test_get_records_answers_as_the_client(stream: Stream) -> None:
    kinesis, fast, arn = stream
    iterator = await _iterator(kinesis, arn)
    first = await fast.call("GetRecords", {"ShardIterator": iterator, "Limit": 100})
    assert fast.direct("GetRecords")  # the first call went through the client and taught it
    empty = await fast.call("GetRecords", {"ShardIterator": iterator, "Limit": 100})
    _same(empty, await kinesis.get_records(ShardIterator=iterator, Limit=100))
    assert first["Records"] == empty["Records"] == []
    await kinesis.put_record(
        StreamName=arn.rsplit("/", 1)[-1], Data=b"\x00\xffbytes", PartitionKey="k"
    )
    page = await fast.call("GetRecords", {"ShardIterator": iterator, "Limit": 100})
    _same(page, await kinesis.get_records(ShardIterator=iterator, Limit=100))
    assert page["Records"][0]["Data"] == b"\x00\xffbytes"
    assert isinstance(page["Records"][0]["ApproximateArrivalTimestamp"], datetime.datetime)


@pytest.mark.usefixtures("kinesalite")
async def test_get_records_in_the_wire_form_is_alike_through_the_client_and_below_it(
    stream: Stream,
) -> None:
    kinesis, fast, arn = stream
    iterator = await _iterator(kinesis, arn)
    payloads = [b"\x00\xffbytes", b"", b'{"json": true}', bytes(range(256)) * 400]
    for data in payloads:
        await kinesis.put_record(StreamName=arn.rsplit("/", 1)[-1], Data=data, PartitionKey="k")
    params = {"ShardIterator": iterator, "Limit": 100}
    assert not fast.direct("GetRecords")
    first = await fast.call("GetRecords", params, wire=True)  # through the client: the template
    assert fast.direct("GetRecords")
    later = await fast.call("GetRecords", params, wire=True)  # below the client
    _same(first, later)
    assert first["ResponseMetadata"]["HTTPStatusCode"] == 200
    theirs = await kinesis.get_records(**params)
    records = first["Records"]
    assert [base64.b64decode(r["Data"]) for r in records] == payloads
    assert [r["Data"] for r in records] == [base64.b64encode(p).decode() for p in payloads]
    for ours, parsed in zip(records, theirs["Records"], strict=True):
        arrival = ours["ApproximateArrivalTimestamp"]
        assert isinstance(arrival, int | float)
        assert arrival == parsed["ApproximateArrivalTimestamp"].timestamp()
        assert ours["SequenceNumber"] == parsed["SequenceNumber"]
    # Without `wire`, the same calls keep botocore's conversions.
    assert (await fast.call("GetRecords", params))["Records"][0]["Data"] == payloads[0]


@pytest.mark.usefixtures("kinesalite")
async def test_concurrent_first_calls_wait_for_the_one_recording_the_template(
    stream: Stream,
) -> None:
    kinesis, fast, arn = stream
    await kinesis.put_record(StreamName=arn.rsplit("/", 1)[-1], Data=b"one", PartitionKey="k")
    iterator = await _iterator(kinesis, arn)
    through_client: list[Any] = []

    def sent(request: Any, **_: Any) -> None:
        through_client.append(request)

    kinesis.meta.events.register("before-send.kinesis.GetRecords", sent)
    pages: list[dict[str, Any]] = []

    async def read() -> None:
        pages.append(await fast.call("GetRecords", {"ShardIterator": iterator}, wire=True))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(read)
    kinesis.meta.events.unregister("before-send.kinesis.GetRecords", sent)
    assert len(through_client) == 1
    assert [p["Records"] for p in pages] == [pages[0]["Records"]] * 4
    assert pages[0]["Records"][0]["Data"] == base64.b64encode(b"one").decode()


@pytest.mark.usefixtures("kinesalite")
async def test_an_endpoint_parameter_goes_through_the_client(stream: Stream) -> None:
    kinesis, fast, arn = stream
    iterator = await _iterator(kinesis, arn)
    first = await fast.call("GetRecords", {"ShardIterator": iterator, "StreamARN": arn})
    assert not fast.direct("GetRecords")  # StreamARN may choose the endpoint: never a template
    await fast.call("GetRecords", {"ShardIterator": first["NextShardIterator"]})
    assert fast.direct("GetRecords")
    page = await fast.call("GetRecords", {"ShardIterator": iterator, "StreamARN": arn})
    assert page["Records"] == []  # the client resolves it, every time


async def _attempts(proxy: FaultProxy, call: Any) -> tuple[str, str, int]:
    """The exception class and error code `call` ends with, and how many requests it made."""
    before = sum(proxy.counts.values())
    with pytest.raises(ClientError) as raised:
        await call()
    code = raised.value.response["Error"]["Code"]
    return type(raised.value).__name__, code, sum(proxy.counts.values()) - before


@contextlib.asynccontextmanager
async def _through_proxy(
    upstream: str, monkeypatch: pytest.MonkeyPatch, service: str
) -> AsyncIterator[tuple[FaultProxy, Any, FastCalls]]:
    """Clients whose calls pass the fault proxy; botocore's backoff shortened for both paths."""
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.01)
    async with FaultProxy(upstream) as proxy:
        monkeypatch.setenv(f"AWS_ENDPOINT_URL_{service.upper()}", proxy.url)
        async with AwsClients("us-east-1") as made:
            yield proxy, await made.client(service), await made.fast(service)


@pytest.mark.parametrize(
    ("rates", "code"),
    [
        (FaultRates(throttle=1.0), "ProvisionedThroughputExceededException"),
        (FaultRates(error_500=1.0), "InternalFailure"),
        (FaultRates(expired_iterator=1.0), "ExpiredIteratorException"),
    ],
    ids=["throttle", "5xx", "expired-iterator"],
)
async def test_kinesis_errors_retry_and_raise_as_the_client(
    kinesalite: str, monkeypatch: pytest.MonkeyPatch, rates: FaultRates, code: str, one_shard: Any
) -> None:
    async with _through_proxy(kinesalite, monkeypatch, "kinesis") as (proxy, kinesis, fast):
        arn = await one_shard(kinesis)
        iterator = await _iterator(kinesis, arn)
        proxy.rates = rates
        params = {"ShardIterator": iterator, "Limit": 10}
        theirs = await _attempts(proxy, lambda: kinesis.get_records(**params))
        # The first call (through the client) and a later one (below it) in the wire form, and
        # one in botocore's form: every one fails as the client does.
        first = await _attempts(proxy, lambda: fast.call("GetRecords", params, wire=True))
        assert fast.direct("GetRecords")
        later = await _attempts(proxy, lambda: fast.call("GetRecords", params, wire=True))
        ours = await _attempts(proxy, lambda: fast.call("GetRecords", params))
        assert first == later == ours == theirs
        assert ours[1] == code
        assert (ours[2] == 1) == (code == "ExpiredIteratorException")  # the others are retried


async def _after_one_500(proxy: FaultProxy, call: Callable[[], Awaitable[dict[str, Any]]]) -> Any:
    """`call` while the proxy answers 500 until it has answered one so, then passes through."""
    proxy.rates = FaultRates(error_500=1.0)

    async def heal() -> None:
        while proxy.counts["error_500"] < 1:  # noqa: ASYNC110
            await anyio.sleep(0.005)
        proxy.rates = FaultRates()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(heal)
            return await call()


async def test_a_5xx_then_an_answer_is_retried_to_success(
    kinesalite: str, monkeypatch: pytest.MonkeyPatch, one_shard: Any
) -> None:
    async with _through_proxy(kinesalite, monkeypatch, "kinesis") as (proxy, kinesis, fast):
        arn = await one_shard(kinesis)
        iterator = await _iterator(kinesis, arn)
        await fast.call("GetRecords", {"ShardIterator": iterator})
        page = await _after_one_500(
            proxy, lambda: fast.call("GetRecords", {"ShardIterator": iterator})
        )
        assert page["ResponseMetadata"]["RetryAttempts"] == 1
        assert page["Records"] == []


@pytest.mark.parametrize("recorded", [False, True], ids=["through-client", "below-client"])
async def test_a_5xx_then_an_answer_in_the_wire_form(
    kinesalite: str, monkeypatch: pytest.MonkeyPatch, one_shard: Any, recorded: bool
) -> None:
    async with _through_proxy(kinesalite, monkeypatch, "kinesis") as (proxy, kinesis, fast):
        arn = await one_shard(kinesis)
        await kinesis.put_record(StreamName=arn.rsplit("/", 1)[-1], Data=b"one", PartitionKey="k")
        iterator = await _iterator(kinesis, arn)
        if recorded:
            await fast.call("GetRecords", {"ShardIterator": iterator, "Limit": 1})
        page = await _after_one_500(
            proxy, lambda: fast.call("GetRecords", {"ShardIterator": iterator}, wire=True)
        )
        assert fast.direct("GetRecords")
        assert page["ResponseMetadata"]["RetryAttempts"] == 1
        assert [r["Data"] for r in page["Records"]] == [base64.b64encode(b"one").decode()]


async def test_nothing_listening_is_botocores_connection_error(
    stream: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    kinesis, fast, arn = stream
    iterator = await _iterator(kinesis, arn)
    await fast.call("GetRecords", {"ShardIterator": iterator})
    fast.close()
    template = fast._templates["GetRecords"]
    assert template is not None
    template.pool._port = 9  # discard: nothing listens there
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.01)
    with pytest.raises(EndpointConnectionError):
        await fast.call("GetRecords", {"ShardIterator": iterator})


async def _sqs_round(sqs: Any, fast: FastCalls, url: str) -> None:
    receive = {
        "QueueUrl": url,
        "MaxNumberOfMessages": 10,
        "WaitTimeSeconds": 0,
        "MessageSystemAttributeNames": ["All"],
        "MessageAttributeNames": ["All"],
    }
    assert (await fast.call("ReceiveMessage", receive)).get("Messages") is None
    assert fast.direct("ReceiveMessage")
    empty = await fast.call("ReceiveMessage", receive)
    _same(empty, await sqs.receive_message(**receive))
    for body in ("hello", "again"):
        await sqs.send_message(
            QueueUrl=url,
            MessageBody=body,
            MessageAttributes={"raw": {"DataType": "Binary", "BinaryValue": b"\x00\x01"}},
        )
    messages: list[dict[str, Any]] = []
    with anyio.fail_after(10):
        while len(messages) < 2:
            messages += (await fast.call("ReceiveMessage", receive)).get("Messages", [])
    assert sorted(m["Body"] for m in messages) == ["again", "hello"]
    assert messages[0]["MessageAttributes"]["raw"]["BinaryValue"] == b"\x00\x01"
    for message in messages:  # the first teaches, the second is sent directly
        entries = [{"Id": "0", "ReceiptHandle": message["ReceiptHandle"]}]
        deleted = await fast.call("DeleteMessageBatch", {"QueueUrl": url, "Entries": entries})
        assert [e["Id"] for e in deleted.get("Successful", [])] == ["0"]
    assert fast.direct("DeleteMessageBatch")
    missing = {"QueueUrl": url + "-missing", "MaxNumberOfMessages": 1}
    with pytest.raises(ClientError) as theirs:
        await sqs.receive_message(**missing)
    with pytest.raises(ClientError) as ours:
        await fast.call("ReceiveMessage", missing)
    assert type(ours.value) is type(theirs.value)
    assert ours.value.response["Error"]["Code"] == theirs.value.response["Error"]["Code"]


async def test_sqs_calls_answer_as_the_client_on_moto(moto_url: str, clients: AwsClients) -> None:
    sqs = await clients.client("sqs")
    url, _ = await make_queue(sqs, unique("fast"))
    await _sqs_round(sqs, await clients.fast("sqs"), url)


@pytest.mark.usefixtures("ministack_sqs")
async def test_sqs_calls_answer_as_the_client_on_ministack(clients: AwsClients) -> None:
    sqs = await clients.client("sqs")
    url, _ = await make_queue(sqs, unique("fast"))
    await _sqs_round(sqs, await clients.fast("sqs"), url)


async def test_sqs_throttles_are_retried_as_the_client_does(
    ministack_sqs: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _through_proxy(ministack_sqs, monkeypatch, "sqs") as (proxy, sqs, fast):
        url, _ = await make_queue(sqs, unique("throttled"))
        receive = {"QueueUrl": url, "MaxNumberOfMessages": 1, "WaitTimeSeconds": 0}
        await fast.call("ReceiveMessage", receive)
        proxy.rates = FaultRates(throttle=1.0)
        theirs = await _attempts(proxy, lambda: sqs.receive_message(**receive))
        ours = await _attempts(proxy, lambda: fast.call("ReceiveMessage", receive))
        assert ours == theirs
        assert ours[2] > 1


def _self_signed(folder: Path) -> tuple[Path, ssl.SSLContext]:
    """A certificate for 127.0.0.1 and a server context that presents it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert = folder / "cert.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file = folder / "key.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key_file)
    return cert, server


async def test_https_uses_the_clients_certificate_settings(
    kinesalite: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, one_shard: Any
) -> None:
    cert, server = _self_signed(tmp_path)
    async with FaultProxy(kinesalite, ssl=server) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_KINESIS", proxy.url)
        monkeypatch.setenv("AWS_CA_BUNDLE", str(cert))
        async with AwsClients("us-east-1") as made:
            kinesis, fast = await made.client("kinesis"), await made.fast("kinesis")
            arn = await one_shard(kinesis)
            iterator = await _iterator(kinesis, arn)
            for _ in range(3):
                page = await fast.call("GetRecords", {"ShardIterator": iterator})
                iterator = page["NextShardIterator"]
            assert fast.direct("GetRecords") and page["Records"] == []
            template = fast._templates["GetRecords"]
            assert template is not None
            fast.close()  # new connections, verified against the system's roots only
            template.pool._ssl = ssl.create_default_context()
            monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.01)
            with pytest.raises(SSLError):
                await fast.call("GetRecords", {"ShardIterator": iterator})


class _CannedServer:
    """A loopback HTTP/1.1 server answering each request with the next canned response, counting
    the connections it accepted; `close_after` hangs up after that many answers on a connection."""

    def __init__(self, answers: list[bytes], close_after: int = 0) -> None:
        self.answers = answers
        self.close_after = close_after
        self.connections = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                await reader.readexactly(length)
                writer.write(self.answers.pop(0))
                await writer.drain()
                served += 1
                if self.close_after and served >= self.close_after:
                    break
        writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            yield f"http://127.0.0.1:{port}"


def _answer(body: bytes, *headers: str) -> bytes:
    lines = ["HTTP/1.1 200 OK", *headers]
    if not any(h.lower().startswith("transfer-encoding") for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _chunked(body: bytes) -> bytes:
    half = len(body) // 2
    parts = [body[:half], body[half:]]
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts) + b"0\r\n\r\n"


async def test_kept_alive_chunked_compressed_and_closed_answers_are_read_whole() -> None:
    compressed = gzip.compress(b'{"zipped": true}')
    server = _CannedServer(
        [
            _answer(b'{"n": 1}'),
            _answer(b'{"n": 2}'),  # same connection
            _answer(_chunked(compressed), "Transfer-Encoding: chunked", "Content-Encoding: gzip"),
            _answer(b'{"n": 4}', "Connection: close"),
            _answer(b'{"n": 5}'),  # a new connection
        ]
    )
    async with server.running() as url:
        pool = _Pool(url, None, 5.0, 5.0, 10)
        bodies = [(await pool.exchange(_request())).body for _ in range(5)]
        pool.close()
    assert bodies == [b'{"n": 1}', b'{"n": 2}', b'{"zipped": true}', b'{"n": 4}', b'{"n": 5}']
    assert server.connections == 2


async def test_a_kept_alive_connection_the_server_closed_is_replaced_once() -> None:
    server = _CannedServer([_answer(b'{"n": 1}'), _answer(b'{"n": 2}')], close_after=1)
    async with server.running() as url:
        pool = _Pool(url, None, 5.0, 5.0, 10)
        assert (await pool.exchange(_request())).body == b'{"n": 1}'
        await anyio.sleep(0.05)  # the server hangs up the idle connection meanwhile
        assert (await pool.exchange(_request())).body == b'{"n": 2}'
        pool.close()
    assert server.connections == 2


def _request() -> bytes:
    return b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"


async def test_hot_calls_are_traced_as_the_clients_calls(
    kinesalite: str, monkeypatch: pytest.MonkeyPatch, one_shard: Any
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.use_tracer_provider(provider)
    try:
        async with _through_proxy(kinesalite, monkeypatch, "kinesis") as (proxy, kinesis, fast):
            arn = await one_shard(kinesis)
            iterator = await _iterator(kinesis, arn)
            await fast.call("GetRecords", {"ShardIterator": iterator})
            exporter.clear()
            await fast.call("GetRecords", {"ShardIterator": iterator})  # sent directly
            proxy.rates = FaultRates(expired_iterator=1.0)
            with pytest.raises(ClientError):
                await fast.call("GetRecords", {"ShardIterator": iterator})
    finally:
        telemetry.use_tracer_provider(None)
        provider.shutdown()
    ok, failed = [s for s in exporter.get_finished_spans() if s.name == "kinesis.GetRecords"]
    for span in (ok, failed):
        attributes = span.attributes or {}
        assert span.kind == SpanKind.CLIENT
        assert attributes["rpc.system"] == "aws-api" and attributes["rpc.method"] == "GetRecords"
    assert (ok.attributes or {})["http.response.status_code"] == 200
    assert (failed.attributes or {})["http.response.status_code"] == 400
    assert (failed.attributes or {})["error.type"] == "ExpiredIteratorException"

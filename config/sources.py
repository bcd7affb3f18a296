"""Parse the ARNs and URLs a mapping names into structured references.

A mapping's `source` and on-failure `destination` are plain strings in the environment; pollers
and the router need their kind, region, account and name. Parsing them once, at load time, means
a malformed ARN fails start-up with a clear rule instead of failing the first AWS call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from botocore.exceptions import InvalidRegionError
from botocore.utils import validate_region_name

SourceKind = Literal["sqs", "kinesis", "dynamodb"]
DestinationKind = Literal["sqs", "sns", "s3", "events", "lambda"]
"""`lambda` (a function) is an asynchronous invocation's destination only."""

PARTITION = r"aws(?:-[a-z]+)*"
REGION = r"[A-Za-z0-9-]{1,63}"
"""An ARN's region token, as far as a pattern goes; `check_region_name` applies the SDK's rule."""
AWS_REGION_FORM = r"[a-z]{2,4}(?:-[a-z]+)+-\d+"
"""The form of AWS's own region names, to find a region inside a queue URL's host or path."""
ACCOUNT = r"\d{12}"
QUEUE_NAME = r"(?=.{1,80}$)[A-Za-z0-9_-]+(?:\.fifo)?"
STREAM_NAME = r"[A-Za-z0-9_.-]{1,128}"
TABLE_NAME = r"[A-Za-z0-9_.-]{3,255}"
STREAM_LABEL = r"[A-Za-z0-9_.:-]{1,64}"
TOPIC_NAME = r"(?=.{1,256}$)[A-Za-z0-9_-]+(?:\.fifo)?"
BUCKET_NAME = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
BUS_NAME = r"[A-Za-z0-9._/-]{1,256}"

REGION_RE = re.compile(rf"^{AWS_REGION_FORM}$")
REGION_RULE = (
    "must be a region name the AWS SDKs accept, such as us-east-1: up to 63 letters, digits "
    "and '-', not all digits, neither starting nor ending with '-'"
)
PLACEHOLDER_REGIONS = frozenset({"ddblocal"})
"""Region tokens that emulators write into ARNs in place of a region: DynamoDB Local names every
ARN `ddblocal`, whatever region its caller used, and keeps one database per access key and
region (unless started with -sharedDb). An ARN with one of these is reached in the default region."""

# (pattern, what it names, the rule a user reads when a name breaks it)
_FIFO = "('.fifo' last for FIFO)"
_QUEUE = (QUEUE_NAME, "an SQS queue name", f"1 to 80 letters, digits, '-' or '_' {_FIFO}")
_STREAM = (STREAM_NAME, "a Kinesis stream name", "1 to 128 letters, digits, '.', '-' or '_'")
_TABLE = (TABLE_NAME, "a DynamoDB table name", "3 to 255 letters, digits, '.', '-' or '_'")
_LABEL = (STREAM_LABEL, "a DynamoDB stream label", "a timestamp such as 2024-01-01T00:00:00.000")
_TOPIC = (TOPIC_NAME, "an SNS topic name", f"1 to 256 letters, digits, '-' or '_' {_FIFO}")
_BUCKET = (BUCKET_NAME, "an S3 bucket name", "3 to 63 lowercase letters, digits, '.' or '-'")
_BUS = (BUS_NAME, "an event bus name", "1 to 256 letters, digits, '.', '-', '_' or '/'")


def _arn(service: str, resource: str, *, regional: bool = True) -> re.Pattern[str]:
    """ARN pattern with named groups p(artition), r(egion), a(ccount) and the resource's own."""
    where = rf"(?P<r>{REGION}):(?P<a>{ACCOUNT})" if regional else ":"
    return re.compile(rf"^arn:(?P<p>{PARTITION}):{service}:{where}:{resource}$")


_SQS_ARN = _arn("sqs", r"(?P<n>[^:/]+)")
_KINESIS_ARN = _arn("kinesis", r"stream/(?P<n>[^:/]+)")
_DYNAMODB_ARN = _arn("dynamodb", r"table/(?P<t>[^:/]+)(?:/stream/(?P<l>[^/]+))?")
_SNS_ARN = _arn("sns", r"(?P<n>[^:/]+)")
_S3_ARN = _arn("s3", r"(?P<n>[^:/]+)", regional=False)
_BUS_ARN = _arn("events", r"event-bus/(?P<n>[^:]+)")
# sqs.eu-west-1.amazonaws.com, sqs.cn-north-1.amazonaws.com.cn, sqs.us-east-1.api.aws,
# sqs.us-east-1.localhost.localstack.cloud, and the legacy eu-west-1.queue.amazonaws.com
_HOST_REGION = (
    re.compile(rf"(?:^|\.)sqs\.(?P<r>{AWS_REGION_FORM})\."),
    re.compile(rf"^(?P<r>{AWS_REGION_FORM})\.queue\.amazonaws\.com(?:\.cn)?$"),
)

SOURCE_FORMS = (
    "an SQS queue ARN (arn:aws:sqs:REGION:ACCOUNT:NAME) or queue URL (https://HOST/ACCOUNT/NAME), "
    "a Kinesis stream ARN (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME), or a DynamoDB stream ARN "
    "(arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE/stream/LABEL) or table ARN "
    "(arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE, meaning its latest stream)"
)
DESTINATION_FORMS = (
    "an SQS queue ARN, an SNS topic ARN, an S3 bucket ARN (arn:aws:s3:::BUCKET) or an EventBridge "
    "event bus ARN (arn:aws:events:REGION:ACCOUNT:event-bus/NAME)"
)
_SOURCE_ARN_FORMS = {
    "sqs": "arn:aws:sqs:REGION:ACCOUNT:QUEUE_NAME",
    "kinesis": "arn:aws:kinesis:REGION:ACCOUNT:stream/STREAM_NAME",
    "dynamodb": "arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE[/stream/LABEL]",
}
_DESTINATION_ARN_FORMS = {
    "sqs": "arn:aws:sqs:REGION:ACCOUNT:QUEUE_NAME",
    "sns": "arn:aws:sns:REGION:ACCOUNT:TOPIC_NAME",
    "s3": "arn:aws:s3:::BUCKET",
    "events": "arn:aws:events:REGION:ACCOUNT:event-bus/NAME",
}


@dataclass(frozen=True)
class SourceRef:
    """Where a mapping reads from, resolved from its ARN or queue URL."""

    kind: SourceKind
    arn: str
    partition: str
    region: str
    """The region the source is read in: its ARN's or URL's, else (a URL without one, an
    emulator's placeholder such as `ddblocal`) the default region."""
    account: str
    name: str
    """Queue name, stream name, or table name (DynamoDB)."""
    queue_url: str | None = None
    """The URL the user gave for an SQS queue; None when they gave an ARN."""
    fifo: bool = False
    table: str | None = None
    stream_label: str | None = None
    """DynamoDB stream label; None for a table ARN, meaning the table's latest stream."""


@dataclass(frozen=True)
class DestinationRef:
    """Where a stream mapping sends the record of a batch it gave up on."""

    kind: DestinationKind
    arn: str
    name: str
    fifo: bool = False
    region: str | None = None
    """The region its ARN names; None (the default region) for an S3 bucket, whose ARN names
    none, or an emulator's placeholder region."""
    account: str | None = None


def partition_for_region(region: str) -> str:
    """AWS partition of a region, so ARNs derived from a queue URL are right outside `aws`."""
    for prefix, partition in (
        ("cn-", "aws-cn"),
        ("us-gov-", "aws-us-gov"),
        ("us-isob-", "aws-iso-b"),
        ("us-isof-", "aws-iso-f"),
        ("eu-isoe-", "aws-iso-e"),
        ("us-iso-", "aws-iso"),
        ("eusc-", "aws-eusc"),
    ):
        if region.startswith(prefix):
            return partition
    return "aws"


def parse_source(value: str, default_region: str) -> SourceRef:
    """Parse a mapping source; `default_region` fills in queue URLs that carry none (localhost)."""
    text = value.strip()
    if text.startswith(("http://", "https://")):
        return _parse_queue_url(text, default_region)
    if match := _SQS_ARN.match(text):
        name = _checked(match["n"], *_QUEUE)
        fifo = name.endswith(".fifo")
        region = _region(match) or default_region
        return SourceRef("sqs", text, match["p"], region, match["a"], name, fifo=fifo)
    if match := _KINESIS_ARN.match(text):
        name = _checked(match["n"], *_STREAM)
        region = _region(match) or default_region
        return SourceRef("kinesis", text, match["p"], region, match["a"], name)
    if match := _DYNAMODB_ARN.match(text):
        table = _checked(match["t"], *_TABLE)
        label = match["l"]
        if label is not None:
            _checked(label, *_LABEL)
        region = _region(match) or default_region
        return SourceRef(
            "dynamodb", text, match["p"], region, match["a"], table, table=table,
            stream_label=label,
        )
    raise ValueError(_near_miss(text, _SOURCE_ARN_FORMS) or f"must be {SOURCE_FORMS}")


def parse_destination(value: str) -> DestinationRef:
    """Parse an on-failure destination ARN (the caller treats "" as no destination)."""
    text = value.strip()
    if match := _SQS_ARN.match(text):
        name = _checked(match["n"], *_QUEUE)
        fifo = name.endswith(".fifo")
        return DestinationRef("sqs", text, name, fifo, _region(match), match["a"])
    if match := _SNS_ARN.match(text):
        name = _checked(match["n"], *_TOPIC)
        fifo = name.endswith(".fifo")
        return DestinationRef("sns", text, name, fifo, _region(match), match["a"])
    if match := _S3_ARN.match(text):
        name = _checked(match["n"], *_BUCKET)
        return DestinationRef("s3", text, name)
    if match := _BUS_ARN.match(text):
        name = _checked(match["n"], *_BUS)
        return DestinationRef("events", text, name, region=_region(match), account=match["a"])
    raise ValueError(_near_miss(text, _DESTINATION_ARN_FORMS) or f"must be {DESTINATION_FORMS}")


def check_region_name(value: str) -> str:
    """A region name as the AWS SDKs accept it (botocore's own check), or ValueError."""
    try:
        validate_region_name(value)
    except InvalidRegionError:
        raise ValueError(REGION_RULE) from None
    if not value:
        raise ValueError(REGION_RULE)
    return value


def arn_region(arn: str, default: str | None = None) -> str | None:
    """The region an ARN is reached in: the one it names, or `default` when it names none or an
    emulator's placeholder."""
    parts = arn.split(":")
    region = parts[3] if len(parts) > 3 and parts[0] == "arn" else ""
    return region if region and region not in PLACEHOLDER_REGIONS else default


def names_placeholder_region(arn: str) -> bool:
    """The ARN names an emulator's placeholder region (DynamoDB Local's `ddblocal`)."""
    parts = arn.split(":")
    return len(parts) > 3 and parts[0] == "arn" and parts[3] in PLACEHOLDER_REGIONS


def _region(match: re.Match[str]) -> str | None:
    """The ARN's region (checked by the SDK's rule); None for an emulator's placeholder."""
    region = check_region_name(match["r"])
    return None if region in PLACEHOLDER_REGIONS else region


def _parse_queue_url(url: str, default_region: str) -> SourceRef:
    """Queue URLs carry the account and name in the path and, on AWS, the region in the host."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    segments = [s for s in parts.path.split("/") if s]
    if not host or parts.query or parts.fragment:
        raise ValueError("must be a queue URL of the form https://HOST/ACCOUNT/QUEUE_NAME")
    region = default_region
    # LocalStack's path-style queue URLs: http://localhost:4566/queue/REGION/ACCOUNT/NAME
    if len(segments) == 4 and segments[0] == "queue" and REGION_RE.match(segments[1]):
        region = segments[1]
        segments = segments[2:]
    elif host == "queue.amazonaws.com":
        region = "us-east-1"
    else:
        for pattern in _HOST_REGION:
            if match := pattern.search(host):
                region = match["r"]
                break
    if len(segments) != 2 or not re.fullmatch(ACCOUNT, segments[0]):
        raise ValueError(
            "must be a queue URL of the form https://HOST/ACCOUNT/QUEUE_NAME "
            "with a 12-digit account id"
        )
    account, name = segments
    _checked(name, *_QUEUE)
    partition = partition_for_region(region)
    return SourceRef(
        "sqs",
        f"arn:{partition}:sqs:{region}:{account}:{name}",
        partition,
        region,
        account,
        name,
        queue_url=url,
        fifo=name.endswith(".fifo"),
    )


def _near_miss(text: str, forms: dict[str, str]) -> str | None:
    """For an ARN of a known service that does not parse, show that service's form only."""
    parts = text.split(":")
    form = forms.get(parts[2]) if len(parts) > 2 and parts[0] == "arn" else None
    if form is None:
        return None
    return f"must look like {form} (REGION such as us-east-1, ACCOUNT 12 digits)"


def _checked(name: str, pattern: str, what: str, rule: str) -> str:
    if not re.fullmatch(pattern, name):
        raise ValueError(f"{name!r} is not {what}: use {rule}")
    return name

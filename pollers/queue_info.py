"""What an SQS mapping needs to know about its queue before polling, read one way for `run` and
`check` alike, so the two can never disagree about a queue."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sluiceway.config.sources import SourceRef


@dataclass(frozen=True, slots=True)
class QueueInfo:
    url: str
    arn: str
    visibility_timeout: int
    fifo: bool
    redrive_policy: str | None

    def describe(self) -> str:
        dlq = "redrive policy set" if self.redrive_policy else "no redrive policy (no DLQ)"
        return f"visibility timeout {self.visibility_timeout}s, {dlq}"


async def read_queue(sqs: Any, source: SourceRef) -> QueueInfo:
    """GetQueueUrl (for an ARN) and GetQueueAttributes; errors are the caller's to retry."""
    url = source.queue_url
    if not url:
        url = (await sqs.get_queue_url(QueueName=source.name))["QueueUrl"]
    response = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    attributes = response["Attributes"]
    return QueueInfo(
        url=url,
        arn=attributes.get("QueueArn", source.arn),
        visibility_timeout=int(attributes.get("VisibilityTimeout", 30)),
        fifo=attributes.get("FifoQueue") == "true",
        redrive_policy=attributes.get("RedrivePolicy"),
    )

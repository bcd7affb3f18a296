"""A FIFO queue handler written with Powertools' SqsFifoPartialProcessor, as for Lambda."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

processor = SqsFifoPartialProcessor()
PROCESSED: list[str] = []


def record_handler(record: SQSRecord) -> None:
    if record.json_body.get("poison"):
        raise ValueError(f"poison message {record.message_id}")
    PROCESSED.append(record.message_id)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )

"""Stream handlers written for Lambda with Powertools: batch utilities, parser models, data classes.

Records whose payload has `"poison": true` fail; Powertools reports them in batchItemFailures
(Kinesis: the sequence number; DynamoDB: `dynamodb.SequenceNumber`).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes import event_source
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import (
    DynamoDBRecord,
    DynamoDBStreamEvent,
)
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import (
    KinesisStreamEvent,
    KinesisStreamRecord,
)
from aws_lambda_powertools.utilities.parser.models import KinesisDataStreamRecord

kinesis_processor = BatchProcessor(event_type=EventType.KinesisDataStreams)
kinesis_model_processor = BatchProcessor(
    event_type=EventType.KinesisDataStreams, model=KinesisDataStreamRecord
)
dynamodb_processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


class RecordFailed(Exception):
    """Powertools turns this into one batch item failure."""


def kinesis_record(record: KinesisStreamRecord) -> None:
    if record.kinesis.data_as_json().get("poison"):
        raise RecordFailed(record.kinesis.sequence_number)


def kinesis_model_record(record: KinesisDataStreamRecord) -> None:
    payload = record.kinesis.data  # the parser model has already base64-decoded it
    if b'"poison": true' in payload:
        raise RecordFailed(record.kinesis.sequenceNumber)


def dynamodb_record(record: DynamoDBRecord) -> None:
    new_image = record.dynamodb.new_image if record.dynamodb else {}
    if new_image.get("poison") is True:
        raise RecordFailed(record.event_id)


def kinesis_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return process_partial_response(
        event=event, record_handler=kinesis_record, processor=kinesis_processor, context=context
    )


def kinesis_model_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return process_partial_response(
        event=event,
        record_handler=kinesis_model_record,
        processor=kinesis_model_processor,
        context=context,
    )


def dynamodb_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return process_partial_response(
        event=event, record_handler=dynamodb_record, processor=dynamodb_processor, context=context
    )


@event_source(data_class=KinesisStreamEvent)
def kinesis_data_class_handler(event: KinesisStreamEvent, context: Any) -> dict[str, Any]:
    """Event data classes without the batch utility: the handler builds the response itself."""
    failures = [
        {"itemIdentifier": record.kinesis.sequence_number}
        for record in event.records
        if record.kinesis.data_as_json().get("poison")
    ]
    return {"batchItemFailures": failures}


@event_source(data_class=DynamoDBStreamEvent)
def dynamodb_data_class_handler(event: DynamoDBStreamEvent, context: Any) -> dict[str, Any]:
    failures = [
        {"itemIdentifier": record.dynamodb.sequence_number}
        for record in event.records
        if record.dynamodb and record.dynamodb.new_image.get("poison") is True
    ]
    return {"batchItemFailures": failures}

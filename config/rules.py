"""AWS's cross-field rules for event source mappings, one problem per field to change.

These are the checks CreateEventSourceMapping makes that depend on more than one field or on the
source kind. Each problem is placed on the field the user must change, and lists every field it
depends on so it is skipped when one of those is itself invalid (and already reported).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic_core import InitErrorDetails
from sluiceway.config.fields import rule_error
from sluiceway.config.filter_patterns import FilterPatternError, compile_filter_criteria

if TYPE_CHECKING:
    from sluiceway.config.mapping import MappingConfig
    from sluiceway.config.sources import SourceRef

_LABEL = {"kinesis": "a Kinesis stream", "dynamodb": "a DynamoDB stream"}
_SQS_RETRIES = "an SQS mapping retries through the queue's visibility timeout and redrive policy"
_STREAM_ONLY: dict[str, tuple[Any, str]] = {
    "parallelization_factor": (1, "an SQS mapping scales with scaling_config instead"),
    "bisect_batch_on_function_error": (False, _SQS_RETRIES),
    "maximum_record_age_in_seconds": (-1, _SQS_RETRIES),
    "tumbling_window_in_seconds": (None, "SQS records are not windowed"),
    "idle_poll_max_seconds": (1.0, "an SQS mapping long-polls its queue"),
    "poll_interval_seconds": (None, "an SQS mapping long-polls its queue"),
}
_DESTINATION = ("destination_config", "on_failure", "destination")


@dataclass(frozen=True)
class RuleProblem:
    loc: tuple[str, ...]
    """The field the user must change."""
    value: Any
    rule: str
    involves: tuple[str, ...] = ()
    """Top-level fields the rule reads; the problem is moot if any of them is invalid."""

    def line_error(self) -> InitErrorDetails:
        return InitErrorDetails(type=rule_error(self.rule), loc=self.loc, input=self.value)


def mapping_rule_problems(mapping: MappingConfig) -> list[RuleProblem]:
    """Every cross-field rule the mapping breaks."""
    source = mapping.source_ref
    by_kind = _sqs_rules if source.kind == "sqs" else _stream_rules
    problems = by_kind(mapping, source)
    if mapping.deaggregate_records and source.kind != "kinesis":
        rule = (
            "deaggregate_records applies to Kinesis stream mappings only: KPL aggregation is a "
            "Kinesis record format"
        )
        problems.append(RuleProblem(("deaggregate_records",), True, rule, ("source",)))
    problems.extend(_filter_rules(mapping, source))
    return problems


def _sqs_rules(mapping: MappingConfig, source: SourceRef) -> list[RuleProblem]:
    problems: list[RuleProblem] = []
    queue = "a FIFO SQS queue" if source.fifo else "a standard SQS queue"
    limit = 10 if source.fifo else 10000
    size, window = mapping.batch_size, mapping.maximum_batching_window_in_seconds
    if size is not None and not 1 <= size <= limit:
        rule = f"{queue} takes a batch size from 1 to {limit}"
        problems.append(RuleProblem(("batch_size",), size, rule, ("source", "batch_size")))
    window_loc = ("maximum_batching_window_in_seconds",)
    if source.fifo and window != 0:
        rule = "a FIFO SQS queue takes no batching window: it must be 0"
        problems.append(RuleProblem(window_loc, window, rule, ("source",)))
    elif not source.fifo and size is not None and 10 < size <= limit and window < 1:
        rule = f"a batch size over 10 (batch_size={size}) needs a batching window of at least 1s"
        involves = ("source", "batch_size", *window_loc)
        problems.append(RuleProblem(window_loc, window, rule, involves))
    for field in ("starting_position", "starting_position_timestamp"):
        value = getattr(mapping, field)
        if value is not None:
            rule = "SQS mappings take no starting position (it is for Kinesis and DynamoDB streams)"
            problems.append(RuleProblem((field,), value, rule, ("source",)))
    for field, (default, reason) in _STREAM_ONLY.items():
        value = getattr(mapping, field)
        if value != default:
            rule = f"{field} applies to Kinesis and DynamoDB stream mappings only; {reason}"
            problems.append(RuleProblem((field,), value, rule, ("source",)))
    problems.extend(_sqs_destination_rules(mapping))
    return problems


def _sqs_destination_rules(mapping: MappingConfig) -> list[RuleProblem]:
    """Beyond AWS: an SQS mapping may send a message that failed `maximum_retry_attempts + 1`
    receives to an on-failure destination; the two settings only make sense together."""
    destination = mapping.on_failure_destination
    retries = mapping.maximum_retry_attempts
    if destination is None:
        if retries != -1:
            rule = (
                "on an SQS mapping maximum_retry_attempts needs an on-failure destination "
                "(destination_config.on_failure.destination); without one, " + _SQS_RETRIES
            )
            return [RuleProblem(("maximum_retry_attempts",), retries, rule, ("source",))]
        return []
    problems: list[RuleProblem] = []
    if retries == -1:
        rule = (
            "an SQS mapping with an on-failure destination needs maximum_retry_attempts from 0 "
            "to 10000: a message goes to the destination after that many retries"
        )
        problems.append(
            RuleProblem(
                ("maximum_retry_attempts",), retries, rule, ("source", "destination_config")
            )
        )
    if destination.fifo:
        rule = (
            "a FIFO SQS queue or FIFO SNS topic cannot be an on-failure destination; use a "
            "standard queue or topic"
        )
        problems.append(RuleProblem(_DESTINATION, destination.arn, rule, ("destination_config",)))
    return problems


def _stream_rules(mapping: MappingConfig, source: SourceRef) -> list[RuleProblem]:
    problems: list[RuleProblem] = []
    stream = _LABEL[source.kind]
    size = mapping.batch_size
    if size is not None and not 1 <= size <= 10000:
        rule = f"{stream} takes a batch size from 1 to 10000"
        problems.append(RuleProblem(("batch_size",), size, rule, ("source", "batch_size")))
    problems.extend(_starting_position_rules(mapping, source))
    scaling = mapping.scaling_config
    if scaling is not None and scaling.maximum_concurrency is not None:
        rule = (
            "scaling_config applies to SQS mappings only; a stream mapping runs one batch per "
            "shard and parallelization_factor"
        )
        loc = ("scaling_config", "maximum_concurrency")
        problems.append(RuleProblem(loc, scaling.maximum_concurrency, rule, ("source",)))
    if mapping.visibility_backoff is not None:
        rule = (
            "visibility_backoff applies to SQS mappings only; stream mappings retry with "
            "maximum_retry_attempts, bisect_batch_on_function_error and "
            "maximum_record_age_in_seconds"
        )
        value = mapping.visibility_backoff.model_dump()
        problems.append(RuleProblem(("visibility_backoff",), value, rule, ("source",)))
    destination = mapping.on_failure_destination
    if destination is not None and destination.fifo:
        rule = (
            "a FIFO SQS queue or FIFO SNS topic cannot be an on-failure destination (AWS fails "
            "every delivery to one); use a standard queue or topic"
        )
        problems.append(RuleProblem(_DESTINATION, destination.arn, rule, ("destination_config",)))
    return problems


def _starting_position_rules(mapping: MappingConfig, source: SourceRef) -> list[RuleProblem]:
    position, timestamp = mapping.starting_position, mapping.starting_position_timestamp
    choices = (
        "TRIM_HORIZON or LATEST"
        if source.kind == "dynamodb"
        else ("TRIM_HORIZON, LATEST or AT_TIMESTAMP")
    )
    stream = _LABEL[source.kind]
    involves = ("source", "starting_position")
    if position is None:
        rule = f"{stream} mapping needs a starting position: {choices}"
        return [RuleProblem(("starting_position",), None, rule, involves)]
    if source.kind == "dynamodb" and position == "AT_TIMESTAMP":
        rule = "a DynamoDB stream starts only at TRIM_HORIZON or LATEST"
        return [RuleProblem(("starting_position",), position, rule, involves)]
    involves = (*involves, "starting_position_timestamp")
    if position == "AT_TIMESTAMP" and timestamp is None:
        rule = "starting_position AT_TIMESTAMP needs a starting_position_timestamp (Unix seconds)"
        return [RuleProblem(("starting_position_timestamp",), None, rule, involves)]
    if position != "AT_TIMESTAMP" and timestamp is not None:
        rule = (
            f"a starting position timestamp is used only with starting_position AT_TIMESTAMP, "
            f"not {position}"
        )
        return [RuleProblem(("starting_position_timestamp",), timestamp, rule, involves)]
    return []


def _filter_rules(mapping: MappingConfig, source: SourceRef) -> list[RuleProblem]:
    """Validate patterns with the compiler the router filters with, so config and runtime agree."""
    if not mapping.filter_criteria:
        return []
    try:
        compile_filter_criteria(mapping.filter_criteria, source.kind)
    except FilterPatternError as exc:
        rule = f'must be {{"Filters": [{{"Pattern": "<JSON>"}}]}} with valid patterns: {exc}'
        involves = ("source", "filter_criteria")
        return [RuleProblem(("filter_criteria",), mapping.filter_criteria, rule, involves)]
    return []

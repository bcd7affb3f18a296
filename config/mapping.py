"""One event source mapping, with the ESM API's parameters in snake_case.

Field-level limits live on the fields; rules that depend on the source kind (FIFO batch size,
stream-only settings, ...) live in `config.rules` and run after the fields validate, so every
problem with a mapping is reported at once, each against the field the user has to change.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    PrivateAttr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from sluiceway.config.fields import (
    HandlerKind,
    Section,
    at_least,
    between,
    check_handler,
    existing_directory,
    existing_file,
    function_name_form,
    handler_kind,
    normalise_case,
    rule_error,
)
from sluiceway.config.rules import mapping_rule_problems
from sluiceway.config.schema import KEYED_BY_VARIABLE
from sluiceway.config.sources import (
    DestinationRef,
    SourceKind,
    SourceRef,
    parse_destination,
    parse_source,
)

StartingPosition = Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"]
Isolation = Literal["thread", "process"]
REPORT_BATCH_ITEM_FAILURES = "ReportBatchItemFailures"
DEFAULT_BATCH_SIZE: dict[SourceKind, int] = {"sqs": 10, "kinesis": 100, "dynamodb": 100}
_PLACEHOLDER_HANDLER = "placeholder:handler"




class ScalingConfig(Section):
    """SQS only: caps the concurrent invocations of one mapping."""

    maximum_concurrency: Annotated[int, between(2, 1000)] | None = None


class OnFailure(Section):
    destination: str = ""
    """An SQS, SNS, S3 bucket or EventBridge bus ARN; "" means no destination."""

    @field_validator("destination")
    @classmethod
    def _known_destination(cls, value: str) -> str:
        value = value.strip()
        if value:
            try:
                parse_destination(value)
            except ValueError as exc:
                raise rule_error(str(exc)) from None
        return value

    @property
    def destination_ref(self) -> DestinationRef | None:
        return parse_destination(self.destination) if self.destination else None


class DestinationConfig(Section):
    on_failure: OnFailure | None = None


class VisibilityBackoff(Section):
    """SQS only: hide a failed message longer after each receive, instead of the queue's fixed
    visibility timeout, so a poison message does not hammer the handler."""

    initial_seconds: Annotated[int, between(0, 43200, " seconds")] = 30
    multiplier: Annotated[float, between(1, 10)] = 2.0
    max_seconds: Annotated[int, between(1, 43200, " seconds")] = 900

    def timeout_for(self, receive_count: int) -> int:
        """Visibility timeout for a message received `receive_count` times (1 = first)."""
        delay = float(self.initial_seconds)
        for _ in range(max(0, receive_count - 1)):
            if delay >= self.max_seconds:
                break
            delay *= self.multiplier
        return int(min(delay, self.max_seconds))


def _epoch_seconds(value: Any) -> Any:
    """Accept an ISO 8601 time as well as Unix seconds: both are common in runbooks."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            raise rule_error(
                "must be Unix seconds or an ISO 8601 time such as 2024-01-01T00:00:00Z"
            ) from None
    return value


def _record_age(value: int) -> int:
    if value != -1 and not 60 <= value <= 604800:
        raise rule_error("must be -1 (no limit) or from 60 to 604800 seconds")
    return value


def _one_response_type(value: list[str]) -> list[str]:
    if len(value) > 1:
        raise rule_error(f'takes at most one item: ["{REPORT_BATCH_ITEM_FAILURES}"]')
    return value






def _patterns_as_strings(value: Any) -> Any:
    """Lambda wants each Pattern as a JSON string; YAML and TOML users may write an object."""
    if isinstance(value, dict) and isinstance(value.get("Filters"), list):
        filters = [
            {**item, "Pattern": json.dumps(item["Pattern"])}
            if isinstance(item, dict) and isinstance(item.get("Pattern"), dict | list)
            else item
            for item in value["Filters"]
        ]
        return {**value, "Filters": filters}
    return value


class MappingConfig(Section):
    """An event source mapping: where to read, what to invoke, and how to batch and retry."""

    source: str
    handler: Annotated[str, AfterValidator(check_handler)] | None = None
    """The mapping's own function; unset, `function_name` names a declared function
    (SLUICEWAY_FUNCTIONS__<NAME>__HANDLER) whose settings it runs with."""
    code_path: Annotated[str, AfterValidator(existing_directory)] | None = None
    """The function's code (Lambda's CodeUri), first on sys.path when its handler is imported;
    unset, the working directory at start-up, as Lambda's task root."""
    enabled: bool = True
    batch_size: int | None = None
    maximum_batching_window_in_seconds: Annotated[int, between(0, 300, " seconds")] = 0
    function_response_types: Annotated[
        list[Literal["ReportBatchItemFailures"]], AfterValidator(_one_response_type)
    ] = []
    filter_criteria: Annotated[dict[str, Any], BeforeValidator(_patterns_as_strings)] | None = None
    scaling_config: ScalingConfig | None = None
    function_timeout: Annotated[float, at_least(0, " seconds", strict=True)] = 3.0
    function_name: Annotated[str, function_name_form] | None = None
    memory_size: Annotated[int, between(128, 10240, " MB")] = 128
    handler_threads: Annotated[int, between(1, 1000)] = 1
    """Concurrent invocations of a sync handler in this process. 1 (the default) matches one
    Lambda execution environment, so module-level state (e.g. a Powertools BatchProcessor) is
    never shared between two batches at once; raise it only for thread-safe handlers."""
    starting_position: Annotated[StartingPosition, normalise_case(str.upper)] | None = None
    starting_position_timestamp: (
        Annotated[float, BeforeValidator(_epoch_seconds), at_least(0, " (Unix seconds)")] | None
    ) = None
    parallelization_factor: Annotated[int, between(1, 10)] = 1
    poll_interval_seconds: Annotated[float, between(0.2, 300, " seconds")] | None = None
    """Streams: the shortest time between GetRecords calls on one shard, busy or quiet. None
    polls as often as the API allows (Kinesis 5 a second, DynamoDB Streams 4); 1 polls like
    Lambda and leaves most of a Kinesis shard's 5 reads a second to the stream's other consumers."""
    idle_poll_max_seconds: Annotated[float, between(1, 300, " seconds")] = 1.0
    """Streams: the longest wait between GetRecords calls on a quiet shard, whatever the
    process's poll budget (`idle_polls_per_second`) allows; the first record after a quiet spell
    may wait up to this long to be seen. The default, 1, polls every shard at least once a
    second, as Lambda does; more trades that latency for fewer calls on many quiet shards."""
    bisect_batch_on_function_error: bool = False
    deaggregate_records: bool = False
    """Kinesis only: split each KPL-aggregated record into its user records, each with its own
    identity (sequence number plus sub-sequence number). Off, a handler gets the aggregate as one
    record and de-aggregates it itself, as with Lambda."""
    maximum_retry_attempts: Annotated[int, between(-1, 10000)] = -1
    maximum_record_age_in_seconds: Annotated[int, AfterValidator(_record_age)] = -1
    destination_config: DestinationConfig | None = None
    tumbling_window_in_seconds: Annotated[int, between(0, 900, " seconds")] | None = None
    visibility_backoff: VisibilityBackoff | None = None
    isolation: Annotated[Isolation, normalise_case(str.lower)] = "thread"
    """Python handlers: "thread" runs them in this process; "process" in a pool of warm worker
    processes (`handler_threads` of them) where a timeout kills the worker and `memory_size`
    is a limit. A "thread" function whose code would not be its own in this process (another
    function's code holds a module of the same name, as fn_a/app.py and fn_b/app.py do) runs in
    worker processes anyway, with a warning (`handlers.targets.isolation_for`)."""
    environment: Annotated[dict[str, str], KEYED_BY_VARIABLE] = {}
    """Variables set in each worker process (isolation "process" only): a JSON object, and/or one
    `ENVIRONMENT__NAME=value` variable per entry (these win over the object's)."""
    reserved_concurrency: Annotated[int, between(0, 1000)] | None = None
    """Invocations of this function at once, across every mapping of it (those with the same
    `function_name`, or Lambda function); more are throttled."""
    ca_bundle: Annotated[str, AfterValidator(existing_file)] | None = None
    """Extra CA certificates (PEM) trusted for an https:// handler, beside the system's."""

    _name: str = PrivateAttr(default="")
    _region: str | None = PrivateAttr(default=None)
    _source_ref: SourceRef | None = PrivateAttr(default=None)

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        value = value.strip()
        try:
            parse_source(value, "us-east-1")
        except ValueError as exc:
            raise rule_error(str(exc)) from None
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _cross_field_rules(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """Run AWS's cross-field rules, also when some fields failed, so all problems show."""
        try:
            mapping = handler(data)
        except ValidationError as exc:
            extra = cls._rules_on_valid_fields(data, exc, handler)
            if isinstance(data, dict) and not data.get("handler") and not data.get("function_name"):
                # reported with the rest; a valid mapping learns its function from the settings
                extra.append(InitErrorDetails(type="missing", loc=("handler",), input=data))
            raise _combined(cls.__name__, exc, extra) from None
        problems = mapping_rule_problems(mapping)
        if problems:
            raise _combined(cls.__name__, None, [p.line_error() for p in problems])
        return mapping

    @classmethod
    def _rules_on_valid_fields(
        cls, data: Any, exc: ValidationError, handler: ValidatorFunctionWrapHandler
    ) -> list[InitErrorDetails]:
        """Rule problems among the fields that did validate (the rest are already reported)."""
        bad = {error["loc"][0] for error in exc.errors() if error["loc"]}
        if not isinstance(data, dict) or "source" in bad or any(not e["loc"] for e in exc.errors()):
            return []
        valid = {key: value for key, value in data.items() if key not in bad}
        valid.setdefault("handler", _PLACEHOLDER_HANDLER)
        try:
            mapping = handler(valid)
        except ValidationError:
            return []
        return [
            problem.line_error()
            for problem in mapping_rule_problems(mapping)
            if not bad.intersection(problem.involves)
        ]

    # --- resolved views the pollers and the router use ------------------------------------------

    @property
    def name(self) -> str:
        """The mapping's key in `Settings.mappings` (lowercase)."""
        return self._name

    @property
    def source_ref(self) -> SourceRef:
        if self._source_ref is None:
            region = self._region or _region_from_environment()
            self._source_ref = parse_source(self.source, region)
        return self._source_ref

    @property
    def kind(self) -> SourceKind:
        return self.source_ref.kind

    @property
    def effective_batch_size(self) -> int:
        return self.batch_size if self.batch_size is not None else DEFAULT_BATCH_SIZE[self.kind]

    @property
    def report_batch_item_failures(self) -> bool:
        return REPORT_BATCH_ITEM_FAILURES in self.function_response_types

    @property
    def effective_function_name(self) -> str:
        return self.function_name or self._name or "sluiceway"

    @property
    def handler_kind(self) -> HandlerKind:
        """ "python" (module:function or module.function), "http" or "lambda" (a function ARN)."""
        return handler_kind(self.handler)

    @property
    def on_failure_destination(self) -> DestinationRef | None:
        on_failure = self.destination_config.on_failure if self.destination_config else None
        return on_failure.destination_ref if on_failure else None

    def variable(self, field: str) -> str:
        """The variable that sets `field`, for messages."""
        return f"SLUICEWAY_MAPPINGS__{self._name.upper()}__{field.upper()}"

    def home(self, default_region: str) -> tuple[str, str]:
        """The region and account the mapping's function runs in: its source's."""
        source = self.source_ref
        return source.region or default_region, source.account

    def bind(self, name: str, region: str) -> None:
        """Attach the mapping's name and the service's region (for queue URLs that carry none)."""
        self._name = name
        self._region = region
        self._source_ref = None


def _region_from_environment() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def _combined(
    title: str, exc: ValidationError | None, extra: list[InitErrorDetails]
) -> ValidationError:
    """One ValidationError holding field errors and rule errors, each at its own location."""
    lines: list[InitErrorDetails] = []
    for error in exc.errors() if exc else []:
        line = InitErrorDetails(
            type=PydanticCustomError(error["type"], error["msg"], error.get("ctx")),
            loc=error["loc"],
            input=error["input"],
        )
        lines.append(line)
    return ValidationError.from_exception_data(title, [*lines, *extra])

"""A function, with Lambda's function parameters and its event invoke config in snake_case.

`SLUICEWAY_FUNCTIONS__<NAME>__HANDLER` declares one. Mappings name it with `FUNCTION_NAME`
(or declare their own with a mapping-level `HANDLER`); the Invoke API and schedules call it by
name. Its event invoke config (PutFunctionEventInvokeConfig's parameters) and dead-letter queue
govern asynchronous invocation.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, PrivateAttr, field_validator
from sluiceway.config.fields import (
    HandlerKind,
    Section,
    at_least,
    between,
    check_handler,
    existing_directory,
    existing_file,
    handler_kind,
    normalise_case,
    rule_error,
)
from sluiceway.config.schema import KEYED_BY_VARIABLE
from sluiceway.config.sources import ACCOUNT, PARTITION, REGION, DestinationRef, parse_destination

Isolation = Literal["thread", "process"]
AsyncDestinationRef = DestinationRef
_FUNCTION_ARN = re.compile(
    rf"^arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:(?P<n>[A-Za-z0-9_-]{{1,64}})"
    r"(?::(?:\$LATEST|[A-Za-z0-9_-]{1,128}))?$"
)
ASYNC_DESTINATION_FORMS = (
    "an SQS queue ARN, an SNS topic ARN, an EventBridge event bus ARN, an S3 bucket ARN "
    "(arn:aws:s3:::BUCKET, on failure only) or a Lambda function ARN "
    "(arn:aws:lambda:REGION:ACCOUNT:function:NAME)"
)


def parse_async_destination(value: str) -> DestinationRef:
    """Parse an asynchronous invocation's destination: a mapping's kinds, or a function."""
    text = value.strip()
    if match := _FUNCTION_ARN.match(text):
        return DestinationRef("lambda", text, match["n"])
    try:
        return parse_destination(text)
    except ValueError as exc:
        if text.startswith("arn:") and ":lambda:" in text:
            raise ValueError(
                "must look like arn:aws:lambda:REGION:ACCOUNT:function:NAME "
                "(REGION such as us-east-1, ACCOUNT 12 digits)"
            ) from None
        if str(exc).startswith("must be "):
            raise ValueError(f"must be {ASYNC_DESTINATION_FORMS}") from None
        raise
DEFAULT_ACCOUNT = "000000000000"
"""The account in a declared function's ARN (records, context): a function declared here belongs
to no AWS account."""








class DeadLetterConfig(Section):
    """Where a failed asynchronous event goes, unchanged: a standard SQS queue or SNS topic."""

    target_arn: str = ""

    @field_validator("target_arn")
    @classmethod
    def _queue_or_topic(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return value
        try:
            ref = parse_destination(value)
        except ValueError as exc:
            raise rule_error(str(exc)) from None
        if ref.kind not in ("sqs", "sns") or ref.fifo:
            raise rule_error("a dead-letter queue must be a standard SQS queue or SNS topic ARN")
        return value

    @property
    def ref(self) -> DestinationRef | None:
        return parse_destination(self.target_arn) if self.target_arn else None


class _AsyncDestination(Section):
    destination: str = ""
    """An SQS queue, SNS topic, EventBridge bus, S3 bucket (on failure only) or Lambda function
    ARN; "" means none."""

    @field_validator("destination")
    @classmethod
    def _known(cls, value: str) -> str:
        value = value.strip()
        if value:
            try:
                ref = parse_async_destination(value)
            except ValueError as exc:
                raise rule_error(str(exc)) from None
            if ref.fifo:
                raise rule_error(
                    "a FIFO queue or topic cannot be a destination; use a standard one"
                )
        return value

    @property
    def ref(self) -> AsyncDestinationRef | None:
        return parse_async_destination(self.destination) if self.destination else None


class OnSuccess(_AsyncDestination):
    @field_validator("destination")
    @classmethod
    def _not_s3(cls, value: str) -> str:
        if value and parse_async_destination(value).kind == "s3":
            raise rule_error("an S3 bucket is an on-failure destination only")
        return value


class OnFailureAsync(_AsyncDestination):
    pass


class AsyncDestinationConfig(Section):
    on_success: OnSuccess | None = None
    on_failure: OnFailureAsync | None = None


class FunctionConfig(Section):
    """One function: its code and limits (CreateFunction) and its event invoke config."""

    handler: Annotated[str, AfterValidator(check_handler)]
    code_path: Annotated[str, AfterValidator(existing_directory)] | None = None
    """The function's code (CodeUri); unset, the working directory at start-up."""
    timeout: Annotated[float, at_least(0, " seconds", strict=True)] = 3.0
    memory_size: Annotated[int, between(128, 10240, " MB")] = 128
    environment: Annotated[dict[str, str], KEYED_BY_VARIABLE] = {}
    """Variables set in each worker process (isolation "process" only): a JSON object, and/or one
    `ENVIRONMENT__NAME=value` variable per entry (these win over the object's)."""
    isolation: Annotated[Isolation, normalise_case(str.lower)] = "thread"
    handler_threads: Annotated[int, between(1, 1000)] = 1
    reserved_concurrent_executions: Annotated[int, between(0, 1000)] | None = None
    """0 turns the function off: asynchronous events go straight to the DLQ or destination."""
    ca_bundle: Annotated[str, AfterValidator(existing_file)] | None = None
    dead_letter_config: DeadLetterConfig | None = None
    maximum_retry_attempts: Annotated[int, between(0, 2)] = 2
    maximum_event_age_in_seconds: Annotated[int, between(60, 21600, " seconds")] = 21600
    destination_config: AsyncDestinationConfig | None = None

    _name: str = PrivateAttr(default="")
    _region: str = PrivateAttr(default="us-east-1")
    _account: str = PrivateAttr(default=DEFAULT_ACCOUNT)
    _section: str = PrivateAttr(default="FUNCTIONS")
    _declared_by: str = PrivateAttr(default="")

    def bind(self, name: str, region: str, account: str = DEFAULT_ACCOUNT) -> None:
        self._name = name
        self._region = region
        self._account = account

    # --- the view handler targets use (shared with MappingConfig) --------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def enabled(self) -> bool:
        return True

    @property
    def function_timeout(self) -> float:
        return self.timeout

    @property
    def reserved_concurrency(self) -> int | None:
        return self.reserved_concurrent_executions

    @property
    def effective_function_name(self) -> str:
        return self._name

    @property
    def handler_kind(self) -> HandlerKind:
        return handler_kind(self.handler)

    def home(self, default_region: str) -> tuple[str, str]:
        """The region and account the function runs in (its context and ARN say so)."""
        return self._region or default_region, self._account

    def variable(self, field: str) -> str:
        """The variable that sets `field` (a mapping field's name, as targets ask), for messages."""
        if self._section == "FUNCTIONS":
            field = _FUNCTION_FIELD_OF.get(field, field)
        owner = (self._declared_by or self._name).upper()
        return f"SLUICEWAY_{self._section}__{owner}__{field.upper()}"

    # --- asynchronous invocation -----------------------------------------------------------------

    @property
    def arn(self) -> str:
        """The function's unqualified ARN (invocation records add `:$LATEST`)."""
        from sluiceway.config.sources import partition_for_region

        partition = partition_for_region(self._region)
        return f"arn:{partition}:lambda:{self._region}:{self._account}:function:{self._name}"

    @property
    def on_success(self) -> AsyncDestinationRef | None:
        config = self.destination_config
        return config.on_success.ref if config and config.on_success else None

    @property
    def on_failure(self) -> AsyncDestinationRef | None:
        config = self.destination_config
        return config.on_failure.ref if config and config.on_failure else None

    @property
    def dead_letter(self) -> DestinationRef | None:
        return self.dead_letter_config.ref if self.dead_letter_config else None


FUNCTION_FIELDS_FROM_MAPPING: dict[str, str] = {
    "handler": "handler",
    "code_path": "code_path",
    "timeout": "function_timeout",
    "memory_size": "memory_size",
    "environment": "environment",
    "isolation": "isolation",
    "handler_threads": "handler_threads",
    "reserved_concurrent_executions": "reserved_concurrency",
    "ca_bundle": "ca_bundle",
}
"""A function's field -> the mapping field that declares it (a mapping-level HANDLER)."""
_FUNCTION_FIELD_OF = {attr: field for field, attr in FUNCTION_FIELDS_FROM_MAPPING.items()}


def function_of_mapping(mapping: Any, region: str, account: str) -> FunctionConfig:
    """The function a mapping with its own HANDLER declares (named by its function name)."""
    values = {field: getattr(mapping, attr) for field, attr in FUNCTION_FIELDS_FROM_MAPPING.items()}
    function = FunctionConfig.model_construct(**values)
    function.bind(mapping.effective_function_name, region, account)
    function._section = "MAPPINGS"
    function._declared_by = mapping.name
    return function


def mapping_fields_of(function: FunctionConfig) -> dict[str, Any]:
    """The mapping fields that run `function` (a mapping naming it with FUNCTION_NAME)."""
    return {attr: getattr(function, field) for field, attr in FUNCTION_FIELDS_FROM_MAPPING.items()}

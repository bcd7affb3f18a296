"""Settings for invoking functions: the asynchronous event queue and the Invoke API's auth.

`SLUICEWAY_ASYNC__*` chooses where accepted `Event` invokes wait (a SQLite table beside the
checkpoints, or an SQS queue replicas share) and the spacing of retries after a function error;
`SLUICEWAY_API__*` holds the key pairs the Invoke API verifies SigV4 signatures against.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails
from sluiceway.config.fields import normalise_case, rule_error
from sluiceway.config.sources import parse_source

DEFAULT_RETRY_DELAYS = [60.0, 120.0]
"""Lambda's spacing: one minute before the second attempt, two before the third."""
SQS_MAX_DELAY_SECONDS = 900


class AsyncConfig(BaseModel):
    """Where accepted asynchronous events wait, and how far apart their retries are."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Annotated[Literal["sqlite", "sqs"], normalise_case(str.lower)] = "sqlite"
    """sqlite: a table in the checkpoint file (SLUICEWAY_CHECKPOINTS__PATH); sqs: the queue
    SLUICEWAY_ASYNC__QUEUE, shared by every replica."""
    queue: str | None = None
    """The SQS queue (URL or ARN) of the sqs backend; a standard queue."""
    retry_delays_seconds: list[float] = DEFAULT_RETRY_DELAYS
    """Waits before the second and third attempts after a function error (beyond AWS: Lambda's
    are fixed at 60 and 120 s)."""

    @field_validator("retry_delays_seconds")
    @classmethod
    def _two_delays(cls, value: list[float]) -> list[float]:
        if len(value) != 2 or any(not 0 <= delay <= 21600 for delay in value):
            raise rule_error("must be two delays from 0 to 21600 seconds, e.g. [60, 120]")
        return value

    @field_validator("queue")
    @classmethod
    def _standard_queue(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            ref = parse_source(value, "us-east-1")
        except ValueError as exc:
            raise rule_error(str(exc)) from None
        if ref.kind != "sqs" or ref.fifo:
            raise rule_error("must be a standard SQS queue (URL or ARN)")
        return value

    @model_validator(mode="after")
    def _queue_for_sqs(self) -> AsyncConfig:
        problems: list[InitErrorDetails] = []
        if self.backend == "sqs" and not self.queue:
            rule = "the sqs backend needs a queue: SLUICEWAY_ASYNC__QUEUE (URL or ARN)"
            problems.append(InitErrorDetails(type=rule_error(rule), loc=("queue",), input=None))
        if self.backend == "sqs" and any(
            d > SQS_MAX_DELAY_SECONDS for d in self.retry_delays_seconds
        ):
            rule = "with the sqs backend each delay is at most 900 seconds (SQS's longest delay)"
            problems.append(
                InitErrorDetails(
                    type=rule_error(rule),
                    loc=("retry_delays_seconds",),
                    input=self.retry_delays_seconds,
                )
            )
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self


class ApiConfig(BaseModel):
    """Who may call the Invoke API: SigV4 signatures checked against these key pairs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    auth: Annotated[Literal["sigv4", "none"], normalise_case(str.lower)] = "sigv4"
    """none: every request is accepted (local use only; a warning says so at start)."""
    keys: dict[str, str] = {}
    """Access key id -> secret access key."""

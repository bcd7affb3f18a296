"""What an invocation means for the batch, as types, so retry policy reads as a table rather
than nested ifs: an `Outcome` is an `InvocationResult` (`sluiceway.handlers.results`) once AWS's
response rules are applied (`sluiceway.router.response`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sluiceway.handlers.results import FunctionError, InvokeFailure


@dataclass(frozen=True, slots=True)
class BatchSucceeded:
    """Every record in the batch is finished."""


@dataclass(frozen=True, slots=True)
class PartialFailure:
    """Only the records whose item ids are listed failed (ReportBatchItemFailures)."""

    failed_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BatchFailed:
    """The whole batch failed; `reason` says why (function error, invalid response, ...)."""

    reason: str
    error: FunctionError | InvokeFailure | None = field(default=None)

    @property
    def reached_handler(self) -> bool:
        """False for throttles and transport errors, which do not consume retry attempts."""
        return not isinstance(self.error, InvokeFailure)


Outcome = BatchSucceeded | PartialFailure | BatchFailed

"""What an invocation came to, as types, so retry policy reads as a table rather than nested ifs.

`InvocationResult` is what calling the handler produced (a payload or an error); `Outcome` is what
that result means for the batch once AWS's response rules are applied (`router.response`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

# ---------------------------------------------------------------- invocation results


@dataclass(frozen=True, slots=True)
class Returned:
    """The handler ran to completion and returned `payload` (already JSON-compatible)."""

    payload: Any
    duration: float = 0.0
    request_id: str = field(default="", compare=False)
    """The invocation's request id (the handler's `context.aws_request_id`); results that
    differ only in it are the same result."""


@dataclass(frozen=True, slots=True)
class FunctionError:
    """The handler ran and failed: raised, timed out, or returned something unserialisable.

    Counts as an attempt (MaximumRetryAttempts) and as a Lambda `Errors` metric.
    """

    error_type: str
    message: str
    duration: float = 0.0
    function_error: str = "Unhandled"  # Lambda's X-Amz-Function-Error value
    request_id: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class InvokeFailure:
    """The event never reached the handler (throttle, connection error, 5xx from a remote target).

    Retried with backoff; does not count as an attempt, as in AWS.
    """

    reason: str
    throttled: bool = False


InvocationResult = Returned | FunctionError | InvokeFailure


def with_request_id(result: InvocationResult, request_id: str) -> InvocationResult:
    """`result` stamped with the invocation's request id, which failure records carry so a
    failed batch can be found in the handler's logs; a failure to invoke has none."""
    if isinstance(result, InvokeFailure) or not request_id:
        return result
    return replace(result, request_id=request_id)


# ---------------------------------------------------------------- batch outcomes


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

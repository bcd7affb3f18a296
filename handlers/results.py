"""What calling a handler produced, typed the way Lambda reports it.

Every target (in-process, worker processes, HTTP, a Lambda ARN) answers with an `InvocationResult`;
the router reads it with AWS's response rules (`sluiceway.router.response`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


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
    stack_trace: tuple[str, ...] = field(default=(), compare=False)
    """Lambda's `stackTrace`: the handler's frames, innermost last, as its runtime formats them
    (empty for errors without one, such as a timeout)."""


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

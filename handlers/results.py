"""What calling a handler produced, typed the way Lambda reports it.

Every target (in-process, worker processes, HTTP, a Lambda ARN) answers with an `InvocationResult`;
the router reads it with AWS's response rules (`sluiceway.router.response`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio


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
    if type(result) is Returned:  # the common case, without `replace`'s generic machinery
        return Returned(result.payload, result.duration, request_id)
    if isinstance(result, InvokeFailure) or not request_id:
        return result
    return replace(result, request_id=request_id)


_HERE = Path(__file__).parent
_RUNTIME = (
    str(Path(asyncio.__file__).parent),
    str(Path(anyio.__file__).parent),
    str(Path(concurrent.futures.__file__).parent),
    threading.__file__,
    str(_HERE / "invoker.py"),
    str(_HERE / "environments.py"),
    str(_HERE / "worker.py"),
)
"""Where the frames that call a handler live: left out of its stack trace, as Lambda leaves out
its runtime's."""


def stack_trace(exc: BaseException) -> tuple[str, ...]:
    """Lambda's `stackTrace` for an exception a Python handler raised: its frames from the
    handler's own call on, each formatted as Python's traceback module (and Lambda) does."""
    frames = traceback.extract_tb(exc.__traceback__)
    first = 0
    while first < len(frames) and frames[first].filename.startswith(_RUNTIME):
        first += 1
    return tuple(traceback.format_list(frames[first:]))

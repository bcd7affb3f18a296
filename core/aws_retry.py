"""Retrying AWS calls that fail before anything reached a handler (throttles, 5xx, resets).

These failures never lose a record — nothing was taken from the source — so they are retried with
exponential backoff and full jitter, for ever where the caller cannot do without the call.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from botocore.exceptions import ClientError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_never,
    wait_exponential_jitter,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_PERMANENT_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "InvalidParameterValue",
        "ValidationException",
        "ReceiptHandleIsInvalid",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
    }
)


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "Unknown"))
    return type(exc).__name__


def is_retryable(exc: BaseException) -> bool:
    """Anything but a programming error or an answer that will never change."""
    if isinstance(exc, ClientError):
        return error_code(exc) not in _PERMANENT_CODES
    return isinstance(exc, Exception) and not isinstance(exc, (TypeError, KeyError, AttributeError))


async def call_with_retry(
    operation: Callable[..., Awaitable[T]],
    /,
    *args: Any,
    attempts: int | None = None,
    max_wait: float = 20.0,
    on_error: Callable[[BaseException], None] | None = None,
    retry_all: bool = False,
    **kwargs: Any,
) -> T:
    """Await `operation(*args, **kwargs)`, retrying transient errors (for ever when attempts is None).

    `retry_all` also retries answers that look permanent (a missing queue may be created, a policy
    fixed): pollers use it so a mapping heals by itself once the cause is gone.

    The first attempt runs bare: the retrying machinery costs more than a fast AWS call, so it is
    built only after a failure, with that failure replayed as its first attempt.
    """
    try:
        return await operation(*args, **kwargs)
    except Exception as exc:
        replay: list[Exception] = [exc]

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if exc is not None:
            if on_error is not None:
                on_error(exc)
            log.warning(
                "%s failed (%s), retry %d in %.1fs",
                getattr(operation, "__name__", "call"),
                error_code(exc),
                state.attempt_number,
                state.upcoming_sleep,
            )

    retrying = AsyncRetrying(
        stop=stop_never if attempts is None else stop_after_attempt(attempts),
        wait=wait_exponential_jitter(initial=0.1, max=max_wait),
        retry=retry_if_exception(
            lambda e: isinstance(e, Exception) and (retry_all or is_retryable(e))
        ),
        before_sleep=before_sleep,
        reraise=True,
    )

    async def attempt() -> T:
        if replay:
            raise replay.pop()
        return await operation(*args, **kwargs)

    return await retrying(attempt)

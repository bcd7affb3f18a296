"""An asynchronous invocation's event as it waits in the queue, and its invocation record (pure).

The record goes to an on-success or on-failure destination key for key as AWS sends it (recorded
shapes: tests/fixtures/aws-recorded/async-invocation.md): version, timestamp, requestContext
(requestId, functionArn with `$LATEST`, condition, approximateInvokeCount), requestPayload,
responseContext (statusCode, executedVersion, functionError on failure) and responsePayload.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import orjson
from sluiceway.handlers.results import FunctionError, InvocationResult, InvokeFailure, Returned
from sluiceway.router.failure_record import iso_millis

Condition = Literal["Success", "RetriesExhausted", "EventAgeExceeded"]
SUCCESS: Condition = "Success"
RETRIES_EXHAUSTED: Condition = "RetriesExhausted"
EVENT_AGE_EXCEEDED: Condition = "EventAgeExceeded"
EXECUTED_VERSION = "$LATEST"


@dataclass(frozen=True)
class AsyncEvent:
    """One accepted `Event` invoke: what it carries and how far it has got."""

    request_id: str
    function: str
    """The function's name (lowercase, as declared)."""
    payload: bytes
    """The request body as received (JSON, checked when accepted)."""
    received_at: float
    """Epoch seconds when it was accepted; its age counts from here."""
    attempts: int = 0
    """Invocations that reached the function (function errors count; throttles do not)."""
    system_retries: int = 0
    """Throttles and system errors so far, for the backoff (1 s doubling to 5 min)."""
    client_context: str | None = None
    """X-Amz-Client-Context as sent (base64 JSON)."""
    traceparent: str | None = None
    """The caller's W3C traceparent (or one converted from X-Amzn-Trace-Id)."""
    last_response: dict[str, Any] | None = None
    """The last invocation's responseContext and responsePayload, for an age-exceeded record."""
    receipt: Any = field(default=None, compare=False)
    """The store's handle on it (an SQS receipt handle); not part of the event."""

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "requestId": self.request_id,
                "function": self.function,
                "payload": self.payload.decode(),  # JSON, so UTF-8; SQS bodies are text
                "receivedAt": self.received_at,
                "attempts": self.attempts,
                "systemRetries": self.system_retries,
                "clientContext": self.client_context,
                "traceparent": self.traceparent,
                "lastResponse": self.last_response,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str, receipt: Any = None) -> AsyncEvent:
        data = orjson.loads(raw)
        return cls(
            request_id=data["requestId"],
            function=data["function"],
            payload=str(data["payload"]).encode(),
            received_at=float(data["receivedAt"]),
            attempts=int(data.get("attempts", 0)),
            system_retries=int(data.get("systemRetries", 0)),
            client_context=data.get("clientContext"),
            traceparent=data.get("traceparent"),
            last_response=data.get("lastResponse"),
            receipt=receipt,
        )

    def age(self, now: float) -> float:
        return max(0.0, now - self.received_at)

    def request_payload(self) -> Any:
        try:
            return orjson.loads(self.payload)
        except orjson.JSONDecodeError:
            return self.payload.decode(errors="replace")

    def after(self, result: InvocationResult) -> AsyncEvent:
        """The event once `result` is known: one more attempt, or one more system retry."""
        if isinstance(result, InvokeFailure):
            return replace(self, system_retries=self.system_retries + 1)
        return replace(
            self, attempts=self.attempts + 1, last_response=response_of(result, self.request_id)
        )


def error_payload(error: FunctionError, request_id: str) -> dict[str, Any]:
    """Lambda's error document: errorMessage, errorType, requestId, stackTrace."""
    return {
        "errorMessage": error.message,
        "errorType": error.error_type,
        "requestId": request_id,
        "stackTrace": list(error.stack_trace),
    }


def response_of(result: Returned | FunctionError, request_id: str) -> dict[str, Any]:
    """responseContext and responsePayload of an invocation that reached the function."""
    context: dict[str, Any] = {"statusCode": 200, "executedVersion": EXECUTED_VERSION}
    if isinstance(result, FunctionError):
        context["functionError"] = result.function_error
        payload: Any = error_payload(result, request_id)
    else:
        payload = result.payload
        if isinstance(payload, bytes):
            payload = payload.decode(errors="replace")
    return {"responseContext": context, "responsePayload": payload}


def invocation_record(
    event: AsyncEvent, *, function_arn: str, condition: Condition, now: float
) -> dict[str, Any]:
    """The record for `event`, in AWS's key order; `last_response` supplies the response part."""
    record: dict[str, Any] = {
        "version": "1.0",
        "timestamp": iso_millis(now),
        "requestContext": {
            "requestId": event.request_id,
            "functionArn": f"{function_arn}:{EXECUTED_VERSION}",
            "condition": condition,
            "approximateInvokeCount": event.attempts,
        },
        "requestPayload": event.request_payload(),
    }
    if event.last_response is not None:
        record.update(event.last_response)
    return record


def error_message(event: AsyncEvent, fallback: str) -> str:
    """The last error's message, for a dead-letter message's ErrorMessage attribute."""
    payload = (event.last_response or {}).get("responsePayload")
    if isinstance(payload, dict) and isinstance(payload.get("errorMessage"), str):
        return str(payload["errorMessage"])
    return fallback

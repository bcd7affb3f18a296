"""AWS's rules for what an invocation result means for the batch (ReportBatchItemFailures).

Lambda ignores the returned value unless ReportBatchItemFailures is on. With it on, a missing,
null or empty `batchItemFailures` is complete success; a list of `{"itemIdentifier": id}` fails
just those records; any malformed response fails the whole batch — the safe reading, since AWS
would rather redeliver than drop. The same rules serve SQS (message ids) and streams (sequence
numbers); an identifier that is not in the batch fails the whole batch for both (AWS documents
this for SQS only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sluiceway.handlers.results import FunctionError, InvocationResult, InvokeFailure, Returned
from sluiceway.router.outcomes import BatchFailed, BatchSucceeded, Outcome, PartialFailure

_FAILURES = "batchItemFailures"
_ID = "itemIdentifier"


class _Invalid(Exception):
    """The partial batch response is malformed; the message says how."""


def interpret(
    result: InvocationResult, item_ids: Sequence[str], report_batch_item_failures: bool
) -> Outcome:
    """Apply AWS's response rules to one invocation of the batch whose ids are `item_ids`."""
    if isinstance(result, FunctionError):
        return BatchFailed(f"function error {result.error_type}: {result.message}", result)
    if isinstance(result, InvokeFailure):
        return BatchFailed(result.reason, result)
    if not report_batch_item_failures:
        return BatchSucceeded()
    try:
        failed = _failed_ids(result, item_ids)
    except _Invalid as e:
        return BatchFailed(f"invalid partial batch response: {e}")
    return PartialFailure(failed) if failed else BatchSucceeded()


def _failed_ids(result: Returned, item_ids: Sequence[str]) -> tuple[str, ...]:
    payload = result.payload
    if payload is None:
        return ()
    if isinstance(payload, bytes):
        raise _Invalid("the response is not valid JSON")
    if not isinstance(payload, dict):
        raise _Invalid(f"the response is a JSON {_json_type(payload)}, not an object")
    failures = payload.get(_FAILURES)
    if failures is None:
        return ()
    if not isinstance(failures, list):
        raise _Invalid(f"{_FAILURES} is a JSON {_json_type(failures)}, not an array")
    known = set(item_ids)
    failed: dict[str, None] = {}  # insertion-ordered set
    for index, entry in enumerate(failures):
        failed[_item_id(entry, f"{_FAILURES}[{index}]", known)] = None
    return tuple(failed)


def _item_id(entry: Any, where: str, known: set[str]) -> str:
    if not isinstance(entry, dict):
        raise _Invalid(f"{where} is a JSON {_json_type(entry)}, not an object")
    if _ID not in entry:
        keys = ", ".join(repr(k) for k in entry) or "none"
        raise _Invalid(f"{where} has no {_ID!r} key (keys: {keys})")
    item_id = entry[_ID]
    if item_id is None:
        raise _Invalid(f"{where}.{_ID} is null")
    if not isinstance(item_id, str):
        raise _Invalid(f"{where}.{_ID} is a JSON {_json_type(item_id)}, not a string")
    if item_id == "":
        raise _Invalid(f"{where}.{_ID} is an empty string")
    if item_id not in known:
        raise _Invalid(f"{where}.{_ID} {item_id!r} is not in the batch")
    return item_id


def _json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for messages a user can act on."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__

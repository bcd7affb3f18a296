"""AWS's partial batch response rules, case by case (AWS-SEMANTICS §1.5 and §2.6)."""

from __future__ import annotations

from typing import Any

import pytest
from sluiceway.handlers.results import FunctionError, InvokeFailure, Returned
from sluiceway.router.outcomes import BatchFailed, BatchSucceeded, PartialFailure
from sluiceway.router.response import interpret

IDS = ["m1", "m2", "m3"]


def failures(*ids: Any) -> dict[str, Any]:
    return {"batchItemFailures": [{"itemIdentifier": i} for i in ids]}


# ---------------------------------------------------------------- feature on: complete success


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(None, id="null response"),
        pytest.param({}, id="empty response"),
        pytest.param({"batchItemFailures": None}, id="null list"),
        pytest.param({"batchItemFailures": []}, id="empty list"),
        pytest.param({"statusCode": 200}, id="object without batchItemFailures"),
    ],
)
def test_these_responses_mean_every_record_succeeded(payload: Any) -> None:
    assert interpret(Returned(payload), IDS, True) == BatchSucceeded()


# ---------------------------------------------------------------- feature on: partial failure


@pytest.mark.parametrize(
    ("payload", "failed"),
    [
        pytest.param(failures("m2"), ("m2",), id="one id"),
        pytest.param(failures("m3", "m1"), ("m3", "m1"), id="ids in the order returned"),
        pytest.param(failures("m2", "m1", "m2"), ("m2", "m1"), id="duplicates once"),
        pytest.param(
            {"batchItemFailures": [{"itemIdentifier": "m1", "reason": "x"}], "other": 1},
            ("m1",),
            id="extra keys ignored",
        ),
    ],
)
def test_listed_ids_fail_and_the_rest_succeed(payload: Any, failed: tuple[str, ...]) -> None:
    assert interpret(Returned(payload), IDS, True) == PartialFailure(failed)


def test_stream_sequence_numbers_are_item_ids_too() -> None:
    ids = ["49590338271490256608559692538361571095921575989136588898", "4959033827149025660855969"]
    result = Returned(failures(ids[1]))
    assert interpret(result, ids, True) == PartialFailure((ids[1],))


# ---------------------------------------------------------------- feature on: complete failure


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param(
            failures(""),
            "batchItemFailures[0].itemIdentifier is an empty string",
            id="empty-string id",
        ),
        pytest.param(failures(None), "batchItemFailures[0].itemIdentifier is null", id="null id"),
        pytest.param(
            {"batchItemFailures": [{"itemId": "m1"}]},
            "batchItemFailures[0] has no 'itemIdentifier' key (keys: 'itemId')",
            id="wrong key name",
        ),
        pytest.param(
            {"batchItemFailures": [{}]},
            "batchItemFailures[0] has no 'itemIdentifier' key (keys: none)",
            id="no key at all",
        ),
        pytest.param(
            failures("m1", "m9"),
            "batchItemFailures[1].itemIdentifier 'm9' is not in the batch",
            id="id not in the batch",
        ),
        pytest.param(
            failures(2),
            "batchItemFailures[0].itemIdentifier is a JSON number, not a string",
            id="non-string id",
        ),
        pytest.param(
            {"batchItemFailures": [["m1"]]},
            "batchItemFailures[0] is a JSON array, not an object",
            id="entry not object",
        ),
        pytest.param(
            {"batchItemFailures": "m1"},
            "batchItemFailures is a JSON string, not an array",
            id="list is a string",
        ),
        pytest.param(
            {"batchItemFailures": {"itemIdentifier": "m1"}},
            "batchItemFailures is a JSON object, not an array",
            id="list is an object",
        ),
        pytest.param(
            '{"batchItemFailures": []}',
            "the response is a JSON string, not an object",
            id="JSON text returned as a string",
        ),
        pytest.param(
            [{"itemIdentifier": "m1"}],
            "the response is a JSON array, not an object",
            id="bare list",
        ),
        pytest.param(True, "the response is a JSON boolean, not an object", id="boolean"),
        pytest.param(b"not json", "the response is not valid JSON", id="invalid JSON"),
    ],
)
def test_malformed_responses_fail_the_whole_batch(payload: Any, reason: str) -> None:
    outcome = interpret(Returned(payload), IDS, True)
    assert outcome == BatchFailed(f"invalid partial batch response: {reason}")
    assert outcome.reached_handler


# ---------------------------------------------------------------- feature off


@pytest.mark.parametrize(
    "payload",
    [None, {}, failures("m1"), failures(""), {"batchItemFailures": "junk"}, "text", b"not json"],
)
def test_without_report_batch_item_failures_any_returned_value_is_success(payload: Any) -> None:
    assert interpret(Returned(payload), IDS, False) == BatchSucceeded()


# ---------------------------------------------------------------- errors, whatever the feature


@pytest.mark.parametrize("report", [True, False])
def test_a_function_error_fails_the_whole_batch(report: bool) -> None:
    error = FunctionError("ValueError", "order 7 has no customer")
    outcome = interpret(error, IDS, report)
    assert outcome == BatchFailed("function error ValueError: order 7 has no customer", error)
    assert outcome.reached_handler


@pytest.mark.parametrize("report", [True, False])
def test_an_invoke_failure_fails_the_batch_without_reaching_the_handler(report: bool) -> None:
    failure = InvokeFailure("Rate exceeded", throttled=True)
    outcome = interpret(failure, IDS, report)
    assert outcome == BatchFailed("Rate exceeded", failure)
    assert not outcome.reached_handler

"""The handler's copy of an event: what a JSON round trip gives, sharing only immutable values."""

from __future__ import annotations

import base64
import datetime
from typing import Any

import orjson
import pytest
from sluiceway.handlers.event_copy import handler_copy

from tests.support.recorded import SHAPES


def _events() -> dict[str, dict[str, Any]]:
    kinesis = SHAPES["kinesis_record_from_s3_payload_native_key_order"]
    sqs = {
        "messageId": "m1",
        "body": "x" * 100,
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {"a": {"stringValue": "v", "stringListValues": [], "dataType": "S"}},
    }
    window = {
        "Records": [kinesis],
        "window": {"start": "2024-01-01T00:00:00Z", "end": "2024-01-01T00:01:00Z"},
        "state": {"n": 1, "nested": [[1, 2.5], {"deep": [True, None]}]},
        "isFinalInvokeForWindow": False,
        "shardId": "shardId-0",
    }
    return {
        "kinesis": {"Records": [kinesis, {**kinesis, "kinesis": dict(kinesis["kinesis"])}]},
        "sqs": {"Records": [sqs] * 3},  # the same dict thrice: three copies, as JSON makes
        "window": window,
        "empty": {},
    }


def _containers(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [value, *(c for v in value.values() for c in _containers(v))]
    if isinstance(value, list):
        return [value, *(c for v in value for c in _containers(v))]
    return []


@pytest.mark.parametrize("name", list(_events()))
def test_the_copy_is_the_json_round_trip_with_no_container_shared(name: str) -> None:
    event = _events()[name]
    copied = handler_copy(event)
    assert copied == orjson.loads(orjson.dumps(event))
    assert list(copied) == list(event)  # key order kept
    theirs = {id(c) for c in _containers(event)}
    assert not [c for c in _containers(copied) if id(c) in theirs]


def test_strings_are_shared_not_copied() -> None:
    data = base64.b64encode(b"\x00" * 1_000_000).decode()
    event = {"Records": [{"kinesis": {"data": data, "n": 10**30}}]}
    copied = handler_copy(event)
    assert copied["Records"][0]["kinesis"]["data"] is data
    assert copied["Records"][0]["kinesis"]["n"] == 10**30  # wider than JSON's round trip allows


def test_changing_the_copy_in_place_leaves_the_event_alone() -> None:
    event = _events()["window"]
    before = orjson.dumps(event)
    copied = handler_copy(event)
    copied["Records"][0]["kinesis"]["data"] = "changed"
    del copied["Records"][0]["eventID"]
    copied["Records"].append({"extra": True})
    copied["state"]["nested"][0].append(3)
    copied["state"]["nested"][1]["deep"].clear()
    copied["window"]["start"] = None
    assert orjson.dumps(event) == before


def test_other_values_become_what_json_makes_of_them() -> None:
    class Label(str):
        pass

    moment = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    event = {"at": moment, "pair": (1, {"a": [2]}), "label": Label("x")}
    copied = handler_copy(event)
    assert copied == {"at": "2024-01-02T03:04:05+00:00", "pair": [1, {"a": [2]}], "label": "x"}
    assert type(copied["label"]) is str
    assert copied["pair"][1] is not event["pair"][1]

"""FilterCriteria behaviour, table by table, from the Lambda event filtering docs."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from sluiceway.config import filter_patterns as filters
from sluiceway.config.filter_patterns import (
    FilterPatternError,
    RecordFilter,
    SourceKind,
    compile_filter_criteria,
    compile_pattern,
)

ABSENT = object()


def sqs(body: str = "Test message.", **fields: Any) -> dict[str, Any]:
    return {
        "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1545082649183"},
        "messageAttributes": {"color": {"stringValue": "red", "dataType": "String"}},
        "eventSource": "aws:sqs",
        "awsRegion": "us-east-2",
        **fields,
    }


def kinesis(data: Any, **fields: Any) -> dict[str, Any]:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": "1",
            "sequenceNumber": "49590338271490256608559692538361571095921575989136588898",
            "data": base64.b64encode(raw).decode(),
            "approximateArrivalTimestamp": 1545084650.987,
            **fields,
        },
        "eventSource": "aws:kinesis",
        "eventName": "aws:kinesis:record",
        "awsRegion": "us-east-2",
    }


def dynamodb(event_name: str = "INSERT", **stream: Any) -> dict[str, Any]:
    return {
        "eventID": "1",
        "eventName": event_name,
        "eventSource": "aws:dynamodb",
        "dynamodb": stream,
    }


def matches(pattern: Any, record: dict[str, Any], kind: SourceKind = "sqs") -> bool:
    text = pattern if isinstance(pattern, str) else json.dumps(pattern)
    return compile_pattern(text, kind).matches(record)


def with_field(value: Any) -> dict[str, Any]:
    """An SQS record whose JSON body holds `x` (or not, for ABSENT)."""
    return sqs(json.dumps({} if value is ABSENT else {"x": value}))


OPERATORS = [
    # (id, values for field x, value of x in the record, matches)
    ("null matches null", [None], None, True),
    ("null does not match the string null", [None], "null", False),
    ("null does not match a missing field", [None], ABSENT, False),
    ("empty matches empty string", [""], "", True),
    ("empty does not match a space", [""], " ", False),
    ("equals is exact", ["Alice"], "Alice", True),
    ("equals is case sensitive", ["Alice"], "alice", False),
    ("equals needs the field", ["Alice"], ABSENT, False),
    ("equals number", [100], 100, True),
    ("equals number is not its string", [100], "100", False),
    ("equals number keeps its form: 300 is not 300.0", [300], 300.0, False),
    ("equals float", [1.5], 1.5, True),
    ("equals true", [True], True, True),
    ("equals true is not 1", [True], 1, False),
    ("values are ORed", ["Credit", "Debit"], "Debit", True),
    ("values are ORed, none match", ["Credit", "Debit"], "Cash", False),
    ("equals-ignore-case", [{"equals-ignore-case": "alice"}], "ALICE", True),
    ("equals-ignore-case other word", [{"equals-ignore-case": "alice"}], "alicia", False),
    ("equals-ignore-case skips numbers", [{"equals-ignore-case": "5"}], 5, False),
    ("prefix", [{"prefix": "us-"}], "us-east-1", True),
    ("prefix mismatch", [{"prefix": "us-"}], "eu-west-1", False),
    ("prefix skips numbers", [{"prefix": "1"}], 123, False),
    ("suffix", [{"suffix": ".png"}], "cat.png", True),
    ("suffix is case sensitive", [{"suffix": ".png"}], "cat.PNG", False),
    ("anything-but list", [{"anything-but": ["Raining"]}], "Sunny", True),
    ("anything-but list excludes", [{"anything-but": ["Raining", "Snow"]}], "Snow", False),
    ("anything-but single string", [{"anything-but": "Raining"}], "Raining", False),
    ("anything-but number", [{"anything-but": 123}], 124, True),
    ("anything-but number excludes", [{"anything-but": [123, 456]}], 456, False),
    ("anything-but needs the field", [{"anything-but": ["Raining"]}], ABSENT, False),
    ("numeric equals", [{"numeric": ["=", 100]}], 100, True),
    ("numeric equals compares value", [{"numeric": ["=", 100]}], 100.0, True),
    ("numeric equals mismatch", [{"numeric": ["=", 100]}], 101, False),
    ("numeric ignores numeric strings", [{"numeric": ["=", 100]}], "100", False),
    ("numeric less than", [{"numeric": ["<", 0]}], -1, True),
    ("numeric less than is strict", [{"numeric": ["<", 0]}], 0, False),
    ("numeric at most", [{"numeric": ["<=", 0]}], 0, True),
    ("numeric at least", [{"numeric": [">=", 5]}], 4.99, False),
    ("numeric range upper bound", [{"numeric": [">", 10, "<=", 20]}], 20, True),
    ("numeric range lower bound", [{"numeric": [">", 10, "<=", 20]}], 10, False),
    ("numeric range float", [{"numeric": [">", 10, "<=", 20]}], 15.5, True),
    ("numeric range above", [{"numeric": [">", 10, "<=", 20]}], 21, False),
    ("numeric range upper bound first", [{"numeric": ["<", 5, ">=", 0]}], 0, True),
    ("exists true", [{"exists": True}], "x", True),
    ("exists true on null", [{"exists": True}], None, True),
    ("exists true missing", [{"exists": True}], ABSENT, False),
    ("exists false missing", [{"exists": False}], ABSENT, True),
    ("exists false present", [{"exists": False}], "x", False),
    ("array: any element equals", ["a"], ["b", "a"], True),
    ("array: no element equals", ["a"], ["b", "c"], False),
    ("array: prefix on any element", [{"prefix": "a"}], ["xa", "ab"], True),
    ("array: numeric on any element", [{"numeric": [">", 10]}], [1, 50], True),
    ("array: anything-but passes another element", [{"anything-but": "a"}], ["a", "b"], True),
    ("array: nested arrays flatten", ["a"], [["b"], ["a"]], True),
]


@pytest.mark.parametrize(
    ("values", "value", "expected"),
    [pytest.param(values, value, expected, id=name) for name, values, value, expected in OPERATORS],
)
def test_operator(values: list[Any], value: Any, expected: bool) -> None:
    assert matches({"body": {"x": values}}, with_field(value)) is expected


NESTED = [
    ("nested field", {"a": {"b": ["x"]}}, {"a": {"b": "x"}}, True),
    ("fields are ANDed", {"a": ["1"], "b": ["2"]}, {"a": "1", "b": "2"}, True),
    ("fields are ANDed, one fails", {"a": ["1"], "b": ["2"]}, {"a": "1", "b": "3"}, False),
    ("every named field must exist", {"a": ["1"], "b": [{"anything-but": "x"}]}, {"a": "1"}, False),
    ("object pattern needs an object", {"a": {"b": ["x"]}}, {"a": "x"}, False),
    ("leaf pattern skips an object", {"a": ["x"]}, {"a": {"b": "x"}}, False),
    (
        "exists never matches an intermediate node",
        {"person": {"address": [{"exists": True}]}},
        {"person": {"name": "John Doe", "address": {"street": "123 Main St", "city": "Anytown"}}},
        False,
    ),
    (
        "exists matches a leaf below it",
        {"person": {"address": {"city": [{"exists": True}]}}},
        {"person": {"address": {"street": "123 Main St", "city": "Anytown"}}},
        True,
    ),
    (
        "array of objects: any object matches",
        {"items": {"sku": ["A"]}},
        {"items": [{"sku": "B"}, {"sku": "A"}]},
        True,
    ),
    (
        "array of objects: fields match within one object",
        {"items": {"sku": ["A"], "qty": [2]}},
        {"items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 2}]},
        False,
    ),
    (
        "$or across fields, first",
        {"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]},
        {"Location": "New York", "Day": "Friday"},
        True,
    ),
    (
        "$or across fields, second",
        {"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]},
        {"Location": "Boston", "Day": "Monday"},
        True,
    ),
    (
        "$or across fields, neither",
        {"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]},
        {"Location": "Boston", "Day": "Friday"},
        False,
    ),
    (
        "$or is ANDed with its siblings",
        {"kind": ["order"], "$or": [{"a": ["1"]}, {"b": ["2"]}]},
        {"kind": "refund", "a": "1"},
        False,
    ),
    (
        "$or nested in an object and in another $or",
        {"c": {"$or": [{"$or": [{"a": ["1"]}, {"b": ["2"]}]}, {"d": ["4"]}]}},
        {"c": {"b": "2"}},
        True,
    ),
]


@pytest.mark.parametrize(
    ("pattern", "body", "expected"),
    [pytest.param(pattern, body, expected, id=name) for name, pattern, body, expected in NESTED],
)
def test_structure(pattern: dict[str, Any], body: dict[str, Any], expected: bool) -> None:
    assert matches({"body": pattern}, sqs(json.dumps(body))) is expected


def test_repeated_leaf_key_keeps_the_last_values() -> None:
    pattern = '{"body": {"x": ["a"], "x": ["b"]}}'
    assert matches(pattern, with_field("b"))
    assert not matches(pattern, with_field("a"))


SQS_BODY = [
    ("plain pattern on plain body", {"body": ["hello"]}, "hello", True),
    ("plain pattern on other plain body", {"body": ["hello"]}, "goodbye", False),
    ("plain prefix on plain body", {"body": [{"prefix": "hel"}]}, "hello", True),
    ("plain pattern never matches a JSON body", {"body": ['{"a": 1}']}, '{"a": 1}', False),
    ("plain prefix never matches a JSON body", {"body": [{"prefix": "{"}]}, '{"a": 1}', False),
    ("JSON pattern never matches a plain body", {"body": {"a": ["1"]}}, "a=1", False),
    ("JSON pattern on a JSON body", {"body": {"a": [1]}}, '{"a": 1}', True),
    ("JSON pattern on another JSON body", {"body": {"a": [1]}}, '{"a": 2}', False),
    ("JSON body may start with whitespace", {"body": {"a": [1]}}, '\n {"a": 1}', True),
    ("broken JSON is plain text", {"body": ["{oops"]}, "{oops", True),
    ("broken JSON never matches a JSON pattern", {"body": {"a": [1]}}, '{"a": 1', False),
    (
        "integers wider than 64 bits",
        {"body": {"id": [{"numeric": [">", 0]}]}},
        '{"id": 123456789012345678901234567890}',
        True,
    ),
    ("metadata only, plain body", {"attributes": {"ApproximateReceiveCount": ["1"]}}, "hi", True),
    ("metadata only, JSON body", {"attributes": {"ApproximateReceiveCount": ["1"]}}, "{}", True),
    ("message attributes", {"messageAttributes": {"color": {"stringValue": ["red"]}}}, "x", True),
    (
        "doc example: RequestCode",
        {"body": {"RequestCode": ["BBBB"]}},
        '{\n "RecordNumber": 1234,\n "RequestCode": "BBBB"\n}',
        True,
    ),
]


@pytest.mark.parametrize(
    ("pattern", "body", "expected"),
    [pytest.param(pattern, body, expected, id=name) for name, pattern, body, expected in SQS_BODY],
)
def test_sqs_body(pattern: dict[str, Any], body: str, expected: bool) -> None:
    assert matches(pattern, sqs(body)) is expected


def test_json_pattern_never_matches_plain_body() -> None:
    assert not matches({"body": {"City": ["Seattle"]}}, sqs("City=Seattle"))


ORDER = {"record": 12345, "order": {"type": "buy", "stock": "ANYCO", "quantity": 1000}}

KINESIS = [
    ("doc example: order type", {"data": {"order": {"type": ["buy"]}}}, kinesis(ORDER), True),
    ("data mismatch", {"data": {"order": {"type": ["sell"]}}}, kinesis(ORDER), False),
    (
        "numeric on data",
        {"data": {"order": {"quantity": [{"numeric": [">=", 1000]}]}}},
        kinesis(ORDER),
        True,
    ),
    ("non-JSON data is dropped", {"data": {"a": [{"exists": False}]}}, kinesis(b"hi"), False),
    (
        "data that is not base64 is dropped",
        {"data": {"a": [{"exists": False}]}},
        {"kinesis": {"data": "%%%"}},
        False,
    ),
    (
        "partitionKey and data (2023 doc example)",
        {"partitionKey": ["1"], "data": {"Location": ["Los Angeles"]}},
        kinesis({"Location": "Los Angeles"}),
        True,
    ),
    (
        "partitionKey mismatch",
        {"partitionKey": ["2"], "data": {"Location": ["Los Angeles"]}},
        kinesis({"Location": "Los Angeles"}),
        False,
    ),
    ("metadata without data", {"partitionKey": [{"prefix": "1"}]}, kinesis(b"not json"), True),
    ("record metadata", {"eventName": ["aws:kinesis:record"]}, kinesis(ORDER), True),
]


@pytest.mark.parametrize(
    ("pattern", "record", "expected"),
    [
        pytest.param(pattern, record, expected, id=name)
        for name, pattern, record, expected in KINESIS
    ],
)
def test_kinesis(pattern: dict[str, Any], record: dict[str, Any], expected: bool) -> None:
    assert matches(pattern, record, "kinesis") is expected


CUSTOMER = {
    "Keys": {"CustomerName": {"S": "AnyCompany Industries"}},
    "NewImage": {
        "AccountManager": {"S": "Pat Candella"},
        "PaymentTerms": {"S": "60 days"},
        "CustomerName": {"S": "AnyCompany Industries"},
        "Id": {"N": "101"},
        "Active": {"BOOL": True},
        "Organizations": {"L": [{"S": "Sales"}, {"S": "Marketing"}]},
    },
    "OldImage": {"AccountManager": {"S": "Terry Whitlock"}},
    "StreamViewType": "NEW_AND_OLD_IMAGES",
}
MANAGER_WAS_TERRY = (
    '{ "dynamodb" : { "NewImage" : { "AccountManager" : { "S" : [ "Pat Candella" ] } } },'
    '  "dynamodb" : { "OldImage" : { "AccountManager" : { "S" : [ "Terry Whitlock" ] } } } }'
)

DYNAMODB = [
    ("table key", {"dynamodb": {"Keys": {"CustomerName": {"S": ["AnyCompany Industries"]}}}}, True),
    (
        "attribute in new image, values ORed",
        {
            "dynamodb": {
                "NewImage": {"AccountManager": {"S": ["Shirley Rodriguez", "Pat Candella"]}}
            }
        },
        True,
    ),
    ("numbers are matched as strings", {"dynamodb": {"NewImage": {"Id": {"N": ["101"]}}}}, True),
    ("a JSON number is not the N string", {"dynamodb": {"NewImage": {"Id": {"N": [101]}}}}, False),
    (
        "eventName and a BOOL attribute",
        {"eventName": ["INSERT"], "dynamodb": {"NewImage": {"Active": {"BOOL": [True]}}}},
        True,
    ),
    ("eventName mismatch", {"eventName": ["REMOVE"]}, False),
    ("repeated dynamodb keys are ANDed (doc example)", MANAGER_WAS_TERRY, True),
    (
        "exists on an intermediate list never matches",
        {"dynamodb": {"NewImage": {"Organizations": [{"exists": True}]}}},
        False,
    ),
    (
        "exists on the list's leaves",
        {"dynamodb": {"NewImage": {"Organizations": {"L": {"S": [{"exists": True}]}}}}},
        True,
    ),
    (
        "a list element",
        {"dynamodb": {"NewImage": {"Organizations": {"L": {"S": ["Sales"]}}}}},
        True,
    ),
]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [pytest.param(pattern, expected, id=name) for name, pattern, expected in DYNAMODB],
)
def test_dynamodb(pattern: Any, expected: bool) -> None:
    assert matches(pattern, dynamodb(**CUSTOMER), "dynamodb") is expected


def test_repeated_dynamodb_keys_need_both_images() -> None:
    record = dynamodb(**{**CUSTOMER, "OldImage": {"AccountManager": {"S": "Someone Else"}}})
    assert not matches(MANAGER_WAS_TERRY, record, "dynamodb")


REJECTED: list[tuple[str, SourceKind, Any, str]] = [
    ("not JSON", "sqs", "body = hello", "not valid JSON"),
    ("NaN is not JSON", "sqs", '{"a": [NaN]}', "not valid JSON"),
    ("not a string", "sqs", None, "JSON string"),
    ("an array", "sqs", "[1]", "JSON object"),
    ("a string", "sqs", '"hello"', "JSON object"),
    ("empty pattern", "sqs", "{}", "at least one field"),
    ("empty nested object", "sqs", '{"a": {}}', "at least one field"),
    ("leaf that is a string", "sqs", '{"a": "x"}', "array of values"),
    ("leaf that is a number", "sqs", '{"a": 5}', "array of values"),
    ("empty array of values", "sqs", '{"a": []}', "empty"),
    ("array inside the values", "sqs", '{"a": [["x"]]}', "another array"),
    ("wildcard", "sqs", '{"a": [{"wildcard": "x*"}]}', "not supported"),
    ("cidr", "sqs", '{"ip": [{"cidr": "10.0.0.0/24"}]}', "not supported"),
    ("unknown operator", "sqs", '{"a": [{"contains": "x"}]}', "unknown operator"),
    (
        "two operators in one object",
        "sqs",
        '{"a": [{"prefix": "a", "suffix": "b"}]}',
        "exactly one",
    ),
    ("prefix ignoring case", "sqs", '{"a": [{"prefix": {"equals-ignore-case": "x"}}]}', "string"),
    ("suffix ignoring case", "sqs", '{"a": [{"suffix": {"equals-ignore-case": "x"}}]}', "string"),
    ("anything-but prefix", "sqs", '{"a": [{"anything-but": {"prefix": "x"}}]}', "anything-but"),
    ("anything-but suffix", "sqs", '{"a": [{"anything-but": {"suffix": "x"}}]}', "anything-but"),
    (
        "anything-but ignoring case",
        "sqs",
        '{"a": [{"anything-but": {"equals-ignore-case": "x"}}]}',
        "anything-but",
    ),
    ("anything-but wildcard", "sqs", '{"a": [{"anything-but": {"wildcard": "x*"}}]}', "wildcard"),
    ("anything-but empty list", "sqs", '{"a": [{"anything-but": []}]}', "anything-but"),
    ("anything-but mixed list", "sqs", '{"a": [{"anything-but": ["x", 1]}]}', "only strings"),
    ("anything-but null", "sqs", '{"a": [{"anything-but": null}]}', "anything-but"),
    ("exists with a string", "sqs", '{"a": [{"exists": "yes"}]}', "true or false"),
    ("numeric not a list", "sqs", '{"a": [{"numeric": 5}]}', "numeric"),
    ("numeric of three", "sqs", '{"a": [{"numeric": [">", 1, "<"]}]}', "numeric"),
    ("numeric unknown op", "sqs", '{"a": [{"numeric": ["!=", 1]}]}', "numeric"),
    ("numeric string bound", "sqs", '{"a": [{"numeric": [">", "1"]}]}', "numeric"),
    ("numeric two lower bounds", "sqs", '{"a": [{"numeric": [">", 1, ">=", 2]}]}', "numeric"),
    ("numeric equals in a range", "sqs", '{"a": [{"numeric": ["=", 1, "<", 2]}]}', "numeric"),
    ("numeric empty range", "sqs", '{"a": [{"numeric": [">", 5, "<", 1]}]}', "numeric"),
    ("$or not an array", "sqs", '{"$or": {"a": ["1"]}}', "$or"),
    ("$or empty", "sqs", '{"$or": []}', "$or"),
    ("$or of values", "sqs", '{"$or": [["1"]]}', "$or"),
    ("too long", "sqs", json.dumps({"a": ["x" * 4096]}), "4096"),
    (
        "numeric on DynamoDB data",
        "dynamodb",
        '{"dynamodb": {"NewImage": {"Id": {"N": [{"numeric": [">", 100]}]}}}}',
        "DynamoDB",
    ),
    ("numeric anywhere on DynamoDB", "dynamodb", '{"x": [{"numeric": [">", 1]}]}', "DynamoDB"),
    ("plain pattern for DynamoDB data", "dynamodb", '{"dynamodb": ["x"]}', "JSON object"),
    ("plain pattern for Kinesis data", "kinesis", '{"data": ["hello"]}', "JSON object"),
    ("prefix on Kinesis data", "kinesis", '{"data": [{"prefix": "x"}]}', "JSON object"),
    ("Kinesis fields under kinesis", "kinesis", '{"kinesis": {"partitionKey": ["1"]}}', "directly"),
    ("SQS body that is a number", "sqs", '{"body": 5}', "array of values"),
]


@pytest.mark.parametrize(
    ("kind", "pattern", "message"),
    [pytest.param(kind, pattern, message, id=name) for name, kind, pattern, message in REJECTED],
)
def test_rejected_pattern(kind: SourceKind, pattern: Any, message: str) -> None:
    with pytest.raises(FilterPatternError, match=message.replace("$", r"\$")):
        compile_pattern(pattern, kind)


def test_error_names_the_field_path() -> None:
    with pytest.raises(FilterPatternError, match=r'"body\.order\.type"'):
        compile_pattern('{"body": {"order": {"type": "buy"}}}', "sqs")


@pytest.mark.parametrize("criteria", [None, {}, {"Filters": []}])
def test_no_criteria_means_no_filter(criteria: dict[str, Any] | None) -> None:
    assert compile_filter_criteria(criteria, "sqs") is None


def criteria(*patterns: dict[str, Any]) -> dict[str, Any]:
    return {"Filters": [{"Pattern": json.dumps(p)} for p in patterns]}


def test_filters_are_ored() -> None:
    record_filter = compile_filter_criteria(criteria({"a": ["1"]}, {"b": ["2"]}), "sqs")
    assert isinstance(record_filter, RecordFilter)
    assert record_filter.matches(sqs(b="2"))
    assert record_filter.matches(sqs(a="1"))
    assert not record_filter.matches(sqs(a="2", b="1"))


def test_at_most_five_filters() -> None:
    five = criteria(*({"a": [str(i)]} for i in range(5)))
    assert compile_filter_criteria(five, "sqs") is not None
    six = criteria(*({"a": [str(i)]} for i in range(6)))
    with pytest.raises(FilterPatternError, match="limit is 5"):
        compile_filter_criteria(six, "sqs")
    assert compile_filter_criteria(six, "sqs", max_filters=10) is not None


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"filters": []}, 'only "Filters"'),
        ({"Filters": {"Pattern": "{}"}}, "must be a list"),
        ({"Filters": [{"pattern": "{}"}]}, "filter 1"),
        ({"Filters": [{"Pattern": '{"a": ["1"]}'}, {"Pattern": '{"a": "1"}'}]}, "filter 2: "),
    ],
)
def test_rejected_criteria(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(FilterPatternError, match=message):
        compile_filter_criteria(bad, "sqs")


@pytest.fixture
def parse_count(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    parse = filters._parse_json

    def counting(text: Any) -> Any:
        calls[0] += 1
        return parse(text)

    monkeypatch.setattr(filters, "_parse_json", counting)
    return calls


def test_body_is_parsed_once_for_all_filters(parse_count: list[int]) -> None:
    patterns = ({"body": {"a": ["x"]}}, {"body": {"b": ["y"]}}, {"body": ["plain"]})
    record_filter = compile_filter_criteria(criteria(*patterns), "sqs")
    assert record_filter is not None
    assert not record_filter.matches(sqs('{"a": "no"}'))
    assert parse_count == [1]


def test_kinesis_data_is_decoded_once_for_all_filters(parse_count: list[int]) -> None:
    patterns = ({"data": {"a": ["x"]}}, {"data": {"b": ["y"]}})
    record_filter = compile_filter_criteria(criteria(*patterns), "kinesis")
    assert record_filter is not None
    assert record_filter.matches(kinesis({"b": "y"}))
    assert parse_count == [1]


def test_body_is_not_parsed_when_no_pattern_names_it(parse_count: list[int]) -> None:
    record_filter = compile_filter_criteria(criteria({"eventSource": ["aws:sqs"]}), "sqs")
    assert record_filter is not None
    assert record_filter.matches(sqs('{"a": 1}'))
    assert parse_count == [0]

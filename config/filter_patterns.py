"""Event filtering (FilterCriteria) for SQS, Kinesis and DynamoDB records.

Patterns are parsed and validated once, when a mapping is configured, and compiled into small
closures, so testing a record walks only the fields a pattern names. Records are the Lambda-shaped
event records; an SQS `body` or Kinesis `data` is decoded lazily and at most once per record.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable, Sequence
from operator import eq, ge, gt, le, lt
from typing import Any, Literal, NoReturn

import orjson
from sluiceway.core.errors import SluicewayError

SourceKind = Literal["sqs", "kinesis", "dynamodb"]
Test = Callable[[Any], bool]

MAX_FILTERS = 5  # default Lambda quota per event source mapping; AWS raises it to 10 on request
MAX_PATTERN_LENGTH = 4096  # longest `Pattern` string the Lambda API accepts

_DATA_KEYS: dict[str, str] = {"sqs": "body", "kinesis": "data", "dynamodb": "dynamodb"}
_MISSING: Any = object()
_UNSET: Any = object()
_TEXT = (str, bytes)
_CONTAINERS = (dict, list)
_OPENERS = ("{", "[", b"{", b"[")
"""Tuples, not `str | bytes`: a union in a hot isinstance is rebuilt on every call."""
_COMPARE = {"=": eq, "<": lt, "<=": le, ">": gt, ">=": ge}
_NOT_IN_LAMBDA = "not supported by Lambda event filtering"


class FilterPatternError(SluicewayError, ValueError):
    """A filter pattern or FilterCriteria that Lambda would refuse at create or update time."""


class CompiledPattern:
    """One validated pattern, ready to test records of one source kind."""

    __slots__ = ("_test", "source", "source_kind")

    def __init__(self, source: str, source_kind: SourceKind, test: Test) -> None:
        self.source = source
        self.source_kind = source_kind
        self._test = test

    def matches(self, record: dict[str, Any]) -> bool:
        return self._test(_VIEWS[self.source_kind](record))

    def __repr__(self) -> str:
        return f"CompiledPattern({self.source!r}, {self.source_kind!r})"


class RecordFilter:
    """Filters ORed together: a record passes when any pattern matches it."""

    __slots__ = ("_tests", "_view", "patterns")

    def __init__(self, patterns: Sequence[CompiledPattern]) -> None:
        kinds = {p.source_kind for p in patterns}
        if len(kinds) != 1:
            raise ValueError("a RecordFilter needs at least one pattern, all of one source kind")
        self.patterns = tuple(patterns)
        self._tests = tuple(p._test for p in self.patterns)
        self._view = _VIEWS[kinds.pop()]

    def matches(self, record: dict[str, Any]) -> bool:
        view = self._view(record)  # shared, so the body/data is decoded once for all patterns
        tests = self._tests
        if len(tests) == 1:  # the usual case: no generator per record
            return tests[0](view)
        return any(test(view) for test in tests)


def compile_filter_criteria(
    criteria: dict[str, Any] | None, source_kind: SourceKind, *, max_filters: int = MAX_FILTERS
) -> RecordFilter | None:
    """Compile `{"Filters": [{"Pattern": "..."}]}`; None when there is nothing to filter on."""
    if not criteria:
        return None
    if not isinstance(criteria, dict) or set(criteria) - {"Filters"}:
        raise FilterPatternError('FilterCriteria must be an object with only "Filters"')
    filters = criteria.get("Filters") or []
    if not isinstance(filters, list):
        raise FilterPatternError('FilterCriteria "Filters" must be a list')
    if len(filters) > max_filters:
        raise FilterPatternError(f"{len(filters)} filters given; the limit is {max_filters}")
    patterns = []
    for number, item in enumerate(filters, start=1):
        if not isinstance(item, dict) or set(item) != {"Pattern"}:
            raise FilterPatternError(f'filter {number} must be an object with only a "Pattern"')
        try:
            patterns.append(compile_pattern(item["Pattern"], source_kind))
        except FilterPatternError as exc:
            raise FilterPatternError(f"filter {number}: {exc}") from None
    return RecordFilter(patterns) if patterns else None


def compile_pattern(pattern: str, source_kind: SourceKind) -> CompiledPattern:
    """Parse and validate one pattern string; raises FilterPatternError saying what is wrong."""
    if source_kind not in _DATA_KEYS:
        raise ValueError(f"unknown source kind {source_kind!r}")
    if not isinstance(pattern, str):
        raise FilterPatternError(f"a pattern must be a JSON string, not {_kind(pattern)}")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise FilterPatternError(f"pattern is longer than {MAX_PATTERN_LENGTH} characters")
    try:
        tree = json.loads(pattern, object_pairs_hook=_merge_pairs, parse_constant=_no_constant)
    except ValueError as exc:
        raise FilterPatternError(f"pattern is not valid JSON: {exc}") from None
    if not isinstance(tree, dict):
        raise FilterPatternError(f"pattern must be a JSON object, not {_kind(tree)}")
    return CompiledPattern(pattern, source_kind, _object(tree, "", source_kind, root=True))


# --- compiling: each pattern node becomes a closure over (record view | dict) -> bool ----------


def _object(obj: dict[str, Any], path: str, kind: str, root: bool) -> Test:
    """All fields of a pattern object must match (AND)."""
    if not obj:
        _fail(path or "pattern", "a pattern object must name at least one field")
    tests = []
    for key, value in obj.items():
        where = f"{path}.{key}" if path else key
        if key == "$or":
            tests.append(_any_of(value, where, kind, root))
        elif root and key == _DATA_KEYS[kind]:
            tests.append(_data_field(key, value, where, kind))
        elif root and kind == "kinesis" and key == "kinesis":
            _fail(where, 'name Kinesis fields directly: {"data": ...}, {"partitionKey": ...}')
        elif isinstance(value, dict):
            tests.append(_object_field(key, _object(value, where, kind, False)))
        elif isinstance(value, list):
            tests.append(_leaf_field(key, value, where, kind))
        else:
            _fail(where, f"expected an array of values or a nested object, not {_kind(value)}")
    if len(tests) == 1:
        return tests[0]
    return lambda node: all(test(node) for test in tests)


def _any_of(branches: Any, where: str, kind: str, root: bool) -> Test:
    """`$or`: any branch (a pattern object at this same level) may match."""
    if not (isinstance(branches, list) and branches and all(isinstance(b, dict) for b in branches)):
        _fail(where, "expected a non-empty array of pattern objects")
    tests = [_object(b, f"{where}[{i}]", kind, root) for i, b in enumerate(branches)]
    return lambda node: any(test(node) for test in tests)


def _data_field(key: str, value: Any, where: str, kind: str) -> Test:
    """The record's data key: JSON patterns match decoded JSON; SQS also allows plain text."""
    if kind != "sqs" and not isinstance(value, dict):
        _fail(where, f"{kind} data can only be filtered with a JSON object pattern")
    if kind == "dynamodb":  # stream images are JSON already
        return _object_field(key, _object(value, where, kind, False))
    if isinstance(value, dict):  # a JSON pattern never matches plain text
        sub = _object(value, where, kind, False)

        def json_data(view: _View) -> bool:
            parsed = view.parsed()
            return sub(parsed) if type(parsed) is dict else _match_object(sub, parsed)

        return json_data
    if not isinstance(value, list):
        _fail(where, f"expected an array of values or a JSON object pattern, not {_kind(value)}")
    plain = _leaf_field(key, value, where, kind)  # a plain pattern never matches a JSON body
    return lambda view: view.parsed() is None and plain(view)


def _object_field(key: str, sub: Test) -> Test:
    return lambda node: _match_object(sub, node.get(key, _MISSING))


def _match_object(sub: Test, value: Any) -> bool:
    """A nested pattern matches an object, or any object inside an array."""
    if isinstance(value, dict):
        return sub(value)
    if isinstance(value, list):
        return any(_match_object(sub, item) for item in value)
    return False


def _leaf_field(key: str, values: list[Any], where: str, kind: str) -> Test:
    """A field's values are ORed; each leaf inside a record array gets its own chance."""
    if not values:
        _fail(where, "the array of values is empty")
    equals: set[tuple[type, Any]] = set()
    tests: list[Test] = []
    exists: set[bool] = set()
    for value in values:
        if isinstance(value, list):
            _fail(where, "an array of values cannot contain another array")
        if not isinstance(value, dict):
            equals.add(_typed(value))
        elif isinstance(op := _operator(value, where, kind), bool):
            exists.add(op)
        else:
            tests.append(op)

    absent_matches = False in exists
    present_matches = True in exists

    def test(node: Any) -> bool:
        value = node.get(key, _MISSING)
        if value is _MISSING:
            return absent_matches
        if not isinstance(value, _CONTAINERS):  # a scalar: its own single leaf, tested directly
            if present_matches or (type(value), value) in equals:
                return True
            return any(t(value) for t in tests) if tests else False
        leaves = _leaves(value)
        if not leaves:
            return absent_matches
        if present_matches:
            return True
        return any(_typed(v) in equals or any(t(v) for t in tests) for v in leaves)

    return test


def _operator(spec: dict[str, Any], where: str, kind: str) -> Test | bool:
    """Compile one `{"operator": operand}`; `exists` compiles to its bool."""
    if len(spec) != 1:
        _fail(where, f"an operator object holds exactly one operator, not {sorted(spec)}")
    [(name, arg)] = spec.items()
    if name == "exists":
        if not isinstance(arg, bool):
            _fail(where, '"exists" takes true or false')
        return arg
    if name in ("prefix", "suffix", "equals-ignore-case"):
        if not isinstance(arg, str):
            _fail(where, f'"{name}" takes a string; combined forms are {_NOT_IN_LAMBDA}')
        return _string_test(name, arg)
    if name == "anything-but":
        return _anything_but(arg, where)
    if name == "numeric":
        if kind == "dynamodb":
            _fail(where, f'"numeric" is {_NOT_IN_LAMBDA} for DynamoDB (its numbers are strings)')
        return _numeric(arg, where)
    if name in ("wildcard", "cidr"):
        _fail(where, f'"{name}" is {_NOT_IN_LAMBDA}')
    _fail(where, f'unknown operator "{name}"')


def _string_test(name: str, arg: str) -> Test:
    if name == "prefix":
        return lambda v: type(v) is str and v.startswith(arg)
    if name == "suffix":
        return lambda v: type(v) is str and v.endswith(arg)
    folded = arg.casefold()
    return lambda v: type(v) is str and v.casefold() == folded


def _anything_but(arg: Any, where: str) -> Test:
    """Matches any leaf except the listed strings, or the listed numbers."""
    excluded = arg if isinstance(arg, list) else [arg]
    types = {type(v) for v in excluded}
    if not excluded or not (types <= {str} or types <= {int, float}):
        _fail(
            where,
            '"anything-but" takes a string, a number, or a list of only strings or only numbers;'
            f" its prefix, suffix, equals-ignore-case and wildcard forms are {_NOT_IN_LAMBDA}",
        )
    blocked = {_typed(v) for v in excluded}
    return lambda v: _typed(v) not in blocked


def _numeric(spec: Any, where: str) -> Test:
    """`[op, n]`, or a range `[">"/">=", low, "<"/"<=", high]`; matches JSON numbers only."""
    valid = isinstance(spec, list) and len(spec) in (2, 4)
    ops, bounds = (spec[0::2], spec[1::2]) if valid else ([], [])
    valid = valid and all(op in _COMPARE for op in ops) and all(map(_is_num, bounds))
    if valid and len(ops) == 2:
        (high_op, high), (low_op, low) = sorted(zip(ops, bounds, strict=True))
        valid = high_op[0] == "<" and low_op[0] == ">" and low <= high
    if not valid:
        _fail(where, '"numeric" takes [op, number] or a range like [">", 0, "<=", 5]')
    conditions = [(_COMPARE[op], bound) for op, bound in zip(ops, bounds, strict=True)]
    return lambda v: _is_num(v) and all(cmp(v, bound) for cmp, bound in conditions)


# --- records --------------------------------------------------------------------------------


class _View:
    """A record as patterns see it, with the data key decoded on first use."""

    __slots__ = ("_parsed", "_record")

    def __init__(self, record: dict[str, Any]) -> None:
        self._record = record
        self._parsed = _UNSET

    def get(self, key: str, default: Any = None) -> Any:
        return self._record.get(key, default)

    def parsed(self) -> Any:
        parsed = self._parsed
        if parsed is _UNSET:
            parsed = self._parsed = self._decode()
        return parsed

    def _decode(self) -> Any:
        return _parse_json(self._record.get("body"))


class _KinesisView(_View):
    """Kinesis patterns name the fields of the `kinesis` object (data, partitionKey) directly."""

    __slots__ = ("_kinesis",)

    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__(record)
        inner = record.get("kinesis")
        self._kinesis = inner if isinstance(inner, dict) else {}

    def get(self, key: str, default: Any = None) -> Any:
        value = self._kinesis.get(key, _MISSING)
        return self._record.get(key, default) if value is _MISSING else value

    def _decode(self) -> Any:
        data = self._kinesis.get("data")
        try:
            return _parse_json(binascii.a2b_base64(data)) if isinstance(data, str) else None
        except binascii.Error:
            return None


_VIEWS: dict[str, type[_View]] = {"sqs": _View, "kinesis": _KinesisView, "dynamodb": _View}


def _parse_json(text: Any) -> dict[str, Any] | list[Any] | None:
    """The JSON object or array in `text`; None when it holds anything else (plain text)."""
    if not text or not isinstance(text, _TEXT):
        return None
    if text[:1] not in _OPENERS and text.lstrip()[:1] not in _OPENERS:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        try:  # orjson refuses integers wider than 64 bits; the stdlib parser does not
            value = json.loads(text, parse_constant=_no_constant)
        except ValueError:
            return None
    return value if isinstance(value, _CONTAINERS) else None


def _leaves(value: Any) -> list[Any]:
    """Leaf values under a record value: itself, or the scalars inside a (nested) array."""
    if isinstance(value, dict):
        return []
    if not isinstance(value, list):
        return [value]
    return [leaf for item in value for leaf in _leaves(item)]


# --- small pieces ---------------------------------------------------------------------------


def _typed(value: Any) -> tuple[type, Any]:
    """Exact-match key: 300 and 300.0 differ, as do 1 and true."""
    return (type(value), value)


def _is_num(value: Any) -> bool:
    return type(value) is int or type(value) is float


def _merge_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Repeated keys: objects merge (ANDed, as the DynamoDB docs show); other values, last wins."""
    merged: dict[str, Any] = {}
    for key, value in pairs:
        old = merged.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            value = _merge_pairs([*old.items(), *value.items()])
        merged[key] = value
    return merged


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _fail(where: str, message: str) -> NoReturn:
    raise FilterPatternError(f'"{where}": {message}')


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    return names.get(type(value), "a number" if _is_num(value) else type(value).__name__)

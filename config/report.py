"""Turn pydantic's validation errors into problems that name a variable, a value and a rule.

A user set `SLUICEWAY_MAPPINGS__ORDERS__BATCH_SIZE`, not `('mappings', 'orders', 'batch_size')`,
and wrote `mappings.orders.batch_size` in a file; each error is traced back to whichever of the
two supplied the value, and pydantic's wording is replaced with the rule that was broken.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from sluiceway.config.environment import (
    REGION_FIELD,
    EnvEntry,
    InvalidJson,
    env_name,
    valid_keys_rule,
)
from sluiceway.config.errors import MISSING, ConfigProblem
from sluiceway.config.files import ConfigFile, dotted
from sluiceway.config.schema import owner_at

Loc = tuple[str | int, ...]
_KEY_MARKER = "[key]"
_REQUIRED = {
    "source": "every mapping needs a source: an SQS queue ARN or URL, a Kinesis stream ARN, "
    "or a DynamoDB stream or table ARN",
    "handler": "every mapping needs a handler: module:function, module.function, "
    "an http(s):// URL or a Lambda function ARN",
}
_PLAIN = {
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
}


@dataclass(frozen=True)
class _Place:
    variable: str
    value: object
    inner: Loc = ()
    from_env: bool = True


@dataclass(frozen=True)
class Provenance:
    """Where each value came from: the environment's variables and the config file."""

    root: type[BaseModel]
    entries: list[EnvEntry]
    file: ConfigFile | None = None

    def problems(self, exc: ValidationError) -> list[ConfigProblem]:
        found: list[ConfigProblem] = []
        for error in exc.errors():
            loc, is_key = _normal_loc(error["loc"])
            if is_key:
                found.append(self._key_problem(loc, error))
                continue
            for place in self._places(loc, error["type"]):
                rule = self._rule(error, loc, place)
                if place.inner:
                    rule = f"at {dotted(place.inner)}: {rule}"
                found.append(ConfigProblem(place.variable, place.value, rule))
        return found

    # --- where a location's value came from ----------------------------------------------------

    def _places(self, loc: Loc, error_type: str) -> list[_Place]:
        entry = self._env_covering(loc)
        if entry is not None:
            return [_Place(entry.variable, entry.value, loc[len(entry.path) :])]
        places = [_Place(e.variable, e.value) for e in self._env_below(loc)]
        if self.file is not None and _has(self.file.data, loc):
            places.append(_Place(self._file_name(loc), _get(self.file.data, loc), from_env=False))
        if places:
            return places
        if self._from_file_section(loc):
            return [_Place(self._file_name(loc), MISSING, from_env=False)]
        return [_Place(env_name(loc), MISSING)]

    def _env_covering(self, loc: Loc) -> EnvEntry | None:
        """The most specific variable whose path is `loc` or a prefix of it."""
        keys = tuple(str(key).lower() for key in loc)
        best: EnvEntry | None = None
        for entry in self.entries:
            if keys[: len(entry.path)] == entry.path and (
                best is None or len(entry.path) > len(best.path)
            ):
                best = entry
        return best

    def _env_below(self, loc: Loc) -> list[EnvEntry]:
        keys = tuple(str(key).lower() for key in loc)
        return [e for e in self.entries if len(e.path) > len(keys) and e.path[: len(keys)] == keys]

    def _from_file_section(self, loc: Loc) -> bool:
        """A missing key belongs to the file when its section is there and not in the env."""
        parent = loc[:-1]
        return (
            self.file is not None
            and bool(parent)
            and _has(self.file.data, parent)
            and not self._env_below(parent)
        )

    def _file_name(self, loc: Loc) -> str:
        assert self.file is not None
        return f"{dotted(loc)} in {self.file.label}"

    def _key_problem(self, loc: Loc, error: ErrorDetails) -> ConfigProblem:
        """A bad mapping name: one problem for the mapping, not one per variable."""
        rule = _message(error)
        if self._env_below(loc) or self.file is None or not _has(self.file.data, loc):
            return ConfigProblem(env_name(loc) + "__*", loc[-1], rule)
        return ConfigProblem(self._file_name(loc), loc[-1], rule)

    # --- what rule was broken --------------------------------------------------------------------

    def _rule(self, error: ErrorDetails, loc: Loc, place: _Place) -> str:
        kind, value = error["type"], error["input"]
        if isinstance(value, InvalidJson):
            return f"is not valid JSON ({value.error})"
        if kind == "extra_forbidden":
            owner = owner_at(self.root, loc)

            def full_name(name: str) -> str:
                if not place.from_env:
                    return dotted((*loc[:-1], name))
                return env_name((*loc[:-1], name)) if not place.inner else name.upper()

            return valid_keys_rule(owner, str(loc[-1]), place.from_env, full_name)
        if kind == "missing":
            return _REQUIRED.get(str(loc[-1]), "is required")
        if kind in _PLAIN:
            return _PLAIN[kind]
        if kind == "literal_error":
            return f"must be {error.get('ctx', {}).get('expected', 'one of the allowed values')}"
        if kind in ("dict_type", "model_type", "model_attributes_type"):
            return "must be a JSON object" if place.from_env else "must be a table of settings"
        if kind == "list_type":
            return "must be a JSON list" if place.from_env else "must be a list"
        return _message(error)


def _message(error: ErrorDetails) -> str:
    message = error["msg"]
    for prefix, replacement in (("Value error, ", ""), ("Input should be ", "must be ")):
        if message.startswith(prefix):
            message = replacement + message[len(prefix) :]
    return message


def _normal_loc(loc: tuple[str | int, ...]) -> tuple[Loc, bool]:
    """Fold the region's aliases into one name and strip pydantic's dict-key marker."""
    is_key = bool(loc) and loc[-1] == _KEY_MARKER
    if is_key:
        loc = loc[:-1]
    if loc and isinstance(loc[0], str) and loc[0].lower() in ("aws_region", "aws_default_region"):
        loc = (REGION_FIELD, *loc[1:])
    if loc and isinstance(loc[0], str) and loc[0].lower() in ("sluiceway_async", "async_"):
        loc = ("async", *loc[1:])
    return loc, is_key


def _has(data: Any, loc: Loc) -> bool:
    try:
        _get(data, loc)
    except (KeyError, IndexError, TypeError):
        return False
    return True


def _get(data: Any, loc: Loc) -> Any:
    for key in loc:
        if isinstance(data, dict) or (isinstance(data, list) and isinstance(key, int)):
            data = data[key]
        else:
            raise KeyError(key)
    return data

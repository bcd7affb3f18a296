"""Read settings from an environment mapping, remembering which variable gave which value.

pydantic-settings does the reading; this module adds what good error messages need: the map from
a key path back to the variable that set it, JSON that fails to parse reported instead of raised,
and variables that would otherwise be ignored without a word (`SLUICEWAY_FOO`).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_origin

from pydantic.fields import FieldInfo
from pydantic_settings import EnvSettingsSource
from pydantic_settings.sources.utils import parse_env_vars
from sluiceway.config.errors import ConfigProblem
from sluiceway.config.schema import (
    is_model,
    keyed_depth,
    leaf_prefix,
    named_collection,
    unwrap,
)

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings

ENV_PREFIX = "SLUICEWAY_"
DELIMITER = "__"
CONFIG_FILE_VARIABLE = "SLUICEWAY_CONFIG_FILE"
REGION_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION")
REGION_FIELD = "aws_region"
FIELD_KEYS = {"async_": "async"}
"""Settings fields whose key differs from their name (`async` is a Python keyword)."""
_HINTS = {
    "aws_region": "the region comes from the standard AWS_REGION (or AWS_DEFAULT_REGION)",
    "region": "the region comes from the standard AWS_REGION (or AWS_DEFAULT_REGION)",
}


@dataclass(frozen=True)
class InvalidJson:
    """A variable that should hold JSON but does not; validation reports it with the reason."""

    raw: str
    error: str


@dataclass(frozen=True)
class EnvEntry:
    """One variable that feeds the settings, and the key path it sets."""

    variable: str
    value: str
    path: tuple[str, ...]


def scan_environment(environ: Mapping[str, str]) -> list[EnvEntry]:
    """The variables that feed the settings: `SLUICEWAY_*` and the region in effect."""
    entries = []
    for variable, value in environ.items():
        if variable.upper().startswith(ENV_PREFIX):
            path = tuple(variable[len(ENV_PREFIX) :].lower().split(DELIMITER))
            entries.append(EnvEntry(variable, value, path))
    for variable in REGION_VARIABLES:
        if environ.get(variable):
            entries.append(EnvEntry(variable, environ[variable], (REGION_FIELD,)))
            break
    return entries


def env_name(path: tuple[str | int, ...]) -> str:
    """`('mappings', 'orders', 'batch_size')` -> `SLUICEWAY_MAPPINGS__ORDERS__BATCH_SIZE`."""
    if path and path[0] == REGION_FIELD:
        return REGION_VARIABLES[0]
    return ENV_PREFIX + DELIMITER.join(str(key).upper() for key in path)


def unknown_variables(root: type[BaseSettings], entries: list[EnvEntry]) -> list[ConfigProblem]:
    """Variables that fit nowhere in the settings, which pydantic-settings would skip silently."""
    problems = []
    top_level = [FIELD_KEYS.get(name, name) for name in root.model_fields if name != REGION_FIELD]
    for entry in entries:
        if entry.path == (REGION_FIELD,) and entry.variable in REGION_VARIABLES:
            continue
        head = entry.path[0]
        if head not in top_level:
            rule = f"not a Sluiceway variable; {_suggestion(head, top_level, entry.path)}"
            rule += f"valid names are {', '.join(valid_variables(root))}"
            problems.append(ConfigProblem(entry.variable, entry.value, rule))
            continue
        depth = leaf_prefix(root, entry.path)
        if depth is not None:
            parent = env_name(entry.path[:depth])
            rule = f"{parent} takes one value (JSON for an object or list); nothing nests under it"
            problems.append(ConfigProblem(entry.variable, entry.value, rule))
    return problems


def valid_variables(root: type[BaseSettings]) -> list[str]:
    """One line per top-level setting, e.g. `SLUICEWAY_HTTP__{ENABLED|HOST|PORT}`."""
    names = []
    for name, field in root.model_fields.items():
        if name == REGION_FIELD:
            continue
        name = FIELD_KEYS.get(name, name)
        annotation = unwrap(field.annotation)
        entry_model = named_collection(annotation)
        if entry_model is not None:
            names.append(f"{env_name((name,))}__<NAME>__<FIELD>")
        elif is_model(annotation):
            fields = "|".join(key.upper() for key in annotation.model_fields)
            names.append(f"{env_name((name,))}__{{{fields}}}")
        else:
            names.append(env_name((name,)))
    return names


def valid_keys_rule(owner: Any, key: str, as_env: bool, full_name: Callable[[str], str]) -> str:
    """Rule for an unknown key inside a section: the nearest valid name, then all of them."""
    names = [FIELD_KEYS.get(n, n) for n in owner.model_fields] if is_model(owner) else []
    shown = [name.upper() if as_env else name for name in names]
    close = difflib.get_close_matches(key.lower(), names, n=1)
    hint = f"did you mean {full_name(close[0])}? " if close else ""
    return f"unknown setting; {hint}valid names here are {', '.join(shown)}"


def _suggestion(head: str, top_level: list[str], path: tuple[str, ...]) -> str:
    if head in _HINTS:
        return _HINTS[head] + "; "
    close = difflib.get_close_matches(head, top_level, n=1)
    return f"did you mean {env_name((close[0], *path[1:]))}? " if close else ""


class EnvironmentSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (tests pass their own), with
    JSON errors kept as values so they are reported with everything else rather than raised."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        _set_keyed_entries(self.settings_cls, data, scan_environment(self._environ))
        return data

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError as exc:
            if _is_list(field) and isinstance(value, str) and not value.lstrip().startswith("["):
                # `A,B` for a list is what people type; JSON stays the documented form
                return [item.strip() for item in value.split(",") if item.strip()]
            return InvalidJson(value, str(exc))


def _set_keyed_entries(root: type[BaseSettings], data: dict[str, Any], entries: list[EnvEntry]) -> None:
    """`…__ENVIRONMENT__TABLE_NAME=orders` sets the entry `TABLE_NAME`, as written: variable names
    keep their case, which pydantic-settings (case-insensitive here) would lower. Entries set one
    by one go over the field's JSON object, if it has one too."""
    keyed: dict[tuple[str, ...], dict[str, str]] = {}
    for entry in entries:
        depth = keyed_depth(root, entry.path)
        if depth is not None:
            key = DELIMITER.join(entry.variable[len(ENV_PREFIX) :].split(DELIMITER)[depth:])
            keyed.setdefault(entry.path[:depth], {})[key] = entry.value
    for path, values in keyed.items():
        parent = data
        for key in path[:-1]:
            parent = parent.setdefault(key, {})
            if not isinstance(parent, dict):
                break  # a JSON value given for an enclosing section: validation reports it
        else:
            whole = next((e for e in entries if e.path == path), None)
            base = _json_object(whole.value) if whole is not None else {}
            if base is not None:
                parent[path[-1]] = {**base, **values}


def _json_object(text: str) -> dict[str, Any] | None:
    """The object a variable holds, or None when it holds no JSON object (reported elsewhere)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _is_list(field: FieldInfo | None) -> bool:
    return field is not None and get_origin(unwrap(field.annotation)) is list


"""The optional config file (`SLUICEWAY_CONFIG_FILE`): TOML, YAML or JSON, chosen by extension.

Reading is pydantic-settings' own file sources; this module adds the checks they skip (a missing
file is silently ignored by them) and makes mapping names case-insensitive, as they are in the
environment, so `[mappings.Orders]` and `SLUICEWAY_MAPPINGS__ORDERS__...` merge into one mapping.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic.fields import FieldInfo
from pydantic_settings import (
    JsonConfigSettingsSource,
    PydanticBaseSettingsSource,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)
from sluiceway.config.environment import CONFIG_FILE_VARIABLE
from sluiceway.config.errors import ConfigProblem

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings

_PARSE_ERRORS = (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeError, yaml.YAMLError)
_FORMATS: dict[str, str] = {".toml": "TOML", ".yaml": "YAML", ".yml": "YAML", ".json": "JSON"}
COLLECTIONS = ("mappings", "functions", "schedules")
"""Top-level sections whose keys are names the user chose (and so are case-insensitive)."""


@dataclass(frozen=True)
class ConfigFile:
    """A config file that parsed: its contents as the settings see them, and as a source."""

    label: str
    """The path as the user gave it, used in messages."""
    data: dict[str, Any]
    source: PydanticBaseSettingsSource


def load_config_file(
    settings_cls: type[BaseSettings], path: str
) -> tuple[ConfigFile | None, list[ConfigProblem]]:
    """Parse the file, or return the problems that stop it from being used."""

    def problem(rule: str) -> tuple[None, list[ConfigProblem]]:
        return None, [ConfigProblem(CONFIG_FILE_VARIABLE, path, rule)]

    file = Path(path).expanduser()
    kind = _FORMATS.get(file.suffix.lower())
    if kind is None:
        return problem("must name a .toml, .yaml, .yml or .json file")
    if not file.is_file():
        return problem("no such file" if not file.exists() else "is not a regular file")
    try:
        inner = _read(settings_cls, kind, file)
    except (ValueError, UnicodeError, yaml.YAMLError) as exc:  # the parsers' own errors
        if not isinstance(exc, _PARSE_ERRORS):
            return problem(f"must hold a {kind} object of settings at the top level")
        return problem(f"is not valid {kind}: {' '.join(str(exc).split())}")
    except TypeError:  # the file parsed, but to a list or a scalar
        return problem(f"must hold a {kind} object of settings at the top level")
    raw = _raw_data(inner)
    if not isinstance(raw, dict):
        return problem(f"must hold a {kind} object of settings at the top level")
    data, collisions = normalise_names(raw)
    if collisions:
        return None, [ConfigProblem(f"{key} in {path}", key, rule) for key, _, rule in collisions]
    return ConfigFile(path, data, _NormalisedSource(settings_cls, inner, file.resolve().parent)), []


def normalise_names(
    data: dict[str, Any], *, top_level: bool = True
) -> tuple[dict[str, Any], list[tuple[str, Any, str]]]:
    """Lowercase mapping names (and top-level keys); report names that differ only in case."""
    result: dict[str, Any] = {}
    collisions: list[tuple[str, Any, str]] = []
    for key, value in data.items():
        result[key.lower() if top_level and isinstance(key, str) else key] = value
    for section in COLLECTIONS:
        entries = result.get(section)
        if not isinstance(entries, dict):
            continue
        lowered: dict[Any, Any] = {}
        for name, entry in entries.items():
            low = name.lower() if isinstance(name, str) else name
            if low in lowered:
                rule = f"mapping names are case-insensitive, so this repeats mapping {low!r}"
                collisions.append((f"{section}.{name}", name, rule))
            lowered[low] = entry
        result[section] = lowered
    return result, collisions


def _read(settings_cls: type[BaseSettings], kind: str, file: Path) -> PydanticBaseSettingsSource:
    if kind == "TOML":
        return TomlConfigSettingsSource(settings_cls, toml_file=file)
    if kind == "YAML":
        return YamlConfigSettingsSource(settings_cls, yaml_file=file)
    return JsonConfigSettingsSource(settings_cls, json_file=file)


def _raw_data(source: PydanticBaseSettingsSource) -> Any:
    for attribute in ("toml_data", "yaml_data", "json_data"):
        if hasattr(source, attribute):
            return getattr(source, attribute)
    return source()


PATH_FIELDS = ("code_path", "ca_bundle")
"""Mapping fields that name a file or directory: relative ones in a config file are taken from
the file's directory (in the environment, from the working directory)."""


class _NormalisedSource(PydanticBaseSettingsSource):
    """Wraps a file source so its mapping names merge with the environment's (lowercase) and its
    relative paths are taken from the file's directory, wherever the service is started."""

    def __init__(
        self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource, directory: Path
    ) -> None:
        super().__init__(settings_cls)
        self._inner = inner
        self._directory = directory

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        data, _ = normalise_names(self._inner(), top_level=False)
        for section in COLLECTIONS:
            for entry in (data.get(section) or {}).values():
                if isinstance(entry, dict):
                    for key in PATH_FIELDS:
                        value = entry.get(key)
                        if isinstance(value, str) and value:
                            entry[key] = str(self._directory / Path(value).expanduser())
        return data


def dotted(path: tuple[str | int, ...]) -> str:
    """`('mappings', 'orders', 'function_response_types', 0)` -> `mappings.orders.funct...[0]`."""
    text = ""
    for key in path:
        if isinstance(key, int):
            text += f"[{key}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", key):
            text += f".{key}" if text else key
        else:
            text += f"[{key!r}]"
    return text

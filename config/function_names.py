"""Which function each mapping runs: its own (a mapping-level HANDLER) or a declared one.

A mapping that names a declared function with FUNCTION_NAME takes that function's handler,
code, limits and isolation, so everything that runs a mapping sees one set of handler fields
whichever way the function was given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from pydantic_core import InitErrorDetails
from sluiceway.config.fields import rule_error
from sluiceway.config.functions import (
    FUNCTION_FIELDS_FROM_MAPPING,
    FunctionConfig,
    function_of_mapping,
    mapping_fields_of,
)

if TYPE_CHECKING:
    from sluiceway.config.mapping import MappingConfig

_NEEDS_FUNCTION = (
    "every mapping needs a handler: module:function, module.function, an http(s):// URL or a "
    "Lambda function ARN; or a FUNCTION_NAME naming a declared function "
    "(SLUICEWAY_FUNCTIONS__<NAME>__HANDLER)"
)


def _problem(loc: tuple[str, ...], value: object, rule: str) -> InitErrorDetails:
    return InitErrorDetails(type=rule_error(rule), loc=loc, input=value)


def resolve_functions(
    mappings: Mapping[str, MappingConfig], functions: Mapping[str, FunctionConfig]
) -> tuple[list[InitErrorDetails], dict[str, MappingConfig]]:
    """Problems, and the mappings that name a declared function with its fields filled in."""
    problems: list[InitErrorDetails] = []
    resolved: dict[str, MappingConfig] = {}
    declared_by: dict[str, str] = {}
    for name, mapping in mappings.items():
        function_name = (mapping.function_name or "").lower()
        declared = functions.get(function_name) if mapping.function_name else None
        if mapping.handler is None:
            if declared is None:
                value = mapping.function_name
                loc = ("mappings", name, "function_name" if value else "handler")
                rule = (
                    f"names no declared function (declared: {', '.join(sorted(functions)) or 'none'}); "
                    + _NEEDS_FUNCTION
                    if value
                    else _NEEDS_FUNCTION
                )
                problems.append(_problem(loc, value, rule))
                continue
            copy = mapping.model_copy(update=mapping_fields_of(declared))
            copy.bind(name, mapping._region or "us-east-1")
            resolved[name] = copy
            continue
        if declared is not None:
            rule = (
                f"function {mapping.function_name} is declared by SLUICEWAY_FUNCTIONS__"
                f"{function_name.upper()}__*: name it without a HANDLER here, or give this "
                "mapping's function another name"
            )
            problems.append(_problem(("mappings", name, "handler"), mapping.handler, rule))
            continue
        key = mapping.effective_function_name.lower()
        other = declared_by.get(key)
        if other is not None:
            problems.extend(_same_function(name, mapping, other, mappings[other]))
        declared_by.setdefault(key, name)
    return problems, resolved


def _same_function(
    name: str, mapping: MappingConfig, other_name: str, other: MappingConfig
) -> list[InitErrorDetails]:
    """Two mappings of one function must give it the same handler settings: it has one
    invoker, shared by both."""
    for attr in FUNCTION_FIELDS_FROM_MAPPING.values():
        mine, theirs = getattr(mapping, attr), getattr(other, attr)
        if mine != theirs:
            rule = (
                f"function {mapping.effective_function_name} has {attr}={theirs!r} in mapping "
                f"{other_name}; one function has one set of handler settings (declare it once "
                "with SLUICEWAY_FUNCTIONS__<NAME>__* and name it from both mappings)"
            )
            return [_problem(("mappings", name, attr), mine, rule)]
    return []


def all_functions(
    mappings: Mapping[str, MappingConfig], functions: Mapping[str, FunctionConfig], region: str
) -> dict[str, FunctionConfig]:
    """Every function by lowercase name: declared ones, then those mappings declare."""
    table: dict[str, FunctionConfig] = dict(functions)
    for mapping in mappings.values():
        key = mapping.effective_function_name.lower()
        if key in table or mapping.handler is None:
            continue
        source = mapping.source_ref
        table[key] = function_of_mapping(mapping, source.region or region, source.account)
    return table

"""Walk the settings models by key path, to name valid keys and spot keys that fit nowhere.

Error messages list the valid names at the place a typo was made, and variables that
pydantic-settings would silently ignore (`SLUICEWAY_FOO`, `SLUICEWAY_LOG_LEVEL__X`) are found here.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel


class KeyedByVariable:
    """Marks a `dict[str, str]` field whose entries may each be set by a variable of its own,
    `FIELD__KEY=value`, the key's case kept as written (an environment variable's name)."""


KEYED_BY_VARIABLE = KeyedByVariable()


def unwrap(annotation: Any) -> Any:
    """The type inside `Annotated[...]` and `X | None`."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def named_collection(annotation: Any) -> Any | None:
    """The model type of a `dict[str, Model]` (user-named entries such as mappings), else None."""
    if get_origin(annotation) is dict:
        value_type = unwrap(get_args(annotation)[-1])
        return value_type if is_model(value_type) else None
    return None


def model_field(model: type[BaseModel], key: str) -> Any | None:
    """The field `key` names: its own name, or one of its aliases (`async` for `async_`)."""
    field = model.model_fields.get(key)
    if field is not None:
        return field
    for candidate in model.model_fields.values():
        alias = candidate.validation_alias
        choices = getattr(alias, "choices", None) or ([alias] if isinstance(alias, str) else [])
        if key in choices:
            return candidate
    return None


def child(annotation: Any, key: str | int) -> Any | None:
    """The type found at `key` below `annotation`; None when `key` is not valid there."""
    annotation = unwrap(annotation)
    if is_model(annotation):
        field = model_field(annotation, str(key))
        return unwrap(field.annotation) if field else None
    if named_collection(annotation) is not None:
        return named_collection(annotation)
    origin = get_origin(annotation)
    if origin is list and isinstance(key, int):
        return unwrap(get_args(annotation)[0])
    if origin is dict:
        return unwrap(get_args(annotation)[-1])
    return None


def owner_at(root: type[BaseModel], loc: tuple[str | int, ...]) -> Any | None:
    """The type that holds the key at the end of `loc` (the model a misspelt key belongs to)."""
    current: Any = root
    for key in loc[:-1]:
        current = child(current, key)
        if current is None:
            return None
    return unwrap(current)


def is_leaf(annotation: Any) -> bool:
    """True for a value given whole (a scalar, list or free-form dict), not key by key."""
    annotation = unwrap(annotation)
    return not is_model(annotation) and named_collection(annotation) is None


def leaf_prefix(root: type[BaseModel], path: tuple[str, ...]) -> int | None:
    """Length of the leading part of `path` that ends at a leaf, when more keys follow it (and
    the leaf is not a field keyed by variable, where the rest of the path is one key)."""
    current: Any = root
    for depth, key in enumerate(path):
        if depth and is_leaf(current):
            return depth
        if keyed_field(current, key) and depth + 1 < len(path):
            return None
        current = child(current, key)
        if current is None:
            return None
    return None


def keyed_field(owner: Any, key: str | int) -> bool:
    """`key` names a field of the model `owner` that is marked KeyedByVariable."""
    owner = unwrap(owner)
    if not is_model(owner):
        return False
    field = owner.model_fields.get(str(key))
    return field is not None and any(isinstance(m, KeyedByVariable) for m in field.metadata)


def keyed_depth(root: type[BaseModel], path: tuple[str, ...]) -> int | None:
    """When `path` goes past a field keyed by variable, the length of the path to that field."""
    current: Any = root
    for depth, key in enumerate(path[:-1]):
        if keyed_field(current, key):
            return depth + 1
        current = child(current, key)
        if current is None:
            return None
    return None

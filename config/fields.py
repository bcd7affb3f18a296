"""Field types shared by the configuration models, each failing with a rule a user can act on.

Pydantic's stock messages ("Input should be less than or equal to 300") say what broke but not
what is allowed; these validators state the whole allowed range or form instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict
from pydantic_core import PydanticCustomError
from sluiceway.config.sources import ACCOUNT, PARTITION, REGION, check_region_name

HandlerKind = Literal["python", "http", "lambda"]

_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_PYTHON_HANDLER = re.compile(rf"^{_DOTTED}:{_DOTTED}$")
# Lambda's own `module.function`; the module may be a path ("src/app.handler") or dotted
_LAMBDA_STYLE_HANDLER = re.compile(r"^(?:[\w-]+/)*[\w-]+(?:\.[\w-]+)*\.[A-Za-z_]\w*$")
_LAMBDA_ARN = re.compile(
    rf"^arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:[A-Za-z0-9_-]{{1,64}}"
    r"(?::(?:\$LATEST|[A-Za-z0-9_-]{1,128}))?$"
)
_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAPPING_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$")

HANDLER_FORMS = (
    "module:function (a Python import path), module.function (Lambda's form), "
    "an http(s):// URL, or a Lambda function ARN (arn:aws:lambda:REGION:ACCOUNT:function:NAME)"
)


def rule_error(rule: str) -> PydanticCustomError:
    """A validation error whose message is exactly the rule, with no pydantic prefix."""
    return PydanticCustomError("sluiceway_rule", rule)


def between(low: float, high: float, unit: str = "") -> AfterValidator:
    """Inclusive range check whose message states the whole range."""

    def check(value: Any) -> Any:
        if not low <= value <= high:
            raise rule_error(f"must be from {low} to {high}{unit}")
        return value

    return AfterValidator(check)


def at_least(low: float, unit: str = "", *, strict: bool = False) -> AfterValidator:
    """Lower-bound check; `strict` excludes the bound itself (timeouts must be > 0)."""

    def check(value: Any) -> Any:
        if value < low or (strict and value == low):
            raise rule_error(f"must be {'more than' if strict else 'at least'} {low}{unit}")
        return value

    return AfterValidator(check)


def matching(pattern: re.Pattern[str], rule: str) -> AfterValidator:
    """Form check for names and identifiers."""

    def check(value: str) -> str:
        if not pattern.match(value):
            raise rule_error(rule)
        return value

    return AfterValidator(check)


def normalise_case(convert: Callable[[str], str]) -> BeforeValidator:
    """Accept `latest` for `LATEST` and `Debug` for `DEBUG`: the case carries no meaning."""
    return BeforeValidator(lambda value: convert(value) if isinstance(value, str) else value)


def handler_kind(value: str) -> HandlerKind:
    """How a handler reference is invoked; ValueError when it has none of the accepted forms."""
    if value.startswith(("http://", "https://")):
        parts = urlsplit(value)
        if parts.hostname:
            return "http"
    elif value.startswith("arn:"):
        if _LAMBDA_ARN.match(value) and _sdk_region(value.split(":")[3]):
            return "lambda"
    elif _PYTHON_HANDLER.match(value) or _LAMBDA_STYLE_HANDLER.match(value):
        return "python"
    raise ValueError(f"must be {HANDLER_FORMS}")


def check_handler(value: str) -> str:
    try:
        handler_kind(value)
    except ValueError as exc:
        raise rule_error(str(exc)) from None
    return value


def _sdk_region(value: str) -> bool:
    try:
        check_region_name(value)
    except ValueError:
        return False
    return True


def check_region(value: str) -> str:
    """AWS_REGION: any region name the AWS SDKs accept (emulators have their own, `ddblocal`)."""
    try:
        return check_region_name(value)
    except ValueError as exc:
        raise rule_error(str(exc)) from None


FUNCTION_NAME_RULE = "must be 1 to 64 letters, digits, '-' or '_' (a Lambda function name)"
MAPPING_NAME_RULE = (
    "a mapping name must be 1 to 64 lowercase letters, digits, '-' or '_', "
    "starting and ending with a letter or digit"
)
function_name_form = matching(_FUNCTION_NAME, FUNCTION_NAME_RULE)
mapping_name_form = matching(_MAPPING_NAME, MAPPING_NAME_RULE)


class Section(BaseModel):
    """Config sections refuse unknown keys, so a typo is an error rather than a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def existing_directory(value: str) -> str:
    """The directory as an absolute path, so a worker process and `check` see the same one."""
    path = Path(value).expanduser().absolute()
    if not path.is_dir():
        raise rule_error(
            f"must be an existing directory (it is put on sys.path for the handler); {path} is not"
        )
    return str(path)


def existing_file(value: str) -> str:
    path = Path(value).expanduser().absolute()
    if not path.is_file():
        raise rule_error(f"must be an existing file (PEM certificates); {path} is not")
    return str(path)

"""The handler contract: how handler strings load, and the context a handler receives."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from sluiceway.handlers.context import LambdaContext, function_arn
from sluiceway.handlers.loader import (
    HANDLER_NOT_FOUND,
    IMPORT_MODULE_ERROR,
    MALFORMED_HANDLER_NAME,
    USER_CODE_SYNTAX_ERROR,
    HandlerLoadError,
    load_handler,
    parse_handler_spec,
)

from tests.handlers_fixtures import async_handlers, init_state, sync_handlers

FIXTURES = "tests.handlers_fixtures"


def write_module(tmp_path: Path, source: str) -> str:
    """A uniquely named module in its own code path, so each test sees a first import."""
    name = f"handler_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(source)
    return name


# ---------------------------------------------------------------- handler strings


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("app.handler", ("app", "handler")),
        ("pkg.app.handler", ("pkg.app", "handler")),
        ("pkg.app:handler", ("pkg.app", "handler")),
        ("src/app.handler", ("src.app", "handler")),
    ],
)
def test_handler_strings_split_into_module_and_function(
    spec: str, expected: tuple[str, str]
) -> None:
    assert parse_handler_spec(spec) == expected


@pytest.mark.parametrize(
    "spec", [f"{FIXTURES}.sync_handlers:echo", f"{FIXTURES}.sync_handlers.echo"]
)
def test_both_handler_forms_load_the_same_function(spec: str) -> None:
    loaded = load_handler(spec)
    assert loaded.fn is sync_handlers.echo
    assert loaded.spec == spec
    assert loaded.is_async is False


def test_async_handlers_are_recognised() -> None:
    assert load_handler(f"{FIXTURES}.async_handlers:echo").is_async is True
    callable_object = load_handler(f"{FIXTURES}.async_handlers:callable_object")
    assert callable_object.fn is async_handlers.callable_object
    assert callable_object.is_async is True


@pytest.mark.parametrize("spec", ["handler", "app.", ".handler", "app:", ":handler", "a..b.c"])
def test_malformed_handler_names_are_rejected(spec: str) -> None:
    with pytest.raises(HandlerLoadError) as raised:
        load_handler(spec)
    assert raised.value.error_type == MALFORMED_HANDLER_NAME
    assert spec in str(raised.value)


def test_a_missing_module_is_an_import_module_error() -> None:
    with pytest.raises(HandlerLoadError) as raised:
        load_handler(f"{FIXTURES}.no_such_module.handler")
    assert raised.value.error_type == IMPORT_MODULE_ERROR
    assert "Unable to import module 'tests.handlers_fixtures.no_such_module'" in str(raised.value)
    assert "No module named" in str(raised.value)


def test_a_missing_dependency_names_the_dependency() -> None:
    with pytest.raises(HandlerLoadError) as raised:
        load_handler(f"{FIXTURES}.missing_dependency.handler")
    assert raised.value.error_type == IMPORT_MODULE_ERROR
    assert "a_package_that_is_not_installed" in str(raised.value)


def test_module_level_code_that_raises_is_an_import_module_error_with_its_cause() -> None:
    with pytest.raises(HandlerLoadError) as raised:
        load_handler(f"{FIXTURES}.broken_import.handler")
    assert raised.value.error_type == IMPORT_MODULE_ERROR
    assert "RuntimeError: cannot reach the orders database" in str(raised.value)
    assert isinstance(raised.value.__cause__, RuntimeError)


def test_a_syntax_error_is_reported_as_lambda_does(tmp_path: Path) -> None:
    name = write_module(tmp_path, "def handler(event, context)\n    return 1\n")
    with pytest.raises(HandlerLoadError) as raised:
        load_handler(f"{name}.handler", code_path=str(tmp_path))
    assert raised.value.error_type == USER_CODE_SYNTAX_ERROR
    assert f"Syntax error in module '{name}'" in str(raised.value)


@pytest.mark.parametrize("function", ["no_such_function", "not_a_function"])
def test_a_missing_or_uncallable_attribute_is_handler_not_found(function: str) -> None:
    with pytest.raises(HandlerLoadError) as raised:
        load_handler(f"{FIXTURES}.sync_handlers.{function}")
    assert raised.value.error_type == HANDLER_NOT_FOUND
    assert function in str(raised.value)


def test_a_failed_load_is_retried_and_succeeds_once_the_code_is_fixed(tmp_path: Path) -> None:
    name = write_module(tmp_path, "raise RuntimeError('not yet')\n")
    with pytest.raises(HandlerLoadError):
        load_handler(f"{name}.handler", code_path=str(tmp_path))
    (tmp_path / f"{name}.py").write_text("def handler(event, context):\n    return 'fixed'\n")
    assert load_handler(f"{name}.handler", code_path=str(tmp_path)).fn({}, None) == "fixed"


# ---------------------------------------------------------------- init phase


def test_code_path_is_searched_for_the_module(tmp_path: Path) -> None:
    name = write_module(tmp_path, "def handler(event, context):\n    return 'from code path'\n")
    loaded = load_handler(f"{name}:handler", code_path=str(tmp_path))
    assert loaded.fn({}, None) == "from code path"


def test_module_level_code_runs_once_and_its_duration_is_the_init_duration() -> None:
    runs_before = init_state.RUNS
    first = load_handler(f"{FIXTURES}.init_once.handler")
    assert runs_before + 1 == init_state.RUNS
    assert first.init_duration >= 0.05

    started = time.perf_counter()
    again = load_handler(f"{FIXTURES}.init_once.handler")
    other_form = load_handler(f"{FIXTURES}.init_once:handler")
    assert time.perf_counter() - started < 0.01
    assert again is first
    assert other_form.init_duration == first.init_duration
    assert runs_before + 1 == init_state.RUNS


# ---------------------------------------------------------------- context


def make_context(timeout: float = 3.0, **overrides: object) -> LambdaContext:
    fields: dict[str, object] = {
        "aws_request_id": "c9b8fa9f-5a7f-4d1b-9d0f-4d3b6a1c2e3f",
        "function_name": "orders",
        "timeout": timeout,
        "memory_limit_in_mb": 256,
        "region": "eu-west-1",
        "account": "123456789012",
    }
    fields.update(overrides)
    return LambdaContext(**fields)  # type: ignore[arg-type]


def test_context_has_lambdas_fields_and_types() -> None:
    context = make_context()
    assert context.aws_request_id == "c9b8fa9f-5a7f-4d1b-9d0f-4d3b6a1c2e3f"
    assert context.function_name == "orders"
    assert context.function_version == "$LATEST"
    assert context.invoked_function_arn == "arn:aws:lambda:eu-west-1:123456789012:function:orders"
    assert context.memory_limit_in_mb == "256"
    assert isinstance(context.memory_limit_in_mb, str)
    assert context.log_group_name == "/aws/lambda/orders"
    assert "[$LATEST]" in context.log_stream_name
    assert context.identity is not None
    assert context.identity.cognito_identity_id is None
    assert context.identity.cognito_identity_pool_id is None
    assert context.client_context is None
    assert context.tenant_id is None


def test_context_takes_no_unknown_attributes() -> None:
    context = make_context()
    with pytest.raises(AttributeError):
        context.something_else = 1  # type: ignore[attr-defined]


def test_context_repr_names_the_request() -> None:
    text = repr(make_context())
    assert text.startswith("LambdaContext([")
    assert "aws_request_id=c9b8fa9f-5a7f-4d1b-9d0f-4d3b6a1c2e3f" in text
    assert "memory_limit_in_mb=256" in text


def test_function_arn_uses_the_regions_partition() -> None:
    assert function_arn("cn-north-1", "123456789012", "f").startswith("arn:aws-cn:lambda:")
    assert function_arn("us-gov-west-1", "123456789012", "f").startswith("arn:aws-us-gov:")


def test_remaining_time_counts_down_from_the_timeout() -> None:
    context = make_context(timeout=3.0)
    first = context.get_remaining_time_in_millis()
    assert isinstance(first, int)
    assert 2900 < first <= 3000
    time.sleep(0.05)
    assert context.get_remaining_time_in_millis() <= first - 40


def test_remaining_time_counts_from_the_invocation_start() -> None:
    context = make_context(timeout=3.0, started=time.monotonic() - 1.0)
    assert 1900 < context.get_remaining_time_in_millis() <= 2000


def test_remaining_time_stops_at_zero() -> None:
    context = make_context(timeout=0.01)
    time.sleep(0.03)
    assert context.get_remaining_time_in_millis() == 0

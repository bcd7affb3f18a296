"""Functions as their own configuration: declared functions, mappings that name them, the async
queue and the Invoke API's settings, and how each problem is reported."""

from __future__ import annotations

import pytest
from sluiceway.config import ConfigError, load_settings

QUEUE = "arn:aws:sqs:us-east-1:000000000000:orders"
HANDLER = "sluiceway.handlers.examples.orders:handler"
F = "SLUICEWAY_FUNCTIONS__ORDERS__"


def rejected(env: dict[str, str], variable: str, rule: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    found = [p for p in caught.value.problems if p.variable == variable and rule in p.rule]
    assert found, f"expected {variable}: ...{rule}... in\n{caught.value}"


def test_a_declared_function_loads_with_lambdas_defaults() -> None:
    settings = load_settings({F + "HANDLER": HANDLER})
    function = settings.functions["orders"]
    assert function.maximum_retry_attempts == 2
    assert function.maximum_event_age_in_seconds == 21600
    assert function.timeout == 3.0
    assert function.arn == "arn:aws:lambda:us-east-1:000000000000:function:orders"
    assert settings.async_.retry_delays_seconds == [60, 120]
    assert settings.async_.backend == "sqlite"
    assert settings.api.auth == "sigv4"
    assert not settings.mappings


def test_a_mapping_naming_a_function_runs_with_its_settings() -> None:
    settings = load_settings(
        {
            F + "HANDLER": HANDLER,
            F + "TIMEOUT": "9",
            F + "RESERVED_CONCURRENT_EXECUTIONS": "4",
            "SLUICEWAY_MAPPINGS__Q__SOURCE": QUEUE,
            "SLUICEWAY_MAPPINGS__Q__FUNCTION_NAME": "Orders",
        }
    )
    mapping = settings.mappings["q"]
    assert (mapping.handler, mapping.function_timeout, mapping.reserved_concurrency) == (
        HANDLER,
        9.0,
        4,
    )
    assert list(settings.function_table()) == ["orders"]


def test_a_mapping_level_handler_declares_its_own_function() -> None:
    settings = load_settings(
        {"SLUICEWAY_MAPPINGS__Q__SOURCE": QUEUE, "SLUICEWAY_MAPPINGS__Q__HANDLER": HANDLER}
    )
    table = settings.function_table()
    assert list(table) == ["q"]
    assert table["q"].handler == HANDLER
    assert table["q"].arn == "arn:aws:lambda:us-east-1:000000000000:function:q"


@pytest.mark.parametrize(
    ("env", "variable", "rule"),
    [
        (
            {F + "HANDLER": HANDLER, F + "TIMOUT": "3"},
            F + "TIMOUT",
            "did you mean " + F + "TIMEOUT?",
        ),
        (
            {F + "HANDLER": HANDLER, F + "MAXIMUM_RETRY_ATTEMPTS": "3"},
            F + "MAXIMUM_RETRY_ATTEMPTS",
            "from 0 to 2",
        ),
        (
            {F + "HANDLER": HANDLER, F + "MAXIMUM_EVENT_AGE_IN_SECONDS": "59"},
            F + "MAXIMUM_EVENT_AGE_IN_SECONDS",
            "from 60 to 21600",
        ),
        (
            {
                F + "HANDLER": HANDLER,
                F + "DESTINATION_CONFIG__ON_SUCCESS__DESTINATION": "arn:aws:s3:::bucket",
            },
            F + "DESTINATION_CONFIG__ON_SUCCESS__DESTINATION",
            "on-failure destination only",
        ),
        (
            {
                F + "HANDLER": HANDLER,
                F
                + "DESTINATION_CONFIG__ON_FAILURE__DESTINATION": "arn:aws:sqs:us-east-1:000000000000:x.fifo",
            },
            F + "DESTINATION_CONFIG__ON_FAILURE__DESTINATION",
            "FIFO",
        ),
        (
            {F + "HANDLER": HANDLER, F + "DEAD_LETTER_CONFIG__TARGET_ARN": "arn:aws:s3:::bucket"},
            F + "DEAD_LETTER_CONFIG__TARGET_ARN",
            "standard SQS queue or SNS topic",
        ),
        (
            {
                "SLUICEWAY_MAPPINGS__Q__SOURCE": QUEUE,
                "SLUICEWAY_MAPPINGS__Q__FUNCTION_NAME": "nope",
            },
            "SLUICEWAY_MAPPINGS__Q__FUNCTION_NAME",
            "names no declared function",
        ),
        (
            {
                F + "HANDLER": HANDLER,
                "SLUICEWAY_MAPPINGS__Q__SOURCE": QUEUE,
                "SLUICEWAY_MAPPINGS__Q__FUNCTION_NAME": "orders",
                "SLUICEWAY_MAPPINGS__Q__HANDLER": HANDLER,
            },
            "SLUICEWAY_MAPPINGS__Q__HANDLER",
            "is declared by SLUICEWAY_FUNCTIONS__ORDERS__*",
        ),
        (
            {
                "SLUICEWAY_MAPPINGS__A__SOURCE": QUEUE,
                "SLUICEWAY_MAPPINGS__A__HANDLER": HANDLER,
                "SLUICEWAY_MAPPINGS__A__FUNCTION_NAME": "shared",
                "SLUICEWAY_MAPPINGS__B__SOURCE": QUEUE,
                "SLUICEWAY_MAPPINGS__B__HANDLER": HANDLER,
                "SLUICEWAY_MAPPINGS__B__FUNCTION_NAME": "shared",
                "SLUICEWAY_MAPPINGS__B__FUNCTION_TIMEOUT": "9",
            },
            "SLUICEWAY_MAPPINGS__B__FUNCTION_TIMEOUT",
            "one function has one set of handler settings",
        ),
        (
            {"SLUICEWAY_ASYNC__BACKEND": "sqs"},
            "SLUICEWAY_ASYNC__QUEUE",
            "the sqs backend needs a queue",
        ),
        (
            {"SLUICEWAY_ASYNC__RETRY_DELAY": "[1,2]"},
            "SLUICEWAY_ASYNC__RETRY_DELAY",
            "did you mean SLUICEWAY_ASYNC__RETRY_DELAYS_SECONDS?",
        ),
        (
            {"SLUICEWAY_ASYNC__RETRY_DELAYS_SECONDS": "[1]"},
            "SLUICEWAY_ASYNC__RETRY_DELAYS_SECONDS",
            "two delays",
        ),
        ({"SLUICEWAY_API__AUTH": "basic"}, "SLUICEWAY_API__AUTH", "must be 'sigv4' or 'none'"),
        (
            {"SLUICEWAY_FUNCTIONS__BAD.NAME__HANDLER": HANDLER},
            "SLUICEWAY_FUNCTIONS__BAD.NAME__*",
            "1 to 64 letters",
        ),
    ],
)
def test_rejects(env: dict[str, str], variable: str, rule: str) -> None:
    rejected(env, variable, rule)


def test_a_functions_environment_takes_one_variable_per_entry_as_a_mappings_does() -> None:
    settings = load_settings(
        {
            F + "HANDLER": HANDLER,
            F + "ISOLATION": "process",
            F + "ENVIRONMENT": '{"TABLE_NAME": "a", "STAGE": "dev"}',
            F + "ENVIRONMENT__Table_Name": "b",
            F + "ENVIRONMENT__TABLE_NAME": "c",
        }
    )
    (function,) = settings.functions.values()
    assert function.environment == {"TABLE_NAME": "c", "STAGE": "dev", "Table_Name": "b"}

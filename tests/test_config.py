"""Configuration: what loads, what each AWS rule rejects, and how problems are reported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sluiceway.config import (
    ConfigError,
    ConfigProblem,
    MappingConfig,
    Settings,
    VisibilityBackoff,
    load_settings,
    parse_destination,
    parse_source,
)

QUEUE = "arn:aws:sqs:us-east-1:000000000000:orders"
FIFO_URL = "http://localhost:4566/000000000000/payments.fifo"
STREAM = "arn:aws:kinesis:us-east-1:000000000000:stream/clicks"
TABLE = "arn:aws:dynamodb:us-east-1:000000000000:table/users"
TABLE_STREAM = f"{TABLE}/stream/2024-01-01T00:00:00.000"
DDBLOCAL_TABLE = "arn:aws:dynamodb:ddblocal:000000000000:table/leases"
DDBLOCAL_STREAM = "arn:aws:dynamodb:ddblocal:000000000000:table/users/stream/2026-01-01T00:00:00.000"
HANDLER = "sluiceway.handlers.examples.orders:handler"
PATTERN = json.dumps({"body": {"type": ["order"]}})


def mapping_env(name: str, **fields: Any) -> dict[str, str]:
    """`SLUICEWAY_MAPPINGS__<NAME>__<FIELD>` variables; `a__b=` nests, None leaves a field out."""
    env = {}
    for key, value in fields.items():
        if value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        env[f"SLUICEWAY_MAPPINGS__{name.upper()}__{key.upper()}"] = text
    return env


def sqs(**fields: Any) -> dict[str, str]:
    return mapping_env("orders", **{"source": QUEUE, "handler": HANDLER, **fields})


def fifo(**fields: Any) -> dict[str, str]:
    return mapping_env("payments", **{"source": FIFO_URL, "handler": HANDLER, **fields})


def kinesis(**fields: Any) -> dict[str, str]:
    defaults = {"source": STREAM, "handler": "app.handler", "starting_position": "TRIM_HORIZON"}
    return mapping_env("clicks", **{**defaults, **fields})


def dynamodb(**fields: Any) -> dict[str, str]:
    defaults = {"source": TABLE_STREAM, "handler": "app.handler", "starting_position": "LATEST"}
    return mapping_env("users", **{**defaults, **fields})


def problems(env: dict[str, str]) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    return caught.value.problems


def assert_rejected(env: dict[str, str], variable: str, rule: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    error = caught.value
    matching = [p for p in error.problems if p.variable == variable and rule in p.rule]
    assert matching, f"expected {variable}: ...{rule}... in\n{error}"
    return error


# --- what loads -----------------------------------------------------------------------------------


def test_every_source_kind_loads_with_aws_defaults() -> None:
    env = {**sqs(), **fifo(), **kinesis(), **dynamodb(source=TABLE), "AWS_REGION": "eu-west-1"}
    settings = load_settings(env)

    orders, payments = settings.mappings["orders"], settings.mappings["payments"]
    clicks, users = settings.mappings["clicks"], settings.mappings["users"]
    assert [m.kind for m in (orders, payments, clicks, users)] == [
        "sqs", "sqs", "kinesis", "dynamodb"
    ]
    assert [m.effective_batch_size for m in (orders, payments, clicks, users)] == [10, 10, 100, 100]
    assert orders.name == "orders" and orders.effective_function_name == "orders"
    assert orders.enabled and orders.maximum_batching_window_in_seconds == 0
    assert orders.function_timeout == 3 and orders.memory_size == 128
    assert not orders.report_batch_item_failures and orders.filter_criteria is None
    assert payments.source_ref.fifo and payments.source_ref.queue_url == FIFO_URL
    assert payments.source_ref.arn == "arn:aws:sqs:eu-west-1:000000000000:payments.fifo"
    assert clicks.parallelization_factor == 1 and not clicks.bisect_batch_on_function_error
    assert clicks.maximum_retry_attempts == -1 and clicks.maximum_record_age_in_seconds == -1
    assert users.source_ref.table == "users" and users.source_ref.stream_label is None
    assert settings.aws_region == "eu-west-1"
    checkpoints, http = settings.checkpoints, settings.http
    assert (checkpoints.backend, checkpoints.path) == ("sqlite", "./sluiceway.db")
    assert (http.enabled, http.host, http.port) == (True, "0.0.0.0", 8080)
    assert (settings.log_level, settings.log_format) == ("INFO", None)  # None: by the terminal


def test_documented_example_loads() -> None:
    env = {
        **sqs(
            batch_size="10",
            function_response_types='["ReportBatchItemFailures"]',
            filter_criteria=json.dumps({"Filters": [{"Pattern": PATTERN}]}),
            scaling_config__maximum_concurrency="5",
            function_timeout="30",
        ),
        **kinesis(
            parallelization_factor="4",
            bisect_batch_on_function_error="true",
            maximum_retry_attempts="3",
            maximum_record_age_in_seconds="3600",
            destination_config__on_failure__destination=f"{QUEUE}-failed",
            tumbling_window_in_seconds="60",
        ),
        "SLUICEWAY_CHECKPOINTS__BACKEND": "dynamodb",
        "SLUICEWAY_CHECKPOINTS__TABLE": "sluiceway-leases",
        "SLUICEWAY_HTTP__PORT": "9090",
        "SLUICEWAY_LOG_LEVEL": "debug",
        "SLUICEWAY_LOG_FORMAT": "text",
    }
    settings = load_settings(env)

    orders, clicks = settings.mappings["orders"], settings.mappings["clicks"]
    assert orders.report_batch_item_failures
    assert orders.scaling_config is not None and orders.scaling_config.maximum_concurrency == 5
    assert orders.filter_criteria == {"Filters": [{"Pattern": PATTERN}]}
    assert orders.function_timeout == 30
    assert clicks.parallelization_factor == 4 and clicks.bisect_batch_on_function_error
    destination = clicks.on_failure_destination
    assert destination is not None and destination.kind == "sqs" and not destination.fifo
    assert settings.checkpoints.table == "sluiceway-leases" and settings.http.port == 9090
    assert (settings.log_level, settings.log_format) == ("DEBUG", "text")


@pytest.mark.parametrize(
    ("env", "check"),
    [
        (sqs(function_timeout="3600"), lambda m: m.function_timeout == 3600),
        (sqs(function_name="orders-fn"), lambda m: m.effective_function_name == "orders-fn"),
        (sqs(batch_size="10000", maximum_batching_window_in_seconds="1"),
         lambda m: m.effective_batch_size == 10000),
        (sqs(function_response_types="ReportBatchItemFailures"),
         lambda m: m.report_batch_item_failures),
        (sqs(visibility_backoff__max_seconds="60"),
         lambda m: m.visibility_backoff == VisibilityBackoff(max_seconds=60)),
        (sqs(destination_config__on_failure__destination=""),
         lambda m: m.on_failure_destination is None),
        (sqs(maximum_retry_attempts="2", destination_config__on_failure__destination=f"{QUEUE}-f"),
         lambda m: m.on_failure_destination is not None and m.maximum_retry_attempts == 2),
        (kinesis(starting_position="AT_TIMESTAMP", starting_position_timestamp="2024-01-01T00:00Z"),
         lambda m: m.starting_position_timestamp == 1704067200.0),
        (kinesis(starting_position="latest"), lambda m: m.starting_position == "LATEST"),
        (kinesis(batch_size="500"), lambda m: m.effective_batch_size == 500),
        (kinesis(tumbling_window_in_seconds="0"), lambda m: m.tumbling_window_in_seconds == 0),
        (dynamodb(maximum_record_age_in_seconds="60"),
         lambda m: m.maximum_record_age_in_seconds == 60),
        (kinesis(handler="https://rie.local:9000/2015-03-31/functions/function/invocations"),
         lambda m: m.handler_kind == "http"),
        (kinesis(handler="arn:aws:lambda:us-east-1:000000000000:function:clicks:live"),
         lambda m: m.handler_kind == "lambda"),
        (kinesis(handler="src/app.handler"), lambda m: m.handler_kind == "python"),
        (kinesis(deaggregate_records="true"), lambda m: m.deaggregate_records),
        (kinesis(), lambda m: not m.deaggregate_records),
    ],
    ids=[
        "timeout-beyond-lambdas-900s",
        "function-name",
        "large-sqs-batch-with-window",
        "comma-list-for-response-types",
        "visibility-backoff-defaults",
        "empty-destination-means-none",
        "sqs-destination-with-retry-attempts",
        "iso-timestamp",
        "starting-position-any-case",
        "stream-batch-over-ten-without-window",
        "tumbling-window-zero",
        "record-age-lower-bound",
        "http-handler",
        "lambda-arn-handler",
        "lambda-style-handler-path",
        "kinesis-deaggregation-on",
        "kinesis-deaggregation-off-by-default",
    ],
)
def test_accepts(env: dict[str, str], check: Any) -> None:
    (mapping,) = load_settings(env).mappings.values()
    assert check(mapping)


def test_code_path_must_be_a_directory(tmp_path: Path) -> None:
    (mapping,) = load_settings(sqs(code_path=str(tmp_path))).mappings.values()
    assert mapping.code_path == str(tmp_path)
    variable = "SLUICEWAY_MAPPINGS__ORDERS__CODE_PATH"
    assert_rejected(sqs(code_path=str(tmp_path / "absent")), variable, "existing directory")


def test_mapping_names_are_case_insensitive_and_stored_lowercase() -> None:
    env = {
        "SLUICEWAY_MAPPINGS__Orders__SOURCE": QUEUE,
        "sluiceway_mappings__ORDERS__handler": HANDLER,
    }
    assert list(load_settings(env).mappings) == ["orders"]


def test_region_comes_from_aws_region_then_aws_default_region() -> None:
    url_only = sqs(source="http://localhost:4566/000000000000/orders")
    assert load_settings(url_only).aws_region == "us-east-1"
    settings = load_settings({**url_only, "AWS_DEFAULT_REGION": "eu-central-1"})
    assert settings.mappings["orders"].source_ref.region == "eu-central-1"
    both = {**url_only, "AWS_DEFAULT_REGION": "eu-central-1", "AWS_REGION": "ap-south-1"}
    assert load_settings(both).aws_region == "ap-south-1"


def test_idle_poll_budget_is_one_process_setting() -> None:
    assert load_settings({}).idle_polls_per_second == 50
    settings = load_settings({"SLUICEWAY_IDLE_POLLS_PER_SECOND": "2.5", **kinesis()})
    assert settings.idle_polls_per_second == 2.5
    assert settings.mappings["clicks"].idle_poll_max_seconds == 1


def test_stream_only_fields_are_checked_against_their_own_defaults() -> None:
    """An SQS mapping is rejected for a stream-only field only when it differs from the default."""
    from sluiceway.config.rules import _STREAM_ONLY

    for name, (default, _) in _STREAM_ONLY.items():
        assert MappingConfig.model_fields[name].default == default, name


def test_settings_read_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in sqs().items():
        monkeypatch.setenv(key, value)
    assert load_settings().mappings["orders"].source == QUEUE
    assert Settings().mappings["orders"].name == "orders"


# --- what each rule rejects -----------------------------------------------------------------------

M = "SLUICEWAY_MAPPINGS__"
REJECTIONS = [
    # batch size and window
    ("standard-queue-batch-over-10000",
     sqs(batch_size="20000", maximum_batching_window_in_seconds="1"),
     f"{M}ORDERS__BATCH_SIZE", "a standard SQS queue takes a batch size from 1 to 10000"),
    ("fifo-queue-batch-over-ten", fifo(batch_size="11"),
     f"{M}PAYMENTS__BATCH_SIZE", "a FIFO SQS queue takes a batch size from 1 to 10"),
    ("batch-size-zero", sqs(batch_size="0"),
     f"{M}ORDERS__BATCH_SIZE", "from 1 to 10000"),
    ("kinesis-batch-over-10000", kinesis(batch_size="10001"),
     f"{M}CLICKS__BATCH_SIZE", "a Kinesis stream takes a batch size from 1 to 10000"),
    ("dynamodb-batch-over-10000", dynamodb(batch_size="10001"),
     f"{M}USERS__BATCH_SIZE", "a DynamoDB stream takes a batch size from 1 to 10000"),
    ("sqs-batch-over-ten-without-window", sqs(batch_size="11"),
     f"{M}ORDERS__MAXIMUM_BATCHING_WINDOW_IN_SECONDS", "needs a batching window of at least 1s"),
    ("fifo-queue-with-window", fifo(maximum_batching_window_in_seconds="1"),
     f"{M}PAYMENTS__MAXIMUM_BATCHING_WINDOW_IN_SECONDS", "FIFO SQS queue takes no batching window"),
    ("window-over-300", sqs(maximum_batching_window_in_seconds="301"),
     f"{M}ORDERS__MAXIMUM_BATCHING_WINDOW_IN_SECONDS", "from 0 to 300"),
    ("fractional-window", sqs(maximum_batching_window_in_seconds="0.5"),
     f"{M}ORDERS__MAXIMUM_BATCHING_WINDOW_IN_SECONDS", "whole number"),
    # starting position
    ("stream-without-starting-position", kinesis(starting_position=None),
     f"{M}CLICKS__STARTING_POSITION", "needs a starting position"),
    ("sqs-with-starting-position", sqs(starting_position="LATEST"),
     f"{M}ORDERS__STARTING_POSITION", "SQS mappings take no starting position"),
    ("dynamodb-at-timestamp",
     dynamodb(starting_position="AT_TIMESTAMP", starting_position_timestamp="1"),
     f"{M}USERS__STARTING_POSITION", "starts only at TRIM_HORIZON or LATEST"),
    ("at-timestamp-without-timestamp", kinesis(starting_position="AT_TIMESTAMP"),
     f"{M}CLICKS__STARTING_POSITION_TIMESTAMP", "AT_TIMESTAMP needs a starting_position_timestamp"),
    ("timestamp-without-at-timestamp", kinesis(starting_position_timestamp="1700000000"),
     f"{M}CLICKS__STARTING_POSITION_TIMESTAMP", "only with starting_position AT_TIMESTAMP"),
    ("unknown-starting-position", kinesis(starting_position="EARLIEST"),
     f"{M}CLICKS__STARTING_POSITION", "'TRIM_HORIZON', 'LATEST' or 'AT_TIMESTAMP'"),
    # stream-only and SQS-only settings
    ("sqs-parallelization", sqs(parallelization_factor="2"),
     f"{M}ORDERS__PARALLELIZATION_FACTOR", "stream mappings only"),
    ("sqs-bisect", sqs(bisect_batch_on_function_error="true"),
     f"{M}ORDERS__BISECT_BATCH_ON_FUNCTION_ERROR", "stream mappings only"),
    ("sqs-retry-attempts-without-destination", sqs(maximum_retry_attempts="3"),
     f"{M}ORDERS__MAXIMUM_RETRY_ATTEMPTS", "needs an on-failure destination"),
    ("sqs-record-age", sqs(maximum_record_age_in_seconds="60"),
     f"{M}ORDERS__MAXIMUM_RECORD_AGE_IN_SECONDS", "stream mappings only"),
    ("sqs-tumbling-window", sqs(tumbling_window_in_seconds="30"),
     f"{M}ORDERS__TUMBLING_WINDOW_IN_SECONDS", "stream mappings only"),
    ("sqs-idle-poll-max", sqs(idle_poll_max_seconds="5"),
     f"{M}ORDERS__IDLE_POLL_MAX_SECONDS", "stream mappings only"),
    ("sqs-deaggregate-records", sqs(deaggregate_records="true"),
     f"{M}ORDERS__DEAGGREGATE_RECORDS", "Kinesis stream mappings only"),
    ("dynamodb-deaggregate-records", dynamodb(deaggregate_records="true"),
     f"{M}USERS__DEAGGREGATE_RECORDS", "Kinesis stream mappings only"),
    ("sqs-destination-without-retry-attempts",
     sqs(destination_config__on_failure__destination=f"{QUEUE}-dlq"),
     f"{M}ORDERS__MAXIMUM_RETRY_ATTEMPTS", "from 0 to 10000"),
    ("sqs-fifo-destination",
     sqs(maximum_retry_attempts="2", destination_config__on_failure__destination=f"{QUEUE}.fifo"),
     f"{M}ORDERS__DESTINATION_CONFIG__ON_FAILURE__DESTINATION", "FIFO"),
    ("stream-visibility-backoff", kinesis(visibility_backoff__initial_seconds="5"),
     f"{M}CLICKS__VISIBILITY_BACKOFF__INITIAL_SECONDS", "visibility_backoff applies to SQS"),
    ("stream-maximum-concurrency", kinesis(scaling_config__maximum_concurrency="5"),
     f"{M}CLICKS__SCALING_CONFIG__MAXIMUM_CONCURRENCY", "applies to SQS mappings only"),
    # destinations
    ("fifo-queue-destination",
     kinesis(destination_config__on_failure__destination=f"{QUEUE}.fifo"),
     f"{M}CLICKS__DESTINATION_CONFIG__ON_FAILURE__DESTINATION", "FIFO SQS queue or FIFO SNS topic"),
    ("fifo-topic-destination",
     kinesis(destination_config__on_failure__destination="arn:aws:sns:us-east-1:000000000000:t.fifo"),
     f"{M}CLICKS__DESTINATION_CONFIG__ON_FAILURE__DESTINATION", "FIFO SQS queue or FIFO SNS topic"),
    ("lambda-destination",
     kinesis(destination_config__on_failure__destination="arn:aws:lambda:us-east-1:000000000000:function:f"),
     f"{M}CLICKS__DESTINATION_CONFIG__ON_FAILURE__DESTINATION", "an SNS topic ARN"),
    # ranges
    ("maximum-concurrency-one", sqs(scaling_config__maximum_concurrency="1"),
     f"{M}ORDERS__SCALING_CONFIG__MAXIMUM_CONCURRENCY", "from 2 to 1000"),
    ("parallelization-eleven", kinesis(parallelization_factor="11"),
     f"{M}CLICKS__PARALLELIZATION_FACTOR", "from 1 to 10"),
    ("retries-over-10000", kinesis(maximum_retry_attempts="10001"),
     f"{M}CLICKS__MAXIMUM_RETRY_ATTEMPTS", "from -1 to 10000"),
    ("record-age-59", kinesis(maximum_record_age_in_seconds="59"),
     f"{M}CLICKS__MAXIMUM_RECORD_AGE_IN_SECONDS", "-1 (no limit) or from 60 to 604800"),
    ("record-age-over-a-week", kinesis(maximum_record_age_in_seconds="604801"),
     f"{M}CLICKS__MAXIMUM_RECORD_AGE_IN_SECONDS", "-1 (no limit) or from 60 to 604800"),
    ("tumbling-window-over-900", kinesis(tumbling_window_in_seconds="901"),
     f"{M}CLICKS__TUMBLING_WINDOW_IN_SECONDS", "from 0 to 900"),
    ("idle-poll-max-under-a-second", kinesis(idle_poll_max_seconds="0.5"),
     f"{M}CLICKS__IDLE_POLL_MAX_SECONDS", "from 1 to 300 seconds"),
    ("memory-under-128", sqs(memory_size="64"), f"{M}ORDERS__MEMORY_SIZE", "from 128 to 10240"),
    ("zero-timeout", sqs(function_timeout="0"), f"{M}ORDERS__FUNCTION_TIMEOUT", "more than 0"),
    ("backoff-multiplier", sqs(visibility_backoff__multiplier="0.5"),
     f"{M}ORDERS__VISIBILITY_BACKOFF__MULTIPLIER", "from 1 to 10"),
    ("function-name-with-dot", sqs(function_name="a.b"),
     f"{M}ORDERS__FUNCTION_NAME", "a Lambda function name"),
    # response types
    ("unknown-response-type", sqs(function_response_types='["ReportEverything"]'),
     f"{M}ORDERS__FUNCTION_RESPONSE_TYPES", "'ReportBatchItemFailures'"),
    ("two-response-types",
     sqs(function_response_types='["ReportBatchItemFailures","ReportBatchItemFailures"]'),
     f"{M}ORDERS__FUNCTION_RESPONSE_TYPES", "at most one item"),
    # forms
    ("source-not-an-arn", sqs(source="orders"), f"{M}ORDERS__SOURCE", "an SQS queue ARN"),
    ("source-with-short-account", sqs(source="arn:aws:sqs:us-east-1:123:orders"),
     f"{M}ORDERS__SOURCE", "ACCOUNT 12 digits"),
    ("handler-without-function", sqs(handler="orders"), f"{M}ORDERS__HANDLER", "module:function"),
    ("missing-handler", sqs(handler=None), f"{M}ORDERS__HANDLER", "every mapping needs a handler"),
    ("missing-source", sqs(source=None), f"{M}ORDERS__SOURCE", "every mapping needs a source"),
    ("filter-criteria-not-json", sqs(filter_criteria="{Filters"),
     f"{M}ORDERS__FILTER_CRITERIA", "is not valid JSON"),
    # service settings
    ("dynamodb-backend-without-table", {**sqs(), "SLUICEWAY_CHECKPOINTS__BACKEND": "dynamodb"},
     "SLUICEWAY_CHECKPOINTS__TABLE", "needs a lease table name"),
    ("unknown-backend", {"SLUICEWAY_CHECKPOINTS__BACKEND": "redis"},
     "SLUICEWAY_CHECKPOINTS__BACKEND", "'sqlite', 'dynamodb' or 'memory'"),
    ("port-out-of-range", {"SLUICEWAY_HTTP__PORT": "70000"}, "SLUICEWAY_HTTP__PORT", "0 to 65535"),
    ("http-enabled-not-bool", {"SLUICEWAY_HTTP__ENABLED": "sometimes"},
     "SLUICEWAY_HTTP__ENABLED", "true or false"),
    ("unknown-log-level", {"SLUICEWAY_LOG_LEVEL": "VERBOSE"}, "SLUICEWAY_LOG_LEVEL", "'DEBUG'"),
    ("unknown-log-format", {"SLUICEWAY_LOG_FORMAT": "xml"}, "SLUICEWAY_LOG_FORMAT", "'json'"),
    ("idle-poll-budget-zero", {"SLUICEWAY_IDLE_POLLS_PER_SECOND": "0"},
     "SLUICEWAY_IDLE_POLLS_PER_SECOND", "from 1 to 10000 calls per second"),
    ("idle-poll-budget-not-a-number", {"SLUICEWAY_IDLE_POLLS_PER_SECOND": "lots"},
     "SLUICEWAY_IDLE_POLLS_PER_SECOND", "number"),
    ("bad-region", {"AWS_REGION": "us_east_1"}, "AWS_REGION", "a region name the AWS SDKs accept"),
    # unknown variables
    ("misspelt-mapping-field", sqs(batchsize="5"),
     f"{M}ORDERS__BATCHSIZE", f"did you mean {M}ORDERS__BATCH_SIZE?"),
    ("unknown-top-level-variable", {"SLUICEWAY_FOO": "1"},
     "SLUICEWAY_FOO", "not a Sluiceway variable"),
    ("misspelt-section", {"SLUICEWAY_MAPPING__ORDERS__SOURCE": QUEUE},
     "SLUICEWAY_MAPPING__ORDERS__SOURCE", "did you mean SLUICEWAY_MAPPINGS__ORDERS__SOURCE?"),
    ("misspelt-http-field", {"SLUICEWAY_HTTP__PROT": "1"},
     "SLUICEWAY_HTTP__PROT", "did you mean SLUICEWAY_HTTP__PORT?"),
    ("value-nested-under-a-scalar", {"SLUICEWAY_LOG_LEVEL__X": "1"},
     "SLUICEWAY_LOG_LEVEL__X", "takes one value"),
    ("prefixed-region", {"SLUICEWAY_AWS_REGION": "eu-west-1"},
     "SLUICEWAY_AWS_REGION", "AWS_REGION"),
]


@pytest.mark.parametrize(
    ("env", "variable", "rule"),
    [case[1:] for case in REJECTIONS],
    ids=[case[0] for case in REJECTIONS],
)
def test_rejects(env: dict[str, str], variable: str, rule: str) -> None:
    error = assert_rejected(env, variable, rule)
    text = str(error)
    assert "pydantic" not in text and "Input should" not in text and "type=" not in text


def test_invalid_filter_pattern_is_rejected_by_the_routers_compiler() -> None:
    pytest.importorskip("sluiceway.config.filter_patterns")
    criteria = json.dumps({"Filters": [{"Pattern": '{"body": {"type": [{"wildcard": 1}]}}'}]})
    assert_rejected(sqs(filter_criteria=criteria), f"{M}ORDERS__FILTER_CRITERIA", "filter 1")


def test_filter_pattern_written_as_an_object_is_kept_as_json_text() -> None:
    pytest.importorskip("sluiceway.config.filter_patterns")
    criteria = {"Filters": [{"Pattern": {"body": {"type": ["order"]}}}]}
    mapping = MappingConfig(source=QUEUE, handler=HANDLER, filter_criteria=criteria)
    assert mapping.filter_criteria == {"Filters": [{"Pattern": PATTERN}]}


# --- how problems are reported --------------------------------------------------------------------


def test_problem_names_the_variable_the_value_and_the_rule() -> None:
    error = assert_rejected(
        sqs(batch_size="20000", maximum_batching_window_in_seconds="5"),
        f"{M}ORDERS__BATCH_SIZE",
        "standard",
    )
    assert (
        "SLUICEWAY_MAPPINGS__ORDERS__BATCH_SIZE='20000': "
        "a standard SQS queue takes a batch size from 1 to 10000"
    ) in str(error)


def test_unset_variable_is_reported_as_not_set() -> None:
    (problem,) = problems(kinesis(starting_position=None))
    assert str(problem).startswith("SLUICEWAY_MAPPINGS__CLICKS__STARTING_POSITION is not set: ")


def test_unknown_variable_lists_the_valid_names() -> None:
    (problem,) = problems(sqs(batchsize="5"))
    assert "BATCH_SIZE" in problem.rule and "MAXIMUM_BATCHING_WINDOW_IN_SECONDS" in problem.rule
    (problem,) = problems({"SLUICEWAY_FOO": "1"})
    assert "SLUICEWAY_MAPPINGS__<NAME>__<FIELD>" in problem.rule
    assert "SLUICEWAY_HTTP__{ENABLED|HOST|PORT}" in problem.rule


def test_all_problems_are_reported_together() -> None:
    env = {
        **sqs(batch_size="20000", memory_size="lots", starting_position="LATEST"),
        **kinesis(starting_position=None, parallelization_factor="11"),
        "SLUICEWAY_HTTP__PORT": "-1",
        "SLUICEWAY_TYPO": "x",
    }
    found = {(p.variable, p.rule.split(":")[0]) for p in problems(env)}
    assert {variable for variable, _ in found} == {
        f"{M}ORDERS__BATCH_SIZE",
        f"{M}ORDERS__MEMORY_SIZE",
        f"{M}ORDERS__STARTING_POSITION",
        f"{M}CLICKS__STARTING_POSITION",
        f"{M}CLICKS__PARALLELIZATION_FACTOR",
        "SLUICEWAY_HTTP__PORT",
        "SLUICEWAY_TYPO",
    }


def test_invalid_field_does_not_hide_a_rule_broken_by_another_field() -> None:
    variables = {p.variable for p in problems(sqs(memory_size="lots", batch_size="11"))}
    window = f"{M}ORDERS__MAXIMUM_BATCHING_WINDOW_IN_SECONDS"
    assert variables == {f"{M}ORDERS__MEMORY_SIZE", window}


def test_rule_is_not_reported_against_a_field_that_is_itself_invalid() -> None:
    env = kinesis(starting_position="AT_TIMSTAMP", starting_position_timestamp="1700000000")
    (problem,) = problems(env)
    assert problem.variable == f"{M}CLICKS__STARTING_POSITION" and "'AT_TIMESTAMP'" in problem.rule


def test_error_inside_a_json_variable_says_where() -> None:
    env = sqs(scaling_config='{"maximum_concurrency": 1}')
    (problem,) = problems(env)
    assert problem.variable == f"{M}ORDERS__SCALING_CONFIG"
    assert problem.value == '{"maximum_concurrency": 1}'
    assert problem.rule == "at maximum_concurrency: must be from 2 to 1000"


def test_bad_mapping_name_is_one_problem_for_the_mapping() -> None:
    (problem,) = problems(mapping_env("-orders", source=QUEUE, handler=HANDLER))
    assert problem.variable == f"{M}-ORDERS__*" and "mapping name" in problem.rule


def test_direct_model_construction_enforces_the_same_rules() -> None:
    with pytest.raises(ValidationError) as caught:
        MappingConfig(source=f"{QUEUE}.fifo", handler=HANDLER, batch_size=11)
    (error,) = caught.value.errors()
    assert error["loc"] == ("batch_size",) and "FIFO" in error["msg"]


# --- the config file ------------------------------------------------------------------------------

FILE_SETTINGS: dict[str, Any] = {
    "log_level": "WARNING",
    "mappings": {
        "Orders": {
            "source": QUEUE,
            "handler": HANDLER,
            "batch_size": 5,
            "memory_size": 512,
            "function_response_types": ["ReportBatchItemFailures"],
            "scaling_config": {"maximum_concurrency": 3},
        }
    },
}
TOML = """\
log_level = "WARNING"

[mappings.Orders]
source = "arn:aws:sqs:us-east-1:000000000000:orders"
handler = "sluiceway.handlers.examples.orders:handler"
batch_size = 5
memory_size = 512
function_response_types = ["ReportBatchItemFailures"]

[mappings.Orders.scaling_config]
maximum_concurrency = 3
"""


def write_config(directory: Path, suffix: str, settings: dict[str, Any] = FILE_SETTINGS) -> Path:
    import yaml

    path = directory / f"sluiceway{suffix}"
    if suffix == ".toml":
        assert settings is FILE_SETTINGS
        path.write_text(TOML)
    elif suffix == ".json":
        path.write_text(json.dumps(settings))
    else:
        path.write_text(yaml.safe_dump(settings))
    return path


@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".yml", ".json"])
def test_config_file_loads(tmp_path: Path, suffix: str) -> None:
    path = write_config(tmp_path, suffix)
    settings = load_settings({"SLUICEWAY_CONFIG_FILE": str(path)})
    orders = settings.mappings["orders"]
    assert (orders.batch_size, orders.memory_size) == (5, 512)
    assert orders.report_batch_item_failures
    assert orders.scaling_config is not None and orders.scaling_config.maximum_concurrency == 3
    assert settings.log_level == "WARNING" and settings.config_file == str(path)


@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".json"])
def test_environment_overrides_one_file_value_and_keeps_the_rest(
    tmp_path: Path, suffix: str
) -> None:
    path = write_config(tmp_path, suffix)
    env = {
        "SLUICEWAY_CONFIG_FILE": str(path),
        "SLUICEWAY_MAPPINGS__ORDERS__BATCH_SIZE": "7",
        "SLUICEWAY_MAPPINGS__ORDERS__SCALING_CONFIG__MAXIMUM_CONCURRENCY": "9",
    }
    orders = load_settings(env).mappings["orders"]
    assert (orders.batch_size, orders.memory_size, orders.handler) == (7, 512, HANDLER)
    assert orders.scaling_config is not None and orders.scaling_config.maximum_concurrency == 9
    assert orders.report_batch_item_failures


def test_file_problem_names_the_key_and_the_file(tmp_path: Path) -> None:
    settings = json.loads(json.dumps(FILE_SETTINGS))
    settings["mappings"]["Orders"].update(batch_size=20000, maximum_batching_window_in_seconds=1)
    path = write_config(tmp_path, ".json", settings)
    (problem,) = problems({"SLUICEWAY_CONFIG_FILE": str(path)})
    assert problem.variable == f"mappings.orders.batch_size in {path}"
    assert problem.value == 20000
    assert str(problem) == (
        f"mappings.orders.batch_size = 20000 in {path}: "
        "a standard SQS queue takes a batch size from 1 to 10000"
    )


def test_file_typo_and_missing_key_are_named_in_the_file(tmp_path: Path) -> None:
    settings = {"mappings": {"orders": {"source": QUEUE, "batchsize": 5}}}
    path = write_config(tmp_path, ".yaml", settings)
    found = {p.variable: p for p in problems({"SLUICEWAY_CONFIG_FILE": str(path)})}
    typo = found[f"mappings.orders.batchsize in {path}"]
    assert "did you mean mappings.orders.batch_size?" in typo.rule
    assert str(found[f"mappings.orders.handler in {path}"]).startswith(
        f"mappings.orders.handler in {path} is not set"
    )


@pytest.mark.parametrize(
    ("name", "content", "rule"),
    [
        ("absent.toml", None, "no such file"),
        ("sluiceway.ini", "", "must name a .toml, .yaml, .yml or .json file"),
        ("broken.toml", "[mappings.orders\n", "is not valid TOML"),
        ("broken.json", "{", "is not valid JSON"),
        ("broken.yaml", "a: [1\n", "is not valid YAML"),
        ("list.yaml", "- 1\n", "must hold a YAML object of settings"),
        ("list.json", "[1]", "must hold a JSON object of settings"),
    ],
)
def test_unreadable_config_file_is_reported(
    tmp_path: Path, name: str, content: str | None, rule: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    (problem,) = problems({"SLUICEWAY_CONFIG_FILE": str(path)})
    assert problem.variable == "SLUICEWAY_CONFIG_FILE" and rule in problem.rule


# --- parsing ARNs and URLs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (QUEUE, ("sqs", "us-east-1", "000000000000", "orders", False, QUEUE)),
        ("arn:aws-cn:sqs:cn-north-1:123456789012:jobs.fifo",
         ("sqs", "cn-north-1", "123456789012", "jobs.fifo", True,
          "arn:aws-cn:sqs:cn-north-1:123456789012:jobs.fifo")),
        ("https://sqs.eu-west-1.amazonaws.com/123456789012/jobs",
         ("sqs", "eu-west-1", "123456789012", "jobs", False,
          "arn:aws:sqs:eu-west-1:123456789012:jobs")),
        ("https://eu-west-2.queue.amazonaws.com/123456789012/jobs",
         ("sqs", "eu-west-2", "123456789012", "jobs", False,
          "arn:aws:sqs:eu-west-2:123456789012:jobs")),
        ("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/jobs",
         ("sqs", "cn-north-1", "123456789012", "jobs", False,
          "arn:aws-cn:sqs:cn-north-1:123456789012:jobs")),
        ("http://localhost:4566/000000000000/orders",
         ("sqs", "ap-east-1", "000000000000", "orders", False,
          "arn:aws:sqs:ap-east-1:000000000000:orders")),
        (STREAM, ("kinesis", "us-east-1", "000000000000", "clicks", False, STREAM)),
        (TABLE_STREAM, ("dynamodb", "us-east-1", "000000000000", "users", False, TABLE_STREAM)),
        (TABLE, ("dynamodb", "us-east-1", "000000000000", "users", False, TABLE)),
        # DynamoDB Local's ARNs name the placeholder region `ddblocal`: reached in the default
        (DDBLOCAL_STREAM, ("dynamodb", "ap-east-1", "000000000000", "users", False, DDBLOCAL_STREAM)),
        ("arn:aws:dynamodb:ddblocal:000000000000:table/users",
         ("dynamodb", "ap-east-1", "000000000000", "users", False,
          "arn:aws:dynamodb:ddblocal:000000000000:table/users")),
        # any region name the SDKs accept is a region (an emulator's, a new one)
        ("arn:aws:sqs:local:000000000000:orders",
         ("sqs", "local", "000000000000", "orders", False, "arn:aws:sqs:local:000000000000:orders")),
    ],
)
def test_parse_source(value: str, expected: tuple[Any, ...]) -> None:
    ref = parse_source(value, default_region="ap-east-1")
    assert (ref.kind, ref.region, ref.account, ref.name, ref.fifo, ref.arn) == expected


def test_parse_source_keeps_the_dynamodb_stream_label() -> None:
    ref = parse_source(TABLE_STREAM, "us-east-1")
    assert (ref.table, ref.stream_label) == ("users", "2024-01-01T00:00:00.000")


@pytest.mark.parametrize(
    "value",
    [
        "orders",
        "arn:aws:sqs:us-east-1:000000000000",
        "arn:aws:sns:us-east-1:000000000000:topic",
        "arn:aws:kinesis:us-east-1:000000000000:clicks",
        "arn:aws:dynamodb:us-east-1:000000000000:table/ab",
        "https://sqs.us-east-1.amazonaws.com/orders",
        "https://sqs.us-east-1.amazonaws.com/000000000000/bad name",
        "arn:aws:sqs:us_east_1:000000000000:orders",  # botocore refuses the region
        "arn:aws:sqs:-east-1:000000000000:orders",
        "arn:aws:sqs:123:000000000000:orders",
        "arn:aws:sqs::000000000000:orders",
    ],
)
def test_parse_source_rejects(value: str) -> None:
    with pytest.raises(ValueError, match=r"must|is not"):
        parse_source(value, "us-east-1")


@pytest.mark.parametrize(
    ("value", "kind", "name", "fifo"),
    [
        (QUEUE, "sqs", "orders", False),
        ("arn:aws:sqs:us-east-1:000000000000:orders.fifo", "sqs", "orders.fifo", True),
        ("arn:aws:sns:us-east-1:000000000000:alerts", "sns", "alerts", False),
        ("arn:aws:sns:us-east-1:000000000000:alerts.fifo", "sns", "alerts.fifo", True),
        ("arn:aws:s3:::failed-batches", "s3", "failed-batches", False),
        ("arn:aws:events:us-east-1:000000000000:event-bus/default", "events", "default", False),
    ],
)
def test_parse_destination(value: str, kind: str, name: str, fifo: bool) -> None:
    ref = parse_destination(value)
    assert (ref.kind, ref.arn, ref.name, ref.fifo) == (kind, value, name, fifo)


@pytest.mark.parametrize(
    ("value", "region", "account"),
    [
        ("arn:aws:sqs:eu-central-1:111122223333:failed", "eu-central-1", "111122223333"),
        ("arn:aws:sns:ap-south-1:111122223333:alerts", "ap-south-1", "111122223333"),
        ("arn:aws:events:us-west-2:111122223333:event-bus/default", "us-west-2", "111122223333"),
        ("arn:aws:s3:::failed-batches", None, None),  # a bucket ARN names no region
        ("arn:aws:sqs:ddblocal:000000000000:failed", None, "000000000000"),  # a placeholder
    ],
)
def test_a_destination_is_reached_in_the_region_its_arn_names(
    value: str, region: str | None, account: str | None
) -> None:
    ref = parse_destination(value)
    assert (ref.region, ref.account) == (region, account)


@pytest.mark.parametrize(
    "region", ["us-east-1", "ddblocal", "local", "eu-isoe-west-1", "x", "a" * 63]
)
def test_aws_region_takes_any_region_name_the_sdk_takes(region: str) -> None:
    assert load_settings({"AWS_REGION": region}).aws_region == region


def test_the_lease_table_may_be_an_arn_in_its_own_region() -> None:
    base = {"AWS_REGION": "eu-west-1", "SLUICEWAY_CHECKPOINTS__BACKEND": "dynamodb"}
    by_name = load_settings({**base, "SLUICEWAY_CHECKPOINTS__TABLE": "leases"})
    assert by_name.checkpoints.lease_table(by_name.aws_region) == ("leases", "eu-west-1")
    arn = "arn:aws:dynamodb:us-east-2:111122223333:table/leases"
    by_arn = load_settings({**base, "SLUICEWAY_CHECKPOINTS__TABLE": arn})
    assert by_arn.checkpoints.lease_table(by_arn.aws_region) == ("leases", "us-east-2")
    local = load_settings({**base, "SLUICEWAY_CHECKPOINTS__TABLE": DDBLOCAL_TABLE})
    assert local.checkpoints.lease_table(local.aws_region) == ("leases", "eu-west-1")
    stream = f"{arn}/stream/2024-01-01T00:00:00.000"
    assert_rejected({**base, "SLUICEWAY_CHECKPOINTS__TABLE": stream},
                    "SLUICEWAY_CHECKPOINTS__TABLE", "or a table ARN")


def test_visibility_backoff_grows_per_receive_up_to_its_cap() -> None:
    backoff = VisibilityBackoff(initial_seconds=30, multiplier=2, max_seconds=100)
    assert [backoff.timeout_for(count) for count in (1, 2, 3, 4, 1000)] == [30, 60, 100, 100, 100]


# --- ENVIRONMENT, key by key ----------------------------------------------------------------------


def worker_env(**variables: str) -> dict[str, str]:
    env = sqs(isolation="process")
    for suffix, value in variables.items():
        env[f"SLUICEWAY_MAPPINGS__ORDERS__ENVIRONMENT{suffix}"] = value
    return env


def test_environment_entries_are_set_one_variable_each_with_their_case_kept() -> None:
    env = worker_env(__TABLE_NAME="orders", __Mixed_Case="yes", __WITH__TWO="2")
    assert load_settings(env).mappings["orders"].environment == {
        "TABLE_NAME": "orders",
        "Mixed_Case": "yes",
        "WITH__TWO": "2",  # everything after ENVIRONMENT__ is the name
    }


def test_environment_entries_go_over_the_json_object() -> None:
    env = worker_env(**{"": '{"A": "1", "TABLE_NAME": "old"}', "__TABLE_NAME": "orders"})
    assert load_settings(env).mappings["orders"].environment == {"A": "1", "TABLE_NAME": "orders"}


def test_environment_json_alone_still_loads_and_bad_json_is_still_named() -> None:
    assert load_settings(worker_env(**{"": '{"A": "1"}'})).mappings["orders"].environment == {
        "A": "1"
    }
    assert_rejected(worker_env(**{"": '{"A": 1'}), "SLUICEWAY_MAPPINGS__ORDERS__ENVIRONMENT",
                    "is not valid JSON")


def test_environment_entries_merge_with_a_config_file(tmp_path: Path) -> None:
    path = tmp_path / "sluiceway.toml"
    path.write_text(
        f'[mappings.orders]\nsource = "{QUEUE}"\nhandler = "{HANDLER}"\nisolation = "process"\n'
        '[mappings.orders.environment]\nFROM_FILE = "f"\nTABLE_NAME = "file"\n'
    )
    env = {
        "SLUICEWAY_CONFIG_FILE": str(path),
        "SLUICEWAY_MAPPINGS__ORDERS__ENVIRONMENT__TABLE_NAME": "env",
    }
    assert load_settings(env).mappings["orders"].environment == {
        "FROM_FILE": "f",
        "TABLE_NAME": "env",
    }


def test_other_fields_still_take_one_value() -> None:
    assert_rejected(sqs(filter_criteria__filters="x"),
                    "SLUICEWAY_MAPPINGS__ORDERS__FILTER_CRITERIA__FILTERS", "nothing nests under it")

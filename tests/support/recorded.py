"""Event and failure-record shapes recorded against real AWS (see tests/fixtures/aws-recorded)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SHAPES: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "aws-recorded" / "shapes.json").read_text()
)

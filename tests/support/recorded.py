"""Event and failure-record shapes recorded against real AWS (see tests/fixtures/aws-recorded)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SHAPES: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "aws-recorded" / "shapes.json").read_text()
)


def _json_blocks(markdown: str) -> list[Any]:
    blocks = markdown.split("```json\n")[1:]
    return [json.loads(block.split("```", 1)[0]) for block in blocks]


ASYNC_SUCCESS, ASYNC_FAILURE = _json_blocks(
    (
        Path(__file__).resolve().parents[1] / "fixtures" / "aws-recorded" / "async-invocation.md"
    ).read_text()
)
"""The on-success and on-failure records of an asynchronous invocation, as AWS sends them."""

"""Handlers that misbehave in each way a real function can, for end-to-end bad-input tests."""

from __future__ import annotations

import time
from typing import Any

_LEAK: list[bytes] = []


def raises(event: dict[str, Any], context: Any) -> None:
    raise ValueError("bad record")


def too_slow(event: dict[str, Any], context: Any) -> None:
    time.sleep(2.0)  # blocks its thread past a 0.5 s function timeout


def not_json(event: dict[str, Any], context: Any) -> Any:
    return object()


def huge(event: dict[str, Any], context: Any) -> str:
    return "x" * (7 * 1024 * 1024)


def wrong_shape(event: dict[str, Any], context: Any) -> Any:
    return {"batchItemFailures": "everything"}


def leaks(event: dict[str, Any], context: Any) -> None:
    """Keeps 1 MB per batch, bounded at 32 MB, and succeeds."""
    _LEAK.append(b"x" * 1024 * 1024)
    del _LEAK[:-32]

"""A handler whose module-level code (Lambda's init phase) is slow and counted."""

from __future__ import annotations

import time
from typing import Any

from tests.handlers_fixtures import init_state

init_state.RUNS += 1
time.sleep(0.05)


def handler(event: dict[str, Any], context: Any) -> int:
    return init_state.RUNS

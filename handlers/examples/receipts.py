"""Example function invoked asynchronously (`sluiceway demo`): turns an order into a receipt.

Its return value is what the on-success destination's invocation record carries as
`responsePayload`.
"""

from __future__ import annotations

from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"receipt": f"R-{event['order']}", "amount": event.get("amount", 0)}

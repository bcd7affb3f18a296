"""What the service asks of every poller: run until stopped, and stop gracefully."""

from __future__ import annotations

import abc
from typing import Any

import anyio


class Poller(abc.ABC):
    """One mapping's poller (SQS queue or stream)."""

    @abc.abstractmethod
    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Find the source, signal `task_status.started()`, and poll until `stop()`."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop taking new records; batches in flight finish and are settled."""

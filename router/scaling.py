"""How many batches a queue mapping keeps in flight: grow with backlog, shrink when idle or failing.

Lambda starts an SQS mapping at 5 concurrent batches, adds more while messages remain, and backs
off when the queue empties or the function keeps failing (unless ReportBatchItemFailures is on).
This is the same additive-increase / multiplicative-decrease idea, bounded by MaximumConcurrency.
"""

from __future__ import annotations

from dataclasses import dataclass

LAMBDA_SQS_MAX_CONCURRENCY = 1250
"""The ceiling AWS documents per SQS mapping when MaximumConcurrency is not set."""


@dataclass
class ConcurrencyScaler:
    maximum: int
    minimum: int = 1
    target: int = 0

    def __post_init__(self) -> None:
        self.maximum = max(1, self.maximum)
        self.minimum = max(1, min(self.minimum, self.maximum))
        if not self.target:
            self.target = 1

    def backlog(self) -> bool:
        """A full batch came back: messages remain, so allow one more batch in flight."""
        if self.target < self.maximum:
            self.target += 1
            return True
        return False

    def idle(self) -> None:
        """A poll came back empty: shed one poller, down to the minimum."""
        self.target = max(self.minimum, self.target - 1)

    def failing(self) -> None:
        """The function failed a whole batch: halve the concurrency, as Lambda backs off."""
        self.target = max(self.minimum, self.target // 2)

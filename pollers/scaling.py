"""How many batches a queue mapping keeps in flight: grow with backlog, shrink when idle or failing.

Lambda processes 5 batches at once when messages arrive, adds more while messages remain, and
backs off to 5, or as few as 2, when the queue quietens or the function keeps failing (unless
ReportBatchItemFailures is on). Here a mapping starts at that floor of 2 and grows one poller at a
time while full batches keep coming: the same additive-increase / multiplicative-decrease idea,
bounded by MaximumConcurrency.
"""

from __future__ import annotations

from dataclasses import dataclass

LAMBDA_SQS_MAX_CONCURRENCY = 1250
"""The ceiling AWS documents per SQS mapping when MaximumConcurrency is not set."""
LAMBDA_SQS_MIN_CONCURRENCY = 2
"""Lambda's floor for a quiet queue ("as few as 2 concurrent batches"), also MaximumConcurrency's
minimum: one poller long-polls while the other's batch runs, so a message arriving meanwhile
is not left waiting for that batch to finish."""


@dataclass
class ConcurrencyScaler:
    maximum: int
    minimum: int = LAMBDA_SQS_MIN_CONCURRENCY
    target: int = 0

    def __post_init__(self) -> None:
        self.maximum = max(1, self.maximum)
        self.minimum = max(1, min(self.minimum, self.maximum))
        self.target = max(self.minimum, min(self.target, self.maximum))

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

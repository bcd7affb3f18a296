"""What a stream mapping does next with a range of records, given how its last invocation went.

Pure, so the rules read (and are tested) as a table: MaximumRetryAttempts, BisectBatchOnFunctionError
and ReportBatchItemFailures combine here; MaximumRecordAgeInSeconds is `expired`. Throttles and
transport errors (the event never reached the handler) never count as attempts, as in AWS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sluiceway.router.outcomes import BatchFailed, BatchSucceeded, Outcome, PartialFailure
from tenacity import RetryCallState, wait_exponential_jitter

Action = Literal["done", "retry", "split", "bisect", "give_up"]


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """A stream mapping's failure settings, with AWS's meaning of -1 (no limit)."""

    maximum_retry_attempts: int = -1
    maximum_record_age_seconds: int = -1
    bisect: bool = False

    def exhausted(self, retries: int) -> bool:
        """True once a range has been retried more often than allowed."""
        return self.maximum_retry_attempts != -1 and retries > self.maximum_retry_attempts

    def expired(self, arrival: float, now: float) -> bool:
        """A record older than MaximumRecordAgeInSeconds is not invoked again."""
        return self.maximum_record_age_seconds != -1 and now - arrival > (
            self.maximum_record_age_seconds
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """`finished` records at the front are done; the rest (the remainder) gets `action`.

    - done: nothing remains;
    - retry: invoke the remainder again, after a backoff, as retry number `retries`;
    - split: the remainder is a new range (a split: no attempt counted, no backoff);
    - bisect: the remainder is cut in two halves, left first (no attempt counted, no backoff);
    - give_up: the remainder goes to the on-failure destination (or is dropped).
    """

    action: Action
    finished: int = 0
    retries: int = 0


def decide(
    outcome: Outcome, failed_at: int | None, size: int, retries: int, policy: FailurePolicy
) -> Decision:
    """The next step for a range of `size` records already retried `retries` times.

    `failed_at` is the index of the lowest failed record of a PartialFailure (the checkpoint).
    """
    if isinstance(outcome, BatchSucceeded):
        return Decision("done", finished=size)
    if isinstance(outcome, BatchFailed) and not outcome.reached_handler:
        return Decision("retry", retries=retries)  # throttle / transport error: not an attempt
    cut = 0
    if isinstance(outcome, PartialFailure):
        cut = failed_at or 0
        if policy.bisect and cut > 0:
            return Decision("split", finished=cut)
    remainder = size - cut
    if policy.bisect and remainder > 1:
        return Decision("bisect", finished=cut)
    if policy.exhausted(retries + 1):
        return Decision("give_up", finished=cut)
    return Decision("retry", finished=cut, retries=retries + 1)


def backoff_seconds(failures: int, *, initial: float, maximum: float) -> float:
    """Exponential backoff with jitter (tenacity's) before the `failures`-th retry."""
    wait = wait_exponential_jitter(initial=initial, max=maximum, jitter=initial)
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = max(1, failures)
    return float(wait(state))

"""Per-mapping counters named after Lambda's ESM metrics; the demo tally, /status and metrics read them."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Protocol


class HandlerInitError(Protocol):
    """A failed init as the handler layer names it (Lambda's runtime error type and message)."""

    error_type: str
    message: str


@dataclass
class MappingStats:
    """Monotonic counters (events unless named otherwise) plus the mapping's current state."""

    mapping: str
    kind: str
    state: str = "Creating"
    last_processing_result: str = "No records processed"
    last_error: str | None = None
    """The source's last error, cleared by its next successful call; `/status` shows the
    handler's init error here when the source has none."""
    handler_error: str | None = None
    """Why the handler cannot be loaded (Lambda's runtime error type: message), until it loads;
    the mapping is not ready meanwhile."""
    polled: int = 0
    filtered_out: int = 0
    invoked: int = 0
    failed_invoke: int = 0
    deleted: int = 0
    dropped: int = 0
    destination_delivered: int = 0
    destination_delivery_failures: int = 0
    invocations: int = 0
    errors: int = 0
    throttles: int = 0
    empty_polls: int = 0
    """Polls (ReceiveMessage, GetRecords) that returned no records: counted, never traced."""
    duration_seconds: float = 0.0
    in_flight: int = 0
    concurrency_target: int = 0
    leases: int = 0
    """Stream mappings: shard leases this replica holds (every shard, with a local store)."""
    environments: int = 0
    """In-process sync handlers: execution environments (HANDLER_THREADS); 0 when not tracked."""
    stuck_environments: int = 0
    """Environments whose timed-out invocation still runs: each holds its slot until it returns
    (a thread cannot be stopped; ISOLATION=process replaces the worker instead)."""
    waiting_on_destination: dict[str, object] | None = None
    """While a failure record waits for the on-failure destination to accept it: `arn`,
    `since` (epoch seconds), `attempts` failed so far, `last_error`."""
    iterator_age_ms: float | None = None
    init_duration_seconds: float | None = None
    shards: dict[str, dict[str, object]] = field(default_factory=dict)
    """Stream mappings: per shard, its owner, whether this replica reads it, checkpoint,
    iterator age and lease expiry — the view an operator needs when a shard is stuck."""
    started_at: float = field(default_factory=time.time)

    def snapshot(self) -> dict[str, object]:
        out = asdict(self)
        out["last_error"] = self.last_error or self.handler_error
        return out

    def set_handler_error(self, error: HandlerInitError | None) -> None:
        """Record the handler's init outcome: its error, or None once it has loaded."""
        self.handler_error = None if error is None else f"{error.error_type}: {error.message}"

    @property
    def all_stuck(self) -> bool:
        """Every execution environment is held by a stuck invocation: nothing can run."""
        return self.environments > 0 and self.stuck_environments >= self.environments

    def shard(self, shard_id: str) -> dict[str, object]:
        """The shard's entry in `shards`, created on first use."""
        return self.shards.setdefault(shard_id, {})


@dataclass
class FunctionStats:
    """One function's asynchronous invocation counters, named after Lambda's async metrics."""

    function: str
    async_events_received: int = 0
    """AsyncEventsReceived: Event invokes accepted (durably stored)."""
    async_events_dropped: int = 0
    """AsyncEventsDropped: events given up on with no DLQ or on-failure destination to take them."""
    async_event_age_ms: float | None = None
    """AsyncEventAge: time from acceptance to the latest invocation."""
    invocations: int = 0
    errors: int = 0
    throttles: int = 0
    destination_delivered: int = 0
    destination_delivery_failures: int = 0
    """DestinationDeliveryFailures: sends to a destination that failed (and were retried)."""
    dead_letter_errors: int = 0
    """DeadLetterErrors: sends to the dead-letter queue that failed (and were retried)."""

    def snapshot(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Registry:
    """All mappings' stats in one place for the HTTP endpoints and the demo."""

    mappings: dict[str, MappingStats] = field(default_factory=dict)
    functions: dict[str, FunctionStats] = field(default_factory=dict)
    """Per function, its asynchronous invocations (functions invoked by the API or schedules)."""

    def function(self, name: str) -> FunctionStats:
        """The function's stats, created on first use."""
        stats = self.functions.get(name)
        if stats is None:
            stats = self.functions[name] = FunctionStats(function=name)
        return stats

    def add(self, mapping: str, kind: str) -> MappingStats:
        stats = MappingStats(mapping=mapping, kind=kind)
        self.mappings[mapping] = stats
        return stats

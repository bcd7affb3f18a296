"""Per-mapping counters named after Lambda's ESM metrics; the demo tally, /status and metrics read them."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field


@dataclass
class MappingStats:
    """Monotonic counters (events unless named otherwise) plus the mapping's current state."""

    mapping: str
    kind: str
    state: str = "Creating"
    last_processing_result: str = "No records processed"
    last_error: str | None = None
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
    duration_seconds: float = 0.0
    in_flight: int = 0
    concurrency_target: int = 0
    leases: int = 0
    """Stream mappings: shard leases this replica holds (every shard, with a local store)."""
    iterator_age_ms: float | None = None
    init_duration_seconds: float | None = None
    shards: dict[str, dict[str, object]] = field(default_factory=dict)
    """Stream mappings: per shard, its owner, whether this replica reads it, checkpoint,
    iterator age and lease expiry — the view an operator needs when a shard is stuck."""
    started_at: float = field(default_factory=time.time)

    def snapshot(self) -> dict[str, object]:
        return asdict(self)

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

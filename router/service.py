"""The service runner: one task group owns every poller, the HTTP server and signal handling."""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio

from config.mapping import MappingConfig
from config.settings import Settings
from handlers.loader import HandlerLoadError
from pollers.aws import AwsClients
from pollers.checkpoints import CheckpointStore, MemoryCheckpoints
from pollers.checkpoints_sqlite import CheckpointLockError, SqliteCheckpoints
from pollers.dynamodb import dynamodb_poller
from pollers.kinesis import kinesis_poller
from pollers.sqs import SqsPoller
from router.filters import compile_filter_criteria
from router.http import HttpServer
from router.invoker import Invoker, PythonInvoker
from router.processor import BatchProcessor
from router.stats import MappingStats, Registry

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 5.0
"""Time beyond the longest function timeout that settling a batch may take on shutdown."""


class Poller(Protocol):
    async def run(self, *, task_status: Any = ...) -> None: ...
    def stop(self) -> None: ...


class UnsupportedMapping(Exception):
    """A mapping asks for something this build cannot run; named so `check` can report it."""


def build_invoker(mapping: MappingConfig, settings: Settings) -> Invoker:
    handler = mapping.handler
    if handler.startswith(("http://", "https://", "arn:")):
        raise UnsupportedMapping(
            f"mapping {mapping.name}: handler {handler!r} — only in-process Python handlers "
            "(module:function) are supported by this build"
        )
    source = mapping.source_ref
    return PythonInvoker(
        spec=handler,
        code_path=mapping.code_path,
        function_name=mapping.effective_function_name,
        function_timeout=mapping.function_timeout,
        memory_size=mapping.memory_size,
        region=source.region or settings.aws_region,
        account=source.account,
        max_threads=mapping.handler_threads,
    )


_PENDING_STREAM_FIELDS = (
    ("maximum_retry_attempts", -1),
    ("maximum_record_age_in_seconds", -1),
    ("bisect_batch_on_function_error", False),
    ("destination_config", None),
    ("tumbling_window_in_seconds", None),
)


def _refuse_pending_stream_fields(mapping: MappingConfig) -> None:
    """A failure setting this build would ignore is an error, never a silent default."""
    for name, default in _PENDING_STREAM_FIELDS:
        if getattr(mapping, name) != default:
            variable = f"SLUICEWAY_MAPPINGS__{mapping.name.upper()}__{name.upper()}"
            raise UnsupportedMapping(
                f"{variable}: not supported by this build yet; a failed stream batch is retried "
                "until it succeeds"
            )


def build_poller(
    mapping: MappingConfig,
    settings: Settings,
    clients: AwsClients,
    stats: MappingStats,
    invoker: Invoker,
    checkpoints: CheckpointStore | None = None,
) -> Poller:
    processor = BatchProcessor(
        invoker=invoker,
        stats=stats,
        record_filter=compile_filter_criteria(mapping.filter_criteria, mapping.kind),
        report_batch_item_failures=mapping.report_batch_item_failures,
        ordered_groups=mapping.source_ref.fifo,
    )
    if mapping.kind == "sqs":
        return SqsPoller(mapping, clients, processor, stats)
    if checkpoints is not None and mapping.kind in ("kinesis", "dynamodb"):
        _refuse_pending_stream_fields(mapping)
        make = kinesis_poller if mapping.kind == "kinesis" else dynamodb_poller
        return make(mapping, clients, processor, stats, checkpoints)
    raise UnsupportedMapping(
        f"mapping {mapping.name}: {mapping.kind} sources are not supported by this build"
    )


def build_checkpoints(settings: Settings) -> CheckpointStore:
    """The store stream mappings keep shard positions in (settings.checkpoints)."""
    config = settings.checkpoints
    if config.backend == "memory":
        return MemoryCheckpoints()
    if config.backend == "sqlite":
        try:
            return SqliteCheckpoints(config.path).open()
        except CheckpointLockError as exc:
            raise UnsupportedMapping(str(exc)) from None
    raise UnsupportedMapping(
        f"checkpoint backend {config.backend!r} is not supported by this build (use sqlite or memory)"
    )


@dataclass
class Service:
    """Runs every enabled mapping until `stop()` or SIGTERM/SIGINT, then shuts down gracefully."""

    settings: Settings
    registry: Registry = field(default_factory=Registry)
    handle_signals: bool = True
    pollers: dict[str, Poller] = field(default_factory=dict)
    invokers: dict[str, Invoker] = field(default_factory=dict)
    checkpoints: CheckpointStore | None = None
    """Shard positions of stream mappings; built from settings.checkpoints unless given."""
    _owns_checkpoints: bool = False
    http: HttpServer | None = None
    _stop_flag: bool = False
    _stop_requested: anyio.Event | None = None
    _pollers_done: anyio.Event | None = None

    def stop(self) -> None:
        self._stop_flag = True
        if self._stop_requested is not None:
            self._stop_requested.set()

    def _shutdown_budget(self) -> float:
        timeouts = [m.function_timeout for m in self.settings.mappings.values()] or [0.0]
        return max(timeouts) + SHUTDOWN_GRACE_SECONDS

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                self.stop()
                return

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        settings = self.settings
        self._stop_requested = anyio.Event()
        self._pollers_done = anyio.Event()
        if self._stop_flag:
            self._stop_requested.set()
        streams = [m for m in settings.mappings.values() if m.enabled and m.kind != "sqs"]
        if streams and self.checkpoints is None:
            self.checkpoints = build_checkpoints(settings)
            self._owns_checkpoints = True
        async with AwsClients(settings.aws_region) as clients:
            for name, mapping in settings.mappings.items():
                stats = self.registry.add(name, mapping.kind)
                if not mapping.enabled:
                    stats.state = "Disabled"
                    continue
                invoker = self.invokers[name] = build_invoker(mapping, settings)
                self.pollers[name] = build_poller(
                    mapping, settings, clients, stats, invoker, self.checkpoints
                )
            if settings.http.enabled:
                self.http = HttpServer(self.registry, settings.http.host, settings.http.port)
                await self.http.start()
            try:
                async with anyio.create_task_group() as tg:
                    if self.handle_signals:
                        tg.start_soon(self._watch_signals)
                    tg.start_soon(self._run_pollers)
                    task_status.started()
                    await self._stop_requested.wait()
                    assert self._pollers_done is not None
                    for poller in self.pollers.values():
                        poller.stop()
                    with anyio.move_on_after(self._shutdown_budget()) as scope:
                        await self._pollers_done.wait()
                    if scope.cancelled_caught:
                        log.warning("shutdown budget spent; abandoning batches still in flight")
                    tg.cancel_scope.cancel()
            finally:
                if self.http is not None:
                    with anyio.CancelScope(shield=True):
                        await self.http.stop()
                if self.checkpoints is not None and self._owns_checkpoints:
                    with anyio.CancelScope(shield=True):
                        await self.checkpoints.close()
                    self.checkpoints, self._owns_checkpoints = None, False

    async def _warm(self, name: str, invoker: Invoker) -> None:
        """Run each handler's init phase before its first batch, so no batch pays a cold start."""
        warm = getattr(invoker, "warm", None)
        if warm is None:
            return
        try:
            self.registry.mappings[name].init_duration_seconds = await warm()
        except HandlerLoadError as exc:
            # As in Lambda, every invocation will now fail with this error and be retried.
            log.error("mapping %s: handler cannot be loaded: %s: %s", name, exc.error_type, exc)

    async def _run_pollers(self) -> None:
        assert self._pollers_done is not None
        try:
            async with anyio.create_task_group() as tg:
                for name, invoker in self.invokers.items():
                    tg.start_soon(self._warm, name, invoker)
            async with anyio.create_task_group() as tg:
                for poller in self.pollers.values():
                    tg.start_soon(poller.run)
        finally:
            self._pollers_done.set()

"""The service runner: one task group owns every poller, the HTTP server and signal handling."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
from sluiceway.app.function_host import FunctionHost
from sluiceway.app.lambda_api import MAX_SYNC_PAYLOAD, LambdaApi
from sluiceway.app.server import HttpServer
from sluiceway.app.startup import aws_services, describe_checkpoints, log_mappings, version
from sluiceway.config.functions import FunctionConfig
from sluiceway.config.mapping import Isolation, MappingConfig
from sluiceway.config.settings import Settings
from sluiceway.core import heap
from sluiceway.core.aws import AwsClients
from sluiceway.core.aws_retry import error_code
from sluiceway.core.errors import SluicewayError
from sluiceway.core.logs import bind as bind_log_context
from sluiceway.core.metrics import Metrics
from sluiceway.core.secrets import known_secrets, register_aws_credentials
from sluiceway.core.stats import MappingStats, Registry
from sluiceway.handlers.invoker import Invoker
from sluiceway.handlers.loader import HandlerLoadError
from sluiceway.handlers.reserved import ReservedPools
from sluiceway.handlers.targets import TargetError, build_target, every_function, isolation_for
from sluiceway.pollers.checkpoints import CheckpointStore, CheckpointStoreFailed, MemoryCheckpoints
from sluiceway.pollers.checkpoints_sqlite import CheckpointLockError, SqliteCheckpoints
from sluiceway.pollers.leases import LeaseTableError, replica_id
from sluiceway.pollers.pacing import PollPacer
from sluiceway.pollers.poller import Poller
from sluiceway.pollers.probes import STREAM_APIS
from sluiceway.pollers.schedules import (
    Clock,
    LeaseTableTicks,
    LocalTicks,
    ScheduleTicker,
    TickClaims,
)
from sluiceway.pollers.sqs import SqsPoller
from sluiceway.pollers.stream_poller import StreamPoller
from sluiceway.router.runner import build_runner

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 5.0
"""Time beyond the longest function timeout that settling a batch may take on shutdown."""


class UnsupportedMapping(SluicewayError):
    """A mapping asks for something this build cannot run; named so `check` can report it."""


def build_invoker(
    mapping: MappingConfig | FunctionConfig,
    settings: Settings,
    clients: AwsClients | None = None,
    reserved: ReservedPools | None = None,
    isolations: Mapping[str, tuple[Isolation, str | None]] | None = None,
) -> Invoker:
    """In-process, worker processes, HTTP or Lambda, by the handler's form (router.targets)."""
    try:
        return build_target(mapping, settings, clients, reserved, isolations)
    except TargetError as exc:
        raise UnsupportedMapping(str(exc)) from None


def build_poller(
    mapping: MappingConfig,
    settings: Settings,
    clients: AwsClients,
    stats: MappingStats,
    invoker: Invoker,
    checkpoints: CheckpointStore | None = None,
    pacer: PollPacer | None = None,
) -> Poller:
    runner = build_runner(
        mapping, invoker, stats, clients, destination_timeout=settings.destination_timeout_seconds
    )
    if mapping.kind == "sqs":
        return SqsPoller(mapping, clients, runner, stats)
    if checkpoints is not None and mapping.kind in ("kinesis", "dynamodb"):
        api = STREAM_APIS[mapping.kind](clients, mapping)
        return StreamPoller(mapping, api, runner, stats, checkpoints, pacer=pacer)
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
    if config.backend == "dynamodb" and config.table:
        from sluiceway.pollers.checkpoints_dynamodb import DynamoCheckpoints

        table, region = config.lease_table(settings.aws_region)
        return DynamoCheckpoints(table, region, lease_seconds=config.lease_seconds)
    raise UnsupportedMapping(
        f"checkpoint backend {config.backend!r} is not supported by this build (use sqlite or memory)"
    )


async def _start_checkpoints(store: CheckpointStore, settings: Settings) -> None:
    """Create or check a lease table before any poller starts: a table that cannot be used is a
    start-up error; one that cannot be reached yet is retried by the pollers."""
    try:
        await store.start()
    except LeaseTableError as exc:
        await store.close()
        raise UnsupportedMapping(str(exc)) from None
    except SluicewayError:
        await store.close()
        raise
    except Exception as exc:
        log.warning(
            "checkpoints (%s) not reachable yet: %s: %s; the pollers keep trying",
            describe_checkpoints(settings),
            error_code(exc),
            exc,
        )


@dataclass
class Service:
    """Runs every enabled mapping until `stop()` or SIGTERM/SIGINT, then shuts down gracefully."""

    settings: Settings
    registry: Registry = field(default_factory=Registry)
    handle_signals: bool = True
    pollers: dict[str, Poller] = field(default_factory=dict)
    invokers: dict[str, Invoker] = field(default_factory=dict)
    """By mapping name; mappings of one function share its invoker."""
    function_invokers: dict[str, Invoker] = field(default_factory=dict)
    """By function name (lowercase): one invoker per function, for mappings and invokes alike."""
    functions: FunctionHost | None = None
    """The functions' Invoke API and asynchronous queue."""
    ticker: ScheduleTicker | None = None
    schedule_clock: Clock | None = None
    """The schedules' clock; wall-clock time unless given (tests run a faster one)."""
    _api: LambdaApi | None = None
    checkpoints: CheckpointStore | None = None
    """Shard positions of stream mappings; built from settings.checkpoints unless given."""
    _owns_checkpoints: bool = False
    http: HttpServer | None = None
    metrics: Metrics | None = None
    """Metrics (Prometheus at /metrics, OTLP if configured); built from OTEL_* unless given."""
    _owns_metrics: bool = False
    _stop_flag: bool = False
    _stop_requested: anyio.Event | None = None
    _starting: anyio.CancelScope | None = None
    """Start-up's waits (a lease table being retried), which a stop cuts short."""
    _pollers_done: anyio.Event | None = None
    failure: CheckpointStoreFailed | None = None
    """Why the service stopped on its own; `run` raises it after a graceful shutdown, so the
    process exits non-zero and an orchestrator restarts it."""

    def stop(self) -> None:
        self._stop_flag = True
        if self._stop_requested is not None:
            self._stop_requested.set()
        if self._starting is not None:
            self._starting.cancel()

    def _shutdown_budget(self) -> float:
        timeouts = [m.function_timeout for m in self.settings.mappings.values()]
        timeouts += [f.timeout for f in self.settings.functions.values()] or [0.0]
        return max(timeouts) + SHUTDOWN_GRACE_SECONDS

    async def _watch_signals(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                self.stop()
                return

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Start everything, run until stopped, then shut down; a start-up failure we can name
        raises a SluicewayError before any mapping polls, with everything started released.

        SIGTERM and SIGINT are handled from the first moment, so a stop during start-up is as
        graceful as one later."""
        try:
            async with anyio.create_task_group() as tg:
                if self.handle_signals:
                    await tg.start(self._watch_signals)
                await self._run(task_status)
                tg.cancel_scope.cancel()  # the signal watcher
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:  # the service's own error, as it was raised
                raise group.exceptions[0] from None
            raise

    async def _run(self, task_status: Any) -> None:
        settings = self.settings
        self._stop_requested = anyio.Event()
        self._pollers_done = anyio.Event()
        if self._stop_flag:
            self._stop_requested.set()
        for config in [*settings.mappings.values(), *settings.functions.values()]:
            known_secrets.add_environment(config.environment)  # masked in every output from now on
        log.info("sluiceway %s starting", version())
        for name, mapping in settings.mappings.items():
            stats = self.registry.add(name, mapping.kind)
            if not mapping.enabled:
                stats.state = "Disabled"
        try:
            # The HTTP port first: a port in use fails before anything else has started.
            if self.metrics is None:
                self.metrics, self._owns_metrics = Metrics.from_env(self.registry), True
            if self.metrics is not None:
                self.metrics.activate()
            await self._start_http()
            streams = [m for m in settings.mappings.values() if m.enabled and m.kind != "sqs"]
            shared_ticks = bool(settings.schedules) and settings.checkpoints.backend == "dynamodb"
            if (streams or shared_ticks) and self.checkpoints is None:
                self.checkpoints = build_checkpoints(settings)
                self._owns_checkpoints = True
                with self._start_phase():
                    await _start_checkpoints(self.checkpoints, settings)
            async with AwsClients(settings.aws_region) as clients:
                for service in aws_services(settings):
                    await clients.client(service)  # AWS settings that make no client fail now
                await register_aws_credentials(clients.session)
                await self._run_mappings(clients, task_status)
        finally:
            if self.http is not None:
                with anyio.CancelScope(shield=True):
                    await self.http.stop()
            if self.metrics is not None and self._owns_metrics:
                with anyio.CancelScope(shield=True):  # a last OTLP export may block
                    await anyio.to_thread.run_sync(self.metrics.shutdown)
                self.metrics, self._owns_metrics = None, False
            if self.checkpoints is not None and self._owns_checkpoints:
                with anyio.CancelScope(shield=True):
                    await self.checkpoints.close()
                self.checkpoints, self._owns_checkpoints = None, False
        if self.failure is not None:
            raise self.failure


    def _start_phase(self) -> anyio.CancelScope:
        """A scope for a start-up wait; already cancelled when a stop came first."""
        self._starting = anyio.CancelScope()
        if self._stop_flag:
            self._starting.cancel()
        return self._starting

    async def _start_http(self) -> None:
        http = self.settings.http
        if not http.enabled:
            log.info("HTTP endpoints off (SLUICEWAY_HTTP__ENABLED=false)")
            return
        routes = [("/metrics", self.metrics.handle)] if self.metrics is not None else []
        self._api = LambdaApi(self.settings, None, self.registry)  # its functions come later
        self.http = HttpServer(
            self.registry,
            http.host,
            http.port,
            extra_routes=routes,
            installers=[self._api.install],
            client_max_size=MAX_SYNC_PAYLOAD + 1,
        )
        try:
            port = await self.http.start()
        except SluicewayError:
            self.http = None
            raise
        log.info(
            "listening on http://%s:%d (/healthz, /readyz, /status%s, Lambda's Invoke API)",
            http.host,
            port,
            ", /metrics" if routes else "",
        )
        if self.settings.api.auth == "none":
            log.warning(
                "SLUICEWAY_API__AUTH=none: the Lambda API on port %d accepts unsigned requests "
                "from anyone who can reach it; use it only locally",
                port,
            )

    async def _run_mappings(self, clients: AwsClients, task_status: Any) -> None:
        """Build every enabled mapping's target and poller, then run them until stopped."""
        settings = self.settings
        assert self._stop_requested is not None and self._pollers_done is not None
        reserved = ReservedPools()  # reserved concurrency, shared by a function's mappings
        pacer = PollPacer(settings.idle_polls_per_second)  # one budget for every quiet shard
        try:
            isolations = isolation_for(every_function(settings))  # once, for every target
            for name, function in settings.functions.items():
                self.function_invokers[name] = build_invoker(
                    function, settings, clients, reserved, isolations
                )
            for name, mapping in settings.mappings.items():
                if not mapping.enabled:
                    continue
                key = mapping.effective_function_name.lower()
                invoker = self.function_invokers.get(key)
                if invoker is None:
                    invoker = build_invoker(mapping, settings, clients, reserved, isolations)
                    self.function_invokers[key] = invoker
                self.invokers[name] = invoker
                stats = self.registry.mappings[name]
                invoker.report_to(stats)
                self.pollers[name] = build_poller(
                    mapping,
                    settings,
                    clients,
                    stats,
                    invoker,
                    self.checkpoints,
                    pacer,
                )
            self.functions = FunctionHost(settings, self.registry, clients, self.function_invokers)
            if self._api is not None:
                self._api.host = self.functions
            log_mappings(settings)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._run_pollers)
                await self.functions.run(tg)  # the asynchronous queue's reader
                self.ticker = self._ticker(clients)
                if self.ticker is not None:
                    tg.start_soon(self.ticker.run)
                heap.settle()  # start-up's objects are built: never walk them again
                task_status.started()
                await self._stop_requested.wait()
                for poller in self.pollers.values():
                    poller.stop()
                reader = self.functions.reader
                if reader is not None:
                    reader.stop()  # asynchronous events in flight finish and are settled
                with anyio.move_on_after(self._shutdown_budget()) as scope:
                    await self._pollers_done.wait()
                    if reader is not None:
                        await reader.stopped.wait()
                if scope.cancelled_caught:
                    log.warning("shutdown budget spent; abandoning batches still in flight")
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                if self.functions is not None:
                    await self.functions.aclose()
                await self._close_invokers()

    def _ticker(self, clients: AwsClients) -> ScheduleTicker | None:
        """The schedules' ticks; with a shared lease table, one replica fires each."""
        settings = self.settings
        if not settings.schedules or self.functions is None:
            return None
        claims: TickClaims = LocalTicks()
        if settings.checkpoints.backend == "dynamodb" and settings.checkpoints.table:
            claims = LeaseTableTicks(clients, settings.checkpoints.table, replica_id())
        return ScheduleTicker(
            settings.schedules, claims, self.functions.fire_schedule, self.schedule_clock
        )

    async def _close_invokers(self) -> None:
        """Close pooled connections and stop worker processes."""
        for invoker in self.function_invokers.values():
            await invoker.aclose()

    async def _warm(self, function: str, invoker: Invoker) -> None:
        """Run each function's init phase before its first batch, so no batch pays a cold start.

        A handler that cannot be loaded leaves its mappings not ready (/readyz), its error in
        /status; as in Lambda every invocation fails with it, and the first that loads the
        handler makes the mappings ready again."""
        mappings = [name for name, used in self.invokers.items() if used is invoker]
        # what the init phase logs or prints is tagged with the (first) mapping that runs it
        tag = bind_log_context(mapping=mappings[0]) if mappings else contextlib.nullcontext()
        try:
            with tag:
                init = await invoker.warm()
        except HandlerLoadError as exc:
            log.error(
                "function %s: handler cannot be loaded: %s: %s", function, exc.error_type, exc
            )
            for name in mappings:
                self.registry.mappings[name].set_handler_error(exc)
            return
        for name in mappings:
            stats = self.registry.mappings[name]
            stats.init_duration_seconds = init
            stats.set_handler_error(None)

    async def _run_pollers(self) -> None:
        assert self._pollers_done is not None
        try:
            async with anyio.create_task_group() as tg:
                for name, invoker in self.function_invokers.items():
                    tg.start_soon(self._warm, name, invoker)
            async with anyio.create_task_group() as tg:
                for name, poller in self.pollers.items():
                    with bind_log_context(mapping=name):  # the task keeps this context
                        tg.start_soon(self._run_poller, poller)
        finally:
            self._pollers_done.set()

    async def _run_poller(self, poller: Poller) -> None:
        """A poller whose checkpoint store failed stops the whole service (gracefully: the
        other mappings finish their batches), which then exits non-zero."""
        try:
            await poller.run()
        except CheckpointStoreFailed as exc:
            if self.failure is None:
                self.failure = exc
                log.error("checkpoint store failed; shutting down so the service is restarted")
            self.stop()

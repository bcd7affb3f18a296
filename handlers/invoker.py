"""Invoking a handler with Lambda's synchronous-invoke semantics, without ever raising for it.

Whatever the handler does — raise, hang, return something unserialisable or too large, fail to
import — comes back as an `InvocationResult`, typed the way Lambda reports it, so retry policy
never has to catch a handler's exceptions. Only cancellation propagates.
"""

from __future__ import annotations

import abc
import importlib
import inspect
import math
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import anyio
import orjson
from sluiceway.core import function_logs
from sluiceway.core.stats import MappingStats
from sluiceway.handlers.context import LambdaContext, new_log_stream_name, new_request_id
from sluiceway.handlers.environments import CallTimedOut, Environment, ThreadEnvironments
from sluiceway.handlers.event_copy import handler_copy
from sluiceway.handlers.invocation import InvocationOptions, current_options
from sluiceway.handlers.loader import (
    HandlerLoadError,
    LoadedHandler,
    load_handler,
    parse_handler_spec,
)
from sluiceway.handlers.results import (
    FunctionError,
    InvocationResult,
    Returned,
    stack_trace,
    with_request_id,
)

MAX_RESPONSE_BYTES = 6_291_556
"""Lambda's limit on a synchronous invocation's response payload."""
TIMED_OUT = "Sandbox.Timedout"
MARSHAL_ERROR = "Runtime.MarshalError"
RESPONSE_TOO_LARGE = "Function.ResponseSizeTooLarge"
EXIT_ERROR = "Runtime.ExitError"

_JSON_OPTIONS = (
    orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
)
"""Accept what `json.dumps` accepts (int/float/bool/None keys) and refuse what it refuses."""


class Invoker(abc.ABC):
    """A handler target (in-process, worker processes, HTTP, a Lambda ARN): everything the router
    and the service call on one. Targets override what they can tell or must release."""

    function_name: str = ""
    """The function's name (context, spans, metrics); empty means the mapping's name."""

    @abc.abstractmethod
    async def invoke(self, event: dict[str, Any]) -> InvocationResult:
        """Run the handler once; handler failures are results, never exceptions."""

    async def warm(self) -> float | None:
        """Load and initialise before the first invocation; the init duration when measured.

        Raises HandlerLoadError when the handler's init fails."""
        return None

    @property
    def init_error(self) -> HandlerLoadError | None:
        """Why the handler's last init failed, until an init succeeds (every invoke fails with
        it meanwhile, as Lambda's do); None for targets whose init runs elsewhere."""
        return None

    def has_room(self) -> bool:
        """Whether one more invocation would start now rather than queue or be throttled
        (targets that cannot tell, such as HTTP, say yes)."""
        return True

    async def aclose(self) -> None:
        """Release what the target holds (worker processes, HTTP sessions)."""
        return None

    def report_to(self, stats: MappingStats) -> None:
        """Keep `stats.environments` and `stats.stuck_environments` current (targets whose
        execution environments can be stuck, i.e. in-process threads, say how many are)."""
        return None


class PythonInvoker(Invoker):
    """Runs a `module:function` handler in this process.

    Sync handlers run in daemon threads, `max_threads` execution environments
    (`handlers.environments`), so the event loop never blocks; async handlers run on the loop. A
    handler that outlives `function_timeout` is a failed invocation (`Sandbox.Timedout`), but a
    thread cannot be killed: a timed-out sync handler keeps running, and keeps its environment
    (`stuck`) until it returns, so the next invocation never runs beside it. The interpreter does
    not wait for it at exit. Use process isolation for handlers that may hang.

    Lambda never runs two invocations in one execution environment at once; here concurrent
    invocations share the module. Handlers that keep per-invocation state at module level
    (Powertools' module-level `BatchProcessor` does) need `max_threads=1`, the default.
    """

    def __init__(
        self,
        spec: str,
        code_path: str | None = None,
        function_name: str | None = None,
        function_timeout: float = 3.0,
        memory_size: int = 128,
        region: str = "us-east-1",
        account: str = "000000000000",
        max_threads: int = 1,
    ) -> None:
        if function_timeout <= 0:
            raise ValueError(f"function_timeout must be positive, got {function_timeout}")
        if max_threads < 1:
            raise ValueError(f"max_threads must be at least 1, got {max_threads}")
        self.spec = spec
        self.code_path = code_path
        self.function_name = function_name or _default_function_name(spec)
        self.function_timeout = function_timeout
        self.memory_size = memory_size
        self.region = region
        self.account = account
        self.max_threads = max_threads
        self.log_stream_name = new_log_stream_name()
        self._environments = ThreadEnvironments(max_threads, self.function_name)
        self._loader = ThreadEnvironments(1, f"{self.function_name}-init")
        """The init phase's thread: one import at a time, so a hung import is never repeated."""
        self._load_lock = anyio.Lock()
        self._loaded: LoadedHandler | None = None
        self._init_error: HandlerLoadError | None = None

    @property
    def init_duration(self) -> float | None:
        """Seconds the handler module's first import took, once it has loaded."""
        return self._loaded.init_duration if self._loaded else None

    @property
    def init_error(self) -> HandlerLoadError | None:
        return self._init_error

    def has_room(self) -> bool:
        """Whether another invocation would start at once rather than queue for a thread.

        Pollers add concurrency only while it would: more batches than threads only wait,
        holding their messages, and every extra poller costs CPU for nothing.
        """
        loaded = self._loaded
        return loaded is None or loaded.is_async or self._environments.has_room()

    @property
    def stuck_environments(self) -> int:
        """Environments whose timed-out invocation is still running."""
        return self._environments.stuck

    def report_to(self, stats: MappingStats) -> None:
        stats.environments = self.max_threads

        def stuck(count: int) -> None:
            stats.stuck_environments = count

        self._environments.on_stuck = stuck

    async def warm(self) -> float:
        """Load the handler now (Lambda's init phase) and return its init duration.

        Raises HandlerLoadError; an invoke would report the same error as a FunctionError.
        """
        with function_logs.Invocation(None, self.function_name):  # what the import prints
            return (await self._load()).init_duration

    async def invoke(self, event: dict[str, Any]) -> InvocationResult:
        """Run the handler once with a fresh request id (or the caller's) and context; what it logs
        and prints is tagged with them (core/function_logs.py)."""
        options = current_options()
        request_id = (options.request_id if options else None) or new_request_id()
        with function_logs.Invocation(request_id, self.function_name):
            result = await self._invoke(event, request_id, options)
        return with_request_id(result, request_id)

    async def _invoke(
        self, event: dict[str, Any], request_id: str, options: InvocationOptions | None
    ) -> InvocationResult:
        started = time.monotonic()
        loaded = self._loaded
        if loaded is None:  # loaded once; afterwards no timeout scope is needed for it
            # A load that happens here (no warm-up, or init failed before) counts toward the
            # timeout, as Lambda's init-during-invoke does.
            with anyio.move_on_after(self.function_timeout) as init_scope:
                try:
                    loaded = await self._load()
                except HandlerLoadError as e:
                    return FunctionError(e.error_type, e.message, time.monotonic() - started)
            if init_scope.cancel_called:
                return self._timed_out(time.monotonic() - started)
        if loaded.is_async:
            context = self._context(request_id, started, options)
            return await self._run_async(loaded, event, context, started)
        # Waiting for an environment is not running: the clock starts once one is free.
        environment = await self._environments.take()
        try:
            started = time.monotonic()
            context = self._context(request_id, started, options)
            return await self._run_sync(environment, loaded, event, context, started)
        finally:
            environment.release()

    async def _load(self) -> LoadedHandler:
        if self._loaded is None:
            async with self._load_lock:
                if self._loaded is None:
                    if self._init_error is not None:  # a retry: see files created since
                        importlib.invalidate_caches()
                    try:
                        async with self._loader.reserve() as environment:
                            self._loaded = await environment.run(
                                load_handler, self.spec, self.code_path
                            )
                    except HandlerLoadError as exc:
                        self._init_error = exc
                        raise
                    self._init_error = None
        return self._loaded

    def _context(
        self, request_id: str, started: float, options: InvocationOptions | None
    ) -> LambdaContext:
        context = LambdaContext(
            aws_request_id=request_id,
            function_name=self.function_name,
            timeout=self.function_timeout,
            memory_limit_in_mb=self.memory_size,
            region=self.region,
            account=self.account,
            log_stream_name=self.log_stream_name,
            started=started,
        )
        if options is not None:
            context.client_context = options.client_context_object()
        return context

    async def _run_sync(
        self,
        environment: Environment,
        loaded: LoadedHandler,
        event: dict[str, Any],
        context: LambdaContext,
        started: float,
    ) -> InvocationResult:
        """A sync handler in `environment`'s thread. Its timeout is the environment's timer (no
        cancel scope per invocation); a timed-out call keeps running, abandoned."""
        remaining = self.function_timeout - (time.monotonic() - started)
        try:
            value = await environment.run(
                _call_with_copy, loaded.fn, event, context, abandon_after=remaining
            )
        except CallTimedOut:
            return self._timed_out(time.monotonic() - started)
        except (Exception, SystemExit) as e:
            return _raised(e, time.monotonic() - started)
        if inspect.isawaitable(value):  # a sync wrapper around a coroutine function
            return await self._finish_awaitable(value, started)
        return marshal_response(value, time.monotonic() - started)

    async def _finish_awaitable(self, value: Awaitable[Any], started: float) -> InvocationResult:
        remaining = self.function_timeout - (time.monotonic() - started)
        with anyio.move_on_after(remaining) as scope:
            try:
                value = await value
            except (Exception, SystemExit) as e:
                if scope.cancel_called:
                    return self._timed_out(time.monotonic() - started)
                return _raised(e, time.monotonic() - started)
        if scope.cancel_called:
            return self._timed_out(time.monotonic() - started)
        return marshal_response(value, time.monotonic() - started)

    async def _run_async(
        self,
        loaded: LoadedHandler,
        event: dict[str, Any],
        context: LambdaContext,
        started: float,
    ) -> InvocationResult:
        """An async handler on the loop, on its own copy of the event, cancelled at its timeout."""
        try:
            awaitable = loaded.fn(handler_copy(event), context)
        except (Exception, SystemExit) as e:  # a handler that cannot take (event, context)
            return _raised(e, time.monotonic() - started)
        return await self._finish_awaitable(awaitable, started)

    def _timed_out(self, duration: float) -> FunctionError:
        message = f"Task timed out after {self.function_timeout:.2f} seconds"
        return FunctionError(TIMED_OUT, message, duration)


def _raised(e: BaseException, duration: float) -> FunctionError:
    """The error a raised exception is, with its frames (the router logs it, once)."""
    if isinstance(e, SystemExit):
        error_type, message = EXIT_ERROR, f"Runtime exited with error: exit status {e.code}"
    else:
        error_type, message = type(e).__name__, str(e)
    return FunctionError(error_type, message, duration, stack_trace=stack_trace(e))


def marshal_response(value: Any, duration: float = 0.0) -> Returned | FunctionError:
    """What the ESM receives: the handler's value as JSON, or Lambda's marshalling errors.

    Serialised like Lambda's runtime (Decimal as a JSON number, bytes passed through as-is);
    the size limit applies to the compact UTF-8 encoding.
    """
    if value is None:  # most handlers return nothing: no round trip needed
        return Returned(None, duration)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
    else:
        try:
            raw = orjson.dumps(value, default=_json_default, option=_JSON_OPTIONS)
        except orjson.JSONEncodeError as e:
            cause = e.__cause__ or e
            message = f"Unable to marshal response: {cause}"
            return FunctionError(MARSHAL_ERROR, message, duration)
    if len(raw) > MAX_RESPONSE_BYTES:
        message = (
            f"Response payload size exceeded maximum allowed payload size "
            f"({MAX_RESPONSE_BYTES} bytes)."
        )
        return FunctionError(RESPONSE_TOO_LARGE, message, duration)
    try:
        payload: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        payload = raw  # bytes that are not JSON: the ESM cannot parse them either
    return Returned(payload, duration)


def _json_default(obj: Any) -> Any:
    """Serialise Decimal as Lambda's runtime does (a JSON number); refuse the rest like json."""
    if isinstance(obj, Decimal):
        if not obj.is_finite():
            return math.nan  # written as null: JSON has no NaN or Infinity
        return orjson.Fragment(str(obj))
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _call_with_copy(fn: Callable[..., Any], event: dict[str, Any], context: LambdaContext) -> Any:
    """Runs in the worker thread, so copying a large event does not block the loop."""
    return fn(handler_copy(event), context)


def _default_function_name(spec: str) -> str:
    """A readable function name from the handler's module (`sluiceway.handlers.examples.orders` -> orders)."""
    try:
        module, _ = parse_handler_spec(spec)
    except HandlerLoadError:
        return "handler"
    return module.rsplit(".", 1)[-1]

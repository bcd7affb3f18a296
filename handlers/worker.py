"""The child side of process isolation: one worker process is one Lambda execution environment.

The worker applies the mapping's environment and memory limit, imports the handler once (the init
phase, timed), then serves invocations one at a time over its pipe until the pipe closes. Messages
are tuples: the parent sends the `WorkerConfig`, then `(request_id, remaining_seconds, event_json)`
per invocation; the worker answers `("ready", init_seconds)` or `("init_error", type, message)`
once, then `("ok", payload_json)` or `("error", type, message[, stack_trace])` per invocation
(the stack trace when the handler raised).

A function's code is its own, as in Lambda: the worker is a fresh interpreter (`serve`, started by
`process_pool`) whose sys.path starts with the function's code, and before that code it imports
only the standard library and Sluiceway's own loader (`RUNTIME_MODULES`). The rest of the runtime
(orjson, the response marshalling) is imported after the function's init, so a function that
bundles a module of any other name (`handlers`, `config`, `app`, `pydantic`, ...) gets its own.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import resource
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from sluiceway.handlers import worker_output
from sluiceway.handlers.loader import (
    IMPORT_MODULE_ERROR,
    HandlerLoadError,
    code_root,
    load_handler,
)

OUT_OF_MEMORY = "Runtime.OutOfMemory"
RUNTIME_MODULES = frozenset({"sluiceway"})
"""Top-level modules besides the standard library that a worker holds before the function's code."""


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs to become the function's execution environment (picklable)."""

    spec: str
    code_path: str | None
    """The function's code; None means the worker's working directory (the parent's)."""
    function_name: str
    memory_size: int
    region: str
    account: str
    environment: dict[str, str] = field(default_factory=dict)


def lambda_environment(config: WorkerConfig, log_stream_name: str) -> dict[str, str]:
    """The variables Lambda's runtime sets, then the function's own (which may override them)."""
    return {
        "AWS_LAMBDA_FUNCTION_NAME": config.function_name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_size),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{config.function_name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": log_stream_name,
        "AWS_REGION": config.region,
        "AWS_DEFAULT_REGION": config.region,
        "LAMBDA_TASK_ROOT": code_root(config.code_path),
        **config.environment,
    }


def limit_memory(memory_size_mb: int) -> None:
    """Cap the address space at what the interpreter uses now plus the function's memory size.

    RLIMIT_AS counts virtual memory, which a bare interpreter already holds far more of than it
    touches; counting from the current size makes `memory_size` the room the function gets.
    """
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[0])
    current = pages * os.sysconf("SC_PAGE_SIZE")
    limit = current + memory_size_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def serve(fd: int) -> None:
    """Entry point of a worker process started by `process_pool`: its pipe is descriptor `fd`,
    and the first message on it is the `WorkerConfig`."""
    conn = Connection(fd)
    try:
        config = conn.recv()
    except EOFError:
        return
    main(conn, config)


def main(conn: Connection, config: WorkerConfig) -> None:
    """Become the function's execution environment: init once, then serve invocations."""
    from sluiceway.handlers.context import LambdaContext, new_log_stream_name

    log_stream_name = new_log_stream_name()
    os.environ.update(lambda_environment(config, log_stream_name))
    worker_output.install(conn, config.function_name)  # the function's logs go to the service
    limit_memory(config.memory_size)
    started = time.perf_counter()
    try:
        loaded = load_handler(config.spec, config.code_path)  # puts the code first on sys.path
        init_duration = time.perf_counter() - started
        import orjson  # the runtime's own modules, after the function's init (see above)
        from sluiceway.handlers.invoker import marshal_response
        from sluiceway.handlers.results import Returned, stack_trace
    except HandlerLoadError as exc:
        conn.send(("init_error", exc.error_type, exc.message))
        return
    except MemoryError:
        conn.send(("init_error", OUT_OF_MEMORY, "Runtime exited: out of memory during init"))
        return
    except ImportError as exc:
        message = f"Sluiceway's runtime did not load beside the function's code: {exc}"
        conn.send(("init_error", IMPORT_MODULE_ERROR, message))
        return
    conn.send(("ready", init_duration))
    loop = asyncio.new_event_loop() if loaded.is_async else None
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        request_id, remaining, raw_event = request
        worker_output.begin(request_id)
        context = LambdaContext(
            aws_request_id=request_id,
            function_name=config.function_name,
            timeout=remaining,
            memory_limit_in_mb=config.memory_size,
            region=config.region,
            account=config.account,
            log_stream_name=log_stream_name,
        )
        try:
            value: Any = loaded.fn(orjson.loads(raw_event), context)
            if inspect.isawaitable(value):
                value = (loop or asyncio.new_event_loop()).run_until_complete(value)
            worker_output.finish()
            result = marshal_response(value)
        except MemoryError:
            value = None
            conn.send(("error", OUT_OF_MEMORY, "Runtime exited: out of memory"))
            return  # Lambda replaces an environment that ran out of memory
        except SystemExit as exc:
            worker_output.finish()
            conn.send(
                ("error", "Runtime.ExitError", f"Runtime exited with error: exit status {exc.code}")
            )
            return
        except Exception as exc:
            worker_output.finish()  # its partial lines, before its answer (the router logs the error)
            conn.send(("error", type(exc).__name__, str(exc), stack_trace(exc)))
            continue
        if isinstance(result, Returned):
            payload = result.payload
            conn.send(("ok", payload if isinstance(payload, bytes) else orjson.dumps(payload)))
        else:
            conn.send(("error", result.error_type, result.message))

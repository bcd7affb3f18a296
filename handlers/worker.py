"""The child side of process isolation: one worker process is one Lambda execution environment.

The worker applies the mapping's environment and memory limit, imports the handler once (the init
phase, timed), then serves invocations one at a time over its pipe until the pipe closes. Messages
are tuples: the parent sends `(request_id, remaining_seconds, event_json)`; the worker answers
`("ready", init_seconds)` or `("init_error", type, message)` once, then `("ok", payload_json)` or
`("error", type, message)` per invocation.
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

OUT_OF_MEMORY = "Runtime.OutOfMemory"


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs to become the function's execution environment (picklable)."""

    spec: str
    code_path: str | None
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


def main(conn: Connection, config: WorkerConfig) -> None:
    """Entry point of the worker process."""
    from sluiceway.handlers.context import LambdaContext, new_log_stream_name

    log_stream_name = new_log_stream_name()
    os.environ.update(lambda_environment(config, log_stream_name))
    worker_output.install(conn, config.function_name)  # the function's logs go to the service
    import orjson
    from sluiceway.handlers.invoker import marshal_response
    from sluiceway.handlers.loader import HandlerLoadError, load_handler

    limit_memory(config.memory_size)
    started = time.perf_counter()
    try:
        loaded = load_handler(config.spec, config.code_path)
    except HandlerLoadError as exc:
        conn.send(("init_error", exc.error_type, exc.message))
        return
    except MemoryError:
        conn.send(("init_error", OUT_OF_MEMORY, "Runtime exited: out of memory during init"))
        return
    conn.send(("ready", time.perf_counter() - started))
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
            worker_output.report_exception(exc)
            conn.send(("error", type(exc).__name__, str(exc)))
            continue
        if hasattr(result, "payload"):
            payload = result.payload
            conn.send(("ok", payload if isinstance(payload, bytes) else orjson.dumps(payload)))
        else:
            conn.send(("error", result.error_type, result.message))

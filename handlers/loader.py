"""Resolve a handler string to a callable, importing its module once per process.

Lambda imports the handler module once per execution environment (the init phase) and reuses it
for every invoke. In-process, the process is the execution environment: a module's top-level code
runs on its first import only, and a loaded handler is cached so later loads cost nothing.

Failures carry Lambda's runtime error types, so they read the same as they would in CloudWatch.
A failed load is not cached: like Lambda re-running init after an init error, the next load tries
again (and picks up a fixed module or a newly installed dependency).

Every in-process handler shares one interpreter, so a module name means one module: two code
paths that both hold `app.py` resolve to whichever was imported first.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

IMPORT_MODULE_ERROR = "Runtime.ImportModuleError"
HANDLER_NOT_FOUND = "Runtime.HandlerNotFound"
MALFORMED_HANDLER_NAME = "Runtime.MalformedHandlerName"
USER_CODE_SYNTAX_ERROR = "Runtime.UserCodeSyntaxError"


class HandlerLoadError(Exception):
    """The handler could not be loaded; `error_type` is the name Lambda's runtime reports."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


@dataclass(frozen=True, slots=True)
class LoadedHandler:
    """A handler ready to call, and what its module's first import (Lambda's init) cost."""

    spec: str
    fn: Callable[..., Any]
    is_async: bool
    init_duration: float
    """Seconds the module's first import took in this process (0.0 if it was already imported)."""


_lock = threading.RLock()
_handlers: dict[tuple[str, str | None], LoadedHandler] = {}
_init_durations: dict[str, float] = {}


def parse_handler_spec(spec: str) -> tuple[str, str]:
    """Split `pkg.module:function` or Lambda's `pkg.module.function` into (module, function).

    Lambda also accepts a path form (`src/app.handler`); slashes become package dots as they do
    in Lambda's runtime.
    """
    sep = ":" if ":" in spec else "."
    module, found, function = spec.rpartition(sep)
    if not found:
        raise HandlerLoadError(
            MALFORMED_HANDLER_NAME,
            f"Bad handler '{spec}': expected 'module.function' or 'module:function'",
        )
    module = module.replace("/", ".")
    if not function or not module or any(not part for part in module.split(".")):
        raise HandlerLoadError(
            MALFORMED_HANDLER_NAME,
            f"Bad handler '{spec}': the module and function names must both be non-empty",
        )
    return module, function


def load_handler(spec: str, code_path: str | None = None) -> LoadedHandler:
    """Import the handler named by `spec` (with `code_path` first on sys.path) or raise.

    Thread-safe; meant to be called from a worker thread, since a module's first import runs
    arbitrary user code.
    """
    key = (spec, os.path.abspath(code_path) if code_path else None)
    loaded = _handlers.get(key)
    if loaded is not None:
        return loaded
    with _lock:
        loaded = _handlers.get(key)
        if loaded is not None:
            return loaded
        module_name, function_name = parse_handler_spec(spec)
        if key[1] is not None and key[1] not in sys.path:
            sys.path.insert(0, key[1])
        module = _import(module_name)
        fn = getattr(module, function_name, None)
        if fn is None or not callable(fn):
            what = "missing on" if fn is None else "is not callable in"
            raise HandlerLoadError(
                HANDLER_NOT_FOUND, f"Handler '{function_name}' {what} module '{module_name}'"
            )
        loaded = LoadedHandler(spec, fn, _is_async(fn), _init_durations[module_name])
        _handlers[key] = loaded
        return loaded


def _import(module_name: str) -> Any:
    """Import `module_name`, timing the first import and translating failures to Lambda's types."""
    already_imported = module_name in sys.modules
    started = time.perf_counter()
    try:
        module = importlib.import_module(module_name)
    except SyntaxError as e:
        raise HandlerLoadError(
            USER_CODE_SYNTAX_ERROR, f"Syntax error in module '{module_name}': {e}"
        ) from e
    except ImportError as e:
        raise HandlerLoadError(
            IMPORT_MODULE_ERROR, f"Unable to import module '{module_name}': {e}"
        ) from e
    except (Exception, SystemExit) as e:
        # Module-level code raised (or called sys.exit): the init phase failed.
        raise HandlerLoadError(
            IMPORT_MODULE_ERROR,
            f"Unable to import module '{module_name}': {type(e).__name__}: {e}",
        ) from e
    elapsed = 0.0 if already_imported else time.perf_counter() - started
    _init_durations.setdefault(module_name, elapsed)
    return module


def _is_async(fn: Callable[..., Any]) -> bool:
    """True for `async def` handlers, including callable objects with an async `__call__`."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - looking for an async __call__ method
    return call is not None and inspect.iscoroutinefunction(call)

"""Resolve a handler string to a callable, importing its module once per process.

Lambda imports the handler module once per execution environment (the init phase) and reuses it
for every invoke. In-process, the process is the execution environment: a module's top-level code
runs on its first import only, and a loaded handler is cached so later loads cost nothing.

Failures carry Lambda's runtime error types, so they read the same as they would in CloudWatch.
A failed load is not cached: like Lambda re-running init after an init error, the next load tries
again (and picks up a fixed module or a newly installed dependency).

A function's code is its own, as in Lambda, where each function has an interpreter with its code
first on sys.path: its code path (the working directory when none is set, like Lambda's task root)
goes first on sys.path before its module is imported. But in-process handlers share one
interpreter, where a module name means one module: a function whose code path holds a module this
process already imported from elsewhere cannot load (`handlers.targets.isolation_for` moves such
functions to worker processes before it comes to that).
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
from importlib.machinery import all_suffixes
from types import ModuleType
from typing import Any

from sluiceway.core.errors import SluicewayError

IMPORT_MODULE_ERROR = "Runtime.ImportModuleError"
HANDLER_NOT_FOUND = "Runtime.HandlerNotFound"
MALFORMED_HANDLER_NAME = "Runtime.MalformedHandlerName"
USER_CODE_SYNTAX_ERROR = "Runtime.UserCodeSyntaxError"


class HandlerLoadError(SluicewayError):
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
_handlers: dict[tuple[str, str], LoadedHandler] = {}
"""Per function: (handler spec, code root)."""
_init_durations: dict[tuple[str, str], float] = {}
"""Per function: (module name, code root)."""
_SUFFIXES = sorted(all_suffixes(), key=len, reverse=True)
"""Module file endings, longest first so `x.cpython-311-x86_64-linux-gnu.so` is module `x`."""


def code_root(code_path: str | None) -> str:
    """The directory a function's code is in: its code path, else the working directory.

    Lambda runs a function with its task root as the working directory; here the working
    directory at start-up plays that part. Resolved, so one folder is one function's code
    however it is spelt.
    """
    return os.path.realpath(code_path or os.getcwd())


def modules_in(root: str) -> dict[str, str]:
    """Top-level modules and regular packages in `root` (name -> path): what a function whose code
    is `root` imports under those names, since its code is first on sys.path."""
    found: dict[str, str] = {}
    try:
        entries = sorted(os.scandir(root), key=lambda entry: entry.name)
    except OSError:
        return found
    for entry in entries:
        if entry.name.startswith("__"):
            continue  # __init__.py (SAM's code folders have one), __main__.py, __pycache__
        if entry.is_dir():
            init = (os.path.join(entry.path, f"__init__{suffix}") for suffix in _SUFFIXES)
            if entry.name.isidentifier() and any(os.path.isfile(path) for path in init):
                found.setdefault(entry.name, entry.path)
            continue
        for suffix in _SUFFIXES:
            if entry.name.endswith(suffix):
                name = entry.name.removesuffix(suffix)
                if name.isidentifier():
                    found.setdefault(name, entry.path)
                break
    return found


def holds(root: str, name: str) -> bool:
    """Whether `root` provides top-level `name`, as a module, a package or a namespace portion."""
    base = os.path.join(root, name)
    return os.path.isdir(base) or any(os.path.isfile(base + suffix) for suffix in _SUFFIXES)


def loaded_elsewhere(module: object, root: str) -> str | None:
    """Where an imported `module` came from, when that is known and outside `root`; else None."""
    if not isinstance(module, ModuleType) or module.__spec__ is None:
        return None
    spec = module.__spec__
    places = [*(spec.submodule_search_locations or [])]
    if spec.has_location and spec.origin:
        places.append(spec.origin)
    places = [place for place in places if os.path.isabs(place)]
    if not places or any(_within(place, root) for place in places):
        return None
    return places[-1]


def _within(path: str, root: str) -> bool:
    real = os.path.realpath(path)
    return os.path.commonpath([real, root]) == root


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
    """Import the handler named by `spec` with its code (`code_root(code_path)`) first on sys.path,
    or raise.

    Cached per function (spec and code root), never per handler string alone. Thread-safe; meant
    to be called from a worker thread, since a module's first import runs arbitrary user code.
    """
    root = code_root(code_path)
    key = (spec, root)
    loaded = _handlers.get(key)
    if loaded is not None:
        return loaded
    with _lock:
        loaded = _handlers.get(key)
        if loaded is not None:
            return loaded
        module_name, function_name = parse_handler_spec(spec)
        _first_on_path(root)
        top = module_name.partition(".")[0]
        _refuse_foreign(module_name, root, top, sys.modules.get(top))
        module = _import(module_name, root)
        _refuse_foreign(module_name, root, module_name, module)
        fn = getattr(module, function_name, None)
        if fn is None or not callable(fn):
            what = "missing on" if fn is None else "is not callable in"
            raise HandlerLoadError(
                HANDLER_NOT_FOUND, f"Handler '{function_name}' {what} module '{module_name}'"
            )
        loaded = LoadedHandler(spec, fn, _is_async(fn), _init_durations[(module_name, root)])
        _handlers[key] = loaded
        return loaded


def _first_on_path(root: str) -> None:
    """Put the function's code first on sys.path, as Lambda puts the task root first."""
    if not sys.path or sys.path[0] != root:
        sys.path[:] = [root, *(entry for entry in sys.path if entry != root)]


def _refuse_foreign(module_name: str, root: str, held: str, module: object) -> None:
    """Refuse to run another function's module (or a library's) in place of this function's own.

    When the code holds the handler's top-level package but this process already imported one of
    that name from elsewhere, importing would return that one: one interpreter holds one module
    of a name. Only a worker process of its own can give this function its code.
    """
    if module is None or not holds(root, module_name.partition(".")[0]):
        return
    where = loaded_elsewhere(module, root)
    if where is not None:
        raise HandlerLoadError(
            IMPORT_MODULE_ERROR,
            f"Unable to import module '{module_name}': this process already holds '{held}' "
            f"from {where}, not the one in the function's code ({root}); one interpreter holds "
            "one module of a name, so run this function with isolation=process",
        )


def _import(module_name: str, root: str) -> Any:
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
    _init_durations.setdefault((module_name, root), elapsed)
    return module


def _is_async(fn: Callable[..., Any]) -> bool:
    """True for `async def` handlers, including callable objects with an async `__call__`."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - looking for an async __call__ method
    return call is not None and inspect.iscoroutinefunction(call)

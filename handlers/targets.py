"""Which invoker a mapping's handler needs: in-process, worker processes, HTTP or a Lambda ARN.

Refuses combinations that would silently do less than configured (an environment without process
isolation, a CA bundle for a Python handler), since a setting that is ignored is a surprise later.

A function's code is its own, as in Lambda, where each function has an interpreter with its code
first on sys.path. In-process functions share one interpreter, so those whose code would not be
their own there run in worker processes instead (`isolation_for`).
"""

from __future__ import annotations

import logging
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sluiceway.config.functions import FunctionConfig
from sluiceway.config.mapping import Isolation, MappingConfig
from sluiceway.config.settings import Settings
from sluiceway.core.aws import AwsClients
from sluiceway.core.errors import SluicewayError
from sluiceway.handlers.http_target import HttpInvoker
from sluiceway.handlers.invoker import Invoker, PythonInvoker
from sluiceway.handlers.lambda_target import LambdaInvoker
from sluiceway.handlers.loader import (
    HandlerLoadError,
    code_root,
    holds,
    loaded_elsewhere,
    modules_in,
    parse_handler_spec,
)
from sluiceway.handlers.process_pool import ProcessPoolInvoker
from sluiceway.handlers.reserved import (
    ReservedConflict,
    ReservedInvoker,
    ReservedPools,
    reserved_key,
)
from sluiceway.handlers.worker import RUNTIME_MODULES, WorkerConfig

logger = logging.getLogger(__name__)

_EVERY_INTERPRETERS = frozenset(sys.stdlib_module_names) | RUNTIME_MODULES
"""Modules a worker holds before the function's code too (as Lambda's runtime holds the standard
library): no isolation gives a function its own module of these names, so none is asked for."""
_NAMED_OTHERS = 3


class TargetError(SluicewayError, ValueError):
    """The mapping's handler settings cannot be honoured as given."""


FunctionSettings = MappingConfig | FunctionConfig
"""What a target is built from: a mapping's own handler fields, or a declared function."""


def _variable(mapping: FunctionSettings, field: str) -> str:
    return mapping.variable(field)


def _refuse_unused(mapping: FunctionSettings) -> None:
    kind = mapping.handler_kind
    if mapping.environment and (kind != "python" or mapping.isolation != "process"):
        raise TargetError(
            f"{_variable(mapping, 'environment')}: applies only to Python handlers with "
            "isolation=process (an HTTP or Lambda target has its own environment)"
        )
    if mapping.isolation == "process" and kind != "python":
        raise TargetError(f"{_variable(mapping, 'isolation')}: applies only to Python handlers")
    if mapping.ca_bundle and not mapping.handler.startswith("https://"):
        raise TargetError(f"{_variable(mapping, 'ca_bundle')}: applies only to https:// handlers")


@dataclass(frozen=True)
class _Code:
    """One in-process function's code, and where it would get each top-level module of its own."""

    mapping: str
    root: str
    modules: dict[str, bool]
    """Module name -> whether its code holds it (False: the handler's module, from sys.path)."""

    def place(self, module: str) -> str | None:
        return self.root if self.modules[module] else None

    def describe(self, module: str, own: bool) -> str:
        whose = "its" if own else f"mapping {self.mapping}'s"
        if self.modules[module]:
            return f"'{module}' from {whose} code ({self.root})"
        return f"'{module}' from sys.path (not in {whose} code, {self.root})"


def isolation_for(
    mappings: Iterable[FunctionSettings], loaded: Mapping[str, object] | None = None
) -> dict[str, tuple[Isolation, str | None]]:
    """Each mapping's effective isolation (by mapping name), with the reason when it is not the
    configured one, for `run` to act on and log and for `check` to report.

    In-process functions share one interpreter, where a module name means one module. So an
    enabled Python mapping with isolation=thread runs in worker processes (isolation=process)
    when a top-level module its code holds, or its handler's module:
    - is another in-process function's too, from a different place (another code path, or
      sys.path): SAM's default layout, fn_a/app.py and fn_b/app.py, is the common case; or
    - is already loaded in this process (`loaded`, by default sys.modules) from elsewhere.
    The standard library and Sluiceway's own modules are left out, since a worker holds them
    before the function's code as well. Every other mapping keeps its configured isolation.
    """
    listed = list(mappings)
    decisions: dict[str, tuple[Isolation, str | None]] = {
        m.name: (m.isolation, None) for m in listed
    }
    codes = [_code(m) for m in listed if _in_process(m)]
    reasons = _shared_modules(codes)
    modules = sys.modules if loaded is None else loaded
    for code in codes:
        if code.mapping not in reasons:
            reason = _already_loaded(code, modules)
            if reason is not None:
                reasons[code.mapping] = reason
    for name, reason in reasons.items():
        decisions[name] = ("process", reason)
    return decisions


def _in_process(mapping: FunctionSettings) -> bool:
    return mapping.enabled and mapping.handler_kind == "python" and mapping.isolation == "thread"


def _code(mapping: FunctionSettings) -> _Code:
    """The modules a function's code holds, and its handler's module wherever it comes from."""
    root = code_root(mapping.code_path)
    modules = {name: True for name in modules_in(root) if name not in _EVERY_INTERPRETERS}
    try:
        top = parse_handler_spec(mapping.handler or "")[0].partition(".")[0]
    except HandlerLoadError:
        top = None  # a malformed handler fails to load in any isolation
    if top is not None and top not in _EVERY_INTERPRETERS:
        modules.setdefault(top, holds(root, top))
    return _Code(mapping.name, root, modules)


def _shared_modules(codes: list[_Code]) -> dict[str, str]:
    """Functions whose module of some name is not the same one as another function's."""
    places: dict[str, dict[str | None, list[_Code]]] = defaultdict(lambda: defaultdict(list))
    for code in codes:
        for module in code.modules:
            places[module][code.place(module)].append(code)
    reasons: dict[str, str] = {}
    for module in sorted(places):
        if len(places[module]) < 2:
            continue
        for place, users in places[module].items():
            others = [
                other.describe(module, own=False)
                for elsewhere, codes_there in places[module].items()
                if elsewhere != place
                for other in codes_there
            ]
            named = " and ".join(others[:_NAMED_OTHERS])
            if len(others) > _NAMED_OTHERS:
                named += f" and {len(others) - _NAMED_OTHERS} more"
            for code in users:
                reasons.setdefault(
                    code.mapping,
                    f"{code.describe(module, own=True)} and {named} cannot both be loaded in "
                    "one interpreter",
                )
    return reasons


def _already_loaded(code: _Code, modules: Mapping[str, object]) -> str | None:
    """Why the function cannot have its own module in this process, which holds another already."""
    for module in sorted(code.modules):
        if code.modules[module] and module in modules:
            where = loaded_elsewhere(modules[module], code.root)
            if where is not None:
                return (
                    f"{code.describe(module, own=True)} cannot be loaded in this process, which "
                    f"already holds '{module}' from {where}"
                )
    return None


def build_target(
    mapping: FunctionSettings,
    settings: Settings,
    clients: AwsClients | None = None,
    reserved: ReservedPools | None = None,
    isolations: Mapping[str, tuple[Isolation, str | None]] | None = None,
) -> Invoker:
    """The invoker for `mapping`, wrapped in its function's reserved concurrency when set.

    An in-process function whose code would not be its own in this interpreter runs in worker
    processes instead (`isolation_for`), with a warning saying so. `isolations` is that decision
    made once for every mapping and function (the service builds many targets); without it, it
    is made here.
    """
    _refuse_unused(mapping)
    if isolations is None or mapping.name not in isolations:
        isolations = isolation_for(every_function(settings, mapping))
    isolation, reason = isolations[mapping.name]
    if reason is not None:
        logger.warning(
            "mapping %s (function %s) runs in worker processes, as with isolation=process: %s. "
            "A timeout stops its worker and its memory_size (%d MB) is a limit; set %s=process "
            "to choose this yourself",
            mapping.name,
            mapping.effective_function_name,
            reason,
            mapping.memory_size,
            _variable(mapping, "isolation"),
        )
    invoker = _bare_target(mapping, settings, clients, isolation)
    if mapping.reserved_concurrency is None:
        return invoker
    pools = reserved if reserved is not None else ReservedPools()
    key = reserved_key(mapping.handler or "", mapping.handler_kind, mapping.effective_function_name)
    try:
        pool = pools.pool(key, mapping.reserved_concurrency)
    except ReservedConflict as exc:
        raise TargetError(f"{_variable(mapping, 'reserved_concurrency')}: {exc}") from None
    return ReservedInvoker(invoker, pool)


def every_function(
    settings: Settings, mapping: FunctionSettings | None = None
) -> list[FunctionSettings]:
    """Every mapping and declared function of `settings` (with `mapping` in its own place),
    the set whose code `isolation_for` weighs."""
    named = {} if mapping is None else {mapping.name: mapping}
    listed: list[FunctionSettings] = [m for m in settings.mappings.values() if m.name not in named]
    listed.extend(f for f in settings.functions.values() if f.name not in named)
    return [*listed, *named.values()]


def _bare_target(
    mapping: FunctionSettings, settings: Settings, clients: AwsClients | None, isolation: Isolation
) -> Invoker:
    kind = mapping.handler_kind
    handler = mapping.handler or ""
    if kind == "http":
        return HttpInvoker(handler, mapping.function_timeout, mapping.ca_bundle)
    if kind == "lambda":
        if clients is None:
            raise TargetError(f"{mapping.variable('handler')}: a Lambda target needs AWS clients")
        return LambdaInvoker(handler, clients, mapping.function_timeout)
    region, account = mapping.home(settings.aws_region)
    code_path = code_root(mapping.code_path)  # the working directory at start-up, when unset
    if isolation == "process":
        config = WorkerConfig(
            spec=handler,
            code_path=code_path,
            function_name=mapping.effective_function_name,
            memory_size=mapping.memory_size,
            region=region,
            account=account,
            environment=dict(mapping.environment),
        )
        return ProcessPoolInvoker(config, mapping.function_timeout, mapping.handler_threads)
    return PythonInvoker(
        spec=handler,
        code_path=code_path,
        function_name=mapping.effective_function_name,
        function_timeout=mapping.function_timeout,
        memory_size=mapping.memory_size,
        region=region,
        account=account,
        max_threads=mapping.handler_threads,
    )

"""Which invoker a mapping's handler needs: in-process, worker processes, HTTP or a Lambda ARN.

Refuses combinations that would silently do less than configured (an environment without process
isolation, a CA bundle for a Python handler), since a setting that is ignored is a surprise later.
"""

from __future__ import annotations

from sluiceway.config.mapping import MappingConfig
from sluiceway.config.settings import Settings
from sluiceway.core.aws import AwsClients
from sluiceway.handlers.http_target import HttpInvoker
from sluiceway.handlers.invoker import Invoker, PythonInvoker
from sluiceway.handlers.lambda_target import LambdaInvoker
from sluiceway.handlers.process_pool import ProcessPoolInvoker
from sluiceway.handlers.reserved import (
    ReservedConflict,
    ReservedInvoker,
    ReservedPools,
    reserved_key,
)
from sluiceway.handlers.worker import WorkerConfig


class TargetError(ValueError):
    """The mapping's handler settings cannot be honoured as given."""


def _variable(mapping: MappingConfig, field: str) -> str:
    return f"SLUICEWAY_MAPPINGS__{mapping.name.upper()}__{field.upper()}"


def _refuse_unused(mapping: MappingConfig) -> None:
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


def build_target(
    mapping: MappingConfig,
    settings: Settings,
    clients: AwsClients | None = None,
    reserved: ReservedPools | None = None,
) -> Invoker:
    """The invoker for `mapping`, wrapped in its function's reserved concurrency when set."""
    _refuse_unused(mapping)
    invoker = _bare_target(mapping, settings, clients)
    if mapping.reserved_concurrency is None:
        return invoker
    pools = reserved if reserved is not None else ReservedPools()
    key = reserved_key(mapping.handler, mapping.handler_kind)
    try:
        pool = pools.pool(key, mapping.reserved_concurrency)
    except ReservedConflict as exc:
        raise TargetError(f"{_variable(mapping, 'reserved_concurrency')}: {exc}") from None
    return ReservedInvoker(invoker, pool)


def _bare_target(mapping: MappingConfig, settings: Settings, clients: AwsClients | None) -> Invoker:
    kind = mapping.handler_kind
    if kind == "http":
        return HttpInvoker(mapping.handler, mapping.function_timeout, mapping.ca_bundle)
    if kind == "lambda":
        if clients is None:
            raise TargetError(f"mapping {mapping.name}: a Lambda target needs AWS clients")
        return LambdaInvoker(mapping.handler, clients, mapping.function_timeout)
    source = mapping.source_ref
    region = source.region or settings.aws_region
    if mapping.isolation == "process":
        config = WorkerConfig(
            spec=mapping.handler,
            code_path=mapping.code_path,
            function_name=mapping.effective_function_name,
            memory_size=mapping.memory_size,
            region=region,
            account=source.account,
            environment=dict(mapping.environment),
        )
        return ProcessPoolInvoker(config, mapping.function_timeout, mapping.handler_threads)
    return PythonInvoker(
        spec=mapping.handler,
        code_path=mapping.code_path,
        function_name=mapping.effective_function_name,
        function_timeout=mapping.function_timeout,
        memory_size=mapping.memory_size,
        region=region,
        account=source.account,
        max_threads=mapping.handler_threads,
    )

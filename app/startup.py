"""What `run` and `check` require before anything starts, and what `run` says as it starts.

`preflight` is the one place both commands refuse a configuration that cannot run, so they never
disagree (`check` passing what `run` refuses); a rule relaxed here is relaxed for both.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Mapping

from sluiceway.config.mapping import MappingConfig
from sluiceway.config.settings import Settings
from sluiceway.core.errors import SluicewayError
from sluiceway.core.otel_settings import check_otel_settings
from sluiceway.pollers.stream_poller import starting_position

log = logging.getLogger(__name__)

DISTRIBUTION = "sluiceway"


class NothingToRun(SluicewayError):
    """The configuration names nothing for the service to do."""


NO_MAPPINGS = (
    "nothing to run: no mappings (SLUICEWAY_MAPPINGS__<NAME>__SOURCE and "
    "SLUICEWAY_MAPPINGS__<NAME>__HANDLER) and no functions (SLUICEWAY_FUNCTIONS__<NAME>__HANDLER) "
    "are configured, nor [mappings.<name>] or [functions.<name>] in the file named by "
    "SLUICEWAY_CONFIG_FILE"
)


def version() -> str:
    """The installed distribution's version (the one `pip` reports)."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def preflight(settings: Settings, environ: Mapping[str, str] | None = None) -> None:
    """Refuse, with one line, a configuration `run` could not run (and so `check` must fail)."""
    if not settings.mappings and not settings.functions:
        raise NothingToRun(NO_MAPPINGS)
    check_otel_settings(os.environ if environ is None else environ)


def aws_services(settings: Settings) -> list[str]:
    """Every AWS service the enabled mappings call (sources, Lambda targets, destinations)."""
    services: set[str] = set()
    for mapping in settings.mappings.values():
        if not mapping.enabled:
            continue
        services.update(
            {"sqs": ["sqs"], "kinesis": ["kinesis"], "dynamodb": ["dynamodbstreams", "dynamodb"]}[
                mapping.kind
            ]
        )
        if mapping.handler_kind == "lambda":
            services.add("lambda")
        destination = mapping.on_failure_destination
        if destination is not None:
            services.add(destination.kind)
    return sorted(services)


def describe_target(mapping: MappingConfig) -> str:
    """The handler as a user reads it: its kind, where it runs, and the handler itself."""
    kind = mapping.handler_kind
    if kind == "python":
        return f"python {mapping.handler} (isolation {mapping.isolation})"
    return f"{kind} {mapping.handler}"


def describe_checkpoints(settings: Settings) -> str:
    config = settings.checkpoints
    if config.backend == "sqlite":
        return f"sqlite {config.path}"
    if config.backend == "dynamodb":
        return f"dynamodb table {config.table}"
    return config.backend


def describe_mapping(mapping: MappingConfig, settings: Settings) -> str:
    """One line: name, source, starting position (streams), target, batch size, checkpoints."""
    if not mapping.enabled:
        return f"mapping {mapping.name}: disabled ({mapping.kind} {mapping.source})"
    source = f"{mapping.kind} {mapping.source}"
    if mapping.kind != "sqs":
        source += f" from {starting_position(mapping)}"
    line = (
        f"mapping {mapping.name}: {source} -> {describe_target(mapping)}, "
        f"batch size {mapping.effective_batch_size}"
    )
    if mapping.kind != "sqs":
        line += f", checkpoints {describe_checkpoints(settings)}"
    return line


def log_mappings(settings: Settings) -> None:
    for mapping in settings.mappings.values():
        log.info("%s", describe_mapping(mapping, settings), extra={"mapping": mapping.name})

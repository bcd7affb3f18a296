"""The OTEL_* variables Sluiceway reads, checked before start-up.

The OpenTelemetry SDK falls back quietly on values it does not know: an unknown protocol becomes
http/protobuf, an endpoint without a scheme fails at every export, an exporter it lacks exports
nothing. A user who set one of them meant something, so `run` and `check` refuse such values
with the variable, the value and what is accepted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlparse

from sluiceway.core.errors import SluicewayError

EXPORTERS = {
    "TRACES": ("otlp", "console", "none"),
    "METRICS": ("otlp", "console", "prometheus", "none"),
}
PROTOCOLS = ("http/protobuf", "grpc")
_TRUE = frozenset({"true", "1", "yes", "on"})


class TelemetrySettingsError(SluicewayError):
    """OTEL_* variables that the service cannot honour."""


def check_otel_settings(environ: Mapping[str, str] | None = None) -> None:
    """Raise TelemetrySettingsError naming every OTEL_* value that cannot be used."""
    problems = otel_problems(os.environ if environ is None else environ)
    if problems:
        raise TelemetrySettingsError("; ".join(problems))


def otel_problems(env: Mapping[str, str]) -> list[str]:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return []
    problems: list[str] = []
    for signal, accepted in EXPORTERS.items():
        variable = f"OTEL_{signal}_EXPORTER"
        raw = env.get(variable)
        if raw is None:
            continue
        unknown = [n for n in (p.strip().lower() for p in raw.split(",")) if n not in accepted]
        if unknown:
            problems.append(
                f"{variable}={raw!r}: {', '.join(unknown)} is not supported "
                f"(use {', '.join(accepted)})"
            )
    for variable in _protocol_variables():
        raw = env.get(variable)
        if raw is not None and raw.strip() not in PROTOCOLS:
            problems.append(f"{variable}={raw!r}: use {' or '.join(PROTOCOLS)}")
    for signal in EXPORTERS:
        protocol = _protocol(env, signal)
        for variable in (f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
            raw = env.get(variable)
            if raw and not _endpoint_ok(raw.strip(), protocol):
                problem = (
                    f"{variable}={raw!r}: not a URL the {protocol} exporter can send to "
                    f"(e.g. http://collector:{4317 if protocol == 'grpc' else 4318})"
                )
                if problem not in problems:
                    problems.append(problem)
    return problems


def _protocol_variables() -> list[str]:
    return ["OTEL_EXPORTER_OTLP_PROTOCOL"] + [f"OTEL_EXPORTER_OTLP_{s}_PROTOCOL" for s in EXPORTERS]


def _protocol(env: Mapping[str, str], signal: str) -> str:
    raw = env.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    return (raw or "http/protobuf").strip()


def _endpoint_ok(value: str, protocol: str) -> bool:
    """http/protobuf needs an http(s) URL; gRPC also takes a bare `host:port`."""
    if protocol == "grpc" and "://" not in value:
        return bool(value) and " " not in value
    parsed = urlparse(value)
    return parsed.scheme in ("http", "https") and bool(parsed.netloc)

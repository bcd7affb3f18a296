"""`sluiceway import-sam`: Sluiceway mappings from a SAM or CloudFormation template.

Every SQS, Kinesis and DynamoDB event source — a function's `Events` of those types, and
`AWS::Lambda::EventSourceMapping` resources — becomes a mapping with the same properties. A
function's `Schedule` and `ScheduleV2` events become schedules of the function, declared on its
own (its mappings then name it). The
function's Handler and CodeUri become an in-process handler; an image function becomes an HTTP
target (its container run beside Sluiceway, RIE on port 8080). Whatever cannot be carried over is
listed in the report, never dropped silently.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sluiceway.app.sam_intrinsics import Resolver, Unresolved, load_template

FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")
EVENT_TYPES = {"SQS": "sqs", "Kinesis": "kinesis", "DynamoDB": "dynamodb"}
SCHEDULE_TYPES = ("Schedule", "ScheduleV2")
_FUNCTION_KEYS = {
    "handler": "handler",
    "code_path": "code_path",
    "function_timeout": "timeout",
    "memory_size": "memory_size",
    "environment": "environment",
    "isolation": "isolation",
    "reserved_concurrency": "reserved_concurrent_executions",
}
"""A mapping's handler field -> the same setting of a declared function."""
_SCHEDULE_HANDLED = ("Schedule", "ScheduleExpression", "Input", "Enabled", "State", "Name")

# Event source property -> mapping field; the values are carried over as they are.
_PROPERTIES = {
    "BatchSize": "batch_size",
    "MaximumBatchingWindowInSeconds": "maximum_batching_window_in_seconds",
    "FunctionResponseTypes": "function_response_types",
    "FilterCriteria": "filter_criteria",
    "StartingPosition": "starting_position",
    "StartingPositionTimestamp": "starting_position_timestamp",
    "ParallelizationFactor": "parallelization_factor",
    "BisectBatchOnFunctionError": "bisect_batch_on_function_error",
    "MaximumRetryAttempts": "maximum_retry_attempts",
    "MaximumRecordAgeInSeconds": "maximum_record_age_in_seconds",
    "TumblingWindowInSeconds": "tumbling_window_in_seconds",
    "Enabled": "enabled",
}
_SOURCE_PROPERTIES = ("Queue", "Stream", "EventSourceArn")
_HANDLED_ELSEWHERE = (*_SOURCE_PROPERTIES, "ScalingConfig", "DestinationConfig", "FunctionName")


@dataclass
class ImportReport:
    """What was written, and what could not be carried over (one line each)."""

    mappings: dict[str, dict[str, Any]] = field(default_factory=dict)
    functions: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Functions declared on their own: those a schedule invokes."""
    schedules: dict[str, dict[str, Any]] = field(default_factory=dict)
    not_carried: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [f"{len(self.mappings)} mapping(s): {', '.join(self.mappings) or 'none'}"]
        if self.schedules:
            lines.append(f"{len(self.schedules)} schedule(s): {', '.join(self.schedules)}")
        lines += [f"not carried over: {line}" for line in self.not_carried]
        lines += [f"note: {line}" for line in self.notes]
        return "\n".join(lines)


@dataclass
class _Importer:
    resolver: Resolver
    template_dir: Path
    report: ImportReport = field(default_factory=ImportReport)

    @property
    def globals(self) -> dict[str, Any]:
        function_globals: dict[str, Any] = self.resolver.template.get("Globals", {}).get(
            "Function", {}
        )
        return function_globals

    def run(self) -> ImportReport:
        for logical, resource in self.resolver.resources.items():
            kind = resource.get("Type")
            properties = resource.get("Properties") or {}
            if kind == "AWS::Serverless::Function":
                for event_name, event in (properties.get("Events") or {}).items():
                    if event.get("Type") in SCHEDULE_TYPES:
                        self._schedule(
                            f"{logical}.Events.{event_name}",
                            f"{logical}-{event_name}",
                            logical,
                            event,
                        )
                        continue
                    source_kind = EVENT_TYPES.get(event.get("Type", ""))
                    if source_kind is None:
                        self.report.not_carried.append(
                            f"{logical}.Events.{event_name}: event type {event.get('Type')} "
                            "(SQS, Kinesis and DynamoDB become mappings; Schedule and "
                            "ScheduleV2 schedules)"
                        )
                        continue
                    where = f"{logical}.Events.{event_name}"
                    self._mapping(
                        where, f"{logical}-{event_name}", logical, event.get("Properties") or {}
                    )
            elif kind == "AWS::Lambda::EventSourceMapping":
                function = self._function_logical_id(properties.get("FunctionName"))
                self._mapping(logical, logical, function, properties)
        for note in self.resolver.notes:
            self._note_once(note)
        self._name_declared_functions()
        return self.report

    def _schedule(self, where: str, name: str, function: str, event: dict[str, Any]) -> None:
        """A Schedule or ScheduleV2 event: the function, declared on its own, and a schedule."""
        props = event.get("Properties") or {}
        key = "Schedule" if event.get("Type") == "Schedule" else "ScheduleExpression"
        expression = self._resolved(where, props.get(key), key)
        if not expression:
            self.report.not_carried.append(f"{where}: the whole schedule (no {key})")
            return
        fields: dict[str, Any] = {}
        if not self._function_fields(where, function, fields):
            return
        function_name = fields.pop("function_name")
        self.report.functions[function_name] = {
            _FUNCTION_KEYS[k]: v for k, v in fields.items() if k in _FUNCTION_KEYS
        }
        schedule: dict[str, Any] = {
            "schedule_expression": expression,
            "function_name": function_name,
        }
        payload = self._resolved(where, props.get("Input"), "Input")
        if payload is not None:
            schedule["input"] = payload if isinstance(payload, str) else json.dumps(payload)
        if "Enabled" in props:
            schedule["enabled"] = bool(self._resolved(where, props["Enabled"], "Enabled"))
        elif "State" in props:
            schedule["enabled"] = self._resolved(where, props["State"], "State") == "ENABLED"
        timezone = props.get("ScheduleExpressionTimezone")
        if timezone not in (None, "UTC", "Etc/UTC"):
            self.report.not_carried.append(
                f"{where}: ScheduleExpressionTimezone {timezone} (schedules run in UTC)"
            )
        for prop in props:
            if prop not in (*_SCHEDULE_HANDLED, "ScheduleExpressionTimezone"):
                self.report.not_carried.append(f"{where}: {prop}")
        self.report.schedules[_mapping_name(name)] = schedule

    def _name_declared_functions(self) -> None:
        """Mappings of a function declared on its own name it rather than repeat its handler
        (one function has one set of handler settings)."""
        declared = {name.lower() for name in self.report.functions}
        for mapping in self.report.mappings.values():
            if str(mapping.get("function_name", "")).lower() in declared:
                for key in _FUNCTION_KEYS:
                    mapping.pop(key, None)

    def _function_logical_id(self, reference: Any) -> str | None:
        """The template's function a FunctionName refers to (Ref, GetAtt, or its name)."""
        if isinstance(reference, dict):
            target = reference.get("Ref") or reference.get("Fn::GetAtt")
            if isinstance(target, list):
                target = target[0]
            if isinstance(target, str) and target in self.resolver.resources:
                return target
        for logical, resource in self.resolver.resources.items():
            if resource.get("Type") in FUNCTION_TYPES:
                name = (resource.get("Properties") or {}).get("FunctionName")
                if name == reference:
                    return logical
        return None

    def _mapping(self, where: str, name: str, function: str | None, props: dict[str, Any]) -> None:
        mapping: dict[str, Any] = {}
        try:
            source = self.resolver.resolve(next(props[k] for k in _SOURCE_PROPERTIES if k in props))
        except (StopIteration, Unresolved) as exc:
            reason = str(exc) or "no Queue, Stream or EventSourceArn"
            self.report.not_carried.append(f"{where}: the whole event source ({reason})")
            return
        mapping["source"] = source
        if function is None:
            self.report.not_carried.append(f"{where}: the function is not in this template")
            return
        if not self._function_fields(where, function, mapping):
            return
        self._properties(where, props, mapping, str(source))
        self.report.mappings[_mapping_name(name)] = mapping

    def _function_fields(self, where: str, logical: str, mapping: dict[str, Any]) -> bool:
        resource = self.resolver.resources[logical]
        props = {**self.globals, **(resource.get("Properties") or {})}
        if resource.get("Type") == "AWS::Lambda::Function":
            props.setdefault("CodeUri", None)
        name = self._resolved(where, props.get("FunctionName"), "FunctionName")
        mapping["function_name"] = _function_name(name or logical)
        if props.get("PackageType") == "Image":
            host = _mapping_name(logical).replace("_", "-")
            mapping["handler"] = f"http://{host}:8080"
            self._note_once(
                f"{logical}: an image function: run its image as a compose service named {host} "
                "(its Runtime Interface Emulator listens on 8080), or set the handler to its "
                "Lambda ARN"
            )
        else:
            runtime = str(self._resolved(where, props.get("Runtime"), "Runtime") or "")
            if runtime and not runtime.startswith("python"):
                self.report.not_carried.append(
                    f"{where}: runtime {runtime} cannot run in-process (set the handler to an "
                    "http:// target running the function's image, or its Lambda ARN)"
                )
                return False
            handler = self._resolved(where, props.get("Handler"), "Handler")
            if not handler:
                self.report.not_carried.append(f"{where}: {logical} has no Handler")
                return False
            mapping["handler"] = handler
            self._code_path(where, props, mapping)
        for prop, key in (("Timeout", "function_timeout"), ("MemorySize", "memory_size")):
            value = self._resolved(where, props.get(prop), prop)
            if value is not None:
                mapping[key] = value
        reserved = self._resolved(
            where, props.get("ReservedConcurrentExecutions"), "ReservedConcurrentExecutions"
        )
        if reserved is not None:
            mapping["reserved_concurrency"] = reserved
        variables = self._resolved(
            where, (props.get("Environment") or {}).get("Variables"), "Environment"
        )
        if variables:
            mapping["isolation"] = "process"
            mapping["environment"] = {str(k): str(v) for k, v in variables.items()}
            self._note_once(
                f"{logical}: Environment.Variables are set, so its handler runs with "
                "isolation=process (a worker process per concurrent invocation)"
            )
        for prop in ("Layers", "VpcConfig", "Role", "Policies", "Architectures", "Tracing"):
            if prop in props:
                self._not_carried_once(f"{logical}: function property {prop}")
        return True

    def _note_once(self, line: str) -> None:
        if line not in self.report.notes:
            self.report.notes.append(line)

    def _not_carried_once(self, line: str) -> None:
        if line not in self.report.not_carried:
            self.report.not_carried.append(line)

    def _code_path(self, where: str, props: dict[str, Any], mapping: dict[str, Any]) -> None:
        code = self._resolved(where, props.get("CodeUri"), "CodeUri")
        if code is None:
            if "InlineCode" in props or "Code" in props:
                self._not_carried_once(
                    f"{where}: inline or S3-packaged Code (set code_path to the unpacked code)"
                )
            return
        if not isinstance(code, str) or code.startswith("s3://"):
            self.report.not_carried.append(f"{where}: CodeUri {code!r} is not a local directory")
            return
        directory = (self.template_dir / code).resolve()
        if directory.is_dir():
            mapping["code_path"] = str(directory)
        else:
            self.report.not_carried.append(f"{where}: CodeUri {code} is not a directory here")

    def _properties(
        self, where: str, props: dict[str, Any], mapping: dict[str, Any], source: str
    ) -> None:
        for prop, value in props.items():
            key = _PROPERTIES.get(prop)
            if key is not None:
                resolved = self._resolved(where, value, prop)
                if resolved is not None:
                    mapping[key] = resolved
            elif prop == "ScalingConfig":
                concurrency = (self._resolved(where, value, prop) or {}).get("MaximumConcurrency")
                if concurrency is not None:
                    mapping["scaling_config"] = {"maximum_concurrency": concurrency}
            elif prop == "DestinationConfig":
                self._destination(where, value, mapping, source)
            elif prop not in _HANDLED_ELSEWHERE:
                self.report.not_carried.append(f"{where}: {prop}")
        if isinstance(mapping.get("starting_position"), str):
            mapping["starting_position"] = mapping["starting_position"].upper()

    def _destination(self, where: str, value: Any, mapping: dict[str, Any], source: str) -> None:
        on_failure = (self._resolved(where, value, "DestinationConfig") or {}).get("OnFailure")
        destination = (on_failure or {}).get("Destination")
        if not destination:
            return
        if source.startswith("arn:aws:sqs") or "sqs." in source:
            self.report.not_carried.append(
                f"{where}: DestinationConfig on an SQS source (its DLQ is the queue's redrive policy)"
            )
            return
        mapping["destination_config"] = {"on_failure": {"destination": destination}}

    def _resolved(self, where: str, value: Any, what: str) -> Any:
        try:
            return self.resolver.resolve(value)
        except Unresolved as exc:
            self.report.not_carried.append(f"{where}: {what} ({exc})")
            return None


def import_template(
    path: str | Path,
    *,
    region: str = "us-east-1",
    account: str = "123456789012",
    stack_name: str = "sluiceway",
    parameters: dict[str, str] | None = None,
) -> ImportReport:
    """Read the template and convert every event source it declares."""
    template = load_template(path)
    resolver = Resolver(template, region, account, stack_name, dict(parameters or {}))
    return _Importer(resolver, Path(path).resolve().parent).run()


def _mapping_name(name: str) -> str:
    """A valid mapping name: lowercase letters, digits, '-' and '_', at most 64."""
    cleaned = re.sub(r"[^a-z0-9]+", "_", re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower())
    return cleaned.strip("_")[:64].strip("_") or "mapping"


def _function_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", str(name))[:64]


# ---------------------------------------------------------------- writing


def to_toml(mappings: dict[str, dict[str, Any]]) -> str:
    """The mappings as a Sluiceway TOML config file."""
    lines = ["# Written by `sluiceway import-sam`; every key is a mapping field (README.md)."]
    for name, fields in mappings.items():
        lines.append(f"\n[mappings.{name}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in fields.items())
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{" + items + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_env(mappings: dict[str, dict[str, Any]]) -> str:
    """The mappings as an env file (`KEY=value` lines, as docker compose's env_file reads them)."""
    lines = ["# Written by `sluiceway import-sam`."]
    for name, fields in mappings.items():
        prefix = f"SLUICEWAY_MAPPINGS__{name.upper()}__"
        for key, value in fields.items():
            if key in ("scaling_config", "destination_config"):
                for path, leaf in _flatten(value):
                    lines.append(f"{prefix}{key.upper()}__{path}={_env_value(leaf)}")
            else:
                lines.append(f"{prefix}{key.upper()}={_env_value(value)}")
    return "\n".join(lines) + "\n"


def sections_toml(
    functions: dict[str, dict[str, Any]], schedules: dict[str, dict[str, Any]]
) -> str:
    """Declared functions and schedules as TOML sections, after the mappings'."""
    lines: list[str] = []
    for section, entries in (("functions", functions), ("schedules", schedules)):
        for name, fields in entries.items():
            lines.append(f"\n[{section}.{name}]")
            lines.extend(f"{key} = {_toml_value(value)}" for key, value in fields.items())
    return "\n".join(lines) + "\n" if lines else ""


def sections_env(functions: dict[str, dict[str, Any]], schedules: dict[str, dict[str, Any]]) -> str:
    """Declared functions and schedules as env-file lines, after the mappings'."""
    lines: list[str] = []
    for section, entries in (("FUNCTIONS", functions), ("SCHEDULES", schedules)):
        for name, fields in entries.items():
            prefix = f"SLUICEWAY_{section}__{name.upper()}__"
            lines.extend(
                f"{prefix}{key.upper()}={_env_value(value)}" for key, value in fields.items()
            )
    return "\n".join(lines) + "\n" if lines else ""


def _flatten(value: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, leaf in value.items():
        path = f"{prefix}{key.upper()}"
        items += _flatten(leaf, f"{path}__") if isinstance(leaf, dict) else [(path, leaf)]
    return items


def _env_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def write_import(args: Any) -> int:
    """The CLI's import-sam: write the config (file or stdout), the report to stderr."""
    import sys

    parameters = dict(item.split("=", 1) for item in args.parameter if "=" in item)
    try:
        report = import_template(
            args.template,
            region=args.region,
            account=args.account,
            stack_name=args.stack_name,
            parameters=parameters,
        )
    except (OSError, ValueError) as exc:
        print(f"sluiceway: {exc}", file=sys.stderr)
        return 2
    output_format = args.format or ("env" if str(args.output or "").endswith(".env") else "toml")
    text = to_env(report.mappings) if output_format == "env" else to_toml(report.mappings)
    sections = sections_env if output_format == "env" else sections_toml
    text += sections(report.functions, report.schedules)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    print(report.text(), file=sys.stderr)
    return 0 if report.mappings or report.schedules else 1

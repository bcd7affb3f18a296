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

import contextlib
import json
import os
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
_MAPPING_KEYS = {function: mapping for mapping, function in _FUNCTION_KEYS.items()}
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
    lines = [
        "# Written by `sluiceway import-sam`; every key is a mapping field (README.md).",
        "# A relative code_path is taken from this file's directory.",
    ]
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


ENV_HEADER = """\
# Written by `sluiceway import-sam`. Load it unchanged with a POSIX shell
#   set -a; . ./{name}; set +a
# or with docker compose (`env_file:` or `--env-file`). Relative CODE_PATH values are taken from
# the working directory: run sluiceway from this file's directory (in a container, make it the
# working directory)."""


class EnvFileError(ValueError):
    """A value no env file can carry so that a shell and docker compose both read it back."""


def to_env(mappings: dict[str, dict[str, Any]], name: str = "sluiceway.env") -> str:
    """The mappings as an env file (called `name`) that a POSIX shell's `set -a; .` and docker
    compose's env-file parser read back the same: every value quoted (see `_env_value`)."""
    lines = [ENV_HEADER.format(name=name)]
    for name, fields in mappings.items():
        prefix = f"SLUICEWAY_MAPPINGS__{name.upper()}__"
        for key, value in fields.items():
            if key in ("scaling_config", "destination_config"):
                for path, leaf in _flatten(value):
                    lines.append(f"{prefix}{key.upper()}__{path}={_env_value(leaf)}")
            elif key == "environment" and _one_by_one(value):
                for variable, text in value.items():
                    lines.append(f"{prefix}ENVIRONMENT__{variable}={_env_value(text)}")
            else:
                lines.append(f"{prefix}{key.upper()}={_env_value(value)}")
    return "\n".join(lines) + "\n"


_SHELL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _one_by_one(environment: dict[str, str]) -> bool:
    """A function's variables go one line each when every name is a shell variable's name and
    every value can be quoted for both readers; else as one JSON object, which always can."""
    return all(
        _SHELL_NAME.match(name) and _quoted(str(value)) is not None
        for name, value in environment.items()
    )


def _env_value(value: Any) -> str:
    """Single quotes, which both the shell and compose take literally (`$`, `\\`, `#` and
    newlines included); a value with a single quote in it goes in double quotes when it has none
    of the characters the two treat differently there. JSON values spell `'` as `\\u0027`."""
    if isinstance(value, str):
        quoted = _quoted(value)
        if quoted is None:
            raise EnvFileError(
                f"{value!r} holds a single quote and one of $ ` \\ \" or a newline, which no env "
                "file quotes alike for a shell and docker compose: write TOML instead (--format toml)"
            )
        return quoted
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return f"'{text.replace(chr(39), chr(92) + 'u0027')}'"  # ' only occurs in JSON strings


def _quoted(value: str) -> str | None:
    if "'" not in value:
        return f"'{value}'"
    if not any(char in value for char in '$`\\"\n'):
        return f'"{value}"'
    return None


def relative_code_paths(mappings: dict[str, dict[str, Any]], base: Path) -> dict[str, dict[str, Any]]:
    """Each `code_path` relative to `base` (the output file's directory), so the file works on
    another machine or in a container where the project sits elsewhere."""
    out: dict[str, dict[str, Any]] = {}
    for name, fields in mappings.items():
        fields = dict(fields)
        if "code_path" in fields:
            with contextlib.suppress(ValueError):  # another drive (Windows): no relative path
                fields["code_path"] = os.path.relpath(fields["code_path"], base.resolve())
        out[name] = fields
    return out


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


def env_functions(
    mappings: dict[str, dict[str, Any]], functions: dict[str, dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """An env file names a declared function in its variables' names, where a shell takes no
    `-` (Lambda names often have one): such a function is declared by its mappings instead (their
    HANDLER and the function's settings, one set for all of them), which a schedule names as well."""
    mappings = {name: dict(fields) for name, fields in mappings.items()}
    kept: dict[str, dict[str, Any]] = {}
    for name, fields in functions.items():
        if _SHELL_NAME.match(name):
            kept[name] = fields
            continue
        users = [m for m in mappings.values() if str(m.get("function_name", "")) == name]
        if not users:
            raise EnvFileError(
                f"function {name}: a name with characters other than letters, digits and _ "
                "cannot be part of an environment variable's name, and no mapping declares it: "
                "write TOML instead (--format toml)"
            )
        as_mapping = {_MAPPING_KEYS.get(key, key): value for key, value in fields.items()}
        for mapping in users:
            mapping.update(as_mapping)
    return mappings, kept


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
    # code paths relative to where the file goes (the working directory for stdout)
    base = Path(args.output).parent if args.output else Path.cwd()
    mappings = relative_code_paths(report.mappings, base)
    functions = relative_code_paths(report.functions, base)
    try:
        if output_format == "env":
            mappings, functions = env_functions(mappings, functions)
            text = to_env(mappings, Path(args.output).name if args.output else "sluiceway.env")
            text += sections_env(functions, report.schedules)
        else:
            text = to_toml(mappings) + sections_toml(functions, report.schedules)
    except EnvFileError as exc:
        print(f"sluiceway: {exc}", file=sys.stderr)
        return 2
    if args.output:
        try:
            Path(args.output).write_text(text)
        except OSError as exc:
            print(f"sluiceway: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    else:
        sys.stdout.write(text)
    print(report.text(), file=sys.stderr)
    return 0 if report.mappings or report.schedules else 1

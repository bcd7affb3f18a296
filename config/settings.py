"""The service's settings: environment variables over an optional config file.

`load_settings()` is the entry point. It validates everything at start-up and raises a
ConfigError listing every problem, each naming the variable (or file key), value and rule.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from sluiceway.config.environment import (
    CONFIG_FILE_VARIABLE,
    DELIMITER,
    ENV_PREFIX,
    EnvEntry,
    EnvironmentSource,
    scan_environment,
    unknown_variables,
)
from sluiceway.config.errors import ConfigError, ConfigProblem
from sluiceway.config.fields import (
    between,
    check_region,
    function_name_form,
    mapping_name_form,
    normalise_case,
    rule_error,
)
from sluiceway.config.files import ConfigFile, load_config_file
from sluiceway.config.function_names import resolve_functions
from sluiceway.config.functions import FunctionConfig
from sluiceway.config.invocation import ApiConfig, AsyncConfig
from sluiceway.config.mapping import MappingConfig
from sluiceway.config.report import Provenance
from sluiceway.config.schedules import ScheduleConfig
from sluiceway.config.sources import TABLE_NAME, SourceRef, parse_source

Backend = Literal["sqlite", "dynamodb", "memory"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
MappingName = Annotated[str, mapping_name_form]
FunctionName = Annotated[str, function_name_form]


class CheckpointsConfig(BaseModel):
    """Where stream positions (and, with dynamodb, shard leases) are kept."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Annotated[Backend, normalise_case(str.lower)] = "sqlite"
    path: str = "./sluiceway.db"
    """SQLite file (sqlite backend)."""
    table: str | None = None
    """DynamoDB lease table (dynamodb backend), shared by every replica: a table name (in the
    default region) or a table ARN (in the region it names)."""
    lease_seconds: Annotated[float, between(1, 3600, " seconds")] = 10.0
    """dynamodb backend: a lease whose counter stops moving this long is taken by another replica
    (renewed every third of it); the failover time after a crash."""

    @field_validator("table")
    @classmethod
    def _table_name(cls, value: str | None) -> str | None:
        if value is None or re.fullmatch(TABLE_NAME, value):
            return value
        try:
            ref = parse_source(value, "us-east-1")
        except ValueError:
            ref = None
        if ref is None or ref.kind != "dynamodb" or ref.stream_label:
            raise rule_error(
                "must be a DynamoDB table name (3 to 255 letters, digits, . - or _) or a table ARN "
                "(arn:aws:dynamodb:REGION:ACCOUNT:table/NAME)"
            )
        return value

    def lease_table(self, default_region: str) -> tuple[str, str]:
        """The lease table's name and the region it is reached in (its ARN's, else the default)."""
        assert self.table is not None
        if re.fullmatch(TABLE_NAME, self.table):
            return self.table, default_region
        ref: SourceRef = parse_source(self.table, default_region)
        return ref.name, ref.region

    @model_validator(mode="after")
    def _table_for_dynamodb(self) -> CheckpointsConfig:
        if self.backend == "dynamodb" and not self.table:
            rule = "the dynamodb checkpoint backend needs a lease table name"
            line = InitErrorDetails(type=rule_error(rule), loc=("table",), input=self.table)
            raise ValidationError.from_exception_data(type(self).__name__, [line])
        return self


class HttpConfig(BaseModel):
    """The /healthz, /readyz, /metrics and /status endpoints."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    host: str = "0.0.0.0"
    port: Annotated[int, between(0, 65535)] = 8080


@dataclass
class _LoadPlan:
    """What one load reads: the environment mapping and the parsed config file, if any."""

    environ: Mapping[str, str]
    entries: list[EnvEntry] = field(default_factory=list)
    file: ConfigFile | None = None
    file_problems: list[ConfigProblem] = field(default_factory=list)
    """Problems reading the file itself, which make everything else moot."""
    unknown: list[ConfigProblem] = field(default_factory=list)
    """Variables that fit nowhere in the settings."""

    @property
    def problems(self) -> list[ConfigProblem]:
        return [*self.file_problems, *self.unknown]


_PLAN: ContextVar[_LoadPlan | None] = ContextVar("sluiceway_load_plan", default=None)


class Settings(BaseSettings):
    """Everything the service reads at start-up; see the configuration contract in the README."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=DELIMITER,
        case_sensitive=False,
        extra="forbid",
    )

    mappings: dict[MappingName, MappingConfig] = {}
    functions: dict[FunctionName, FunctionConfig] = {}
    """Functions declared on their own; mappings name them with FUNCTION_NAME."""
    async_: AsyncConfig = Field(
        default=AsyncConfig(), validation_alias=AliasChoices("sluiceway_async", "async")
    )
    """Where accepted asynchronous invokes wait, and the spacing of their retries."""
    api: ApiConfig = ApiConfig()
    """The Invoke API's authentication."""
    schedules: dict[MappingName, ScheduleConfig] = {}
    """EventBridge-style schedules, each invoking a function asynchronously at every tick."""
    checkpoints: CheckpointsConfig = CheckpointsConfig()
    http: HttpConfig = HttpConfig()
    log_level: Annotated[LogLevel, normalise_case(str.upper)] = "INFO"
    log_format: Annotated[Literal["json", "text"], normalise_case(str.lower)] | None = None
    """None: text when stderr is a terminal, JSON lines otherwise."""
    log_bodies: bool = False
    """Write record bodies into logs; off so payloads (often personal data) stay out of logs."""
    trace_records: bool = False
    """A span per record inside each invocation span (OTEL tracing must be on)."""
    idle_polls_per_second: Annotated[float, between(1, 10000, " calls per second")] = 50.0
    """GetRecords calls per second that quiet stream shards share across the process (1 to 2 ms of
    CPU each): a few shards are polled at the API's floor, many less often, but none less often
    than its mapping's `idle_poll_max_seconds`."""
    destination_timeout_seconds: Annotated[float, between(1, 300, " seconds")] = 10.0
    """One attempt to deliver a failure record to an on-failure destination; a destination that
    does not answer in time is logged, counted and retried (shorter than the clients' 30 s read
    timeout, so a stalled destination shows within seconds)."""
    aws_region: Annotated[str, AfterValidator(check_region)] = Field(
        default="us-east-1",
        validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION", "aws_region"),
    )
    config_file: str | None = None
    """The file named by SLUICEWAY_CONFIG_FILE, for display; it is read before validation."""

    @field_validator("mappings", "functions", "schedules", mode="before")
    @classmethod
    def _case_insensitive_names(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        lowered: dict[Any, Any] = {}
        for name, mapping in value.items():
            key = name.lower() if isinstance(name, str) else name
            if key in lowered:
                raise rule_error(f"names are case-insensitive; {name!r} is given twice")
            lowered[key] = mapping
        return lowered

    @model_validator(mode="after")
    def _bind_mappings(self) -> Settings:
        """Mappings learn their name (the default function name) and the region for queue URLs."""
        for name, function in self.functions.items():
            function.bind(name, self.aws_region)
        for name, mapping in self.mappings.items():
            mapping.bind(name, self.aws_region)
        problems, resolved = resolve_functions(self.mappings, self.functions)
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        self.mappings.update(resolved)
        table = self.function_table()
        unknown = [
            InitErrorDetails(
                type=rule_error(
                    f"names no function (functions: {', '.join(sorted(table)) or 'none'}); "
                    "declare it with SLUICEWAY_FUNCTIONS__<NAME>__HANDLER"
                ),
                loc=("schedules", name, "function_name"),
                input=schedule.function_name,
            )
            for name, schedule in self.schedules.items()
            if schedule.function_name.lower() not in table
        ]
        if unknown:
            raise ValidationError.from_exception_data(type(self).__name__, unknown)
        return self

    def function_table(self) -> dict[str, FunctionConfig]:
        """Every function by name: declared ones and those mappings declare with a HANDLER."""
        from sluiceway.config.function_names import all_functions

        return all_functions(self.mappings, self.functions, self.aws_region)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Init kwargs, then the environment, then the config file: earlier sources win."""
        plan = _PLAN.get()
        if plan is None:  # constructed directly rather than through load_settings()
            plan = _plan_for(os.environ)
            if plan.file_problems:
                raise ConfigError(plan.file_problems)
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            EnvironmentSource(settings_cls, plan.environ),
        ]
        if plan.file is not None:
            sources.append(plan.file.source)
        return tuple(sources)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Validate the configuration in `environ` (default: the process environment).

    Raises ConfigError with every problem found, not just the first.
    """
    plan = _plan_for(os.environ if environ is None else environ)
    if plan.file_problems:
        raise ConfigError(plan.problems)  # without the file, the rest would be misleading
    token = _PLAN.set(plan)
    try:
        settings = Settings()
    except ValidationError as exc:
        provenance = Provenance(Settings, plan.entries, plan.file)
        reported = {problem.variable for problem in plan.problems}
        found = [p for p in provenance.problems(exc) if p.variable not in reported]
        raise ConfigError([*plan.problems, *found]) from None
    finally:
        _PLAN.reset(token)
    if plan.problems:
        raise ConfigError(plan.problems)
    return settings


def _plan_for(environ: Mapping[str, str]) -> _LoadPlan:
    environ = dict(environ)
    plan = _LoadPlan(environ, scan_environment(environ))
    plan.unknown = unknown_variables(Settings, plan.entries)
    path = next((v for k, v in environ.items() if k.upper() == CONFIG_FILE_VARIABLE), None)
    if path:
        plan.file, plan.file_problems = load_config_file(Settings, path)
    return plan

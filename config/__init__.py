"""Configuration: pydantic-settings models that mirror the Lambda event source mapping API.

Load with `load_settings()`; any invalid input raises ConfigError listing every problem.
"""

from sluiceway.config.errors import MISSING, ConfigError, ConfigProblem
from sluiceway.config.mapping import (
    DestinationConfig,
    MappingConfig,
    OnFailure,
    ScalingConfig,
    VisibilityBackoff,
)
from sluiceway.config.settings import CheckpointsConfig, HttpConfig, Settings, load_settings
from sluiceway.config.sources import DestinationRef, SourceRef, parse_destination, parse_source

__all__ = [
    "MISSING",
    "CheckpointsConfig",
    "ConfigError",
    "ConfigProblem",
    "DestinationConfig",
    "DestinationRef",
    "HttpConfig",
    "MappingConfig",
    "OnFailure",
    "ScalingConfig",
    "Settings",
    "SourceRef",
    "VisibilityBackoff",
    "load_settings",
    "parse_destination",
    "parse_source",
]

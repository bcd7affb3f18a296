"""What a user sees when their configuration is wrong.

Every problem names the variable (or file key) to change, the value found and the rule it breaks,
and all problems are reported together so one restart fixes them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from sluiceway.core.errors import SluicewayError

_MAX_VALUE_CHARS: Final = 200


class _Missing:
    """Marks a setting that was not given anywhere (so the message says "is not set")."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<not set>"

    def __bool__(self) -> bool:
        return False


MISSING: Final[Any] = _Missing()


@dataclass(frozen=True)
class ConfigProblem:
    """One invalid setting: where it comes from, what it holds, and the rule it breaks."""

    variable: str
    """`SLUICEWAY_...` for the environment, `mappings.orders.batch_size in FILE` for the file."""
    value: object
    """The raw value as given (the string from the environment); MISSING when not set."""
    rule: str

    def __str__(self) -> str:
        if self.value is MISSING:
            return f"{self.variable} is not set: {self.rule}"
        shown = repr(self.value)
        if len(shown) > _MAX_VALUE_CHARS:
            shown = shown[: _MAX_VALUE_CHARS - 3] + "..."
        if " in " in self.variable:  # a key in the config file
            key, _, file = self.variable.partition(" in ")
            return f"{key} = {shown} in {file}: {self.rule}"
        return f"{self.variable}={shown}: {self.rule}"


class ConfigError(SluicewayError):
    """The configuration cannot run; `problems` lists every reason, each one actionable."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        seen: set[tuple[str, str, str]] = set()
        unique = []
        for problem in problems:
            key = (problem.variable, repr(problem.value), problem.rule)
            if key not in seen:
                seen.add(key)
                unique.append(problem)
        super().__init__(unique)
        self.problems = unique

    def __str__(self) -> str:
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = [f"invalid configuration ({count} {noun}):"]
        lines.extend(f"  - {problem}" for problem in self.problems)
        return "\n".join(lines)

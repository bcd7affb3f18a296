"""Scheduled events: EventBridge's `rate(...)` and `cron(...)` expressions, and a schedule that
invokes a function asynchronously at each tick.

`cron(...)` is EventBridge's six-field form (minutes hours day-of-month month day-of-week year,
one of the two day fields `?`, day-of-week 1-7 from Sunday); it is translated to croniter's form
(day-of-week 0-6, seconds then year as extra fields) so croniter computes the ticks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from croniter import CroniterBadCronError, croniter
from pydantic import BaseModel, BeforeValidator, ConfigDict, field_validator
from sluiceway.config.fields import function_name_form, rule_error

_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_CRON = re.compile(r"^cron\((.*)\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
EXPRESSION_FORMS = (
    "rate(VALUE UNIT) with UNIT minute(s), hour(s) or day(s) (e.g. rate(5 minutes)), or "
    "cron(MINUTES HOURS DAY-OF-MONTH MONTH DAY-OF-WEEK YEAR) in EventBridge's form "
    "(e.g. cron(0 12 * * ? *))"
)


@dataclass(frozen=True)
class Rate:
    period: int
    """Seconds between ticks; ticks fall on multiples of it since the epoch, so every replica
    computes the same ones."""

    def next_after(self, moment: float) -> float:
        return (int(moment) // self.period + 1) * self.period


@dataclass(frozen=True)
class Cron:
    expression: str
    """croniter's form of the EventBridge expression."""

    def next_after(self, moment: float) -> float:
        start = datetime.fromtimestamp(moment, UTC)
        return float(croniter(self.expression, start).get_next(float))


Schedule = Rate | Cron


def parse_schedule(value: str) -> Schedule:
    """A `rate(...)` or `cron(...)` expression; ValueError with the rule when it is neither."""
    text = value.strip()
    if match := _RATE.match(text):
        amount, unit = int(match[1]), match[2]
        if amount < 1:
            raise ValueError("a rate must be a positive whole number")
        if (amount == 1) != (not unit.endswith("s")):
            raise ValueError(
                f"EventBridge wants the singular unit for 1 and the plural otherwise: "
                f"rate({amount} {unit.rstrip('s') if amount == 1 else unit + ('' if unit.endswith('s') else 's')})"
            )
        return Rate(amount * _UNIT_SECONDS[unit.rstrip("s")])
    if match := _CRON.match(text):
        return Cron(_croniter_form(match[1]))
    raise ValueError(f"must be {EXPRESSION_FORMS}")


def _croniter_form(fields_text: str) -> str:
    fields = fields_text.split()
    if len(fields) != 6:
        raise ValueError(
            "a cron expression has six fields: MINUTES HOURS DAY-OF-MONTH MONTH DAY-OF-WEEK YEAR"
        )
    minutes, hours, day, month, weekday, year = fields
    if (day == "?") == (weekday == "?"):
        raise ValueError("exactly one of day-of-month and day-of-week must be '?'")
    if "W" in day.upper():
        raise ValueError("the W (nearest weekday) form is not supported")
    form = " ".join(
        [minutes, hours, "*" if day == "?" else day, month, _weekday(weekday), "0", year]
    )
    if not croniter.is_valid(form):
        raise ValueError(f"cron({fields_text}) is not a valid cron expression")
    try:
        croniter(form, datetime.now(UTC)).get_next(float)
    except (CroniterBadCronError, ValueError) as exc:
        raise ValueError(f"cron({fields_text}) never fires: {exc}") from None
    return form


def _weekday(field: str) -> str:
    """EventBridge's day-of-week (1-7 from Sunday, 6L, 6#3) in croniter's (0-6, L5, 5#3)."""
    if field in ("?", "*"):
        return "*"

    def shift(match: re.Match[str]) -> str:
        return str(int(match[0]) - 1)

    if re.fullmatch(r"\d+L", field, flags=re.IGNORECASE):
        return f"L{int(field[:-1]) - 1}"
    if "#" in field:
        day, nth = field.split("#", 1)
        return re.sub(r"\d+", shift, day) + f"#{nth}"
    return re.sub(r"(?<![#/])\d+", shift, field)


def _json_text(value: Any) -> Any:
    """INPUT is constant JSON: as text from the environment, or an object in a config file."""
    if value is None:
        return value
    if isinstance(value, str):
        try:
            orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise rule_error(f"must be JSON (the event passed to the function): {exc}") from None
        return value
    return orjson.dumps(value).decode()


class ScheduleConfig(BaseModel):
    """One schedule: `rate(...)`/`cron(...)` ticks invoke `function_name` asynchronously."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schedule_expression: str
    function_name: Annotated[str, function_name_form]
    input: Annotated[str | None, BeforeValidator(_json_text)] = None
    """The event each tick sends instead of EventBridge's scheduled event (constant JSON)."""
    enabled: bool = True

    @field_validator("schedule_expression")
    @classmethod
    def _expression(cls, value: str) -> str:
        try:
            parse_schedule(value)
        except ValueError as exc:
            raise rule_error(str(exc)) from None
        return value.strip()

    @property
    def schedule(self) -> Schedule:
        return parse_schedule(self.schedule_expression)

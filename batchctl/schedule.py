"""Cron expressions: validation and the next fire times.

Five fields (minute hour day-of-month month day-of-week), or six with the seconds field LAST, as
croniter reads it (``0 0 * * * 30`` fires at 00:00:30); ``@hourly``, ``@daily``, ``@weekly``,
``@monthly``, ``@yearly`` (and ``@annually``, ``@midnight``) are accepted. croniter is imported
only when an expression is checked or evaluated.
"""

from __future__ import annotations

from datetime import datetime, tzinfo

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# (name, number of values) for each field, in croniter's order with the seconds field last.
_FIELDS = (
    ("minute", 60),
    ("hour", 24),
    ("day-of-month", 31),
    ("month", 12),
    ("day-of-week", 7),
    ("second", 60),
)


def expand(expression: str) -> str:
    """The expression with an ``@alias`` replaced by its five fields."""
    text = " ".join(expression.split())
    return _ALIASES.get(text.lower(), text)


def cron_problem(expression: str) -> str | None:
    """Why ``expression`` is not a usable schedule, or None when it is."""
    from croniter import croniter

    text = expand(expression)
    if text.upper().startswith(("CRON_TZ=", "TZ=")):
        return "a time zone prefix is not allowed in the expression; use the job's 'timezone' key"
    fields = text.split()
    if len(fields) not in (5, 6):
        return (
            f"expected 5 fields (minute hour day month weekday) or 6 with seconds last, "
            f"got {len(fields)} in {expression!r}"
        )
    for value, (name, size) in zip(fields, _FIELDS, strict=False):
        for part in value.split(","):
            _, _, step = part.partition("/")
            if step.isdigit() and int(step) > size:
                return f"the {name} step /{step} is larger than the field ({size} values)"
    if not croniter.is_valid(text):
        return f"invalid cron expression {expression!r}"
    if not croniter.is_valid(text, strict=True):
        return f"cron expression {expression!r} can never fire (no such date)"
    return None


def next_fire(expression: str, zone: tzinfo, after: datetime) -> datetime:
    """The first fire time strictly after ``after``, in ``zone``."""
    from croniter import croniter

    return croniter(expand(expression), after.astimezone(zone)).get_next(datetime)  # type: ignore[no-any-return]

"""Durations as users write them: a number of seconds, or "30s", "5m", "2h", "2d", "1h30m"."""

from __future__ import annotations

import re

from batchctl.errors import quoted

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
# A thousand years: what "since" and "older than" may reach back, well inside datetime's range.
MAX_DURATION_S = 365_000 * 86400.0


def parse_duration(value: object, *, at_most: float = MAX_DURATION_S) -> float:
    """Seconds in ``value``, from 0 to ``at_most``; raises ValueError with a message fit to show
    the user."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a duration, got {_kind(value)}")
    if isinstance(value, int | float):
        return _checked(value, value, at_most)
    text = value.strip().lower().replace(" ", "")
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return _checked(number, value, at_most)
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f'expected a duration like "30s", "5m", "2h" or "1d", got {quoted(value)}')
    return _checked(total, value, at_most)


def _checked(seconds: float, given: int | float | str, at_most: float) -> float:
    shown = quoted(given, 40) if isinstance(given, str) else repr(given)
    if not isinstance(given, str) and len(shown) > 40:  # a huge integer
        shown = shown[:20] + "..."
    if seconds != seconds:  # NaN (math.isnan would overflow on a huge int)
        raise ValueError(f"expected a duration, got {shown}")
    if seconds < 0:
        raise ValueError(f"expected a duration of zero or more, got {shown}")
    if seconds > at_most:  # also an int too large for a float, and infinity
        raise ValueError(f"expected a duration of at most {at_most / 86400:g}d, got {shown}")
    return float(seconds)


def _kind(value: object) -> str:
    return "a boolean" if isinstance(value, bool) else type(value).__name__


def format_duration(seconds: float | None) -> str:
    """A short human form: "850ms", "12.3s", "4m05s", "2h03m", "3d04h"."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"

"""Cron schedules: validation, fire times with Debian cron's daylight-saving rule, catch-up.

Expressions have 5 fields (minute hour day-of-month month day-of-week), or 6 with the SECONDS
field LAST as croniter reads it (``0 0 * * * 30`` fires at 00:00:30); ``@hourly``, ``@daily``,
``@weekly``, ``@monthly``, ``@yearly`` (and ``@annually``, ``@midnight``) are accepted.

Daylight-saving time follows Debian cron (cron(8), "Special considerations"): a *fixed-time*
expression (its minute and hour fields do not start with ``*``) whose wall-clock time is skipped
by a jump forward fires once, right after the jump; one whose time happens twice fires only the
first time. The others (``*`` or ``*/n`` at the start of the minute or hour field) follow the
local clock: no fire for a skipped wall time, one at each pass of a repeated one. A change of
more than 3 hours is a clock correction, not daylight saving: every job just follows it.

Everything here takes "now" as an argument: no function reads the clock.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from batchctl.store.schedule import ScheduleTables

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
# The values a number in each field may take (croniter's: 7 is also Sunday).
_RANGES = {
    "minute": (0, 59),
    "hour": (0, 23),
    "day-of-month": (1, 31),
    "month": (1, 12),
    "day-of-week": (0, 7),
    "second": (0, 59),
}
CATCHUP_POLICIES = ("none", "latest", "all")
MAX_TICKS_CONSIDERED = 10_000  # a bound on catch-up work after very long downtime
ON_TIME_S = 60.0  # a tick this fresh is "on time" even with catchup = "none"
MAX_MISSED_COUNTED = 100_000  # missed ticks counted beyond those listed, at most


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
        problem = _out_of_range(name, value)
        if problem:
            return problem
    if not croniter.is_valid(text):
        return f"invalid cron expression {expression!r}"
    if not croniter.is_valid(text, strict=True):
        return f"cron expression {expression!r} can never fire (no such date)"
    return None


def _out_of_range(name: str, field: str) -> str | None:
    """Why a number in ``field`` (the cron field ``name``) is out of its range, or None."""
    low, high = _RANGES[name]
    for part in field.split(","):
        values = part.partition("/")[0].partition("#")[0]  # "1-5/2", "5#3" (third Friday)
        for number in re.findall(r"\d+", values):  # also "15W", "L-3"
            if not low <= int(number) <= high:
                return f"{name} field: {number} is out of range {low}-{high}"
    return None


def is_fixed_time(expression: str) -> bool:
    """Debian cron's test: neither the minute nor the hour field starts with ``*``."""
    minute, hour = expand(expression).split()[:2]
    return not minute.startswith("*") and not hour.startswith("*")


@cache
def local_zone() -> tzinfo:
    """The machine's time zone with its DST rules ($TZ, else /etc/localtime)."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ValueError, OSError, KeyError):
            pass
    try:
        with open("/etc/localtime", "rb") as handle:
            return ZoneInfo.from_file(handle, key="localtime")
    except OSError:
        return UTC


def zone_for(timezone: str | None) -> tzinfo:
    return ZoneInfo(timezone) if timezone else local_zone()


@dataclass(frozen=True)
class Schedule:
    """A job's cron expression in its time zone.

    Fire times are found on the local wall clock (croniter on naive datetimes) and mapped to
    real instants segment by segment between the zone's offset changes, which is where Debian
    cron's rule applies: a wall time skipped by a jump fires at the jump (fixed-time jobs only),
    a repeated wall time fires once (fixed-time) or at each occurrence (the others).
    """

    expression: str
    zone: tzinfo

    @classmethod
    def of(cls, expression: str, timezone: str | None) -> Schedule:
        return cls(expand(expression), zone_for(timezone))

    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after ``moment`` (in the schedule's zone)."""
        with _ITERATOR_LOCK:
            return self._first(moment.astimezone(UTC)).astimezone(self.zone)

    def previous(self, until: datetime, *, after: datetime, count: int) -> list[datetime]:
        """Up to ``count`` fire times in (after, until], the newest ones, oldest first."""
        return [t.astimezone(self.zone) for t in self.previous_instants(until, after, count)]

    def previous_instants(self, until: datetime, after: datetime, count: int) -> list[datetime]:
        """``previous`` as UTC instants."""
        found: list[datetime] = []
        moment, floor = until.astimezone(UTC), after.astimezone(UTC)
        with _ITERATOR_LOCK:
            while len(found) < count:
                moment = self._steady_walk(moment, floor, found, count)
                if len(found) == count:
                    break
                candidate = self._last(moment)
                if candidate <= floor:
                    break
                found.append(candidate)
                moment = candidate - _TINY
        return found[::-1]

    def _steady_walk(
        self, moment: datetime, floor: datetime, found: list[datetime], count: int
    ) -> datetime:
        """Walk back from ``moment`` on the wall clock alone while the zone's offset stands
        still, appending to ``found`` the fire times ``_last`` would give one by one; the moment
        to go on from. Where the offset is the same from a window (plus the shift limit before
        it) to ``moment``, none of the offset changes ``_last`` looks for is there: every fire
        time in the window is a wall time at that offset (a catch-up of 10,000 ticks is then
        10,000 croniter steps, not 10,000 searches for changes)."""
        low = max(floor, moment - _STEADY_WINDOW)
        offset = self._offset(moment)
        if low >= moment or self._offset(low - _SHIFT_LIMIT) != offset:
            return moment
        walls = _Walls(self.expression)
        while len(found) < count:
            candidate = _instant(walls.before(_wall(moment, offset)), offset)
            if candidate <= low:
                break
            found.append(candidate)
            moment = candidate - _TINY
        return moment

    def fire_times(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """Fire times in (after, until], oldest first."""
        moment = after
        for _ in range(MAX_TICKS_CONSIDERED):
            moment = self.next_after(moment)
            if moment.timestamp() > until.timestamp():
                return
            yield moment

    def upcoming(self, after: datetime, count: int) -> list[datetime]:
        times: list[datetime] = []
        moment = after
        for _ in range(count):
            moment = self.next_after(moment)
            times.append(moment)
        return times

    # --- the wall clock and the zone's offset changes (all instants here are UTC) ------------
    def _first(self, moment: datetime) -> datetime:
        """The first fire instant strictly after ``moment``."""
        walls = _Walls(self.expression)
        fixed = is_fixed_time(self.expression)
        start, inclusive = moment, False
        for _ in range(_MAX_SEGMENTS):
            offset = self._offset(start)
            wall = walls.after(_wall(start, offset), inclusive=inclusive)
            floor = self._repeat_floor(start) if fixed else None
            if floor is not None and wall < floor:
                wall = walls.after(floor, inclusive=True)  # a fixed time fires at its first pass
            instant = _instant(wall, offset)
            change = self._change_between(start, instant)
            if change is None:
                return instant
            # Nothing matched before the change; the jump itself fires a skipped fixed time.
            if fixed and self._skips_a_match(walls, change, offset):
                return change
            start, inclusive = change, True
        raise RuntimeError(f"no fire time found after {moment} for {self.expression!r}")

    def _last(self, moment: datetime) -> datetime:
        """The last fire instant at or before ``moment``."""
        walls = _Walls(self.expression)
        fixed = is_fixed_time(self.expression)
        end = moment
        for _ in range(_MAX_SEGMENTS):
            offset = self._offset(end)
            wall = walls.before(_wall(end, offset))
            instant = _instant(wall, offset)
            change = self._change_between(instant, end)
            if change is None:
                floor = self._repeat_floor(instant) if fixed else None
                if floor is not None and wall < floor:
                    end = instant - _TINY  # the second pass of a fixed time: not a fire
                    continue
                return instant
            before = self._offset(change - _TINY)
            if fixed and self._skips_a_match(walls, change, before):
                return change
            end = change - _TINY
        raise RuntimeError(f"no fire time found before {moment} for {self.expression!r}")

    def _offset(self, instant: datetime) -> timedelta:
        offset = instant.astimezone(self.zone).utcoffset()
        return offset if offset is not None else timedelta(0)

    def _change(self, low: datetime, high: datetime) -> datetime | None:
        """The instant in (low, high] where the offset changes, if it does (at most once in a
        window shorter than the months between changes). Offsets change on whole seconds."""
        if low >= high or self._offset(low) == self._offset(high):
            return None
        lower, upper = low.timestamp(), high.timestamp()
        before = self._offset(low)
        while upper - lower > 1:
            middle = (lower + upper) / 2
            if self._offset(datetime.fromtimestamp(middle, UTC)) == before:
                lower = middle
            else:
                upper = middle
        return datetime.fromtimestamp(math.floor(lower) + 1, UTC)

    def _change_between(self, low: datetime, high: datetime) -> datetime | None:
        """An offset change in (low, high] that matters: one within the DST window of either
        end, or any when the ends' offsets differ. Changes far from both ends that cancel out
        (a yearly job over a summer) move no fire time: the wall clock between them matched
        nothing on either side of them."""
        near_low = self._change(low, min(high, low + _SHIFT_LIMIT))
        if near_low is not None:
            return near_low
        near_high = self._change(max(low, high - _SHIFT_LIMIT), high)
        if near_high is not None:
            return near_high
        return self._change(low, high)  # the ends differ: a change between them moved the wall

    def _repeat_floor(self, instant: datetime) -> datetime | None:
        """When ``instant`` follows a fall-back (of at most the shift limit), the wall time the
        clock had reached before it: earlier wall times are passing for the second time."""
        change = self._change(instant - _SHIFT_LIMIT, instant)
        if change is None:
            return None
        before, after = self._offset(change - _TINY), self._offset(change)
        if not timedelta(0) < before - after <= _SHIFT_LIMIT:
            return None
        return _wall(change, before)

    def _skips_a_match(self, walls: _Walls, change: datetime, before: timedelta) -> bool:
        """Whether the jump forward at ``change`` skips a wall time the expression names."""
        after = self._offset(change)
        if not timedelta(0) < after - before <= _SHIFT_LIMIT:
            return False  # a fall-back, or a correction too large to be daylight saving
        return walls.after(_wall(change, before), inclusive=True) < _wall(change, after)


# Debian cron treats a change of more than 3 hours as a clock correction, not daylight saving.
_SHIFT_LIMIT = timedelta(hours=3)
_MAX_SEGMENTS = 16  # offset changes crossed while looking for one fire time
_TINY = timedelta(microseconds=1)
# How far back one steady walk looks (its offset checked at both ends): far shorter than the
# months between a zone's offset changes, so equal offsets at the ends mean none in between.
_STEADY_WINDOW = timedelta(hours=6)
_ITERATOR_LOCK = threading.Lock()


def _wall(instant: datetime, offset: timedelta) -> datetime:
    """The naive wall-clock time of a UTC ``instant`` at ``offset``."""
    return (instant + offset).replace(tzinfo=None)


def _instant(wall: datetime, offset: timedelta) -> datetime:
    return (wall - offset).replace(tzinfo=UTC)


class _Walls:
    """The expression's matching wall-clock times (naive datetimes)."""

    def __init__(self, expression: str) -> None:
        self.times = _iterator(expression)

    def after(self, wall: datetime, *, inclusive: bool) -> datetime:
        self.times.set_current(wall - _TINY if inclusive else wall, force=True)
        found: datetime = self.times.get_next(datetime)
        return found

    def before(self, wall: datetime) -> datetime:
        """The last matching wall time at or before ``wall``."""
        self.times.set_current(wall + _TINY, force=True)
        found: datetime = self.times.get_prev(datetime)
        return found


@cache
def _iterator(expression: str) -> Any:
    """One croniter per expression: parsing costs ~0.7 ms, moving it costs ~35 µs."""
    from croniter import croniter

    return croniter(expression, datetime(2000, 1, 1))


@dataclass(frozen=True)
class TickPlan:
    """What to do with the ticks that came due since the cursor."""

    fire: list[datetime]
    missed: list[datetime]
    cursor: datetime | None  # the newest tick considered: the job's cursor moves here
    more_missed: int = 0  # missed ticks beyond the MAX_TICKS_CONSIDERED listed (counted, to a cap)


def plan_ticks(
    schedule: Schedule,
    cursor: datetime,
    now: datetime,
    *,
    catchup: str = "latest",
    max_catchup: int = 100,
    starting_deadline: float | None = None,
) -> TickPlan:
    """Decide which ticks in (cursor, now] fire and which are missed.

    ``none`` fires only a tick that is on time (due within the last minute); ``latest`` fires
    the newest tick and misses the rest; ``all`` fires each, oldest first, at most
    ``max_catchup`` (the newest ones). A tick older than ``starting_deadline`` seconds is
    missed whatever the policy.
    """

    # Count back from now: after a downtime of any length the newest ticks are found at once;
    # the older, missed ones are listed up to MAX_TICKS_CONSIDERED.
    # In UTC: arithmetic and comparisons on datetimes in the job's zone go by the wall clock,
    # which a DST change makes jump or repeat.
    def previous(until: datetime, count: int) -> list[datetime]:
        return schedule.previous_instants(until, cursor, count)

    newest = previous(now, max(1, max_catchup) if catchup == "all" else 1)
    if not newest:
        return TickPlan([], [], None)
    older = previous(newest[0] - timedelta(microseconds=1), MAX_TICKS_CONSIDERED)
    more = 0
    if len(older) == MAX_TICKS_CONSIDERED:  # count the rest (to a cap), without listing them
        more = len(previous(older[0] - timedelta(microseconds=1), MAX_MISSED_COUNTED))
    fire, missed = newest, older
    if catchup == "none" and now - newest[-1] > timedelta(seconds=ON_TIME_S):
        fire, missed = [], older + newest
    if starting_deadline is not None:
        late = [t for t in fire if (now - t).total_seconds() > starting_deadline]
        fire = [t for t in fire if t not in late]
        missed = sorted(missed + late)
    return TickPlan(fire, missed, newest[-1], more)


class Resumed(NamedTuple):
    """What ``resume`` did: when the pause began (None: the job was not paused), and how many of
    the ticks skipped while paused will fire."""

    paused_at: datetime | None
    ticks_to_fire: int


def resume(store: ScheduleTables, job: str, *, catchup: str, max_catchup: int) -> Resumed:
    """Lift a job's pause. The ticks it skipped fire as its ``catchup`` says, as after a
    downtime: none of them, the newest once (latest), or each, the newest ``max_catchup``
    (all)."""
    paused_at = store.resume(job)
    if paused_at is None or catchup == "none":
        return Resumed(paused_at, 0)
    refired = store.reopen_ticks(job, paused_at, latest_only=catchup == "latest", limit=max_catchup)
    return Resumed(paused_at, refired)


def describe(expression: str) -> str:
    """A short English reading of common expressions; the expression itself otherwise."""
    fields = expand(expression).split()
    if len(fields) != 5:
        return f"cron {expression!r}"
    minute, hour, dom, month, dow = fields
    if fields == ["*"] * 5:
        return "every minute"
    if minute.startswith("*/") and hour == dom == month == dow == "*":
        return f"every {minute[2:]} minutes"
    if minute.isdigit() and hour == dom == month == dow == "*":
        return f"every hour at minute {int(minute)}"
    if minute.isdigit() and hour.isdigit():
        at = f"at {int(hour):02d}:{int(minute):02d}"
        if dom == month == dow == "*":
            return f"{at} every day"
        if dom == month == "*":
            return f"{at} on weekdays {dow}"
        if month == dow == "*":
            return f"{at} on day {dom} of the month"
    return f"cron {expression!r}"


def next_fire(expression: str, zone: tzinfo, after: datetime) -> datetime:
    """The first fire time strictly after ``after``, in ``zone``."""
    return Schedule(expand(expression), zone).next_after(after)

"""The scheduling core: cron fire times with Debian cron's DST rule, validation, catch-up, and the
daemon's ticks driven by a controllable clock.

The pure functions (``Schedule``, ``plan_ticks``) take "now" as an argument. The daemon is built
with ``clock=`` a ``FakeClock`` the test moves; each "pass" is a ``Daemon(once=True).run()`` — one
pass, then wait for what it started — exactly what ``batchctl daemon --once`` does from crontab.
Jobs are real ``command`` jobs (``echo``, ``sleep``), so runs really happen; only the scheduler's
idea of the time is controlled. Nothing sleeps except where a real job must run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from batchctl import schedule as schedule_module
from batchctl.config import load_config
from batchctl.daemon import Daemon
from batchctl.records import to_iso
from batchctl.schedule import (
    Schedule,
    cron_problem,
    describe,
    expand,
    is_fixed_time,
    plan_ticks,
)
from tests.conftest import Workspace
from tests.waiting import wait_for


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def fires(expression: str, zone: str, after: datetime, until: datetime) -> list[datetime]:
    return [t.astimezone(UTC) for t in Schedule.of(expression, zone).fire_times(after, until)]


# --- DST: Debian cron's rule ----------------------------------------------------------------------

# The repeated hour at fall-back is where a naive comparison goes wrong: two datetimes sharing a
# ZoneInfo compare by wall clock and ignore ``fold``, so the second 02:00 looks "not after" the
# first. Non-fixed expressions must still fire at every real instant (00:00Z and 01:00Z in Berlin).


def case(name: str, *values: Any) -> Any:
    return pytest.param(*values, id=name)


DST_CASES = [
    # Europe/Berlin 2025-03-30: 02:00 CET -> 03:00 CEST at 01:00Z.
    case(
        "berlin-spring-fixed",
        "Europe/Berlin",
        "30 2 * * *",
        utc(2025, 3, 29, 12),
        utc(2025, 3, 30, 12),
        [utc(2025, 3, 30, 1, 0)],
    ),
    case(
        "berlin-spring-hourly",
        "Europe/Berlin",
        "0 * * * *",
        utc(2025, 3, 29, 23, 30),
        utc(2025, 3, 30, 1, 30),
        [utc(2025, 3, 30, 0), utc(2025, 3, 30, 1)],
    ),
    # Europe/Berlin 2025-10-26: 03:00 CEST -> 02:00 CET at 01:00Z; 02:00-02:59 happens twice.
    case(
        "berlin-fall-fixed",
        "Europe/Berlin",
        "30 2 * * *",
        utc(2025, 10, 25, 12),
        utc(2025, 10, 26, 12),
        [utc(2025, 10, 26, 0, 30)],
    ),
    case(
        "berlin-fall-hourly",
        "Europe/Berlin",
        "0 * * * *",
        utc(2025, 10, 25, 23, 30),
        utc(2025, 10, 26, 1, 30),
        [utc(2025, 10, 26, 0), utc(2025, 10, 26, 1)],
    ),
    case(
        "berlin-fall-30min",
        "Europe/Berlin",
        "*/30 * * * *",
        utc(2025, 10, 25, 23, 59),
        utc(2025, 10, 26, 1, 59),
        [
            utc(2025, 10, 26, 0),
            utc(2025, 10, 26, 0, 30),
            utc(2025, 10, 26, 1),
            utc(2025, 10, 26, 1, 30),
        ],
    ),
    # America/New_York 2025-03-09: 02:00 EST -> 03:00 EDT at 07:00Z.
    case(
        "newyork-spring-fixed",
        "America/New_York",
        "30 2 * * *",
        utc(2025, 3, 8, 12),
        utc(2025, 3, 9, 12),
        [utc(2025, 3, 9, 7)],
    ),
    case(
        "newyork-spring-hourly",
        "America/New_York",
        "0 * * * *",
        utc(2025, 3, 9, 5, 30),
        utc(2025, 3, 9, 7, 30),
        [utc(2025, 3, 9, 6), utc(2025, 3, 9, 7)],
    ),
    # America/New_York 2025-11-02: 02:00 EDT -> 01:00 EST at 06:00Z; 01:00-01:59 happens twice.
    case(
        "newyork-fall-fixed",
        "America/New_York",
        "30 1 * * *",
        utc(2025, 11, 1, 12),
        utc(2025, 11, 2, 12),
        [utc(2025, 11, 2, 5, 30)],
    ),
    case(
        "newyork-fall-hourly",
        "America/New_York",
        "0 * * * *",
        utc(2025, 11, 2, 4, 30),
        utc(2025, 11, 2, 6, 30),
        [utc(2025, 11, 2, 5), utc(2025, 11, 2, 6)],
    ),
    case(
        "newyork-fall-30min",
        "America/New_York",
        "*/30 * * * *",
        utc(2025, 11, 2, 4, 59),
        utc(2025, 11, 2, 6, 59),
        [
            utc(2025, 11, 2, 5),
            utc(2025, 11, 2, 5, 30),
            utc(2025, 11, 2, 6),
            utc(2025, 11, 2, 6, 30),
        ],
    ),
    # Australia/Lord_Howe 2025-04-06: 02:00 (+11) -> 01:30 (+10:30) at 15:00Z on 04-05.
    case(
        "lordhowe-fall-fixed",
        "Australia/Lord_Howe",
        "45 1 * * *",
        utc(2025, 4, 5),
        utc(2025, 4, 6),
        [utc(2025, 4, 5, 14, 45)],
    ),
    case(
        "lordhowe-fall-15min",
        "Australia/Lord_Howe",
        "*/15 * * * *",
        utc(2025, 4, 5, 14),
        utc(2025, 4, 5, 15, 30),
        [
            utc(2025, 4, 5, 14, 15),
            utc(2025, 4, 5, 14, 30),
            utc(2025, 4, 5, 14, 45),
            utc(2025, 4, 5, 15),
            utc(2025, 4, 5, 15, 15),
            utc(2025, 4, 5, 15, 30),
        ],
    ),
    # Australia/Lord_Howe 2025-10-05: 02:00 (+10:30) -> 02:30 (+11) at 15:30Z on 10-04.
    case(
        "lordhowe-spring-in-gap",
        "Australia/Lord_Howe",
        "15 2 * * *",
        utc(2025, 10, 4),
        utc(2025, 10, 5),
        [utc(2025, 10, 4, 15, 30)],
    ),
    case(
        "lordhowe-spring-before-gap",
        "Australia/Lord_Howe",
        "45 1 * * *",
        utc(2025, 10, 4),
        utc(2025, 10, 5),
        [utc(2025, 10, 4, 15, 15)],
    ),
    case(
        "lordhowe-spring-15min",
        "Australia/Lord_Howe",
        "*/15 * * * *",
        utc(2025, 10, 4, 14, 59),
        utc(2025, 10, 4, 15, 45),
        [
            utc(2025, 10, 4, 15),
            utc(2025, 10, 4, 15, 15),
            utc(2025, 10, 4, 15, 30),
            utc(2025, 10, 4, 15, 45),
        ],
    ),
    # Midnight gaps: America/Santiago 2025-09-07 and Africa/Cairo 2025-04-25 skip 00:00-00:59.
    case(
        "santiago-midnight-gap",
        "America/Santiago",
        "0 0 * * *",
        utc(2025, 9, 6, 12),
        utc(2025, 9, 7, 12),
        [utc(2025, 9, 7, 4)],
    ),
    case(
        "santiago-midnight-gap-30",
        "America/Santiago",
        "30 0 * * *",
        utc(2025, 9, 6, 12),
        utc(2025, 9, 7, 12),
        [utc(2025, 9, 7, 4)],
    ),
    case(
        "cairo-midnight-gap",
        "Africa/Cairo",
        "0 0 * * *",
        utc(2025, 4, 24, 12),
        utc(2025, 4, 25, 12),
        [utc(2025, 4, 24, 22)],
    ),
    # Their fall-backs repeat 23:00-23:59 of the evening before.
    case(
        "santiago-fall-fixed",
        "America/Santiago",
        "30 23 * * *",
        utc(2025, 4, 5, 12),
        utc(2025, 4, 6, 12),
        [utc(2025, 4, 6, 2, 30)],
    ),
    case(
        "cairo-fall-fixed",
        "Africa/Cairo",
        "30 23 * * *",
        utc(2025, 10, 30, 12),
        utc(2025, 10, 31, 12),
        [utc(2025, 10, 30, 20, 30)],
    ),
]


@pytest.mark.parametrize(
    ("zone", "expression", "after", "until", "expected"),
    DST_CASES,
)
def test_fire_times_follow_debian_cron_across_dst(
    zone: str, expression: str, after: datetime, until: datetime, expected: list[datetime]
) -> None:
    assert fires(expression, zone, after, until) == expected


def test_the_skipped_wall_time_fires_right_after_the_jump_in_local_time() -> None:
    [moment] = Schedule.of("30 2 * * *", "Europe/Berlin").fire_times(
        utc(2025, 3, 29, 12), utc(2025, 3, 30, 12)
    )
    assert (moment.hour, moment.minute, moment.utcoffset()) == (3, 0, timedelta(hours=2))
    hourly = Schedule.of("0 * * * *", "Europe/Berlin")
    first, second = hourly.fire_times(utc(2025, 3, 29, 23, 30), utc(2025, 3, 30, 1, 30))
    assert (first.hour, first.utcoffset()) == (1, timedelta(hours=1))  # 01:00 CET
    assert (second.hour, second.utcoffset()) == (3, timedelta(hours=2))  # 03:00 CEST


def test_next_after_from_a_utc_instant_sees_both_occurrences_of_the_repeated_hour() -> None:
    """Asked from UTC instants (as the daemon does with its stored cursor) the hourly schedule
    does fire at both 00:00Z and 01:00Z on Berlin's fall-back night."""
    hourly = Schedule.of("0 * * * *", "Europe/Berlin")
    assert hourly.next_after(utc(2025, 10, 26, 0)).astimezone(UTC) == utc(2025, 10, 26, 1)
    assert hourly.next_after(utc(2025, 10, 26, 1)).astimezone(UTC) == utc(2025, 10, 26, 2)
    fixed = Schedule.of("30 2 * * *", "Europe/Berlin")
    assert fixed.next_after(utc(2025, 10, 26, 0, 30)).astimezone(UTC) == utc(2025, 10, 27, 1, 30)


def _transitions(zone_name: str, year: int = 2025) -> list[datetime]:
    """The instants in ``year`` where the zone's UTC offset changes (found with zoneinfo)."""
    zone = ZoneInfo(zone_name)
    found: list[datetime] = []
    moment = utc(year, 1, 1)
    offset = moment.astimezone(zone).utcoffset()
    while moment.year == year:
        step = moment + timedelta(hours=1)
        if step.astimezone(zone).utcoffset() != offset:
            low, high = moment, step
            while high - low > timedelta(minutes=1):
                middle = low + (high - low) / 2
                if middle.astimezone(zone).utcoffset() == offset:
                    low = middle
                else:
                    high = middle
            found.append(high)
            offset = step.astimezone(zone).utcoffset()
        moment = step
    return found


SPIN_ZONES = (
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Africa/Cairo",
)
SPIN_EXPRESSIONS = (
    "30 2 * * *",
    "0 * * * *",
    "*/30 * * * *",
    "15,45 1-3 * * *",
    "0 0 * * *",
    "* * * * *",
    "0 2 * * 0",
)


def test_transitions_found_are_the_known_2025_dates() -> None:
    assert _transitions("Europe/Berlin") == [utc(2025, 3, 30, 1), utc(2025, 10, 26, 1)]
    assert _transitions("America/New_York") == [utc(2025, 3, 9, 7), utc(2025, 11, 2, 6)]
    assert _transitions("Australia/Lord_Howe") == [utc(2025, 4, 5, 15), utc(2025, 10, 4, 15, 30)]
    assert [t.date().isoformat() for t in _transitions("America/Santiago")] == [
        "2025-04-06",
        "2025-09-07",
    ]
    assert len(_transitions("Africa/Cairo")) == 2


@pytest.mark.slow
def test_next_fire_time_strictly_increases_and_never_spins_around_transitions() -> None:
    checked = 0
    for zone in SPIN_ZONES:
        transitions = _transitions(zone)
        assert len(transitions) == 2, zone
        for expression in SPIN_EXPRESSIONS:
            schedule = Schedule.of(expression, zone)
            for transition in transitions:
                moment = transition - timedelta(hours=3)
                while moment <= transition + timedelta(hours=3):
                    previous = moment
                    for _ in range(2):  # the next two fire times, the second from the first
                        following = schedule.next_after(previous)
                        # Instants, not wall times: two datetimes in the same ZoneInfo compare
                        # by wall clock, ignoring fold.
                        assert following.timestamp() > previous.timestamp(), (
                            zone,
                            expression,
                            moment,
                            previous,
                        )
                        gap = following.timestamp() - previous.timestamp()
                        assert gap < 8 * 86400, (zone, expression, previous)
                        previous = following
                        checked += 1
                    moment += timedelta(minutes=7)
    assert checked > 7_000


# --- the DST table: five zones x fixed and wildcard expressions x both transitions of 2026 -------
#
# The expected fire times come from a reference written from cron(8)'s text alone, independent of
# croniter and of ``Schedule``: walk the real minutes one by one, read the local wall clock, and
# - a wildcard job (minute or hour field starting with ``*``) fires whenever the wall clock
#   matches: never for a wall time the clock skipped, at both passes of a repeated one;
# - a fixed-time job fires when the wall clock matches for the first time (a repeated wall time is
#   not re-run), and once right after a jump forward of at most 3 hours that skipped a match.

_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


def _field_values(field: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for part in field.split(","):
        span, _, step = part.partition("/")
        if span == "*":
            first, last = low, high
        elif "-" in span:
            first, last = (int(v) for v in span.split("-"))
        else:
            first = last = int(span)
        values.update(range(first, last + 1, int(step) if step else 1))
    return values


def _cron_matches(expression: str, wall: datetime) -> bool:
    minute, hour, day, month, weekday = (
        _field_values(field, *limits)
        for field, limits in zip(expression.split(), _CRON_RANGES, strict=True)
    )
    cron_weekday = (wall.weekday() + 1) % 7  # cron: 0 (and 7) is Sunday
    return (
        wall.minute in minute
        and wall.hour in hour
        and wall.day in day
        and wall.month in month
        and (cron_weekday in weekday or (cron_weekday == 0 and 7 in weekday))
    )


def debian_cron_fires(
    expression: str, zone_name: str, after: datetime, until: datetime
) -> list[datetime]:
    """Fire times in (after, until] by cron(8)'s rule, found minute by minute."""
    zone = ZoneInfo(zone_name)
    minute, hour = expression.split()[:2]
    fixed = not minute.startswith("*") and not hour.startswith("*")
    fired: list[datetime] = []
    previous_wall = highest = after.astimezone(zone).replace(tzinfo=None)
    moment = after + timedelta(minutes=1)
    while moment <= until:
        wall = moment.astimezone(zone).replace(tzinfo=None)
        skipped = []
        if timedelta(minutes=1) < wall - previous_wall <= timedelta(hours=3, minutes=1):
            skipped = [
                previous_wall + timedelta(minutes=n)
                for n in range(1, (wall - previous_wall) // timedelta(minutes=1))
            ]
        jumped = fixed and any(_cron_matches(expression, s) for s in skipped)
        first_pass = wall > highest
        if jumped or (_cron_matches(expression, wall) and (first_pass or not fixed)):
            fired.append(moment)
        highest = max(highest, wall)
        previous_wall = wall
        moment += timedelta(minutes=1)
    return fired


DST_TABLE_ZONES = (
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Santiago",
    "Australia/Lord_Howe",  # a 30-minute shift
)
DST_TABLE_FIXED = (
    "30 2 * * *",
    "0 2 * * *",
    "45 1 * * *",
    "15 2 * * *",
    "15,45 0-3 * * *",
    "0 0 * * *",
    "30 23 * * *",
    "0 1 * * 0",
)
DST_TABLE_WILDCARD = (
    "*/30 2 * * *",
    "0 */2 * * *",
    "0 * * * *",
    "*/15 * * * *",
    "* 2 * * *",
    "*/30 1 * * *",
    "*/20 0 * * *",
    "*/30 23 * * *",
    "45 * * * *",
)
DST_TABLE = [
    pytest.param(zone, which, expression, id=f"{zone}-{which}-{expression}")
    for zone in DST_TABLE_ZONES
    for which in ("spring", "fall")
    for expression in DST_TABLE_FIXED + DST_TABLE_WILDCARD
]


def _transition(zone_name: str, which: str) -> datetime:
    """The 2026 instant where ``zone_name`` springs forward or falls back."""
    zone = ZoneInfo(zone_name)
    for moment in _transitions(zone_name, 2026):
        before = (moment - timedelta(seconds=1)).astimezone(zone).utcoffset()
        after = moment.astimezone(zone).utcoffset()
        assert before is not None and after is not None
        if (after > before) == (which == "spring"):
            return moment
    raise AssertionError(f"no {which} transition in {zone_name}")


def test_the_reference_rule_gives_the_issue_examples() -> None:
    """The reference itself, checked against times worked out by hand for Berlin's 2026 spring
    forward (02:00 CET -> 03:00 CEST at 01:00Z) and Lord Howe's 30-minute fall-back."""
    day = (utc(2026, 3, 28, 12), utc(2026, 3, 29, 12))
    assert debian_cron_fires("*/30 2 * * *", "Europe/Berlin", *day) == []
    assert debian_cron_fires("0 */2 * * *", "Europe/Berlin", *day) == [
        utc(2026, 3, 28, 13),  # 14:00 CET
        utc(2026, 3, 28, 15),
        utc(2026, 3, 28, 17),
        utc(2026, 3, 28, 19),
        utc(2026, 3, 28, 21),
        utc(2026, 3, 28, 23),  # 00:00 CET; 02:00 does not exist
        utc(2026, 3, 29, 2),  # 04:00 CEST
        utc(2026, 3, 29, 4),
        utc(2026, 3, 29, 6),
        utc(2026, 3, 29, 8),
        utc(2026, 3, 29, 10),
        utc(2026, 3, 29, 12),  # 14:00 CEST
    ]
    assert debian_cron_fires("15,45 0-3 * * *", "Europe/Berlin", *day) == [
        utc(2026, 3, 28, 23, 15),
        utc(2026, 3, 28, 23, 45),
        utc(2026, 3, 29, 0, 15),
        utc(2026, 3, 29, 0, 45),
        utc(2026, 3, 29, 1),  # 02:15 and 02:45 were skipped: once, right after the jump
        utc(2026, 3, 29, 1, 15),
        utc(2026, 3, 29, 1, 45),
    ]
    # Lord Howe 2026-04-05: 02:00 (+11) -> 01:30 (+10:30) at 15:00Z on 04-04.
    night = (utc(2026, 4, 4, 12), utc(2026, 4, 4, 18))
    assert debian_cron_fires("45 1 * * *", "Australia/Lord_Howe", *night) == [
        utc(2026, 4, 4, 14, 45)
    ]
    assert debian_cron_fires("*/30 1 * * *", "Australia/Lord_Howe", *night) == [
        utc(2026, 4, 4, 14),
        utc(2026, 4, 4, 14, 30),
        utc(2026, 4, 4, 15),  # 01:30 again
    ]


def test_the_issue_examples_fire_at_the_new_local_time_only() -> None:
    after, until = utc(2026, 3, 28, 21), utc(2026, 3, 29, 3)
    assert fires("*/30 2 * * *", "Europe/Berlin", after, until) == []
    assert fires("0 */2 * * *", "Europe/Berlin", after, until) == [
        utc(2026, 3, 28, 23),
        utc(2026, 3, 29, 2),
    ]


@pytest.mark.parametrize(("zone", "which", "expression"), DST_TABLE)
def test_fire_times_across_dst_follow_the_reference_rule(
    zone: str, which: str, expression: str
) -> None:
    transition = _transition(zone, which)
    after, until = transition - timedelta(hours=12), transition + timedelta(hours=12)
    expected = debian_cron_fires(expression, zone, after, until)
    schedule = Schedule.of(expression, zone)
    assert [t.astimezone(UTC) for t in schedule.fire_times(after, until)] == expected
    # Counting back (as catch-up does) finds the same ticks.
    back = schedule.previous(until, after=after, count=10_000)
    assert [t.astimezone(UTC) for t in back] == expected


@pytest.mark.slow
def test_the_dst_table_exercises_both_sides_of_the_rule() -> None:
    """The table is not vacuous: across it, fixed jobs fire at jumps and wildcard jobs both skip
    hours and fire twice in a repeated one."""
    jump_fires = twice = skipped = 0
    for zone in DST_TABLE_ZONES:
        for which in ("spring", "fall"):
            transition = _transition(zone, which)
            window = (transition - timedelta(hours=12), transition + timedelta(hours=12))
            for expression in DST_TABLE_FIXED:
                jump_fires += transition in debian_cron_fires(expression, zone, *window)
            for expression in DST_TABLE_WILDCARD:
                found = debian_cron_fires(expression, zone, *window)
                walls = [t.astimezone(ZoneInfo(zone)).replace(tzinfo=None) for t in found]
                twice += len(walls) != len(set(walls))
                skipped += which == "spring" and len(found) < len(
                    [
                        w
                        for w in (
                            window[0].astimezone(ZoneInfo(zone)).replace(tzinfo=None)
                            + timedelta(minutes=n)
                            for n in range(1, 24 * 60 + 1)
                        )
                        if _cron_matches(expression, w)
                    ]
                )
    assert jump_fires >= 10 and twice >= 10 and skipped >= 10


def test_schedule_list_shows_the_repeated_hour_of_an_hourly_job(ws: Workspace, cli: Any) -> None:
    ws.write_config(
        """
        [jobs.hourly]
        kind = "command"
        command = "true"
        schedule = "0 * * * *"
        timezone = "Europe/Berlin"
        """
    )
    listed = cli("schedule", "list", "--at", "2025-10-25T23:30:00Z", "--count", "3", "--json")
    assert listed.json()[0]["next"] == [
        "2025-10-26T02:00:00+02:00",
        "2025-10-26T02:00:00+01:00",
        "2025-10-26T03:00:00+01:00",
    ]


@pytest.mark.parametrize("count", ["0", "-1", "100000000"])
def test_schedule_list_refuses_a_count_out_of_range_at_once(
    ws: Workspace, cli: Any, count: str
) -> None:
    ws.write_config('[jobs.j]\nkind = "command"\ncommand = "true"\nschedule = "* * * * *"\n')

    listed = cli("schedule", "list", "--count", count)

    assert listed.exit_code == 2
    assert listed.stderr.startswith("error: --count: must be from 1 to 1,000")


# --- time zones ---------------------------------------------------------------------------------


def test_new_york_nine_am_is_13z_in_july_and_14z_in_january() -> None:
    schedule = Schedule.of("0 9 * * *", "America/New_York")
    assert schedule.next_after(utc(2025, 7, 1)).astimezone(UTC) == utc(2025, 7, 1, 13)
    assert schedule.next_after(utc(2025, 1, 15)).astimezone(UTC) == utc(2025, 1, 15, 14)


def test_schedule_list_shows_the_zone_and_utc(ws: Workspace, cli: Any) -> None:
    ws.write_config(
        """
        [jobs.morning]
        kind = "command"
        command = "true"
        schedule = "0 9 * * *"
        timezone = "America/New_York"
        """
    )
    summer = cli("schedule", "list", "--at", "2025-07-01T00:00:00Z", "--count", "2", "--json")
    assert summer.exit_code == 0, summer.stderr
    [row] = summer.json()
    assert row["timezone"] == "America/New_York"
    assert row["next"] == ["2025-07-01T09:00:00-04:00", "2025-07-02T09:00:00-04:00"]
    assert row["next_utc"][0] == "2025-07-01T13:00:00+00:00"
    winter = cli("schedule", "list", "--at", "2025-01-15T00:00:00+00:00", "--json")
    assert winter.json()[0]["next_utc"][0] == "2025-01-15T14:00:00+00:00"
    table = cli("schedule", "list", "--at", "2025-07-01T00:00:00Z")
    assert table.exit_code == 0
    assert "2025-07-01 09:00:00" in table.stdout and "2025-07-01 13:00:00Z" in table.stdout


# --- cron syntax ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "field", "message"),
    [
        ("schedule", "0 0 31 2 *", "schedule", "can never fire"),
        ("schedule", "*/90 * * * *", "schedule", "minute step /90"),
        ("schedule", "61 * * * *", "schedule", "minute field: 61 is out of range 0-59"),
        ("schedule", "CRON_TZ=Europe/Berlin 0 3 * * *", "schedule", "time zone prefix"),
        ("schedule", "TZ=UTC 0 3 * * *", "schedule", "time zone prefix"),
        ("schedule", "0 3 * *", "schedule", "expected 5 fields"),
        ("timezone", "Mars/Olympus_Mons", "timezone", "unknown time zone"),
    ],
)
def test_config_check_rejects_bad_schedules_naming_job_and_field(
    ws: Workspace, cli: Any, key: str, value: str, field: str, message: str
) -> None:
    schedule = "0 3 * * *" if key == "timezone" else value
    zone = f'timezone = "{value}"' if key == "timezone" else ""
    ws.write_config(
        f"""
        [jobs.good]
        kind = "command"
        command = "true"
        schedule = "0 * * * *"

        [jobs.nightly]
        kind = "command"
        command = "true"
        schedule = "{schedule}"
        {zone}
        """
    )
    result = cli("config", "check")
    assert result.exit_code == 2
    assert f"jobs.nightly.{field}:" in result.stderr
    assert message in result.stderr
    assert "jobs.good" not in result.stderr


def test_six_fields_put_seconds_last_and_aliases_expand() -> None:
    at = Schedule.of("0 0 * * * 30", "UTC")
    assert at.next_after(utc(2025, 1, 1)) == utc(2025, 1, 1, 0, 0, 30)
    assert at.next_after(utc(2025, 1, 1, 0, 0, 30)) == utc(2025, 1, 2, 0, 0, 30)
    every = Schedule.of("* * * * * */1", "UTC")
    assert every.upcoming(utc(2025, 1, 1), 3) == [
        utc(2025, 1, 1, 0, 0, 1),
        utc(2025, 1, 1, 0, 0, 2),
        utc(2025, 1, 1, 0, 0, 3),
    ]
    assert cron_problem("0 0 * * * 30") is None
    assert cron_problem("0 0 * * * 61") is not None
    assert expand("@hourly") == "0 * * * *"
    assert expand(" @Daily ") == "0 0 * * *"
    assert Schedule.of("@hourly", "UTC").expression == "0 * * * *"


def test_fixed_time_test_and_descriptions() -> None:
    assert is_fixed_time("30 2 * * *")
    assert is_fixed_time("15,45 1-3 * * *")
    assert not is_fixed_time("0 * * * *")
    assert not is_fixed_time("*/30 2 * * *")
    assert not is_fixed_time("@hourly")
    assert is_fixed_time("@daily")
    assert describe("* * * * *") == "every minute"
    assert describe("*/15 * * * *") == "every 15 minutes"
    assert describe("@hourly") == "every hour at minute 0"
    assert describe("30 2 * * *") == "at 02:30 every day"
    assert describe("0 0 * * * 30") == "cron '0 0 * * * 30'"


# --- plan_ticks: catch-up and deadlines ---------------------------------------------------------

HOURLY = Schedule.of("0 * * * *", "UTC")


def hours(*values: int) -> list[datetime]:
    return [utc(2025, 6, 1, h) for h in values]


@pytest.mark.parametrize(
    ("catchup", "max_catchup", "fired", "missed"),
    [
        ("none", 100, [], [1, 2, 3, 4, 5]),
        ("latest", 100, [5], [1, 2, 3, 4]),
        ("all", 100, [1, 2, 3, 4, 5], []),
        ("all", 3, [3, 4, 5], [1, 2]),
    ],
)
def test_plan_ticks_after_downtime(
    catchup: str, max_catchup: int, fired: list[int], missed: list[int]
) -> None:
    plan = plan_ticks(
        HOURLY,
        utc(2025, 6, 1, 0),
        utc(2025, 6, 1, 5, 10),
        catchup=catchup,
        max_catchup=max_catchup,
    )
    assert plan.fire == hours(*fired)
    assert plan.missed == hours(*missed)
    assert plan.cursor == utc(2025, 6, 1, 5)


def test_plan_ticks_none_fires_a_tick_that_is_on_time() -> None:
    plan = plan_ticks(HOURLY, utc(2025, 6, 1, 4), utc(2025, 6, 1, 5, 0, 30), catchup="none")
    assert (plan.fire, plan.missed) == (hours(5), [])


def test_plan_ticks_nothing_due() -> None:
    plan = plan_ticks(HOURLY, utc(2025, 6, 1, 5), utc(2025, 6, 1, 5, 59), catchup="all")
    assert (plan.fire, plan.missed, plan.cursor) == ([], [], None)


def test_plan_ticks_per_minute_job_down_for_112_minutes() -> None:
    plan = plan_ticks(
        Schedule.of("* * * * *", "UTC"),
        utc(2025, 6, 1, 8, 29),
        utc(2025, 6, 1, 10, 21),
        catchup="latest",
    )
    assert plan.fire == [utc(2025, 6, 1, 10, 21)]
    assert len(plan.missed) == 111
    assert plan.missed[0] == utc(2025, 6, 1, 8, 30)
    assert plan.missed[-1] == utc(2025, 6, 1, 10, 20)


def test_plan_ticks_latest_after_more_ticks_than_considered_fires_the_newest_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The cap is 10,000 ticks (a per-minute job down 7 days, a per-second one down 3 hours);
    # lowered here so that the test stays fast. The behaviour does not depend on its value.
    monkeypatch.setattr(schedule_module, "MAX_TICKS_CONSIDERED", 50)
    minutely = Schedule.of("* * * * *", "UTC")
    cursor, now = utc(2025, 6, 1, 0), utc(2025, 6, 1, 2, 0, 30)  # 120 ticks due
    plan = plan_ticks(minutely, cursor, now, catchup="latest")
    assert plan.fire == [utc(2025, 6, 1, 2)]
    assert plan.cursor == utc(2025, 6, 1, 2)
    assert len(plan.missed) + plan.more_missed == 119


@pytest.mark.parametrize("catchup", ["latest", "all"])
def test_plan_ticks_starting_deadline(catchup: str) -> None:
    daily = Schedule.of("0 2 * * *", "UTC")
    cursor = utc(2025, 5, 31, 2)
    soon = plan_ticks(
        daily, cursor, utc(2025, 6, 1, 2, 40), catchup=catchup, starting_deadline=3600
    )
    assert (soon.fire, soon.missed) == ([utc(2025, 6, 1, 2)], [])
    late = plan_ticks(
        daily, cursor, utc(2025, 6, 1, 3, 30), catchup=catchup, starting_deadline=3600
    )
    assert (late.fire, late.missed, late.cursor) == ([], [utc(2025, 6, 1, 2)], utc(2025, 6, 1, 2))


# --- the daemon on a fake clock -----------------------------------------------------------------


class FakeClock:
    """The daemon's clock: a UTC instant the test sets. ``at(h, m, s)`` is relative to a day in
    the future (``schedule pause`` stamps the pause with the real time, and paused ticks are
    compared with it)."""

    def __init__(self, day: datetime | None = None) -> None:
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        self.day = day or today + timedelta(days=2)
        self.now = self.day

    def __call__(self) -> datetime:
        return self.now

    def at(self, hour: int, minute: int = 0, second: int = 0) -> datetime:
        return self.day + timedelta(hours=hour, minutes=minute, seconds=second)

    def set(self, hour: int, minute: int = 0, second: int = 0) -> datetime:
        self.now = self.at(hour, minute, second)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def daemon(ws: Workspace, clock: FakeClock) -> Daemon:
    return Daemon(str(ws.db), lambda: load_config(ws.config), once=True, clock=clock)


def once(ws: Workspace, clock: FakeClock) -> None:
    """One ``batchctl daemon --once`` at the fake time."""
    assert daemon(ws, clock).run() == 0


def passes_until_idle(ws: Workspace, clock: FakeClock, limit: int = 20) -> int:
    """``--once`` passes at the same fake time until no tick is pending; how many it took."""
    for count in range(1, limit + 1):
        once(ws, clock)
        if not ws.sql("SELECT 1 FROM ticks WHERE status = 'pending'"):
            return count
    pytest.fail(f"ticks still pending after {limit} passes")


def runs(ws: Workspace, job: str | None = None) -> list[dict[str, Any]]:
    columns = ("id", "job", "status", "trigger", "scheduled_for", "reason")
    where, params = (" WHERE job = ?", (job,)) if job else ("", ())
    rows = ws.sql(f"SELECT {', '.join(columns)} FROM runs{where} ORDER BY id", *params)
    return [dict(zip(columns, row, strict=True)) for row in rows]


def ticks(ws: Workspace, job: str) -> dict[str, tuple[str, str | None]]:
    rows = ws.sql(
        "SELECT scheduled_for, status, reason FROM ticks WHERE job = ? ORDER BY scheduled_for", job
    )
    return {row[0]: (row[1], row[2]) for row in rows}


def iso(moment: datetime) -> str:
    return str(to_iso(moment))


def hourly_config(
    *, catchup: str = "latest", max_catchup: int = 100, workers: int = 1, command: str = "echo hi"
) -> str:
    return f"""
        [daemon]
        max_workers = {workers}

        [jobs.hourly]
        kind = "command"
        command = "{command}"
        schedule = "0 * * * *"
        timezone = "UTC"
        catchup = "{catchup}"
        max_catchup = {max_catchup}
        """


def test_a_job_seen_for_the_first_time_is_not_backfilled(ws: Workspace, clock: FakeClock) -> None:
    ws.write_config(hourly_config(catchup="all"))
    clock.set(10, 17)
    once(ws, clock)
    assert runs(ws) == []
    assert ws.sql("SELECT last_scheduled_for FROM schedule_cursors WHERE job = 'hourly'") == [
        (iso(clock.at(10, 17)),)
    ]
    clock.set(10, 59, 59)
    once(ws, clock)
    assert runs(ws) == []
    clock.set(11, 0, 5)
    once(ws, clock)
    [run] = runs(ws)
    assert (run["status"], run["trigger"], run["scheduled_for"]) == (
        "completed",
        "schedule",
        iso(clock.at(11)),
    )
    assert ticks(ws, "hourly") == {iso(clock.at(11)): ("fired", None)}


@pytest.mark.parametrize(
    ("catchup", "max_catchup", "fired", "missed"),
    [
        ("none", 100, [], [1, 2, 3, 4, 5]),
        ("latest", 100, [5], [1, 2, 3, 4]),
        ("all", 100, [1, 2, 3, 4, 5], []),
        ("all", 3, [3, 4, 5], [1, 2]),
    ],
)
def test_daemon_downtime_follows_the_catchup_policy(
    ws: Workspace,
    cli: Any,
    clock: FakeClock,
    catchup: str,
    max_catchup: int,
    fired: list[int],
    missed: list[int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ws.write_config(hourly_config(catchup=catchup, max_catchup=max_catchup))
    clock.set(-1, 59)  # 23:59 the day before: the job is first seen
    once(ws, clock)
    clock.set(0, 0, 10)
    once(ws, clock)
    assert [r["scheduled_for"] for r in runs(ws)] == [iso(clock.at(0))]
    clock.set(5, 10)  # the daemon was down from 00:30 to 05:10
    with caplog.at_level(logging.WARNING, logger="batchctl.daemon"):
        passes_until_idle(ws, clock)
    after = runs(ws)[1:]
    assert [r["scheduled_for"] for r in after] == [iso(clock.at(h)) for h in fired]
    assert all(r["status"] == "completed" and r["trigger"] == "schedule" for r in after)
    recorded = ticks(ws, "hourly")
    assert {t for t, (status, _) in recorded.items() if status == "missed"} == {
        iso(clock.at(h)) for h in missed
    }
    for h in missed:
        assert recorded[iso(clock.at(h))] == ("missed", f"catchup={catchup}")
    if missed:
        assert f"{len(missed)} tick(s) missed (catchup={catchup})" in caplog.text
    status = cli("status", "--json")
    assert status.exit_code == 0
    listed = sorted(r["scheduled_for"] for r in status.json())
    assert listed == sorted(iso(clock.at(h)) for h in [0, *fired])
    assert all(s.endswith("+00:00") for s in listed)
    assert all(datetime.fromisoformat(s).tzinfo is not None for s in listed)
    # The next tick after the downtime fires normally, whatever the policy.
    clock.set(6, 0, 10)
    once(ws, clock)
    assert runs(ws)[-1]["scheduled_for"] == iso(clock.at(6))
    assert len(runs(ws)) == 2 + len(fired)


def test_per_minute_job_after_downtime_fires_once_and_warns_with_the_count(
    ws: Workspace, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    ws.write_config(
        """
        [jobs.minutely]
        kind = "command"
        command = "true"
        schedule = "* * * * *"
        timezone = "UTC"
        """
    )
    clock.set(8, 28, 30)
    once(ws, clock)
    clock.set(8, 29, 5)
    once(ws, clock)
    clock.set(10, 21, 5)
    with caplog.at_level(logging.WARNING, logger="batchctl.daemon"):
        once(ws, clock)
    assert [r["scheduled_for"] for r in runs(ws)] == [iso(clock.at(8, 29)), iso(clock.at(10, 21))]
    assert "111 tick(s) missed (catchup=latest)" in caplog.text
    assert ws.sql("SELECT count(*) FROM ticks WHERE status = 'missed'") == [(111,)]


def test_daemon_after_a_downtime_longer_than_the_tick_cap_fires_latest_once(
    ws: Workspace, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(schedule_module, "MAX_TICKS_CONSIDERED", 50)  # 10,000 in production
    ws.write_config(
        """
        [jobs.minutely]
        kind = "command"
        command = "true"
        schedule = "* * * * *"
        timezone = "UTC"
        """
    )
    clock.set(-1, 59, 30)
    once(ws, clock)
    clock.set(2, 0, 30)  # 120 ticks missed
    for _ in range(3):  # three passes at the restart, as the daemon makes within a minute
        once(ws, clock)
    assert [r["scheduled_for"] for r in runs(ws)] == [iso(clock.at(2))]


@pytest.mark.parametrize(("back_at", "expect_run"), [((2, 40), True), ((3, 30), False)])
def test_daemon_starting_deadline(
    ws: Workspace, clock: FakeClock, back_at: tuple[int, int], expect_run: bool
) -> None:
    ws.write_config(
        """
        [jobs.nightly]
        kind = "command"
        command = "true"
        schedule = "0 2 * * *"
        timezone = "UTC"
        starting_deadline = "1h"
        """
    )
    clock.set(1, 0)
    once(ws, clock)
    clock.set(*back_at)
    once(ws, clock)
    fired = [r["scheduled_for"] for r in runs(ws)]
    assert fired == ([iso(clock.at(2))] if expect_run else [])
    expected = ("fired", None) if expect_run else ("missed", "catchup=latest")
    assert ticks(ws, "nightly") == {iso(clock.at(2)): expected}


def test_a_clock_stepped_back_never_fires_a_tick_twice(ws: Workspace, clock: FakeClock) -> None:
    ws.write_config(hourly_config(catchup="all"))
    clock.set(-1, 59)
    once(ws, clock)
    for hour in (0, 1, 2):
        clock.set(hour, 0, 10)
        once(ws, clock)
    # The wall clock is stepped back two hours, then runs forward over the same ticks again.
    for moment in ((0, 0, 30), (0, 30), (1, 0, 10), (1, 59), (2, 0, 10)):
        clock.set(*moment)
        once(ws, clock)
    assert [r["scheduled_for"] for r in runs(ws)] == [iso(clock.at(h)) for h in (0, 1, 2)]
    clock.set(3, 0, 10)
    once(ws, clock)
    assert [r["scheduled_for"] for r in runs(ws)] == [iso(clock.at(h)) for h in (0, 1, 2, 3)]
    assert (
        ws.sql(
            "SELECT scheduled_for FROM runs GROUP BY job, scope, scheduled_for HAVING count(*) > 1"
        )
        == []
    )


def test_pruned_history_never_makes_old_ticks_fire_again(ws: Workspace, clock: FakeClock) -> None:
    ws.write_config(hourly_config(catchup="all"))
    clock.set(-1, 59)
    once(ws, clock)
    for hour in (0, 1):
        clock.set(hour, 0, 10)
        once(ws, clock)
    assert len(runs(ws)) == 2
    ws.sql("DELETE FROM runs")  # what `prune --older-than 0s` does to the history
    clock.set(1, 0, 30)
    once(ws, clock)
    assert runs(ws) == []
    ws.sql("DELETE FROM ticks")  # even with the tick rows gone, the cursor remembers
    clock.set(1, 30)
    once(ws, clock)
    assert runs(ws) == []
    clock.set(2, 0, 10)
    once(ws, clock)
    assert [r["scheduled_for"] for r in runs(ws)] == [iso(clock.at(2))]


@pytest.mark.parametrize(("catchup", "refired"), [("latest", 1), ("none", 0)])
def test_pause_records_skipped_ticks_and_resume_follows_catchup(
    ws: Workspace, cli: Any, clock: FakeClock, catchup: str, refired: int
) -> None:
    ws.write_config(hourly_config(catchup=catchup))
    clock.set(-1, 59)
    once(ws, clock)
    clock.set(0, 0, 10)
    once(ws, clock)
    paused = cli("schedule", "pause", "hourly", "--reason", "maintenance", "--json")
    assert paused.exit_code == 0, paused.stderr
    assert paused.json() == {"job": "hourly", "paused": True, "already": False}
    assert cli("schedule", "pause", "hourly").stdout.strip() == "hourly: was already paused"
    [row] = cli("schedule", "list", "--json").json()
    assert row["paused"] is True
    assert "paused" in cli("schedule", "list").stdout
    for hour in (1, 2, 3):
        clock.set(hour, 0, 10)
        once(ws, clock)
    assert len(runs(ws)) == 1
    recorded = ticks(ws, "hourly")
    for hour in (1, 2, 3):
        assert recorded[iso(clock.at(hour))] == ("skipped", "paused")
    resumed = cli("schedule", "resume", "hourly", "--json")
    assert resumed.exit_code == 0, resumed.stderr
    assert resumed.json() == {
        "job": "hourly",
        "paused": False,
        "was_paused": True,
        "ticks_to_fire": refired,
    }
    assert cli("schedule", "list", "--json").json()[0]["paused"] is False
    for moment in ((3, 10), (3, 20)):
        clock.set(*moment)
        once(ws, clock)
    expected = [iso(clock.at(0))] + ([iso(clock.at(3))] if refired else [])
    assert [r["scheduled_for"] for r in runs(ws)] == expected
    assert all(r["status"] == "completed" for r in runs(ws))
    assert ticks(ws, "hourly")[iso(clock.at(1))] == ("skipped", "paused")
    clock.set(4, 0, 10)
    once(ws, clock)
    assert runs(ws)[-1]["scheduled_for"] == iso(clock.at(4))
    assert len(runs(ws)) == len(expected) + 1


def test_jobs_shows_a_paused_job(ws: Workspace, cli: Any) -> None:
    ws.write_config(hourly_config())
    assert cli("schedule", "pause", "hourly").exit_code == 0
    [row] = cli("jobs", "--json").json()
    assert row["paused"] is True
    assert "paused" in cli("jobs").stdout
    assert cli("schedule", "resume", "hourly").exit_code == 0
    assert cli("jobs", "--json").json()[0]["paused"] is False


def berlin_hourly(catchup: str) -> str:
    return f"""
        [daemon]
        max_workers = 1

        [jobs.hourly]
        kind = "command"
        command = "true"
        schedule = "0 * * * *"
        timezone = "Europe/Berlin"
        catchup = "{catchup}"
        """


def test_daemon_fires_an_hourly_job_every_real_hour_through_the_fall_back(
    ws: Workspace,
) -> None:
    ws.write_config(berlin_hourly("all"))
    clock = FakeClock(utc(2025, 10, 26))
    clock.set(-2, 0, 30)  # 22:00:30Z, first sight
    once(ws, clock)
    for hour in (-1, 0, 1, 2, 3):  # a pass at ten seconds past every UTC hour
        clock.set(hour, 0, 10)
        once(ws, clock)
    assert [r["scheduled_for"] for r in runs(ws)] == [iso(clock.at(h)) for h in (-1, 0, 1, 2, 3)]


def test_daemon_catchup_all_over_the_fall_back_fires_the_repeated_hour(ws: Workspace) -> None:
    ws.write_config(berlin_hourly("all"))
    clock = FakeClock(utc(2025, 10, 26))
    clock.set(-1, 30)  # 23:30Z, first sight; then down until 02:10Z
    once(ws, clock)
    clock.set(2, 10)
    passes_until_idle(ws, clock)
    assert [r["scheduled_for"] for r in runs(ws)] == [iso(clock.at(h)) for h in (0, 1, 2)]


DST_DAEMON_JOBS = {
    "fixed": "30 2 * * *",
    "fixed-list": "15,45 2 * * *",
    "wild-minute": "*/30 2 * * *",
    "wild-hour": "0 */2 * * *",
}


@pytest.mark.parametrize("which", ["spring", "fall"])
def test_daemon_across_dst_fires_the_reference_ticks_and_warns_of_none_missed(
    ws: Workspace, which: str, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = "".join(
        f"""
        [jobs.{name}]
        kind = "command"
        command = "true"
        schedule = "{expression}"
        timezone = "Europe/Berlin"
        """
        for name, expression in DST_DAEMON_JOBS.items()
    )
    ws.write_config("[daemon]\nmax_workers = 4\n" + jobs)
    transition = _transition("Europe/Berlin", which)
    clock = FakeClock(transition)
    clock.set(-3, 0, 5)  # first sight
    once(ws, clock)
    with caplog.at_level(logging.WARNING, logger="batchctl.daemon"):
        for minutes in range(10, 4 * 60, 10):  # a pass every ten minutes, for four hours
            clock.set(-3, minutes, 5)
            once(ws, clock)
    assert "missed" not in caplog.text
    assert ws.sql("SELECT count(*) FROM ticks WHERE status != 'fired'") == [(0,)]
    for name, expression in DST_DAEMON_JOBS.items():
        expected = debian_cron_fires(expression, "Europe/Berlin", clock.at(-3), clock.now)
        assert [r["scheduled_for"] for r in runs(ws, name)] == [iso(t) for t in expected], name


def test_each_scope_has_its_own_tick(ws: Workspace, clock: FakeClock) -> None:
    ws.write_config(
        """
        [jobs.report]
        kind = "command"
        command = "echo $BATCHCTL_SCOPE"
        schedule = "0 * * * *"
        timezone = "UTC"
        scopes = ["eu", "us"]
        """
    )
    clock.set(-1, 59)
    once(ws, clock)
    clock.set(0, 0, 10)
    once(ws, clock)
    rows = ws.sql("SELECT scope, status, scheduled_for FROM runs ORDER BY scope")
    assert rows == [("eu", "completed", iso(clock.at(0))), ("us", "completed", iso(clock.at(0)))]
    assert ws.sql("SELECT scope, status FROM ticks ORDER BY scope") == [
        ("eu", "fired"),
        ("us", "fired"),
    ]
    assert len(ws.sql("SELECT * FROM schedule_cursors WHERE job = 'report'")) == 2


PRIORITY_CONFIG = """
    [daemon]
    max_workers = 1

    [jobs.a-low]
    kind = "command"
    command = "echo low"
    schedule = "0 * * * *"
    timezone = "UTC"

    [jobs.z-high]
    kind = "command"
    command = "echo high"
    schedule = "0 * * * *"
    timezone = "UTC"
    priority = 10
    """


def test_the_higher_priority_job_runs_first_when_workers_are_short(
    ws: Workspace, clock: FakeClock
) -> None:
    ws.write_config(PRIORITY_CONFIG)
    clock.set(-1, 59)
    once(ws, clock)
    clock.set(0, 0, 10)
    passes_until_idle(ws, clock)
    done = runs(ws)
    assert [r["job"] for r in done] == ["z-high", "a-low"]
    assert all(r["status"] == "completed" for r in done)
    assert done[0]["id"] < done[1]["id"]
    assert ws.sql("SELECT job, priority FROM ticks ORDER BY job") == [("a-low", 0), ("z-high", 10)]


def test_one_once_pass_fires_every_due_tick_even_with_one_worker(
    ws: Workspace, clock: FakeClock
) -> None:
    ws.write_config(PRIORITY_CONFIG)
    clock.set(-1, 59)
    once(ws, clock)
    clock.set(0, 0, 10)
    once(ws, clock)
    assert sorted(r["job"] for r in runs(ws)) == ["a-low", "z-high"]


def test_catchup_all_runs_each_missed_tick_in_order_with_free_workers(
    ws: Workspace, clock: FakeClock
) -> None:
    ws.write_config(hourly_config(catchup="all", workers=8, command="sleep 0.2"))
    clock.set(-1, 59)
    once(ws, clock)
    clock.set(5, 10)
    once(ws, clock)  # one --once pass drains the backlog, one tick after the other
    done = runs(ws)
    assert [r["status"] for r in done] == ["completed"] * 6
    assert [r["scheduled_for"] for r in done] == [iso(clock.at(h)) for h in range(6)]


def test_after_chain_runs_when_the_upstream_completes_and_not_when_it_fails(
    ws: Workspace, clock: FakeClock
) -> None:
    ws.write_config(
        """
        [jobs.extract]
        kind = "command"
        command = "echo extracted"
        schedule = "0 * * * *"
        timezone = "UTC"

        [jobs.load]
        kind = "command"
        command = "echo loaded"
        after = ["extract"]

        [jobs.broken]
        kind = "command"
        command = "exit 3"
        schedule = "0 * * * *"
        timezone = "UTC"

        [jobs.never]
        kind = "command"
        command = "echo never"
        after = ["broken"]
        """
    )
    clock.set(-1, 59)
    once(ws, clock)
    clock.set(0, 0, 10)
    once(ws, clock)
    by_job = {r["job"]: r for r in runs(ws)}
    assert set(by_job) == {"extract", "load", "broken"}
    assert (by_job["extract"]["status"], by_job["extract"]["trigger"]) == ("completed", "schedule")
    assert (by_job["load"]["status"], by_job["load"]["trigger"]) == ("completed", "after")
    assert by_job["load"]["id"] > by_job["extract"]["id"]
    assert by_job["broken"]["status"] == "failed"


# --- overlapping scheduled runs (real jobs in the pool while the fake clock moves on) -----------


@pytest.fixture
def live_daemon(ws: Workspace, clock: FakeClock) -> Iterator[Callable[[], Daemon]]:
    """A once-mode daemon whose passes the test drives by hand while its pool keeps running."""
    made: list[Daemon] = []

    def make() -> Daemon:
        made.append(daemon(ws, clock))
        return made[-1]

    yield make
    for each in made:
        each.stop()
        each._shutdown()


def overlap_config(concurrency: str) -> str:
    # The lease outlasts the fake clock's one-hour step, so the first run's lock still counts.
    return f"""
        [daemon]
        lease = "3h"

        [jobs.slow]
        kind = "command"
        command = "sleep 1.5"
        schedule = "0 * * * *"
        timezone = "UTC"
        concurrency = "{concurrency}"
        grace = "1s"
        """


def start_overlap(ws: Workspace, clock: FakeClock, d: Daemon) -> None:
    """Fire 00:00 and, while that run still runs, 01:00."""
    clock.set(-1, 59)
    d.pass_once()
    clock.set(0, 0, 5)
    d.pass_once()
    wait_for(lambda: [r for r in runs(ws) if r["status"] == "running"], "the first run to start")
    clock.set(1, 0, 5)
    d.pass_once()


def statuses(ws: Workspace) -> list[str]:
    return [r["status"] for r in runs(ws)]


def test_overlap_forbid_skips_the_tick_and_never_runs_two(
    ws: Workspace, clock: FakeClock, live_daemon: Callable[[], Daemon]
) -> None:
    ws.write_config(overlap_config("forbid"))
    d = live_daemon()
    start_overlap(ws, clock, d)
    most_running = 0

    def second_recorded() -> bool:
        nonlocal most_running
        most_running = max(most_running, statuses(ws).count("running"))
        return len(runs(ws)) == 2 and runs(ws)[1]["status"] != "queued"

    wait_for(second_recorded, "the overlapping tick's run")
    assert statuses(ws) == ["running", "skipped"]
    assert d._wait_for_runs(10)
    first, second = runs(ws)
    assert first["status"] == "completed"
    assert second["scheduled_for"] == iso(clock.at(1))
    assert "locked out" in second["reason"]
    status, reason = ticks(ws, "slow")[iso(clock.at(1))]
    assert status == "skipped" and reason is not None and "locked out" in reason
    assert most_running <= 1


def test_overlap_allow_runs_both_at_once(
    ws: Workspace, clock: FakeClock, live_daemon: Callable[[], Daemon]
) -> None:
    ws.write_config(overlap_config("allow"))
    d = live_daemon()
    start_overlap(ws, clock, d)
    wait_for(lambda: statuses(ws) == ["running", "running"], "two runs at once")
    assert d._wait_for_runs(10)
    assert statuses(ws) == ["completed", "completed"]
    assert [t[0] for t in ticks(ws, "slow").values()] == ["fired", "fired"]


def test_overlap_replace_cancels_the_old_run(
    ws: Workspace, clock: FakeClock, live_daemon: Callable[[], Daemon]
) -> None:
    ws.write_config(overlap_config("replace"))
    d = live_daemon()
    start_overlap(ws, clock, d)
    assert d._wait_for_runs(15)
    old, new = runs(ws)
    assert (old["status"], new["status"]) == ("cancelled", "completed")
    [(error,)] = ws.sql("SELECT error FROM runs WHERE id = ?", old["id"])
    assert "cancel" in error
    assert ws.sql("SELECT count(*) FROM locks") == [(0,)]
    assert new["scheduled_for"] == iso(clock.at(1))
    assert [t[0] for t in ticks(ws, "slow").values()] == ["fired", "fired"]

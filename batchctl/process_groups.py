"""A command job's process group, and stopping one that outlived the batchctl that ran it.

A ``command`` job runs in its own process group (so that cancel reaches its children). If the
batchctl running it is killed with SIGKILL, that group keeps running: nothing signals it. Each
attempt therefore records its group id and the group leader's start time; whoever later
records the run ``abandoned`` (the next run taking over the job's lock, or a daemon's recovery),
or ``batchctl cancel`` of it, stops the group when it is on the same host: SIGTERM, then SIGKILL
after a grace period.

The start time (``/proc/PID/stat`` field 22, in clock ticks since boot) guards against a
reused id: the group is signalled only while it is provably the one recorded — its leader
still has the recorded start time, or, the leader gone, every member started no earlier.
Without ``/proc`` (not Linux) nothing is recorded and nothing is signalled.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from batchctl.owners import hostname, is_zombie
from batchctl.records import LogEntry, LogLevel

if TYPE_CHECKING:
    from batchctl.store.runs import RunTables

PROC = Path("/proc")
GRACE_S = 5.0  # how long a leftover group has to exit after SIGTERM before SIGKILL


def start_time(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot), or None when unknown or not running."""
    stat = _stat(pid)
    return stat[1] if stat else None


def _stat(pid: int) -> tuple[int, str] | None:
    """(process group, start time) of ``pid``."""
    try:
        text = (PROC / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = text.rsplit(")", 1)[-1].split()
    try:
        return int(fields[2]), fields[19]  # fields 5 (pgrp) and 22 (starttime) of the line
    except (IndexError, ValueError):
        return None


def _members(pgid: int) -> dict[int, str]:
    """The processes of group ``pgid``: pid -> start time."""
    found: dict[int, str] = {}
    try:
        entries = list(PROC.iterdir())
    except OSError:
        return found
    for entry in entries:
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is not None and stat[0] == pgid:
            found[int(entry.name)] = stat[1]
    return found


def _still_ours(pgid: int, started: str) -> bool:
    members = _members(pgid)
    if not members:
        return False
    if pgid in members:  # the leader is alive: it must be the very process recorded
        return members[pgid] == started
    # The leader has exited and its children remain: a group id is not reused while any member
    # lives, and a member of the recorded group cannot predate its leader.
    return all(int(when) >= int(started) for when in members.values())


def stop_leftover(host: str, pgid: int, started: str, grace: float = GRACE_S) -> str | None:
    """Stop the recorded group if it still runs on this host; what was done, or None."""
    if host != hostname() or not _still_ours(pgid, started):
        return None
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return None
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _alive(pgid):
            return f"stopped its leftover process group {pgid} with SIGTERM"
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return f"stopped its leftover process group {pgid} with SIGTERM"
    return f"killed its leftover process group {pgid} (SIGKILL after {grace:g}s)"


def _alive(pgid: int) -> bool:
    """Whether any process of the group is still running (zombies do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return any(not is_zombie(pid) for pid in _members(pgid))


def stop_leftovers(store: RunTables, run_id: int, host: str, now: datetime) -> str | None:
    """Stop what the run's unfinished attempt left running on ``host`` (when that is this host)
    once the run has been recorded abandoned, or cancelled with its runner gone; note it in the
    run's log. What was done, or None."""
    recorded = store.attempt_process(run_id)
    if recorded is None:
        return None
    number, pgid, started = recorded
    done = stop_leftover(host, pgid, started)
    if done is not None:
        store.append_logs([LogEntry(run_id, number, now, LogLevel.WARNING, done)])
    return done

"""``batchctl logs``: a run's log lines (a command's stdout and stderr among them)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Annotated

import typer

from batchctl.cli import render, session
from batchctl.cli.complete import log_levels, run_ids

if TYPE_CHECKING:
    from batchctl.records import LogEntry

FOLLOW_POLL_S = 0.25


def logs(
    run_id: Annotated[
        int,
        typer.Argument(
            autocompletion=run_ids, help="The run whose log to print.", show_default=False
        ),
    ],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until the run ends.")
    ] = False,
    level: Annotated[
        str | None,
        typer.Option(
            "--level",
            "-l",
            autocompletion=log_levels,
            help="Only lines at this level or above: debug, info, warning, error.",
            show_default=False,
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Print a run's log; --follow keeps printing until the run ends."""
    from batchctl.errors import NotFoundError, UsageError
    from batchctl.records import LogLevel

    try:
        min_level = LogLevel.parse(level) if level else None
    except ValueError:
        raise UsageError(
            f"unknown level {level!r}", hint="one of: debug, info, warning, error"
        ) from None
    store = session.current.store(create=False)
    if store.get_run(run_id) is None:
        raise NotFoundError(f"no run with id {run_id}", hint="list runs with: batchctl status")
    show = render.print_json_line if json_output else None
    tint = render.colour()
    last_id = 0
    while True:
        for entry in store.iter_logs(run_id, after_id=last_id, min_level=min_level):
            last_id = entry.id or last_id
            if show:
                show(entry.to_json())
            else:
                _print_entry(entry, tint)
        sys.stdout.flush()  # what is printed is seen at once by a pipe, also while following
        if not follow:
            return
        run = store.get_run(run_id)
        if run is None or run.status.terminal:
            if not store.logs(run_id, after_id=last_id, min_level=min_level, limit=1):
                return
            continue
        time.sleep(FOLLOW_POLL_S)


_LEVEL_STYLES = {"debug": "dim", "info": "", "warning": "yellow", "error": "red"}


def _print_entry(entry: LogEntry, tint: bool) -> None:
    when = entry.at.astimezone().strftime("%H:%M:%S.%f")[:-3]
    level = render.paint(f"{entry.level.value.upper():<7}", _LEVEL_STYLES[entry.level.value], tint)
    fields = " ".join(f"{k}={v}" for k, v in entry.fields.items())
    suffix = " " + render.paint(fields, "dim", tint) if fields else ""
    stream = render.paint(f"{entry.stream:<9}", "dim", tint)
    render.out(f"{render.paint(when, 'dim', tint)} {level} {stream} {entry.message}{suffix}")

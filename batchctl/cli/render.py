"""Rendering for humans (Rich) and machines (--json), and the one way errors are printed."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from batchctl.cli import session

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from batchctl.records import Run

STATUS_STYLES = {
    "completed": "green",
    "partial": "yellow",
    "failed": "red",
    "abandoned": "red",
    "cancelled": "magenta",
    "skipped": "dim",
    "running": "cyan",
    "retrying": "cyan",
    "queued": "blue",
}
STATUS_MARKS = {
    "completed": "✓",
    "partial": "◐",
    "failed": "✗",
    "abandoned": "✗",
    "cancelled": "⊘",
    "skipped": "-",
}

PIPE_WIDTH = 160
_consoles: dict[bool, Console] = {}


def console(*, stderr: bool = False) -> Console:
    """The Rich console for stdout (or stderr); honours --no-color and NO_COLOR."""
    if stderr not in _consoles:
        from rich.console import Console

        stream = sys.stderr if stderr else sys.stdout
        # Piped output (cron mail, CI logs) is not cut to 80 columns.
        width = None if stream.isatty() or "COLUMNS" in os.environ else PIPE_WIDTH
        _consoles[stderr] = Console(
            stderr=stderr,
            no_color=session.current.no_color or None,
            highlight=False,
            soft_wrap=False,
            width=width,
        )
    return _consoles[stderr]


def reset_consoles() -> None:
    _consoles.clear()


def print_json(data: Any) -> None:
    """Machine output: JSON on stdout and nothing else."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_json_line(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=str) + "\n")
    sys.stdout.flush()


def error(message: str, hint: str | None = None) -> None:
    err = console(stderr=True)
    err.print(f"[bold red]error:[/] {_escape(message)}", soft_wrap=True)
    if hint:
        err.print(f"[dim]hint: {_escape(hint)}[/]", soft_wrap=True)


def note(message: str) -> None:
    """A human message on stderr, suppressed by --quiet."""
    if not session.current.quiet:
        console(stderr=True).print(message, soft_wrap=True)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def status_text(status: str) -> str:
    style = STATUS_STYLES.get(status, "")
    return f"[{style}]{status}[/]" if style else status


def local_time(moment: datetime | None, *, short: bool = False) -> str:
    if moment is None:
        return "-"
    return moment.astimezone().strftime("%m-%d %H:%M:%S" if short else "%Y-%m-%d %H:%M:%S")


def runs_table(runs: Iterable[Run], *, title: str | None = None) -> Table:
    from rich.table import Table

    from batchctl.durations import format_duration

    table = Table(title=title, title_justify="left", header_style="bold")
    for name, justify in (
        ("ID", "right"),
        ("JOB", "left"),
        ("SCOPE", "left"),
        ("STATUS", "left"),
        ("STARTED", "left"),
        ("DURATION", "right"),
        ("OK/FAIL", "right"),
        ("TOKENS", "right"),
        ("COST", "right"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for run in runs:
        table.add_row(
            str(run.id),
            run.job,
            run.scope or "-",
            status_text(run.status.value),
            local_time(run.started_at or run.created_at, short=True),
            format_duration(run.duration),
            f"{run.items_processed}/{run.items_failed}",
            f"{run.total_tokens:,}",
            f"${run.total_cost:,.4f}",
        )
    return table

"""Live progress of batch submissions: one bar per part, fed by the API's request counts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from batchctl.cli import render

if TYPE_CHECKING:
    from batchctl.records import Part, Run


class PartsProgress:
    """A Rich progress display with a bar per part; silent when not on a terminal."""

    def __init__(self, *, stderr: bool, enabled: bool) -> None:
        self.tasks: dict[int, Any] = {}
        self.bars: Any = None
        if not enabled:
            return  # nothing shown (--quiet): Rich's progress is not even imported
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = render.rich_console(stderr=stderr)
        self.bars = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[dim]{task.fields[status]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not (enabled and console.is_terminal),
            transient=False,
        )

    def __enter__(self) -> PartsProgress:
        if self.bars is not None:
            self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bars is not None:
            self.bars.stop()

    def update(self, run: Run, parts: list[Part]) -> None:
        if self.bars is not None:
            update_part_bars(self.bars, self.tasks, run, parts)


def update_part_bars(bars: Any, tasks: dict[int, Any], run: Run, parts: list[Part]) -> None:
    """Add or move one progress bar per part (keyed by negative part id beside run ids)."""
    from rich.markup import escape  # a model's name is the input's: not markup

    for part in parts:
        counts = part.request_counts or {}
        done = int(counts.get("completed", 0)) + int(counts.get("failed", 0))
        total = int(counts.get("total") or part.requests)
        key = -part.id
        if key not in tasks:
            label = escape(f"run {run.id} part {part.number} ({part.model})")
            status = part.shown_status
            tasks[key] = bars.add_task(label, total=total, status=status, line=status)
        status = part.shown_status
        bars.update(tasks[key], completed=done, total=total, status=status, line=status)

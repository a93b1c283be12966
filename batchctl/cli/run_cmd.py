"""``batchctl run``, ``retry`` and ``cancel``: run jobs in the foreground, with progress."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from batchctl.cli import render, session
from batchctl.cli.options import JsonOption

if TYPE_CHECKING:
    from batchctl.config import Config, JobConfig
    from batchctl.records import LogEntry, Run, RunOutcome


def run(
    job: Annotated[str | None, typer.Argument(help="The job to run.", show_default=False)] = None,
    scope: Annotated[
        str | None, typer.Option("--scope", "-s", help="Run only this scope.", show_default=False)
    ] = None,
    all_jobs: Annotated[bool, typer.Option("--all", help="Run every enabled job.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Run a job now, in the foreground (every scope, or --scope S); Ctrl-C cancels cleanly.

    Exit codes: 0 completed, 1 failed, 3 partial, 4 skipped (disabled) or locked out, 130 cancelled.
    """
    from batchctl.errors import UsageError

    if (job is None) == (not all_jobs):
        raise UsageError("name one JOB, or pass --all", hint="batchctl run JOB [--scope S] | --all")
    config = session.current.config()
    targets = _targets(config, job, scope)
    _execute(config, json_output, lambda engine: [engine.run(j, s) for j, s in targets])


def retry(
    run_id: Annotated[int, typer.Argument(help="The run to run again.", show_default=False)],
    json_output: JsonOption = False,
) -> None:
    """Run a failed, partial, cancelled or skipped run's job and scope again, as a new run."""
    config = session.current.config()
    _execute(config, json_output, lambda engine: [engine.retry(run_id)])


def cancel(
    run_id: Annotated[int, typer.Argument(help="The run to cancel.", show_default=False)],
    wait: Annotated[
        float, typer.Option("--wait", help="Seconds to wait for the run to stop (0: don't wait).")
    ] = 30.0,
    json_output: JsonOption = False,
) -> None:
    """Cancel a running or queued run: its process stops it (SIGTERM, then SIGKILL after grace)."""
    from batchctl.config import EMPTY
    from batchctl.engine import Engine

    store = session.current.store()
    engine = Engine(store, EMPTY)
    current = engine.cancel(run_id)
    deadline = time.monotonic() + wait
    while not current.status.terminal and time.monotonic() < deadline:
        time.sleep(0.2)
        current = engine.get(run_id)
    if json_output:
        render.print_json(current.to_json())
    elif current.status.terminal:
        render.note(f"run {run_id} {render.styled_status(current.status.value, stderr=True)}")
    else:
        render.note(f"cancel of run {run_id} requested; it is still {current.status.value}")
    if not current.status.terminal and wait > 0:
        raise typer.Exit(1)


def _targets(
    config: Config, job: str | None, scope: str | None
) -> list[tuple[JobConfig, str | None]]:
    from batchctl.errors import UsageError

    if job is not None:
        chosen = config.job(job)
        if scope is not None and scope not in chosen.scopes:
            known = ", ".join(chosen.scopes) or "none"
            raise UsageError(f"job {job!r} has no scope {scope!r}", hint=f"its scopes: {known}")
        return [(chosen, s) for s in ([scope] if scope else chosen.run_scopes())]
    enabled = [j for j in config.jobs.values() if j.enabled]
    if scope is None:
        return [(j, s) for j in enabled for s in j.run_scopes()]
    targets: list[tuple[JobConfig, str | None]] = [(j, scope) for j in enabled if scope in j.scopes]
    if not targets:
        raise UsageError(f"no enabled job has the scope {scope!r}")
    return targets


def _markup(status: str) -> str:
    style = render.STATUS_STYLES.get(status)
    return f"[{style}]{status}[/]" if style else status


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _execute(config: Config, json_output: bool, action: Any) -> None:
    from batchctl.engine import Engine
    from batchctl.errors import exit_code_for

    quiet = session.current.quiet
    out = render.rich_console(stderr=json_output)
    display = RunDisplay(
        out,
        live=out.is_terminal and not quiet,
        verbose=session.current.verbose,
        announce=not quiet and not json_output,
    )
    cancel = threading.Event()
    engine = Engine(session.current.store(), config, observer=display, cancel=cancel)
    with _cancel_on_signals(cancel), display:
        runs: list[Run] = action(engine)
    if json_output:
        render.print_json([r.to_json() for r in runs])
    elif not quiet:
        _summary(runs)
    code = exit_code_for(r.status.value for r in runs)
    if code:
        raise typer.Exit(int(code))


def _summary(runs: list[Run]) -> None:
    render.print_runs(runs)
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    parts = ", ".join(f"{n} {render.styled_status(s)}" for s, n in counts.items())
    tokens = sum(r.total_tokens for r in runs)
    cost = sum(r.total_cost for r in runs)
    render.out(f"{len(runs)} run(s): {parts}; {tokens:,} tokens, {render.money(cost)}")
    for r in runs:
        if r.reason and r.status.value == "skipped":
            render.out(f"  run {r.id}: {r.reason}")
        elif r.error and r.status.value != "completed":
            hint = render.paint(f"(batchctl logs {r.id})", "dim", render.colour())
            render.out(f"  run {r.id}: {r.error}  {hint}")


@contextmanager
def _cancel_on_signals(cancel: threading.Event) -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP (a closed terminal) ask the engine to cancel the run cleanly
    instead of dying mid-write."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        cancel.set()

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


class RunDisplay:
    """Shows runs as they go: a progress bar per run (a spinner when the total is unknown)."""

    def __init__(self, console: Any, *, live: bool, verbose: bool, announce: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = console
        self.verbose = verbose
        self.announce = announce
        self.bars = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("[dim]{task.fields[line]}"),
            console=console,
            disable=not live,
            transient=True,
        )
        self.tasks: dict[int, Any] = {}

    def __enter__(self) -> RunDisplay:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def run_started(self, run_id: int, job: JobConfig, scope: str | None) -> None:
        label = f"{job.name}[{scope}]" if scope else job.name
        self.tasks[run_id] = self.bars.add_task(f"run {run_id} {label}", total=None, line="")

    def progress(self, run_id: int, done: int, total: int | None) -> None:
        if run_id in self.tasks:
            self.bars.update(self.tasks[run_id], completed=done, total=total)

    def log(self, entry: LogEntry) -> None:
        if self.verbose:
            self.bars.console.print(
                f"[dim]{entry.stream}[/] {escape(entry.message)}", soft_wrap=True
            )
        elif entry.run_id in self.tasks:
            self.bars.update(self.tasks[entry.run_id], line=entry.message[-60:])

    def retrying(self, run_id: int, attempt: int, outcome: RunOutcome, delay: float) -> None:
        from batchctl.durations import format_duration

        if self.announce:
            self.bars.console.print(
                f"run {run_id}: attempt {attempt} {_markup(outcome.status.value)}"
                f" ({escape(outcome.error or '')}); retrying in {format_duration(delay)}",
                soft_wrap=True,
            )

    def run_finished(self, run: Run) -> None:
        from batchctl.durations import format_duration

        if run.id in self.tasks:
            self.bars.remove_task(self.tasks.pop(run.id))
        if self.announce:
            mark = render.STATUS_MARKS.get(run.status.value, "•")
            label = f"{run.job}[{run.scope}]" if run.scope else run.job
            self.console.print(
                f"{mark} run {run.id} {escape(label)} {_markup(run.status.value)}"
                f" in {format_duration(run.duration)}"
            )

"""``batchctl run``, ``retry`` and ``cancel``: run jobs in the foreground, with progress."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from batchctl.cli import render, session
from batchctl.cli.complete import job_names, run_ids
from batchctl.cli.options import JsonOption
from batchctl.cli.signals import stop_on_signals

if TYPE_CHECKING:
    from batchctl.batches.submission import Batches
    from batchctl.config import Config, JobConfig
    from batchctl.records import LogEntry, Part, Run, RunOutcome
    from batchctl.runs import Runs


def run(
    job: Annotated[
        str | None,
        typer.Argument(autocompletion=job_names, help="The job to run.", show_default=False),
    ] = None,
    scope: Annotated[
        str | None, typer.Option("--scope", "-s", help="Run only this scope.", show_default=False)
    ] = None,
    all_jobs: Annotated[bool, typer.Option("--all", help="Run every enabled job.")] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="openai jobs: wait for the results, then merge them.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Run a job now, in the foreground (every scope, or --scope S); Ctrl-C cancels cleanly.

    The jobs chained after it (after = [JOB]) run next; their runs are listed and counted too.

    Exit codes (the worst run's): 0 completed, 1 failed, 3 partial, 4 skipped (disabled) or
    locked out, 130 cancelled.
    """
    from batchctl.errors import UsageError

    if (job is None) == (not all_jobs):
        raise UsageError("name one JOB, or pass --all", hint="batchctl run JOB [--scope S] | --all")
    config = session.current.config()
    targets = _targets(config, job, scope)
    _exit_for(run_targets(config, targets, wait=wait, json_output=json_output))


def run_targets(
    config: Config, targets: list[tuple[JobConfig, str | None]], *, wait: bool, json_output: bool
) -> list[Run]:
    """Run (or submit) each (job, scope) with progress; print the summary; return the runs.
    Every run is started before any is waited for, so the batch submissions of several jobs
    (to one provider or several) go on side by side."""

    def run_all(runs: Runs, display: RunDisplay) -> list[Run]:
        # With the runs their ``after`` chains started: shown, and counted in the exit code.
        started = [run for job, scope in targets for run in runs.start_chain(job, scope)]
        return [_finish(runs, display, run, wait) for run in started]

    return _execute(config, json_output, run_all)


def _finish(runs: Runs, display: RunDisplay, run: Run, wait: bool) -> Run:
    """A run just started; one still in flight at a provider (a batch submission) is, with
    --wait, waited for with a progress bar per part."""
    if run.status.terminal:
        return run
    if wait:
        runs.batches().wait(run.id, on_progress=display.parts, stop=runs.cancel_event)
        run = runs.get(run.id)
    display.run_finished(run)
    return run


def retry(
    run_id: Annotated[
        int,
        typer.Argument(autocompletion=run_ids, help="The run to run again.", show_default=False),
    ],
    failed: Annotated[
        bool, typer.Option("--failed", help="Batches: re-send failed requests.")
    ] = False,
    expired: Annotated[
        bool, typer.Option("--expired", help="Batches: re-send expired requests.")
    ] = False,
    missing: Annotated[
        bool, typer.Option("--missing", help="Batches: re-send requests without a result.")
    ] = False,
    include_invalid: Annotated[
        bool,
        typer.Option(
            "--include-invalid",
            help="Batches: re-send invalid failures too (bad request, auth, billing, not found).",
        ),
    ] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Batches: wait for the results.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Run a failed, partial, cancelled or skipped run again, as a new run.

    For a batch submission, re-send the requests that did not succeed (all of them, or only
    --failed/--expired/--missing) as new parts of the same submission, so that ``results``
    gives one line per original request. Failures that would fail again unchanged (an invalid
    request, auth, permission, billing, not found) are left alone unless --include-invalid;
    with nothing else to re-send, retry exits 2. A local run is run again whole, in the
    foreground (--failed, --expired, --missing and --include-invalid are refused for it).
    """
    store = session.current.store(create=False)  # of a run that exists: none created
    if store.get_submission(run_id) is not None:
        _retry_batch(run_id, failed, expired, missing, include_invalid, wait, json_output)
        return
    chosen = [
        flag
        for flag, on in (
            ("--failed", failed),
            ("--expired", expired),
            ("--missing", missing),
            ("--include-invalid", include_invalid),
        )
        if on
    ]
    if store.get_run(run_id) is None:  # before the config: a run's job needs one, none does
        from batchctl.errors import NotFoundError

        raise NotFoundError(f"no run with id {run_id}", hint="list runs with: batchctl status")
    if chosen:
        from batchctl.errors import UsageError

        raise UsageError(
            f"{', '.join(chosen)}: run {run_id} is a local run, not a batch submission "
            "(these choose which of a submission's requests to re-send)",
            hint=f"retry the whole run: batchctl retry {run_id}",
        )
    config = session.current.config()
    _exit_for(_execute(config, json_output, lambda runs, _display: [runs.retry(run_id).run]))


def _retry_batch(
    run_id: int,
    failed: bool,
    expired: bool,
    missing: bool,
    include_invalid: bool,
    wait: bool,
    json_output: bool,
) -> None:
    from batchctl.cli import batch_cmd

    flags = (("failed", failed), ("expired", expired), ("missing", missing))
    chosen = [name for name, on in flags if on]
    batches = batch_cmd.open_batches()
    runs = _batch_runs(batches)
    count = runs.retry(run_id, chosen, include_invalid=include_invalid).resent
    # The failed requests still failed after the retry: those it left alone.
    chose_failed = not chosen or "failed" in chosen
    left = batches.failures(run_id).invalid if chose_failed and not include_invalid else 0
    if left and not json_output:
        render.note(
            f"run {run_id}: {left:,} invalid failure(s) left alone"
            " (--include-invalid re-sends them too)"
        )
    if wait:
        batch_cmd.finish(batches, run_id, json_output=json_output)
        return
    if json_output:
        render.print_json(batch_cmd.run_json(batches, run_id))
        return
    render.out(
        f"run {run_id}: re-sending {count:,} request(s); follow with: batchctl wait {run_id}"
    )


def cancel(
    run_id: Annotated[
        int, typer.Argument(autocompletion=run_ids, help="The run to cancel.", show_default=False)
    ],
    wait: Annotated[
        bool | None,
        typer.Option(
            "--wait/--no-wait",
            help="Wait until the run has stopped (default: yes for local runs, no for batch "
            "submissions).",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait at most.")] = 30.0,
    json_output: JsonOption = False,
) -> None:
    """Cancel a run: a local run's process stops it (SIGTERM, then SIGKILL after grace); a batch
    submission's unfinished batches are cancelled (their finished results are kept)."""
    store = session.current.store(create=False)  # of a run that exists: none created
    if store.get_submission(run_id) is not None:
        _cancel_batch(run_id, bool(wait), timeout, json_output)
        return
    from batchctl.config import EMPTY
    from batchctl.runs import Runs

    runs = Runs(store, EMPTY)  # a local run is cancelled through the store: no config needed
    current = runs.cancel(run_id)
    deadline = time.monotonic() + (timeout if wait is not False else 0)
    while not current.status.terminal and time.monotonic() < deadline:
        time.sleep(0.2)
        current = runs.get(run_id)
    if json_output:
        render.print_json(current.to_json())
    elif current.status.terminal:
        render.note(f"run {run_id} {render.styled_status(current.status.value, stderr=True)}")
    else:
        render.note(f"cancel of run {run_id} requested; it is still {current.status.value}")
    if not current.status.terminal and wait is not False:
        raise typer.Exit(1)


def _cancel_batch(run_id: int, wait: bool, timeout: float, json_output: bool) -> None:
    from batchctl.cli import batch_cmd

    batches = batch_cmd.open_batches()
    _batch_runs(batches).cancel(run_id)
    parts = batches.store.parts(run_id)
    if wait:
        batches.wait(run_id, timeout=timeout)
        parts = batches.store.parts(run_id)
    if json_output:
        render.print_json(batch_cmd.run_json(batches, run_id))
        return
    for part in parts:
        status = render.styled_status(part.status, stderr=True)
        render.note(f"run {run_id} part {part.number}: {part.batch_id or '-'} {status}")


def _batch_runs(batches: Batches) -> Runs:
    """The lifecycle over the batches this invocation opened (its config may be absent)."""
    from batchctl.runs import Runs

    return Runs(batches.store, batches.config, batches=lambda: batches)


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


def _execute(config: Config, json_output: bool, action: Any) -> list[Run]:
    from batchctl.runs import Runs

    quiet = session.current.quiet
    out = render.rich_console(stderr=json_output)
    display = RunDisplay(
        out,
        live=out.is_terminal and not quiet,
        verbose=session.current.verbose,
        announce=not quiet and not json_output,
    )
    cancel = threading.Event()
    lifecycle = Runs(session.current.store(), config, observer=display, cancel=cancel)
    # Ctrl-C, SIGTERM and SIGHUP ask the engine to cancel a local run cleanly; a batch
    # submission being waited for is left to go on remotely (WaitInterrupted).
    with stop_on_signals(cancel), display:
        runs: list[Run] = action(lifecycle, display)
    if json_output:
        render.print_json([r.to_json() for r in runs])
    elif not quiet:
        _summary(runs)
    return runs


def _exit_for(runs: list[Run]) -> None:
    from batchctl.errors import exit_code_for

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
    unpriced = sorted({m for r in runs for m in r.unpriced_models})
    spent = (
        f"; {tokens:,} tokens, {render.cost(cost, unpriced)}" if tokens or cost or unpriced else ""
    )
    render.out(f"{len(runs)} run(s): {parts}{spent}")  # no cost where no token was counted
    in_flight = [r.id for r in runs if not r.status.terminal]
    if in_flight:
        from batchctl.batches.submission import follow_up

        store = session.current.store()
        for run_id in in_flight:
            if store.get_submission(run_id) is not None:
                render.out(f"  run {run_id}: its batches go on remotely; {follow_up(run_id)}")
    for r in runs:
        if r.reason and r.status.value == "skipped":
            render.out(f"  run {r.id}: {r.reason}")
        elif r.error and r.status.value != "completed":
            hint = render.paint(f"(batchctl logs {r.id})", "dim", render.colour())
            render.out(f"  run {r.id}: {r.error}  {hint}")


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
        self.tasks[run_id] = self.bars.add_task(
            f"run {run_id} {escape(label)}", total=None, line=""
        )

    def progress(self, run_id: int, done: int, total: int | None) -> None:
        if run_id in self.tasks:
            self.bars.update(self.tasks[run_id], completed=done, total=total)

    def log(self, entry: LogEntry) -> None:
        if self.verbose:
            self.bars.console.print(
                f"[dim]{entry.stream}[/] {escape(entry.message)}", soft_wrap=True
            )
        elif entry.run_id in self.tasks:
            self.bars.update(self.tasks[entry.run_id], line=escape(entry.message[-60:]))

    def retrying(self, run_id: int, attempt: int, outcome: RunOutcome, delay: float) -> None:
        from batchctl.durations import format_duration

        if self.announce:
            self.bars.console.print(
                f"run {run_id}: attempt {attempt} {_markup(outcome.status.value)}"
                f" ({escape(outcome.error or '')}); retrying in {format_duration(delay)}",
                soft_wrap=True,
            )

    def parts(self, run: Run, parts: list[Part]) -> None:
        """A batch submission's parts, one bar each, fed by the API's request counts."""
        from batchctl.cli.batch_display import update_part_bars

        update_part_bars(self.bars, self.tasks, run, parts)

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

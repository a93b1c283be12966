"""``batchctl status``: the run history as a table, or one run in detail."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from batchctl.cli import render, session
from batchctl.cli.options import JsonOption

if TYPE_CHECKING:
    from batchctl.history import RunDetail
    from batchctl.records import RunFilter

TABLE_LIMIT = 20


def status(
    run_id: Annotated[
        int | None, typer.Argument(help="Show this run in detail.", show_default=False)
    ] = None,
    job: Annotated[str | None, typer.Option("--job", "-j", help="Only runs of this job.")] = None,
    statuses: Annotated[
        list[str] | None,
        typer.Option(
            "--status", help="Only runs with this status (repeatable).", show_default=False
        ),
    ] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Only failed runs.")] = False,
    since: Annotated[
        str | None, typer.Option("--since", help='Only runs created within this long, e.g. "2d".')
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            "-n",
            help=f"At most N runs (table default {TABLE_LIMIT}; --json default all).",
            show_default=False,
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """List runs, newest first; with RUN_ID, one run's attempts, errors and transitions."""
    store = session.current.store()
    if run_id is not None:
        from batchctl.history import load_detail

        detail = load_detail(store, run_id)
        if json_output:
            render.print_json(detail.to_json())
        else:
            _print_detail(detail)
        return
    query = _filter(job, statuses, failed, since, limit, json_output)
    runs = store.list_runs(query)
    if json_output:
        render.print_json([r.to_json() for r in runs])
        return
    if not runs:
        render.out(
            "no runs yet"
            if query == _filter(None, None, False, None, limit, False)
            else "no runs match"
        )
        return
    render.print_runs(runs)
    total = store.count_runs(query)
    if total > len(runs):
        render.out(
            render.paint(
                f"showing {len(runs)} of {total} runs; more with --limit N", "dim", render.colour()
            )
        )


def _filter(
    job: str | None,
    statuses: list[str] | None,
    failed: bool,
    since: str | None,
    limit: int | None,
    json_output: bool,
) -> RunFilter:
    from datetime import timedelta

    from batchctl.durations import parse_duration
    from batchctl.errors import UsageError
    from batchctl.records import RunStatus, utcnow

    wanted = list(statuses or []) + (["failed"] if failed else [])
    known = {s.value for s in RunStatus}
    unknown = [s for s in wanted if s not in known]
    if unknown:
        raise UsageError(
            f"unknown status {unknown[0]!r}", hint=f"one of: {', '.join(sorted(known))}"
        )
    since_at = None
    if since is not None:
        try:
            since_at = utcnow() - timedelta(seconds=parse_duration(since))
        except ValueError as exc:
            raise UsageError(f"--since: {exc}") from None
    if limit is not None and limit < 1:
        raise UsageError("--limit must be 1 or more")
    if limit is None and not json_output:
        limit = TABLE_LIMIT
    from batchctl.records import RunFilter

    return RunFilter(job=job, status=tuple(wanted), since=since_at, limit=limit)


def _print_detail(detail: RunDetail) -> None:
    from batchctl.cli.table import Column
    from batchctl.durations import format_duration

    run = detail.run
    tint = render.colour()
    label = f"{run.job}[{run.scope}]" if run.scope else run.job
    render.out(
        f"{render.paint(f'run {run.id}', 'bold', tint)} {label}  "
        f"{render.styled_status(run.status.value)}"
    )
    rows = [
        ("trigger", run.trigger + (f" (retry of run {run.retry_of})" if run.retry_of else "")),
        ("attempts", f"{run.attempts} of {run.max_attempts}"),
        ("created", render.local_time(run.created_at)),
        ("started", render.local_time(run.started_at)),
        ("finished", render.local_time(run.finished_at)),
        ("duration", format_duration(run.duration)),
        ("items", f"{run.items_processed} ok, {run.items_failed} failed"),
        ("tokens", f"{run.total_tokens:,}"),
        ("cost", render.money(run.total_cost)),
    ]
    if run.scheduled_for is not None:
        rows.append(("scheduled for", render.local_time(run.scheduled_for)))
    if run.progress_done is not None:
        total = "?" if run.progress_total is None else str(run.progress_total)
        rows.append(("progress", f"{run.progress_done}/{total}"))
    if run.owner is not None and not run.status.terminal:
        rows.append(("owner", f"host {run.owner.host}, pid {run.owner.pid}"))
    if run.reason:
        rows.append(("reason", run.reason))
    if run.error:
        rows.append(("error", run.error))
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        render.out(f"  {render.paint(key.ljust(width), 'dim', tint)}  {value}")
    if detail.attempts:
        render.out()
        render.print_table(
            [
                Column("#", right=True),
                Column("STATUS"),
                Column("STARTED"),
                Column("FINISHED"),
                Column("EXIT", right=True),
                Column("ERROR"),
            ],
            [
                [
                    str(a.number),
                    render.status_cell(a.status.value),
                    render.local_time(a.started_at),
                    render.local_time(a.finished_at),
                    "-" if a.exit_code is None else str(a.exit_code),
                    a.error or "",
                ]
                for a in detail.attempts
            ],
            title="attempts",
        )
    reported = [e for e in detail.errors if e.source == "result"]
    if reported:
        render.out()
        render.out(render.paint("errors reported by the processor", "bold", tint))
        for e in reported:
            render.out(f"  attempt {e.attempt}: {e.message}")
    render.out()
    render.print_table(
        [Column("AT"), Column("FROM"), Column("TO"), Column("REASON")],
        [
            [
                render.local_time(t.at),
                t.from_status.value if t.from_status else "-",
                render.status_cell(t.to_status.value),
                t.reason or "",
            ]
            for t in detail.transitions
        ],
        title="transitions",
    )

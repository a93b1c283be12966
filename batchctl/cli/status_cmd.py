"""``batchctl status``: the run history as a table, or one run in detail."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from batchctl.cli import render, session
from batchctl.cli.complete import job_names, run_ids, run_statuses
from batchctl.cli.options import JsonOption, ProviderOption

if TYPE_CHECKING:
    from collections.abc import Iterator

    from batchctl.batches.failures import FailureSplit
    from batchctl.history import RunDetail
    from batchctl.records import Part, RunFilter
    from batchctl.store import Store

TABLE_LIMIT = 20
CHUNK = 1000  # runs per round of --json output


def status(
    run_id: Annotated[
        int | None,
        typer.Argument(autocompletion=run_ids, help="Show this run in detail.", show_default=False),
    ] = None,
    job: Annotated[
        str | None,
        typer.Option("--job", "-j", autocompletion=job_names, help="Only runs of this job."),
    ] = None,
    statuses: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            autocompletion=run_statuses,
            help="Only runs with this status (repeatable).",
            show_default=False,
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
    refresh: Annotated[
        bool,
        typer.Option(
            "--refresh/--no-refresh", help="Refresh in-flight batch submissions from the API first."
        ),
    ] = True,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Redraw until no shown submission is in flight.")
    ] = False,
    remote: Annotated[
        bool, typer.Option("--remote", help="List the account's batches as the API has them.")
    ] = False,
    provider: ProviderOption = None,
    json_output: JsonOption = False,
) -> None:
    """List runs, newest first; with RUN_ID, one run's attempts, errors and transitions.

    Batch submissions show their parts (one remote batch each); in-flight ones are refreshed
    from the API first unless --no-refresh.
    """
    if remote:
        from batchctl.cli.remote_cmd import list_remote

        list_remote(limit or (None if json_output else TABLE_LIMIT), json_output, provider)
        return
    store = _store()
    query = _filter(job, statuses, failed, since, limit, json_output)
    backoff = None
    while True:
        in_flight = _shown_in_flight(query if run_id is None else None, run_id)
        if refresh and in_flight:
            _refresh(in_flight)
        if run_id is not None:
            _show_one(run_id, json_output)
        else:
            _show_list(query, json_output)
        still = [i for i in store.submissions_in_flight() if i in in_flight]
        if not watch or not still:
            return
        import time

        from batchctl.batches.polling import Backoff, parts_state

        if backoff is None:
            config = session.current.config(required=False, check_host=False)
            backoff = Backoff(config.openai.poll_interval)  # the default provider's
        watched = store.parts_for_runs(still)
        time.sleep(backoff.pause(parts_state(p for i in still for p in watched.get(i, []))))
        if render.colour():
            render.out("\x1b[H\x1b[2J")


def _store() -> Store:
    """The store as ``status`` reads it: never created (``Session.store``)."""
    return session.current.store(create=False)


def _shown_in_flight(query: RunFilter | None, run_id: int | None) -> list[int]:
    """The submissions in flight among the runs shown: run ``run_id``, or those ``query``
    lists — found by walking the list from the newest run down to the oldest submission in
    flight, not by loading the whole history."""
    pending = set(_store().submissions_in_flight())
    if query is None:
        return [run_id] if run_id in pending else []
    if not pending:
        return []
    oldest = min(pending)
    shown: list[int] = []
    for run in _store().iter_runs(query):
        if run.id < oldest:
            break
        if run.id in pending:
            shown.append(run.id)
    return shown


def _refresh(run_ids: list[int]) -> None:
    from batchctl.batches.refresh import refresh
    from batchctl.providers import Providers

    config = session.current.config(required=False, check_host=False)
    store = _store()

    def warn(run_id: int, exc: BaseException) -> None:
        render.note(f"warning: could not refresh run {run_id}: {exc}")

    def unreachable(name: str, exc: BaseException) -> None:
        message = getattr(exc, "message", str(exc))
        render.note(f"warning: not refreshing the {name} submissions: {message}")

    providers = Providers(config.provider)
    try:
        # Looking never spends: only parts that already have a batch are refreshed.
        refresh(
            store.location,
            config,
            run_ids,
            providers=providers.get,
            send=False,
            on_error=warn,
            on_provider_error=unreachable,
        )
    finally:
        providers.close()


def _show_one(run_id: int, json_output: bool) -> None:
    from batchctl.batches.failures import split
    from batchctl.history import load_detail

    store = _store()
    detail = load_detail(store, run_id)
    parts = store.parts(run_id)
    submission = store.get_submission(run_id)
    batch = None  # a submission's request counts and its failures split
    if submission is not None:
        totals = store.request_totals(run_id)
        batch = totals.counts, split(totals.failures)
    if json_output:
        data = detail.to_json()
        if submission is not None and batch is not None:
            data.update(_batch_fields(submission.provider, parts, *batch))
        render.print_json(data)
        return
    _print_detail(detail, None if batch is None else render.request_counts(*batch))
    if parts:
        render.out()
        _print_parts({run_id: parts})


def _show_list(query: RunFilter, json_output: bool) -> None:
    store = _store()
    if json_output:
        render.print_json_array(_listed(query))
        return
    runs = store.list_runs(query)
    parts = store.parts_for_runs([r.id for r in runs])
    if not runs:
        filtered = query.job or query.status or query.since
        render.out("no runs match" if filtered else "no runs yet")
        return
    render.print_runs(runs)
    if parts:
        render.out()
        _print_parts(parts)
    total = store.count_runs(query)
    if total > len(runs):
        render.out(
            render.paint(
                f"showing {len(runs)} of {total} runs; more with --limit N", "dim", render.colour()
            )
        )


def _listed(query: RunFilter) -> Iterator[dict[str, Any]]:
    """The ``--json`` objects of the runs ``query`` lists, a chunk of runs at a time: the
    chunk's parts and request counts in two queries, not two per run."""
    from itertools import islice

    from batchctl.batches.failures import split

    store = _store()
    runs = store.iter_runs(query)
    while chunk := list(islice(runs, CHUNK)):
        parts = store.parts_for_runs([r.id for r in chunk])
        summaries = store.request_summaries(list(parts))
        failures = store.failure_codes(list(parts))
        providers = store.providers_of(list(parts))
        for run in chunk:
            data = run.to_json()
            if run.id in parts:
                split_failures = split(failures[run.id])
                data.update(
                    _batch_fields(
                        providers[run.id], parts[run.id], summaries[run.id], split_failures
                    )
                )
            yield data


def _batch_fields(
    provider: str, parts: list[Part], summary: dict[str, int], failures: FailureSplit
) -> dict[str, Any]:
    return {
        "provider": provider,
        "parts": [p.to_json() for p in parts],
        "requests": {k: v for k, v in summary.items() if not k.endswith("_tokens")},
        "failures": failures.to_json(),
    }


def _print_parts(parts: dict[int, list[Part]]) -> None:
    import time

    from batchctl.cli.table import Cell, Column
    from batchctl.durations import format_duration
    from batchctl.records import TERMINAL_PART_STATUSES

    now = time.time()
    providers = _store().providers_of(list(parts))
    rows: list[list[Cell]] = []
    for run_id, run_parts in parts.items():
        for p in run_parts:
            counts = p.request_counts or {}
            done = int(counts.get("completed", 0)) + int(counts.get("failed", 0))
            age = format_duration(now - p.remote_created_at) if p.remote_created_at else "-"
            left = "-"
            if p.expires_at and p.status not in TERMINAL_PART_STATUSES:
                left = format_duration(max(0.0, p.expires_at - now))
            rows.append(
                [
                    str(run_id),
                    str(p.number),
                    providers.get(run_id, "-"),
                    p.model,
                    p.batch_id or "-",
                    render.status_cell(p.shown_status),
                    f"{done:,}/{p.requests:,}",
                    f"{int(counts.get('failed', 0)):,}",
                    age,
                    left,
                ]
            )
    render.print_table(
        [
            Column("RUN", right=True),
            Column("PART", right=True),
            Column("PROVIDER"),
            Column("MODEL"),
            Column("BATCH"),
            Column("STATUS"),
            Column("DONE", right=True),
            Column("FAILED", right=True),
            Column("AGE", right=True),
            Column("LEFT", right=True),
        ],
        rows,
        title="batch parts",
    )
    for run_id, run_parts in parts.items():
        for p in run_parts:
            if p.waiting_for_quota:
                render.out(_waiting_line(run_id, p))


def _waiting_line(run_id: int, part: Part) -> str:
    """Why a part is held, since when, and when it is tried next."""
    return (
        f"run {run_id} part {part.number}: waiting for quota since"
        f" {render.local_time(part.held_since, short=True)}, next try"
        f" {render.local_time(part.held_until, short=True)} or when a batch of {part.model}"
        f" ends (refusal {part.hold_tries}): {part.hold_reason}"
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


def _print_detail(detail: RunDetail, requests: str | None = None) -> None:
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
        *([("requests", requests)] if requests is not None else []),
        ("tokens", f"{run.total_tokens:,}"),
        ("cost", render.run_cost(run)),
    ]
    if run.unpriced_models:
        rows.append(("no price for", ", ".join(run.unpriced_models)))
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

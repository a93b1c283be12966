"""``batchctl health``, ``batchctl metrics`` and ``batchctl prune``: monitoring and retention."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from batchctl.cli import render, session
from batchctl.cli.options import JsonOption

if TYPE_CHECKING:
    from batchctl.health import DaemonState, HealthReport
    from batchctl.prune import PruneReport


def health(json_output: JsonOption = False) -> None:
    """Is the daemon alive and is every scheduled job on time? Exit 0 if so, 1 if not.

    Checks the daemon's heartbeat against [daemon] lease (alive within 2 x lease) and the
    daemon lock, and finds overdue jobs: a tick that did not come, a run past its timeout.
    Without scheduled jobs no daemon is needed. For monitoring checks and `/healthz`.
    """
    from batchctl.errors import ExitCode
    from batchctl.health import check
    from batchctl.records import utcnow

    config = session.current.config(required=False, check_host=False)
    report = check(session.current.store(create=False), config, utcnow())
    if json_output:
        render.print_json(report.to_json())
    else:
        _print_health(report)
    if not report.healthy:
        raise typer.Exit(int(ExitCode.FAILED))


def metrics(
    textfile: Annotated[
        Path | None,
        typer.Option(
            "--textfile",
            help="Write the metrics to this file atomically (node_exporter's textfile "
            "collector) instead of printing them.",
            show_default=False,
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Print the metrics in the Prometheus text format (version 0.0.4).

    Runs by job and status, last success, durations, tokens and cost, submissions and parts in
    flight, pending, missed and skipped ticks, the daemon's heartbeat, paused jobs. The job is
    the label batchctl_job (Prometheus sets job and instance itself).
    """
    from batchctl import metrics as prom
    from batchctl.records import utcnow

    config = session.current.config(required=False, check_host=False)
    store = session.current.store(create=False)
    now = utcnow()
    if textfile is not None:
        prom.write_textfile(store, config, textfile, now)
        if json_output:
            render.print_json({"textfile": str(textfile)})
        else:
            render.note(f"wrote {textfile}")
        return
    if json_output:
        render.print_json(prom.samples(store, config, now))
        return
    import sys

    sys.stdout.write(prom.render(store, config, now))


def prune(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            help='Delete runs that ended more than this long ago, e.g. "30d" ("0s": all).',
            show_default=False,
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")
    ] = False,
    vacuum: Annotated[
        bool,
        typer.Option(
            "--vacuum", help="Also VACUUM: shrink the database file (slow on a large file)."
        ),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Delete ended runs older than --older-than, with their logs and batch files, and old ticks.

    Runs still in flight and submissions whose results are not merged are kept, as are pending
    ticks and the schedule cursors (so no old tick fires again).
    """
    from batchctl.durations import parse_duration
    from batchctl.errors import UsageError
    from batchctl.prune import prune as run_prune
    from batchctl.records import utcnow

    try:
        seconds = parse_duration(older_than)
    except ValueError as exc:
        raise UsageError(f"--older-than: {exc}") from None
    report = run_prune(
        session.current.store(create=False),
        seconds,
        utcnow(),
        dry_run=dry_run,
        vacuum=vacuum and not dry_run,
    )
    if json_output:
        render.print_json(report.to_json())
        return
    _print_prune(report)


# --- human output ---------------------------------------------------------------------------------


def _print_health(report: HealthReport) -> None:
    from batchctl.durations import format_duration

    tint = render.colour()
    verdict = (
        render.paint("healthy", "green", tint)
        if report.healthy
        else render.paint("unhealthy", "bold red", tint)
    )
    rows: list[tuple[str, str]] = [("health", verdict)]
    if report.daemon is not None:
        d = report.daemon
        rows.append(
            (
                "daemon",
                f"{d.state}: {d.info.instance[:8]} on host {d.info.host}, pid {d.info.pid}, "
                f"heartbeat {format_duration(d.heartbeat_age)} ago (lease "
                f"{format_duration(report.lease)}), "
                + ("holds the lock" if d.holds_lock else "does not hold the lock"),
            )
        )
    else:
        rows.append(("daemon", "none"))
    if report.scheduler == "once":
        rows.append(("scheduler", "daemon --once rounds (cron or systemd timer)"))
    rows.append(("last pass", render.local_time(report.last_pass_at)))
    runs = len(report.in_flight_runs)
    subs = len(report.in_flight_submissions)
    rows.append(("in flight", f"{runs} run(s), {subs} submission(s)"))
    rows.append(("pending ticks", str(report.pending_ticks)))
    rows.append(("scheduled jobs", ", ".join(report.scheduled_jobs) or "none"))
    if report.paused_jobs:
        rows.append(("paused jobs", ", ".join(report.paused_jobs)))
    rows.append(("overdue", str(len(report.overdue)) if report.overdue else "none"))
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        render.out(f"{render.paint(key.ljust(width), 'dim', tint)}  {value}")
    for problem in report.problems:
        render.out(f"{render.paint('problem:', 'red', tint)} {problem}")
    for warning in report.warnings:
        render.out(f"{render.paint('warning:', 'yellow', tint)} {warning}")
    if len(report.daemons) > 1 or (report.daemons and report.daemon is None):
        render.out()
        _print_daemons(report.daemons)


def _print_daemons(daemons: list[DaemonState]) -> None:
    from batchctl.cli.table import Column
    from batchctl.durations import format_duration

    render.print_table(
        [
            Column("INSTANCE"),
            Column("MODE"),
            Column("STATE"),
            Column("HOST"),
            Column("PID", right=True),
            Column("STARTED"),
            Column("HEARTBEAT", right=True),
            Column("LOCK"),
        ],
        [
            [
                d.info.instance[:8],
                d.info.mode,
                d.state,
                d.info.host,
                str(d.info.pid),
                render.local_time(d.info.started_at, short=True),
                format_duration(d.heartbeat_age) + " ago",
                "yes" if d.holds_lock else "-",
            ]
            for d in daemons
        ],
        title="daemons seen in the last day",
    )


def _print_prune(report: PruneReport) -> None:
    from batchctl.durations import format_duration

    tint = render.colour()
    verb = "would delete" if report.dry_run else "deleted"
    render.out(
        f"{verb} what ended before {render.local_time(report.cutoff)} "
        f"({format_duration(report.older_than)} ago):"
    )
    rows = [
        ("runs", f"{report.runs:,}"),
        ("log lines", f"{report.log_lines:,}"),
        (
            "submissions",
            f"{report.submissions:,} ({report.files:,} files, {_size(report.file_bytes)})",
        ),
        ("ticks", f"{report.ticks:,}"),
        ("daemon records", f"{report.daemons:,}"),
    ]
    if not report.dry_run:
        shrink = report.database_bytes_before - report.database_bytes_after
        rows.append(
            (
                "freed",
                f"{_size(report.bytes_freed)} (files {_size(report.file_bytes)}, "
                f"database {_size(max(0, shrink))})",
            )
        )
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        render.out(f"  {render.paint(key.ljust(width), 'dim', tint)}  {value}")
    if report.kept_in_flight:
        render.out(f"kept {report.kept_in_flight} run(s) still in flight")
    if report.kept_unmerged:
        render.out(
            f"kept {report.kept_unmerged} ended submission(s) whose results are not merged "
            "(`batchctl results RUN_ID` merges them)"
        )
    if report.orphaned_directories:
        render.out(
            f"{verb} {report.orphaned_directories} submission directory(ies) no run refers to"
        )
    for path in report.skipped_directories:
        render.out(f"kept {path}: not under the database's files directory")
    if not report.dry_run and not report.vacuum and report.runs:
        render.note(
            "the database file keeps its size (SQLite reuses the space); --vacuum shrinks it"
        )


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"

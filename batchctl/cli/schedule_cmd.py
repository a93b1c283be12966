"""``batchctl schedule list | pause | resume`` (and ``install | uninstall``, in install_cmd)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from batchctl.cli import render, session
from batchctl.cli.complete import job_names
from batchctl.cli.install_cmd import app
from batchctl.cli.options import JsonOption

MAX_COUNT = 1000


@app.command("list")
def schedule_list(
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            help="Compute from this instant (ISO 8601; UTC if no offset) instead of now.",
            show_default=False,
        ),
    ] = None,
    count: Annotated[int, typer.Option("--count", "-n", help="Fire times per job.")] = 3,
    json_output: JsonOption = False,
) -> None:
    """Each scheduled job's next fire times (in its zone and UTC), its last fire and outcome."""
    from batchctl.schedule import Schedule, describe

    if not 1 <= count <= MAX_COUNT:  # each fire time is computed: a huge count never ends
        from batchctl.errors import UsageError

        raise UsageError(f"--count: must be from 1 to {MAX_COUNT:,}, got {count}")
    now = _instant(at) if at else datetime.now(UTC)
    config = session.current.config(check_host=False)
    store = session.current.store(create=False)
    paused = store.paused()
    last = store.last_tick_per_job()
    rows: list[dict[str, Any]] = []
    for job in config.jobs.values():
        if not job.schedule:
            continue
        schedule = Schedule.of(job.schedule, job.timezone)
        upcoming = schedule.upcoming(now, count) if job.enabled else []
        tick = last.get(job.name)
        run = store.get_run(tick.run_id) if tick and tick.run_id else None
        rows.append(
            {
                "job": job.name,
                "schedule": job.schedule,
                "timezone": job.timezone or "local",
                "description": describe(job.schedule),
                "enabled": job.enabled,
                "paused": job.name in paused,
                "catchup": job.catchup,
                "next": [t.isoformat(timespec="seconds") for t in upcoming],
                "next_utc": [t.astimezone(UTC).isoformat(timespec="seconds") for t in upcoming],
                "last": None
                if tick is None
                else {
                    **tick.to_json(),
                    "run_status": None if run is None else run.status.value,
                },
            }
        )
    if json_output:
        render.print_json(rows)
        return
    _print(rows)


def _print(rows: list[dict[str, Any]]) -> None:
    from batchctl.cli.table import Column

    table = []
    for row in rows:
        state = "paused" if row["paused"] else "" if row["enabled"] else "disabled"
        last = row["last"]
        last_text = "-"
        if last:
            outcome = last["run_status"] or last["status"]
            last_text = f"{last['scheduled_for'][:16]}Z {outcome}"
        nexts = row["next"] or ["-"]
        for index, when in enumerate(nexts):
            utc = row["next_utc"][index][:19] + "Z" if row["next_utc"] else ""
            first = index == 0
            table.append(
                [
                    row["job"] if first else "",
                    (row["description"] if first else ""),
                    row["timezone"] if first else "",
                    when[:19].replace("T", " "),
                    utc.replace("T", " "),
                    state if first else "",
                    last_text if first else "",
                ]
            )
    render.print_table(
        [
            Column("JOB"),
            Column("SCHEDULE"),
            Column("ZONE"),
            Column("NEXT (ZONE)"),
            Column("NEXT (UTC)"),
            Column("STATE"),
            Column("LAST FIRE"),
        ],
        table,
    )


@app.command("pause")
def pause(
    job: Annotated[
        str, typer.Argument(autocompletion=job_names, help="The job to pause.", show_default=False)
    ],
    reason: Annotated[str | None, typer.Option("--reason", help="Why (shown in ticks).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Pause a job's schedule: its ticks are recorded skipped until resumed (kept in the
    database, not the config)."""
    from batchctl.records import utcnow

    session.current.config(check_host=False).job(job)
    newly = session.current.store().pause(job, utcnow(), reason)
    if json_output:
        render.print_json({"job": job, "paused": True, "already": not newly})
        return
    render.out(f"{job}: paused" if newly else f"{job}: was already paused")


@app.command("resume")
def resume(
    job: Annotated[
        str, typer.Argument(autocompletion=job_names, help="The job to resume.", show_default=False)
    ],
    json_output: JsonOption = False,
) -> None:
    """Resume a paused job. Ticks that passed meanwhile fire only as its catchup says: none
    (none of them), latest (the newest once), all (each, up to max_catchup)."""
    from batchctl.schedule import resume as resume_job

    config = session.current.config(check_host=False)
    spec = config.job(job)
    paused_at, refired = resume_job(
        session.current.store(), spec.name, catchup=spec.catchup, max_catchup=spec.max_catchup
    )
    if json_output:
        render.print_json(
            {
                "job": job,
                "paused": False,
                "was_paused": paused_at is not None,
                "ticks_to_fire": refired,
            }
        )
        return
    if paused_at is None:
        render.out(f"{job}: was not paused")
        return
    render.out(
        f"{job}: resumed; {refired} tick(s) missed while paused will fire (catchup={spec.catchup})"
    )


def _instant(text: str) -> datetime:
    from batchctl.errors import UsageError

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--at: expected an ISO 8601 time, got {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

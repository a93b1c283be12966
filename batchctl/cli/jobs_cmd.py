"""``batchctl jobs``: the configured jobs, their schedule and how they last ran."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from batchctl.cli import render, session
from batchctl.cli.options import JsonOption

if TYPE_CHECKING:
    from batchctl.config import JobConfig
    from batchctl.records import Run


def jobs(json_output: JsonOption = False) -> None:
    """List the configured jobs: kind, enabled, schedule, next fire time, last run."""
    from batchctl.records import to_iso, utcnow

    config = session.current.config(check_host=False)
    store = session.current.store(create=False)
    last = store.last_run_per_job()
    paused = store.paused()
    now = utcnow()
    rows = [(job, _next_fire(job, now), last.get(job.name)) for job in config.jobs.values()]
    if json_output:
        render.print_json(
            [
                {**_job_json(job, nxt, run, to_iso), "paused": job.name in paused}
                for job, nxt, run in rows
            ]
        )
        return
    from batchctl.cli.table import Column

    columns = [
        Column(h)
        for h in ("JOB", "KIND", "ENABLED", "SCOPES", "SCHEDULE", "NEXT", "LAST RUN", "STATUS")
    ]
    table = [
        [
            job.name,
            job.kind,
            render.Styled("paused", "yellow")
            if job.name in paused
            else "yes"
            if job.enabled
            else render.Styled("no", "dim"),
            ", ".join(job.scopes) or "-",
            (job.schedule or "-") + (f" ({job.timezone})" if job.timezone else ""),
            nxt.strftime("%Y-%m-%d %H:%M %Z") if nxt else "-",
            f"{run.id} at {render.local_time(run.created_at)}" if run else "-",
            render.status_cell(run.status.value) if run else "-",
        ]
        for job, nxt, run in rows
    ]
    render.print_table(columns, table)


def _next_fire(job: JobConfig, now: datetime) -> datetime | None:
    if not job.schedule or not job.enabled:
        return None
    from batchctl.schedule import Schedule

    return Schedule.of(job.schedule, job.timezone).next_after(now)


def _job_json(job: JobConfig, nxt: datetime | None, run: Run | None, to_iso: Any) -> dict[str, Any]:
    return {
        "name": job.name,
        "kind": job.kind,
        "enabled": job.enabled,
        "description": job.description,
        "tags": list(job.tags),
        "scopes": list(job.scopes),
        "schedule": job.schedule,
        "timezone": job.timezone,
        "concurrency": job.concurrency,
        "next_fire": nxt.isoformat() if nxt else None,
        "last_run": None
        if run is None
        else {
            "id": run.id,
            "status": run.status.value,
            "created_at": to_iso(run.created_at),
            "finished_at": to_iso(run.finished_at),
        },
    }

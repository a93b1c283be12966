"""Prometheus metrics: the text exposition format 0.0.4, for a scrape or node_exporter's
textfile collector.

Every figure comes from the database in a few aggregate queries (see
``store/sqlite_maintenance.py``), so a scrape costs milliseconds however long the history.
Counters count what the database holds: ``batchctl prune`` lowers them, which Prometheus's
``rate()`` and ``increase()`` read as a counter reset — as after a restart.

Families (all prefixed ``batchctl_``):

- ``runs_total{job,status}`` counter: ended runs by job and final status.
- ``runs_active{job,status}`` gauge: runs queued, running or retrying now.
- ``last_success_timestamp_seconds{job}`` gauge: when the job's newest ``completed`` run ended.
- ``run_duration_seconds{job}`` summary (``_sum`` and ``_count``): ended runs that started.
- ``tokens_total{job}``, ``cost_dollars_total{job}`` counters: OpenAI usage and cost, all runs
  (a run with an unpriced model adds only its priced part); ``unpriced_runs_total{job}``
  counter: the runs whose cost leaves out a model without a price.
- ``submissions_in_flight`` gauge; ``batch_parts{status}`` gauge: the parts of those
  submissions by remote status.
- ``ticks_pending{job}`` gauge; ``ticks_total{job,status}`` counter for ``missed`` and
  ``skipped`` ticks.
- ``daemon_up`` gauge (1 when a scheduler is alive, as ``health`` judges),
  ``daemon_heartbeat_timestamp_seconds``, ``daemon_heartbeat_age_seconds``,
  ``daemon_last_pass_timestamp_seconds``: the newest daemon (present when there is one).
- ``job_paused{job}`` gauge: 1 for a paused job, 0 for the other configured jobs.
- ``healthy`` gauge (``health``'s verdict), ``jobs_overdue`` gauge.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchctl.config import Config
    from batchctl.store.base import Store

PREFIX = "batchctl_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ACTIVE = ("queued", "running", "retrying")


@dataclass
class Sample:
    labels: dict[str, str]
    value: float
    suffix: str = ""  # "_sum" / "_count" for a summary


@dataclass
class Family:
    name: str  # without the prefix
    kind: str  # counter, gauge, summary
    help: str
    samples: list[Sample] = field(default_factory=list)

    def add(self, value: float, suffix: str = "", **labels: str) -> None:
        self.samples.append(Sample(labels, value, suffix))

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {"name": PREFIX + self.name + s.suffix, "labels": s.labels, "value": s.value}
            for s in self.samples
        ]


def collect(store: Store, config: Config, now: datetime) -> list[Family]:
    """Every metric family, with its samples, as of ``now``."""
    from batchctl import health

    stats = store.run_stats()
    runs = Family("runs_total", "counter", "Ended runs, by job and final status.")
    active = Family("runs_active", "gauge", "Runs queued, running or retrying, by job and status.")
    last_success = Family(
        "last_success_timestamp_seconds",
        "gauge",
        "Unix time when the job's newest completed run ended.",
    )
    duration = Family(
        "run_duration_seconds", "summary", "Wall-clock duration of ended runs that started."
    )
    tokens = Family("tokens_total", "counter", "Tokens used (input and output), by job.")
    cost = Family("cost_dollars_total", "counter", "Cost in US dollars at batch price, by job.")
    unpriced = Family(
        "unpriced_runs_total", "counter", "Runs whose cost leaves out a model without a price."
    )
    per_job: dict[str, list[float]] = {}  # job -> [duration sum, duration count, tokens, cost]
    unpriced_by_job: dict[str, int] = {}
    successes: dict[str, datetime] = {}
    for row in stats:
        if row.status in ACTIVE:
            active.add(row.runs, job=row.job, status=row.status)
        else:
            runs.add(row.runs, job=row.job, status=row.status)
        figures = per_job.setdefault(row.job, [0.0, 0.0, 0.0, 0.0])
        if row.status not in ACTIVE:
            figures[0] += row.duration_sum
            figures[1] += row.duration_count
        figures[2] += row.total_tokens
        figures[3] += row.total_cost
        unpriced_by_job[row.job] = unpriced_by_job.get(row.job, 0) + row.unpriced_runs
        if row.status == "completed" and row.last_finished_at is not None:
            successes[row.job] = row.last_finished_at
    for job, (seconds, count, used, spent) in sorted(per_job.items()):
        if count:
            duration.add(seconds, "_sum", job=job)
            duration.add(count, "_count", job=job)
        tokens.add(used, job=job)
        cost.add(spent, job=job)
        if unpriced_by_job.get(job):
            unpriced.add(unpriced_by_job[job], job=job)
    for job, moment in sorted(successes.items()):
        last_success.add(moment.timestamp(), job=job)

    submissions = Family(
        "submissions_in_flight", "gauge", "OpenAI batch submissions not yet finished and merged."
    )
    submissions.add(len(store.submissions_in_flight()))
    parts = Family(
        "batch_parts", "gauge", "Parts (remote batches) of in-flight submissions, by remote status."
    )
    for status, count in sorted(store.part_stats().items()):
        parts.add(count, status=status)

    ticks = store.tick_stats(("pending", "missed", "skipped"))
    pending = Family("ticks_pending", "gauge", "Scheduled ticks waiting to fire, by job.")
    closed = Family("ticks_total", "counter", "Ticks missed or skipped, by job and status.")
    for (job, status), count in sorted(ticks.items()):
        if status == "pending":
            pending.add(count, job=job)
        else:
            closed.add(count, job=job, status=status)

    report = health.check(store, config, now)
    up = Family("daemon_up", "gauge", "1 when a scheduler (daemon or --once rounds) is alive.")
    up.add(1 if report.scheduler else 0)
    heartbeat = Family(
        "daemon_heartbeat_timestamp_seconds", "gauge", "Unix time of the daemon's last heartbeat."
    )
    heartbeat_age = Family(
        "daemon_heartbeat_age_seconds", "gauge", "Seconds since the daemon's last heartbeat."
    )
    last_pass = Family(
        "daemon_last_pass_timestamp_seconds",
        "gauge",
        "Unix time of the scheduler's last completed pass.",
    )
    if report.daemon is not None:
        heartbeat.add(report.daemon.info.heartbeat_at.timestamp())
        heartbeat_age.add(report.daemon.heartbeat_age)
    if report.last_pass_at is not None:
        last_pass.add(report.last_pass_at.timestamp())
    paused = Family("job_paused", "gauge", "1 when the job is paused, else 0.")
    paused_jobs = set(report.paused_jobs)
    for job in sorted(paused_jobs | set(config.jobs)):
        paused.add(1 if job in paused_jobs else 0, job=job)
    healthy = Family("healthy", "gauge", "1 when `batchctl health` passes, else 0.")
    healthy.add(1 if report.healthy else 0)
    overdue = Family(
        "jobs_overdue", "gauge", "Jobs (and scopes) that `batchctl health` finds overdue."
    )
    overdue.add(len(report.overdue))

    return [
        runs,
        active,
        last_success,
        duration,
        tokens,
        cost,
        unpriced,
        submissions,
        parts,
        pending,
        closed,
        up,
        heartbeat,
        heartbeat_age,
        last_pass,
        paused,
        healthy,
        overdue,
    ]


def render(store: Store, config: Config, now: datetime | None = None) -> str:
    """The metrics in the Prometheus text format, version 0.0.4."""
    from batchctl.records import utcnow

    return exposition(collect(store, config, now or utcnow()))


def exposition(families: Iterable[Family]) -> str:
    lines: list[str] = []
    for family in families:
        name = PREFIX + family.name
        lines.append(f"# HELP {name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {name} {family.kind}")
        for sample in family.samples:
            labels = ",".join(
                f'{key}="{_escape_label(value)}"' for key, value in sample.labels.items()
            )
            braces = "{" + labels + "}" if labels else ""
            lines.append(f"{name}{sample.suffix}{braces} {format_value(sample.value)}")
    return "\n".join(lines) + "\n"


def write_textfile(
    store: Store, config: Config, path: Path | str, now: datetime | None = None
) -> None:
    """Write the metrics to ``path`` atomically, for node_exporter's textfile collector: a
    temporary file in the same directory (not ending in ``.prom``, so never collected half
    written), flushed to disk, then renamed over ``path``."""
    target = Path(path).expanduser()
    text = render(store, config, now)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o644)  # node_exporter usually runs as another user
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def format_value(value: float) -> str:
    if isinstance(value, int) or (
        math.isfinite(value) and value == int(value) and abs(value) < 1e15
    ):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")

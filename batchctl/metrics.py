"""Prometheus metrics, produced with the official ``prometheus_client``: a collector over our
aggregate queries, in a registry of its own, encoded by the library in the text format 0.0.4
or, when a scraper asks for it, OpenMetrics.

Every figure comes from the database in a few aggregate queries (see
``store/maintenance.py``), so a scrape costs milliseconds however long the history.
Counters count what the database holds: ``batchctl prune`` lowers them, which Prometheus's
``rate()`` and ``increase()`` read as a counter reset — as after a restart.

The job is the label ``batchctl_job``: ``job`` and ``instance`` are the labels Prometheus attaches
to every scraped sample (a ``job`` of ours would be renamed ``exported_job``).

Families (all prefixed ``batchctl_``):

- ``runs_total{batchctl_job,status}`` counter: ended runs by job and final status.
- ``runs_active{batchctl_job,status}`` gauge: runs queued, running or retrying now.
- ``last_success_timestamp_seconds{batchctl_job}`` gauge: when the job's newest ``completed``
  run ended.
- ``run_duration_seconds{batchctl_job}`` summary (``_sum`` and ``_count``): ended runs that
  started.
- ``tokens_total{batchctl_job}``, ``cost_dollars_total{batchctl_job}`` counters: OpenAI usage
  and cost, all runs (a run with an unpriced model adds only its priced part);
  ``unpriced_runs_total{batchctl_job}`` counter: the runs whose cost leaves out a model
  without a price.
- ``submissions_in_flight{provider}`` gauge; ``batch_parts{provider,status}`` gauge: the parts
  of those submissions by remote status.
- ``ticks_pending{batchctl_job}`` gauge; ``ticks_total{batchctl_job,status}`` counter for
  ``missed`` and ``skipped`` ticks.
- ``daemon_up`` gauge (1 when a scheduler is alive, as ``health`` judges),
  ``daemon_heartbeat_timestamp_seconds``, ``daemon_heartbeat_age_seconds``,
  ``daemon_last_pass_timestamp_seconds``: the newest daemon (present when there is one).
- ``job_paused{batchctl_job}`` gauge: 1 for a paused job, 0 for the other configured jobs.
- ``healthy`` gauge (``health``'s verdict), ``jobs_overdue`` gauge.

``prometheus_client`` is imported here only, inside the functions: no other command loads it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchctl.jobs import BATCH_KINDS
from batchctl.providers.profiles import DEFAULT_PROVIDER
from batchctl.records import ACTIVE_RUN_STATUSES

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

    from batchctl.config import Config
    from batchctl.store.base import Store

PREFIX = "batchctl_"
JOB = "batchctl_job"  # never "job" nor "instance": Prometheus sets those on every scrape
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StoreCollector:
    """A ``prometheus_client`` collector: every family, read from the store when collected."""

    def __init__(self, store: Store, config: Config, now: datetime) -> None:
        self.store = store
        self.config = config
        self.now = now

    def collect(self) -> Iterator[Metric]:
        yield from collect(self.store, self.config, self.now)

    def describe(self) -> list[Metric]:
        return []  # registering must not query: the families are known when collected


def registry(store: Store, config: Config, now: datetime | None = None) -> CollectorRegistry:
    """A registry of its own (not the library's global one, with its process metrics)
    holding the store's collector."""
    from prometheus_client import CollectorRegistry

    from batchctl.records import utcnow

    found = CollectorRegistry()
    found.register(StoreCollector(store, config, now or utcnow()))
    return found


def collect(store: Store, config: Config, now: datetime) -> list[Metric]:
    """Every metric family, with its samples, as of ``now``."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

    from batchctl import health

    def gauge(name: str, doc: str, *labels: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(PREFIX + name, doc, labels=labels)

    def counter(name: str, doc: str, *labels: str) -> CounterMetricFamily:
        return CounterMetricFamily(PREFIX + name, doc, labels=labels)

    stats = store.run_stats()
    runs = counter("runs_total", "Ended runs, by job and final status.", JOB, "status")
    active = gauge(
        "runs_active", "Runs queued, running or retrying, by job and status.", JOB, "status"
    )
    last_success = gauge(
        "last_success_timestamp_seconds",
        "Unix time when the job's newest completed run ended.",
        JOB,
    )
    duration = SummaryMetricFamily(
        PREFIX + "run_duration_seconds",
        "Wall-clock duration of ended runs that started.",
        labels=[JOB],
    )
    tokens = counter("tokens_total", "Tokens used (input and output), by job.", JOB)
    cost = counter("cost_dollars_total", "Cost in US dollars at batch price, by job.", JOB)
    unpriced = counter(
        "unpriced_runs_total", "Runs whose cost leaves out a model without a price.", JOB
    )
    per_job: dict[str, list[float]] = {}  # job -> [duration sum, duration count, tokens, cost]
    unpriced_by_job: dict[str, int] = {}
    successes: dict[str, datetime] = {}
    for row in stats:
        if row.status in ACTIVE_RUN_STATUSES:
            active.add_metric([row.job, row.status], row.runs)
        else:
            runs.add_metric([row.job, row.status], row.runs)
        figures = per_job.setdefault(row.job, [0.0, 0, 0, 0.0])
        if row.status not in ACTIVE_RUN_STATUSES:
            figures[0] += row.duration_sum
            figures[1] += row.duration_count
        figures[2] += row.total_tokens
        figures[3] += row.total_cost
        unpriced_by_job[row.job] = unpriced_by_job.get(row.job, 0) + row.unpriced_runs
        if row.status == "completed" and row.last_finished_at is not None:
            successes[row.job] = row.last_finished_at
    for job, (seconds, count, used, spent) in sorted(per_job.items()):
        if count:
            duration.add_metric([job], count_value=int(count), sum_value=seconds)
        tokens.add_metric([job], used)
        cost.add_metric([job], spent)
        if unpriced_by_job.get(job):
            unpriced.add_metric([job], unpriced_by_job[job])
    for job, moment in sorted(successes.items()):
        last_success.add_metric([job], moment.timestamp())

    submissions = gauge(
        "submissions_in_flight",
        "Batch submissions not yet finished and merged, by provider.",
        "provider",
    )
    in_flight = Counter(store.providers_of(store.submissions_in_flight()).values())
    # The providers the config's jobs use read 0 rather than vanish when nothing is in flight.
    providers_used = {
        DEFAULT_PROVIDER,
        *(j.provider for j in config.jobs.values() if j.kind in BATCH_KINDS),
    }
    for provider in sorted(providers_used | set(in_flight)):
        submissions.add_metric([provider], in_flight.get(provider, 0))
    parts = gauge(
        "batch_parts",
        "Parts (remote batches) of in-flight submissions, by provider and remote status.",
        "provider",
        "status",
    )
    for (provider, status), count in sorted(store.part_stats().items()):
        parts.add_metric([provider, status], count)

    ticks = store.tick_stats(("pending", "missed", "skipped"))
    pending = gauge("ticks_pending", "Scheduled ticks waiting to fire, by job.", JOB)
    closed = counter("ticks_total", "Ticks missed or skipped, by job and status.", JOB, "status")
    for (job, status), count in sorted(ticks.items()):
        if status == "pending":
            pending.add_metric([job], count)
        else:
            closed.add_metric([job, status], count)

    report = health.check(store, config, now)
    up = gauge("daemon_up", "1 when a scheduler (daemon or --once rounds) is alive.")
    up.add_metric([], 1 if report.scheduler else 0)
    heartbeat = gauge(
        "daemon_heartbeat_timestamp_seconds", "Unix time of the daemon's last heartbeat."
    )
    heartbeat_age = gauge(
        "daemon_heartbeat_age_seconds", "Seconds since the daemon's last heartbeat."
    )
    last_pass = gauge(
        "daemon_last_pass_timestamp_seconds", "Unix time of the scheduler's last completed pass."
    )
    if report.daemon is not None:
        heartbeat.add_metric([], report.daemon.info.heartbeat_at.timestamp())
        heartbeat_age.add_metric([], report.daemon.heartbeat_age)
    if report.last_pass_at is not None:
        last_pass.add_metric([], report.last_pass_at.timestamp())
    paused = gauge("job_paused", "1 when the job is paused, else 0.", JOB)
    paused_jobs = set(report.paused_jobs)
    for job in sorted(paused_jobs | set(config.jobs)):
        paused.add_metric([job], 1 if job in paused_jobs else 0)
    healthy = gauge("healthy", "1 when `batchctl health` passes, else 0.")
    healthy.add_metric([], 1 if report.healthy else 0)
    overdue = gauge("jobs_overdue", "Jobs (and scopes) that `batchctl health` finds overdue.")
    overdue.add_metric([], len(report.overdue))

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
    from prometheus_client import generate_latest

    return generate_latest(registry(store, config, now)).decode()


def encode(
    store: Store, config: Config, accept: str | None, now: datetime | None = None
) -> tuple[bytes, str]:
    """The metrics in the format an HTTP ``Accept`` header asks for (OpenMetrics when it names
    ``application/openmetrics-text``, else the text format 0.0.4), and its content type."""
    from prometheus_client.exposition import choose_encoder

    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry(store, config, now)), content_type


def samples(store: Store, config: Config, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every sample as ``{"name", "labels", "value"}`` (``metrics --json``)."""
    return [
        {"name": sample.name, "labels": sample.labels, "value": sample.value}
        for family in registry(store, config, now).collect()
        for sample in family.samples
    ]


def write_textfile(
    store: Store, config: Config, path: Path | str, now: datetime | None = None
) -> None:
    """Write the metrics to ``path`` for node_exporter's textfile collector, as every output
    file is written (``outputs.open_output``): a regular file whole or not at all (its temporary
    ``NAME.part`` never ends in ``.prom``, so it is never collected half written), a device or a
    pipe as a stream, a directory refused; ``UsageError`` naming the path on failure.

    Not ``prometheus_client.write_to_textfile``: that one neither syncs the file before the
    rename nor sets its mode. A new file is 0644: node_exporter usually reads it as another
    user.
    """
    from batchctl import outputs

    text = render(store, config, now)
    with outputs.open_output(Path(path).expanduser(), new_mode=0o644) as out:
        out.write(text)

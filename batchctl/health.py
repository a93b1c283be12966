"""Is the scheduler alive, and is any job overdue? ``batchctl health`` and ``GET /healthz``.

The rules, in one place (the README's "batchctl health" repeats them):

- **Liveness.** The daemon is the newest ``daemons`` record of mode ``daemon`` not marked
  stopped. It is alive when its heartbeat is at most ``2 x [daemon] lease`` old (it beats every
  ``lease / 3`` at the latest) and, on this host, its process still exists. It should also hold
  the daemon lock (the ``daemon_lock`` row); a live daemon that does not is a problem.
  Installed with cron or a systemd timer instead (``batchctl daemon --once`` every minute), the
  scheduler counts as alive when a ``--once`` round beat within the last
  ``max(ONCE_WINDOW_S, 2 x lease)`` seconds.
- **Who needs a scheduler.** A *scheduled job* is enabled, has a ``schedule`` and is not paused.
  With no scheduled job, no scheduler is needed and its absence is no problem: a database used
  only by hand, or by ``submit``/``wait`` scripts, is healthy. With scheduled jobs, "no daemon
  running" or "heartbeat stale" makes the report unhealthy.
- **Overdue.** A scheduled job (each scope) is overdue when its next fire time after what the
  scheduler last considered (the newer of its cursor and its newest tick) is more than
  ``max(OVERDUE_MARGIN_S, 2 x lease) + jitter`` in the past: no tick was recorded for it, fired,
  skipped or missed. A running run (of a ``command`` or ``python`` job) is overdue when its
  current attempt has run longer than the job's ``timeout + grace`` plus that margin, or — for
  a scheduled ``concurrency = "forbid"`` job without a timeout — when it still runs more than
  the margin past the job's next fire time after it started (it is holding the schedule up).

Unhealthy means one or more ``problems``; ``warnings`` never change the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from batchctl import jobs
from batchctl.records import DaemonInfo, Run, to_iso

if TYPE_CHECKING:
    from batchctl.config import Config, JobConfig
    from batchctl.store.base import Store

ONCE_WINDOW_S = 180.0  # cron and the systemd timer start a `daemon --once` round every minute
OVERDUE_MARGIN_S = 120.0
RECENT_DAEMONS_S = 86400.0  # daemons listed in the report: seen within this long


@dataclass(frozen=True)
class DaemonState:
    """A ``daemons`` record as health judges it."""

    info: DaemonInfo
    heartbeat_age: float
    state: str  # "running", "stale" (not stopped, heartbeat too old), "gone", "stopped"
    holds_lock: bool

    def to_json(self) -> dict[str, Any]:
        d = self.info
        return {
            "instance": d.instance,
            "host": d.host,
            "pid": d.pid,
            "mode": d.mode,
            "state": self.state,
            "started_at": to_iso(d.started_at),
            "heartbeat_at": to_iso(d.heartbeat_at),
            "heartbeat_age": round(self.heartbeat_age, 3),
            "last_pass_at": to_iso(d.last_pass_at),
            "stopped_at": to_iso(d.stopped_at),
            "holds_lock": self.holds_lock,
        }


@dataclass(frozen=True)
class Overdue:
    """A job (and scope) whose tick did not come, or whose run runs too long."""

    job: str
    scope: str | None
    reason: str
    due_at: datetime
    run_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "scope": self.scope,
            "reason": self.reason,
            "due_at": to_iso(self.due_at),
            "run_id": self.run_id,
        }


@dataclass(frozen=True)
class LockInfo:
    instance: str
    host: str
    pid: int
    lease_until: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "host": self.host,
            "pid": self.pid,
            "lease_until": to_iso(self.lease_until),
        }


@dataclass(frozen=True)
class HealthReport:
    checked_at: datetime
    lease: float
    scheduler: str | None  # "daemon", "once" (cron / systemd timer rounds) or None
    daemon: DaemonState | None
    lock: LockInfo | None
    last_pass_at: datetime | None
    scheduled_jobs: list[str]
    paused_jobs: list[str]
    in_flight_runs: list[Run]
    in_flight_submissions: list[int]
    pending_ticks: int
    overdue: list[Overdue]
    daemons: list[DaemonState]
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        """The stable ``health --json`` and ``/healthz`` shape (documented in the README)."""
        return {
            "healthy": self.healthy,
            "checked_at": to_iso(self.checked_at),
            "problems": list(self.problems),
            "warnings": list(self.warnings),
            "scheduler": self.scheduler,
            "lease": self.lease,
            "daemon": None if self.daemon is None else self.daemon.to_json(),
            "lock": None if self.lock is None else self.lock.to_json(),
            "last_pass_at": to_iso(self.last_pass_at),
            "in_flight": {
                "runs": [
                    {
                        "id": r.id,
                        "job": r.job,
                        "scope": r.scope,
                        "status": r.status.value,
                        "started_at": to_iso(r.started_at),
                    }
                    for r in self.in_flight_runs
                ],
                "submissions": list(self.in_flight_submissions),
            },
            "pending_ticks": self.pending_ticks,
            "scheduled_jobs": list(self.scheduled_jobs),
            "paused_jobs": list(self.paused_jobs),
            "overdue": [o.to_json() for o in self.overdue],
            "daemons": [d.to_json() for d in self.daemons],
        }


def check(store: Store, config: Config, now: datetime) -> HealthReport:
    """Judge the database's scheduler and jobs at ``now`` (see the module's rules)."""
    from batchctl.owners import is_dead

    lease = config.daemon.lease
    stale_after = 2 * lease
    holder = store.daemon_lock_holder()
    lock = None if holder is None else LockInfo(holder[0], holder[1].host, holder[1].pid, holder[2])

    def judge(info: DaemonInfo) -> DaemonState:
        age = max(0.0, (now - info.heartbeat_at).total_seconds())
        if info.stopped_at is not None:
            state = "stopped"
        elif info.mode == "daemon" and is_dead_owner(info):
            state = "gone"
        elif age > (stale_after if info.mode == "daemon" else max(ONCE_WINDOW_S, stale_after)):
            state = "stale"
        else:
            state = "running"
        holds = lock is not None and lock.instance == info.instance
        return DaemonState(info, age, state, holds)

    def is_dead_owner(info: DaemonInfo) -> bool:
        from batchctl.records import Owner

        return is_dead(Owner(info.host, info.pid))

    newest = store.latest_daemon("daemon")
    daemon = None if newest is None else judge(newest)
    recent = store.daemons_since(now - timedelta(seconds=RECENT_DAEMONS_S))
    daemons = [judge(d) for d in recent]
    if store.shared:  # several daemons share the work: any one running keeps it alive
        running = (d for d in daemons if d.info.mode == "daemon" and d.state == "running")
        daemon = next(running, daemon)
    once_window = max(ONCE_WINDOW_S, stale_after)
    once_rounds = [
        d
        for d in daemons
        if d.info.mode == "once" and d.heartbeat_age <= once_window and d.state != "gone"
    ]
    scheduler: str | None = None
    if daemon is not None and daemon.state == "running":
        scheduler = "daemon"
    elif once_rounds:
        scheduler = "once"
    last_pass_candidates = [d.info.last_pass_at for d in daemons if d.info.last_pass_at]
    if daemon is not None and daemon.info.last_pass_at is not None:
        last_pass_candidates.append(daemon.info.last_pass_at)
    last_pass_at = max(last_pass_candidates, default=None)

    paused = store.paused()
    scheduled = [
        job.name
        for job in config.jobs.values()
        if job.schedule and job.enabled and job.name not in paused
    ]
    problems: list[str] = []
    warnings: list[str] = []
    lock_expected = not store.shared  # on a shared database every daemon works; none holds it
    if daemon is not None and daemon.state == "running" and not daemon.holds_lock and lock_expected:
        who = (
            "nobody"
            if lock is None
            else f"{_short(lock.instance)} (host {lock.host}, pid {lock.pid})"
        )
        problems.append(
            f"the running daemon {_describe(daemon)} does not hold the daemon lock (held by {who})"
        )
    if scheduler is None:
        why = _why_not_alive(daemon, lease)
        if scheduled:
            problems.append(f"{why}, and {len(scheduled)} scheduled job(s) need one")
        elif daemon is not None:
            warnings.append(why)
    overdue = _overdue(store, config, now, paused, lease)
    problems.extend(
        f"{o.job}[{o.scope}] overdue: {o.reason}" if o.scope else f"{o.job} overdue: {o.reason}"
        for o in overdue
    )
    return HealthReport(
        checked_at=now,
        lease=lease,
        scheduler=scheduler,
        daemon=daemon,
        lock=lock,
        last_pass_at=last_pass_at,
        scheduled_jobs=sorted(scheduled),
        paused_jobs=sorted(paused),
        in_flight_runs=store.active_runs(),
        in_flight_submissions=store.submissions_in_flight(),
        pending_ticks=store.pending_tick_count(),
        overdue=overdue,
        daemons=daemons,
        problems=problems,
        warnings=warnings,
    )


def _short(instance: str) -> str:
    return instance[:8]


def _describe(daemon: DaemonState) -> str:
    return f"{_short(daemon.info.instance)} (host {daemon.info.host}, pid {daemon.info.pid})"


def _why_not_alive(daemon: DaemonState | None, lease: float) -> str:
    from batchctl.durations import format_duration

    if daemon is None:
        return "no daemon is running"
    if daemon.state == "gone":
        return f"the daemon {_describe(daemon)} is gone: its process no longer exists"
    return (
        f"the daemon {_describe(daemon)} has not beaten for "
        f"{format_duration(daemon.heartbeat_age)} (stale after 2 x lease = "
        f"{format_duration(2 * lease)})"
    )


def margin_for(job: JobConfig, lease: float) -> float:
    """How late a tick or a run may be before health calls the job overdue."""
    return max(OVERDUE_MARGIN_S, 2 * lease) + job.jitter


def _overdue(
    store: Store, config: Config, now: datetime, paused: dict[str, datetime], lease: float
) -> list[Overdue]:
    from batchctl.durations import format_duration
    from batchctl.schedule import Schedule

    found: list[Overdue] = []
    positions = store.schedule_positions()
    for job in config.jobs.values():
        if not (job.schedule and job.enabled) or job.name in paused:
            continue
        schedule = Schedule.of(job.schedule, job.timezone)
        margin = timedelta(seconds=margin_for(job, lease))
        for scope in job.run_scopes():
            position = positions.get((job.name, scope))
            if position is None:
                continue  # never seen by a scheduler yet; "no daemon" covers a missing one
            considered = max(position.cursor, position.last_tick_at or position.cursor)
            due = schedule.next_after(considered)
            if now - due > margin:
                found.append(
                    Overdue(
                        job.name,
                        scope,
                        f"no tick recorded for {to_iso(due)} "
                        f"({format_duration((now - due).total_seconds())} ago)",
                        due,
                    )
                )
    for run in store.active_runs():
        if run.status.value != "running":
            continue
        job_config = config.jobs.get(run.job)
        if job_config is None or jobs.kind(job_config.kind).remote:
            continue  # batch submissions take up to 24 hours; their parts say how they do
        late = _run_overdue(store, job_config, run, now, lease)
        if late is not None:
            found.append(late)
    return found


def _run_overdue(
    store: Store, job: JobConfig, run: Run, now: datetime, lease: float
) -> Overdue | None:
    from batchctl.durations import format_duration

    attempts = store.attempts(run.id)
    started = attempts[-1].started_at if attempts else run.started_at
    if started is None:
        return None
    margin = margin_for(job, lease)
    elapsed = (now - started).total_seconds()
    if job.timeout is not None:
        limit = job.timeout + job.grace + margin
        if elapsed > limit:
            return Overdue(
                run.job,
                run.scope,
                f"run {run.id} has run for {format_duration(elapsed)}, past its timeout "
                f"({format_duration(job.timeout)})",
                started + timedelta(seconds=job.timeout),
                run.id,
            )
        return None
    if job.schedule and job.concurrency == "forbid":
        from batchctl.schedule import Schedule

        due = Schedule.of(job.schedule, job.timezone).next_after(started)
        if (now - due).total_seconds() > margin:
            return Overdue(
                run.job,
                run.scope,
                f"run {run.id} (no timeout) still runs after its next fire time "
                f"{to_iso(due)}, so concurrency=forbid skips the job's ticks",
                due,
                run.id,
            )
    return None

"""A run's life, for every kind of job: start, chain, cancel, retry, and abandon when lost.

Every way of starting a run (``run``, ``retry``, ``submit --job``, a schedule's tick, an ``after``
chain) goes through ``Runs.start``, so a job's concurrency policy holds whichever of them started
the run. What differs between kinds (executing here or submitting to a provider) is behind
``jobs.JobKind``; nothing here asks a job's kind by name. A run executing in this process takes its
(job, scope) lock and makes its attempts in the engine (engine.py).

Concurrency, per kind of run:
- a run executing here holds the (job, scope) lock while it runs: ``forbid`` skips a new run while
  the lock is held ("locked out"), ``replace`` cancels the holder, ``allow`` takes no lock;
- a run going on at a provider holds no process, so ``forbid`` skips a new run while a run of the
  same (job, scope) is still in flight; ``replace`` and ``allow`` start it beside the old one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from batchctl import jobs, process_groups
from batchctl.config import Config, JobConfig
from batchctl.engine import Engine, EngineSettings, RunObserver
from batchctl.errors import UsageError
from batchctl.jobs import BATCH_KINDS, JobKind, Retried, StartRequest
from batchctl.owners import is_dead
from batchctl.records import ACTIVE_RUN_STATUSES, Owner, Run, RunStatus, utcnow
from batchctl.store.base import Store

if TYPE_CHECKING:
    from batchctl.batches.submission import Batches
    from batchctl.providers.base import Provider

# The kind of a run recorded with a batch submission, whichever job it was recorded under
# (``submit`` without ``--job`` records its runs under the job "submit", which no config names).
SUBMISSION_KIND = "batch"


class Abandoned(NamedTuple):
    """A run recorded abandoned because its process is gone."""

    run: Run
    reason: str
    stopped: str  # what was done to the processes it left behind; empty when none
    retry: JobConfig | None  # its job, when its retries cover the error; else None


def job_for_submission(config: Config, name: str) -> JobConfig:
    """The job a ``submit --job`` records its run under: one whose runs are batch submissions."""
    job = config.job(name)
    if job.kind not in BATCH_KINDS:
        raise UsageError(f"job {name!r} is of kind {job.kind!r}, not {SUBMISSION_KIND!r}")
    return job


class Runs:
    """The runs of one store under one config: the only place that starts, cancels or retries."""

    def __init__(
        self,
        store: Store,
        config: Config,
        *,
        clock: Callable[[], datetime] = utcnow,
        observer: RunObserver | None = None,
        cancel: threading.Event | None = None,
        settings: EngineSettings = EngineSettings(),
        batches: Callable[[], Batches] | None = None,
        provider_factory: Callable[[str], Provider] | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.observer = observer
        self.engine = Engine(
            store, config, clock=clock, observer=observer, cancel=cancel, settings=settings
        )
        self._open_batches = batches
        self._provider_factory = provider_factory
        self._batches: Batches | None = None

    @property
    def cancel_event(self) -> threading.Event:
        return self.engine.cancel_event

    def batches(self) -> Batches:
        """The submissions of this store, opened on first use (a remote kind's runs)."""
        if self._batches is None:
            if self._open_batches is not None:
                self._batches = self._open_batches()
            else:
                from batchctl.batches.submission import Batches

                self._batches = Batches(
                    self.store, self.config, provider_factory=self._provider_factory
                )
        return self._batches

    def get(self, run_id: int) -> Run:
        return self.engine.get(run_id)

    def kind_of(self, run: Run) -> JobKind:
        """The kind that drives ``run``: a batch submission's, else its job's (a job no longer
        configured runs here: its run can still be cancelled)."""
        if self.store.get_submission(run.id) is not None:
            return jobs.kind(SUBMISSION_KIND)
        job = self.config.jobs.get(run.job)
        return jobs.kind(job.kind if job is not None else "command")

    # --- start ----------------------------------------------------------------------------------
    def start(
        self,
        job: JobConfig,
        scope: str | None = None,
        *,
        trigger: str = "manual",
        retry_of: int | None = None,
        scheduled_for: datetime | None = None,
    ) -> Run:
        """Start one run of (job, scope) under its concurrency policy, then the jobs chained
        after it once it has completed. A run executing here is returned ended; a run going on
        at a provider, in flight."""
        return self.start_chain(job, scope, StartRequest(trigger, retry_of, scheduled_for))[0]

    def start_chain(
        self, job: JobConfig, scope: str | None = None, request: StartRequest = StartRequest()
    ) -> list[Run]:
        """``start``, with the runs its ``after`` chain started (in the order started) after
        the run itself: what a command that started the run reports and exits for."""
        if scope is not None and job.scopes and scope not in job.scopes:
            raise UsageError(
                f"job {job.name!r} has no scope {scope!r}",
                hint=f"its scopes: {', '.join(job.scopes)}",
            )
        if not job.enabled:
            return [self._skip(job, scope, request, "job is disabled", job.retries.max_attempts)]
        kind = jobs.kind(job.kind)
        if kind.remote and (skipped := self._refuse_overlap(job, scope, request)) is not None:
            return [skipped]
        run = kind.start(self, job, scope, request)
        if kind.remote and run.status.terminal:
            self._finished(run)  # a run executing here was reported by the engine
        if run.status is RunStatus.COMPLETED:
            return [run, *self._chain(job, scope)]
        return [run]

    def admit(self, job: JobConfig, scope: str | None = None) -> Run | None:
        """Whether a run of (job, scope) that goes on at a provider, started by hand (``submit
        --job``), may start now: None if so, else the skipped run recorded in its place."""
        return self._refuse_overlap(job, scope, StartRequest())

    def _refuse_overlap(
        self, job: JobConfig, scope: str | None, request: StartRequest
    ) -> Run | None:
        """Under ``forbid``, the skipped run recorded while a run of (job, scope) is in flight."""
        if job.concurrency != "forbid":
            return None
        busy = [r for r in self.store.active_runs(job.name) if r.scope == scope]
        if not busy:
            return None
        reason = f"run {busy[0].id} of this job is still in flight (concurrency=forbid)"
        return self._skip(job, scope, request, reason, 1)

    def _skip(
        self, job: JobConfig, scope: str | None, request: StartRequest, reason: str, attempts: int
    ) -> Run:
        run_id = self.store.create_run(
            job=job.name,
            scope=scope,
            trigger=request.trigger,
            status=RunStatus.SKIPPED,
            reason=reason,
            max_attempts=attempts,
            now=self.clock(),
            retry_of=request.retry_of,
            scheduled_for=request.scheduled_for,
        )
        return self._finished(self.get(run_id))

    def _finished(self, run: Run) -> Run:
        if self.observer:
            self.observer.run_finished(run)
        return run

    def _chain(self, upstream: JobConfig, scope: str | None) -> list[Run]:
        """Start the jobs whose ``after`` names this one (their own scopes, or this scope); the
        runs started, with those they chained in turn."""
        started: list[Run] = []
        for job in self.config.jobs.values():
            if upstream.name not in job.after or not job.enabled:
                continue
            for each in [scope] if scope in job.scopes else job.run_scopes():
                started += self.start_chain(job, each, StartRequest("after"))
        return started

    # --- cancel, retry --------------------------------------------------------------------------
    def cancel(self, run_id: int) -> Run:
        """Ask a run to stop (a run whose process is gone, or that has not started, ends at once;
        a submission's unfinished batches are cancelled); the run as it stands."""
        run = self.get(run_id)
        if run.status.terminal:
            raise UsageError(
                f"run {run_id} already finished ({run.status.value}); nothing to cancel"
            )
        return self.kind_of(run).cancel(self, run)

    def retry(
        self, run_id: int, outcomes: Sequence[str] = (), *, include_invalid: bool = False
    ) -> Retried:
        """Run an ended run again: a new run linked to it, or (a submission) the requests with
        these outcomes sent again in the same run (the invalid failures only with
        ``include_invalid``)."""
        run = self.get(run_id)
        return self.kind_of(run).retry(self, run, outcomes, include_invalid=include_invalid)

    # --- recovery -------------------------------------------------------------------------------
    def abandon_lost(self, me: Owner, now: datetime) -> list[Abandoned]:
        """Record as abandoned the active runs whose process is gone: dead on this host, or
        silent past its lease elsewhere. Their leftover processes are stopped."""
        candidates = {run.id: run for run in self.store.runs_past_lease(now)}
        for run in self.store.active_runs():
            # A run still queued when its process died on this host (kill -9 before its first
            # attempt) is taken at once: its lease is long (it covers lock waits and the start
            # ping), and no lock of its own leads the next run to it under concurrency "allow".
            # A running run waits for its lease, as documented, or for the next run's lock.
            if run.status is RunStatus.QUEUED and run.owner is not None and is_dead(run.owner):
                candidates.setdefault(run.id, run)
        abandoned: list[Abandoned] = []
        for run in candidates.values():
            if run.owner is not None and run.owner == me:
                continue
            died = run.owner is not None and is_dead(run.owner)
            if run.owner is not None and run.owner.host == me.host and not died:
                continue  # alive here, only slow to renew: its lock decides
            reason = "its lease expired"
            if run.owner is not None:
                where = f"host {run.owner.host}, pid {run.owner.pid}"
                what = "died" if died else "stopped renewing its lease"
                reason = f"its process ({where}) {what}"
            if not self.store.set_status(
                run.id, RunStatus.ABANDONED, now, reason=reason, only_if=ACTIVE_RUN_STATUSES
            ):
                continue
            stopped = None
            if run.owner is not None:
                stopped = process_groups.stop_leftovers(self.store, run.id, run.owner.host, now)
            abandoned.append(Abandoned(run, reason, stopped or "", self._retry_job(run)))
        return abandoned

    def _retry_job(self, run: Run) -> JobConfig | None:
        """The job to run again after ``run`` was abandoned: when its retries cover an error
        and attempts are left."""
        job = self.config.jobs.get(run.job)
        if job is None or "error" not in job.retries.on or run.attempts >= job.retries.max_attempts:
            return None
        return job


__all__ = ["SUBMISSION_KIND", "Abandoned", "Retried", "Runs", "job_for_submission"]

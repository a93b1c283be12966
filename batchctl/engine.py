"""A run executing in this process (a job of kind command or python): create, lock, attempt,
retry, finish, cancel. Starting it under the job's policies, chaining and recovery for every kind
are ``batchctl.runs``'s, which calls in here.

The engine records intent before acting and outcomes as they arrive: a run row exists before
anything executes, every status change is a stored transition, and a lock in the store (with an
owner and a lease) keeps two runs of the same job and scope apart. The engine never prints; it
reports to an optional observer and returns ``Run`` values.
"""

from __future__ import annotations

import os
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from batchctl import jobs, pings, process_groups
from batchctl.config import Config, JobConfig
from batchctl.durations import format_duration
from batchctl.errors import NotFoundError, UsageError
from batchctl.jobs.context import AttemptContext, Event, Progress, Wake
from batchctl.jobs.secrets import Masker
from batchctl.owners import is_dead, this_process
from batchctl.pings import Pinger
from batchctl.records import (
    ACTIVE_RUN_STATUSES,
    LockHolder,
    LogEntry,
    LogLevel,
    Owner,
    Run,
    RunOutcome,
    RunStatus,
    utcnow,
)
from batchctl.store.base import Store

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class EngineSettings:
    lease: float = 30.0  # seconds a run's lease and lock last without renewal
    poll: float = 0.1  # how often a running attempt is checked
    log_flush_interval: float = 0.2
    log_flush_lines: int = 500
    cancel_check: float = 0.5  # how often a running attempt looks for `batchctl cancel`

    @property
    def heartbeat(self) -> float:
        return self.lease / 3


class RunObserver(Protocol):
    """What the CLI (or the daemon) hears while a run proceeds. All calls come on one thread."""

    def run_started(self, run_id: int, job: JobConfig, scope: str | None) -> None: ...

    def progress(self, run_id: int, done: int, total: int | None) -> None: ...

    def log(self, entry: LogEntry) -> None: ...

    def retrying(self, run_id: int, attempt: int, outcome: RunOutcome, delay: float) -> None: ...

    def run_finished(self, run: Run) -> None: ...


def lock_key(job: str, scope: str | None) -> str:
    return f"{job}/{scope}" if scope else job


class Engine:
    def __init__(
        self,
        store: Store,
        config: Config,
        *,
        clock: Clock = utcnow,
        observer: RunObserver | None = None,
        cancel: threading.Event | None = None,
        settings: EngineSettings = EngineSettings(),
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.observer = observer
        self.cancel_event = cancel or threading.Event()
        self.settings = settings
        self.rand = rand
        self.owner = this_process()

    # --- public operations ----------------------------------------------------------------------
    def run(
        self,
        job: JobConfig,
        scope: str | None = None,
        *,
        trigger: str = "manual",
        retry_of: int | None = None,
        scheduled_for: datetime | None = None,
    ) -> Run:
        """Run one (job, scope) to its end, attempts and retries included, and return the run.

        The lifecycle (``batchctl.runs``) calls it for a job whose kind runs here, once it has
        checked the scope and that the job is enabled."""

        key = lock_key(job.name, scope)
        locked = job.concurrency != "allow"
        now = self.clock()
        if self.cancel_event.is_set() or job.ping_url:
            # Cancelled: recorded, then ended before its first attempt. A start ping is sent
            # between the run's record and its first attempt: the run waits for it queued.
            started = False
            run_id = self.store.create_run(
                job=job.name,
                scope=scope,
                trigger=trigger,
                status=RunStatus.QUEUED,
                max_attempts=job.retries.max_attempts,
                now=now,
                retry_of=retry_of,
                scheduled_for=scheduled_for,
                owner=self.owner,
                lease_until=now + self._queued_lease(job),
            )
        else:
            # The common case in one write: the run, its lock when it is free, its first attempt.
            run_id, started = self.store.start_run(
                job=job.name,
                scope=scope,
                trigger=trigger,
                max_attempts=job.retries.max_attempts,
                now=now,
                owner=self.owner,
                lease_until=now + timedelta(seconds=self.settings.lease),
                queued_until=now + self._queued_lease(job),
                retry_of=retry_of,
                scheduled_for=scheduled_for,
                lock=key if locked else None,
            )
        if self.observer:
            self.observer.run_started(run_id, job, scope)
        if locked and not started:
            holder = self._acquire(key, run_id, replace=job.concurrency == "replace", job=job)
            if holder is not None:
                reason = (
                    f"locked out: run {holder.run_id} of {key} is still running "
                    f"(host {holder.owner.host}, pid {holder.owner.pid})"
                )
                self.store.set_status(run_id, RunStatus.SKIPPED, self.clock(), reason=reason)
                return self._finished(run_id)
        pinger = Pinger(job.ping_url)
        pinger.start()
        released = False
        try:
            released = self._attempts(job, scope, run_id, key, started=started)
        except BaseException as exc:
            # Never leave a run "running" behind an error of our own (or a second Ctrl-C).
            cause = "cancelled" if isinstance(exc, KeyboardInterrupt) else "error"
            status = RunStatus.CANCELLED if cause == "cancelled" else RunStatus.FAILED
            error = f"batchctl stopped: {type(exc).__name__}: {exc}"
            self.store.finish_run(
                run_id, RunOutcome(status, error=error, cause=cause), self.clock()
            )
            raise
        finally:
            if locked and not released:
                self.store.release_lock(key, run_id)
        run = self._finished(run_id)
        pinger.finish(run.status is RunStatus.COMPLETED)
        return run

    def cancel(self, run_id: int) -> Run:
        """Ask a run to stop. A run whose process is gone, or that has not started, ends at once."""
        run = self.get(run_id)
        if run.status.terminal:
            raise UsageError(
                f"run {run_id} already finished ({run.status.value}); nothing to cancel"
            )
        self.store.request_cancel(run_id)
        now = self.clock()
        gone = (
            run.owner is None
            or is_dead(run.owner)
            or (run.lease_until is not None and run.lease_until < now)
        )
        if run.status is RunStatus.QUEUED or gone:
            reason = "cancelled" if run.owner is None else "cancelled; its process had stopped"
            ended = self.store.set_status(
                run_id, RunStatus.CANCELLED, now, reason=reason, only_if=ACTIVE_RUN_STATUSES
            )
            if ended and run.owner is not None:
                process_groups.stop_leftovers(self.store, run_id, run.owner.host, now)
            self.store.release_lock(lock_key(run.job, run.scope), run_id)
        return self.get(run_id)

    def get(self, run_id: int) -> Run:
        run = self.store.get_run(run_id)
        if run is None:
            raise NotFoundError(f"no run with id {run_id}", hint="list runs with: batchctl status")
        return run

    # --- locking --------------------------------------------------------------------------------
    def _lease_until(self) -> datetime:
        return self.clock() + timedelta(seconds=self.settings.lease)

    def _queued_lease(self, job: JobConfig) -> timedelta:
        """How long a queued run's lease lasts, unrenewed: long enough to wait out a replaced
        run (its grace, a heartbeat and a second), send the start ping (two tries) and begin the
        first attempt, which renews it. Only a process that died leaves it to expire (on this
        host that is seen at once, without waiting for the lease)."""
        waits = job.grace + self.settings.heartbeat + 1.0 + pings.TRIES * pings.TIMEOUT_S
        return timedelta(seconds=self.settings.lease + waits)

    def _acquire(
        self, key: str, run_id: int, *, replace: bool, job: JobConfig
    ) -> LockHolder | None:
        """Take the (job, scope) lock; return the live holder when it cannot be had."""
        holder = self._take_or_recover(key, run_id)
        if holder is None or not replace:
            return holder
        self.store.request_cancel(holder.run_id)
        give_up = time.monotonic() + job.grace + self.settings.heartbeat + 1.0
        while holder is not None and time.monotonic() < give_up:
            time.sleep(self.settings.poll)
            holder = self._take_or_recover(key, run_id)
        if holder is None:
            return None
        self.store.set_status(
            holder.run_id,
            RunStatus.CANCELLED,
            self.clock(),
            reason=f"replaced by run {run_id}; it did not stop in time",
            only_if=ACTIVE_RUN_STATUSES,
        )
        stolen = self.store.steal_lock(
            key, holder, run_id, self.owner, self._lease_until(), self.clock()
        )
        return None if stolen else self.store.get_lock(key)

    def _take_or_recover(self, key: str, run_id: int) -> LockHolder | None:
        taken, holder = self.store.try_lock(
            key, run_id, self.owner, self._lease_until(), self.clock()
        )
        if taken:
            if holder is not None:  # its lease ran out: the process holding it is gone or stuck
                self._abandon(holder, "its lease expired")
            return None
        assert holder is not None
        if not is_dead(holder.owner):
            return holder
        # Its process is gone (kill -9, power loss): the lock is stale and the run abandoned.
        if not self.store.steal_lock(
            key, holder, run_id, self.owner, self._lease_until(), self.clock()
        ):
            return self.store.get_lock(key)
        self._abandon(holder, "its process died")
        return None

    def _abandon(self, holder: LockHolder, why: str) -> None:
        if self.store.set_status(
            holder.run_id,
            RunStatus.ABANDONED,
            self.clock(),
            reason=f"{why} (host {holder.owner.host}, pid {holder.owner.pid})",
            only_if=ACTIVE_RUN_STATUSES,
        ):
            process_groups.stop_leftovers(
                self.store, holder.run_id, holder.owner.host, self.clock()
            )

    # --- attempts -------------------------------------------------------------------------------
    def _attempts(
        self, job: JobConfig, scope: str | None, run_id: int, key: str, *, started: bool
    ) -> bool:
        """Run the attempts (the first one already recorded as started when ``started``) and
        record the run's end; True when that end released the run's lock with it."""
        outcome = RunOutcome(
            RunStatus.CANCELLED, error="cancelled before it started", cause="cancelled"
        )
        lock = key if job.concurrency != "allow" else None
        for number in range(1, job.retries.max_attempts + 1):
            if not (started and number == 1):
                if self.cancel_event.is_set():
                    break
                if not self.store.start_attempt(
                    run_id, number, self.owner, self._lease_until(), self.clock()
                ):
                    return False  # cancelled from elsewhere before this attempt began
            outcome = _Attempt(self, job, scope, run_id, number, key).execute()
            if not self._should_retry(job, outcome, number):
                # The attempt's end, the run's end and the lock's release: one write.
                self.store.finish_run(run_id, outcome, self.clock(), attempt=number, lock=lock)
                return lock is not None
            self.store.finish_attempt(run_id, number, outcome, self.clock())
            delay = job.retries.delay(number, self.rand())
            if self.observer:
                self.observer.retrying(run_id, number, outcome, delay)
            self.store.set_status(
                run_id,
                RunStatus.RETRYING,
                self.clock(),
                reason=f"attempt {number} {outcome.status.value}: {outcome.error}; "
                f"retrying in {format_duration(delay)}",
            )
            if not self._backoff(delay, run_id, key):
                outcome = RunOutcome(
                    RunStatus.CANCELLED, error="cancelled while waiting to retry", cause="cancelled"
                )
                break
        self.store.finish_run(run_id, outcome, self.clock(), lock=lock)
        return lock is not None

    def _should_retry(self, job: JobConfig, outcome: RunOutcome, number: int) -> bool:
        return (
            outcome.status is not RunStatus.COMPLETED
            and outcome.cause in job.retries.on
            and number < job.retries.max_attempts
            and not self.cancel_event.is_set()
        )

    def _backoff(self, delay: float, run_id: int, key: str) -> bool:
        """Wait ``delay`` seconds keeping the lease alive; False if cancelled meanwhile."""
        end = time.monotonic() + delay
        while (left := end - time.monotonic()) > 0:
            if self.cancel_event.wait(min(left, self.settings.heartbeat)):
                return False
            if not self.heartbeat(run_id, key):
                return False
        return True

    def heartbeat(self, run_id: int, key: str) -> bool:
        """Renew the run's lease and lock; False when the run should stop (cancel requested,
        or the lock was lost to another run after our lease ran out)."""
        lease = self._lease_until()
        run = self.store.renew_run(run_id, self.owner, lease)
        held = self.store.renew_lock(key, run_id, lease) or self.store.get_lock(key) is None
        return held and run is not None and not run.cancel_requested and not run.status.terminal

    def _finished(self, run_id: int) -> Run:
        run = self.get(run_id)
        if self.observer:
            self.observer.run_finished(run)
        return run


class _Attempt:
    """One attempt: start the execution, pump its events into the store, enforce the timeout."""

    def __init__(
        self, engine: Engine, job: JobConfig, scope: str | None, run_id: int, number: int, key: str
    ) -> None:
        self.engine = engine
        self.store = engine.store
        self.settings = engine.settings
        self.job = job
        self.run_id = run_id
        self.number = number
        self.key = key
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        # The secrets the job can see (its environment, the database URL's password): masked
        # in everything recorded from it; the job still gets them.
        self.masker = Masker.for_environment(
            {**os.environ, **job.env},
            named=engine.config.key_variables(),
            urls=(engine.store.location,),
        )
        self.ctx = AttemptContext(
            run_id=run_id,
            job=job.name,
            scope=scope,
            attempt=number,
            options=job.options,
            env=job.env,
            events=self.events,
            clock=engine.clock,
            masker=self.masker,
        )
        self.pending_logs: list[LogEntry] = []
        self.progress: Progress | None = None
        self.progress_stored: Progress | None = None
        self.stopped_by = ""  # why the engine stopped the attempt, if it did

    def execute(self) -> RunOutcome:
        started = time.monotonic()
        deadline = started + self.job.timeout if self.job.timeout else None
        next_beat = started + self.settings.heartbeat
        next_check = started + self.settings.cancel_check
        last_flush = started
        stopping = False
        execution = jobs.start(self.job, self.ctx, self.engine.config.base_dir)
        self._record_process_group(execution)
        while True:
            self._drain(self.settings.poll)
            outcome = execution.poll()
            if outcome is not None:
                break
            now = time.monotonic()
            if not stopping and self.engine.cancel_event.is_set():
                stopping = self._stop(
                    execution, "cancelled", "cancel requested (interrupt)", "by Ctrl-C or SIGTERM"
                )
            if not stopping and deadline is not None and now >= deadline:
                stopping = self._stop(
                    execution, "timeout", f"timed out after {format_duration(self.job.timeout)}"
                )
            if now >= next_beat:
                next_beat = now + self.settings.heartbeat
                if not stopping and not self.engine.heartbeat(self.run_id, self.key):
                    stopping = self._stop(execution, "cancelled", "cancel requested", "on request")
            elif now >= next_check and not stopping:
                next_check = now + self.settings.cancel_check
                if self._cancel_requested():
                    stopping = self._stop(
                        execution, "cancelled", "cancel requested", "by batchctl cancel"
                    )
            if now - last_flush >= self.settings.log_flush_interval:
                last_flush = now
                self._flush()
        self._drain(0)
        outcome = outcome._replace(
            error=self.masker.optional(outcome.error),
            errors=tuple(self.masker.text(e) for e in outcome.errors),
        )
        if outcome.error and outcome.status is not RunStatus.COMPLETED:
            self._engine_log(LogLevel.ERROR, self._ended(outcome))
        for message in outcome.errors:
            self._engine_log(LogLevel.ERROR, message, source="result")
        self._flush(final=True)
        return outcome

    def _record_process_group(self, execution: jobs.Execution) -> None:
        # So that, should this process be killed, whoever abandons the run can stop the group.
        group = execution.process_group()
        started = process_groups.start_time(group) if group is not None else None
        if group is not None and started is not None:
            self.store.record_attempt_process(self.run_id, self.number, group, started)

    def _cancel_requested(self) -> bool:
        signal = self.store.run_signal(self.run_id)
        return signal is None or signal[1] or signal[0].terminal

    def _stop(self, execution: jobs.Execution, cause: str, message: str, why: str = "") -> bool:
        self._engine_log(LogLevel.WARNING, message)
        self.stopped_by = why
        execution.cancel(cause)
        return True

    def _ended(self, outcome: RunOutcome) -> str:
        """How the attempt ended, saying its status once: "attempt 1 cancelled (by batchctl
        cancel)", "attempt 2 failed: exit code 3"."""
        status = outcome.status.value
        detail = outcome.error or ""
        if detail == status or detail.startswith(f"{status};"):
            detail = detail[len(status) :]  # a cancelled job's error is "cancelled[; ...]"
        elif detail:
            detail = f": {detail}"
        why = f" ({self.stopped_by})" if self.stopped_by and status == "cancelled" else ""
        return f"attempt {self.number} {status}{why}{detail}"

    def _drain(self, wait: float) -> None:
        try:
            event = self.events.get(timeout=wait) if wait else self.events.get_nowait()
            while True:
                self._handle(event)
                event = self.events.get_nowait()
        except queue.Empty:
            return

    def _handle(self, event: Event) -> None:
        observer = self.engine.observer
        if isinstance(event, LogEntry):
            self.pending_logs.append(event)
            if observer:
                observer.log(event)
            if len(self.pending_logs) >= self.settings.log_flush_lines:
                self._flush()
        elif isinstance(event, Progress):
            self.progress = event
            if observer:
                observer.progress(self.run_id, event.done, event.total)
        elif isinstance(event, Wake):
            pass

    def _engine_log(self, level: LogLevel, message: str, **fields: object) -> None:
        self.pending_logs.append(
            LogEntry(
                run_id=self.run_id,
                attempt=self.number,
                at=self.engine.clock(),
                level=level,
                message=self.masker.text(message),
                stream="engine",
                fields=self.masker.value(dict(fields)),
            )
        )

    def _flush(self, *, final: bool = False) -> None:
        if self.pending_logs:
            self.store.append_logs(self.pending_logs)
            self.pending_logs = []
        if self.progress is not None and self.progress != self.progress_stored:
            self.store.record_progress(self.run_id, self.progress.done, self.progress.total)
            self.progress_stored = self.progress


__all__ = ["Engine", "EngineSettings", "Owner", "RunObserver", "lock_key"]

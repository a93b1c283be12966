"""The store interface the core depends on; every back end implements it.

``Store`` is the union of narrow protocols, one per part of the core: a module that only reads
runs asks for a ``RunStore`` and sees those methods alone. Take the narrowest that serves.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from batchctl.records import (
    Attempt,
    DaemonInfo,
    LockHolder,
    LogEntry,
    LogLevel,
    ModelTokens,
    Owner,
    Part,
    PartPlanRow,
    PrunableRun,
    RequestResult,
    RequestRow,
    RequestState,
    Run,
    RunFilter,
    RunOutcome,
    RunStats,
    RunStatus,
    SchedulePosition,
    Submission,
    Tick,
    Transition,
)


class BatchStore(Protocol):
    """The tables of OpenAI batch submissions: submissions, parts, requests."""

    def instance_id(self) -> str: ...

    def submission_for_input(self, sha256: str) -> int | None: ...

    def record_submission(
        self,
        *,
        job: str,
        scope: str | None,
        trigger: str,
        now: datetime,
        submission: Submission,
        parts: Sequence[PartPlanRow],
        requests: Iterable[RequestRow],
        scheduled_for: datetime | None = None,
    ) -> int:
        """Record the run, its submission, parts and every request, in one transaction."""

    def get_submission(self, run_id: int) -> Submission | None: ...

    def submissions_in_flight(self) -> list[int]: ...

    def fail_unsent_submission(
        self, run_id: int, error: str, now: datetime, status: RunStatus = ...
    ) -> bool:
        """Record a submission that no batch was created for as ended (``failed``, or
        ``cancelled`` when interrupted), its parts ``not_sent``; False (and nothing changed) if
        a create was attempted or the run has ended."""

    def known_tokens(self, tokens: Sequence[str]) -> set[str]:
        """Those of these file-directory tokens that a recorded submission has."""

    def parts(self, run_id: int) -> list[Part]: ...

    def parts_for_runs(self, run_ids: Sequence[int]) -> dict[int, list[Part]]: ...

    def providers_of(self, run_ids: Sequence[int]) -> dict[int, str]:
        """The provider of each of these submissions (by run id)."""

    def runs_for_batches(self, batch_ids: Sequence[str]) -> dict[str, int]:
        """The run tracking each of these remote batch ids, for those that are tracked."""

    def enqueued_bytes(self, provider: str, model: str, *, besides: int) -> int:
        """The input bytes of ``model``'s parts that may be enqueued at ``provider``."""
        ...

    def batch_ended_since(self, provider: str, model: str, since: datetime) -> bool: ...

    def update_part(self, part_id: int, **columns: Any) -> None: ...

    def update_parts(
        self, changes: Sequence[tuple[int, Mapping[str, Any]]], logs: Sequence[LogEntry] = ()
    ) -> None:
        """Update several parts (``(part id, columns)`` each) and append ``logs``, in one
        transaction: a refresh records all it learnt of a submission at once."""

    def record_results(self, part_id: int, results: Iterable[RequestResult], now: datetime) -> None:
        """Record the outcomes read from a part's files, and mark the part downloaded."""

    def settle_pending(self, part_id: int, outcome: str, error_code: str, message: str) -> int:
        """Give every request of the part that has no outcome yet this one; how many."""

    def requests_in_order(self, run_id: int, *, order: str = "input") -> Iterator[RequestState]: ...

    def requests_to_resend(
        self, run_id: int, outcomes: Sequence[str], max_attempts: int
    ) -> list[RequestState]: ...

    def record_resend_part(
        self, run_id: int, part: PartPlanRow, moved: Sequence[tuple[str, int, int]]
    ) -> int:
        """Add a part that re-sends requests: (custom_id, line_offset, line_length) in its file."""

    def request_summary(self, run_id: int) -> dict[str, int]:
        """Counts by outcome ("pending" for none yet) and the token totals."""

    def request_summaries(self, run_ids: Sequence[int]) -> dict[int, dict[str, int]]:
        """``request_summary`` of each of these runs (those without requests: empty counts)."""

    def failure_codes(
        self, run_ids: Sequence[int]
    ) -> dict[int, list[tuple[str | None, int | None, int]]]:
        """Each run's failed requests counted by ``(error_code, status_code)``: what
        ``batches.failures`` tells retryable from invalid failures by."""
        ...

    def tokens_by_model(self, run_id: int) -> list[ModelTokens]: ...

    def output_history(self, job: str) -> dict[str, tuple[int, int]]:
        """Per model, the requests of the job's submissions that succeeded and their output
        tokens: what a dry run's output estimate learns from."""

    def mark_merged(self, run_id: int, results_path: str, now: datetime) -> None: ...

    def reopen_submission(self, run_id: int, now: datetime, reason: str) -> None:
        """Put a settled submission back in flight (its run back to running) for a retry."""

    def take_submission_lease(
        self, run_id: int, owner: Owner, until: datetime, now: datetime
    ) -> Owner | None:
        """Become the one process driving this submission; else return who is."""

    def release_submission_lease(self, run_id: int, owner: Owner) -> None: ...

    def finish_submission_run(
        self,
        run_id: int,
        status: RunStatus,
        *,
        items_processed: int,
        items_failed: int,
        total_tokens: int,
        total_cost: float,
        unpriced_models: Sequence[str] = (),
        error: str | None,
        now: datetime,
        finished_at: datetime | None = None,
    ) -> bool:
        """End the run (unless it already ended): ``finished_at`` is when its work ended (the
        API's end of its last batch; default ``now``), ``now`` when batchctl recorded it."""


class ScheduleStore(Protocol):
    """Ticks, cursors and pauses: when each job fires."""

    def cursor(self, job: str, scope: str | None) -> datetime | None: ...

    def set_cursor(self, job: str, scope: str | None, moment: datetime) -> None:
        """Start a job's cursor (only if it has none): its first tick comes after ``moment``."""

    def record_ticks(
        self,
        job: str,
        scope: str | None,
        *,
        pending: Sequence[datetime],
        closed: Sequence[tuple[datetime, str, str]],
        cursor: datetime,
        priority: int,
        now: datetime,
    ) -> list[int]:
        """Insert ticks (if absent) and move the cursor forward, in one transaction.

        ``pending`` ticks are to fire; ``closed`` ones are (time, status, reason) — missed or
        skipped. Returns the ids of the pending ticks this call inserted (none if another
        process got there first).
        """

    def claim_ticks(
        self,
        limit: int,
        now: datetime,
        *,
        busy: Mapping[tuple[str, str | None], datetime] | None = None,
        serial_jobs: Collection[str] = (),
        claimer: str | None = None,
        closing: Tick | None = None,
    ) -> list[Tick]:
        """Take up to ``limit`` pending ticks, highest priority then oldest first, as fired;
        ticks another daemon is claiming at this moment are skipped, not waited for, so two
        daemons never get the same tick.

        ``busy`` maps a running (job, scope) to when its run was handed out. For a job in
        ``serial_jobs``, a tick that was already due then waits (a backlog, e.g. catch-up, runs
        one tick after the other, in order); a tick that came due later is handed out, and the
        job's concurrency policy decides (forbid skips it, replace replaces the running one).

        ``closing``: a tick the claimer has fired, closed first in the same transaction (as
        ``close_tick`` would), so a worker's end of one tick and claim of the next is one write.
        """

    def refire_orphaned_ticks(self, stale_before: datetime, dead: Collection[str] = ()) -> int:
        """Put back to pending the fired ticks without a run whose daemon is gone: its heartbeat
        older than ``stale_before``, stopped, or one of the ``dead`` instances."""

    def pending_tick_count(self) -> int: ...

    def close_tick(
        self, tick_id: int, status: str, *, run_id: int | None = None, reason: str | None = None
    ) -> None: ...

    def reopen_ticks(self, job: str, since: datetime, *, latest_only: bool, limit: int) -> int:
        """Make ticks skipped while the job was paused pending again (``resume`` with catch-up)."""

    def ticks(self, *, job: str | None = None, limit: int = 100) -> list[Tick]: ...

    def last_tick_per_job(self) -> dict[str, Tick]: ...

    def tick_counts(self, since: datetime) -> dict[tuple[str, str], int]: ...

    def pause(self, job: str, now: datetime, reason: str | None) -> bool: ...

    def resume(self, job: str) -> datetime | None:
        """Lift a pause; when it began, or None if the job was not paused."""

    def paused(self) -> dict[str, datetime]: ...


class MaintenanceStore(Protocol):
    """Aggregates for metrics and health, and the deletes of ``prune``."""

    def run_stats(self) -> list[RunStats]:
        """Per (job, status): run count, tokens, cost, duration sum and count, last finish."""

    def tick_stats(self, statuses: Sequence[str]) -> dict[tuple[str, str], int]:
        """Tick counts per (job, status) for the given statuses (through the status index)."""

    def part_stats(self) -> dict[tuple[str, str], int]:
        """Parts of the submissions still in flight (not merged, run active), by provider and
        remote status."""

    def schedule_positions(self) -> dict[tuple[str, str | None], SchedulePosition]:
        """Per (job, scope) with a cursor: the cursor and the newest tick's scheduled time."""

    def latest_daemon(self, mode: str) -> DaemonInfo | None:
        """The daemon record of ``mode`` ("daemon" or "once") not marked stopped, newest
        heartbeat first; None if there is none."""

    def daemons_since(self, since: datetime, limit: int = 50) -> list[DaemonInfo]:
        """Daemon records that beat at or after ``since``, or are not marked stopped; newest
        heartbeat first."""

    def prunable_runs(
        self, before: datetime, *, after_id: int = 0, limit: int = 500
    ) -> list[PrunableRun]:
        """Runs that ended before ``before`` and may be deleted, by id, ``limit`` at a time."""

    def unmerged_finished_count(self, before: datetime) -> int:
        """Ended runs older than ``before`` kept because their submission is not merged."""

    def delete_runs(self, run_ids: Sequence[int], before: datetime) -> list[int]:
        """Delete these runs (their attempts, transitions, logs, submission, parts and requests
        go with them by ``ON DELETE CASCADE``) if they are still prunable; the ids deleted."""

    def prune_ticks(
        self, before: datetime, firing_since: datetime, *, dry_run: bool = False
    ) -> int:
        """Delete ticks scheduled before ``before``; never pending ones, nor one fired since
        ``firing_since`` whose run is not recorded yet, nor one whose run is still active.
        The cursors stay, so no deleted tick fires again."""

    def prune_daemons(
        self, before: datetime, dead_before: datetime, *, dry_run: bool = False
    ) -> int:
        """Delete daemon records that stopped before ``before``, and those never marked
        stopped whose last heartbeat is older than both ``before`` and ``dead_before`` (their
        process died); never the holder of the daemon lock."""

    def compact(self, *, vacuum: bool = False) -> None: ...


class DaemonStore(Protocol):
    """The daemon lease (one daemon per SQLite file) and the daemons' records."""

    def take_daemon_lock(
        self, instance: str, owner: Owner, lease_until: datetime, now: datetime
    ) -> tuple[str, Owner] | None:
        """Take the daemon lease (on the lease clock); else return (instance, owner) of the live
        holder."""

    def daemon_lock_holder(self) -> tuple[str, Owner, datetime] | None: ...

    def renew_daemon_lock(self, instance: str, lease_until: datetime) -> bool: ...

    def release_daemon_lock(self, instance: str) -> None: ...

    def register_daemon(self, instance: str, owner: Owner, mode: str, now: datetime) -> None: ...

    def daemon_heartbeat(self, instance: str, now: datetime, *, passed: bool = False) -> None: ...

    def daemon_stopped(self, instance: str, now: datetime) -> None: ...

    def daemons(self, limit: int = 20) -> list[DaemonInfo]: ...


class RunStore(Protocol):
    """Runs, their attempts, transitions and log lines."""

    def create_run(
        self,
        *,
        job: str,
        scope: str | None,
        trigger: str,
        status: RunStatus,
        max_attempts: int,
        now: datetime,
        reason: str | None = None,
        retry_of: int | None = None,
        scheduled_for: datetime | None = None,
        owner: Owner | None = None,
        lease_until: datetime | None = None,
    ) -> int:
        """Record a new run. A ``queued`` run may name its ``owner`` and a lease: should that
        process die before the first attempt, the run is found past its lease and abandoned."""

    def start_run(
        self,
        *,
        job: str,
        scope: str | None,
        trigger: str,
        max_attempts: int,
        now: datetime,
        owner: Owner,
        lease_until: datetime,
        queued_until: datetime,
        retry_of: int | None = None,
        scheduled_for: datetime | None = None,
        lock: str | None = None,
    ) -> tuple[int, bool]:
        """Record a new run and, in the same transaction, start its first attempt (lease
        ``lease_until``), taking the lock ``lock`` first when one is named. Returns (run id,
        started). When ``lock`` has any holder row, even one past its lease, nothing is started:
        the run is left ``queued`` (lease ``queued_until``), as ``create_run`` leaves it, for
        the caller to take the lock its own way. The transitions are those of ``create_run``
        then ``start_attempt``."""

    def start_attempt(
        self, run_id: int, number: int, owner: Owner, lease_until: datetime, now: datetime
    ) -> bool:
        """Mark the run running under ``owner`` and open attempt ``number``; False if the run
        is no longer active (cancelled meanwhile)."""

    def finish_attempt(
        self, run_id: int, number: int, outcome: RunOutcome, now: datetime
    ) -> None: ...

    def record_attempt_process(self, run_id: int, number: int, pgid: int, started: str) -> None:
        """Note the process group attempt ``number`` runs in, and when its leader started (to
        stop the group if the run is abandoned: see ``batchctl.process_groups``)."""

    def attempt_process(self, run_id: int) -> tuple[int, int, str] | None:
        """(attempt number, process group, leader start time) of the run's newest unfinished
        attempt that recorded one."""

    def set_status(
        self,
        run_id: int,
        status: RunStatus,
        now: datetime,
        *,
        reason: str | None = None,
        only_if: Sequence[RunStatus] = (),
    ) -> bool:
        """Move the run to ``status`` and record the transition; with ``only_if``, only from one
        of those statuses (returns False when the run was elsewhere)."""

    def finish_run(
        self,
        run_id: int,
        outcome: RunOutcome,
        now: datetime,
        *,
        attempt: int | None = None,
        lock: str | None = None,
    ) -> bool:
        """Record the run's final status and figures, if it is still active; False if it was
        not. In the same transaction, whether or not the run was still active: with
        ``attempt``, that attempt's end (as ``finish_attempt``); with ``lock``, the release of
        the run's hold on that lock (as ``release_lock``)."""

    def record_progress(self, run_id: int, done: int, total: int | None) -> None: ...

    def renew_run(self, run_id: int, owner: Owner, lease_until: datetime) -> Run | None:
        """Extend the run's lease and return it (to see ``cancel_requested``); None if gone."""

    def request_cancel(self, run_id: int) -> None: ...

    def get_run(self, run_id: int) -> Run | None: ...

    def list_runs(self, query: RunFilter) -> list[Run]: ...

    def iter_runs(self, query: RunFilter, *, chunk: int = 1000) -> Iterator[Run]:
        """The runs of ``list_runs``, newest first, fetched ``chunk`` at a time: memory stays
        bounded however many match, and no query stays open between chunks."""

    def count_runs(self, query: RunFilter) -> int: ...

    def last_run_per_job(self) -> dict[str, Run]: ...

    def attempts(self, run_id: int) -> list[Attempt]: ...

    def transitions(self, run_id: int) -> list[Transition]: ...

    # --- logs -------------------------------------------------------------------------------
    def append_logs(self, entries: Sequence[LogEntry]) -> None: ...

    def logs(
        self,
        run_id: int,
        *,
        after_id: int = 0,
        min_level: LogLevel | None = None,
        limit: int | None = None,
    ) -> list[LogEntry]: ...

    def iter_logs(
        self,
        run_id: int,
        *,
        after_id: int = 0,
        min_level: LogLevel | None = None,
        chunk: int = 1000,
    ) -> Iterator[LogEntry]:
        """The lines of ``logs``, oldest first, fetched ``chunk`` at a time."""

    def run_signal(self, run_id: int) -> tuple[RunStatus, bool] | None:
        """The run's status and whether a cancel was requested (cheap: polled often)."""

    def runs_past_lease(self, now: datetime) -> list[Run]:
        """Active runs whose owner's lease has run out (on the lease clock): their process
        died or hangs."""

    def active_runs(self, job: str | None = None) -> list[Run]: ...


class LockStore(Protocol):
    """The (job, scope) locks that keep a job's runs from overlapping."""

    # --- locks ------------------------------------------------------------------------------
    def try_lock(
        self, key: str, run_id: int, owner: Owner, lease_until: datetime, now: datetime
    ) -> tuple[bool, LockHolder | None]:
        """Take the lock if it is free or its lease has expired: (True, the expired holder it
        replaced, if any). Else (False, the holder)."""

    def steal_lock(
        self,
        key: str,
        holder: LockHolder,
        run_id: int,
        owner: Owner,
        lease_until: datetime,
        now: datetime,
    ) -> bool:
        """Take the lock from ``holder`` (judged dead by the caller) if it still holds it."""

    def renew_lock(self, key: str, run_id: int, lease_until: datetime) -> bool: ...

    def release_lock(self, key: str, run_id: int) -> None: ...

    def get_lock(self, key: str) -> LockHolder | None: ...


class Store(
    RunStore, LockStore, BatchStore, ScheduleStore, DaemonStore, MaintenanceStore, Protocol
):
    """Everything a store does: for the code that opens one and hands out its parts."""

    # Where the store is, as given to ``open_store`` (a URL may hold a password): for opening it
    # again, in another thread or process. Never print it; messages use ``shown``.
    location: str
    shown: str  # the location without a password
    # True when several daemons (on several hosts) may share the database (PostgreSQL): no
    # single-daemon lock, every daemon fires and refreshes.
    shared: bool

    def close(self) -> None: ...

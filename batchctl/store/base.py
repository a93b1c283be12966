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
    ) -> int: ...

    def get_submission(self, run_id: int) -> Submission | None: ...

    def submissions_in_flight(self) -> list[int]: ...

    def fail_unsent_submission(
        self, run_id: int, error: str, now: datetime, status: RunStatus = ...
    ) -> bool: ...

    def known_tokens(self, tokens: Sequence[str]) -> set[str]: ...

    def parts(self, run_id: int) -> list[Part]: ...

    def parts_for_runs(self, run_ids: Sequence[int]) -> dict[int, list[Part]]: ...

    def providers_of(self, run_ids: Sequence[int]) -> dict[int, str]:
        """The provider of each of these submissions (by run id)."""
        ...

    def runs_for_batches(self, batch_ids: Sequence[str]) -> dict[str, int]: ...

    def update_part(self, part_id: int, **columns: Any) -> None: ...

    def update_parts(
        self, changes: Sequence[tuple[int, Mapping[str, Any]]], logs: Sequence[LogEntry] = ()
    ) -> None:
        """Update several parts (``(part id, columns)`` each) and append ``logs``, in one
        transaction: a refresh records all it learnt of a submission at once."""
        ...

    def record_results(
        self, part_id: int, results: Iterable[RequestResult], now: datetime
    ) -> None: ...

    def settle_pending(self, part_id: int, outcome: str, error_code: str, message: str) -> int: ...

    def requests_in_order(self, run_id: int, *, order: str = "input") -> Iterator[RequestState]: ...

    def requests_to_resend(
        self, run_id: int, outcomes: Sequence[str], max_attempts: int
    ) -> list[RequestState]: ...

    def record_resend_part(
        self, run_id: int, part: PartPlanRow, moved: Sequence[tuple[str, int, int]]
    ) -> int: ...

    def request_summary(self, run_id: int) -> dict[str, int]: ...

    def request_summaries(self, run_ids: Sequence[int]) -> dict[int, dict[str, int]]: ...

    def tokens_by_model(self, run_id: int) -> list[ModelTokens]: ...

    def output_history(self, job: str) -> dict[str, tuple[int, int]]: ...

    def mark_merged(self, run_id: int, results_path: str, now: datetime) -> None: ...

    def reopen_submission(self, run_id: int, now: datetime, reason: str) -> None: ...

    def take_submission_lease(
        self, run_id: int, owner: Owner, until: datetime, now: datetime
    ) -> Owner | None: ...

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
    ) -> bool: ...


class ScheduleStore(Protocol):
    """Ticks, cursors and pauses: when each job fires."""

    def cursor(self, job: str, scope: str | None) -> datetime | None: ...

    def set_cursor(self, job: str, scope: str | None, moment: datetime) -> None: ...

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
    ) -> list[int]: ...

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
        """Take up to ``limit`` pending ticks (see ``store.schedule``). ``closing``: a tick the
        claimer has fired, closed in the same transaction first, as ``close_tick(closing.id,
        closing.status, run_id=closing.run_id, reason=closing.reason)`` would."""
        ...

    def refire_orphaned_ticks(self, stale_before: datetime, dead: Collection[str] = ()) -> int:
        """Put back to pending the fired ticks without a run whose daemon is gone: its heartbeat
        older than ``stale_before``, stopped, or one of the ``dead`` instances."""
        ...

    def pending_tick_count(self) -> int: ...

    def close_tick(
        self, tick_id: int, status: str, *, run_id: int | None = None, reason: str | None = None
    ) -> None: ...

    def reopen_ticks(self, job: str, since: datetime, *, latest_only: bool, limit: int) -> int: ...

    def ticks(self, *, job: str | None = None, limit: int = 100) -> list[Tick]: ...

    def last_tick_per_job(self) -> dict[str, Tick]: ...

    def tick_counts(self, since: datetime) -> dict[tuple[str, str], int]: ...

    def pause(self, job: str, now: datetime, reason: str | None) -> bool: ...

    def resume(self, job: str) -> datetime | None: ...

    def paused(self) -> dict[str, datetime]: ...


class MaintenanceStore(Protocol):
    """Aggregates for metrics and health, and the deletes of ``prune``."""

    def run_stats(self) -> list[RunStats]: ...

    def tick_stats(self, statuses: Sequence[str]) -> dict[tuple[str, str], int]: ...

    def part_stats(self) -> dict[tuple[str, str], int]: ...

    def schedule_positions(self) -> dict[tuple[str, str | None], SchedulePosition]: ...

    def latest_daemon(self, mode: str) -> DaemonInfo | None: ...

    def daemons_since(self, since: datetime, limit: int = 50) -> list[DaemonInfo]: ...

    def prunable_runs(
        self, before: datetime, *, after_id: int = 0, limit: int = 500
    ) -> list[PrunableRun]: ...

    def unmerged_finished_count(self, before: datetime) -> int: ...

    def delete_runs(self, run_ids: Sequence[int], before: datetime) -> list[int]: ...

    def prune_ticks(
        self, before: datetime, firing_since: datetime, *, dry_run: bool = False
    ) -> int: ...

    def prune_daemons(
        self, before: datetime, dead_before: datetime, *, dry_run: bool = False
    ) -> int: ...

    def compact(self, *, vacuum: bool = False) -> None: ...


class DaemonStore(Protocol):
    """The daemon lease (one daemon per SQLite file) and the daemons' records."""

    def take_daemon_lock(
        self, instance: str, owner: Owner, lease_until: datetime, now: datetime
    ) -> tuple[str, Owner] | None: ...

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
        ...

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
        ...

    def start_attempt(
        self, run_id: int, number: int, owner: Owner, lease_until: datetime, now: datetime
    ) -> bool:
        """Mark the run running under ``owner`` and open attempt ``number``; False if the run
        is no longer active (cancelled meanwhile)."""
        ...

    def finish_attempt(
        self, run_id: int, number: int, outcome: RunOutcome, now: datetime
    ) -> None: ...

    def record_attempt_process(self, run_id: int, number: int, pgid: int, started: str) -> None:
        """Note the process group attempt ``number`` runs in, and when its leader started (to
        stop the group if the run is abandoned: see ``batchctl.process_groups``)."""
        ...

    def attempt_process(self, run_id: int) -> tuple[int, int, str] | None:
        """(attempt number, process group, leader start time) of the run's newest unfinished
        attempt that recorded one."""
        ...

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
        ...

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
        ...

    def record_progress(self, run_id: int, done: int, total: int | None) -> None: ...

    def renew_run(self, run_id: int, owner: Owner, lease_until: datetime) -> Run | None:
        """Extend the run's lease and return it (to see ``cancel_requested``); None if gone."""
        ...

    def request_cancel(self, run_id: int) -> None: ...

    def get_run(self, run_id: int) -> Run | None: ...

    def list_runs(self, query: RunFilter) -> list[Run]: ...

    def iter_runs(self, query: RunFilter, *, chunk: int = 1000) -> Iterator[Run]:
        """The runs of ``list_runs``, newest first, fetched ``chunk`` at a time: memory stays
        bounded however many match, and no query stays open between chunks."""
        ...

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
        ...

    def run_signal(self, run_id: int) -> tuple[RunStatus, bool] | None:
        """The run's status and whether a cancel was requested (cheap: polled often)."""
        ...

    def runs_past_lease(self, now: datetime) -> list[Run]: ...

    def active_runs(self, job: str | None = None) -> list[Run]: ...


class LockStore(Protocol):
    """The (job, scope) locks that keep a job's runs from overlapping."""

    # --- locks ------------------------------------------------------------------------------
    def try_lock(
        self, key: str, run_id: int, owner: Owner, lease_until: datetime, now: datetime
    ) -> tuple[bool, LockHolder | None]:
        """Take the lock if it is free or its lease has expired: (True, the expired holder it
        replaced, if any). Else (False, the holder)."""
        ...

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
        ...

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
